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

Indexes (``@kopf.index``): the ModelCycles and their labelled children (Jobs, Pods,
Deployments, Services, PVCs), each keyed by (namespace, ModelCycle name), fed by the same
watches. The reconcile reads them instead of GETting (see :class:`reconcile.Views`), so a
reconcile that changes nothing makes no request. kopf runs no handler before every indexed
resource has been listed; the first handler run tells the reconcile the indexes are filled.

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
#: small with thousands of objects (and, read from the indexes, makes no request).
IDLE_RESYNC_SECONDS = SETTINGS.idle_resync
_reconcile.configure(SETTINGS)

_MANAGED: dict[str, Any] = {
    naming.LABEL_MANAGED_BY: naming.OPERATOR_NAME,
    naming.LABEL_NAME: kopf.PRESENT,
}
_MANAGED_SELECTOR = f"{naming.LABEL_MANAGED_BY}={naming.OPERATOR_NAME},{naming.LABEL_NAME}"
#: The children the operator watches (label-selected server-side) and indexes.
_CHILDREN = (
    ("batch/v1", "jobs"),
    ("apps/v1", "deployments"),
    ("v1", "pods"),
    ("v1", "persistentvolumeclaims"),
    ("v1", "services"),
)


_child_logger = logging.getLogger("modelcycle_operator.children")
_DIFFBASE = f"{SETTINGS.prefix}/last-handled-configuration"


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
    """Every resource handler: kopf runs none before all indexes are listed."""
    _reconcile.views().set_ready()
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
    executor: concurrent.futures.ThreadPoolExecutor | None = None


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: kopf.Logger, **kwargs: Any) -> None:
    # kopf hands every handler its indexes by name (empty until the watches list).
    _reconcile.views().use({n: kwargs[n] for n in _reconcile.INDEX_NAMES if n in kwargs})
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


def _slim(body: kopf.Body, *, keep_spec: bool = True) -> dict[str, Any]:
    """The body without what no summary reads: managedFields, kopf's own copy of the
    last handled spec, and (``keep_spec=False``) the spec. Each index holds one per
    object, so this is most of the operator's memory at a thousand ModelCycles."""
    raw = {k: v for k, v in body.items() if keep_spec or k != "spec"}
    meta = dict(raw.get("metadata") or {})
    meta.pop("managedFields", None)
    annotations = meta.get("annotations")
    if isinstance(annotations, Mapping) and _DIFFBASE in annotations:
        meta["annotations"] = {k: v for k, v in annotations.items() if k != _DIFFBASE}
    raw["metadata"] = meta
    return raw


def _child_key(namespace: str | None, labels: kopf.Labels) -> tuple[str, str]:
    return (namespace or "", str(labels.get(naming.LABEL_NAME) or ""))


@kopf.index(naming.GROUP, naming.VERSION, naming.PLURAL, when=_served)
def modelcycle_index(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace or "", name): _slim(body)}


@kopf.index("batch", "v1", "jobs", labels=_MANAGED, when=_served)
def job_index(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    return {_child_key(namespace, labels): _slim(body)}


@kopf.index("v1", "pods", labels=_MANAGED, when=_served)
def pod_index(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    return {_child_key(namespace, labels): _slim(body, keep_spec=False)}


@kopf.index("apps", "v1", "deployments", labels=_MANAGED, when=_served)
def deployment_index(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    return {_child_key(namespace, labels): _slim(body)}


@kopf.index("v1", "services", labels=_MANAGED, when=_served)
def service_index(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    return {_child_key(namespace, labels): _slim(body, keep_spec=False)}


@kopf.index("v1", "persistentvolumeclaims", labels=_MANAGED, when=_served)
def pvc_index(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    return {_child_key(namespace, labels): _slim(body, keep_spec=False)}


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


@kopf.on.cleanup()
async def stop_resync(**_: Any) -> None:
    task, _ResyncSlot.task = _ResyncSlot.task, None
    executor, _ResyncSlot.executor = _ResyncSlot.executor, None
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if executor is not None:
        executor.shutdown(wait=False, cancel_futures=True)
