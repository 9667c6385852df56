"""Manifests of a ModelCycle's children, built as plain dicts.

Each function returns the complete desired object: deterministic name, the labels that map
it back to its ModelCycle, an ownerReference (controller, blockOwnerDeletion) so that the
garbage collector removes it with its owner, and a pod securityContext that satisfies the
``restricted`` Pod Security Standard. Containers run the workload CLI
(``modelcycle-trainer <subcommand> --artifacts /artifacts ...``) with the spec's sections
as JSON arguments.

The serving container also gets the built-in monitor's drift thresholds
(``--drift-p-value``, ``--drift-fraction`` from ``spec.monitoring.builtin``), so the server's
``/monitoring`` and ``/metrics`` report drift as the spec defines it.

Deployment and Service carry ``modelcycle.dev/applied-hash``, a digest of the rest of the
manifest, so the decision can tell "already applied" from "drifted" without a diff.

Limits: pure; nothing here knows whether an object exists. Jobs are immutable in practice
(their pod template cannot change), so a Job is only ever created, never updated.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from modelcycle_operator.pure import naming
from modelcycle_operator.pure.spec import ModelCycle
from modelcycle_operator.settings import Settings

__all__ = [
    "artifacts_pvc",
    "content_hash",
    "eval_job",
    "inputs_hash",
    "model_dir",
    "owner_reference",
    "serving_deployment",
    "serving_service",
    "train_job",
    "training_image",
]

_UID = 1000
#: Smallest drift threshold passed to the model server (its flags take (0, 1]).
MIN_FRACTION = 1e-9


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def content_hash(value: Any) -> str:
    """A short, stable digest of a JSON-able value."""
    return hashlib.sha256(_json(value).encode()).hexdigest()[:16]


def owner_reference(mc: ModelCycle) -> dict[str, Any]:
    return {
        "apiVersion": naming.API_VERSION,
        "kind": naming.KIND,
        "name": mc.name,
        "uid": mc.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(
    mc: ModelCycle,
    name: str,
    labels: dict[str, str],
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": mc.namespace,
        "labels": dict(labels),
        "ownerReferences": [owner_reference(mc)],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": _UID,
        "runAsGroup": _UID,
        "fsGroup": _UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": _UID,
        "runAsGroup": _UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _volumes(mc: ModelCycle) -> list[dict[str, Any]]:
    return [
        {"name": "artifacts", "persistentVolumeClaim": {"claimName": mc.claim_name}},
        {"name": "tmp", "emptyDir": {}},
    ]


def _mounts() -> list[dict[str, Any]]:
    return [
        {"name": "artifacts", "mountPath": naming.ARTIFACTS_MOUNT},
        {"name": "tmp", "mountPath": "/tmp"},
    ]


def _env(settings: Settings) -> list[dict[str, str]]:
    return [
        {"name": "MODELCYCLE_ALLOWED_MODULES", "value": settings.allowed_modules_arg},
        {"name": "HOME", "value": "/tmp"},
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
    ]


def _resources(
    own: Mapping[str, Mapping[str, str]], settings: Settings
) -> dict[str, dict[str, str]]:
    """The spec's requests/limits, with the operator's defaults for resources it leaves out.

    A default applies to a resource (cpu, memory) only when the spec names that resource
    in neither requests nor limits, so a default can never contradict the user's own value
    (a default request above the user's limit would be rejected by the API server).
    """
    named = {key for values in own.values() for key in values}
    merged: dict[str, dict[str, str]] = {}
    for kind, defaults in settings.default_resources().items():
        kept = {k: v for k, v in defaults.items() if k not in named}
        if kept:
            merged[kind] = kept
    for kind, values in own.items():
        if values:
            merged.setdefault(kind, {}).update(values)
    return merged


def _container(
    name: str,
    image: str,
    command: list[str],
    resources: dict[str, dict[str, str]],
    settings: Settings,
) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "env": _env(settings),
        "resources": copy.deepcopy(resources),
        "volumeMounts": _mounts(),
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def training_image(mc: ModelCycle, settings: Settings) -> str:
    return mc.spec.training.image or settings.image


def model_dir(cycle: int) -> str:
    return f"{naming.ARTIFACTS_MOUNT}/cycles/{cycle}/model"


def inputs_hash(mc: ModelCycle, settings: Settings) -> str:
    """What a cycle's result depends on; a spec change that keeps it does not retrain."""
    return content_hash(
        {
            "data": mc.spec.data.to_dict(),
            "training": mc.spec.training.to_dict(),
            "evaluation": mc.spec.evaluation.to_dict(),
            "image": training_image(mc, settings),
            "allowed": list(settings.allowed_estimator_modules),
            "claim": mc.claim_name,
        }
    )


def artifacts_pvc(mc: ModelCycle, settings: Settings) -> dict[str, Any]:
    """The artifact volume: data snapshots, models, metrics and feedback of every cycle."""
    del settings  # the claim needs nothing from the operator's settings today
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": mc.spec.artifacts.size}},
    }
    if mc.spec.artifacts.storage_class_name:
        spec["storageClassName"] = mc.spec.artifacts.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(
            mc, naming.pvc_name(mc.name), naming.child_labels(mc.name, "artifacts")
        ),
        "spec": spec,
    }


def _job(
    mc: ModelCycle,
    cycle: int,
    *,
    name: str,
    step: str,
    containers: list[dict[str, Any]],
    init_containers: list[dict[str, Any]],
    annotations: dict[str, str],
) -> dict[str, Any]:
    labels = naming.child_labels(mc.name, step, cycle)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": containers,
        "volumes": _volumes(mc),
    }
    if init_containers:
        pod_spec["initContainers"] = init_containers
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(mc, name, labels, annotations),
        "spec": {
            "backoffLimit": mc.spec.training.backoff_limit,
            "activeDeadlineSeconds": mc.spec.training.active_deadline_seconds,
            "template": {
                "metadata": {"labels": dict(labels), "annotations": dict(annotations)},
                "spec": pod_spec,
            },
        },
    }


def train_job(mc: ModelCycle, cycle: int, settings: Settings) -> dict[str, Any]:
    """Job ``<name>-train-<cycle>``: one container ``train``, one process.

    ``train --data`` collects the cycle's data first, as the ``collect`` subcommand does
    (its summary comes back under ``collected`` in the termination message; a failure
    says ``"stage": "collect"``), then fits; ``--evaluation`` makes it evaluate the model
    it fitted and report the metrics, so the cycle needs no evaluation Job. One
    interpreter, one scikit-learn import: an initContainer ``collect`` (what an older
    operator created, and :mod:`decide` still reads) cost a second Python start.
    """
    image = training_image(mc, settings)
    resources = _resources(mc.spec.training.resources, settings)
    train = _container(
        "train",
        image,
        [
            naming.TRAINER_COMMAND,
            "train",
            "--artifacts",
            naming.ARTIFACTS_MOUNT,
            "--cycle",
            str(cycle),
            "--data",
            _json(mc.spec.data.to_dict()),
            "--training",
            _json(mc.spec.training.to_dict()),
            "--allowed-modules",
            settings.allowed_modules_arg,
            "--evaluation",
            _json(mc.spec.evaluation.to_dict()),
        ],
        resources,
        settings,
    )
    annotations = {
        naming.ANNOTATION_INPUTS_HASH: inputs_hash(mc, settings),
        naming.ANNOTATION_MODEL_CYCLE: str(cycle),
    }
    return _job(
        mc,
        cycle,
        name=naming.train_job_name(mc.name, cycle),
        step=naming.STEP_TRAIN,
        containers=[train],
        init_containers=[],
        annotations=annotations,
    )


def eval_job(mc: ModelCycle, cycle: int, settings: Settings, image: str = "") -> dict[str, Any]:
    """Job ``<name>-eval-<cycle>``: container ``evaluate`` scores the held-out split.

    Only for a workload image whose ``train`` reported no metrics (the older contract).

    ``image`` is the image that trained the model (so the same scikit-learn loads it);
    empty means the spec's training image.
    """
    image = image or training_image(mc, settings)
    evaluate = _container(
        "evaluate",
        image,
        [
            naming.TRAINER_COMMAND,
            "evaluate",
            "--artifacts",
            naming.ARTIFACTS_MOUNT,
            "--cycle",
            str(cycle),
            "--evaluation",
            _json(mc.spec.evaluation.to_dict()),
            "--allowed-modules",
            settings.allowed_modules_arg,
        ],
        _resources(mc.spec.training.resources, settings),
        settings,
    )
    return _job(
        mc,
        cycle,
        name=naming.eval_job_name(mc.name, cycle),
        step=naming.STEP_EVALUATE,
        containers=[evaluate],
        init_containers=[],
        annotations={naming.ANNOTATION_MODEL_CYCLE: str(cycle)},
    )


def _with_hash(manifest: dict[str, Any]) -> dict[str, Any]:
    manifest["metadata"].setdefault("annotations", {})[naming.ANNOTATION_APPLIED_HASH] = (
        content_hash(manifest)
    )
    return manifest


def serving_image(mc: ModelCycle, model: Mapping[str, Any], settings: Settings) -> str:
    """serving.image, else the image that trained the model, else the default image."""
    return mc.spec.serving.image or str(model.get("image") or "") or training_image(mc, settings)


def _fraction_arg(value: float) -> str:
    """The server takes fractions in (0, 1]; the CRD allows 0, which means "never"."""
    return repr(max(float(value), MIN_FRACTION))


def serving_deployment(
    mc: ModelCycle,
    model: Mapping[str, Any],
    settings: Settings,
    replicas: int | None = None,
) -> dict[str, Any]:
    """Deployment ``<name>-serving`` running ``serve`` for a champion or challenger record.

    ``model`` needs ``cycle`` and ``version`` (and may carry ``image``); ``replicas``
    overrides the spec (a rollback with no champion to restore scales to 0).
    """
    cycle = int(model["cycle"])
    version = str(model["version"])
    serving = mc.spec.serving
    drift = mc.spec.monitoring.builtin
    labels = naming.child_labels(mc.name, naming.STEP_SERVING)
    version_annotations = {
        naming.ANNOTATION_MODEL_VERSION: version,
        naming.ANNOTATION_MODEL_CYCLE: str(cycle),
    }
    probe_port = "http"
    container = _container(
        "serve",
        serving_image(mc, model, settings),
        [
            naming.TRAINER_COMMAND,
            "serve",
            "--artifacts",
            naming.ARTIFACTS_MOUNT,
            "--model-dir",
            model_dir(cycle),
            "--name",
            mc.name,
            "--version",
            version,
            "--port",
            str(serving.port),
            "--allowed-modules",
            settings.allowed_modules_arg,
            "--drift-p-value",
            _fraction_arg(drift.drift_p_value),
            "--drift-fraction",
            _fraction_arg(drift.drift_fraction),
        ],
        _resources(serving.resources, settings),
        settings,
    )
    container["ports"] = [{"name": "http", "containerPort": serving.port, "protocol": "TCP"}]
    container["readinessProbe"] = {  # every second from the start: Ready within ~1 s
        "httpGet": {"path": "/v2/health/ready", "port": probe_port},
        "initialDelaySeconds": 0,
        "periodSeconds": 1,
        "timeoutSeconds": 2,
        "successThreshold": 1,
        "failureThreshold": 3,
    }
    container["livenessProbe"] = {
        "httpGet": {"path": "/v2/health/live", "port": probe_port},
        "initialDelaySeconds": 15,
        "periodSeconds": 10,
        "timeoutSeconds": 2,
        "failureThreshold": 3,
    }
    manifest: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(mc, naming.serving_name(mc.name), labels, version_annotations),
        "spec": {
            "replicas": serving.replicas if replicas is None else replicas,
            "selector": {"matchLabels": naming.serving_selector(mc.name)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "progressDeadlineSeconds": serving.progress_deadline_seconds,
            "revisionHistoryLimit": 5,
            "template": {
                "metadata": {"labels": dict(labels), "annotations": dict(version_annotations)},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security_context(),
                    "containers": [container],
                    "volumes": _volumes(mc),
                },
            },
        },
    }
    return _with_hash(manifest)


def serving_service(mc: ModelCycle, settings: Settings) -> dict[str, Any]:
    """Service ``<name>-serving`` in front of the serving pods (port ``serving.port``)."""
    del settings
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(
            mc,
            naming.serving_name(mc.name),
            naming.child_labels(mc.name, naming.STEP_SERVING),
        ),
        "spec": {
            "type": "ClusterIP",
            "selector": naming.serving_selector(mc.name),
            "ports": [
                {
                    "name": "http",
                    "port": mc.spec.serving.port,
                    "targetPort": "http",
                    "protocol": "TCP",
                }
            ],
        },
    }
    return _with_hash(manifest)


def endpoint(mc: ModelCycle) -> dict[str, Any]:
    service = naming.serving_name(mc.name)
    return {
        "service": service,
        "url": f"http://{service}.{mc.namespace}.svc:{mc.spec.serving.port}",
        "modelName": mc.name,
    }
