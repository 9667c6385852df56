"""One periodic task for every ModelCycle, instead of a kopf timer on each object.

A kopf timer is per object: an asyncio task each, and kopf puts its finalizer on every
object a timer matches. That finalizer costs two PATCHes per object (add, remove), moves
the resourceVersion under the operator's own guarded status write (409s), delays the
first reconcile of a new object by a round trip, and makes every deletion wait for the
operator (bench/RESULTS-operator.md, finding 2). This loop runs in kopf's event loop
(started on startup, stopped on cleanup). Every ``tick`` seconds it looks at every
ModelCycle in the store (no request) and hands the due work to its own small thread
pool:

- a *busy* ModelCycle (a cycle moves, a change is not reconciled yet, a trigger is
  pending): a reconcile once none has run for ``busy_seconds``
  (``MODELCYCLE_TIMER_SECONDS``) — the clock-based rollout deadline, anything an event
  missed;
- an *idle* one: a reconcile once none has run for ``idle_seconds``
  (``MODELCYCLE_IDLE_RESYNC_SECONDS``), stretched by up to a quarter per object (a stable
  hash of its name), so a thousand objects listed together do not all come due in the
  same second;
- one with a schedule: :func:`schedule.tick` every ``busy_seconds``, the first at once.

"None has run" counts every reconcile the handlers start (:meth:`Resync.reconciled`),
so an object whose events keep it reconciled costs the loop nothing. A piece of work
already queued or running is not queued again, and at most ``max_inflight`` are queued at
once: the rest wait for a later tick instead of growing a queue. A tick that queued work
logs one line saying how much.

Limits: due times are this process's monotonic clock, so they start over when the
operator restarts (kopf's listing reconciles every object then anyway).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["RECONCILE", "SCHEDULE", "Resync"]

Key = tuple[str, str]
Work = tuple[str, Key]
RECONCILE = "reconcile"
SCHEDULE = "schedule"
_log = logging.getLogger(__name__)


class Resync:
    def __init__(
        self,
        *,
        busy_seconds: float,
        idle_seconds: float,
        is_busy: Callable[[Mapping[str, Any]], bool],
        is_scheduled: Callable[[Mapping[str, Any]], bool],
        clock: Callable[[], float] = time.monotonic,
        tick: float = 1.0,
        max_inflight: int = 16,
    ) -> None:
        self.busy_seconds = busy_seconds
        self.idle_seconds = idle_seconds
        self.tick = tick
        self.max_inflight = max_inflight
        self._is_busy = is_busy
        self._is_scheduled = is_scheduled
        self._clock = clock
        self._last_reconcile: dict[Key, float] = {}
        self._last_schedule: dict[Key, float] = {}
        self._inflight: set[Work] = set()

    def reconciled(self, key: Key) -> None:
        """A handler is about to reconcile ``key``: its resync clock starts over."""
        self._last_reconcile[key] = self._clock()

    def stretch(self, key: Key) -> float:
        """1.0 to 1.25, the same for an object every time (spreads the idle resyncs)."""
        h = zlib.crc32(f"{key[0]}/{key[1]}".encode())
        return 1.0 + (h % 1024) / 4096

    def due(self, objects: Iterable[tuple[Key, Mapping[str, Any]]]) -> list[Work]:
        """The work due now, oldest first, at most as much as may be queued; marks it queued.

        Objects no longer present are forgotten.
        """
        now = self._clock()
        seen: set[Key] = set()
        candidates: list[tuple[float, Work]] = []
        for key, body in objects:
            seen.add(key)
            last = self._last_reconcile.setdefault(key, now)
            busy = self._is_busy(body)
            wait = self.busy_seconds if busy else self.idle_seconds * self.stretch(key)
            if now - last >= wait and (RECONCILE, key) not in self._inflight:
                candidates.append((last, (RECONCILE, key)))
            if self._is_scheduled(body):
                last_tick = self._last_schedule.get(key)
                ticks = last_tick is None or now - last_tick >= self.busy_seconds
                if ticks and (SCHEDULE, key) not in self._inflight:
                    candidates.append((last_tick or 0.0, (SCHEDULE, key)))
            else:
                self._last_schedule.pop(key, None)
        for gone in [k for k in self._last_reconcile if k not in seen]:
            del self._last_reconcile[gone]
        for gone in [k for k in self._last_schedule if k not in seen]:
            del self._last_schedule[gone]
        candidates.sort(key=lambda c: c[0])
        room = max(0, self.max_inflight - len(self._inflight))
        work = [w for _, w in candidates[:room]]
        for kind, key in work:
            self._inflight.add((kind, key))
            (self._last_schedule if kind == SCHEDULE else self._last_reconcile)[key] = now
        return work

    def done(self, work: Work) -> None:
        self._inflight.discard(work)

    def _finished(self, work: Work, _future: object) -> None:
        self.done(work)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def run(
        self,
        snapshot: Callable[[], Iterable[tuple[Key, Mapping[str, Any]]]],
        call: Callable[[str, Key], None],
        executor: concurrent.futures.Executor,
    ) -> None:
        """Until cancelled: every tick, queue what is due. ``call`` never raises (if it
        does, the error is logged and the object is tried again at its next due time)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.tick)
            try:
                work = self.due(snapshot())
            except Exception:  # noqa: BLE001 - a bug here must not stop every resync for good
                _log.exception("Resync: cannot list the ModelCycles; trying again")
                continue
            for item in work:
                future = loop.run_in_executor(executor, _guarded, call, item)
                future.add_done_callback(functools.partial(self._finished, item))
            if work:
                ticks = sum(1 for kind, _ in work if kind == SCHEDULE)
                _log.info(
                    f"Resync: queued {len(work) - ticks} reconciles and {ticks} schedule ticks"
                )


def _guarded(call: Callable[[str, Key], None], item: Work) -> None:
    try:
        call(*item)
    except Exception:  # noqa: BLE001 - one object's failure must not stop the others
        _log.exception(f"Resync: {item[0]} of {item[1][0]}/{item[1][1]} failed")
