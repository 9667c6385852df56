"""Verified fast `predict` for the common scikit-learn models the server serves.

Purpose: scikit-learn's `predict` spends nearly all of its time on per-call input checks
(about 250 µs for a LogisticRegression whose matrix product takes 5 µs; 10 ms of joblib
dispatch for a 100-tree forest on one row). The server validates its input itself (shape,
feature count, finite float64), so for the models below it can call the same arithmetic
directly:
- linear classifiers whose `predict`/`decision_function` are scikit-learn's
  `LinearClassifierMixin` ones (LogisticRegression, RidgeClassifier's base, SGDClassifier,
  LinearSVC, Perceptron, ...): `classes_[argmax(X @ coef_.T + intercept_)]`;
- linear regressors whose `predict` is `LinearModel`'s dense decision function
  (LinearRegression, Ridge, Lasso, ElasticNet, ...): `X @ coef_ + intercept_`;
- DecisionTree{Classifier,Regressor} and RandomForest/ExtraTrees{Classifier,Regressor}
  (single output): the trees' own `tree_.predict` on float32 input, accumulated in
  estimator order exactly as the forest does;
- any of these behind a `Pipeline` of StandardScaler / MinMaxScaler steps.

Safety: a model is only eligible when its class uses exactly those scikit-learn method
implementations (checked by identity, so a subclass that overrides `predict` is not), and
the compiled function is then verified at start-up against the model's own `predict`
on reference inputs (the cycle's held-out and training rows when available, plus
synthetic rows, batched and one at a time): any difference in values or dtype and the
server falls back to `model.predict`. The same operations in the same order give
bit-identical results.

Export (`export`, called by `train`): the linear kinds (and their scaler pipelines) are
also written as plain arrays, `model/fastpath.npz` (coefficients, intercept, classes,
scaler parameters and a JSON description; no pickled objects), with its sha256 in
card.json, only when the predictor rebuilt from those very bytes passes `verify` on the
cycle's rows. `load_export` rebuilds it with numpy alone (`np.load(...,
allow_pickle=False)` after checking the sha256), through the same builder functions as
`compile_predict`, so its results are bit-identical; this is what lets the server answer
before scikit-learn is imported.

Limits: single-output models only; `predict_proba` always goes through scikit-learn.
Trees and forests are not exported (their arrays would need a numpy tree walk, slower
than scikit-learn's own); they keep the start path through scikit-learn.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from modelcycle_trainer.common import JSONDict, atomic_write_bytes

FloatArray = npt.NDArray[np.float64]
Predict = Callable[[FloatArray], npt.NDArray[Any]]
Arrays = dict[str, npt.NDArray[Any]]

EXPORT_FILE = "fastpath.npz"
EXPORT_FORMAT = 1
REFERENCE_ROWS = 2000


class ExportError(ValueError):
    """A fastpath.npz that must not be used (sha256 mismatch, malformed, unknown format)."""


# ----------------------------------------------------------------------------- builders
# The arithmetic, from plain arrays. Both the compiled path (arrays read off the fitted
# scikit-learn objects) and the exported one (arrays read from fastpath.npz) call these,
# so the two are the same operations in the same order.


def _standard(
    mean: FloatArray | None, scale: FloatArray | None
) -> Callable[[FloatArray], FloatArray]:
    def standard(x: FloatArray) -> FloatArray:
        out = x - mean if mean is not None else x.copy()
        if scale is not None:
            out /= scale
        return out

    return standard


def _minmax(
    mul: FloatArray, add: FloatArray, lo: float, hi: float, clip: bool
) -> Callable[[FloatArray], FloatArray]:
    def minmax(x: FloatArray) -> FloatArray:
        out: FloatArray = x * mul
        out += add
        if clip:
            np.clip(out, lo, hi, out=out)
        return out

    return minmax


def _linear_classifier(
    coef_t: npt.NDArray[Any], intercept: Any, classes: npt.NDArray[Any]
) -> Predict:
    def linear_classifier(x: FloatArray) -> npt.NDArray[Any]:
        scores = x @ coef_t + intercept
        if scores.ndim > 1 and scores.shape[1] == 1:
            scores = scores.reshape(-1)
        idx = (scores > 0).astype(np.intp) if scores.ndim == 1 else scores.argmax(axis=1)
        labels: npt.NDArray[Any] = classes[idx]
        return labels

    return linear_classifier


def _linear_regressor(coef: npt.NDArray[Any], intercept: Any) -> Predict:
    def linear_regressor(x: FloatArray) -> npt.NDArray[Any]:
        out: npt.NDArray[Any] = x @ coef + intercept
        return out

    return linear_regressor


def _transform_spec(step: Any) -> tuple[JSONDict, Arrays] | None:
    """A scaler step as (description, arrays), or None when it is not one we reproduce."""
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    if type(step) is StandardScaler:
        arrays: Arrays = {}
        if step.with_mean:
            arrays["mean"] = np.asarray(step.mean_)
        if step.with_std:
            arrays["scale"] = np.asarray(step.scale_)
        return {"type": "standard"}, arrays
    if type(step) is MinMaxScaler:
        lo, hi = step.feature_range
        desc: JSONDict = {"type": "minmax", "lo": lo, "hi": hi, "clip": bool(step.clip)}
        return desc, {"mul": np.asarray(step.scale_), "add": np.asarray(step.min_)}
    return None


def _build_transform(desc: JSONDict, arrays: Arrays) -> Callable[[FloatArray], FloatArray]:
    if desc["type"] == "standard":
        return _standard(arrays.get("mean"), arrays.get("scale"))
    return _minmax(arrays["mul"], arrays["add"], desc["lo"], desc["hi"], bool(desc["clip"]))


def _transform(step: Any) -> Callable[[FloatArray], FloatArray] | None:
    spec = _transform_spec(step)
    return None if spec is None else _build_transform(*spec)


def _linear_regressor_predicts() -> tuple[Any, ...]:
    """scikit-learn's `predict`s that are `self._decision_function(X)` for dense X."""
    from sklearn.linear_model import Ridge
    from sklearn.linear_model._base import LinearModel, MultiOutputLinearModel

    return (LinearModel.predict, MultiOutputLinearModel.predict, Ridge.predict)


def _linear_decisions() -> tuple[Any, ...]:
    """`_decision_function`s that are `X @ coef_ + intercept_` for dense X."""
    from sklearn.linear_model import ElasticNet
    from sklearn.linear_model._base import LinearModel

    return (LinearModel._decision_function, ElasticNet._decision_function)


def _linear_spec(est: Any) -> tuple[JSONDict, Arrays] | None:
    """A linear model as (description, arrays), or None when not eligible."""
    from sklearn.linear_model._base import LinearClassifierMixin

    cls = type(est)
    if (
        getattr(cls, "predict", None) is LinearClassifierMixin.predict
        and getattr(cls, "decision_function", None) is LinearClassifierMixin.decision_function
    ):
        coef_t = est.coef_.T if est.coef_.ndim == 2 else est.coef_
        if not isinstance(coef_t, np.ndarray):  # sparse coef_: leave it to scikit-learn
            return None
        arrays: Arrays = {
            "coef": coef_t,
            "intercept": np.asarray(est.intercept_),
            "classes": np.asarray(est.classes_),
        }
        return {"type": "linear_classifier"}, arrays
    if (
        getattr(cls, "predict", None) in _linear_regressor_predicts()
        and getattr(cls, "_decision_function", None) in _linear_decisions()
    ):
        coef = est.coef_
        if not isinstance(coef, np.ndarray) or coef.ndim != 1:
            return None
        return {"type": "linear_regressor"}, {"coef": coef, "intercept": np.asarray(est.intercept_)}
    return None


def _build_linear(desc: JSONDict, arrays: Arrays) -> Predict:
    intercept = arrays["intercept"]
    if desc["type"] == "linear_classifier":
        return _linear_classifier(arrays["coef"], intercept, arrays["classes"])
    return _linear_regressor(arrays["coef"], intercept)


def _linear(est: Any) -> Predict | None:
    spec = _linear_spec(est)
    return None if spec is None else _build_linear(*spec)


def _trees(est: Any) -> Predict | None:
    from sklearn.ensemble._forest import ForestClassifier, ForestRegressor
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    cls = type(est)
    if getattr(est, "n_outputs_", 1) != 1:
        return None
    if cls is DecisionTreeClassifier:
        tree, classes, n_classes = est.tree_, est.classes_, int(est.n_classes_)

        def tree_classifier(x: FloatArray) -> npt.NDArray[Any]:
            proba = tree.predict(x.astype(np.float32))[:, :n_classes]
            labels: npt.NDArray[Any] = classes[proba.argmax(axis=1)]
            return labels

        return tree_classifier
    if cls is DecisionTreeRegressor:
        reg_tree = est.tree_

        def tree_regressor(x: FloatArray) -> npt.NDArray[Any]:
            out: npt.NDArray[Any] = reg_tree.predict(x.astype(np.float32))[:, 0]
            return out

        return tree_regressor
    members = getattr(est, "estimators_", None)
    if not members:
        return None
    if (
        isinstance(est, ForestClassifier)
        and cls.predict is ForestClassifier.predict
        and cls.predict_proba is ForestClassifier.predict_proba
        and all(
            isinstance(e, DecisionTreeClassifier)
            and type(e).predict_proba is DecisionTreeClassifier.predict_proba
            for e in members
        )
    ):
        trees = [e.tree_ for e in members]
        classes, n_classes, count = est.classes_, int(est.n_classes_), len(members)

        def forest_classifier(x: FloatArray) -> npt.NDArray[Any]:
            x32 = x.astype(np.float32)
            acc = np.zeros((x.shape[0], n_classes), dtype=np.float64)
            for t in trees:
                acc += t.predict(x32)[:, :n_classes]
            acc /= count
            labels: npt.NDArray[Any] = classes[acc.argmax(axis=1)]
            return labels

        return forest_classifier
    if (
        isinstance(est, ForestRegressor)
        and cls.predict is ForestRegressor.predict
        and all(
            isinstance(e, DecisionTreeRegressor)
            and type(e).predict is DecisionTreeRegressor.predict
            for e in members
        )
    ):
        reg_trees = [e.tree_ for e in members]
        reg_count = len(members)

        def forest_regressor(x: FloatArray) -> npt.NDArray[Any]:
            x32 = x.astype(np.float32)
            acc = np.zeros(x.shape[0], dtype=np.float64)
            for t in reg_trees:
                acc += t.predict(x32)[:, 0]
            acc /= reg_count
            return acc

        return forest_regressor
    return None


def _chain(steps: tuple[Callable[[FloatArray], FloatArray], ...], core: Predict) -> Predict:
    if not steps:
        return core

    def piped(x: FloatArray) -> npt.NDArray[Any]:
        for fn in steps:
            x = fn(x)
        return core(x)

    return piped


def compile_predict(model: Any) -> tuple[Predict, str] | None:
    """A direct predict function for `model` and its kind, or None when not eligible."""
    from sklearn.pipeline import Pipeline

    steps: list[Callable[[FloatArray], FloatArray]] = []
    final = model
    if type(model) is Pipeline:
        *pre, (_, final) = model.steps
        for _, step in pre:
            if step in (None, "passthrough"):
                continue
            fn = _transform(step)
            if fn is None:
                return None
            steps.append(fn)
    for builder, kind in ((_linear, "linear"), (_trees, "trees")):
        try:
            core = builder(final)
        except (AttributeError, TypeError, ValueError):
            core = None
        if core is None:
            continue
        if not steps:
            return core, kind
        return _chain(tuple(steps), core), f"pipeline+{kind}"
    return None


def reference_inputs(n_features: int, samples: list[FloatArray], seed: int = 0) -> list[FloatArray]:
    """Batches to compare on: the given rows, synthetic rows around them, single rows."""
    rng = np.random.default_rng(seed)
    real = [s for s in samples if s.ndim == 2 and s.shape[1] == n_features and len(s)]
    batches: list[FloatArray] = list(real)
    if real:
        allx = np.concatenate(real)
        mean, std = allx.mean(axis=0), allx.std(axis=0) + 1e-3
        batches.append(rng.normal(mean, 2 * std, size=(256, n_features)))
        singles = allx[rng.choice(len(allx), size=min(16, len(allx)), replace=False)]
    else:
        batches.append(rng.normal(0.0, 3.0, size=(256, n_features)))
        singles = batches[-1][:16]
    batches.append(np.zeros((1, n_features)))
    batches.extend(singles[i : i + 1] for i in range(len(singles)))
    return [np.ascontiguousarray(b, dtype=np.float64) for b in batches]


def verify(model: Any, fast: Predict, batches: list[FloatArray]) -> bool:
    """True when `fast` gives exactly `model.predict`'s values and dtype on every batch."""
    for x in batches:
        try:
            want = np.asarray(model.predict(x))
            got = np.asarray(fast(x))
        except Exception:  # noqa: BLE001 - any failure means "not equivalent"
            return False
        if want.dtype != got.dtype or want.shape != got.shape or not np.array_equal(want, got):
            return False
    return True


# ----------------------------------------------------------------------------- export


@dataclass(frozen=True)
class Exported:
    """A fast path rebuilt from fastpath.npz (numpy only)."""

    predict: Predict
    kind: str
    n_features: int
    classes: npt.NDArray[Any] | None  # None for a regressor


def export_spec(model: Any) -> tuple[JSONDict, Arrays] | None:
    """The model's fast path as (JSON description, named arrays), or None: not exportable."""
    from sklearn.pipeline import Pipeline

    steps: list[JSONDict] = []
    arrays: Arrays = {}
    final = model
    if type(model) is Pipeline:
        *pre, (_, final) = model.steps
        for _, step in pre:
            if step in (None, "passthrough"):
                continue
            spec = _transform_spec(step)
            if spec is None:
                return None
            desc, step_arrays = spec
            arrays.update({f"s{len(steps)}_{k}": v for k, v in step_arrays.items()})
            steps.append({**desc, "arrays": sorted(step_arrays)})
    try:
        linear = _linear_spec(final)
    except (AttributeError, TypeError, ValueError):
        linear = None
    if linear is None:
        return None
    desc, model_arrays = linear
    classes_object = False
    classes = model_arrays.get("classes")
    if classes is not None and classes.dtype.kind == "O":
        # np.save without pickle holds no objects: text labels go as unicode, back to object
        if not all(isinstance(c, str) for c in classes.tolist()):
            return None
        model_arrays["classes"] = classes.astype(str)
        classes_object = True
    arrays.update({f"m_{k}": v for k, v in model_arrays.items()})
    meta: JSONDict = {
        "format": EXPORT_FORMAT,
        "kind": "pipeline+linear" if steps else "linear",
        "nFeatures": int(model_arrays["coef"].shape[0]),
        "steps": steps,
        "model": {**desc, "arrays": sorted(model_arrays), "classesObject": classes_object},
    }
    return meta, arrays


def export_bytes(meta: JSONDict, arrays: Arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def _take(arrays: Arrays, prefix: str, desc: Any) -> Arrays:
    names = desc.get("arrays") if isinstance(desc, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ExportError(f"array list missing in {desc!r}")
    out: Arrays = {}
    for name in names:
        arr = arrays.get(prefix + name)
        if arr is None:
            raise ExportError(f"array {prefix + name!r} missing")
        if name != "classes" and arr.dtype.kind != "f":
            raise ExportError(f"array {prefix + name!r} is {arr.dtype}, not floating point")
        out[name] = arr
    return out


def _shape_check(ok: bool, what: str) -> None:
    if not ok:
        raise ExportError(f"inconsistent shapes: {what}")


def from_bytes(data: bytes) -> Exported:
    """Rebuild the fast path from fastpath.npz bytes, with numpy alone (no pickle)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays: Arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # noqa: BLE001 - zipfile/numpy raise many types on bad bytes
        raise ExportError(f"not a valid npz file: {type(exc).__name__}: {exc}") from None
    raw = arrays.pop("meta", None)
    if raw is None or raw.ndim != 0 or raw.dtype.kind != "U":
        raise ExportError("no 'meta' description")
    try:
        meta = json.loads(str(raw))
    except ValueError as exc:
        raise ExportError(f"'meta' is not JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise ExportError(f"unknown format {fmt!r} (this server reads {EXPORT_FORMAT})")
    n = meta.get("nFeatures")
    steps_meta, model_meta = meta.get("steps"), meta.get("model")
    if not isinstance(n, int) or n <= 0 or not isinstance(steps_meta, list):
        raise ExportError("'nFeatures' or 'steps' missing")
    if not isinstance(model_meta, dict):
        raise ExportError("'model' missing")
    steps: list[Callable[[FloatArray], FloatArray]] = []
    for i, desc in enumerate(steps_meta):
        step_arrays = _take(arrays, f"s{i}_", desc)
        kind = desc.get("type")
        need = {"standard": set(), "minmax": {"mul", "add"}}.get(kind)
        if need is None or not need <= set(step_arrays):
            raise ExportError(f"step {i}: unknown type {kind!r} or arrays missing")
        if kind == "minmax" and not all(isinstance(desc.get(k), int | float) for k in ("lo", "hi")):
            raise ExportError(f"step {i}: feature range missing")
        _shape_check(all(a.shape == (n,) for a in step_arrays.values()), f"step {i}")
        steps.append(_build_transform(desc, step_arrays))
    mtype = model_meta.get("type")
    model_arrays = _take(arrays, "m_", model_meta)
    if not {"coef", "intercept"} <= set(model_arrays):
        raise ExportError("'coef' or 'intercept' missing")
    coef, intercept = model_arrays["coef"], model_arrays["intercept"]
    classes: npt.NDArray[Any] | None = None
    if mtype == "linear_classifier":
        classes = model_arrays.get("classes")
        if classes is None or classes.ndim != 1 or len(classes) < 2:
            raise ExportError("'classes' missing")
        outputs = coef.shape[1] if coef.ndim == 2 else 1
        _shape_check(
            coef.ndim in (1, 2)
            and coef.shape[0] == n
            and outputs in ({1, len(classes)} if len(classes) == 2 else {len(classes)})
            and intercept.size in (1, outputs),
            f"coef {coef.shape}, intercept {intercept.shape}, {len(classes)} classes",
        )
        if model_meta.get("classesObject") is True:
            classes = classes.astype(object)
        core = _linear_classifier(coef, intercept, classes)
    elif mtype == "linear_regressor":
        _shape_check(coef.shape == (n,) and intercept.size == 1, f"coef {coef.shape}")
        core = _linear_regressor(coef, intercept)
    else:
        raise ExportError(f"unknown model type {mtype!r}")
    kind = "pipeline+linear" if steps else "linear"
    return Exported(_chain(tuple(steps), core), kind, n, classes)


def load_export(path: Path, sha256: Any) -> Exported:
    """Read `path` (fastpath.npz), check it against the card's sha256, rebuild it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ExportError(f"cannot read it: {exc.strerror or exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ExportError(
            f"its sha256 {digest[:16]}... does not match the model card's {str(sha256)[:16]}..."
        )
    return from_bytes(data)


def export(model: Any, model_dir: Path, samples: list[FloatArray]) -> JSONDict:
    """Write `model_dir/fastpath.npz` when `model`'s fast path exports and verifies.

    The predictor rebuilt from the very bytes written must give exactly `model.predict`'s
    results on `samples` (the cycle's rows) and the synthetic batches around them.
    Returns the model card's fields for it (empty when nothing was written).
    """
    path = model_dir / EXPORT_FILE
    path.unlink(missing_ok=True)
    try:
        spec = export_spec(model)
    except (AttributeError, TypeError, ValueError):
        spec = None
    if spec is None:
        return {}
    data = export_bytes(*spec)
    try:
        exported = from_bytes(data)
    except ExportError:
        return {}
    rows = [np.asarray(s[:REFERENCE_ROWS], dtype=np.float64) for s in samples]
    if not verify(model, exported.predict, reference_inputs(exported.n_features, rows)):
        return {}
    atomic_write_bytes(path, data)
    return {
        "fastPathFile": EXPORT_FILE,
        "fastPathKind": exported.kind,
        "fastPathSha256": hashlib.sha256(data).hexdigest(),
    }
