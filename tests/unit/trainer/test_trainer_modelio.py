"""modelio: skops round trip under the trusted-types policy; tampered and unknown files refused."""

from __future__ import annotations

import contextlib
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


def _nothing() -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


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
    assert (
        "outside the trusted policy (scikit-learn's estimators and the helper types they hold)"
        in info.value.message
    )
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


def test_policy_is_a_list_of_classes_not_a_package_prefix() -> None:
    packages = modelio.trusted_packages(["json", "sklearn"])
    assert packages == ("sklearn", "numpy", "scipy", "json")
    # scikit-learn's helper classes by explicit name; an allowed extra package by class.
    assert (
        modelio.refused_types(["json.decoder.JSONDecoder", "sklearn.tree._tree.Tree"], packages)
        == []
    )
    refused = modelio.refused_types(
        [
            "sklearnx.Evil",
            "numpy",
            "builtins.eval",
            "numpy.core.multiarray._reconstruct",  # a function under a trusted package
            "sklearn.datasets.dump_svmlight_file",  # a function that writes files
            "sklearn.metrics._dist_metrics.PyFuncDistance64",  # carries any callable
            "json.dumps",  # a function of an allowed extra package
            "json.decoder.no_such_class",
            "os.system",
        ],
        packages,
    )
    assert refused == [
        "builtins.eval",
        "json.decoder.no_such_class",
        "json.dumps",
        "numpy",
        "numpy.core.multiarray._reconstruct",
        "os.system",
        "sklearn.datasets.dump_svmlight_file",
        "sklearn.metrics._dist_metrics.PyFuncDistance64",
        "sklearnx.Evil",
    ]


def test_every_estimator_family_the_examples_use_loads(tmp_path: Path) -> None:
    from sklearn.datasets import load_iris
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
        StackingClassifier,
    )
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier

    x, y = load_iris(return_X_y=True)
    models = [
        RandomForestClassifier(n_estimators=3, random_state=0),
        GradientBoostingClassifier(n_estimators=3, random_state=0),
        HistGradientBoostingClassifier(max_iter=3),
        KNeighborsClassifier(),
        KNeighborsClassifier(algorithm="ball_tree", metric="manhattan"),
        MLPClassifier(max_iter=5, random_state=0),
        StackingClassifier([("lr", LogisticRegression(max_iter=300))]),
    ]
    for i, model in enumerate(models):
        path = tmp_path / f"m{i}.skops"
        with pytest.warns() if isinstance(model, MLPClassifier) else _nothing():
            model.fit(x, y)
        modelio.save_model(model, path)
        loaded = modelio.load_model(path)
        assert np.array_equal(loaded.predict(x), model.predict(x)), type(model).__name__


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
