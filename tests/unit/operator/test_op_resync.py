"""The one resync task that replaced a kopf timer per ModelCycle (resync.Resync)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Mapping
from typing import Any

from modelcycle_operator import resync


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _body(busy: bool = False, scheduled: bool = False) -> dict[str, Any]:
    return {"busy": busy, "scheduled": scheduled}


def _make(clock: Clock, max_inflight: int = 16) -> resync.Resync:
    return resync.Resync(
        busy_seconds=10.0,
        idle_seconds=300.0,
        is_busy=lambda b: bool(b.get("busy")),
        is_scheduled=lambda b: bool(b.get("scheduled")),
        clock=clock,
        max_inflight=max_inflight,
    )


def test_busy_object_is_reconciled_when_no_reconcile_ran_for_the_interval() -> None:
    clock = Clock()
    r = _make(clock)
    objects = [(("ml", "iris"), _body(busy=True))]
    assert r.due(objects) == []  # first seen: its clock starts now
    clock.now += 9.9
    assert r.due(objects) == []
    clock.now += 0.1
    assert r.due(objects) == [(resync.RECONCILE, ("ml", "iris"))]
    # Queued or running: not queued again.
    clock.now += 20
    assert r.due(objects) == []
    r.done((resync.RECONCILE, ("ml", "iris")))
    r.reconciled(("ml", "iris"))
    assert r.due(objects) == []
    clock.now += 10
    assert r.due(objects) == [(resync.RECONCILE, ("ml", "iris"))]


def test_a_handler_reconcile_postpones_the_resync() -> None:
    clock = Clock()
    r = _make(clock)
    objects = [(("ml", "iris"), _body(busy=True))]
    r.due(objects)
    for _ in range(5):  # events keep it reconciled: the loop adds nothing
        clock.now += 6
        r.reconciled(("ml", "iris"))
        assert r.due(objects) == []


def test_idle_objects_wait_the_long_interval_spread_by_name() -> None:
    clock = Clock()
    r = _make(clock, max_inflight=10_000)
    keys = [("ns", f"mc-{i}") for i in range(1000)]
    objects = [(k, _body()) for k in keys]
    assert r.due(objects) == []
    clock.now += 299
    assert r.due(objects) == []
    stretches = [r.stretch(k) for k in keys]
    assert all(1.0 <= s < 1.25 for s in stretches)
    assert r.stretch(keys[0]) == r.stretch(keys[0])  # stable
    # Over the next 75 s they come due a few at a time, not all in one second.
    per_second = []
    for _ in range(80):
        clock.now += 1
        work = r.due(objects)
        per_second.append(len(work))
        for w in work:
            r.done(w)
            r.reconciled(w[1])
    assert sum(per_second) == 1000
    assert max(per_second) < 60


def test_schedule_ticks_at_once_then_every_interval_and_stops_when_removed() -> None:
    clock = Clock()
    r = _make(clock)
    scheduled = [(("ml", "iris"), _body(scheduled=True))]
    assert r.due(scheduled) == [(resync.SCHEDULE, ("ml", "iris"))]
    r.done((resync.SCHEDULE, ("ml", "iris")))
    clock.now += 5
    assert r.due(scheduled) == []
    clock.now += 5
    assert r.due(scheduled) == [(resync.SCHEDULE, ("ml", "iris"))]
    r.done((resync.SCHEDULE, ("ml", "iris")))
    clock.now += 10
    assert r.due([(("ml", "iris"), _body())]) == []


def test_at_most_max_inflight_queued_oldest_first() -> None:
    clock = Clock()
    r = _make(clock, max_inflight=3)
    objects = [(("ns", f"mc-{i}"), _body(busy=True)) for i in range(10)]
    r.due(objects)
    for i in range(10):  # mc-9 reconciled longest ago
        r.reconciled(("ns", f"mc-{9 - i}"))
        clock.now += 0.01
    clock.now += 10
    first = r.due(objects)
    assert [k for _, k in first] == [("ns", "mc-9"), ("ns", "mc-8"), ("ns", "mc-7")]
    assert r.due(objects) == []  # full
    r.done(first[0])
    assert [k for _, k in r.due(objects)] == [("ns", "mc-6")]


def test_gone_objects_are_forgotten() -> None:
    clock = Clock()
    r = _make(clock)
    r.due([(("ml", "a"), _body(busy=True)), (("ml", "b"), _body(scheduled=True))])
    r.due([])
    assert r._last_reconcile == {}
    assert r._last_schedule == {}


def test_run_queues_due_work_in_the_executor_and_survives_failures() -> None:
    clock = Clock()
    r = resync.Resync(
        busy_seconds=0.0,
        idle_seconds=300.0,
        is_busy=lambda b: True,
        is_scheduled=lambda b: False,
        clock=clock,
        tick=0.01,
    )
    calls: list[tuple[str, tuple[str, str]]] = []
    done = threading.Event()
    listed = {"n": 0}

    def snapshot() -> list[tuple[tuple[str, str], Mapping[str, Any]]]:
        listed["n"] += 1
        if listed["n"] == 2:
            raise RuntimeError("index went away")  # logged; the loop goes on
        return [(("ml", "iris"), {})]

    def call(kind: str, key: tuple[str, str]) -> None:
        calls.append((kind, key))
        if len(calls) == 1:
            raise RuntimeError("reconcile bug")  # logged; the loop goes on
        done.set()

    async def main() -> None:
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            task = asyncio.create_task(r.run(snapshot, call, pool))
            for _ in range(500):
                if done.is_set():
                    break
                await asyncio.sleep(0.01)
            task.cancel()

    asyncio.run(main())
    assert done.is_set()
    assert calls[:2] == [("reconcile", ("ml", "iris")), ("reconcile", ("ml", "iris"))]
    assert listed["n"] >= 3
