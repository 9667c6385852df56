"""One reconcile of one ModelCycle: read, observe, decide, write status, act.

:func:`reconcile` is what every kopf handler calls (create, update, resume, the retrain
annotation, child Job/Deployment/Pod events, the timer). It

1. GETs the ModelCycle fresh (never a handler's possibly stale body),
2. observes its children through :mod:`modelcycle_operator.api` and summarises them,
3. asks :func:`modelcycle_operator.pure.decide.decide` for actions and the new status,
4. writes the status first, as a merge patch on the status subresource guarded by the
   resourceVersion it read (a 409 means someone changed the object: start again),
5. then performs the actions: create-if-absent, server-side apply, Events.

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

import dataclasses
import datetime
import logging
import threading
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
    Observed,
    summarize_deployment,
    summarize_job,
    summarize_pvc,
    summarize_service,
)
from modelcycle_operator.pure.patch import merge_patch
from modelcycle_operator.settings import Settings, load_settings

__all__ = ["StatusChanging", "change_status", "configure", "current_settings", "reconcile"]

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
    for _attempt in range(_ATTEMPTS + 2):
        body = api.get_modelcycle(namespace, name)
        if body is None:
            return None
        meta = body.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            return None
        change = compute(body, clock())
        patch = merge_patch(body.get("status") or {}, change.status)
        if patch:
            try:
                written = api.patch_modelcycle_status(
                    namespace, name, patch, str(meta.get("resourceVersion") or "") or None
                )
            except api.ApiError as exc:
                if exc.conflict:
                    continue
                raise
            if written is None:
                return None
        for event in change.events:
            level = logging.WARNING if event.type == "Warning" else logging.INFO
            log.log(level, f"{event.reason}: {event.message}")
            _safe_event(body, event.type, event.reason, event.message, log)
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


def _reconcile_locked(
    namespace: str,
    name: str,
    log: Logger,
    settings: Settings,
    now: Callable[[], datetime.datetime] | None,
) -> None:
    clock = now or (lambda: datetime.datetime.now(datetime.UTC))
    for _attempt in range(_ATTEMPTS):
        try:
            if _reconcile_once(namespace, name, log, settings, clock):
                return
        except api.ApiError as exc:
            log.warning(f"Reconcile of {namespace}/{name} failed, retrying later: {exc}")
            return
        except Exception as exc:  # a bug must not crash the operator: report it in status
            log.exception(f"Reconcile of {namespace}/{name} failed unexpectedly")
            _report_crash(namespace, name, log, exc, clock())
            return
    log.info(f"ModelCycle {namespace}/{name} kept changing; the next event reconciles it")


def observe(body: Mapping[str, Any]) -> Observed:
    """Read the children of ``body`` for its current cycle."""
    meta = body.get("metadata") or {}
    namespace, name = str(meta["namespace"]), str(meta["name"])
    status = body.get("status") or {}
    try:
        cycle = int(status.get("cycle") or 0)
    except (TypeError, ValueError):
        cycle = 0
    spec = body.get("spec") or {}
    artifacts = spec.get("artifacts") if isinstance(spec, Mapping) else None
    claim = ""
    if isinstance(artifacts, Mapping):
        claim = str(artifacts.get("existingClaim") or "")
    claim = claim or naming.pvc_name(name)

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
        if status.get("step") == "RollingOut":
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
) -> bool:
    """One read-decide-write-act pass; False when the status write lost a race."""
    body = api.get_modelcycle(namespace, name)
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
            written = api.patch_modelcycle_status(
                namespace, name, patch, str(meta.get("resourceVersion") or "") or None
            )
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


def _perform(body: Mapping[str, Any], decision: Decision, log: Logger) -> None:
    """Carry out the actions; one failing does not stop the others."""
    for action in decision.actions:
        try:
            _perform_one(body, action, log)
        except api.ApiError as exc:
            what = _describe(action)
            if exc.status == 403 and "being terminated" in exc.message:
                log.debug(f"Skipped: {what}: the namespace is being deleted")
                continue
            log.error(f"Failed to {what}: {exc}")
            if not isinstance(action, EmitEvent) and exc.status not in (0, 429, 500, 503):
                _safe_event(body, "Warning", "FailedApply", f"Failed to {what}: {exc.message}", log)


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
        if api.create_pvc(action.manifest):
            log.info(f"Created PersistentVolumeClaim {name}")
            _safe_event(body, "Normal", "Created", f"Created PersistentVolumeClaim {name}", log)
    elif isinstance(action, CreateJob):
        name = action.manifest["metadata"]["name"]
        if api.create_job(action.manifest):
            log.info(f"Created Job {name}")
            _safe_event(body, "Normal", "Created", f"Created Job {name}", log)
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
        api.post_event(body, action.type, action.reason, action.message)


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
