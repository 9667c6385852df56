"""Model persistence with skops under an explicit trusted-types policy (never pickle).

Purpose: `save_model` writes a fitted estimator with `skops.io.dump`; `load_model`
reads it back only after `skops.io.get_untrusted_types` has listed every type the file
would instantiate beyond skops' own defaults, and each of those is inside the policy:
the `sklearn`, `numpy` and `scipy` packages plus the top-level packages the operator
allows for estimators (`--allowed-modules`). Anything else — a tampered file naming
`os.system`, a custom class, a corrupt archive — is refused with a clear error and is
never instantiated. `load_card` reads the model card that `train` writes next to it.

Limits: the policy is by package prefix; it trusts the named packages' own types, not
arbitrary callables from elsewhere. Builtins beyond what skops trusts by default are
refused (scikit-learn estimators need none).
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


def trusted_packages(allowed_modules: Iterable[str] = ()) -> tuple[str, ...]:
    extra = [m.strip().split(".")[0] for m in allowed_modules if m.strip()]
    return tuple(dict.fromkeys([*ALWAYS_TRUSTED_PACKAGES, *extra]))


def refused_types(types: Iterable[str], packages: Iterable[str]) -> list[str]:
    """Types (fully qualified names) whose top-level package is outside `packages`."""
    allowed = set(packages)
    return sorted(t for t in types if t.split(".", 1)[0] not in allowed or "." not in t)


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
        policy = ", ".join(f"{p}.*" for p in packages)
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
