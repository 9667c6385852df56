"""One reconcile of one ModelCycle: read, observe, decide, write status, act.

:func:`reconcile` is what every reconcile handler calls (the ModelCycle's events, the
child Job/Deployment/Pod events, the resync, the trigger sources). It

1. reads the ModelCycle and its children from what the watches delivered (the
   operator's own stores, see :class:`Views`), with no request; before the stores are
   filled (the startup listing failed and the settle time has not passed) and after a
   409 it GETs instead,
2. summarises the children,
3. asks :func:`modelcycle_operator.pure.decide.decide` for actions and the new status,
4. writes the status first, as a merge patch on the status subresource guarded by the
   resourceVersion it read (a 409 means someone changed the object, or the store was
   behind: start again from a fresh GET),
5. then performs the actions: the Job first, then the PVC and the rest (create-if-absent,
   server-side apply), and only then the Events, posted by a background thread so that
   they hold up neither the writes nor the worker.

A store can lag a write this process just made. Two overlays cover that: the body a
status PATCH returned stands in for the store's copy until the watch delivers something
newer than what the PATCH was based on, and a child this process created counts as
present until the watch delivers it (a create that finds it existing anyway is a 409,
which ``api`` reports as "exists"). A Job whose conditions say it has finished while the
store still shows no finished pod is looked up with one LIST of its pods, so a pod event
that lags the Job's cannot fail a cycle for want of the termination message.

Writing status before acting makes a crash between the two harmless: the next reconcile
finds the step recorded and the child missing, and the decision creates it (deterministic
names make that a no-op when it exists). Calls for one object are serialised by a lock
per (namespace, name); a caller that finds another already waiting returns at once, since
the waiter will read everything fresh anyway. It never raises: bad input becomes
``Stalled=True`` in status, API failures are logged and left to the next event or timer.

:func:`change_status` is the same status path for the trigger sources (the alert
receiver, the built-in monitor, the schedule): GET, a pure function of the object
(:mod:`modelcycle_operator.pure.intake`) computes the new status, a merge patch guarded by
the resourceVersion writes it (a 409 reads again and recomputes), then its Events are
posted. When it leaves a trigger pending, the caller wakes :func:`reconcile`, whose
decision starts the cycle.

Limits: one process. Running two operator replicas needs kopf peering or leader election.
"""

from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import datetime
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from modelcycle_operator import api
from modelcycle_operator.pure import conditions as cond
from modelcycle_operator.pure import naming
from modelcycle_operator.pure.decide import (
    ApplyDeployment,
    ApplyService,
    CreateJob,
    CreatePvc,
    Decision,
    EmitEvent,
    decide,
)
from modelcycle_operator.pure.intake import Change
from modelcycle_operator.pure.observed import (
    JobSummary,
    Observed,
    summarize_deployment,
    summarize_job,
    summarize_pvc,
    summarize_service,
)
from modelcycle_operator.pure.patch import merge_patch
from modelcycle_operator.settings import Settings, load_settings

__all__ = [
    "StatusChanging",
    "Views",
    "change_status",
    "configure",
    "current_settings",
    "flush_events",
    "reconcile",
    "views",
]

Logger = logging.Logger | logging.LoggerAdapter[Any]
_module_logger = logging.getLogger(__name__)
_ATTEMPTS = 3


class _Configured:
    """The settings every reconcile uses; loaded from the environment if nobody set them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settings: Settings | None = None

    def set(self, settings: Settings) -> None:
        with self._lock:
            self._settings = settings

    def get(self) -> Settings:
        with self._lock:
            if self._settings is None:
                self._settings = load_settings()
            return self._settings


_configured = _Configured()


def configure(settings: Settings) -> None:
    """Set the settings every later reconcile uses (handlers call this at import)."""
    _configured.set(settings)


def current_settings() -> Settings:
    """The settings the reconcile uses (for the trigger sources)."""
    return _configured.get()


#: The stores (fed by the event handlers in :mod:`handlers`), one per watched kind.
STORE_MODELCYCLES = "modelcycles"
STORE_JOBS = "jobs"
STORE_PODS = "pods"
STORE_DEPLOYMENTS = "deployments"
STORE_SERVICES = "services"
STORE_PVCS = "persistentvolumeclaims"
STORES = (
    STORE_MODELCYCLES,
    STORE_JOBS,
    STORE_PODS,
    STORE_DEPLOYMENTS,
    STORE_SERVICES,
    STORE_PVCS,
)
#: How long a child this process created counts as present without the watch showing it.
CREATED_GRACE_SECONDS = 60.0
_STALE_KEEP = 16

Key = tuple[str, str]


def slim(body: Mapping[str, Any], *, keep_spec: bool = True) -> dict[str, Any]:
    """The body without what no summary reads: managedFields, the copy of the last
    handled spec an older operator's kopf kept in an annotation, and (``keep_spec=False``)
    the spec. The stores hold one per object, so this is most of the operator's memory
    at a thousand ModelCycles."""
    diffbase = f"{_configured.get().prefix}/last-handled-configuration"
    raw = {k: v for k, v in body.items() if keep_spec or k != "spec"}
    meta = dict(raw.get("metadata") or {})
    meta.pop("managedFields", None)
    annotations = meta.get("annotations")
    if isinstance(annotations, Mapping) and diffbase in annotations:
        meta["annotations"] = {k: v for k, v in annotations.items() if k != diffbase}
    raw["metadata"] = meta
    return raw


def _rv(body: Mapping[str, Any] | None) -> str:
    return str(((body or {}).get("metadata") or {}).get("resourceVersion") or "")


def _name_of(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("name") or "")


class Views:
    """What the watches delivered, keyed by (namespace, ModelCycle name), plus this
    process's own writes that the watches may not have delivered yet.

    One store per kind: (namespace, ModelCycle name) -> {uid: body}, ModelCycles under
    their own name, children under their ``modelcycle.dev/name`` label. kopf's event
    handlers (:mod:`handlers`, in kopf's event loop) :meth:`put` and :meth:`remove`;
    reconciles read from worker threads, each read a snapshot taken under the lock.
    The bodies are replaced, never changed in place: read them, never change them.

    Until :meth:`set_ready` every read goes to the API instead. The startup listing
    (:func:`handlers.list_everything`, before kopf starts watching) fills the stores and
    sets it; entries only that listing delivered are marked, and :meth:`drop_listed`
    later drops those no event has confirmed (deleted before kopf's own listing).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stores: dict[str, dict[Key, dict[str, dict[str, Any]]]] = {s: {} for s in STORES}
        # (store, uid) -> the key it is stored under (a relabelled child moves)
        self._where: dict[tuple[str, str], Key] = {}
        # (store, uid) of the entries only the startup listing delivered
        self._listed: set[tuple[str, str]] = set()
        self._ready = False
        # (ns, name) -> (resourceVersions the body replaces, the body a PATCH returned)
        self._written: dict[Key, tuple[tuple[str, ...], dict[str, Any]]] = {}
        # (store, ns, child name) -> (monotonic time of the create, the manifest sent)
        self._created: dict[tuple[str, str, str], tuple[float, dict[str, Any]]] = {}

    # --- feeding the stores

    def put(
        self, store: str, key: Key, uid: str, body: dict[str, Any], *, listed: bool = False
    ) -> None:
        """``body`` (uid ``uid``) is now what is known of it, under ``key``.

        ``listed``: from the startup listing, not from a kopf event; an event's body
        replaces it, a listed one never replaces what an event delivered.
        """
        ref = (store, uid)
        with self._lock:
            where = self._where.get(ref)
            if listed and where is not None and ref not in self._listed:
                return  # an event was here first: it is newer
            if where is not None and where != key:
                self._discard(store, where, uid)
            self._stores[store].setdefault(key, {})[uid] = body
            self._where[ref] = key
            if listed:
                self._listed.add(ref)
            else:
                self._listed.discard(ref)

    def remove(self, store: str, uid: str) -> None:
        """The object with ``uid`` is gone (a DELETED event)."""
        ref = (store, uid)
        with self._lock:
            where = self._where.pop(ref, None)
            self._listed.discard(ref)
            if where is not None:
                self._discard(store, where, uid)

    def _discard(self, store: str, key: Key, uid: str) -> None:
        entries = self._stores[store].get(key)
        if entries is not None:
            entries.pop(uid, None)
            if not entries:
                del self._stores[store][key]

    def drop_listed(self) -> int:
        """Drop the entries only the startup listing delivered; how many there were.

        kopf's own listing delivers every object that still exists, so what no event has
        confirmed some time after startup was deleted in between.
        """
        with self._lock:
            listed, self._listed = self._listed, set()
            for store, uid in listed:
                where = self._where.pop((store, uid), None)
                if where is not None:
                    self._discard(store, where, uid)
            return len(listed)

    def set_ready(self) -> None:
        """The stores hold everything: read them instead of the API from now on."""
        self._ready = True

    def reset(self) -> None:
        with self._lock:
            for entries in self._stores.values():
                entries.clear()
            self._where.clear()
            self._listed.clear()
            self._ready = False
            self._written.clear()
            self._created.clear()

    @property
    def ready(self) -> bool:
        return self._ready

    def _values(self, store: str, namespace: str, parent: str) -> list[dict[str, Any]]:
        with self._lock:
            entries = self._stores[store].get((namespace, parent))
            return list(entries.values()) if entries else []

    # --- the ModelCycle

    def modelcycle(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The newest body known here, or None when the watch has not delivered it."""
        key = (namespace, name)
        with self._lock:
            return self._modelcycle_locked(key)

    def _modelcycle_locked(self, key: Key) -> dict[str, Any] | None:
        entries = self._stores[STORE_MODELCYCLES].get(key)
        if not entries:
            self._written.pop(key, None)
            return None
        body = next(iter(entries.values()))
        written = self._written.get(key)
        if written is not None:
            if _rv(body) in written[0]:
                return written[1]  # the store is behind our own write
            del self._written[key]  # the watch caught up (or someone wrote since)
        return body

    def wrote(self, namespace: str, name: str, based_on: str, body: Mapping[str, Any]) -> None:
        """A status PATCH based on ``based_on`` returned ``body``."""
        if not body or not based_on:
            return
        key = (namespace, name)
        with self._lock:
            stale: tuple[str, ...] = (based_on,)
            previous = self._written.get(key)
            if previous is not None and _rv(previous[1]) == based_on:
                stale = (*previous[0], based_on)[-_STALE_KEEP:]
            self._written[key] = (stale, slim(body))

    def modelcycles(self) -> list[tuple[Key, dict[str, Any]]]:
        """Every stored ModelCycle as ((namespace, name), body); empty until ready.

        For the periodic resync; the bodies are the store's own: read them, never
        change them.
        """
        if not self._ready:
            return []
        out: list[tuple[Key, dict[str, Any]]] = []
        with self._lock:
            for key in list(self._stores[STORE_MODELCYCLES]):
                body = self._modelcycle_locked(key)
                if body is not None:
                    out.append((key, body))
        return out

    # --- children

    def child(self, store: str, namespace: str, parent: str, name: str) -> dict[str, Any] | None:
        for body in self._values(store, namespace, parent):
            if _name_of(body) == name:
                with self._lock:
                    self._created.pop((store, namespace, name), None)
                return body
        with self._lock:
            created = self._created.get((store, namespace, name))
            if created is None:
                return None
            if time.monotonic() - created[0] > CREATED_GRACE_SECONDS:
                del self._created[(store, namespace, name)]
                return None
            return created[1]

    def children(self, store: str, namespace: str, parent: str) -> list[dict[str, Any]]:
        return self._values(store, namespace, parent)

    def created(self, store: str, manifest: Mapping[str, Any]) -> None:
        meta = manifest.get("metadata") or {}
        key = (store, str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        with self._lock:
            self._created[key] = (time.monotonic(), dict(manifest))


_views = Views()


def views() -> Views:
    """The process's views (handlers feed the stores; tests reset it)."""
    return _views


class _EventPoster:
    """Posts Events in order from one background thread, off the reconcile's path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: list[concurrent.futures.Future[None]] = []

    def submit(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="modelcycle-events"
                )
            self._pending = [f for f in self._pending if not f.done()]
            self._pending.append(self._pool.submit(fn))

    def flush(self, timeout: float = 30.0) -> None:
        with self._lock:
            pending = list(self._pending)
        concurrent.futures.wait(pending, timeout=timeout)


_events = _EventPoster()


def flush_events(timeout: float = 30.0) -> None:
    """Wait until the Events queued so far are posted (tests; shutdown)."""
    _events.flush(timeout)


class StatusChanging(Exception):
    """The object changed under every attempt of :func:`change_status`."""


def change_status(
    namespace: str,
    name: str,
    compute: Callable[[Mapping[str, Any], datetime.datetime], Change],
    logger: Logger | None = None,
    now: Callable[[], datetime.datetime] | None = None,
) -> Change | None:
    """Write the status ``compute`` makes of the object; None when the object is absent.

    Raises :class:`api.ApiError` when the API fails, :class:`StatusChanging` when every
    attempt lost the race. The Events are posted after the write (best effort).
    """
    log = logger or _module_logger
    clock = now or (lambda: datetime.datetime.now(datetime.UTC))
    for attempt in range(_ATTEMPTS + 2):
        body = _read_modelcycle(namespace, name, fresh=attempt > 0)
        if body is None:
            return None
        meta = body.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            return None
        change = compute(body, clock())
        patch = merge_patch(body.get("status") or {}, change.status)
        if patch:
            try:
                written = _write_status(namespace, name, patch, body)
            except api.ApiError as exc:
                if exc.conflict:
                    continue
                raise
            if written is None:
                return None
        for event in change.events:
            level = logging.WARNING if event.type == "Warning" else logging.INFO
            log.log(level, f"{event.reason}: {event.message}")
            _queue_event(body, event.type, event.reason, event.message, log)
        return change
    raise StatusChanging(
        f"ModelCycle {namespace}/{name} kept changing while its status was written"
    )


@dataclasses.dataclass
class _Slot:
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    waiting: int = 0
    users: int = 0


_slots: dict[tuple[str, str], _Slot] = {}
_slots_guard = threading.Lock()


def reconcile(
    namespace: str,
    name: str,
    logger: Logger | None = None,
    settings: Settings | None = None,
    now: Callable[[], datetime.datetime] | None = None,
) -> None:
    """Bring one ModelCycle a step closer to its desired state. Never raises."""
    log = logger or _module_logger
    key = (namespace, name)
    with _slots_guard:
        slot = _slots.setdefault(key, _Slot())
        if slot.waiting and slot.users:
            return  # someone is already queued behind the running reconcile: it covers us
        slot.users += 1
        slot.waiting += 1
    try:
        with slot.lock:
            with _slots_guard:
                slot.waiting -= 1
            _reconcile_locked(namespace, name, log, settings or _configured.get(), now)
    finally:
        with _slots_guard:
            slot.users -= 1
            if slot.users == 0:
                _slots.pop(key, None)


def _read_modelcycle(
    namespace: str, name: str, *, fresh: bool, absent_is_gone: bool = False
) -> dict[str, Any] | None:
    """The watched body (plus our own newer writes); a GET when ``fresh`` or not stored.

    ``absent_is_gone``: with the stores filled, an object the watch does not hold is
    gone (or not delivered yet, and its own create handler will come): no GET. The
    children's events after a delete would otherwise each GET a 404.
    """
    if not fresh and _views.ready:
        body = _views.modelcycle(namespace, name)
        if body is not None:
            return copy.deepcopy(body)  # shared with the store: never handed out to change
        if absent_is_gone:
            return None
    return api.get_modelcycle(namespace, name)


def _write_status(
    namespace: str, name: str, patch: Mapping[str, Any], body: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The resourceVersion-guarded status PATCH; remembers what it returned."""
    based_on = _rv(body)
    written = api.patch_modelcycle_status(namespace, name, patch, based_on or None)
    if written is not None:
        _views.wrote(namespace, name, based_on, written)
    return written


def _reconcile_locked(
    namespace: str,
    name: str,
    log: Logger,
    settings: Settings,
    now: Callable[[], datetime.datetime] | None,
) -> None:
    clock = now or (lambda: datetime.datetime.now(datetime.UTC))
    for attempt in range(_ATTEMPTS):
        try:
            if _reconcile_once(namespace, name, log, settings, clock, fresh=attempt > 0):
                return
        except api.ApiError as exc:
            log.warning(f"Reconcile of {namespace}/{name} failed, retrying later: {exc}")
            return
        except Exception as exc:  # a bug must not crash the operator: report it in status
            log.exception(f"Reconcile of {namespace}/{name} failed unexpectedly")
            _report_crash(namespace, name, log, exc, clock())
            return
    log.info(f"ModelCycle {namespace}/{name} kept changing; the next event reconciles it")


def observe(body: Mapping[str, Any], *, indexed: bool | None = None) -> Observed:
    """Summarise the children of ``body`` for its current cycle.

    From the stores when they are filled (``indexed`` None: whenever they are), else
    with GETs. The one request the stored path may still make: the pods of a Job that
    has finished by its conditions while the store shows no finished pod, and a
    user-provided ``existingClaim`` (not labelled as ours, so not watched).
    """
    meta = body.get("metadata") or {}
    namespace, name = str(meta["namespace"]), str(meta["name"])
    status = body.get("status") or {}
    try:
        cycle = int(status.get("cycle") or 0)
    except (TypeError, ValueError):
        cycle = 0
    spec = body.get("spec") or {}
    artifacts = spec.get("artifacts") if isinstance(spec, Mapping) else None
    existing = ""
    if isinstance(artifacts, Mapping):
        existing = str(artifacts.get("existingClaim") or "")
    claim = existing or naming.pvc_name(name)
    use_index = _views.ready if indexed is None else indexed
    step = status.get("step")
    if not use_index:
        return _observe_by_get(namespace, name, cycle, claim, step)

    v = _views
    # A user's existingClaim is not labelled as ours, so no watch sees it: GET it.
    pvc = api.get_pvc(namespace, claim) if existing else v.child(STORE_PVCS, namespace, name, claim)
    pods = v.children(STORE_PODS, namespace, name)

    def job(job_name: str) -> JobSummary | None:
        raw = v.child(STORE_JOBS, namespace, name, job_name)
        if raw is None:
            return None
        own = [p for p in pods if _labels(p).get(naming.LABEL_JOB_NAME) == job_name]
        summary = summarize_job(raw, own)
        if step in cond.ACTIVE_STEPS and _finished_without_pod(summary):
            summary = summarize_job(raw, api.list_job_pods(namespace, job_name))
        return summary

    train_job = eval_job = None
    if cycle > 0:
        train_job = job(naming.train_job_name(name, cycle))
        eval_job = job(naming.eval_job_name(name, cycle))
    deployment = service = None
    raw_deployment = v.child(STORE_DEPLOYMENTS, namespace, name, naming.serving_name(name))
    if raw_deployment is not None:
        serving: list[dict[str, Any]] = []
        if step == "RollingOut":
            wanted = naming.serving_selector(name)
            serving = [
                p for p in pods if all(_labels(p).get(k) == val for k, val in wanted.items())
            ]
        deployment = summarize_deployment(raw_deployment, serving)
    raw_service = v.child(STORE_SERVICES, namespace, name, naming.serving_name(name))
    if raw_service is not None:
        service = summarize_service(raw_service)
    return Observed(
        cycle=cycle,
        pvc=summarize_pvc(pvc) if pvc is not None else None,
        train_job=train_job,
        eval_job=eval_job,
        deployment=deployment,
        service=service,
    )


def _labels(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    labels = (obj.get("metadata") or {}).get("labels")
    return labels if isinstance(labels, Mapping) else {}


def _finished_without_pod(job: JobSummary) -> bool:
    """The Job's conditions say it finished, but no pod shows how (a lagging pod watch)."""
    if job.failure is not None:
        return not any(
            c.failed for pod in job.pods for c in (*pod.init_containers, *pod.containers)
        )
    if job.has_complete_condition:
        return not any(pod.phase == "Succeeded" for pod in job.pods)
    return False


def _observe_by_get(namespace: str, name: str, cycle: int, claim: str, step: Any) -> Observed:
    pvc = api.get_pvc(namespace, claim)
    train_job = eval_job = None
    if cycle > 0:
        raw_train = api.get_job(namespace, naming.train_job_name(name, cycle))
        if raw_train is not None:
            pods = api.list_job_pods(namespace, naming.train_job_name(name, cycle))
            train_job = summarize_job(raw_train, pods)
        raw_eval = api.get_job(namespace, naming.eval_job_name(name, cycle))
        if raw_eval is not None:
            pods = api.list_job_pods(namespace, naming.eval_job_name(name, cycle))
            eval_job = summarize_job(raw_eval, pods)
    deployment = service = None
    raw_deployment = api.get_deployment(namespace, naming.serving_name(name))
    if raw_deployment is not None:
        pods = []
        if step == "RollingOut":
            pods = api.list_pods(namespace, naming.selector_string(naming.serving_selector(name)))
        deployment = summarize_deployment(raw_deployment, pods)
    raw_service = api.get_service(namespace, naming.serving_name(name))
    if raw_service is not None:
        service = summarize_service(raw_service)
    return Observed(
        cycle=cycle,
        pvc=summarize_pvc(pvc) if pvc is not None else None,
        train_job=train_job,
        eval_job=eval_job,
        deployment=deployment,
        service=service,
    )


def _reconcile_once(
    namespace: str,
    name: str,
    log: Logger,
    settings: Settings,
    clock: Callable[[], datetime.datetime],
    *,
    fresh: bool = False,
) -> bool:
    """One read-decide-write-act pass; False when the status write lost a race."""
    body = _read_modelcycle(namespace, name, fresh=fresh, absent_is_gone=True)
    if body is None:
        return True  # deleted: the garbage collector removes the children
    meta = body.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return True
    observed = observe(body)
    decision = decide(body, observed, clock(), settings)
    old_status = body.get("status") or {}
    patch = merge_patch(old_status, decision.status)
    if patch:
        try:
            written = _write_status(namespace, name, patch, body)
        except api.ApiError as exc:
            if exc.conflict:
                log.debug(f"ModelCycle {namespace}/{name} changed meanwhile; reading it again")
                return False
            raise
        if written is None:
            return True  # deleted meanwhile
        _log_transition(old_status, decision.status, namespace, name, log)
    _perform(body, decision, log)
    return True


def _log_transition(
    old: Mapping[str, Any], new: Mapping[str, Any], namespace: str, name: str, log: Logger
) -> None:
    before = (old.get("cycle"), old.get("step"))
    after = (new.get("cycle"), new.get("step"))
    if before != after:
        log.info(f"ModelCycle {namespace}/{name}: cycle {after[0]} is now {after[1]}")


def _write_order(action: object) -> int:
    """The Job first (what the step waits for), then the claim its pod mounts, then the
    rest; Events last (queued, posted in the background)."""
    if isinstance(action, CreateJob):
        return 0
    if isinstance(action, CreatePvc):
        return 1
    if isinstance(action, EmitEvent):
        return 3
    return 2


def _perform(body: Mapping[str, Any], decision: Decision, log: Logger) -> None:
    """Carry out the actions; one failing does not stop the others."""
    for action in sorted(decision.actions, key=_write_order):
        try:
            _perform_one(body, action, log)
        except api.ApiError as exc:
            what = _describe(action)
            if exc.status == 403 and "being terminated" in exc.message:
                log.debug(f"Skipped: {what}: the namespace is being deleted")
                continue
            log.error(f"Failed to {what}: {exc}")
            if not isinstance(action, EmitEvent) and exc.status not in (0, 429, 500, 503):
                _queue_event(
                    body, "Warning", "FailedApply", f"Failed to {what}: {exc.message}", log
                )


def _describe(action: object) -> str:
    if isinstance(action, CreateJob):
        return f"create Job {action.manifest['metadata']['name']}"
    if isinstance(action, CreatePvc):
        return f"create PersistentVolumeClaim {action.manifest['metadata']['name']}"
    if isinstance(action, ApplyDeployment):
        return f"apply Deployment {action.manifest['metadata']['name']}"
    if isinstance(action, ApplyService):
        return f"apply Service {action.manifest['metadata']['name']}"
    if isinstance(action, EmitEvent):
        return f"post Event {action.reason}"
    return repr(action)


def _perform_one(body: Mapping[str, Any], action: object, log: Logger) -> None:
    if isinstance(action, CreatePvc):
        name = action.manifest["metadata"]["name"]
        created = api.create_pvc(action.manifest)
        _views.created(STORE_PVCS, action.manifest)
        if created:
            log.info(f"Created PersistentVolumeClaim {name}")
            _queue_event(body, "Normal", "Created", f"Created PersistentVolumeClaim {name}", log)
    elif isinstance(action, CreateJob):
        name = action.manifest["metadata"]["name"]
        created = api.create_job(action.manifest)
        _views.created(STORE_JOBS, action.manifest)
        if created:
            log.info(f"Created Job {name}")
            _queue_event(body, "Normal", "Created", f"Created Job {name}", log)
        else:
            log.debug(f"Job {name} already exists")
    elif isinstance(action, ApplyDeployment):
        meta = action.manifest["metadata"]
        version = meta["annotations"].get(naming.ANNOTATION_MODEL_VERSION, "")
        api.apply_deployment(action.manifest)
        log.info(f"Applied Deployment {meta['name']} (model version {version})")
    elif isinstance(action, ApplyService):
        api.apply_service(action.manifest)
        log.info(f"Applied Service {action.manifest['metadata']['name']}")
    elif isinstance(action, EmitEvent):
        level = logging.WARNING if action.type == "Warning" else logging.INFO
        log.log(level, f"{action.reason}: {action.message}")
        _queue_event(body, action.type, action.reason, action.message, log)


def _queue_event(
    body: Mapping[str, Any], type_: str, reason: str, message: str, log: Logger
) -> None:
    """Post the Event from the background thread (best effort, in order)."""
    meta = body.get("metadata") or {}
    involved = {  # just the reference: a queue of whole bodies would hold megabytes
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: meta.get(k) for k in ("name", "namespace", "uid", "resourceVersion")},
    }
    _events.submit(lambda: _safe_event(involved, type_, reason, message, log))


def _safe_event(
    body: Mapping[str, Any], type_: str, reason: str, message: str, log: Logger
) -> None:
    try:
        api.post_event(body, type_, reason, message)
    except api.ApiError as exc:
        log.debug(f"Could not post Event {reason}: {exc}")


def _report_crash(
    namespace: str, name: str, log: Logger, exc: Exception, now: datetime.datetime
) -> None:
    """Best effort: show an unexpected failure as Stalled=True rather than only in logs."""
    try:
        body = api.get_modelcycle(namespace, name)
        if body is None:
            return
        status = body.get("status") or {}
        generation = int((body.get("metadata") or {}).get("generation") or 1)
        conditions = cond.set_condition(
            status.get("conditions"),
            cond.STALLED,
            cond.TRUE,
            "ReconcileError",
            f"The operator failed to reconcile this object: {type(exc).__name__}: {exc}",
            generation,
            now,
        )
        api.patch_modelcycle_status(namespace, name, {"conditions": conditions}, None)
    except Exception:
        log.exception(f"Could not report the failure on {namespace}/{name}")
