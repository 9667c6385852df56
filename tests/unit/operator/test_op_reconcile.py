"""The reconcile against a fake API (status first, 409 handling, never raising) and the wiring."""

from __future__ import annotations

import asyncio
import copy
import datetime
import logging
import threading
from collections.abc import Iterator, Mapping
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
        self.calls.append(f"get {kind}")
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
        self.calls.append(f"list pods of {job_name}")
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


@pytest.fixture(autouse=True)
def fresh_views() -> Iterator[None]:
    reconcile.views().reset()
    yield
    reconcile.flush_events()
    reconcile.views().reset()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    fake_api = FakeApi(make_body())
    fake_api.install(monkeypatch)
    return fake_api


def run(fake: FakeApi, at: datetime.datetime = T0) -> None:
    reconcile.reconcile("ml", "iris", LOG, Settings(), now=lambda: at)
    reconcile.flush_events()


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
        reconcile.flush_events()
        assert change is not None
        assert change.wake
        assert fake.mc["status"]["triggers"]["pending"]["type"] == "Monitor"
        assert fake.events == [("Normal", "RetrainRequested")]

    def test_conflict_recomputes_on_a_fresh_read(self, fake: FakeApi) -> None:
        fake.conflicts = 2
        assert reconcile.change_status("ml", "iris", set_pending, LOG) is not None
        reconcile.flush_events()
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


def _settled(
    *,
    generation: int = 1,
    status: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A ModelCycle reconciled at generation 1 and serving."""
    meta: dict[str, Any] = {"generation": generation}
    if annotations:
        meta["annotations"] = annotations
    return {
        "metadata": meta,
        "status": {"step": "Serving", "observedGeneration": 1, **(status or {})},
    }


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
        assert settings.execution.max_workers == handlers.SETTINGS.max_workers
        selectors = settings.watching.label_selectors
        assert {(sel.group, sel.any_name) for sel in selectors} == {
            ("batch", "jobs"),
            ("apps", "deployments"),
            ("", "pods"),
            ("", "persistentvolumeclaims"),
            ("", "services"),
        }
        assert set(selectors.values()) == {handlers._MANAGED_SELECTOR}

    def test_child_event_reconciles_parent(self, monkeypatch: pytest.MonkeyPatch) -> None:
        seen: list[tuple[str, str]] = []
        monkeypatch.setattr(
            handlers._reconcile, "reconcile", lambda ns, name, logger: seen.append((ns, name))
        )
        handlers.on_child_event(namespace="ml", labels={naming.LABEL_NAME: "iris"})
        handlers.on_child_event(namespace="ml", labels={})
        assert seen == [("ml", "iris")]

    def test_object_handler_reconciles(self, monkeypatch: pytest.MonkeyPatch) -> None:
        seen: list[tuple[str, str]] = []
        monkeypatch.setattr(
            handlers._reconcile, "reconcile", lambda ns, name, logger: seen.append((ns, name))
        )
        assert handlers.on_modelcycle(name="iris", namespace="ml", logger=LOG) is None
        assert seen == [("ml", "iris")]

    @pytest.mark.parametrize(
        ("event_type", "body", "wanted"),
        [
            # kopf's initial listing (type None): every object, as kopf's resume did.
            (None, _settled(), True),
            ("ADDED", {"metadata": {"generation": 1}}, True),  # new: no step yet
            ("MODIFIED", _settled(generation=2), True),  # spec changed
            ("MODIFIED", _settled(), False),  # our own status write, nothing to do
            ("MODIFIED", _settled(status={"triggers": {"pending": {"reason": "Alert"}}}), True),
            ("MODIFIED", _settled(annotations={naming.ANNOTATION_RETRAIN: "r2"}), True),
            (
                "MODIFIED",
                _settled(
                    annotations={naming.ANNOTATION_RETRAIN: "r2"},
                    status={"triggers": {"handledRetrain": "r2"}},
                ),
                False,
            ),
            ("DELETED", {"metadata": {"generation": 1}}, False),
        ],
    )
    def test_modelcycle_event_filter(
        self, event_type: str | None, body: dict[str, Any], wanted: bool
    ) -> None:
        assert handlers._wants_reconcile(namespace="ml", body=body, type=event_type) is wanted

    def test_no_kopf_timer_or_change_handler_on_modelcycles(self) -> None:
        """No per-object timer and no create/update handler: kopf then puts no
        finalizer and no diff-base annotation on a ModelCycle (only the built-in
        monitor's daemon does, for the objects that enable it)."""
        registry = kopf.get_default_registry()
        resource = kopf.Resource(naming.GROUP, naming.VERSION, naming.PLURAL)
        assert not registry._changing.has_handlers(resource=resource)
        spawning = list(registry._spawning.get_all_handlers())
        assert [h.fn.__name__ for h in spawning] == ["builtin_monitor"]

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
        assert handlers._scheduled({"spec": spec, "status": status}) is scheduled

    def test_resync_calls(self, monkeypatch: pytest.MonkeyPatch) -> None:
        seen: list[tuple[str, str, str]] = []
        monkeypatch.setattr(
            handlers._schedule, "tick", lambda ns, n, log: seen.append(("tick", ns, n))
        )
        monkeypatch.setattr(
            handlers._reconcile, "reconcile", lambda ns, n, log: seen.append(("rec", ns, n))
        )
        handlers._resync_call("schedule", ("ml", "iris"))
        handlers._resync_call("reconcile", ("ml", "wine"))
        assert seen == [("tick", "ml", "iris"), ("rec", "ml", "wine")]

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


class Stores:
    """The operator's own stores, fed the way the event handlers feed them."""

    def put(self, store: str, body: Mapping[str, Any], parent: str = "iris") -> None:
        meta = body["metadata"]
        uid = meta.get("uid") or meta["name"]
        reconcile.views().put(store, ("ml", parent), uid, copy.deepcopy(dict(body)))

    def drop(self, store: str, name: str, uid: str | None = None) -> None:
        reconcile.views().remove(store, uid or name)

    def install(self) -> None:
        reconcile.views().set_ready()


@pytest.fixture
def indexed(fake: FakeApi) -> Stores:
    ix = Stores()
    ix.put(reconcile.STORE_MODELCYCLES, fake.mc)
    ix.install()
    return ix


class TestIndexedReads:
    def test_create_makes_only_the_writes_the_step_needs(
        self, fake: FakeApi, indexed: Stores
    ) -> None:
        run(fake)
        # No GET at all; the Job before the claim its pod mounts; status first.
        assert fake.calls == [
            "patch_status",
            "create Job/iris-train-1",
            "create PersistentVolumeClaim/iris-artifacts",
        ]
        assert ("Normal", "CycleStarted") in fake.events  # posted, after the writes
        assert fake.mc["status"]["cycle"] == 1

    def test_follow_up_before_the_watches_deliver_makes_no_request(
        self, fake: FakeApi, indexed: Stores
    ) -> None:
        run(fake)
        first = copy.deepcopy(fake.mc["status"])
        fake.calls.clear()
        # The indexes still hold the old ModelCycle and no Job or PVC: our own writes
        # stand in for them, so nothing is written or created twice.
        run(fake, T0 + datetime.timedelta(seconds=1))
        assert "get_modelcycle" not in fake.calls
        assert not [c for c in fake.calls if c.startswith(("create", "get "))]
        assert fake.mc["status"]["cycle"] == first["cycle"] == 1

    def test_the_job_appearing_needs_no_second_status_write(
        self, fake: FakeApi, indexed: Stores
    ) -> None:
        run(fake)
        # The watches deliver what the first reconcile wrote and created; the Job's pod
        # has not been created yet. The status already says so: nothing to write.
        indexed.put(reconcile.STORE_MODELCYCLES, fake.mc)
        job = copy.deepcopy(fake.objects[("Job", "iris-train-1")])
        job["metadata"]["uid"] = "job-uid"
        job["status"] = {}
        indexed.put(reconcile.STORE_JOBS, job)
        pvc = copy.deepcopy(fake.objects[("PersistentVolumeClaim", "iris-artifacts")])
        pvc["status"] = {"phase": "Pending"}
        indexed.put(reconcile.STORE_PVCS, pvc)
        fake.calls.clear()
        run(fake, T0 + datetime.timedelta(seconds=1))
        assert fake.calls == []
        assert "waiting for the pod of Job iris-train-1" in str(fake.mc["status"])

    def test_idle_reconcile_makes_no_request(self, fake: FakeApi, indexed: Stores) -> None:
        fake.mc["spec"]["suspend"] = True
        indexed.put(reconcile.STORE_MODELCYCLES, fake.mc)
        run(fake)
        assert fake.mc["status"]["step"] == "Suspended"
        # The watch delivers the written object; every later resync is free.
        indexed.put(reconcile.STORE_MODELCYCLES, fake.mc)
        fake.calls.clear()
        for i in range(5):
            run(fake, T0 + datetime.timedelta(minutes=5 * (i + 1)))
        assert fake.calls == []
        assert fake.events.count(("Normal", "Suspended")) <= 1

    def test_a_stale_index_is_caught_by_the_resource_version(
        self, fake: FakeApi, indexed: Stores
    ) -> None:
        # Someone else changed the object; the watch has not delivered it yet.
        fake.mc["metadata"]["resourceVersion"] = "150"
        run(fake)
        # 409, then one fresh GET of the ModelCycle (the children still from the indexes).
        assert fake.calls == [
            "patch_status",
            "get_modelcycle",
            "patch_status",
            "create Job/iris-train-1",
            "create PersistentVolumeClaim/iris-artifacts",
        ]
        assert fake.mc["status"]["cycle"] == 1

    def test_not_in_the_index_is_gone(self, fake: FakeApi, indexed: Stores) -> None:
        # A child's event after its ModelCycle was deleted: no GET of a 404.
        indexed.drop(reconcile.STORE_MODELCYCLES, "iris", fake.mc["metadata"]["uid"])
        run(fake)
        assert fake.calls == []

    def test_a_trigger_for_an_object_not_in_the_index_reads_it(
        self, fake: FakeApi, indexed: Stores
    ) -> None:
        indexed.drop(reconcile.STORE_MODELCYCLES, "iris", fake.mc["metadata"]["uid"])
        assert reconcile.change_status("ml", "iris", set_pending, LOG) is not None
        assert fake.calls == ["get_modelcycle", "patch_status"]

    def test_a_trigger_reads_the_index_and_the_reconcile_sees_its_write(
        self, fake: FakeApi, indexed: Stores
    ) -> None:
        run(fake)
        fake.mc["status"]["step"] = "Serving"  # pretend cycle 1 finished
        fake.mc["status"]["lastTrigger"]["time"] = "2026-12-01T11:00:00Z"
        indexed.put(reconcile.STORE_MODELCYCLES, fake.mc)
        fake.calls.clear()
        assert reconcile.change_status("ml", "iris", set_pending, LOG) is not None
        # The watch has not delivered the pending trigger; the reconcile still sees it.
        run(fake, T0 + datetime.timedelta(seconds=10))
        assert fake.calls[:2] == ["patch_status", "patch_status"]
        assert "get_modelcycle" not in fake.calls
        assert fake.mc["status"]["cycle"] == 2
        assert "create Job/iris-train-2" in fake.calls

    def test_before_the_indexes_are_filled_it_reads_from_the_api(self, fake: FakeApi) -> None:
        Stores()  # built, never installed: not ready
        run(fake)
        assert fake.calls[0] == "get_modelcycle"
        assert "get PersistentVolumeClaim" in fake.calls

    def train_job(self, fake: FakeApi, **status: Any) -> dict[str, Any]:
        job = copy.deepcopy(fake.objects[("Job", "iris-train-1")])
        job["metadata"]["uid"] = "job-uid"
        job["status"] = status
        return job

    def finished_pod(self) -> dict[str, Any]:
        pod = make_pod(
            "iris-train-1-abcde",
            phase="Succeeded",
            init=[terminated("collect", 0, COLLECT_OK)],
            containers=[terminated("train", 0, train_ok(1))],
            labels={naming.LABEL_JOB_NAME: "iris-train-1", naming.LABEL_NAME: "iris"},
        )
        pod["metadata"]["uid"] = "pod-uid"
        pod["metadata"]["ownerReferences"] = [{"uid": "job-uid", "controller": True}]
        return pod

    def test_advances_on_the_pod_before_the_job_condition(
        self, fake: FakeApi, indexed: Stores
    ) -> None:
        run(fake)
        indexed.put(reconcile.STORE_MODELCYCLES, fake.mc)
        indexed.put(reconcile.STORE_JOBS, self.train_job(fake, active=1))
        indexed.put(reconcile.STORE_PODS, self.finished_pod())
        fake.calls.clear()
        run(fake, T0 + datetime.timedelta(seconds=5))
        assert fake.mc["status"]["step"] == "Evaluating"
        assert fake.calls == ["patch_status", "create Job/iris-eval-1"]

    def test_a_complete_job_whose_pod_the_index_lacks_lists_its_pods(
        self, fake: FakeApi, indexed: Stores
    ) -> None:
        run(fake)
        indexed.put(reconcile.STORE_MODELCYCLES, fake.mc)
        done = [{"type": "Complete", "status": "True"}]
        indexed.put(reconcile.STORE_JOBS, self.train_job(fake, succeeded=1, conditions=done))
        fake.pods["iris-train-1"] = [self.finished_pod()]  # the pod watch lags
        fake.calls.clear()
        run(fake, T0 + datetime.timedelta(seconds=5))
        assert fake.calls[0] == "list pods of iris-train-1"
        assert fake.mc["status"]["step"] == "Evaluating"  # not "reported no model version"


def test_memory_trimmer_starts_once_on_glibc() -> None:
    libc = handlers._Memory.libc()
    assert libc is not None  # the operator's image and this machine run glibc
    handlers._Memory.start()
    handlers._Memory.start()
    trimmers = [t for t in threading.enumerate() if t.name == "modelcycle-malloc-trim"]
    assert len(trimmers) == 1
    assert trimmers[0].daemon
    assert libc.malloc_trim(0) in (0, 1)  # callable as the thread calls it


def _object(name: str, uid: str, rv: str = "1", parent: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "ml",
        "uid": uid,
        "resourceVersion": rv,
        "managedFields": [{"manager": "kubectl"}],
    }
    if parent is not None:
        meta["labels"] = {naming.LABEL_NAME: parent}
    return {"metadata": meta, "spec": {"x": 1}, "status": {}}


class Listing:
    """``api.list_objects`` answering from a dict by plural; a plural with an error fails."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.items: dict[str, list[dict[str, Any]]] = {}
        self.errors: dict[str, api.ApiError] = {}
        self.calls: list[tuple[str, str | None, str | None]] = []
        monkeypatch.setattr(api, "list_objects", self.list_objects)

    def list_objects(
        self, plural: str, namespace: str | None, label_selector: str | None = None
    ) -> Iterator[dict[str, Any]]:
        self.calls.append((plural, namespace, label_selector))
        if plural in self.errors:
            raise self.errors[plural]
        yield from copy.deepcopy(self.items.get(plural, []))


class TestStores:
    def test_no_kopf_index_handlers_so_no_index_barrier(self) -> None:
        registry = kopf.get_default_registry()
        assert list(registry._indexing.get_all_handlers()) == []

    def test_store_handlers_run_before_the_reconcile_handlers(self) -> None:
        """kopf runs an event's handlers in registration order: a reconcile that an
        event starts already reads that event's body."""
        names: dict[str, list[str]] = {}
        for h in kopf.get_default_registry()._watching.get_all_handlers():
            names.setdefault(h.selector.any_name, []).append(h.fn.__name__)
        assert names == {
            naming.PLURAL: ["store_modelcycle", "on_modelcycle"],
            "jobs": ["store_child", "on_child_event"],
            "deployments": ["store_child", "on_child_event"],
            "pods": ["store_child", "on_child_event"],
            "services": ["store_child"],
            "persistentvolumeclaims": ["store_child"],
        }

    def test_startup_listing_fills_the_stores_and_sets_ready(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        listing = Listing(monkeypatch)
        listing.items[naming.PLURAL] = [_object("iris", "mc-1")]
        listing.items["jobs"] = [_object("iris-train-1", "job-1", parent="iris")]
        listing.items["persistentvolumeclaims"] = [
            _object("iris-artifacts", "pvc-1", parent="iris")
        ]
        views = reconcile.views()
        assert not views.ready
        handlers.list_everything(logger=LOG)
        assert views.ready
        body = views.modelcycle("ml", "iris")
        assert body is not None
        assert "managedFields" not in body["metadata"]
        assert body["spec"] == {"x": 1}
        assert views.child(reconcile.STORE_JOBS, "ml", "iris", "iris-train-1") is not None
        pvc = views.child(reconcile.STORE_PVCS, "ml", "iris", "iris-artifacts")
        assert pvc is not None
        assert "spec" not in pvc  # slim: no summary reads a PVC's spec
        assert [k for k, _ in views.modelcycles()] == [("ml", "iris")]
        # Cluster-wide; the children by the label selector kopf's watches use.
        assert sorted(listing.calls) == sorted(
            [(naming.PLURAL, None, None)]
            + [
                (plural, None, handlers._MANAGED_SELECTOR)
                for plural in ("jobs", "deployments", "pods", "services", "persistentvolumeclaims")
            ]
        )

    def test_startup_listing_per_served_namespace(self, monkeypatch: pytest.MonkeyPatch) -> None:
        listing = Listing(monkeypatch)
        monkeypatch.setattr(handlers, "SETTINGS", Settings(namespaces=("a", "b")))
        handlers.list_everything(logger=LOG)
        assert {ns for _, ns, _ in listing.calls} == {"a", "b"}
        assert len(listing.calls) == 12
        assert reconcile.views().ready

    def test_a_failed_list_stays_not_ready_until_the_settle(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        listing = Listing(monkeypatch)
        listing.items[naming.PLURAL] = [_object("iris", "mc-1")]
        listing.errors["pods"] = api.ApiError(403, "Forbidden", "pods is forbidden")
        views = reconcile.views()
        with caplog.at_level(logging.WARNING):
            handlers.list_everything(logger=LOG)
        assert not views.ready
        assert any("Cannot list pods" in r.getMessage() for r in caplog.records)
        assert len(listing.calls) == 6  # a 403 for one kind: the others are still listed
        handlers.settle(LOG)
        assert views.ready

    def test_an_unreachable_api_stops_the_listing(self, monkeypatch: pytest.MonkeyPatch) -> None:
        listing = Listing(monkeypatch)
        listing.errors[naming.PLURAL] = api.ApiError(0, "ConnectionError", "refused")
        handlers.list_everything(logger=LOG)
        assert len(listing.calls) == 1
        assert not reconcile.views().ready

    def test_not_ready_reads_from_the_api(self, fake: FakeApi) -> None:
        run(fake)
        assert fake.calls[0] == "get_modelcycle"

    def test_a_listed_only_entry_lingers_until_the_settle(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        listing = Listing(monkeypatch)
        listing.items[naming.PLURAL] = [_object("iris", "mc-1"), _object("wine", "mc-2")]
        listing.items["jobs"] = [_object("wine-train-1", "job-2", parent="wine")]
        handlers.list_everything(logger=LOG)
        # kopf's own listing delivers iris (type None), not wine: deleted in between.
        asyncio.run(handlers.store_modelcycle(body=_object("iris", "mc-1"), type=None))
        views = reconcile.views()
        assert views.modelcycle("ml", "wine") is not None
        handlers.settle(LOG)
        assert views.modelcycle("ml", "wine") is None
        assert views.child(reconcile.STORE_JOBS, "ml", "wine", "wine-train-1") is None
        assert views.modelcycle("ml", "iris") is not None
        assert [k for k, _ in views.modelcycles()] == [("ml", "iris")]

    def test_an_event_for_the_same_uid_replaces_the_body(self) -> None:
        views = reconcile.views()
        views.put(
            reconcile.STORE_MODELCYCLES,
            ("ml", "iris"),
            "mc-1",
            _object("iris", "mc-1"),
            listed=True,
        )
        asyncio.run(
            handlers.store_modelcycle(body=_object("iris", "mc-1", rv="7"), type="MODIFIED")
        )
        assert reconcile.views().modelcycle("ml", "iris")["metadata"]["resourceVersion"] == "7"  # type: ignore[index]
        # The event confirmed it: the settle keeps it; a later listing cannot go back.
        handlers.settle(LOG)
        views.put(
            reconcile.STORE_MODELCYCLES,
            ("ml", "iris"),
            "mc-1",
            _object("iris", "mc-1"),
            listed=True,
        )
        body = views.modelcycle("ml", "iris")
        assert body is not None
        assert body["metadata"]["resourceVersion"] == "7"

    def test_deleted_removes(self) -> None:
        pod = _object("iris-train-1-x", "pod-1", parent="iris")
        resource = kopf.Resource("", "v1", "pods")
        asyncio.run(handlers.store_child(body=pod, type="ADDED", resource=resource))
        views = reconcile.views()
        assert [
            p["metadata"]["name"] for p in views.children(reconcile.STORE_PODS, "ml", "iris")
        ] == ["iris-train-1-x"]
        asyncio.run(handlers.store_child(body=pod, type="DELETED", resource=resource))
        assert views.children(reconcile.STORE_PODS, "ml", "iris") == []
        mc = _object("iris", "mc-1")
        asyncio.run(handlers.store_modelcycle(body=mc, type="ADDED"))
        asyncio.run(handlers.store_modelcycle(body=mc, type="DELETED"))
        assert views.modelcycle("ml", "iris") is None

    def test_a_relabelled_child_moves_to_its_new_parent(self) -> None:
        resource = kopf.Resource("batch", "v1", "jobs")
        job = _object("j", "job-1", parent="iris")
        asyncio.run(handlers.store_child(body=job, type="ADDED", resource=resource))
        job = _object("j", "job-1", rv="2", parent="wine")
        asyncio.run(handlers.store_child(body=job, type="MODIFIED", resource=resource))
        views = reconcile.views()
        assert views.children(reconcile.STORE_JOBS, "ml", "iris") == []
        assert len(views.children(reconcile.STORE_JOBS, "ml", "wine")) == 1

    def test_the_diff_base_annotation_is_not_kept(self) -> None:
        mc = _object("iris", "mc-1")
        diffbase = f"{handlers.SETTINGS.prefix}/last-handled-configuration"
        mc["metadata"]["annotations"] = {diffbase: "{}", "keep": "me"}
        asyncio.run(handlers.store_modelcycle(body=mc, type=None))
        body = reconcile.views().modelcycle("ml", "iris")
        assert body is not None
        assert body["metadata"]["annotations"] == {"keep": "me"}

    def test_the_settle_task_starts_and_stops_with_the_resync(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        settled: list[bool] = []
        monkeypatch.setattr(handlers, "SETTLE_SECONDS", 0.01)
        monkeypatch.setattr(handlers, "settle", lambda logger: settled.append(True))

        async def main() -> None:
            await handlers.start_resync()
            await asyncio.sleep(0.1)
            await handlers.stop_resync()

        asyncio.run(main())
        assert settled == [True]
        assert handlers._ResyncSlot.settle is None


def test_store_handlers_do_not_log_each_event() -> None:
    quiet = handlers._QuietStores()

    def record(msg: str, level: int = logging.INFO) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", level, __file__, 1, msg, None, None)

    assert not quiet.filter(record("Handler 'store_child' succeeded."))
    assert not quiet.filter(record("Handler 'store_modelcycle' succeeded."))
    assert quiet.filter(record("Handler 'on_modelcycle' succeeded."))
    assert quiet.filter(record("Handler 'store_child' failed", logging.ERROR))
    assert any(
        isinstance(f, handlers._QuietStores) for f in logging.getLogger("kopf.objects").filters
    )
