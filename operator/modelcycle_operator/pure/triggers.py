"""Pending triggers in the status, and the cooldown every trigger respects.

The alert receiver, the built-in monitor and the schedule never start a cycle themselves:
each writes ``status.triggers.pending`` (``{type: Alert|Monitor|Schedule, reason, time,
key}``) and wakes the reconcile, and :func:`modelcycle_operator.pure.decide.decide` — the
only place that starts cycles — takes it when no cycle is in progress and the cooldown
allows. The helpers here are what both sides need to agree on.

The cooldown is ``spec.monitoring.cooldownSeconds`` counted from the start of the last
cycle (``status.lastTrigger.time``, whatever started it).

Limits: pure; ``now`` is an argument.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from modelcycle_operator.pure import conditions as cond

__all__ = [
    "ALERT_KEYS_LIMIT",
    "TRIGGER_TYPES",
    "Pending",
    "cooldown_left",
    "cycle_in_progress",
    "last_cycle_start",
    "pending_of",
    "remember_key",
]

#: Triggers that arrive through ``status.triggers.pending``.
TRIGGER_TYPES = ("Alert", "Monitor", "Schedule")
#: ``status.triggers.alertKeys`` keeps this many handled alerts (the CRD's maxItems).
ALERT_KEYS_LIMIT = 100
MAX_REASON = 4096
MAX_KEY = 256


@dataclasses.dataclass(frozen=True)
class Pending:
    """A trigger waiting for the decision to start a cycle."""

    type: str
    reason: str
    time: str
    key: str

    def to_dict(self) -> dict[str, str]:
        return {"type": self.type, "reason": self.reason, "time": self.time, "key": self.key}


def pending_of(triggers: Any) -> Pending | None:
    """The pending trigger of ``status.triggers``, or None (also for a malformed one)."""
    if not isinstance(triggers, Mapping):
        return None
    raw = triggers.get("pending")
    if not isinstance(raw, Mapping) or raw.get("type") not in TRIGGER_TYPES:
        return None
    return Pending(
        type=str(raw["type"]),
        reason=str(raw.get("reason") or raw["type"])[:MAX_REASON],
        time=str(raw.get("time") or ""),
        key=str(raw.get("key") or "")[:MAX_KEY],
    )


def last_cycle_start(status: Mapping[str, Any]) -> datetime.datetime | None:
    last = status.get("lastTrigger")
    if not isinstance(last, Mapping):
        return None
    return cond.parse_time(last.get("time"))


def cooldown_left(
    status: Mapping[str, Any], cooldown_seconds: int, now: datetime.datetime
) -> float:
    """Seconds until a trigger may start a cycle again (0: it may now)."""
    start = last_cycle_start(status)
    if start is None or cooldown_seconds <= 0:
        return 0.0
    return max(0.0, cooldown_seconds - (now - start).total_seconds())


def cycle_in_progress(status: Mapping[str, Any]) -> bool:
    cycle = status.get("cycle")
    return (
        isinstance(cycle, int)
        and not isinstance(cycle, bool)
        and cycle > 0
        and status.get("step") in cond.ACTIVE_STEPS
    )


def remember_key(keys: Sequence[Any] | None, key: str) -> list[str]:
    """``keys`` with ``key`` appended (moved to the end if there), newest last, bounded."""
    kept = [str(k) for k in keys or () if isinstance(k, str) and k != key]
    kept.append(key[:MAX_KEY])
    return kept[-ALERT_KEYS_LIMIT:]
