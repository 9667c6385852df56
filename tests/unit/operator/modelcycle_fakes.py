"""Test doubles for the operator's pure layer: bodies, raw children, and a tiny "world".

``World`` plays the API server and the controllers just enough to walk a whole cycle
through :func:`decide`: it stores what the actions create or apply (a create of an existing
object is a no-op, an apply bumps the generation only when the spec changes), writes the
decided status back into the body, and lets a test finish Jobs and roll out Deployments
with the termination messages the workload would write.
"""

from __future__ import annotations

import copy
import datetime
import json
from collections.abc import Mapping
from typing import Any

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
from modelcycle_operator.pure.observed import (
    Observed,
    summarize_deployment,
    summarize_job,
    summarize_pvc,
    summarize_service,
)
from modelcycle_operator.settings import Settings

T0 = datetime.datetime(2026, 12, 1, 12, 0, 0, tzinfo=datetime.UTC)
SETTINGS = Settings()
UID = "0b6a1f3e-1111-4222-8333-944455556666"


def make_spec(**sections: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "data": {"builtin": {"name": "iris"}},
        "training": {"estimator": "sklearn.linear_model.LogisticRegression"},
        "evaluation": {"metric": "accuracy", "threshold": 0.8},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def make_body(
    name: str = "iris",
    namespace: str = "ml",
    *,
    spec: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    generation: int = 1,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": naming.API_VERSION,
        "kind": naming.KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": UID,
            "generation": generation,
            "resourceVersion": "100",
            "annotations": dict(annotations or {}),
        },
        "spec": spec if spec is not None else make_spec(),
    }
    if status is not None:
        body["status"] = status
    return body


def terminated(name: str, exit_code: int = 0, message: Any = "", **extra: Any) -> dict[str, Any]:
    if not isinstance(message, str):
        message = json.dumps(message)
    return {
        "name": name,
        "image": SETTINGS.image,
        "restartCount": 0,
        "state": {
            "terminated": {
                "exitCode": exit_code,
                "reason": "Completed" if exit_code == 0 else "Error",
                "message": message,
                **extra,
            }
        },
    }


def running(name: str) -> dict[str, Any]:
    return {"name": name, "restartCount": 0, "state": {"running": {"startedAt": "x"}}}


def waiting(name: str, reason: str, message: str = "", restarts: int = 0) -> dict[str, Any]:
    return {
        "name": name,
        "restartCount": restarts,
        "state": {"waiting": {"reason": reason, "message": message}},
    }


def make_pod(
    name: str,
    *,
    phase: str = "Running",
    init: list[dict[str, Any]] | None = None,
    containers: list[dict[str, Any]] | None = None,
    created: str = "2026-12-01T12:00:01Z",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if init is not None:
        status["initContainerStatuses"] = init
    if containers is not None:
        status["containerStatuses"] = containers
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": created,
            "labels": dict(labels or {}),
            "annotations": dict(annotations or {}),
        },
        "status": status,
    }


COLLECT_OK = {
    "dataHash": "sha256:" + "ab" * 32,
    "rows": 150,
    "features": 4,
    "task": "classification",
}


def eval_ok(accuracy: float = 0.97) -> dict[str, Any]:
    return {
        "metrics": {"accuracy": accuracy, "f1_macro": accuracy - 0.01},
        "task": "classification",
    }


def train_ok(cycle: int) -> dict[str, Any]:
    """The older contract's train message (no metrics): the cycle needs an evaluation Job."""
    return {"version": f"{cycle}-deadbeef", "fitSeconds": 0.03}


def train_evaluated(cycle: int, accuracy: float = 0.97) -> dict[str, Any]:
    """The train container's message when it evaluated in its own process (--evaluation)."""
    return {**train_ok(cycle), **eval_ok(accuracy)}


class World:
    """A body, its children, and the Events emitted so far."""

    def __init__(self, body: dict[str, Any] | None = None, settings: Settings = SETTINGS) -> None:
        self.body = body if body is not None else make_body()
        self.settings = settings
        self.now = T0
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[str, list[dict[str, Any]]] = {}  # job name -> pods
        self.serving_pods: list[dict[str, Any]] = []
        self.events: list[EmitEvent] = []
        self.creates: list[str] = []
        self.applies: list[str] = []
        self.decisions: list[Decision] = []

    # --- reading ---------------------------------------------------------------------

    @property
    def status(self) -> dict[str, Any]:
        return self.body.setdefault("status", {})

    def condition(self, type_: str) -> dict[str, Any]:
        for c in self.status.get("conditions") or ():
            if c["type"] == type_:
                return dict(c)
        raise AssertionError(f"no condition {type_}")

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, name))

    def observe(self) -> Observed:
        name = self.body["metadata"]["name"]
        cycle = int(self.status.get("cycle") or 0)
        claim = ((self.body.get("spec") or {}).get("artifacts") or {}).get("existingClaim") or (
            naming.pvc_name(name)
        )
        pvc = self.get("PersistentVolumeClaim", claim)
        train = self.get("Job", naming.train_job_name(name, cycle))
        evaluation = self.get("Job", naming.eval_job_name(name, cycle))
        dep = self.get("Deployment", naming.serving_name(name))
        svc = self.get("Service", naming.serving_name(name))
        return Observed(
            cycle=cycle,
            pvc=summarize_pvc(pvc) if pvc else None,
            train_job=summarize_job(train, self.pods.get(train["metadata"]["name"], []))
            if train
            else None,
            eval_job=summarize_job(evaluation, self.pods.get(evaluation["metadata"]["name"], []))
            if evaluation
            else None,
            deployment=summarize_deployment(dep, self.serving_pods) if dep else None,
            service=summarize_service(svc) if svc else None,
        )

    # --- the reconcile ---------------------------------------------------------------

    def reconcile(self, advance: float = 1.0) -> Decision:
        self.now += datetime.timedelta(seconds=advance)
        decision = decide(copy.deepcopy(self.body), self.observe(), self.now, self.settings)
        self.decisions.append(decision)
        self.body["status"] = copy.deepcopy(decision.status)
        for action in decision.actions:
            self.perform(action)
        return decision

    def settle(self, limit: int = 5) -> Decision:
        """Reconcile until a pass has no actions (what a real operator converges to)."""
        decision = self.reconcile()
        for _ in range(limit):
            if not [a for a in decision.actions if not isinstance(a, EmitEvent)]:
                return decision
            decision = self.reconcile()
        raise AssertionError(f"did not settle: {decision.actions}")

    def perform(self, action: object) -> None:
        if isinstance(action, CreatePvc | CreateJob):
            manifest = copy.deepcopy(dict(action.manifest))
            key = (manifest["kind"], manifest["metadata"]["name"])
            self.creates.append(f"{key[0]}/{key[1]}")
            if key not in self.objects:
                manifest["metadata"]["generation"] = 1
                self.objects[key] = manifest
        elif isinstance(action, ApplyDeployment | ApplyService):
            manifest = copy.deepcopy(dict(action.manifest))
            key = (manifest["kind"], manifest["metadata"]["name"])
            self.applies.append(f"{key[0]}/{key[1]}")
            existing = self.objects.get(key)
            generation = 1
            status: dict[str, Any] = {}
            if existing is not None:
                generation = existing["metadata"]["generation"]
                status = existing.get("status") or {}
                if existing["spec"] != manifest["spec"]:
                    generation += 1
            manifest["metadata"]["generation"] = generation
            manifest["status"] = status
            self.objects[key] = manifest
        elif isinstance(action, EmitEvent):
            self.events.append(action)
        else:  # pragma: no cover - a new action type needs a fake
            raise AssertionError(f"unknown action {action!r}")

    # --- playing the controllers -----------------------------------------------------

    def job_name(self, which: str) -> str:
        name = self.body["metadata"]["name"]
        cycle = int(self.status["cycle"])
        if which == "train":
            return naming.train_job_name(name, cycle)
        return naming.eval_job_name(name, cycle)

    def set_job(
        self,
        which: str,
        *,
        pods: list[dict[str, Any]],
        condition: tuple[str, str, str] | None = None,
    ) -> None:
        job = self.objects[("Job", self.job_name(which))]
        status: dict[str, Any] = {}
        if condition is not None:
            type_, reason, message = condition
            status["conditions"] = [
                {"type": type_, "status": "True", "reason": reason, "message": message}
            ]
            status["succeeded" if type_ == "Complete" else "failed"] = 1
        else:
            status["active"] = 1
        job["status"] = status
        self.pods[self.job_name(which)] = pods

    def train_running(self) -> None:
        """The one container ``train`` runs (it collects, then fits: ``train --data``)."""
        self.set_job("train", pods=[make_pod("p-train", containers=[running("train")])])

    def collect_running(self) -> None:
        """An older operator's Job: its initContainer ``collect`` runs."""
        self.set_job(
            "train", pods=[make_pod("p-train", phase="Pending", init=[running("collect")])]
        )

    def collect_done(self, message: Any = COLLECT_OK) -> None:
        """An older operator's Job: ``collect`` exited 0, ``train`` runs."""
        self.set_job(
            "train",
            pods=[
                make_pod(
                    "p-train",
                    init=[terminated("collect", 0, message)],
                    containers=[running("train")],
                )
            ],
        )

    def train_done(self, version_message: Any = None, *, legacy: bool = False) -> None:
        """The train Job completed; by default its train container reported metrics too,
        and (one container) what it collected. ``legacy``: an older operator's Job, whose
        initContainer ``collect`` reported the collection."""
        cycle = int(self.status["cycle"])
        message = version_message or train_evaluated(cycle)
        if isinstance(message, dict) and not legacy:
            message = {**message, "collected": COLLECT_OK}
        self.set_job(
            "train",
            pods=[
                make_pod(
                    "p-train",
                    phase="Succeeded",
                    init=[terminated("collect", 0, COLLECT_OK)] if legacy else None,
                    containers=[terminated("train", 0, message)],
                )
            ],
            condition=("Complete", "", ""),
        )

    def train_failed(self, stage: str, error: str, *, legacy: bool = False) -> None:
        """The train Job failed in ``stage`` (collect or train) with the workload's error.

        One container: the ``train`` container's message names the stage (and, failing
        in train, what it collected). ``legacy``: the older two-container Job, where the
        failed container is the stage.
        """
        if legacy and stage == "collect":
            pod = make_pod(
                "p-train",
                phase="Failed",
                init=[terminated("collect", 1, {"error": error})],
                containers=[waiting("train", "PodInitializing")],
            )
        elif legacy:
            pod = make_pod(
                "p-train",
                phase="Failed",
                init=[terminated("collect", 0, COLLECT_OK)],
                containers=[terminated("train", 1, {"error": error})],
            )
        else:
            message: dict[str, Any] = {"error": error, "stage": stage}
            if stage == "train":
                message["collected"] = COLLECT_OK
            pod = make_pod("p-train", phase="Failed", containers=[terminated("train", 1, message)])
        self.set_job(
            "train",
            pods=[pod],
            condition=(
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ),
        )

    def eval_done(self, message: Any = None) -> None:
        self.set_job(
            "eval",
            pods=[
                make_pod(
                    "p-eval",
                    phase="Succeeded",
                    containers=[terminated("evaluate", 0, message or eval_ok())],
                )
            ],
            condition=("Complete", "", ""),
        )

    def deployment(self) -> dict[str, Any]:
        dep = self.get("Deployment", naming.serving_name(self.body["metadata"]["name"]))
        assert dep is not None, "no Deployment"
        return dep

    def rollout_available(self) -> None:
        dep = self.deployment()
        n = dep["spec"]["replicas"]
        dep["status"] = {
            "observedGeneration": dep["metadata"]["generation"],
            "replicas": n,
            "updatedReplicas": n,
            "readyReplicas": n,
            "availableReplicas": n,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
            ],
        }

    def rollout_progressing(self) -> None:
        dep = self.deployment()
        n = dep["spec"]["replicas"]
        dep["status"] = {
            "observedGeneration": dep["metadata"]["generation"],
            "replicas": n + 1,
            "updatedReplicas": 1,
            "availableReplicas": n,
            "conditions": [
                {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"},
            ],
        }

    def rollout_deadline_exceeded(self) -> None:
        dep = self.deployment()
        n = dep["spec"]["replicas"]
        dep["status"] = {
            "observedGeneration": dep["metadata"]["generation"],
            "replicas": n + 1,
            "updatedReplicas": 1,
            "availableReplicas": n,
            "conditions": [
                {
                    "type": "Progressing",
                    "status": "False",
                    "reason": "ProgressDeadlineExceeded",
                    "message": 'ReplicaSet "iris-serving-abc" has timed out progressing.',
                },
            ],
        }

    def run_cycle(self, accuracy: float = 0.97, eval_job: bool = False) -> None:
        """Walk the current cycle from its start to the end (promoted or rejected).

        ``eval_job``: the train container reports no metrics (older images), so an
        evaluation Job runs.
        """
        self.reconcile()
        cycle = int(self.status["cycle"])
        self.train_done(train_ok(cycle) if eval_job else train_evaluated(cycle, accuracy))
        self.reconcile()
        if eval_job:
            self.eval_done(eval_ok(accuracy))
            self.reconcile()
        if self.status["step"] == "RollingOut":
            self.rollout_available()
            self.reconcile()

    # --- editing the object ----------------------------------------------------------

    def edit_spec(self, **sections: Any) -> None:
        spec = self.body["spec"]
        for key, value in sections.items():
            if isinstance(value, Mapping) and isinstance(spec.get(key), dict):
                spec[key] = {**spec[key], **value}
            else:
                spec[key] = value
        self.body["metadata"]["generation"] += 1

    def annotate(self, key: str, value: str) -> None:
        self.body["metadata"].setdefault("annotations", {})[key] = value


def kinds(actions: tuple[object, ...], cls: type) -> list[Any]:
    return [a for a in actions if isinstance(a, cls)]


def names(actions: tuple[object, ...], cls: type) -> list[str]:
    return [a.manifest["metadata"]["name"] for a in kinds(actions, cls)]
