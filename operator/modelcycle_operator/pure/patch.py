"""JSON merge patches (RFC 7386) between two versions of a status.

The reconcile writes status with a merge patch on the status subresource: objects merge
key by key, ``null`` deletes a key, and lists (conditions, history) are replaced whole.
:func:`merge_patch` computes the smallest such patch; an empty result means there is
nothing to write, which keeps an idle reconcile from writing at all.

Limits: pure; values are compared by equality, so ``1`` and ``1.0`` count as equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["apply_merge_patch", "merge_patch"]


def merge_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """The patch that turns ``old`` into ``new``."""
    old = old or {}
    patch: dict[str, Any] = {}
    for key in old:
        if key not in new:
            patch[key] = None
    for key, value in new.items():
        before = old.get(key, _MISSING)
        if value is None:
            if before is not _MISSING:
                patch[key] = None
            continue
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = merge_patch(before, value)
            if sub:
                patch[key] = sub
        elif before is _MISSING or before != value or type(before) is not type(value):
            if before is not _MISSING and _same_number(before, value):
                continue
            patch[key] = _strip_none(value)
    return patch


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 application, for tests and for reasoning about what the server stores."""
    if not isinstance(patch, Mapping):
        return patch
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


class _Missing:
    pass


_MISSING = _Missing()


def _same_number(a: Any, b: Any) -> bool:
    numbers = (int, float)
    return (
        isinstance(a, numbers)
        and isinstance(b, numbers)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
        and a == b
    )


def _strip_none(value: Any) -> Any:
    """A None inside a new object would read as "delete"; drop such keys instead."""
    if isinstance(value, Mapping):
        return {k: _strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_none(v) for v in value]
    return value
