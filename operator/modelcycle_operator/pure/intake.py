"""What the alert receiver, the built-in monitor and the schedule write into the status.

Each function takes the ModelCycle as it was read and ``now`` and returns a
:class:`Change`: the complete new status, the Events to post, whether a trigger is now
pending (the caller then wakes the reconcile, whose decision starts the cycle), and the
outcome per alert. The caller writes the status as a merge patch guarded by the
resourceVersion it read and, on a conflict, calls the function again on a fresh read, so
two writers never both think they requested the cycle.

A request passes these gates, in order; the first that stops it is the outcome:

=====================  ==============================================================
outcome                meaning
=====================  ==============================================================
``Resolved``           (alerts) a resolved alert: recorded in ``triggers.lastAlert``
``Duplicate``          (alerts) ``fingerprint@startsAt`` is in ``triggers.alertKeys``
``AlertsDisabled``     (alerts) ``spec.monitoring.alerts.enabled`` is false
``NotMatched``         (alerts) a label of ``spec.monitoring.alerts.matchLabels`` differs
``Suspended``          ``spec.suspend`` is true
``Cooldown``           less than ``cooldownSeconds`` since the last cycle started
``CycleInProgress``    a cycle runs; it already retrains on what was collected
``Pending``            another request is already pending: this one joins it
``Retrain``            written to ``triggers.pending``; the reconcile starts the cycle
=====================  ==============================================================

``Suspended``, ``Cooldown``, ``CycleInProgress``, ``AlertsDisabled`` and ``NotMatched``
are recorded in ``triggers.lastSkipped`` with an Event (``AlertSkipped`` for alerts,
``RetrainSkipped`` otherwise), once per (type, reason, key). A skipped alert is not
remembered as handled: Alertmanager sends it again on its repeat interval, and once the
cooldown is over a still-firing alert retrains. ``Retrain`` and ``Pending`` alerts are
remembered (``triggers.alertKeys``, newest last, at most 100), so repeats do not retrain.

Limits: pure; the cron arithmetic comes in as ``next_after`` (the caller wraps croniter).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from modelcycle_operator.pure import conditions as cond
from modelcycle_operator.pure import triggers as trig
from modelcycle_operator.pure.alerts import Alert, alert_verdict
from modelcycle_operator.pure.decide import EmitEvent
from modelcycle_operator.pure.health import Assessment
from modelcycle_operator.pure.spec import ModelCycle, SpecError

__all__ = [
    "AlertResult",
    "Change",
    "monitor_observed",
    "offer",
    "schedule_tick",
    "take_alerts",
]

NextAfter = Callable[[str, datetime.datetime], datetime.datetime]


@dataclasses.dataclass(frozen=True)
class AlertResult:
    result: str
    message: str


@dataclasses.dataclass(frozen=True)
class Change:
    """A new status and what to do once it is written."""

    status: dict[str, Any]
    events: tuple[EmitEvent, ...] = ()
    wake: bool = False
    outcome: str = ""
    message: str = ""
    results: tuple[AlertResult, ...] = ()


class _Writer:
    """Edits a copy of one status; nothing else."""

    def __init__(self, body: Mapping[str, Any], now: datetime.datetime) -> None:
        self.body = body
        self.now = now
        self.ts = cond.rfc3339(now)
        old = body.get("status")
        self.status: dict[str, Any] = copy.deepcopy(dict(old)) if isinstance(old, Mapping) else {}
        self.events: list[EmitEvent] = []
        self.wake = False
        meta = body.get("metadata") or {}
        generation = meta.get("generation")
        self.generation = generation if isinstance(generation, int) and generation > 0 else 1

    @property
    def triggers(self) -> dict[str, Any]:
        current = self.status.get("triggers")
        if not isinstance(current, dict):
            current = {}
            self.status["triggers"] = current
        return current

    def peek_triggers(self) -> Mapping[str, Any]:
        current = self.status.get("triggers")
        return current if isinstance(current, Mapping) else {}

    def change(
        self, outcome: str = "", message: str = "", results: Sequence[AlertResult] = ()
    ) -> Change:
        return Change(
            status=self.status,
            events=tuple(self.events),
            wake=self.wake,
            outcome=outcome,
            message=message,
            results=tuple(results),
        )

    def skip(self, type_: str, reason: str, message: str, key: str) -> None:
        last = self.peek_triggers().get("lastSkipped")
        if isinstance(last, Mapping) and (
            last.get("type"),
            last.get("reason"),
            last.get("key"),
        ) == (type_, reason, key):
            return  # the same skip again: nothing new to say
        self.triggers["lastSkipped"] = {
            "type": type_,
            "reason": reason,
            "message": message[: trig.MAX_REASON],
            "time": self.ts,
            "key": key[: trig.MAX_KEY],
        }
        event = "AlertSkipped" if type_ == "Alert" else "RetrainSkipped"
        self.events.append(EmitEvent("Normal", event, message))

    def request(self, type_: str, reason: str, key: str) -> tuple[str, str]:
        """The last two gates (a cycle running, one already pending), then the request."""
        if trig.cycle_in_progress(self.status):
            message = (
                f"{reason}: cycle {self.status.get('cycle')} is in progress "
                f"({self.status.get('step')}); it already retrains"
            )
            self.skip(type_, "CycleInProgress", message, key)
            return "CycleInProgress", message
        pending = trig.pending_of(self.peek_triggers())
        if pending is not None:
            message = f"{reason}: joins the {pending.type} trigger already pending"
            return "Pending", message
        self.triggers["pending"] = trig.Pending(
            type=type_, reason=reason[: trig.MAX_REASON], time=self.ts, key=key[: trig.MAX_KEY]
        ).to_dict()
        self.wake = True
        message = f"{reason}: a new cycle starts"
        self.events.append(EmitEvent("Normal", "RetrainRequested", f"{type_} trigger: {message}"))
        return "Retrain", message


def _parse(body: Mapping[str, Any]) -> ModelCycle | str:
    try:
        return ModelCycle.from_body(body)
    except SpecError as exc:
        return f"the ModelCycle's spec is invalid: {exc}"


def _alert_reason(alert: Alert) -> str:
    label = alert.name or alert.fingerprint
    text = f"alert {label} firing since {alert.starts_at}"
    summary = alert.annotations.get("summary") or alert.annotations.get("description") or ""
    if summary:
        text += f": {summary}"
    return text[: trig.MAX_REASON]


def take_alerts(body: Mapping[str, Any], alerts: Sequence[Alert], now: datetime.datetime) -> Change:
    """Record alerts routed to this ModelCycle; request a cycle for the first that may."""
    w = _Writer(body, now)
    mc = _parse(body)
    if isinstance(mc, str):
        return w.change("InvalidSpec", mc, [AlertResult("InvalidSpec", mc)] * len(alerts))
    monitoring = mc.spec.monitoring
    original_keys = list(w.peek_triggers().get("alertKeys") or [])
    handled = list(original_keys)
    results: list[AlertResult] = []
    for alert in alerts:
        verdict = alert_verdict(
            alert,
            handled_keys=handled,
            last_cycle_start=trig.last_cycle_start(w.status),
            cooldown_seconds=monitoring.cooldown_seconds,
            alerts_enabled=monitoring.alerts_enabled,
            match_labels=monitoring.match_labels,
            suspended=mc.spec.suspend,
            now=now,
        )
        if verdict.retrain:
            outcome, message = w.request("Alert", _alert_reason(alert), alert.key)
            if outcome in ("Retrain", "Pending"):
                handled = trig.remember_key(handled, alert.key)
        elif verdict.reason in ("Duplicate", "Resolved"):
            outcome, message = verdict.reason, verdict.message
        else:
            outcome, message = verdict.reason, verdict.message
            w.skip("Alert", verdict.reason, message, alert.key)
        results.append(AlertResult(outcome, message))
        if outcome != "Duplicate":
            _record_alert(w, alert, outcome, message)
    if handled != original_keys:
        w.triggers["alertKeys"] = handled
    return w.change(results=results)


def _record_alert(w: _Writer, alert: Alert, outcome: str, message: str) -> None:
    last = w.peek_triggers().get("lastAlert")
    same = isinstance(last, Mapping) and (
        last.get("key"),
        last.get("status"),
        last.get("result"),
    ) == (alert.key, alert.status, outcome)
    if same:
        return
    w.triggers["lastAlert"] = {
        "key": alert.key[: trig.MAX_KEY],
        "name": alert.name[:256],
        "status": alert.status,
        "result": outcome,
        "time": w.ts,
    }
    if outcome == "Resolved":
        w.events.append(EmitEvent("Normal", "AlertResolved", message[: trig.MAX_REASON]))


def _offer(w: _Writer, mc: ModelCycle, type_: str, reason: str, key: str) -> tuple[str, str]:
    if mc.spec.suspend:
        message = f"{reason}: the ModelCycle is suspended"
        w.skip(type_, "Suspended", message, key)
        return "Suspended", message
    cooldown = mc.spec.monitoring.cooldown_seconds
    left = trig.cooldown_left(w.status, cooldown, w.now)
    if left > 0:
        start = trig.last_cycle_start(w.status)
        until = cond.rfc3339(start + datetime.timedelta(seconds=cooldown)) if start else "?"
        message = (
            f"{reason}: inside the cooldown of {cooldown} s after cycle "
            f"{w.status.get('cycle')} started (until {until})"
        )
        w.skip(type_, "Cooldown", message, key)
        return "Cooldown", message
    return w.request(type_, reason, key)


def offer(
    body: Mapping[str, Any], type_: str, reason: str, key: str, now: datetime.datetime
) -> Change:
    """Request a cycle of ``type_`` (Monitor or Schedule) if the gates let it through."""
    w = _Writer(body, now)
    mc = _parse(body)
    if isinstance(mc, str):
        return w.change("InvalidSpec", mc)
    outcome, message = _offer(w, mc, type_, reason, key)
    return w.change(outcome, message)


def monitor_observed(
    body: Mapping[str, Any], assessment: Assessment, now: datetime.datetime
) -> Change:
    """Set ``Degraded`` from the monitor's verdict; request a cycle when it is bad."""
    w = _Writer(body, now)
    mc = _parse(body)
    if isinstance(mc, str):
        return w.change("InvalidSpec", mc)
    champion = w.status.get("champion")
    version = str(champion.get("version") or "") if isinstance(champion, Mapping) else ""
    if assessment.version != version:
        return w.change("Stale", f"the champion is now model version {version or 'none'}")
    before = cond.get_condition(w.status.get("conditions"), cond.DEGRADED) or {}
    w.status["conditions"] = cond.set_condition(
        w.status.get("conditions"),
        cond.DEGRADED,
        assessment.status,
        assessment.reason,
        assessment.message,
        w.generation,
        now,
    )
    was = before.get("status")
    if assessment.status == cond.TRUE and was != cond.TRUE:
        w.events.append(EmitEvent("Warning", "Degraded", assessment.message))
    elif assessment.status == cond.FALSE and was == cond.TRUE:
        w.events.append(EmitEvent("Normal", "Recovered", assessment.message))
    if not (assessment.degraded and mc.spec.monitoring.builtin.retrain):
        return w.change(assessment.reason, assessment.message)
    reason = f"Degraded ({assessment.reason}): {assessment.message}"
    outcome, message = _offer(w, mc, "Monitor", reason, f"{version}:{assessment.reason}")
    return w.change(outcome, message)


def schedule_tick(body: Mapping[str, Any], now: datetime.datetime, next_after: NextAfter) -> Change:
    """Keep ``triggers.nextScheduled`` for ``spec.monitoring.schedule``; fire when due.

    ``next_after(expression, t)`` is the first fire time after ``t`` (ValueError when the
    expression is not valid cron). A fire time missed while the operator was down fires
    once on its next tick; the one after is computed from ``now``.
    """
    w = _Writer(body, now)
    mc = _parse(body)
    if isinstance(mc, str):
        return w.change("InvalidSpec", mc)
    expression = mc.spec.monitoring.schedule
    seen = w.peek_triggers()
    if not expression:
        if "schedule" in seen or "nextScheduled" in seen:
            w.triggers.pop("schedule", None)
            w.triggers.pop("nextScheduled", None)
        return w.change("NoSchedule", "spec.monitoring.schedule is empty")
    due = cond.parse_time(seen.get("nextScheduled"))
    if seen.get("schedule") != expression or due is None:
        if seen.get("schedule") == expression and "nextScheduled" not in seen:
            return w.change("InvalidSchedule", f"schedule {expression!r} is not valid cron")
        w.triggers["schedule"] = expression
        try:
            upcoming = next_after(expression, now)
        except ValueError as exc:
            w.triggers.pop("nextScheduled", None)
            message = f"spec.monitoring.schedule {expression!r} is not valid cron: {exc}"
            w.events.append(EmitEvent("Warning", "InvalidSchedule", message))
            return w.change("InvalidSchedule", message)
        w.triggers["nextScheduled"] = cond.rfc3339(upcoming)
        return w.change("Scheduled", f"next cycle by schedule at {cond.rfc3339(upcoming)}")
    if now < due:
        return w.change("Waiting", f"next cycle by schedule at {cond.rfc3339(due)}")
    fired = cond.rfc3339(due)
    w.triggers["lastScheduled"] = fired
    try:
        w.triggers["nextScheduled"] = cond.rfc3339(next_after(expression, now))
    except ValueError:  # valid a moment ago; keep the bookkeeping consistent anyway
        w.triggers.pop("nextScheduled", None)
    reason = f"schedule {expression!r} due at {fired}"
    outcome, message = _offer(w, mc, "Schedule", reason, f"schedule@{fired}")
    return w.change(outcome, message)
