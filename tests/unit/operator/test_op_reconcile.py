"""The reconcile against a fake API (status first, 409 handling, never raising) and the wiring."""

from __future__ import annotations

import asyncio
import copy
import datetime
import logging
import threading
from collections.abc import Mapping
from typing import Any

import kopf
import pytest
from modelcycle_fakes import COLLECT_OK, T0, make_body, make_pod, terminated, train_ok

from modelcycle_operator import api, handlers, reconcile
from modelcycle_operator.pure import intake, naming
from modelcycle_operator.pure.decide import EmitEvent
from modelcycle_operator.pure.patch import apply_merge_patch
from modelcycle_operator.settings import Settings

LOG = logging.getLogger("test")


class FakeApi:
    """Just enough of the API server: objects by (kind, name), resourceVersion, 404/409."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.mc = body
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[str, list[dict[str, Any]]] = {}
        self.calls: list[str] = []
        self.events: list[tuple[str, str]] = []
        self.conflicts = 0
        self.fail_get: Exception | None = None
        self.on_get: Any = None

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in (
            "get_modelcycle",
            "patch_modelcycle_status",
            "get_pvc",
            "create_pvc",
            "get_job",
            "create_job",
            "list_pods",
            "list_job_pods",
            "get_deployment",
            "apply_deployment",
            "get_service",
            "apply_service",
            "post_event",
        ):
            monkeypatch.setattr(api, name, getattr(self, name))

    def get_modelcycle(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append("get_modelcycle")
        if self.fail_get is not None:
            raise self.fail_get
        if self.on_get is not None:
            self.on_get()
        return copy.deepcopy(self.mc) if self.mc is not None else None

    def patch_modelcycle_status(
        self, namespace: str, name: str, patch: Mapping[str, Any], resource_version: str | None
    ) -> dict[str, Any] | None:
        self.calls.append("patch_status")
        if self.conflicts:
            self.conflicts -= 1
            self.mc["metadata"]["resourceVersion"] = str(
                int(self.mc["metadata"]["resourceVersion"]) + 1
            )
            raise api.ApiError(409, "Conflict", "the object has been modified")
        if resource_version and resource_version != self.mc["metadata"]["resourceVersion"]:
            raise api.ApiError(409, "Conflict", "the object has been modified")
        self.mc["status"] = apply_merge_patch(self.mc.get("status") or {}, patch)
        self.mc["metadata"]["resourceVersion"] = str(
            int(self.mc["metadata"]["resourceVersion"]) + 1
        )
        return copy.deepcopy(self.mc)

    def _get(self, kind: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((kind, name))
        return copy.deepcopy(obj) if obj is not None else None

    def _create(self, kind: str, manifest: Mapping[str, Any]) -> bool:
        key = (kind, str(manifest["metadata"]["name"]))
        self.calls.append(f"create {kind}/{key[1]}")
        if key in self.objects:
            return False
        self.objects[key] = copy.deepcopy(dict(manifest))
        return True

    def get_pvc(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get("PersistentVolumeClaim", name)

    def create_pvc(self, manifest: Mapping[str, Any]) -> bool:
        return self._create("PersistentVolumeClaim", manifest)

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get("Job", name)

    def create_job(self, manifest: Mapping[str, Any]) -> bool:
        return self._create("Job", manifest)

    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        return []

    def list_job_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        return copy.deepcopy(self.pods.get(job_name, []))

    def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get("Deployment", name)

    def apply_deployment(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        self.calls.append("apply Deployment")
        self.objects[("Deployment", manifest["metadata"]["name"])] = copy.deepcopy(dict(manifest))
        return dict(manifest)

    def get_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get("Service", name)

    def apply_service(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        self.calls.append("apply Service")
        self.objects[("Service", manifest["metadata"]["name"])] = copy.deepcopy(dict(manifest))
        return dict(manifest)

    def post_event(
        self, involved: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> dict[str, Any]:
        self.events.append((type_, reason))
        return {}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    fake_api = FakeApi(make_body())
    fake_api.install(monkeypatch)
    return fake_api


def run(fake: FakeApi, at: datetime.datetime = T0) -> None:
    reconcile.reconcile("ml", "iris", LOG, Settings(), now=lambda: at)


class TestReconcile:
    def test_first_reconcile_writes_status_then_creates(self, fake: FakeApi) -> None:
        run(fake)
        assert fake.calls.index("patch_status") < fake.calls.index("create Job/iris-train-1")
        assert ("Job", "iris-train-1") in fake.objects
        assert ("PersistentVolumeClaim", "iris-artifacts") in fake.objects
        assert fake.mc["status"]["cycle"] == 1
        assert ("Normal", "CycleStarted") in fake.events
        assert ("Normal", "Created") in fake.events

    def test_unchanged_world_writes_nothing(self, fake: FakeApi) -> None:
        run(fake)
        run(fake)  # now sees the Job it created: "waiting for the pod" is news
        fake.calls.clear()
        run(fake)
        assert "patch_status" not in fake.calls
        assert not [c for c in fake.calls if c.startswith("create")]

    def test_conflict_rereads_and_retries(self, fake: FakeApi) -> None:
        fake.conflicts = 1
        run(fake)
        assert fake.calls.count("get_modelcycle") == 2
        assert fake.calls.count("patch_status") == 2
        assert fake.calls.count("create Job/iris-train-1") == 1
        assert fake.mc["status"]["cycle"] == 1

    def test_api_failure_does_not_raise(self, fake: FakeApi) -> None:
        fake.fail_get = api.ApiError(0, "ConnectionError", "refused")
        run(fake)

    def test_unexpected_error_sets_stalled(
        self, fake: FakeApi, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a bug")

        monkeypatch.setattr(reconcile, "decide", broken)
        run(fake)
        stalled = [c for c in fake.mc["status"]["conditions"] if c["type"] == "Stalled"]
        assert stalled[0]["status"] == "True"
        assert stalled[0]["reason"] == "ReconcileError"
        assert "a bug" in stalled[0]["message"]

    def test_deleted_object_is_ignored(self, fake: FakeApi) -> None:
        fake.mc = None  # type: ignore[assignment]
        run(fake)
        assert fake.calls == ["get_modelcycle"]

    def test_walks_to_evaluation(self, fake: FakeApi) -> None:
        run(fake)
        fake.objects[("Job", "iris-train-1")]["status"] = {
            "succeeded": 1,
            "conditions": [{"type": "Complete", "status": "True"}],
        }
        fake.pods["iris-train-1"] = [
            make_pod(
                "p",
                phase="Succeeded",
                init=[terminated("collect", 0, COLLECT_OK)],
                containers=[terminated("train", 0, train_ok(1))],
            )
        ]
        run(fake, T0 + datetime.timedelta(seconds=5))
        assert fake.mc["status"]["step"] == "Evaluating"
        assert ("Job", "iris-eval-1") in fake.objects


def set_pending(body: Mapping[str, Any], now: datetime.datetime) -> intake.Change:
    status = copy.deepcopy(dict(body.get("status") or {}))
    status.setdefault("triggers", {})["pending"] = {"type": "Monitor", "reason": "r", "key": "k"}
    return intake.Change(
        status=status, events=(EmitEvent("Normal", "RetrainRequested", "r"),), wake=True
    )


class TestChangeStatus:
    def test_writes_with_the_resource_version_and_posts_events(self, fake: FakeApi) -> None:
        change = reconcile.change_status("ml", "iris", set_pending, LOG, now=lambda: T0)
        assert change is not None
        assert change.wake
        assert fake.mc["status"]["triggers"]["pending"]["type"] == "Monitor"
        assert fake.events == [("Normal", "RetrainRequested")]

    def test_conflict_recomputes_on_a_fresh_read(self, fake: FakeApi) -> None:
        fake.conflicts = 2
        assert reconcile.change_status("ml", "iris", set_pending, LOG) is not None
        assert fake.calls.count("get_modelcycle") == 3
        assert fake.events == [("Normal", "RetrainRequested")]  # posted once, after the write

    def test_gives_up_when_it_keeps_changing(self, fake: FakeApi) -> None:
        fake.conflicts = 100
        with pytest.raises(reconcile.StatusChanging):
            reconcile.change_status("ml", "iris", set_pending, LOG)
        assert fake.events == []

    def test_nothing_to_write_writes_nothing(self, fake: FakeApi) -> None:
        def same(body: Mapping[str, Any], now: datetime.datetime) -> intake.Change:
            return intake.Change(status=copy.deepcopy(dict(body.get("status") or {})))

        assert reconcile.change_status("ml", "iris", same, LOG) is not None
        assert "patch_status" not in fake.calls

    def test_absent_object_is_none(self, fake: FakeApi) -> None:
        fake.mc = None  # type: ignore[assignment]
        assert reconcile.change_status("ml", "iris", set_pending, LOG) is None

    def test_deleting_object_is_none(self, fake: FakeApi) -> None:
        fake.mc["metadata"]["deletionTimestamp"] = "2026-12-01T12:00:00Z"
        assert reconcile.change_status("ml", "iris", set_pending, LOG) is None
        assert "patch_status" not in fake.calls

    def test_api_errors_propagate(self, fake: FakeApi) -> None:
        fake.fail_get = api.ApiError(503, "ServiceUnavailable", "down")
        with pytest.raises(api.ApiError):
            reconcile.change_status("ml", "iris", set_pending, LOG)

    def test_pending_trigger_then_reconcile_starts_the_cycle(self, fake: FakeApi) -> None:
        run(fake)
        fake.mc["status"]["step"] = "Serving"  # pretend cycle 1 finished
        fake.mc["status"]["lastTrigger"]["time"] = "2026-12-01T11:00:00Z"
        reconcile.change_status("ml", "iris", set_pending, LOG)
        run(fake, T0 + datetime.timedelta(seconds=10))
        assert fake.mc["status"]["cycle"] == 2
        assert fake.mc["status"]["lastTrigger"]["type"] == "Monitor"
        assert ("Job", "iris-train-2") in fake.objects


class TestSerialisation:
    def test_concurrent_callers_coalesce(self, fake: FakeApi) -> None:
        gate = threading.Event()
        release = threading.Event()
        entered = {"n": 0}

        def slow_get() -> None:
            entered["n"] += 1
            if entered["n"] == 1:
                gate.set()
                release.wait(5)

        fake.on_get = slow_get
        first = threading.Thread(target=run, args=(fake,))
        first.start()
        gate.wait(5)
        waiters = [threading.Thread(target=run, args=(fake,)) for _ in range(4)]
        for w in waiters:
            w.start()
        release.set()
        first.join(5)
        for w in waiters:
            w.join(5)
        # The first run, plus one queued behind it that covers the other three.
        assert entered["n"] == 2
        assert reconcile._slots == {}


class TestHandlers:
    def test_startup_configures_kopf(self) -> None:
        settings = kopf.OperatorSettings()
        handlers.configure(settings=settings, logger=LOG)
        assert settings.persistence.finalizer == "modelcycle.dev/finalizer"
        progress = settings.persistence.progress_storage
        assert isinstance(progress, kopf.AnnotationsProgressStorage)
        assert progress.prefix == "modelcycle.dev"
        diffbase = settings.persistence.diffbase_storage
        assert isinstance(diffbase, kopf.AnnotationsDiffBaseStorage)
        assert diffbase.prefix == "modelcycle.dev"
        assert settings.watching.server_timeout == 60
        assert settings.posting.level == logging.WARNING
        selectors = list(settings.watching.label_selectors.values())
        assert selectors == [handlers._MANAGED_SELECTOR] * 3

    def test_child_event_reconciles_parent(self, monkeypatch: pytest.MonkeyPatch) -> None:
        seen: list[tuple[str, str]] = []
        monkeypatch.setattr(
            handlers._reconcile, "reconcile", lambda ns, name, logger: seen.append((ns, name))
        )
        handlers.on_child_event(namespace="ml", labels={naming.LABEL_NAME: "iris"})
        handlers.on_child_event(namespace="ml", labels={})
        assert seen == [("ml", "iris")]

    @pytest.mark.parametrize(
        "handler", [handlers.on_modelcycle, handlers.on_timer, handlers.on_retrain_annotation]
    )
    def test_object_handlers_reconcile(self, monkeypatch: pytest.MonkeyPatch, handler: Any) -> None:
        seen: list[tuple[str, str]] = []
        monkeypatch.setattr(
            handlers._reconcile, "reconcile", lambda ns, name, logger: seen.append((ns, name))
        )
        assert handler(name="iris", namespace="ml", logger=LOG) is None
        assert seen == [("ml", "iris")]

    def test_namespace_filter(self) -> None:
        assert handlers._served(namespace="anything")

    @pytest.mark.parametrize(
        ("spec", "monitored"),
        [
            ({}, False),
            ({"monitoring": {}}, False),
            ({"monitoring": {"builtin": {"enabled": False}}}, False),
            ({"monitoring": {"builtin": {"enabled": True}}}, True),
            ({"monitoring": {"builtin": "yes"}}, False),
        ],
    )
    def test_monitor_filter(self, spec: dict[str, Any], monitored: bool) -> None:
        assert handlers._monitored(namespace="ml", spec=spec) is monitored

    @pytest.mark.parametrize(
        ("spec", "status", "scheduled"),
        [
            ({}, {}, False),
            ({"monitoring": {"schedule": ""}}, {}, False),
            ({"monitoring": {"schedule": "  "}}, {}, False),
            ({"monitoring": {"schedule": "0 3 * * *"}}, {}, True),
            ({}, {"triggers": {"nextScheduled": "2026-12-01T12:00:00Z"}}, True),  # to clear it
        ],
    )
    def test_schedule_filter(
        self, spec: dict[str, Any], status: dict[str, Any], scheduled: bool
    ) -> None:
        assert handlers._scheduled(namespace="ml", spec=spec, status=status) is scheduled

    def test_schedule_timer_ticks(self, monkeypatch: pytest.MonkeyPatch) -> None:
        seen: list[tuple[str, str]] = []
        monkeypatch.setattr(handlers._schedule, "tick", lambda ns, n, log: seen.append((ns, n)))
        handlers.on_schedule(name="iris", namespace="ml", logger=LOG)
        assert seen == [("ml", "iris")]

    def test_monitor_daemon_runs_until_stopped(self, monkeypatch: pytest.MonkeyPatch) -> None:
        calls: list[tuple[str, str, bool]] = []

        async def fake_run(ns: str, name: str, logger: Any, pause: Any) -> None:
            calls.append((ns, name, await pause(0.01)))

        class Stopped:
            def __init__(self) -> None:
                self.flag = False

            async def _wait(self) -> None:
                self.flag = True

            def wait(self, seconds: float) -> Any:
                return self._wait()

            def __bool__(self) -> bool:
                return self.flag

        monkeypatch.setattr(handlers._monitor, "run", fake_run)
        asyncio.run(
            handlers.builtin_monitor(name="iris", namespace="ml", logger=LOG, stopped=Stopped())
        )
        assert calls == [("ml", "iris", True)]

    def test_receiver_off_with_port_zero(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(handlers, "SETTINGS", Settings(receiver_port=0))
        asyncio.run(handlers.start_alert_receiver(logger=LOG))
        assert handlers._ReceiverSlot.current is None

    def test_receiver_starts_and_stops(self, monkeypatch: pytest.MonkeyPatch) -> None:
        events: list[str] = []

        class FakeReceiver:
            def __init__(self, settings: Settings) -> None:
                events.append("made")

            async def start(self) -> bool:
                events.append("start")
                return True

            async def stop(self) -> None:
                events.append("stop")

        monkeypatch.setattr(handlers._receiver, "AlertReceiver", FakeReceiver)

        async def main() -> None:
            await handlers.start_alert_receiver(logger=LOG)
            assert handlers._ReceiverSlot.current is not None
            await handlers.stop_alert_receiver()
            assert handlers._ReceiverSlot.current is None
            await handlers.stop_alert_receiver()

        asyncio.run(main())
        assert events == ["made", "start", "stop"]
