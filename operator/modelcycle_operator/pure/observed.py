"""A summary of the children the reconcile observed, reduced to what the decision needs.

:func:`summarize_job`, :func:`summarize_deployment` and friends turn raw API objects
(dicts as the API server returns them) into frozen dataclasses; the decision never looks
at raw objects. Termination messages are parsed here: the workload writes a compact JSON
object (``{"error": "..."}`` on failure); with ``FallbackToLogsOnError`` a crash without
one leaves the tail of the log instead, kept as text.

A training or evaluation Job counts as complete as soon as its newest pod has Succeeded
with every container terminated with exit code 0: the Job controller adds its Complete
condition about a second later, and nothing the decision needs arrives with it. A Failed
(or FailureTarget) condition still wins over that, as it does over Complete.

Limits: pure. A summary says what was seen at one moment; it is never cached.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any

from modelcycle_operator.pure import naming

__all__ = [
    "ContainerResult",
    "DeploymentSummary",
    "JobSummary",
    "Observed",
    "PodSummary",
    "PvcSummary",
    "ServiceSummary",
    "parse_message",
    "summarize_deployment",
    "summarize_job",
    "summarize_pod",
    "summarize_pvc",
    "summarize_service",
]

#: Waiting reasons that mean a container cannot start without someone fixing something.
STUCK_WAITING_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)


@dataclasses.dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str = ""
    message: str = ""


def _conditions(obj: Mapping[str, Any]) -> tuple[Condition, ...]:
    out = []
    for c in (obj.get("status") or {}).get("conditions") or ():
        out.append(
            Condition(
                type=str(c.get("type") or ""),
                status=str(c.get("status") or ""),
                reason=str(c.get("reason") or ""),
                message=str(c.get("message") or ""),
            )
        )
    return tuple(out)


def _controller_uid(meta: Mapping[str, Any]) -> str:
    for ref in meta.get("ownerReferences") or ():
        if ref.get("controller"):
            return str(ref.get("uid") or "")
    return ""


def _find(conditions: Iterable[Condition], type_: str) -> Condition | None:
    for c in conditions:
        if c.type == type_:
            return c
    return None


def parse_message(message: str) -> dict[str, Any] | None:
    """The JSON object of a termination message, or None when it is not one."""
    text = (message or "").strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@dataclasses.dataclass(frozen=True)
class ContainerResult:
    name: str
    state: str  # waiting | running | terminated | unknown
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    restart_count: int = 0
    image: str = ""
    last_exit_code: int | None = None
    last_message: str = ""
    signal: int | None = None
    last_reason: str = ""
    last_signal: int | None = None

    @property
    def succeeded(self) -> bool:
        return self.state == "terminated" and self.exit_code == 0

    @property
    def failed(self) -> bool:
        return self.state == "terminated" and self.exit_code not in (None, 0)

    @property
    def data(self) -> dict[str, Any] | None:
        return parse_message(self.message)

    def explain(self) -> str:
        """A one-line account of a failure: the workload's error, else exit code and reason."""
        if self.state == "terminated":
            return _explain_termination(self.message, self.exit_code, self.reason, self.signal)
        last = ""
        if self.last_exit_code is not None or self.last_message:
            last = _explain_termination(
                self.last_message, self.last_exit_code, self.last_reason, self.last_signal
            )
        if self.state == "waiting" and self.reason:
            head = self.reason if not self.message else f"{self.reason} ({self.message})"
            return f"{head}: {last}" if last else head
        if last:
            return f"restarted {self.restart_count} times, last: {last}"
        return self.state


#: Signals a container's exit code (128 + n) or its ``signal`` field commonly names.
_SIGNALS = {1: "SIGHUP", 2: "SIGINT", 6: "SIGABRT", 9: "SIGKILL", 11: "SIGSEGV", 15: "SIGTERM"}


def _killed(exit_code: int | None, reason: str, signal: int | None) -> str:
    """Plain words for a container that a signal ended ("" when none did)."""
    if reason == "OOMKilled":
        code = f", exit code {exit_code}" if exit_code is not None else ""
        return f"killed (SIGKILL{code}): out of memory (OOMKilled)"
    number = signal
    if number is None and isinstance(exit_code, int) and 128 < exit_code < 160:
        number = exit_code - 128
    if number is None:
        return ""
    code = f", exit code {exit_code}" if exit_code is not None else ""
    if number == 9:
        return (
            f"killed (SIGKILL{code}): out of memory, deleted, or stopped past its grace "
            "period or deadline"
        )
    if number == 15:
        return f"terminated (SIGTERM{code}): asked to stop, e.g. deleted or past its deadline"
    name = _SIGNALS.get(number, f"signal {number}")
    return f"killed by {name}{code}"


def _explain_termination(
    message: str, exit_code: int | None, reason: str, signal: int | None = None
) -> str:
    data = parse_message(message)
    if data and data.get("error"):
        return str(data["error"]).strip()
    killed = _killed(exit_code, reason, signal)
    text = message.strip()
    if text and not data:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        tail = lines[-1] if lines else text
        if killed:
            return f"{tail} ({killed})"
        return f"{tail} (exit code {exit_code})" if exit_code is not None else tail
    if killed:
        return killed
    suffix = f" ({reason})" if reason else ""
    return f"exited with code {exit_code}{suffix}"


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _container_result(status: Mapping[str, Any]) -> ContainerResult:
    state = status.get("state") or {}
    last = (status.get("lastState") or {}).get("terminated") or {}
    common: dict[str, Any] = {
        "name": str(status.get("name") or ""),
        "restart_count": int(status.get("restartCount") or 0),
        "image": str(status.get("image") or ""),
        "last_exit_code": last.get("exitCode"),
        "last_message": str(last.get("message") or ""),
        "last_reason": str(last.get("reason") or ""),
        "last_signal": _int_or_none(last.get("signal")),
    }
    if "terminated" in state:
        t = state["terminated"] or {}
        return ContainerResult(
            state="terminated",
            exit_code=t.get("exitCode"),
            reason=str(t.get("reason") or ""),
            message=str(t.get("message") or ""),
            signal=_int_or_none(t.get("signal")),
            **common,
        )
    if "running" in state:
        return ContainerResult(state="running", **common)
    if "waiting" in state:
        w = state["waiting"] or {}
        return ContainerResult(
            state="waiting",
            reason=str(w.get("reason") or ""),
            message=str(w.get("message") or ""),
            **common,
        )
    return ContainerResult(state="unknown", **common)


@dataclasses.dataclass(frozen=True)
class PodSummary:
    name: str
    phase: str
    created: str
    init_containers: tuple[ContainerResult, ...] = ()
    containers: tuple[ContainerResult, ...] = ()
    unschedulable: str = ""
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    owner_uid: str = ""

    @property
    def all_succeeded(self) -> bool:
        """Succeeded, and every (init) container it reports terminated with exit code 0."""
        every = (*self.init_containers, *self.containers)
        return (
            self.phase == "Succeeded" and bool(self.containers) and all(c.succeeded for c in every)
        )

    def container(self, name: str) -> ContainerResult | None:
        for c in (*self.init_containers, *self.containers):
            if c.name == name:
                return c
        return None

    @property
    def stuck(self) -> ContainerResult | None:
        """A container that is crash-looping or cannot start, if any."""
        for c in (*self.init_containers, *self.containers):
            if c.state == "waiting" and c.reason in STUCK_WAITING_REASONS:
                return c
        return None


def summarize_pod(pod: Mapping[str, Any]) -> PodSummary:
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    unschedulable = ""
    for c in status.get("conditions") or ():
        if c.get("type") == "PodScheduled" and c.get("status") == "False":
            unschedulable = str(c.get("message") or c.get("reason") or "Unschedulable")
    return PodSummary(
        name=str(meta.get("name") or ""),
        phase=str(status.get("phase") or "Pending"),
        created=str(meta.get("creationTimestamp") or ""),
        init_containers=tuple(
            _container_result(s) for s in status.get("initContainerStatuses") or ()
        ),
        containers=tuple(_container_result(s) for s in status.get("containerStatuses") or ()),
        unschedulable=unschedulable,
        annotations={str(k): str(v) for k, v in (meta.get("annotations") or {}).items()},
        owner_uid=_controller_uid(meta),
    )


@dataclasses.dataclass(frozen=True)
class JobSummary:
    name: str
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    conditions: tuple[Condition, ...] = ()
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    images: Mapping[str, str] = dataclasses.field(default_factory=dict)
    pods: tuple[PodSummary, ...] = ()  # newest first
    owner_uid: str = ""
    uid: str = ""

    @property
    def has_complete_condition(self) -> bool:
        return any(
            c.type in ("Complete", "SuccessCriteriaMet") and c.status == "True"
            for c in self.conditions
        )

    @property
    def complete(self) -> bool:
        """Complete by its conditions, or its newest own pod has Succeeded (see module doc).

        A pod counts as the Job's own when it names no controller or names this Job's uid
        (a Job deleted and recreated under the same name leaves the old one's pods).
        """
        if self.has_complete_condition:
            return True
        if self.failure is not None:
            return False
        own = [p for p in self.pods if not p.owner_uid or not self.uid or p.owner_uid == self.uid]
        return bool(own) and own[0].all_succeeded

    @property
    def failure(self) -> Condition | None:
        """The Failed (or FailureTarget) condition when the Job has failed for good."""
        for type_ in ("Failed", "FailureTarget"):
            c = _find(self.conditions, type_)
            if c is not None and c.status == "True":
                return c
        return None

    @property
    def inputs_hash(self) -> str:
        return self.annotations.get(naming.ANNOTATION_INPUTS_HASH, "")

    def succeeded_container(self, name: str) -> ContainerResult | None:
        """The container ``name`` in the newest pod where it exited 0."""
        for pod in self.pods:
            c = pod.container(name)
            if c is not None and c.succeeded:
                return c
        return None

    def latest(self, name: str) -> ContainerResult | None:
        """The container ``name`` in the newest pod that reports it."""
        for pod in self.pods:
            c = pod.container(name)
            if c is not None:
                return c
        return None

    def failed_container(self, order: Iterable[str]) -> ContainerResult | None:
        """The first container (in ``order``) that failed, in the newest pod with a failure."""
        names = list(order)
        for pod in self.pods:
            for name in names:
                c = pod.container(name)
                if c is not None and c.failed:
                    return c
        return None

    @property
    def newest_pod(self) -> PodSummary | None:
        return self.pods[0] if self.pods else None


def summarize_job(job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]] = ()) -> JobSummary:
    meta = job.get("metadata") or {}
    status = job.get("status") or {}
    template = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    images = {
        str(c.get("name")): str(c.get("image") or "")
        for c in (*(template.get("initContainers") or ()), *(template.get("containers") or ()))
    }
    summaries = sorted(
        (summarize_pod(p) for p in pods), key=lambda p: (p.created, p.name), reverse=True
    )
    return JobSummary(
        name=str(meta.get("name") or ""),
        active=int(status.get("active") or 0),
        succeeded=int(status.get("succeeded") or 0),
        failed=int(status.get("failed") or 0),
        conditions=_conditions(job),
        annotations={str(k): str(v) for k, v in (meta.get("annotations") or {}).items()},
        images=images,
        pods=tuple(summaries),
        owner_uid=_controller_uid(meta),
        uid=str(meta.get("uid") or ""),
    )


@dataclasses.dataclass(frozen=True)
class DeploymentSummary:
    name: str
    generation: int = 0
    observed_generation: int = 0
    spec_replicas: int = 1
    replicas: int = 0
    updated_replicas: int = 0
    ready_replicas: int = 0
    available_replicas: int = 0
    conditions: tuple[Condition, ...] = ()
    model_version: str = ""
    applied_hash: str = ""
    pods: tuple[PodSummary, ...] = ()

    @property
    def observed_current(self) -> bool:
        return self.observed_generation >= self.generation

    @property
    def rolled_out(self) -> bool:
        """Available at its generation: every replica updated and available, no old ones."""
        n = self.spec_replicas
        return (
            self.observed_current
            and self.updated_replicas == n
            and self.available_replicas == n
            and self.replicas == n
        )

    @property
    def deadline_exceeded(self) -> Condition | None:
        c = _find(self.conditions, "Progressing")
        if (
            self.observed_current
            and c is not None
            and c.status == "False"
            and c.reason == "ProgressDeadlineExceeded"
        ):
            return c
        return None

    def stuck_pod(self, version: str) -> tuple[PodSummary, ContainerResult] | None:
        for pod in self.pods:
            if version and pod.annotations.get(naming.ANNOTATION_MODEL_VERSION) != version:
                continue
            stuck = pod.stuck
            if stuck is not None:
                return pod, stuck
        return None


def summarize_deployment(
    deployment: Mapping[str, Any], pods: Iterable[Mapping[str, Any]] = ()
) -> DeploymentSummary:
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    annotations = meta.get("annotations") or {}
    template_annotations = ((spec.get("template") or {}).get("metadata") or {}).get(
        "annotations"
    ) or {}
    replicas = spec.get("replicas")
    return DeploymentSummary(
        name=str(meta.get("name") or ""),
        generation=int(meta.get("generation") or 0),
        observed_generation=int(status.get("observedGeneration") or 0),
        spec_replicas=1 if replicas is None else int(replicas),
        replicas=int(status.get("replicas") or 0),
        updated_replicas=int(status.get("updatedReplicas") or 0),
        ready_replicas=int(status.get("readyReplicas") or 0),
        available_replicas=int(status.get("availableReplicas") or 0),
        conditions=_conditions(deployment),
        model_version=str(template_annotations.get(naming.ANNOTATION_MODEL_VERSION) or ""),
        applied_hash=str(annotations.get(naming.ANNOTATION_APPLIED_HASH) or ""),
        pods=tuple(
            sorted(
                (summarize_pod(p) for p in pods),
                key=lambda p: (p.created, p.name),
                reverse=True,
            )
        ),
    )


@dataclasses.dataclass(frozen=True)
class ServiceSummary:
    name: str
    applied_hash: str = ""


def summarize_service(service: Mapping[str, Any]) -> ServiceSummary:
    meta = service.get("metadata") or {}
    return ServiceSummary(
        name=str(meta.get("name") or ""),
        applied_hash=str((meta.get("annotations") or {}).get(naming.ANNOTATION_APPLIED_HASH) or ""),
    )


@dataclasses.dataclass(frozen=True)
class PvcSummary:
    name: str
    phase: str = "Pending"


def summarize_pvc(pvc: Mapping[str, Any]) -> PvcSummary:
    return PvcSummary(
        name=str((pvc.get("metadata") or {}).get("name") or ""),
        phase=str((pvc.get("status") or {}).get("phase") or "Pending"),
    )


@dataclasses.dataclass(frozen=True)
class Observed:
    """What exists now. ``cycle`` is the cycle whose Jobs were looked up."""

    cycle: int = 0
    pvc: PvcSummary | None = None
    train_job: JobSummary | None = None
    eval_job: JobSummary | None = None
    deployment: DeploymentSummary | None = None
    service: ServiceSummary | None = None
