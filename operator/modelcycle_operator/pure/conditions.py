"""Status conditions as the Kubernetes API conventions and kstatus read them.

A condition is ``{type, status, observedGeneration, lastTransitionTime, reason, message}``
in a list keyed by ``type``. :func:`set_condition` behaves like apimachinery's
``meta.SetStatusCondition``: ``lastTransitionTime`` moves only when ``status`` flips, while
reason, message and observedGeneration are updated in place. kstatus reads ``Reconciling``
and ``Stalled`` as true-when-abnormal and ``Ready`` as the summary;
:func:`summary_conditions` computes those three from the cycle's step.

Limits: pure functions over plain dicts; they never mutate their inputs and never read
the clock (``now`` is passed in).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "ACTIVE_STEPS",
    "ALL_TYPES",
    "STEP_TYPES",
    "Summary",
    "ensure_conditions",
    "get_condition",
    "is_true",
    "rfc3339",
    "set_condition",
    "summary_conditions",
]

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"

READY = "Ready"
DATA_COLLECTED = "DataCollected"
TRAINED = "Trained"
EVALUATED = "Evaluated"
GATED = "Gated"
ROLLED_OUT = "RolledOut"
DEGRADED = "Degraded"
RECONCILING = "Reconciling"
STALLED = "Stalled"

#: Conditions that describe the current cycle; reset to Unknown when a cycle starts.
STEP_TYPES = (DATA_COLLECTED, TRAINED, EVALUATED, GATED, ROLLED_OUT)
ALL_TYPES = (READY, *STEP_TYPES, DEGRADED, RECONCILING, STALLED)

#: Steps during which a cycle is in progress (kstatus: Reconciling=True).
ACTIVE_STEPS = frozenset(
    {"Pending", "Collecting", "Training", "Evaluating", "Gating", "RollingOut"}
)

_MAX_MESSAGE = 2048


def rfc3339(now: datetime.datetime) -> str:
    """Seconds-precision UTC timestamp, the form ``metav1.Time`` serialises to."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=datetime.UTC)
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def get_condition(
    conditions: Iterable[Mapping[str, Any]] | None, type_: str
) -> dict[str, Any] | None:
    for condition in conditions or ():
        if condition.get("type") == type_:
            return dict(condition)
    return None


def is_true(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> bool:
    condition = get_condition(conditions, type_)
    return condition is not None and condition.get("status") == TRUE


def set_condition(  # noqa: PLR0917 - the argument order of meta.SetStatusCondition's callers
    conditions: Sequence[Mapping[str, Any]] | None,
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int,
    now: datetime.datetime,
) -> list[dict[str, Any]]:
    """Return a new list with ``type_`` set; the transition time changes only on a flip."""
    if status not in (TRUE, FALSE, UNKNOWN):
        raise ValueError(f"condition status must be True, False or Unknown, got {status!r}")
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 1] + "…"
    result: list[dict[str, Any]] = []
    found = False
    for existing in conditions or ():
        if existing.get("type") != type_:
            result.append(dict(existing))
            continue
        found = True
        updated = dict(existing)
        if existing.get("status") != status or not existing.get("lastTransitionTime"):
            updated["lastTransitionTime"] = rfc3339(now)
        updated.update(status=status, reason=reason, message=message, observedGeneration=generation)
        result.append(updated)
    if not found:
        result.append(
            {
                "type": type_,
                "status": status,
                "observedGeneration": generation,
                "lastTransitionTime": rfc3339(now),
                "reason": reason,
                "message": message,
            }
        )
    return result


def ensure_conditions(
    conditions: Sequence[Mapping[str, Any]] | None,
    generation: int,
    now: datetime.datetime,
    types: Iterable[str] = ALL_TYPES,
) -> list[dict[str, Any]]:
    """Add every missing condition as Unknown (conditions are set on the first reconcile)."""
    result = [dict(c) for c in conditions or ()]
    for type_ in types:
        if get_condition(result, type_) is None:
            message = (
                "Production health is not evaluated yet"
                if type_ == DEGRADED
                else "Waiting for the first reconcile to finish"
            )
            result = set_condition(result, type_, UNKNOWN, "Initializing", message, generation, now)
    order = {t: i for i, t in enumerate(ALL_TYPES)}
    return sorted(result, key=lambda c: order.get(str(c.get("type")), len(order)))


@dataclasses.dataclass(frozen=True)
class Summary:
    """The (status, reason, message) of Ready, Reconciling and Stalled."""

    ready: tuple[str, str, str]
    reconciling: tuple[str, str, str]
    stalled: tuple[str, str, str]


def summary_conditions(
    *,
    step: str,
    cycle: int,
    champion: Mapping[str, Any] | None,
    failure: tuple[str, str] | None,
    detail: str = "",
    serving_enabled: bool = True,
) -> Summary:
    """Ready / Reconciling / Stalled for a step.

    ``failure`` is (reason, message) when the last cycle failed and needs a new trigger;
    ``detail`` is what an active step is doing (shown in Reconciling's message).
    """
    if step in ACTIVE_STEPS:
        reconciling = (TRUE, step, detail or f"Cycle {cycle}: {step.lower()}")
    else:
        reconciling = (FALSE, step, detail if step == "Suspended" else "")
    if failure is not None and step == "Failed":
        stalled = (TRUE, failure[0], failure[1])
    else:
        stalled = (FALSE, step, "")

    if champion and champion.get("version"):
        version = champion["version"]
        metric = champion.get("metric")
        score = champion.get("score")
        scored = f", {metric} {score:.4g}" if metric and isinstance(score, int | float) else ""
        where = "serving" if serving_enabled else "promoted (serving disabled)"
        ready = (
            TRUE,
            "ChampionServing" if serving_enabled else "ChampionPromoted",
            f"Model version {version} from cycle {champion.get('cycle')} is {where}{scored}",
        )
    elif step == "Failed" and failure is not None:
        ready = (FALSE, failure[0], failure[1])
    elif step == "Rejected":
        ready = (FALSE, "ChallengerRejected", detail or "The challenger did not pass the gate")
    elif step == "Suspended":
        ready = (FALSE, "Suspended", "spec.suspend is true and no model is serving")
    else:
        ready = (FALSE, "NoChampion", f"Cycle {cycle} is in progress; no model is serving yet")
    return Summary(ready=ready, reconciling=reconciling, stalled=stalled)
