"""`evaluate`: score a cycle's model on its held-out split and write `metrics.json`.

Purpose: load `cycles/<N>/model/model.skops` under the trusted-types policy, predict the
`test.npz` split written by collect, and compute
- classification: accuracy, balanced_accuracy, f1_macro, precision_macro, recall_macro,
  roc_auc (binary: `predict_proba[:, 1]`; multiclass: one-vs-rest macro) and the
  confusion matrix (file only);
- regression: r2, rmse, mae.

Decisions and limits:
- roc_auc is skipped (with the reason in `skipped`) when the model has no
  `predict_proba` or a model class is absent from the test split; metrics that come out
  undefined (NaN) are skipped the same way.
- macro precision/recall/F1 count an undefined ratio as 0 (`zero_division=0`).
- The gate itself (threshold, champion comparison) is the operator's; this step only
  fails when the requested `evaluation.metric` does not apply to the task or could not be
  computed, so that the reason is visible instead of a silent rejection.
- The model card's data hash must equal the snapshot's (same data as training).
- `evaluate_model` is the evaluation itself; `train --evaluation` calls it on the model it
  has just fitted (one process, no second scikit-learn import), this subcommand on the
  saved model (the older contract, and re-evaluation).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from modelcycle_trainer import modelio
from modelcycle_trainer.common import (
    JSONDict,
    UsageError,
    WorkloadError,
    cycle_dir,
    data_dir,
    load_split,
    model_dir,
    read_json,
    to_jsonable,
    write_json,
)

CLASSIFICATION_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "f1_macro",
    "precision_macro",
    "recall_macro",
    "roc_auc",
)
REGRESSION_METRICS = ("r2", "rmse", "mae")


def parse_evaluation_spec(raw: Any) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise UsageError("--evaluation must be a JSON object")
    metric = raw.get("metric")
    if metric is None:
        return None
    if metric not in CLASSIFICATION_METRICS + REGRESSION_METRICS:
        known = ", ".join(CLASSIFICATION_METRICS + REGRESSION_METRICS)
        raise WorkloadError(f"unknown evaluation.metric {metric!r}; known: {known}")
    return str(metric)


def classification_metrics(
    model: Any, x: npt.NDArray[np.float64], y: npt.NDArray[Any], y_pred: npt.NDArray[Any]
) -> tuple[dict[str, float], dict[str, str], JSONDict]:
    from sklearn import metrics as m

    out: dict[str, float] = {
        "accuracy": float(m.accuracy_score(y, y_pred)),
        "balanced_accuracy": float(m.balanced_accuracy_score(y, y_pred)),
        "f1_macro": float(m.f1_score(y, y_pred, average="macro", zero_division=0)),
        "precision_macro": float(m.precision_score(y, y_pred, average="macro", zero_division=0)),
        "recall_macro": float(m.recall_score(y, y_pred, average="macro", zero_division=0)),
    }
    skipped: dict[str, str] = {}
    classes = getattr(model, "classes_", None)
    present = set(np.unique(y).tolist())
    if not hasattr(model, "predict_proba"):
        skipped["roc_auc"] = "the model has no predict_proba"
    elif classes is None:
        skipped["roc_auc"] = "the model has no classes_"
    elif set(np.asarray(classes).tolist()) - present:
        absent = sorted(str(c) for c in set(np.asarray(classes).tolist()) - present)
        skipped["roc_auc"] = "classes absent from the test split: " + ", ".join(absent)
    else:
        proba = np.asarray(model.predict_proba(x))
        if len(classes) == 2:
            positive = np.asarray(y) == np.asarray(classes)[1]  # column 1 of predict_proba
            out["roc_auc"] = float(m.roc_auc_score(positive, proba[:, 1]))
        else:
            out["roc_auc"] = float(
                m.roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=classes)
            )
    labels = np.unique(np.concatenate([np.asarray(y), np.asarray(y_pred)]))
    if classes is not None:
        extra = np.setdiff1d(labels, np.asarray(classes))
        labels = np.concatenate([np.asarray(classes), extra])
    cm = m.confusion_matrix(y, y_pred, labels=labels)
    confusion = {"labels": to_jsonable(labels), "matrix": to_jsonable(cm)}
    return out, skipped, confusion


def regression_metrics(y: npt.NDArray[Any], y_pred: npt.NDArray[Any]) -> dict[str, float]:
    from sklearn import metrics as m

    yt = np.asarray(y, dtype=np.float64)
    yp = np.asarray(y_pred, dtype=np.float64)
    return {
        "r2": float(m.r2_score(yt, yp)),
        "rmse": float(math.sqrt(m.mean_squared_error(yt, yp))),
        "mae": float(m.mean_absolute_error(yt, yp)),
    }


def check_metric(wanted: str | None, task: str) -> None:
    """The requested metric must apply to the task (checked before any work is done)."""
    valid = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    if wanted is not None and wanted not in valid:
        raise WorkloadError(
            f"evaluation.metric {wanted} does not apply to a {task} model; use one of "
            + ", ".join(valid)
        )


def evaluate_model(
    artifacts: Path,
    cycle: int,
    model: Any,
    x: npt.NDArray[np.float64],
    y: npt.NDArray[Any],
    *,
    task: str,
    version: Any,
    data_hash: Any,
    n_features: Any,
    wanted: str | None,
) -> JSONDict:
    """Score `model` on the held-out split (x, y) and write `cycles/<N>/metrics.json`.

    The one evaluation: the `evaluate` subcommand (a saved model) and `train --evaluation`
    (the model it just fitted) both call it. Returns the termination message's part:
    `{"metrics": {...}, "task": ...}`.
    """
    check_metric(wanted, task)
    if x.shape[1] != n_features:
        raise WorkloadError(f"test split has {x.shape[1]} features, the model {n_features}")
    skipped: dict[str, str] = {}
    confusion: JSONDict | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        try:
            y_pred = np.asarray(model.predict(x))
            predict_seconds = time.perf_counter() - start
            if task == "classification":
                values, skipped, confusion = classification_metrics(model, x, y, y_pred)
            else:
                values = regression_metrics(y, y_pred)
        except WorkloadError:
            raise
        except Exception as exc:
            raise WorkloadError(
                f"evaluating model {version} failed: {type(exc).__name__}: {exc}"
            ) from exc

    metrics: dict[str, float] = {}
    for name, value in values.items():
        if math.isfinite(value):
            metrics[name] = value
        else:
            skipped[name] = "undefined on this test split"
    if wanted is not None and wanted not in metrics:
        raise WorkloadError(
            f"evaluation.metric {wanted} could not be computed: "
            + skipped.get(wanted, "not available")
        )
    report: JSONDict = {
        "cycle": cycle,
        "version": version,
        "task": task,
        "dataHash": data_hash,
        "testRows": len(y),
        "metric": wanted,
        "metrics": metrics,
        "skipped": skipped,
        "confusionMatrix": confusion,
        "predictSeconds": round(predict_seconds, 6),
        "evaluatedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json(cycle_dir(artifacts, cycle) / "metrics.json", report)
    return {"metrics": metrics, "task": task}


def run(
    artifacts: Path, cycle: int, evaluation: Any, allowed_modules: Sequence[str] = ()
) -> JSONDict:
    """The `evaluate` subcommand: load the cycle's saved model and evaluate it."""
    wanted = parse_evaluation_spec(evaluation)
    ddir, mdir = data_dir(artifacts, cycle), model_dir(artifacts, cycle)
    snapshot = read_json(ddir / "snapshot.json", "data snapshot")
    card = modelio.load_card(mdir)
    if card.get("dataHash") != snapshot.get("dataHash"):
        raise WorkloadError(
            f"model {card.get('version')} was trained on {card.get('dataHash')}, but the "
            f"snapshot of cycle {cycle} is {snapshot.get('dataHash')}"
        )
    task = str(card.get("task"))
    check_metric(wanted, task)
    x, y = load_split(ddir / "test.npz", "test split")
    model = modelio.load_model(mdir / modelio.MODEL_FILE, allowed_modules)
    return evaluate_model(
        artifacts,
        cycle,
        model,
        x,
        y,
        task=task,
        version=card.get("version"),
        data_hash=snapshot.get("dataHash"),
        n_features=card.get("nFeatures"),
        wanted=wanted,
    )
