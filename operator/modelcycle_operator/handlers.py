"""kopf wiring, and nothing else: every handler calls :func:`reconcile.reconcile`.

Entry points, all leading to the same level-triggered reconcile of one ModelCycle:

- ``event`` of ``modelcycle.dev/v1alpha1/modelcycles``, filtered to what needs a
  reconcile: kopf's initial listing (the resume after a restart), a new object, a new
  generation, a pending trigger, a new ``modelcycle.dev/retrain`` value. A raw event
  handler rather than create/update/resume: those make kopf keep a diff base in an
  annotation (a PATCH per change) that a level-triggered reconcile does not need;
- ``event`` on the children (``batch/v1`` Jobs, ``apps/v1`` Deployments, ``v1`` Pods)
  labelled ``app.kubernetes.io/managed-by=modelcycle-operator``: the parent is found by the
  child's ``modelcycle.dev/name`` label in the same namespace. The label selector is also
  set server-side (``settings.watching.label_selectors``), so the operator never lists
  every Pod of the cluster;
- the resync (:mod:`modelcycle_operator.resync`): one task, not a kopf timer per object
  (timers make kopf add and remove a finalizer on every object). It reconciles a busy
  ModelCycle after ``MODELCYCLE_TIMER_SECONDS`` (default 10 s) without a reconcile and an
  idle one after ``MODELCYCLE_IDLE_RESYNC_SECONDS`` (default 300 s): what an event missed,
  and the clock-based rollout deadline.

Stores (:class:`reconcile.Views`): the ModelCycles and their labelled children (Jobs,
Pods, Deployments, Services, PVCs), each keyed by (namespace, ModelCycle name), fed by
async ``event`` handlers on the same watches (registered before the reconcile handlers,
which kopf then runs after them for the same event; DELETED removes). The reconcile reads
them instead of GETting, so a reconcile that changes nothing makes no request. Not
``@kopf.index``: with an index kopf holds every handler until every indexed object has
been handled once, through one shared condition that each listed object wakes (at a
thousand ModelCycles, half the operator's CPU at startup). Instead a startup handler
(kopf starts watching only after those) LISTs the six kinds once and fills the stores;
from then on reads use them. If a LIST fails, reads keep going to the API until
``SETTLE_SECONDS`` after startup; then too, what only that listing delivered and no
event since is dropped (deleted before kopf's own listing).

Trigger sources, which write a pending trigger into the status and then wake the same
reconcile (its decision is the only place a cycle starts):

- the alert receiver (:mod:`modelcycle_operator.receiver`), an aiohttp server started in
  kopf's event loop on startup and stopped on cleanup;
- the built-in monitor (:mod:`modelcycle_operator.monitor`), an async ``daemon`` per
  ModelCycle with ``spec.monitoring.builtin.enabled`` (kopf stops it when that turns
  off; these objects, and only these, carry kopf's finalizer, which a daemon needs);
- the schedule (:mod:`modelcycle_operator.schedule`), ticked by the resync every
  ``MODELCYCLE_TIMER_SECONDS`` for ModelCycles with ``spec.monitoring.schedule``.

Handlers are sync (kopf runs them in its thread pool; the resync has two threads of its
own) except the receiver's and the monitor's, which are async and make their Kubernetes
calls in worker threads. All return
nothing (kopf would store a return value under ``status.<handler>``, which the CRD's
status schema prunes), and never raise: reconcile reports problems in the object's status.

Namespaces: ``kopf run -m modelcycle_operator --all-namespaces`` (or ``-n NS`` per
namespace) decides what kopf watches. ``MODELCYCLE_NAMESPACES`` additionally filters every
handler, and ``python -m modelcycle_operator`` starts kopf with exactly those namespaces
(or cluster-wide when it is empty).

Limits: settings are read at import; an invalid ``MODELCYCLE_*`` value stops the operator
at start with a message naming it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import kopf

from modelcycle_operator import api as _api
from modelcycle_operator import monitor as _monitor
from modelcycle_operator import receiver as _receiver
from modelcycle_operator import reconcile as _reconcile
from modelcycle_operator import resync as _resync
from modelcycle_operator import schedule as _schedule
from modelcycle_operator.pure import conditions as cond
from modelcycle_operator.pure import naming
from modelcycle_operator.settings import Settings, load_settings

SETTINGS: Settings = load_settings()
#: The resync of idle ModelCycles: catches what an event missed, at a cost that stays
#: small with thousands of objects (and, read from the stores, makes no request).
IDLE_RESYNC_SECONDS = SETTINGS.idle_resync
_reconcile.configure(SETTINGS)

_MANAGED: dict[str, Any] = {
    naming.LABEL_MANAGED_BY: naming.OPERATOR_NAME,
    naming.LABEL_NAME: kopf.PRESENT,
}
_MANAGED_SELECTOR = f"{naming.LABEL_MANAGED_BY}={naming.OPERATOR_NAME},{naming.LABEL_NAME}"
#: The children the operator watches (label-selected server-side) and stores.
_CHILDREN = (
    ("batch/v1", "jobs"),
    ("apps/v1", "deployments"),
    ("v1", "pods"),
    ("v1", "persistentvolumeclaims"),
    ("v1", "services"),
)


_child_logger = logging.getLogger("modelcycle_operator.children")


def _served(namespace: str | None, **_: Any) -> bool:
    return SETTINGS.watches(namespace)


def _unreconciled(body: Mapping[str, Any]) -> bool:
    """New, changed since the last reconcile, or with a trigger waiting to be acted on."""
    status = _section(body, "status")
    meta = _section(body, "metadata")
    return (
        status.get("step") is None
        or status.get("observedGeneration") != meta.get("generation")
        or bool(_section(status, "triggers").get("pending"))
    )


def _busy(body: Mapping[str, Any]) -> bool:
    """A cycle is moving, or a change is not yet reconciled: worth the fast resync.

    Idle ModelCycles (serving, rejected, failed, suspended) get the slow resync only:
    at 1000 of them a 10 s timer on each was 100 reconciles/s, and new objects queued
    behind it (bench/RESULTS-operator.md).
    """
    return _unreconciled(body) or _section(body, "status").get("step") in cond.ACTIVE_STEPS


def _section(parent: Any, key: str) -> Mapping[str, Any]:
    value = parent.get(key) if isinstance(parent, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def _monitored(namespace: str | None, spec: kopf.Spec, **_: Any) -> bool:
    builtin = _section(_section(spec, "monitoring"), "builtin")
    return SETTINGS.watches(namespace) and builtin.get("enabled") is True


def _scheduled(body: Mapping[str, Any]) -> bool:
    """A schedule to keep, or the bookkeeping of a removed one to clear."""
    schedule = _section(_section(body, "spec"), "monitoring").get("schedule")
    leftover = bool(_section(_section(body, "status"), "triggers").get("nextScheduled"))
    return (isinstance(schedule, str) and bool(schedule.strip())) or leftover


class _Memory:
    """glibc keeps freed memory in per-thread malloc arenas: after a burst (a thousand
    new ModelCycles) the process kept 280-360 MiB RSS while Python itself held about
    25 MiB (tracemalloc). Fewer arenas and a periodic ``malloc_trim`` hand it back."""

    TRIM_SECONDS = 10.0
    started = False

    @classmethod
    def libc(cls) -> Any:
        name = ctypes.util.find_library("c")
        if not name:
            return None
        try:
            libc = ctypes.CDLL(name)
        except OSError:
            return None
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None

    @classmethod
    def start(cls) -> None:
        libc = cls.libc()
        if libc is None or cls.started:
            return  # not glibc: nothing to do
        cls.started = True
        libc.mallopt(-8, 1)  # M_ARENA_MAX: arenas created from now on (the worker threads)

        def trim() -> None:
            while True:
                time.sleep(cls.TRIM_SECONDS)
                libc.malloc_trim(0)

        threading.Thread(target=trim, name="modelcycle-malloc-trim", daemon=True).start()


class _ReceiverSlot:
    """The running alert receiver, between startup and cleanup."""

    current: _receiver.AlertReceiver | None = None


def _run(namespace: str | None, name: str, logger: Any) -> None:
    """Every reconcile a handler or the resync starts."""
    if namespace:
        RESYNC.reconciled((namespace, name))
        _reconcile.reconcile(namespace, name, logger)


#: The periodic work of every ModelCycle, one task for all (see :mod:`resync`).
RESYNC = _resync.Resync(
    busy_seconds=SETTINGS.timer_seconds,
    idle_seconds=IDLE_RESYNC_SECONDS,
    is_busy=_busy,
    is_scheduled=_scheduled,
)
_resync_logger = logging.getLogger("modelcycle_operator.resync")


def _resync_call(kind: str, key: tuple[str, str]) -> None:
    namespace, name = key
    if kind == _resync.SCHEDULE:
        _schedule.tick(namespace, name, _resync_logger)
    else:
        _run(namespace, name, _resync_logger)


class _ResyncSlot:
    """The running resync task and its threads, between startup and cleanup."""

    task: asyncio.Task[None] | None = None
    settle: asyncio.Task[None] | None = None
    executor: concurrent.futures.ThreadPoolExecutor | None = None


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> None:
    prefix = SETTINGS.prefix
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=prefix)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=prefix, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{prefix}/finalizer"
    # Watches that silently stop are a known kopf/Kubernetes failure (kopf#585, #955).
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 90
    # The reconcile posts its own Events on the ModelCycle; kopf posts only its warnings.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = naming.OPERATOR_NAME
    # The sync handlers wait on the API (a status PATCH, a create): more threads than
    # kopf's default min(32, cores + 4).
    settings.execution.max_workers = SETTINGS.max_workers
    _Memory.start()
    for child in _CHILDREN:
        settings.watching.label_selectors[child] = _MANAGED_SELECTOR
    where = ", ".join(SETTINGS.namespaces) if SETTINGS.namespaces else "all namespaces"
    logger.info(
        f"ModelCycle operator serving {where}; workload image {SETTINGS.image}; "
        f"estimators from {SETTINGS.allowed_modules_arg}"
    )


def _retrain_requested(body: Mapping[str, Any]) -> bool:
    annotations = _section(_section(body, "metadata"), "annotations")
    wanted = annotations.get(naming.ANNOTATION_RETRAIN)
    handled = _section(_section(body, "status"), "triggers").get("handledRetrain")
    return bool(wanted) and wanted != handled


def _wants_reconcile(namespace: str | None, body: kopf.Body, type: str | None, **_: Any) -> bool:
    """Listed (kopf's initial listing: the resume after a restart), new, changed, or
    with a trigger or a retrain request not yet acted on. Not every event: the status
    writes of a running cycle come back as events too, and the children's events and the
    resync cover what the cycle does next."""
    if not SETTINGS.watches(namespace) or type == "DELETED":
        return False
    return type is None or _unreconciled(body) or _retrain_requested(body)


#: The stores by plural: which store, and whether its bodies keep their spec (the
#: summaries read a Job's and a Deployment's spec, never a Pod's, Service's or PVC's).
_STORED: dict[str, tuple[str, bool]] = {
    naming.PLURAL: (_reconcile.STORE_MODELCYCLES, True),
    "jobs": (_reconcile.STORE_JOBS, True),
    "deployments": (_reconcile.STORE_DEPLOYMENTS, True),
    "pods": (_reconcile.STORE_PODS, False),
    "services": (_reconcile.STORE_SERVICES, False),
    "persistentvolumeclaims": (_reconcile.STORE_PVCS, False),
}
#: After this long, the stores count as filled even if the startup listing failed, and
#: what only that listing delivered (and no event since) is dropped as deleted.
SETTLE_SECONDS = 60.0


def _store(
    plural: str, type_: str | None, body: Mapping[str, Any], *, listed: bool = False
) -> None:
    """Put one object (an event's or the startup listing's) into its store."""
    store, keep_spec = _STORED[plural]
    meta = _section(body, "metadata")
    namespace = str(meta.get("namespace") or "")
    name = str(meta.get("name") or "")
    uid = str(meta.get("uid") or f"{namespace}/{name}")
    views = _reconcile.views()
    if type_ == "DELETED":
        views.remove(store, uid)
        return
    if store == _reconcile.STORE_MODELCYCLES:
        key = (namespace, name)
    else:
        labels = _section(meta, "labels")
        key = (namespace, str(labels.get(naming.LABEL_NAME) or ""))
    views.put(store, key, uid, _reconcile.slim(body, keep_spec=keep_spec), listed=listed)


# The store handlers are registered before the reconcile handlers below, and kopf runs
# an event's handlers in that order: the reconcile an event starts already reads it.
# Async: they run in kopf's event loop, no thread hop per event.
@kopf.on.event(naming.GROUP, naming.VERSION, naming.PLURAL, when=_served)
async def store_modelcycle(body: kopf.Body, type: str | None, **_: Any) -> None:
    _store(naming.PLURAL, type, body)


@kopf.on.event("batch", "v1", "jobs", labels=_MANAGED, when=_served)
@kopf.on.event("apps", "v1", "deployments", labels=_MANAGED, when=_served)
@kopf.on.event("v1", "pods", labels=_MANAGED, when=_served)
@kopf.on.event("v1", "services", labels=_MANAGED, when=_served)
@kopf.on.event("v1", "persistentvolumeclaims", labels=_MANAGED, when=_served)
async def store_child(body: kopf.Body, type: str | None, resource: kopf.Resource, **_: Any) -> None:
    _store(resource.plural, type, body)


class _QuietStores(logging.Filter):
    """Drop kopf's "Handler 'store_...' succeeded." line: one per event of every kind
    would double the operator's log for bookkeeping that cannot fail."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno == logging.INFO
            and isinstance(record.msg, str)
            and record.msg.startswith(("Handler 'store_modelcycle'", "Handler 'store_child'"))
        )


logging.getLogger("kopf.objects").addFilter(_QuietStores())


@kopf.on.startup()
def list_everything(logger: kopf.Logger, **_: Any) -> None:
    """Fill the stores before kopf starts watching, then read them instead of the API.

    kopf starts its watches only once the startup handlers are done, so every event it
    delivers is newer than this listing. A LIST that fails (a 403 from namespaced RBAC
    with a cluster-wide listing, the API down) leaves the reads going to the API until
    :func:`settle`.
    """
    views = _reconcile.views()
    started = time.monotonic()
    counts: list[str] = []
    failed = False
    for plural in _STORED:
        selector = None if plural == naming.PLURAL else _MANAGED_SELECTOR
        count = 0
        try:
            for namespace in SETTINGS.namespaces or (None,):
                for item in _api.list_objects(plural, namespace, selector):
                    _store(plural, None, item, listed=True)
                    count += 1
        except _api.ApiError as exc:
            failed = True
            logger.warning(
                f"Cannot list {plural} at startup ({exc}); reading from the API until "
                f"{SETTLE_SECONDS:.0f} s after startup"
            )
            if exc.status == 0:
                break  # the API is unreachable: the other kinds would fail the same way
            continue
        counts.append(f"{count} {plural}")
    if not failed:
        views.set_ready()
    logger.info(f"Listed {', '.join(counts) or 'nothing'} in {time.monotonic() - started:.2f} s")


def settle(logger: Any) -> None:
    """Some time after startup: ready in any case, and the stores forget what only the
    startup listing delivered (deleted before kopf's own listing saw it)."""
    views = _reconcile.views()
    if not views.ready:
        views.set_ready()
        logger.info("Reading the stores from now on (the startup listing had failed)")
    dropped = views.drop_listed()
    if dropped:
        logger.info(f"Dropped {dropped} objects deleted between the startup listing and the watch")


# A raw event handler, not create/update/resume: those need kopf's diff base (an
# annotation PATCH per change) and, with timers, its finalizer; none of that is needed
# for a level-triggered reconcile. kopf leaves annotations under its own storage prefix
# (modelcycle.dev) out of the object's essence, so the retrain annotation is seen here.
@kopf.on.event(naming.GROUP, naming.VERSION, naming.PLURAL, when=_wants_reconcile)
def on_modelcycle(name: str, namespace: str | None, logger: kopf.Logger, **_: Any) -> None:
    _run(namespace, name, logger)


@kopf.on.event("batch", "v1", "jobs", labels=_MANAGED, when=_served)
@kopf.on.event("apps", "v1", "deployments", labels=_MANAGED, when=_served)
@kopf.on.event("v1", "pods", labels=_MANAGED, when=_served)
def on_child_event(namespace: str | None, labels: kopf.Labels, **_: Any) -> None:
    # The handler's logger is bound to the child; log (and post) about the parent instead.
    parent = labels.get(naming.LABEL_NAME)
    if parent:
        _run(namespace, str(parent), _child_logger)


@kopf.on.startup()
async def start_alert_receiver(logger: kopf.Logger, **_: Any) -> None:
    if SETTINGS.receiver_port == 0:
        logger.info("Alert receiver off (MODELCYCLE_RECEIVER_PORT=0)")
        return
    receiver = _receiver.AlertReceiver(SETTINGS)
    if await receiver.start():
        _ReceiverSlot.current = receiver


@kopf.on.cleanup()
async def stop_alert_receiver(**_: Any) -> None:
    receiver, _ReceiverSlot.current = _ReceiverSlot.current, None
    if receiver is not None:
        await receiver.stop()


@kopf.daemon(
    naming.GROUP,
    naming.VERSION,
    naming.PLURAL,
    when=_monitored,
    cancellation_backoff=5.0,
    cancellation_timeout=5.0,
)
async def builtin_monitor(
    name: str,
    namespace: str | None,
    logger: kopf.Logger,
    stopped: kopf.DaemonStopped,
    **_: Any,
) -> None:
    async def pause(seconds: float) -> bool:
        await stopped.wait(seconds)
        return bool(stopped)

    if namespace:
        await _monitor.run(namespace, name, logger, pause)


@kopf.on.startup()
async def start_resync(**_: Any) -> None:
    executor = concurrent.futures.ThreadPoolExecutor(
        max_workers=2, thread_name_prefix="modelcycle-resync"
    )
    _ResyncSlot.executor = executor
    _ResyncSlot.task = asyncio.get_running_loop().create_task(
        RESYNC.run(_reconcile.views().modelcycles, _resync_call, executor),
        name="modelcycle-resync",
    )

    async def settle_later() -> None:
        await asyncio.sleep(SETTLE_SECONDS)
        settle(_resync_logger)

    _ResyncSlot.settle = asyncio.get_running_loop().create_task(
        settle_later(), name="modelcycle-settle"
    )


@kopf.on.cleanup()
async def stop_resync(**_: Any) -> None:
    task, _ResyncSlot.task = _ResyncSlot.task, None
    settling, _ResyncSlot.settle = _ResyncSlot.settle, None
    executor, _ResyncSlot.executor = _ResyncSlot.executor, None
    for running in (task, settling):
        if running is not None:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
    if executor is not None:
        executor.shutdown(wait=False, cancel_futures=True)
