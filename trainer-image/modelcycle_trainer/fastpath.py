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

Limits: single-output models only; `predict_proba` always goes through scikit-learn.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Predict = Callable[[FloatArray], npt.NDArray[Any]]


def _transform(step: Any) -> Callable[[FloatArray], FloatArray] | None:
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    if type(step) is StandardScaler:
        mean = step.mean_ if step.with_mean else None
        scale = step.scale_ if step.with_std else None

        def standard(x: FloatArray) -> FloatArray:
            out = x - mean if mean is not None else x.copy()
            if scale is not None:
                out /= scale
            return out

        return standard
    if type(step) is MinMaxScaler:
        mul, add = step.scale_, step.min_
        lo, hi = step.feature_range
        clip = bool(step.clip)

        def minmax(x: FloatArray) -> FloatArray:
            out: FloatArray = x * mul
            out += add
            if clip:
                np.clip(out, lo, hi, out=out)
            return out

        return minmax
    return None


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


def _linear(est: Any) -> Predict | None:
    from sklearn.linear_model._base import LinearClassifierMixin

    cls = type(est)
    if (
        getattr(cls, "predict", None) is LinearClassifierMixin.predict
        and getattr(cls, "decision_function", None) is LinearClassifierMixin.decision_function
    ):
        coef_t = est.coef_.T if est.coef_.ndim == 2 else est.coef_
        intercept = est.intercept_
        classes = est.classes_
        if not isinstance(coef_t, np.ndarray):  # sparse coef_: leave it to scikit-learn
            return None

        def linear_classifier(x: FloatArray) -> npt.NDArray[Any]:
            scores = x @ coef_t + intercept
            if scores.ndim > 1 and scores.shape[1] == 1:
                scores = scores.reshape(-1)
            idx = (scores > 0).astype(np.intp) if scores.ndim == 1 else np.argmax(scores, axis=1)
            labels: npt.NDArray[Any] = np.take(classes, idx, axis=0)
            return labels

        return linear_classifier
    if (
        getattr(cls, "predict", None) in _linear_regressor_predicts()
        and getattr(cls, "_decision_function", None) in _linear_decisions()
    ):
        coef = est.coef_
        if not isinstance(coef, np.ndarray) or coef.ndim != 1:
            return None
        intercept = est.intercept_

        def linear_regressor(x: FloatArray) -> npt.NDArray[Any]:
            out: npt.NDArray[Any] = x @ coef + intercept
            return out

        return linear_regressor
    return None


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
            labels: npt.NDArray[Any] = classes.take(np.argmax(proba, axis=1), axis=0)
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
            labels: npt.NDArray[Any] = classes.take(np.argmax(acc, axis=1), axis=0)
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
