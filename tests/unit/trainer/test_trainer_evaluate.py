"""evaluate: held-out metrics are sane, skipped with reasons, and wrong requests are refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from trainer_testlib import LR, collect_and_train

from modelcycle_trainer import collect, evaluate, train
from modelcycle_trainer.common import WorkloadError

CLASSIFICATION = {
    "accuracy",
    "balanced_accuracy",
    "f1_macro",
    "precision_macro",
    "recall_macro",
    "roc_auc",
}


def _report(artifacts: Path, cycle: int = 1) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(
        (artifacts / "cycles" / str(cycle) / "metrics.json").read_text()
    )
    return result


def test_iris_logistic_regression(iris_cycle: tuple[Path, str]) -> None:
    artifacts, version = iris_cycle
    msg = evaluate.run(artifacts, 1, {"metric": "accuracy", "threshold": 0.8})
    assert set(msg) == {"metrics", "task"}
    assert msg["task"] == "classification"
    metrics = msg["metrics"]
    assert set(metrics) == CLASSIFICATION
    assert metrics["accuracy"] > 0.9
    assert metrics["roc_auc"] > 0.95
    assert all(0.0 <= v <= 1.0 for v in metrics.values())

    report = _report(artifacts)
    assert report["version"] == version
    assert report["metrics"] == metrics
    assert report["skipped"] == {}
    assert report["testRows"] == 38
    cm = report["confusionMatrix"]
    assert cm["labels"] == [0, 1, 2]
    assert sum(map(sum, cm["matrix"])) == 38
    correct = sum(cm["matrix"][i][i] for i in range(3))
    assert correct / 38 == pytest.approx(metrics["accuracy"])


def test_binary_roc_auc(tmp_path: Path) -> None:
    training = {**_lr(), "preprocessing": "standard"}
    collect_and_train(tmp_path, {"builtin": {"name": "breast_cancer"}}, training)
    metrics = evaluate.run(tmp_path, 1, {"metric": "roc_auc"})["metrics"]
    assert metrics["roc_auc"] > 0.95
    assert metrics["accuracy"] > 0.9


def test_regression_metrics(tmp_path: Path) -> None:
    collect_and_train(
        tmp_path, {"builtin": {"name": "diabetes"}}, {"estimator": "sklearn.linear_model.Ridge"}
    )
    msg = evaluate.run(tmp_path, 1, {"metric": "rmse", "threshold": 80})
    assert msg["task"] == "regression"
    m = msg["metrics"]
    assert set(m) == {"r2", "rmse", "mae"}
    assert 0.2 < m["r2"] < 1.0
    assert 0 < m["mae"] < m["rmse"] < 100
    assert _report(tmp_path)["confusionMatrix"] is None


def _lr() -> dict[str, Any]:
    return {
        "estimator": "sklearn.linear_model.LogisticRegression",
        "parameters": {"max_iter": 5000},
    }


def test_roc_auc_skipped_without_predict_proba(tmp_path: Path) -> None:
    training = {"estimator": "sklearn.svm.LinearSVC", "preprocessing": "standard"}
    collect_and_train(tmp_path, {"builtin": {"name": "iris"}}, training)
    msg = evaluate.run(tmp_path, 1, {"metric": "accuracy"})
    assert "roc_auc" not in msg["metrics"]
    assert _report(tmp_path)["skipped"] == {"roc_auc": "the model has no predict_proba"}
    with pytest.raises(WorkloadError, match="metric roc_auc could not be computed: the model"):
        evaluate.run(tmp_path, 1, {"metric": "roc_auc"})


@pytest.mark.parametrize(
    ("evaluation", "expected"),
    [
        ({"metric": "r2"}, "evaluation.metric r2 does not apply to a classification model"),
        ({"metric": "logloss"}, "unknown evaluation.metric 'logloss'"),
    ],
)
def test_wrong_metric_requests(
    iris_cycle: tuple[Path, str], evaluation: dict[str, Any], expected: str
) -> None:
    artifacts, _ = iris_cycle
    with pytest.raises(WorkloadError, match=expected):
        evaluate.run(artifacts, 1, evaluation)


def test_no_metric_requested_still_scores(iris_cycle: tuple[Path, str]) -> None:
    artifacts, _ = iris_cycle
    assert set(evaluate.run(artifacts, 1, {})["metrics"]) == CLASSIFICATION


def test_missing_model_and_mismatched_data(iris_cycle: tuple[Path, str]) -> None:
    artifacts, _ = iris_cycle
    with pytest.raises(WorkloadError, match="data snapshot not found"):
        evaluate.run(artifacts, 2, {})
    card = artifacts / "cycles/1/model/card.json"
    saved = card.read_text()
    card.unlink()
    with pytest.raises(WorkloadError, match="model card not found"):
        evaluate.run(artifacts, 1, {})
    card.write_text(saved)
    snapshot = artifacts / "cycles/1/data/snapshot.json"
    snap = json.loads(snapshot.read_text())
    snapshot.write_text(json.dumps({**snap, "dataHash": "sha256:other"}))
    with pytest.raises(WorkloadError, match="was trained on sha256:"):
        evaluate.run(artifacts, 1, {})


def test_tampered_model_is_refused(iris_cycle: tuple[Path, str]) -> None:
    artifacts, _ = iris_cycle
    (artifacts / "cycles/1/model/model.skops").write_bytes(b"not a zip")
    with pytest.raises(WorkloadError, match="is not a valid skops model file"):
        evaluate.run(artifacts, 1, {})


# --- train --evaluation: the same evaluation in the training process -------------------------


@pytest.mark.parametrize(
    ("data", "training", "evaluation"),
    [
        ({"builtin": {"name": "iris"}}, None, {"metric": "accuracy", "threshold": 0.8}),
        (
            {"builtin": {"name": "diabetes"}},
            {"estimator": "sklearn.linear_model.Ridge"},
            {"metric": "rmse", "threshold": 80},
        ),
        (
            {"builtin": {"name": "iris"}},
            {"estimator": "sklearn.svm.LinearSVC", "preprocessing": "standard"},
            {},
        ),
    ],
)
def test_train_with_evaluation_reports_what_evaluate_reports(
    tmp_path: Path,
    data: dict[str, Any],
    training: dict[str, Any] | None,
    evaluation: dict[str, Any],
) -> None:
    collect.run(tmp_path, 1, data)
    message = train.run(tmp_path, 1, training or LR, ["sklearn"], evaluation)
    assert set(message) == {"version", "fitSeconds", "metrics", "task"}
    in_train = _report(tmp_path)
    assert in_train["version"] == message["version"]
    assert in_train["metrics"] == message["metrics"]
    assert message["metrics"], "scored"

    again = evaluate.run(tmp_path, 1, evaluation, ["sklearn"])  # the saved model, reloaded
    separate = _report(tmp_path)
    assert again == {"metrics": message["metrics"], "task": message["task"]}
    drop = ("evaluatedAt", "predictSeconds")
    assert {k: v for k, v in in_train.items() if k not in drop} == {
        k: v for k, v in separate.items() if k not in drop
    }, "metrics.json is the same whichever step wrote it"


def test_train_without_evaluation_writes_no_metrics(tmp_path: Path) -> None:
    _, trained = collect_and_train(tmp_path, {"builtin": {"name": "iris"}})
    assert set(trained) == {"version", "fitSeconds"}
    assert not (tmp_path / "cycles/1/metrics.json").exists()


@pytest.mark.parametrize(
    ("evaluation", "expected"),
    [
        ({"metric": "r2"}, "evaluation.metric r2 does not apply to a classification model"),
        ({"metric": "logloss"}, "unknown evaluation.metric 'logloss'"),
    ],
)
def test_train_refuses_a_wrong_metric_before_fitting(
    tmp_path: Path, evaluation: dict[str, Any], expected: str
) -> None:
    collect.run(tmp_path, 1, {"builtin": {"name": "iris"}})
    with pytest.raises(WorkloadError, match=expected):
        train.run(tmp_path, 1, LR, ["sklearn"], evaluation)
    assert not (tmp_path / "cycles/1/model").exists(), "refused before anything was fitted"
