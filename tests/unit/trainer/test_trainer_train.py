"""train: allowed and refused estimators, parameters, preprocessing, the saved model and card."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from trainer_testlib import LR

from modelcycle_trainer import collect, modelio, train
from modelcycle_trainer.common import WorkloadError, sha256_file


@pytest.fixture
def iris_data(tmp_path: Path) -> Path:
    collect.run(tmp_path, 1, {"builtin": {"name": "iris"}})
    return tmp_path


def _train_error(
    artifacts: Path, training: dict[str, Any], allowed: list[str] | None = None
) -> str:
    with pytest.raises(WorkloadError) as info:
        train.run(artifacts, 1, training, allowed or ["sklearn"])
    return info.value.message


def test_train_writes_skops_model_card_and_readme(iris_data: Path) -> None:
    msg = train.run(iris_data, 1, LR, ["sklearn"])
    mdir = iris_data / "cycles/1/model"
    sha = sha256_file(mdir / "model.skops")
    assert msg["version"] == f"1-{sha[:8]}"
    assert isinstance(msg["fitSeconds"], float)
    assert set(msg) == {"version", "fitSeconds"}
    assert zipfile.is_zipfile(mdir / "model.skops")  # skops archive, not a pickle
    assert "schema.json" in zipfile.ZipFile(mdir / "model.skops").namelist()

    card = json.loads((mdir / "card.json").read_text())
    snapshot = json.loads((iris_data / "cycles/1/data/snapshot.json").read_text())
    assert card["version"] == msg["version"]
    assert card["cycle"] == 1
    assert card["estimator"] == "sklearn.linear_model.LogisticRegression"
    assert card["parameters"] == {"max_iter": 1000}
    assert card["effectiveParameters"]["random_state"] == 42  # the data seed by default
    assert card["dataHash"] == snapshot["dataHash"]
    assert card["classes"] == [0, 1, 2]
    assert card["nFeatures"] == 4
    assert card["featureNames"] == snapshot["featureNames"]
    assert card["task"] == "classification"
    assert card["modelSha256"] == sha
    assert set(card["libraries"]) >= {"python", "numpy", "scikit-learn", "skops"}
    assert card["fitWarnings"] == []
    readme = (mdir / "README.md").read_text()
    assert readme.startswith(
        f"# Model card: sklearn.linear_model.LogisticRegression (version {msg['version']})"
    )
    assert "`max_iter`: `1000`" in readme


def test_preprocessing_builds_a_pipeline(iris_data: Path) -> None:
    train.run(iris_data, 1, {**LR, "preprocessing": "standard"}, ["sklearn"])
    model = modelio.load_model(iris_data / "cycles/1/model/model.skops")
    assert type(model).__name__ == "Pipeline"
    assert type(model.steps[0][1]).__name__ == "StandardScaler"
    train.run(iris_data, 1, {**LR, "preprocessing": "minmax"}, ["sklearn"])
    model = modelio.load_model(iris_data / "cycles/1/model/model.skops")
    assert type(model.steps[0][1]).__name__ == "MinMaxScaler"


def test_a_forest_trains_and_records_parameters(iris_data: Path) -> None:
    training = {
        "estimator": "sklearn.ensemble.RandomForestClassifier",
        "parameters": {"n_estimators": 5, "max_depth": 3},
    }
    msg = train.run(iris_data, 1, training, ["sklearn"])
    card = json.loads((iris_data / "cycles/1/model/card.json").read_text())
    assert card["effectiveParameters"]["n_estimators"] == 5
    assert msg["version"].startswith("1-")


def test_convergence_warnings_are_recorded_not_raised(iris_data: Path) -> None:
    training = {
        "estimator": "sklearn.linear_model.LogisticRegression",
        "parameters": {"max_iter": 1},
    }
    train.run(iris_data, 1, training, ["sklearn"])
    card = json.loads((iris_data / "cycles/1/model/card.json").read_text())
    assert card["fitWarnings"]
    assert card["fitWarnings"][0].startswith("ConvergenceWarning")


@pytest.mark.parametrize(
    ("estimator", "allowed", "expected"),
    [
        (
            "os.system",
            ["sklearn"],
            "estimator os.system refused: package 'os' is not in the allowed modules (sklearn)",
        ),
        (
            "xgboost.XGBClassifier",
            ["sklearn", "lightgbm"],
            "package 'xgboost' is not in the allowed modules (sklearn, lightgbm)",
        ),
        ("sklearn", ["sklearn"], "is not an import path like module.Class"),
        ("sklearn.linear_model.__import__('os')", ["sklearn"], "is not an import path"),
        ("sklearn.nothing_here.Model", ["sklearn"], "cannot import module sklearn.nothing_here"),
        (
            "sklearn.linear_model.NoSuchModel",
            ["sklearn"],
            "module sklearn.linear_model has no attribute 'NoSuchModel'",
        ),
        ("sklearn.utils.check_array", ["sklearn"], "is not a class"),
        ("sklearn.utils.Bunch", ["sklearn"], "is not a scikit-learn estimator (missing fit"),
    ],
)
def test_refused_and_unresolvable_estimators(
    iris_data: Path, estimator: str, allowed: list[str], expected: str
) -> None:
    assert expected in _train_error(iris_data, {"estimator": estimator}, allowed)


def test_unknown_parameter_is_named_with_the_valid_ones(iris_data: Path) -> None:
    msg = _train_error(iris_data, {**LR, "parameters": {"max_iterations": 5, "C": 1.0}})
    assert "unknown parameter(s) for sklearn.linear_model.LogisticRegression: max_iterations" in msg
    assert "valid: C, class_weight" in msg


def test_invalid_parameter_value_is_reported_from_fit(iris_data: Path) -> None:
    msg = _train_error(iris_data, {**LR, "parameters": {"C": -1.0}})
    assert msg.startswith("fitting sklearn.linear_model.LogisticRegression failed")
    assert "'C' parameter" in msg


def test_estimator_kind_must_match_the_task(iris_data: Path) -> None:
    msg = _train_error(iris_data, {"estimator": "sklearn.linear_model.LinearRegression"})
    assert "is a regressor but the data's task is classification" in msg
    msg = _train_error(iris_data, {"estimator": "sklearn.cluster.KMeans"})
    assert "is neither a classifier nor a regressor" in msg


def test_bad_training_spec(iris_data: Path) -> None:
    assert "training.estimator must be" in _train_error(iris_data, {})
    assert "training.preprocessing must be one of none, standard, minmax" in _train_error(
        iris_data, {**LR, "preprocessing": "pca"}
    )
    assert "training.parameters must be a JSON object" in _train_error(
        iris_data, {**LR, "parameters": [1]}
    )


def test_missing_snapshot(tmp_path: Path) -> None:
    msg = _train_error(tmp_path, LR)
    assert msg.startswith("data snapshot not found at")


def test_changed_data_is_detected(iris_data: Path) -> None:
    path = iris_data / "cycles/1/data/train.npz"
    with np.load(path) as npz:
        x, y = npz["X"].copy(), npz["y"].copy()
    x[0, 0] += 1.0
    np.savez(path, X=x, y=y)
    assert "does not match its snapshot hash" in _train_error(iris_data, LR)


def test_regression_on_diabetes(tmp_path: Path) -> None:
    collect.run(tmp_path, 2, {"builtin": {"name": "diabetes"}})
    msg = train.run(tmp_path, 2, {"estimator": "sklearn.linear_model.Ridge"}, ["sklearn"])
    assert msg["version"].startswith("2-")
    card = json.loads((tmp_path / "cycles/2/model/card.json").read_text())
    assert card["classes"] is None
    assert card["task"] == "regression"
