"""modelio: skops round trip under the trusted-types policy; tampered and unknown files refused."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from modelcycle_trainer import modelio
from modelcycle_trainer.common import WorkloadError, load_split


class HomeMade(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A class outside every trusted package."""

    def fit(self, x: object, y: object) -> HomeMade:
        return self


def _rewrite_schema(src: Path, dst: Path, old: str, new: str) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "schema.json":
                text = data.decode()
                assert old in text
                data = text.replace(old, new, 1).encode()
            zout.writestr(item, data)


def test_round_trip_predicts_the_same(iris_cycle: tuple[Path, str]) -> None:
    artifacts, _ = iris_cycle
    path = artifacts / "cycles/1/model/model.skops"
    model = modelio.load_model(path)
    x, _ = load_split(artifacts / "cycles/1/data/test.npz", "test")
    copy = path.with_name("copy.skops")
    modelio.save_model(model, copy)
    again = modelio.load_model(copy)
    assert np.array_equal(model.predict(x), again.predict(x))
    assert modelio.check_model_file(path) == []  # nothing beyond skops' defaults


def test_tampered_file_naming_os_system_is_refused(iris_cycle: tuple[Path, str]) -> None:
    artifacts, _ = iris_cycle
    src = artifacts / "cycles/1/model/model.skops"
    bad = artifacts / "bad.skops"
    _rewrite_schema(
        src,
        bad,
        '"__class__": "LogisticRegression",\n  "__module__": "sklearn.linear_model._logistic"',
        '"__class__": "system",\n  "__module__": "os"',
    )
    with pytest.raises(WorkloadError) as info:
        modelio.load_model(bad)
    assert "refusing to load" in info.value.message
    assert "outside the trusted policy (sklearn.*, numpy.*, scipy.*)" in info.value.message
    assert info.value.message.endswith("os.system")


def test_unknown_class_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "home.skops"
    modelio.save_model(HomeMade().fit(None, None), path)
    with pytest.raises(WorkloadError, match=r"outside the trusted policy .*HomeMade"):
        modelio.load_model(path)


def test_not_a_skops_file(tmp_path: Path) -> None:
    path = tmp_path / "model.skops"
    path.write_bytes(b"\x80\x04K\x01.")  # a pickle
    with pytest.raises(WorkloadError, match="is not a valid skops model file"):
        modelio.load_model(path)
    with pytest.raises(WorkloadError, match="model file not found"):
        modelio.load_model(tmp_path / "missing.skops")


def test_corrupt_schema_is_refused(iris_cycle: tuple[Path, str]) -> None:
    artifacts, _ = iris_cycle
    bad = artifacts / "bad.skops"
    _rewrite_schema(artifacts / "cycles/1/model/model.skops", bad, "{", "[")
    with pytest.raises(WorkloadError, match="is not a valid skops model file"):
        modelio.load_model(bad)


def test_policy_by_top_level_package() -> None:
    packages = modelio.trusted_packages(["xgboost", "sklearn"])
    assert packages == ("sklearn", "numpy", "scipy", "xgboost")
    assert (
        modelio.refused_types(["xgboost.core.Booster", "sklearn.tree._tree.Tree"], packages) == []
    )
    refused = modelio.refused_types(
        ["sklearnx.Evil", "numpy", "builtins.eval", "numpy.core.multiarray._reconstruct"],
        modelio.trusted_packages(),
    )
    assert refused == ["builtins.eval", "numpy", "sklearnx.Evil"]


def test_tree_models_need_their_sklearn_types_trusted(tmp_path: Path) -> None:
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    x, y = load_iris(return_X_y=True)
    path = tmp_path / "tree.skops"
    modelio.save_model(DecisionTreeClassifier(random_state=0).fit(x, y), path)
    assert modelio.check_model_file(path) == ["sklearn.tree._tree.Tree"]
    assert modelio.load_model(path).predict(x[:1]).tolist() == [0]


def test_load_card(iris_cycle: tuple[Path, str]) -> None:
    artifacts, version = iris_cycle
    assert modelio.load_card(artifacts / "cycles/1/model")["version"] == version
    (artifacts / "cycles/1/model/card.json").write_text("{not json")
    with pytest.raises(WorkloadError, match=r"model card at .* is not valid JSON"):
        modelio.load_card(artifacts / "cycles/1/model")
