"""``spec.monitoring.schedule``: cron fire times (croniter) and the tick that fires them.

:func:`tick` runs from a kopf timer for every ModelCycle with a schedule. The pure part,
:func:`modelcycle_operator.pure.intake.schedule_tick`, keeps ``status.triggers.schedule``
(the expression) and ``status.triggers.nextScheduled``, and when that time has come
records ``status.triggers.lastScheduled`` and requests a ``Schedule`` cycle (cooldown and
the other gates apply); this module adds the cron arithmetic and the status write.

Limits: cron is evaluated in UTC with standard 5-field syntax; a fire time is seen within
one timer interval (``MODELCYCLE_TIMER_SECONDS``) after it passes.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from typing import Any

from croniter import croniter

from modelcycle_operator import api, reconcile
from modelcycle_operator.pure import intake

__all__ = ["next_fire", "tick"]

Logger = logging.Logger | logging.LoggerAdapter[Any]


def next_fire(expression: str, after: datetime.datetime) -> datetime.datetime:
    """The first fire time strictly after ``after`` (UTC); ValueError for bad cron."""
    if len(expression.split()) != 5:
        raise ValueError("expected 5 fields: minute hour day-of-month month day-of-week")
    try:
        cron = croniter(expression, after.astimezone(datetime.UTC))
        nxt = cron.get_next(datetime.datetime)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(str(exc) or type(exc).__name__) from None
    if not isinstance(nxt, datetime.datetime):
        raise ValueError("croniter returned no time")
    return nxt if nxt.tzinfo else nxt.replace(tzinfo=datetime.UTC)


def tick(namespace: str, name: str, logger: Logger) -> None:
    """One look at the schedule of one ModelCycle (sync: kopf's thread pool runs it)."""

    def compute(body: Mapping[str, Any], now: datetime.datetime) -> intake.Change:
        return intake.schedule_tick(body, now, next_fire)

    try:
        change = reconcile.change_status(namespace, name, compute, logger)
    except (api.ApiError, reconcile.StatusChanging) as exc:
        logger.warning(f"Schedule of {namespace}/{name} not checked, trying again: {exc}")
        return
    if change is not None and change.wake:
        logger.info(f"Schedule: {change.message}")
        reconcile.reconcile(namespace, name, logger)
