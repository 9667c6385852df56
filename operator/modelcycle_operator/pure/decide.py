"""The heart of the operator: from (ModelCycle, observed children, now) to (actions, status).

:func:`decide` is one level-triggered step of the cycle

    collect -> train -> evaluate -> gate -> roll out -> serve

It reads the object's status to know which cycle and step it is in, looks at what the
children report, and returns the actions that move the cycle on plus the complete new
status. The reconcile performs the actions and writes the status; nothing else decides.

Rules it keeps:

- A cycle starts on create (trigger ``Created``), on a new generation whose training
  inputs changed (``SpecChanged``: data, training, evaluation, or the image; a change of
  only serving/monitoring/suspend settings does not retrain), on a new value of the
  annotation ``modelcycle.dev/retrain`` (``Manual``), and on a pending trigger that the
  alert receiver, the built-in monitor or the schedule wrote into
  ``status.triggers.pending`` (``Alert``, ``Monitor``, ``Schedule``; see
  :mod:`modelcycle_operator.pure.triggers`). A trigger that arrives while a cycle runs
  waits for it to finish; a pending one also waits for the cooldown
  (``spec.monitoring.cooldownSeconds`` after the last cycle start). Starting a cycle,
  whatever its trigger, consumes the pending trigger: that cycle already retrains on
  everything collected so far. ``spec.suspend`` starts nothing new and drops a pending
  trigger (recorded in ``status.triggers.lastSkipped``).
- A failed cycle stays failed (``Stalled=True`` with the container's own message) until
  a new trigger: the operator never re-creates a failed Job.
- Create actions are emitted only for children that were not observed, apply actions only
  when the observed ``applied-hash`` differs: the same inputs give the same actions, and
  feeding the result back gives none. Events are emitted on transitions only.
- A restored step (after an invalid spec is fixed, or on unsuspend) walks forward through
  whatever the children already finished, so nothing is lost and nothing is redone.

- While a champion serves, ``Degraded`` belongs to the built-in monitor
  (:mod:`modelcycle_operator.pure.health`); a new champion, or the monitor being switched
  off, makes a monitor verdict ``Unknown`` again until the monitor looks.

Limits: pure; ``now`` is an argument. Whether an alert, the monitor or the schedule may
request a cycle is decided where they are received (:mod:`modelcycle_operator.pure.intake`);
here only the pending request is taken.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from modelcycle_operator.pure import builders, health, naming
from modelcycle_operator.pure import conditions as cond
from modelcycle_operator.pure import triggers as triggers_mod
from modelcycle_operator.pure.gate import evaluate_gate, score_of
from modelcycle_operator.pure.observed import ContainerResult, JobSummary, Observed
from modelcycle_operator.pure.spec import ModelCycle, SpecError
from modelcycle_operator.settings import Settings

__all__ = [
    "Action",
    "ApplyDeployment",
    "ApplyService",
    "CreateJob",
    "CreatePvc",
    "Decision",
    "EmitEvent",
    "decide",
]

HISTORY_LIMIT = 20
#: After serving.progressDeadlineSeconds the Deployment controller reports
#: ProgressDeadlineExceeded; this much later the operator stops waiting for that report.
ROLLOUT_GRACE_SECONDS = 60

PROMOTED, REJECTED, FAILED, ROLLED_BACK = "Promoted", "Rejected", "Failed", "RolledBack"


@dataclasses.dataclass(frozen=True)
class CreatePvc:
    manifest: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class CreateJob:
    manifest: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class ApplyDeployment:
    manifest: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class ApplyService:
    manifest: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class EmitEvent:
    type: str  # Normal | Warning
    reason: str
    message: str


Action = CreatePvc | CreateJob | ApplyDeployment | ApplyService | EmitEvent


@dataclasses.dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...]
    status: dict[str, Any]


def decide(
    body: Mapping[str, Any],
    observed: Observed,
    now: datetime.datetime,
    settings: Settings,
) -> Decision:
    """The actions and the new status for one reconcile of ``body``."""
    return _Decider(body, observed, now, settings).run()


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        return default


def _name(manifest: Mapping[str, Any]) -> str:
    return str(manifest["metadata"]["name"])


def _applied_hash(manifest: Mapping[str, Any]) -> str:
    return str(manifest["metadata"]["annotations"][naming.ANNOTATION_APPLIED_HASH])


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def parse_metrics(info: Mapping[str, Any]) -> dict[str, float]:
    """The numeric ``metrics`` of a termination message (train or evaluate); {} if none."""
    raw = info.get("metrics")
    if not isinstance(raw, Mapping):
        return {}
    return {
        str(k): float(v)
        for k, v in raw.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _has_collect_container(job: JobSummary) -> bool:
    """A Job of an older operator: initContainer ``collect``, then container ``train``."""
    return "collect" in job.images or any(p.container("collect") is not None for p in job.pods)


def _collected(job: JobSummary) -> Mapping[str, Any] | None:
    """What the data collection reported, or None while nothing has.

    An older operator's Job: the message of the ``collect`` initContainer that exited 0.
    This operator's: ``collected`` in the ``train`` container's message (newest pod
    first), there on success, on a failure after collecting, and in the message a
    container killed after collecting leaves.
    """
    legacy = job.succeeded_container("collect")
    if legacy is not None:
        return legacy.data or {}
    for pod in job.pods:
        train = pod.container("train")
        data = train.data if train is not None else None
        reported = data.get("collected") if data is not None else None
        if isinstance(reported, Mapping):
            return reported
    return None


def _failed_stage(
    failed: ContainerResult | None, collected: Mapping[str, Any] | None, two_containers: bool
) -> str:
    """``collect`` or ``train``: which step a failed training Job failed in.

    The failed container's name says it in an older operator's Job. Here the ``train``
    container's message says it: its ``stage``, or ``collected`` (killed after
    collecting); a JSON message without either is an error reported before collecting
    (a usage error) and counts as training; no JSON message at all means the process
    ended before it had collected (it writes ``collected`` as soon as it has).
    """
    if failed is None:
        return "train" if collected is not None else "collect"
    if failed.name == "collect":
        return "collect"
    if two_containers:
        return "train"
    data = failed.data
    if data is None:
        return "collect"
    stage = data.get("stage")
    if stage in ("collect", "train"):
        return str(stage)
    return "train"


class _Decider:
    """One decision. Mutable only while it runs; the result is a fresh Decision."""

    def __init__(
        self,
        body: Mapping[str, Any],
        observed: Observed,
        now: datetime.datetime,
        settings: Settings,
    ) -> None:
        self.body = body
        self.meta: Mapping[str, Any] = body.get("metadata") or {}
        self.obs = observed
        self.now = now
        self.ts = cond.rfc3339(now)
        self.settings = settings
        self.generation = _int(self.meta.get("generation"), 1) or 1
        old = body.get("status")
        self.status: dict[str, Any] = copy.deepcopy(dict(old)) if isinstance(old, Mapping) else {}
        self.conds = cond.ensure_conditions(self.status.get("conditions"), self.generation, now)
        self.actions: list[Action] = []
        self.detail = ""
        self.failure: tuple[str, str] | None = None
        self.cycle = max(_int(self.status.get("cycle")), 0)
        self.step = str(self.status.get("step") or "Pending")
        self.mc: ModelCycle

    # --- entry --------------------------------------------------------------------------

    def run(self) -> Decision:
        if self.meta.get("deletionTimestamp"):
            return Decision((), copy.deepcopy(self.status))
        try:
            self.mc = ModelCycle.from_body(self.body)
        except SpecError as exc:
            return self.invalid(str(exc))

        stalled = cond.get_condition(self.conds, cond.STALLED) or {}
        if self.step == "Failed" and stalled.get("reason") == "InvalidSpec":
            self.step = self.resting_step()
        if self.step == "Suspended" and not self.mc.spec.suspend:
            self.step = self.resting_step()

        self.ensure_pvc()
        if self.in_progress:
            self.advance()
        if not self.in_progress:
            self.consider_triggers()
        if not self.in_progress:
            self.keep_serving()
        self.degraded_owner()
        return self.finish()

    # --- helpers ------------------------------------------------------------------------

    @property
    def in_progress(self) -> bool:
        return self.cycle > 0 and self.step in cond.ACTIVE_STEPS

    def event(self, type_: str, reason: str, message: str) -> None:
        self.actions.append(EmitEvent(type_, reason, message))

    def set(self, type_: str, status: str, reason: str, message: str) -> None:
        self.conds = cond.set_condition(
            self.conds, type_, status, reason, message, self.generation, self.now
        )

    def is_true(self, type_: str) -> bool:
        return cond.is_true(self.conds, type_)

    @property
    def challenger(self) -> dict[str, Any]:
        ch = self.status.get("challenger")
        if not isinstance(ch, dict) or _int(ch.get("cycle")) != self.cycle:
            ch = {"cycle": self.cycle}
            self.status["challenger"] = ch
        return ch

    @property
    def champion(self) -> dict[str, Any] | None:
        ch = self.status.get("champion")
        return ch if isinstance(ch, dict) and ch.get("version") else None

    def job(self, which: str) -> JobSummary | None:
        if self.obs.cycle != self.cycle:
            return None
        job = self.obs.train_job if which == "train" else self.obs.eval_job
        return job

    def foreign(self, job: JobSummary) -> bool:
        return bool(job.owner_uid) and bool(self.mc.uid) and job.owner_uid != self.mc.uid

    def resting_step(self) -> str:
        """The step to show when a non-cycle state (Suspended, InvalidSpec) ends."""
        history = self.status.get("history") or []
        last = history[-1] if history and isinstance(history[-1], Mapping) else None
        if self.cycle == 0 or last is None or _int(last.get("cycle")) != self.cycle:
            return "Pending"  # the cycle had not finished: walk forward from its start
        verdict = last.get("verdict")
        if verdict == PROMOTED:
            return "Serving"
        if verdict == REJECTED:
            return "Rejected"
        reason = str(last.get("reason") or "CycleFailed")
        self.failure = (
            reason,
            f"Cycle {self.cycle} ended with {reason}; a new trigger starts the next cycle",
        )
        return "Failed"

    # --- children -----------------------------------------------------------------------

    def ensure_pvc(self) -> None:
        if self.mc.spec.artifacts.existing_claim or self.obs.pvc is not None:
            return
        self.actions.append(CreatePvc(builders.artifacts_pvc(self.mc, self.settings)))

    def create_job(self, manifest: dict[str, Any]) -> None:
        self.actions.append(CreateJob(manifest))

    def apply_deployment(self, manifest: dict[str, Any]) -> bool:
        """Queue an apply unless the observed Deployment (or a queued apply) already has it."""
        digest = _applied_hash(manifest)
        observed = self.obs.deployment
        if observed is not None and observed.applied_hash == digest:
            return False
        for action in self.actions:
            if isinstance(action, ApplyDeployment) and _applied_hash(action.manifest) == digest:
                return False
        self.actions = [a for a in self.actions if not isinstance(a, ApplyDeployment)]
        self.actions.append(ApplyDeployment(manifest))
        return True

    def apply_service(self) -> None:
        manifest = builders.serving_service(self.mc, self.settings)
        observed = self.obs.service
        if observed is not None and observed.applied_hash == _applied_hash(manifest):
            return
        if any(isinstance(a, ApplyService) for a in self.actions):
            return
        self.actions.append(ApplyService(manifest))

    def model_image(self) -> str:
        """The image that trained the current cycle's model (serving loads it with it)."""
        job = self.job("train")
        if job is not None and job.images.get("train"):
            return job.images["train"]
        return builders.training_image(self.mc, self.settings)

    def challenger_record(self) -> dict[str, Any]:
        ch = self.challenger
        return {"cycle": self.cycle, "version": ch.get("version"), "image": self.model_image()}

    # --- the cycle ----------------------------------------------------------------------

    def advance(self) -> None:
        if self.step in ("Pending", "Collecting", "Training") and not self.advance_training():
            return
        if self.step in ("Evaluating", "Gating") and not self.advance_evaluation():
            return
        if self.step == "RollingOut":
            self.advance_rollout()

    def advance_training(self) -> bool:
        """Collect + train. True when the model is trained and evaluation may start.

        The training Job has one container ``train`` that collects, then fits
        (``train --data``): its message reports the collection under ``collected`` and a
        failure its ``stage``. A Job of an older operator (initContainer ``collect``, then
        ``train``), still running across an upgrade, is read as before.
        """
        spec = self.mc.spec
        name = naming.train_job_name(self.mc.name, self.cycle)
        job = self.job("train")
        if job is None:
            self.create_job(builders.train_job(self.mc, self.cycle, self.settings))
            self.step = "Pending"
            # What the next reconcile sees once the Job is there: no second status write.
            self.detail = f"Cycle {self.cycle}: waiting for the pod of Job {name} to start"
            return False
        if self.foreign(job):
            self.step = "Pending"
            self.detail = f"Cycle {self.cycle}: waiting for a Job {name} of another owner to go"
            return False

        two_containers = _has_collect_container(job)
        collected = _collected(job)
        if collected is not None:
            self.record_collected(collected)

        failure = job.failure
        if failure is not None:
            failed = job.failed_container(("collect", "train"))
            which = _failed_stage(failed, collected, two_containers)
            why = failed.explain() if failed is not None else ""
            job_why = f"{failure.reason}: {failure.message}".strip(": ")
            if not why:
                why = job_why
            elif failure.reason == "DeadlineExceeded":
                why = f"{job_why} ({why})"
            if which == "collect":
                reason = "DataCollectionFailed"
                message = f"Data collection from {spec.data.describe()} failed: {why}"
                self.set(cond.DATA_COLLECTED, cond.FALSE, reason, message)
            else:
                if (
                    failed is not None
                    and not two_containers
                    and why.startswith("usage:")
                    and "--data" in why
                ):
                    why += (
                        f" (the image {job.images.get('train') or '?'} predates the "
                        "one-container training Job: its train takes no --data)"
                    )
                reason = "TrainingFailed"
                message = f"Training {spec.training.estimator} failed: {why}"
                self.set(cond.TRAINED, cond.FALSE, reason, message)
            self.fail_cycle(reason, f"Job {name}: {message}")
            return False

        if job.complete:
            train = job.succeeded_container("train")
            info = (train.data if train is not None else None) or {}
            version = info.get("version")
            if not isinstance(version, str) or not version:
                raw = (train.message if train is not None else "")[:300] or "none"
                message = (
                    f"Job {name} succeeded but the train container reported no model "
                    f"version (termination message: {raw})"
                )
                self.set(cond.TRAINED, cond.FALSE, "TrainingFailed", message)
                self.fail_cycle("TrainingFailed", message)
                return False
            reported = info.get("collected")
            if isinstance(reported, Mapping):
                self.record_collected(reported)  # this pod's collection (a retry's own)
            elif collected is None:
                self.record_collected({})
            ch = self.challenger
            ch["version"] = version
            ch["artifactPath"] = f"pvc://{self.mc.claim_name}/cycles/{self.cycle}/model"
            if not self.is_true(cond.TRAINED):
                fit = info.get("fitSeconds")
                took = f" in {_fmt(float(fit))} s" if isinstance(fit, int | float) else ""
                message = f"Trained {spec.training.estimator} as model version {version}{took}"
                self.set(cond.TRAINED, cond.TRUE, "Trained", message)
                self.event("Normal", "Trained", f"Cycle {self.cycle}: {message}")
            self.step = "Evaluating"
            return True

        # Still running.
        pod = job.newest_pod
        if not two_containers:
            # One process collects, then fits; nothing reports which until it ends, so the
            # step is Training from the start and the detail says both.
            running = pod.container("train") if pod is not None else None
            if running is not None and running.state in ("running", "terminated"):
                self.step = "Training"
                self.detail = (
                    f"Cycle {self.cycle}: collecting {spec.data.describe()}, then training "
                    f"{spec.training.estimator}, in one container (Job {name})"
                )
            else:
                self.step = "Pending"
                self.detail = f"Cycle {self.cycle}: waiting for the pod of Job {name} to start"
            self.explain_waiting(job)
            return False
        if job.succeeded_container("collect") is not None:
            self.step = "Training"
            self.detail = f"Cycle {self.cycle}: training {spec.training.estimator} (Job {name})"
            self.explain_waiting(job)
            return False
        running = pod.container("collect") if pod is not None else None
        if running is not None and running.state in ("running", "terminated"):
            self.step = "Collecting"
            self.detail = f"Cycle {self.cycle}: collecting {spec.data.describe()} (Job {name})"
        else:
            self.step = "Pending"
            self.detail = f"Cycle {self.cycle}: waiting for the pod of Job {name} to start"
        self.explain_waiting(job)
        return False

    def explain_waiting(self, job: JobSummary) -> None:
        """Add to the Reconciling message why a pod is not making progress, if it says."""
        pod = job.newest_pod
        if pod is None:
            return
        if pod.unschedulable:
            self.detail += f"; pod {pod.name} is unschedulable: {pod.unschedulable}"
            pvc = self.obs.pvc
            if pvc is not None and pvc.phase != "Bound":
                self.detail += f" (PersistentVolumeClaim {pvc.name} is {pvc.phase})"
            return
        stuck = pod.stuck
        if stuck is not None:
            self.detail += f"; container {stuck.name}: {stuck.explain()}"

    def record_collected(self, data: Mapping[str, Any]) -> None:
        data_hash = data.get("dataHash")
        if isinstance(data_hash, str) and data_hash:
            self.challenger["dataHash"] = data_hash
        if self.is_true(cond.DATA_COLLECTED):
            return
        rows, features, task = data.get("rows"), data.get("features"), data.get("task")
        parts = []
        if rows is not None:
            parts.append(f"{rows} rows")
        if features is not None:
            parts.append(f"{features} features")
        summary = ", ".join(parts) or "data"
        if task:
            summary += f" ({task})"
        message = f"Collected {summary} from {self.mc.spec.data.describe()}"
        if isinstance(data_hash, str) and data_hash:
            message += f"; data hash {data_hash}"
        self.set(cond.DATA_COLLECTED, cond.TRUE, "DataCollected", message)
        self.event("Normal", "DataCollected", f"Cycle {self.cycle}: {message}")

    def train_metrics(self) -> dict[str, float] | None:
        """The metrics the train container reported (``train --evaluation``), if any."""
        job = self.job("train")
        if job is None or self.foreign(job) or not job.complete:
            return None
        train = job.succeeded_container("train")
        metrics = parse_metrics((train.data if train is not None else None) or {})
        return metrics or None

    def advance_evaluation(self) -> bool:
        """Evaluate, then gate. True only when a rollout may be checked in this same pass.

        A train container that evaluated in its own process (its message carries
        ``metrics``) is judged at once; only a workload image on the older contract (train
        reports no metrics) gets the Job ``<name>-eval-<cycle>``.
        """
        metrics = self.train_metrics()
        if metrics is not None:
            return self.judge(metrics)
        name = naming.eval_job_name(self.mc.name, self.cycle)
        job = self.job("eval")
        if job is None:
            self.create_job(
                builders.eval_job(self.mc, self.cycle, self.settings, image=self.model_image())
            )
            self.step = "Evaluating"
            self.detail = f"Cycle {self.cycle}: starting Job {name}"
            return False
        if self.foreign(job):
            self.step = "Evaluating"
            self.detail = f"Cycle {self.cycle}: waiting for a Job {name} of another owner to go"
            return False
        failure = job.failure
        if failure is not None:
            failed = job.failed_container(("evaluate",))
            why = (
                failed.explain()
                if failed is not None
                else f"{failure.reason}: {failure.message}".strip(": ")
            )
            message = f"Evaluation of model version {self.challenger.get('version')} failed: {why}"
            self.set(cond.EVALUATED, cond.FALSE, "EvaluationFailed", message)
            self.fail_cycle("EvaluationFailed", f"Job {name}: {message}")
            return False
        if not job.complete:
            self.step = "Evaluating"
            version = self.challenger.get("version")
            self.detail = f"Cycle {self.cycle}: evaluating model version {version} (Job {name})"
            self.explain_waiting(job)
            return False

        result = job.succeeded_container("evaluate")
        metrics = parse_metrics((result.data if result is not None else None) or {})
        if not metrics:
            raw = (result.message if result is not None else "")[:300] or "none"
            message = f"Job {name} succeeded but reported no metrics (termination message: {raw})"
            self.set(cond.EVALUATED, cond.FALSE, "EvaluationFailed", message)
            self.fail_cycle("EvaluationFailed", message)
            return False
        return self.judge(metrics)

    def judge(self, metrics: dict[str, float]) -> bool:
        """Record the challenger's metrics (Evaluated), gate, and start the rollout.

        The one place a cycle's evaluation is recorded, whether the train container or an
        evaluation Job reported it. True only when a rollout may be checked in this pass.
        """
        evaluation = self.mc.spec.evaluation
        ch = self.challenger
        ch["metrics"] = metrics
        ch["metric"] = evaluation.metric
        score = score_of(metrics, evaluation.metric)
        if score is not None:
            ch["score"] = score
        if not self.is_true(cond.EVALUATED):
            listed = ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(metrics.items()))
            message = f"Model version {ch.get('version')} scored {listed} on the held-out split"
            self.set(cond.EVALUATED, cond.TRUE, "Evaluated", message)
            self.event("Normal", "Evaluated", f"Cycle {self.cycle}: {message}")

        self.step = "Gating"
        champion = self.champion
        verdict = evaluate_gate(
            metric=evaluation.metric,
            threshold=evaluation.threshold,
            metrics=metrics,
            champion_metrics=(champion or {}).get("metrics") if champion else None,
            compare_with_champion=evaluation.compare_with_champion,
            min_improvement=evaluation.min_improvement,
        )
        first = cond.get_condition(self.conds, cond.GATED) or {}
        already = first.get("status") == (cond.TRUE if verdict.passed else cond.FALSE)
        self.set(
            cond.GATED,
            cond.TRUE if verdict.passed else cond.FALSE,
            verdict.reason,
            verdict.message,
        )
        ch["reason"] = verdict.reason
        if not verdict.passed:
            ch["verdict"] = REJECTED
            self.finish_cycle(REJECTED, verdict.reason)
            self.step = "Rejected"
            self.set(cond.ROLLED_OUT, cond.FALSE, "Rejected", "The challenger was not rolled out")
            if not already:
                self.event(
                    "Normal",
                    "Rejected",
                    f"Cycle {self.cycle}: model version {ch.get('version')} rejected: "
                    f"{verdict.message}",
                )
            return False
        if not self.mc.spec.serving.enabled:
            self.promote()
            return False
        self.step = "RollingOut"
        version = ch.get("version")
        deployment = builders.serving_deployment(self.mc, self.challenger_record(), self.settings)
        self.apply_deployment(deployment)
        self.apply_service()
        message = f"Rolling out model version {version} to Deployment {_name(deployment)}"
        self.set(cond.ROLLED_OUT, cond.UNKNOWN, "Progressing", message)
        self.detail = f"Cycle {self.cycle}: {message[0].lower()}{message[1:]}"
        if not already:
            self.event(
                "Normal", "RolloutStarted", f"Cycle {self.cycle}: {message} ({verdict.message})"
            )
        return False

    def advance_rollout(self) -> None:
        ch = self.challenger
        version = str(ch.get("version") or "")
        if not version:
            # The status lost the challenger: walk the cycle again from its start.
            self.step = "Pending"
            self.advance()
            return
        desired = builders.serving_deployment(self.mc, self.challenger_record(), self.settings)
        name = _name(desired)
        dep = self.obs.deployment
        if dep is None or dep.applied_hash != _applied_hash(desired):
            self.apply_deployment(desired)
            self.apply_service()
            self.detail = f"Cycle {self.cycle}: rolling out model version {version} to {name}"
            return
        self.apply_service()
        n = dep.spec_replicas
        if dep.rolled_out and dep.model_version == version:
            self.promote(f"Model version {version} is available on {n}/{n} replicas of {name}")
            return

        deadline = self.mc.spec.serving.progress_deadline_seconds
        gated = cond.get_condition(self.conds, cond.GATED) or {}
        started = cond.parse_time(gated.get("lastTransitionTime")) or self.now
        elapsed = (self.now - started).total_seconds()
        stuck = dep.stuck_pod(version)
        stuck_text = (
            f"pod {stuck[0].name} container {stuck[1].name}: {stuck[1].explain()}" if stuck else ""
        )
        why = ""
        exceeded = dep.deadline_exceeded
        if exceeded is not None:
            why = f"Deployment {name} exceeded its progress deadline of {deadline} s"
            if exceeded.message:
                why += f" ({exceeded.message})"
        elif elapsed > deadline and stuck:
            why = f"model version {version} did not become ready within {deadline} s"
        elif elapsed > deadline + ROLLOUT_GRACE_SECONDS:
            why = (
                f"model version {version} did not become available within {deadline} s "
                f"({dep.available_replicas}/{n} replicas available)"
            )
        if why:
            if stuck_text:
                why += f"; {stuck_text}"
            self.rollout_failed(why)
            return
        self.detail = (
            f"Cycle {self.cycle}: rolling out model version {version} to {name} "
            f"({dep.updated_replicas}/{n} updated, {dep.available_replicas}/{n} available)"
        )
        if stuck_text:
            self.detail += f"; {stuck_text}"

    def promote(self, rolled_out_message: str = "") -> None:
        ch = self.challenger
        champion: dict[str, Any] = {
            "cycle": self.cycle,
            "version": ch.get("version"),
            "artifactPath": ch.get("artifactPath"),
            "dataHash": ch.get("dataHash"),
            "metric": ch.get("metric"),
            "score": ch.get("score"),
            "metrics": dict(ch.get("metrics") or {}),
            "image": self.model_image(),
        }
        self.status["champion"] = {k: v for k, v in champion.items() if v is not None}
        ch["verdict"] = PROMOTED
        if self.mc.spec.serving.enabled:
            self.set(cond.ROLLED_OUT, cond.TRUE, "RolledOut", rolled_out_message or "Rolled out")
        else:
            self.set(
                cond.ROLLED_OUT,
                cond.FALSE,
                "ServingDisabled",
                "spec.serving.enabled is false: the model is promoted without a Deployment",
            )
        self.finish_cycle(PROMOTED, str(ch.get("reason") or "ThresholdMet"))
        self.reset_degraded(ch.get("version"))
        self.step = "Serving"
        score = ch.get("score")
        scored = f" ({ch.get('metric')} {_fmt(score)})" if isinstance(score, float) else ""
        self.event(
            "Normal",
            "Promoted",
            f"Cycle {self.cycle}: model version {ch.get('version')} is the champion{scored}",
        )

    def rollout_failed(self, why: str) -> None:
        ch = self.challenger
        serving = self.mc.spec.serving
        champion = self.champion
        if serving.rollback_on_failure:
            verdict = ROLLED_BACK
            if champion is not None:
                self.apply_deployment(builders.serving_deployment(self.mc, champion, self.settings))
                why += f"; restored the champion, model version {champion['version']}"
            else:
                self.apply_deployment(
                    builders.serving_deployment(
                        self.mc, self.challenger_record(), self.settings, replicas=0
                    )
                )
                why += "; no champion to restore, scaled the serving Deployment to 0"
        else:
            verdict = FAILED
            why += "; rollbackOnFailure is false, the Deployment is left as it is"
        message = f"Rollout of {naming.serving_name(self.mc.name)} failed: {why}"
        self.set(cond.ROLLED_OUT, cond.FALSE, "RolloutFailed", message)
        ch["verdict"] = verdict
        ch["reason"] = "RolloutFailed"
        self.finish_cycle(verdict, "RolloutFailed")
        self.step = "Failed"
        self.failure = ("RolloutFailed", message)
        self.event("Warning", "RolloutFailed", f"Cycle {self.cycle}: {message}")

    def fail_cycle(self, reason: str, message: str) -> None:
        ch = self.challenger
        ch["verdict"] = FAILED
        ch["reason"] = reason
        self.finish_cycle(FAILED, reason)
        self.step = "Failed"
        self.failure = (reason, message)
        self.event("Warning", reason, f"Cycle {self.cycle}: {message}")

    def finish_cycle(self, verdict: str, reason: str) -> None:
        ch = self.challenger
        trigger = self.status.get("lastTrigger") or {}
        entry = {
            "cycle": self.cycle,
            "trigger": trigger.get("type"),
            "version": ch.get("version"),
            "verdict": verdict,
            "metric": ch.get("metric"),
            "score": ch.get("score"),
            "dataHash": ch.get("dataHash"),
            "reason": reason,
            "startedAt": trigger.get("time"),
            "finishedAt": self.ts,
        }
        history = [
            dict(h)
            for h in self.status.get("history") or []
            if isinstance(h, Mapping) and _int(h.get("cycle")) != self.cycle
        ]
        history.append({k: v for k, v in entry.items() if v is not None})
        self.status["history"] = history[-HISTORY_LIMIT:]

    # --- triggers -----------------------------------------------------------------------

    def consider_triggers(self) -> None:
        spec = self.mc.spec
        triggers = self.status.get("triggers")
        if not isinstance(triggers, dict):
            triggers = {}
            self.status["triggers"] = triggers
        pending = triggers_mod.pending_of(triggers)
        if spec.suspend:
            if self.step != "Suspended":
                self.event("Normal", "Suspended", "spec.suspend is true: no new cycle starts")
            self.step = "Suspended"
            self.detail = "spec.suspend is true: no new cycle starts; the champion keeps serving"
            if pending is not None:
                self.drop_pending(pending, "Suspended", "the ModelCycle is suspended")
            elif "pending" in triggers:
                del triggers["pending"]
            return
        annotation = self.mc.annotations.get(naming.ANNOTATION_RETRAIN, "")
        handled_retrain = str(triggers.get("handledRetrain") or "")
        handled_generation = _int(triggers.get("handledGeneration"))

        trigger: tuple[str, str] | None = None
        value = ""
        if self.cycle == 0:
            trigger = ("Created", "ModelCycle created")
        else:
            if self.generation > handled_generation:
                job = self.job("train")
                if job is not None and job.inputs_hash == builders.inputs_hash(
                    self.mc, self.settings
                ):
                    triggers["handledGeneration"] = self.generation
                else:
                    trigger = ("SpecChanged", f"spec changed (generation {self.generation})")
            if trigger is None and annotation and annotation != handled_retrain:
                trigger = ("Manual", f"annotation {naming.ANNOTATION_RETRAIN}={annotation}")
        if trigger is None and pending is not None:
            left = triggers_mod.cooldown_left(self.status, spec.cooldown_seconds, self.now)
            if left <= 0:
                trigger, value = (pending.type, pending.reason), pending.key
        elif trigger is None and "pending" in triggers:
            del triggers["pending"]  # malformed: nobody can take it
        if trigger is not None:
            self.start_cycle(*trigger, annotation=annotation, value=value)

    def drop_pending(self, pending: triggers_mod.Pending, reason: str, why: str) -> None:
        triggers = self.status.setdefault("triggers", {})
        triggers.pop("pending", None)
        message = f"{pending.type} trigger not taken: {why} ({pending.reason})"
        triggers["lastSkipped"] = {
            "type": pending.type,
            "reason": reason,
            "message": message[: triggers_mod.MAX_REASON],
            "time": self.ts,
            "key": pending.key,
        }
        event = "AlertSkipped" if pending.type == "Alert" else "RetrainSkipped"
        self.event("Normal", event, message)

    def start_cycle(self, type_: str, reason: str, annotation: str, value: str = "") -> None:
        self.cycle += 1
        n = self.cycle
        last: dict[str, Any] = {
            "type": type_,
            "reason": reason,
            "time": self.ts,
            "generation": self.generation,
        }
        if annotation and type_ == "Manual":
            last["value"] = annotation
        elif value:
            last["value"] = value[: triggers_mod.MAX_KEY]
        self.status["cycle"] = n
        self.status["lastTrigger"] = last
        triggers = self.status.setdefault("triggers", {})
        triggers["handledGeneration"] = self.generation
        if annotation:
            triggers["handledRetrain"] = annotation
        triggers.pop("pending", None)  # this cycle answers whatever was pending
        self.status["challenger"] = {"cycle": n}
        for type_name in cond.STEP_TYPES:
            self.set(type_name, cond.UNKNOWN, "CycleStarted", f"Cycle {n} started: {reason}")
        self.failure = None
        self.step = "Pending"
        name = naming.train_job_name(self.mc.name, n)
        self.create_job(builders.train_job(self.mc, n, self.settings))
        self.detail = f"Cycle {n}: waiting for the pod of Job {name} to start"
        self.event("Normal", "CycleStarted", f"Started cycle {n} ({type_}): {reason}")

    # --- the built-in monitor's condition ----------------------------------------------

    def degraded_owner(self) -> None:
        """A monitor verdict stands only while the monitor runs on the model it judged."""
        degraded = cond.get_condition(self.conds, cond.DEGRADED) or {}
        if degraded.get("reason") not in (*health.VERDICT_REASONS, "NewChampion"):
            return
        if not self.mc.spec.monitoring.builtin.enabled:
            self.set(
                cond.DEGRADED,
                cond.UNKNOWN,
                "MonitorDisabled",
                "spec.monitoring.builtin.enabled is false: the operator does not check the "
                "served model",
            )

    def reset_degraded(self, version: Any) -> None:
        degraded = cond.get_condition(self.conds, cond.DEGRADED) or {}
        if degraded.get("reason") in health.VERDICT_REASONS:
            self.set(
                cond.DEGRADED,
                cond.UNKNOWN,
                "NewChampion",
                f"Model version {version} was promoted; the built-in monitor has not "
                "checked it yet",
            )

    # --- serving between cycles ---------------------------------------------------------

    def keep_serving(self) -> None:
        """Between cycles the Deployment runs the champion; re-apply when it drifted."""
        if not self.mc.spec.serving.enabled:
            return
        champion = self.champion
        if champion is None:
            return
        ch = self.status.get("challenger") or {}
        if (
            _int(ch.get("cycle")) == self.cycle
            and ch.get("verdict") == FAILED
            and ch.get("reason") == "RolloutFailed"
        ):
            return  # rollbackOnFailure was false: leave the Deployment as the user chose
        self.apply_deployment(builders.serving_deployment(self.mc, champion, self.settings))
        self.apply_service()

    # --- result -------------------------------------------------------------------------

    def invalid(self, message: str) -> Decision:
        before = cond.get_condition(self.conds, cond.STALLED) or {}
        self.step = "Failed"
        self.failure = ("InvalidSpec", message)
        if before.get("reason") != "InvalidSpec" or before.get("message") != message:
            self.event("Warning", "InvalidSpec", message)
        return self.finish(serving_enabled=True)

    def finish(self, serving_enabled: bool | None = None) -> Decision:
        if serving_enabled is None:
            serving_enabled = self.mc.spec.serving.enabled
        if self.step == "Failed" and self.failure is None:
            stalled = cond.get_condition(self.conds, cond.STALLED) or {}
            if stalled.get("status") == cond.TRUE:
                self.failure = (str(stalled.get("reason")), str(stalled.get("message") or ""))
            else:
                self.resting_step()
                if self.failure is None:
                    self.failure = ("CycleFailed", f"Cycle {self.cycle} failed")
        detail = self.detail
        if self.step == "Rejected" and not detail:
            gated = cond.get_condition(self.conds, cond.GATED) or {}
            detail = str(gated.get("message") or "")
        summary = cond.summary_conditions(
            step=self.step,
            cycle=self.cycle,
            champion=self.champion,
            failure=self.failure,
            detail=detail,
            serving_enabled=serving_enabled,
        )
        self.set(cond.READY, *summary.ready)
        self.set(cond.RECONCILING, *summary.reconciling)
        self.set(cond.STALLED, *summary.stalled)
        self.status["conditions"] = self.conds
        self.status["observedGeneration"] = self.generation
        self.status["cycle"] = self.cycle
        self.status["step"] = self.step
        if self.champion is not None and serving_enabled and hasattr(self, "mc"):
            self.status["endpoint"] = builders.endpoint(self.mc)
        elif hasattr(self, "mc"):
            self.status.pop("endpoint", None)
        return Decision(tuple(self.actions), self.status)
