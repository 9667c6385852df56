"""Shared plumbing for the workload subcommands: errors, artifact paths, JSON files.

Purpose: one error type that carries a user-facing, one-line message
(`WorkloadError`), the artifact-volume layout (`cycles/<N>/{data,model}`, `feedback/`)
and small helpers that write JSON atomically (temporary file + rename) so that a
retried or killed pod never leaves a half-written artifact behind.

Limits: no Kubernetes, no operator imports; only the standard library and numpy.
Atomic writes rely on `os.replace` within one directory (POSIX semantics); the
artifact volume must support rename, which every ReadWriteOnce/ReadWriteMany volume does.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

JSONDict = dict[str, Any]


class WorkloadError(Exception):
    """A failure whose message is shown to the user as is (one line, names what is wrong)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        return str(self.args[0])


class UsageError(WorkloadError):
    """A malformed command line or JSON argument (exit code 2)."""


# ----------------------------------------------------------------------------- layout


def cycle_dir(artifacts: Path, cycle: int) -> Path:
    return artifacts / "cycles" / str(cycle)


def data_dir(artifacts: Path, cycle: int) -> Path:
    return cycle_dir(artifacts, cycle) / "data"


def model_dir(artifacts: Path, cycle: int) -> Path:
    return cycle_dir(artifacts, cycle) / "model"


def feedback_dir(artifacts: Path) -> Path:
    return artifacts / "feedback"


# ----------------------------------------------------------------------------- JSON


def to_jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays and tuples to plain JSON types; non-finite floats -> None."""
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    return repr(value)


def dumps_compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same directory, then rename."""
    atomic_write_with(path, lambda fh: fh.write(data))


def atomic_write_with(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Let `write` fill a temporary file in `path`'s directory, fsync it, then rename it
    over `path` (no in-memory copy of the content, nothing half-written at `path`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, value: Any, *, indent: int | None = 2) -> None:
    separators = None if indent is not None else (",", ":")
    text = json.dumps(to_jsonable(value), indent=indent, separators=separators, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def read_json(path: Path, what: str) -> JSONDict:
    """Read a JSON object written by an earlier step; a clear error when missing or corrupt."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorkloadError(f"{what} not found at {path}") from None
    except OSError as exc:
        raise WorkloadError(f"cannot read {what} at {path}: {exc.strerror}") from None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise WorkloadError(f"{what} at {path} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise WorkloadError(f"{what} at {path} is not a JSON object")
    return value


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- data


def data_hash(
    x_train: npt.NDArray[Any],
    y_train: npt.NDArray[Any],
    x_test: npt.NDArray[Any],
    y_test: npt.NDArray[Any],
    feature_names: list[str],
) -> str:
    """sha256 over a canonical serialization of the split arrays and the feature names.

    The header (JSON: feature names, and dtype/shape per array) is followed by each
    array's little-endian C-order bytes. Same data and split -> same hash on any machine.
    """
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    canon: dict[str, npt.NDArray[Any]] = {}
    for name, arr in arrays.items():
        a = np.ascontiguousarray(arr)
        canon[name] = a.astype(a.dtype.newbyteorder("<"), copy=False)
    header = {
        "features": list(feature_names),
        "arrays": [{"name": n, "dtype": a.dtype.str, "shape": a.shape} for n, a in canon.items()],
    }
    h = hashlib.sha256()
    h.update(json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    for a in canon.values():
        h.update(b"\x00")
        h.update(a.reshape(-1).view(np.uint8).data)  # C-order bytes, no copy
    return "sha256:" + h.hexdigest()


def load_split(path: Path, what: str) -> tuple[npt.NDArray[np.float64], npt.NDArray[Any]]:
    """Load `X`, `y` from an .npz written by collect (never with allow_pickle)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            x = np.asarray(npz["X"], dtype=np.float64)
            y = np.asarray(npz["y"])
    except FileNotFoundError:
        raise WorkloadError(f"{what} not found at {path}; did collect run?") from None
    except (OSError, ValueError, KeyError) as exc:
        raise WorkloadError(f"{what} at {path} is unreadable: {exc}") from None
    return x, y
