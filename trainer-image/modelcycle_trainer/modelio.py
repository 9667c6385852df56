"""Model persistence with skops under an explicit trusted-types policy (never pickle).

Purpose: `save_model` writes a fitted estimator with `skops.io.dump`; `load_model`
reads it back only after `skops.io.get_untrusted_types` has listed every type the file
would instantiate beyond skops' own defaults (which are scikit-learn's estimators and
numpy's and scipy's data types), and each of those is on the policy:
- for scikit-learn, numpy and scipy, the explicit list `TRUSTED_TYPES`: the helper classes
  fitted estimators hold (tree structures, neighbour trees, distance metrics, optimisers,
  `Bunch`). Nothing else under those packages is trusted by its name: a function such as
  `sklearn.datasets.dump_svmlight_file` resealed into a `FunctionTransformer` would run
  at predict time, so it is refused;
- for the other packages the operator allows for estimators (`--allowed-modules`, e.g.
  `xgboost`), names that resolve to a class inside that package (never a function).
Anything else — a tampered file naming `os.system`, a custom class, a corrupt archive — is
refused with a clear error and is never instantiated. `load_card` reads the model card
that `train` writes next to it.

Limits: `FunctionTransformer` and `PyFuncDistance` models (which carry arbitrary
callables) cannot be loaded; a helper class of another scikit-learn estimator that is not
in `TRUSTED_TYPES` is refused until it is added there (the error names it).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from modelcycle_trainer.common import JSONDict, WorkloadError, read_json

MODEL_FILE = "model.skops"
CARD_FILE = "card.json"
ALWAYS_TRUSTED_PACKAGES = ("sklearn", "numpy", "scipy")

_DISTANCES = [
    "Euclidean",
    "SEuclidean",
    "Manhattan",
    "Chebyshev",
    "Minkowski",
    "Mahalanobis",
    "Hamming",
    "Canberra",
    "BrayCurtis",
    "Jaccard",
    "Matching",
    "Dice",
    "Kulsinski",
    "RogersTanimoto",
    "RussellRao",
    "SokalMichener",
    "SokalSneath",
    "Haversine",
]

# Types beyond skops' defaults that fitted scikit-learn estimators hold (found by dumping
# every estimator family the examples and tests use). Classes only; no function is listed.
TRUSTED_TYPES = frozenset(
    (
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neighbors._ball_tree.BallTree",
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
        "sklearn.utils._bunch.Bunch",
        *(
            f"sklearn.metrics._dist_metrics.{d}Distance{bits}"
            for d in _DISTANCES
            for bits in (32, 64)
        ),
    )
)


def trusted_packages(allowed_modules: Iterable[str] = ()) -> tuple[str, ...]:
    extra = [m.strip().split(".")[0] for m in allowed_modules if m.strip()]
    return tuple(dict.fromkeys([*ALWAYS_TRUSTED_PACKAGES, *extra]))


def _is_class_in(name: str, package: str) -> bool:
    """True when `name` (module.attr) names a class defined inside `package`."""
    import importlib
    import inspect

    module_name, _, attr = name.rpartition(".")
    if not module_name or not attr.isidentifier():
        return False
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except Exception:  # noqa: BLE001 - any failure to resolve the name: not trusted
        return False
    owner = getattr(obj, "__module__", "") or ""
    return inspect.isclass(obj) and owner.split(".", 1)[0] == package


def refused_types(types: Iterable[str], packages: Iterable[str]) -> list[str]:
    """Types (fully qualified names) outside the policy: `TRUSTED_TYPES` for scikit-learn,
    numpy and scipy; classes of the other `packages`."""
    extra = set(packages) - set(ALWAYS_TRUSTED_PACKAGES)
    refused = []
    for name in types:
        top = name.split(".", 1)[0]
        if name in TRUSTED_TYPES or (top in extra and _is_class_in(name, top)):
            continue
        refused.append(name)
    return sorted(refused)


def check_model_file(path: Path, allowed_modules: Iterable[str] = ()) -> list[str]:
    """Return the untrusted-by-default types after checking them against the policy."""
    import skops.io as sio

    if not path.is_file():
        raise WorkloadError(f"model file not found: {path}")
    try:
        untrusted = list(sio.get_untrusted_types(file=path))
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, OSError) as exc:
        raise WorkloadError(f"{path} is not a valid skops model file: {exc}") from None
    packages = trusted_packages(allowed_modules)
    refused = refused_types(untrusted, packages)
    if refused:
        policy = "scikit-learn's estimators and the helper types they hold"
        extra = [p for p in packages if p not in ALWAYS_TRUSTED_PACKAGES]
        if extra:
            policy += ", classes of " + ", ".join(extra)
        raise WorkloadError(
            f"refusing to load {path}: it contains types outside the trusted policy "
            f"({policy}): {', '.join(refused)}"
        )
    return untrusted


def load_model(path: Path, allowed_modules: Iterable[str] = ()) -> Any:
    import skops.io as sio

    untrusted = check_model_file(path, allowed_modules)
    try:
        return sio.load(path, trusted=untrusted)
    except Exception as exc:  # skops/sklearn raise many types for a corrupt payload
        raise WorkloadError(f"cannot load model {path}: {type(exc).__name__}: {exc}") from exc


def save_model(model: Any, path: Path) -> None:
    import skops.io as sio

    path.parent.mkdir(parents=True, exist_ok=True)
    sio.dump(model, path)


def load_card(model_dir: Path) -> JSONDict:
    return read_json(model_dir / CARD_FILE, "model card")
