"""The built-in monitor against a real HTTP server, and the schedule's cron arithmetic."""

from __future__ import annotations

import asyncio
import copy
import datetime
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from modelcycle_fakes import World, make_body, make_spec

from modelcycle_operator import api, monitor, reconcile, schedule
from modelcycle_operator.pure.patch import apply_merge_patch

LOG = logging.getLogger("test")


class Cluster:
    """The ModelCycle and its serving pods, as the API would answer."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.body["metadata"]["resourceVersion"] = "1"
        self.pods: list[dict[str, Any]] = []
        self.events: list[str] = []
        self.reconciled = 0
        self.selectors: list[str] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(api, "get_modelcycle", self.get)
        monkeypatch.setattr(api, "patch_modelcycle_status", self.patch)
        monkeypatch.setattr(api, "list_pods", self.list_pods)
        monkeypatch.setattr(api, "post_event", self.post_event)
        monkeypatch.setattr(reconcile, "reconcile", self.reconcile)

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.body)

    def patch(self, namespace: str, name: str, p: Mapping[str, Any], rv: str | None) -> Any:
        assert rv == self.body["metadata"]["resourceVersion"]
        self.body["status"] = apply_merge_patch(self.body.get("status"), p)
        self.body["metadata"]["resourceVersion"] = str(int(rv) + 1)
        return self.body

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.selectors.append(selector)
        return copy.deepcopy(self.pods)

    def post_event(self, involved: Any, type_: str, reason: str, message: str) -> Any:
        self.events.append(reason)
        return {}

    def reconcile(self, namespace: str, name: str, logger: Any = None) -> None:
        self.reconciled += 1

    def condition(self, type_: str) -> dict[str, Any]:
        return next(c for c in self.body["status"]["conditions"] if c["type"] == type_)


def served(port: int, **builtin: Any) -> tuple[World, str]:
    world = World(
        make_body(
            spec=make_spec(
                serving={"port": port},
                monitoring={"cooldownSeconds": 0, "builtin": {"enabled": True, **builtin}},
            )
        )
    )
    world.reconcile()
    world.run_cycle()
    return world, world.status["champion"]["version"]


def pod(name: str, ip: str, version: str, ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "annotations": {"modelcycle.dev/model-version": version}},
        "status": {
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def run_check(
    monkeypatch: pytest.MonkeyPatch,
    answer: Any,
    *,
    status: int = 200,
    delay: float = 0.0,
    **builtin: Any,
) -> tuple[Cluster, int, list[str]]:
    """One check_once against a server answering ``answer`` (a callable gets the version)."""
    paths: list[str] = []

    async def main() -> tuple[Cluster, int]:
        async def handler(request: web.Request) -> web.StreamResponse:
            paths.append(request.path)
            if delay:
                await asyncio.sleep(delay)
            body = answer(version) if callable(answer) else answer
            return web.json_response(body, status=status)

        app = web.Application()
        app.router.add_get("/v2/models/{model}/monitoring", handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        nonlocal version
        world, version = served(int(server.port or 0), **builtin)
        cluster = Cluster(world.body)
        cluster.pods = [
            pod("iris-serving-a", "127.0.0.1", version),
            pod("iris-serving-old", "127.0.0.1", "0-old"),
            pod("iris-serving-b", "127.0.0.1", version, ready=False),
        ]
        cluster.install(monkeypatch)
        timeout = aiohttp.ClientTimeout(total=0.5)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                interval = await monitor.check_once("ml", "iris", session, LOG)
        finally:
            await server.close()
        return cluster, interval

    version = ""
    cluster, interval = asyncio.run(main())
    return cluster, interval, paths


def summary(samples: int, correct: int, **drift: Any) -> Any:
    def make(version: str) -> dict[str, Any]:
        return {
            "model": "iris",
            "version": version,
            "task": "classification",
            "feedback": {"samples": samples, "correct": correct, "accuracy": None},
            "drift": {"rows": drift.get("rows", 0), "drifted": drift.get("drifted")},
        }

    return make


class TestCheckOnce:
    def test_accuracy_drop_sets_degraded_and_requests_a_cycle(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        cluster, interval, paths = run_check(
            monkeypatch, summary(30, 3), intervalSeconds=7, minAccuracy=0.8
        )
        assert interval == 7
        assert paths == ["/v2/models/iris/monitoring"]  # only the Ready pod of the champion
        assert cluster.selectors == ["modelcycle.dev/name=iris,modelcycle.dev/step=serving"]
        degraded = cluster.condition("Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "AccuracyDropped")
        assert cluster.body["status"]["triggers"]["pending"]["type"] == "Monitor"
        assert cluster.events == ["Degraded", "RetrainRequested"]
        assert cluster.reconciled == 1

    def test_healthy(self, monkeypatch: pytest.MonkeyPatch) -> None:
        cluster, _, _ = run_check(monkeypatch, summary(30, 30))
        degraded = cluster.condition("Degraded")
        assert (degraded["status"], degraded["reason"]) == ("False", "Healthy")
        assert cluster.reconciled == 0

    def test_insufficient_feedback(self, monkeypatch: pytest.MonkeyPatch) -> None:
        cluster, _, _ = run_check(monkeypatch, summary(3, 0))
        assert cluster.condition("Degraded")["reason"] == "InsufficientFeedback"

    def test_drift_without_retrain(self, monkeypatch: pytest.MonkeyPatch) -> None:
        cluster, _, _ = run_check(monkeypatch, summary(0, 0, rows=50, drifted=True), retrain=False)
        assert cluster.condition("Degraded")["reason"] == "DriftDetected"
        assert "pending" not in cluster.body["status"]["triggers"]
        assert cluster.reconciled == 0

    @pytest.mark.parametrize(
        ("answer", "status", "delay"),
        [
            ({"error": "boom"}, 500, 0.0),
            ([1, 2], 200, 0.0),
            (summary(30, 0), 200, 2.0),  # slower than the client's timeout
        ],
    )
    def test_no_answer_is_unknown(
        self, monkeypatch: pytest.MonkeyPatch, answer: Any, status: int, delay: float
    ) -> None:
        cluster, _, _ = run_check(monkeypatch, answer, status=status, delay=delay)
        degraded = cluster.condition("Degraded")
        assert (degraded["status"], degraded["reason"]) == ("Unknown", "MonitorUnavailable")

    def test_nothing_to_do_without_a_champion_or_during_a_cycle(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for status in ({"cycle": 1, "step": "Training"}, {"cycle": 0}):
            body = make_body(spec=make_spec(monitoring={"builtin": {"enabled": True}}))
            body["status"] = status
            cluster = Cluster(body)
            cluster.install(monkeypatch)

            async def main() -> int:
                async with aiohttp.ClientSession() as session:
                    return await monitor.check_once("ml", "iris", session, LOG)

            assert asyncio.run(main()) == 30
            assert cluster.selectors == []
            assert cluster.body["status"] == status

    def test_run_stops_when_told(self, monkeypatch: pytest.MonkeyPatch) -> None:
        checks: list[float] = []

        async def fake_check(*args: Any) -> int:
            checks.append(1)
            if len(checks) == 2:
                raise api.ApiError(0, "Timeout", "slow")
            if len(checks) == 3:
                raise RuntimeError("a bug")
            return 5

        pauses: list[float] = []

        async def pause(seconds: float) -> bool:
            pauses.append(seconds)
            return len(pauses) == 4

        monkeypatch.setattr(monitor, "check_once", fake_check)
        asyncio.run(monitor.run("ml", "iris", LOG, pause))
        assert len(checks) == 4
        assert pauses == [5, 30, 30, 5]


# --- the schedule -------------------------------------------------------------------------

UTC = datetime.UTC


class TestNextFire:
    @pytest.mark.parametrize(
        ("expression", "after", "expected"),
        [
            ("*/1 * * * *", "2026-12-01T12:00:30", "2026-12-01T12:01:00"),
            ("*/1 * * * *", "2026-12-01T12:01:00", "2026-12-01T12:02:00"),  # strictly after
            ("0 3 * * 1", "2026-12-01T12:00:00", "2026-12-07T03:00:00"),  # Monday 03:00
            ("30 2 1 * *", "2026-12-01T12:00:00", "2027-01-01T02:30:00"),
            ("0 0 * * *", "2026-12-31T23:59:59", "2027-01-01T00:00:00"),
        ],
    )
    def test_times(self, expression: str, after: str, expected: str) -> None:
        start = datetime.datetime.fromisoformat(after).replace(tzinfo=UTC)
        got = schedule.next_fire(expression, start)
        assert got == datetime.datetime.fromisoformat(expected).replace(tzinfo=UTC)
        assert got.tzinfo is not None

    def test_other_zones_are_converted(self) -> None:
        after = datetime.datetime(
            2026, 12, 1, 14, 0, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
        )
        assert schedule.next_fire("*/1 * * * *", after) == datetime.datetime(
            2026, 12, 1, 12, 1, tzinfo=UTC
        )

    @pytest.mark.parametrize(
        "expression",
        ["", "* * * *", "* * * * * *", "61 * * * *", "a b c d e", "*/0 * * * *", "* 25 * * *"],
    )
    def test_invalid(self, expression: str) -> None:
        with pytest.raises(ValueError, match=r"."):
            schedule.next_fire(expression, datetime.datetime(2026, 1, 1, tzinfo=UTC))


class TestTick:
    def test_writes_next_then_fires_and_wakes(self, monkeypatch: pytest.MonkeyPatch) -> None:
        world = World(
            make_body(spec=make_spec(monitoring={"cooldownSeconds": 0, "schedule": "*/1 * * * *"}))
        )
        world.reconcile()
        world.run_cycle()
        cluster = Cluster(world.body)
        cluster.install(monkeypatch)
        schedule.tick("ml", "iris", LOG)
        triggers = cluster.body["status"]["triggers"]
        assert triggers["schedule"] == "*/1 * * * *"
        assert cluster.reconciled == 0
        triggers["nextScheduled"] = "2020-01-01T00:00:00Z"  # long due
        schedule.tick("ml", "iris", LOG)
        triggers = cluster.body["status"]["triggers"]
        assert triggers["lastScheduled"] == "2020-01-01T00:00:00Z"
        assert triggers["pending"]["type"] == "Schedule"
        assert cluster.reconciled == 1

    def test_api_failure_is_logged(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        def broken(namespace: str, name: str) -> Any:
            raise api.ApiError(503, "ServiceUnavailable", "down")

        monkeypatch.setattr(api, "get_modelcycle", broken)
        schedule.tick("ml", "iris", LOG)
        assert "not checked" in caplog.text
