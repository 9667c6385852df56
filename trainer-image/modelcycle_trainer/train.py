"""`train`: fit the estimator named in the spec on a collected snapshot and save it.

Purpose: resolve `training.estimator` (an import path `package.module.Class`) only when
its top-level package is in `--allowed-modules`, build it with `training.parameters` as
keyword arguments (unknown names are refused with the valid ones listed), optionally wrap
it in a `Pipeline` with a StandardScaler/MinMaxScaler, fit it on `train.npz`, and write
`cycles/<N>/model/{model.skops,card.json,README.md}`. The model version is
`<cycle>-<first 8 hex of sha256(model.skops)>`. With `--evaluation` (the spec's evaluation
section) it then evaluates the fitted model on `test.npz` in the same process, with the
same code as the `evaluate` subcommand (`evaluate.evaluate_model`): `cycles/<N>/metrics.json`
and `metrics` / `task` in the termination message, so no evaluation Job is needed.

Decisions and limits:
- skops only (never pickle); the saved file is checked against the same trusted-types
  policy the evaluator and server load with, so a model that would be refused there
  fails here.
- When the estimator has `random_state` and the spec leaves it unset, the data seed is
  used, so a cycle is reproducible.
- The snapshot's data hash is recomputed from the .npz files; a mismatch (data changed
  after collect) is an error.
- Warnings raised during fit (e.g. ConvergenceWarning) are recorded in card.json
  (`fitWarnings`) instead of being printed.
- An estimator whose kind is known (classifier/regressor) must match the data's task.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import keyword
import platform
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelcycle_trainer import evaluate, modelio
from modelcycle_trainer.common import (
    JSONDict,
    UsageError,
    WorkloadError,
    atomic_write_bytes,
    data_dir,
    data_hash,
    load_split,
    model_dir,
    read_json,
    sha256_file,
    to_jsonable,
    write_json,
)

PREPROCESSING = ("none", "standard", "minmax")


def parse_allowed_modules(text: str) -> list[str]:
    mods = [m.strip() for m in text.split(",") if m.strip()]
    if not mods:
        raise UsageError("--allowed-modules must name at least one package")
    return mods


def parse_training_spec(raw: Any) -> tuple[str, dict[str, Any], str]:
    if not isinstance(raw, dict):
        raise UsageError("--training must be a JSON object")
    estimator = raw.get("estimator")
    if not isinstance(estimator, str) or not estimator.strip():
        raise WorkloadError("training.estimator must be an import path like module.Class")
    params = raw.get("parameters") or {}
    if not isinstance(params, dict):
        raise WorkloadError("training.parameters must be a JSON object")
    prep = raw.get("preprocessing") or "none"
    if prep not in PREPROCESSING:
        raise WorkloadError(
            f"training.preprocessing must be one of {', '.join(PREPROCESSING)}, got {prep!r}"
        )
    return estimator.strip(), params, prep


def check_estimator_path(path: str, allowed: Sequence[str]) -> tuple[str, str]:
    """(module, class name) of `path` when it is an import path in an allowed package.

    Imports nothing: `train --data` checks this before it collects the data.
    """
    parts = path.split(".")
    if len(parts) < 2 or not all(p.isidentifier() and not keyword.iskeyword(p) for p in parts):
        raise WorkloadError(f"training.estimator {path!r} is not an import path like module.Class")
    top = parts[0]
    allowed_tops = {a.split(".")[0] for a in allowed}
    if top not in allowed_tops:
        raise WorkloadError(
            f"estimator {path} refused: package {top!r} is not in the allowed modules "
            f"({', '.join(allowed)})"
        )
    return ".".join(parts[:-1]), parts[-1]


def resolve_estimator(path: str, allowed: Sequence[str]) -> type[Any]:
    """Import `path` (module.Class) when its top-level package is allowed."""
    module_name, class_name = check_estimator_path(path, allowed)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise WorkloadError(
            f"cannot import module {module_name} for estimator {path}: {exc}"
        ) from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise WorkloadError(f"module {module_name} has no attribute {class_name!r}")
    if not isinstance(cls, type):
        raise WorkloadError(f"{path} is not a class")
    missing = [m for m in ("fit", "predict", "get_params", "set_params") if not hasattr(cls, m)]
    if missing:
        raise WorkloadError(
            f"{path} is not a scikit-learn estimator (missing {', '.join(missing)})"
        )
    return cls


def build_estimator(cls: type[Any], path: str, params: dict[str, Any], seed: int) -> Any:
    try:
        est = cls()
    except Exception as exc:
        raise WorkloadError(f"cannot construct {path}(): {type(exc).__name__}: {exc}") from exc
    valid = sorted(est.get_params(deep=False))
    unknown = sorted({k.split("__", 1)[0] for k in params} - set(valid))
    if unknown:
        raise WorkloadError(
            f"unknown parameter(s) for {path}: {', '.join(unknown)}; valid: {', '.join(valid)}"
        )
    settings = dict(params)
    if "random_state" in valid and "random_state" not in settings:
        settings["random_state"] = seed
    try:
        est.set_params(**settings)
    except (ValueError, TypeError) as exc:
        raise WorkloadError(f"invalid parameters for {path}: {exc}") from None
    return est


def check_kind(est: Any, path: str, task: str) -> None:
    from sklearn.base import is_classifier, is_regressor

    try:
        clf, reg = bool(is_classifier(est)), bool(is_regressor(est))
    except Exception:  # noqa: BLE001 - third-party estimators without tags: fit decides
        return
    if task == "classification" and reg and not clf:
        raise WorkloadError(f"{path} is a regressor but the data's task is classification")
    if task == "regression" and clf and not reg:
        raise WorkloadError(f"{path} is a classifier but the data's task is regression")
    if not clf and not reg:
        raise WorkloadError(f"{path} is neither a classifier nor a regressor")


def wrap(est: Any, preprocessing: str) -> Any:
    if preprocessing == "none":
        return est
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    scaler = StandardScaler() if preprocessing == "standard" else MinMaxScaler()
    return Pipeline([("scaler", scaler), ("model", est)])


def library_versions(estimator_path: str) -> dict[str, str]:
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for dist in ("scikit-learn", "skops", "scipy"):
        versions[dist] = _dist_version(dist)
    top = estimator_path.split(".", maxsplit=1)[0]
    if top not in ("sklearn",):
        versions[top] = _dist_version(top)
    return versions


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _readme(card: JSONDict) -> str:
    params = card["parameters"] or {}
    lines = [
        f"# Model card: {card['estimator']} (version {card['version']})",
        "",
        f"- Task: {card['task']}; target `{card['target']}`",
        f"- Cycle: {card['cycle']}; trained at {card['trainedAt']} in {card['fitSeconds']} s",
        f"- Data: `{card['dataHash']}`, {card['trainRows']} training rows, "
        f"{card['nFeatures']} features",
        f"- Preprocessing: {card['preprocessing']}",
        f"- Model file: `model.skops` (skops), sha256 `{card['modelSha256']}`",
        "",
        "## Parameters",
        "",
    ]
    lines += [f"- `{k}`: `{v!r}`" for k, v in params.items()] or ["- (estimator defaults)"]
    lines += ["", "## Features", "", ", ".join(f"`{n}`" for n in card["featureNames"]), ""]
    if card.get("classes") is not None:
        lines += ["## Classes", "", ", ".join(f"`{c}`" for c in card["classes"]), ""]
    lines += ["## Libraries", ""]
    lines += [f"- {k} {v}" for k, v in card["libraries"].items()]
    if card.get("fitWarnings"):
        lines += ["", "## Warnings during fit", ""]
        lines += [f"- {w}" for w in card["fitWarnings"]]
    lines += [
        "",
        "Metrics on the held-out split are written by the evaluation step to `../metrics.json`.",
        "",
    ]
    return "\n".join(lines)


def check_spec(training: Any, allowed_modules: Sequence[str], evaluation: Any = None) -> None:
    """The checks `run` makes before it reads any data, without importing the estimator:
    the training section, the estimator's import path and package, the metric's name."""
    estimator_path, _, _ = parse_training_spec(training)
    if evaluation is not None:
        evaluate.parse_evaluation_spec(evaluation)
    check_estimator_path(estimator_path, allowed_modules)


def run(
    artifacts: Path,
    cycle: int,
    training: Any,
    allowed_modules: Sequence[str],
    evaluation: Any = None,
) -> JSONDict:
    """Fit and save; with `evaluation` (the spec's section) also evaluate, as `evaluate` does."""
    estimator_path, params, preprocessing = parse_training_spec(training)
    wanted = evaluate.parse_evaluation_spec(evaluation) if evaluation is not None else None
    cls = resolve_estimator(estimator_path, allowed_modules)

    ddir = data_dir(artifacts, cycle)
    snapshot = read_json(ddir / "snapshot.json", "data snapshot")
    x_tr, y_tr = load_split(ddir / "train.npz", "training split")
    x_te, y_te = load_split(ddir / "test.npz", "test split")
    names = list(snapshot.get("featureNames") or [])
    digest = data_hash(x_tr, y_tr, x_te, y_te, names)
    if digest != snapshot.get("dataHash"):
        raise WorkloadError(
            f"data in {ddir} does not match its snapshot hash {snapshot.get('dataHash')} "
            f"(got {digest}); run collect again"
        )
    task = str(snapshot.get("task"))
    seed = int(snapshot.get("seed", 0))
    evaluate.check_metric(wanted, task)  # before the fit: a wrong metric fails fast

    est = build_estimator(cls, estimator_path, params, seed)
    check_kind(est, estimator_path, task)
    model = wrap(est, preprocessing)

    caught: list[str] = []
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        start = time.perf_counter()
        try:
            model.fit(x_tr, y_tr)
        except MemoryError:
            raise WorkloadError(f"out of memory fitting {estimator_path}") from None
        except Exception as exc:
            raise WorkloadError(
                f"fitting {estimator_path} failed: {type(exc).__name__}: {exc}"
            ) from exc
        fit_seconds = time.perf_counter() - start
    for rec in records:
        text = f"{rec.category.__name__}: {rec.message}"
        if text not in caught:
            caught.append(text)

    mdir = model_dir(artifacts, cycle)
    mdir.mkdir(parents=True, exist_ok=True)
    tmp = mdir / f".{modelio.MODEL_FILE}.tmp"
    try:
        modelio.save_model(model, tmp)
        modelio.check_model_file(tmp, allowed_modules)
    except WorkloadError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise WorkloadError(
            f"cannot save {estimator_path} with skops: {type(exc).__name__}: {exc}"
        ) from exc
    sha = sha256_file(tmp)
    tmp.replace(mdir / modelio.MODEL_FILE)
    version = f"{cycle}-{sha[:8]}"

    classes = getattr(model, "classes_", None)
    card: JSONDict = {
        "version": version,
        "cycle": cycle,
        "estimator": estimator_path,
        "parameters": to_jsonable(params),
        "effectiveParameters": to_jsonable(est.get_params(deep=False)),
        "preprocessing": preprocessing,
        "task": task,
        "target": snapshot.get("target"),
        "featureNames": names,
        "nFeatures": int(x_tr.shape[1]),
        "classes": to_jsonable(classes) if classes is not None else None,
        "classNames": snapshot.get("classNames"),
        "hasPredictProba": hasattr(model, "predict_proba"),
        "dataHash": digest,
        "trainRows": len(y_tr),
        "fitSeconds": round(fit_seconds, 4),
        "fitWarnings": caught[:10],
        "modelFile": modelio.MODEL_FILE,
        "modelSha256": sha,
        "libraries": library_versions(estimator_path),
        "trainedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    from modelcycle_trainer import fastpath  # fastpath.npz: the verified fast path as arrays

    card.update(fastpath.export(model, mdir, [x_te, x_tr]))
    atomic_write_bytes(mdir / "README.md", _readme(card).encode("utf-8"))
    write_json(mdir / modelio.CARD_FILE, card)
    message: JSONDict = {"version": version, "fitSeconds": card["fitSeconds"]}
    if evaluation is not None:
        message |= evaluate.evaluate_model(
            artifacts,
            cycle,
            model,
            x_te,
            y_te,
            task=task,
            version=version,
            data_hash=digest,
            n_features=card["nFeatures"],
            wanted=wanted,
        )
    return message
