"""Names, labels and annotations that the operator, the CRD and the tests share.

They are fixed by ``docs/architecture.md`` (change them there first). Child names are
deterministic so that a restarted operator finds what it already created instead of
creating it twice.
"""

from __future__ import annotations

GROUP = "modelcycle.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelCycle"
PLURAL = "modelcycles"

OPERATOR_NAME = "modelcycle-operator"
FIELD_MANAGER = OPERATOR_NAME

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_NAME = "modelcycle.dev/name"
LABEL_CYCLE = "modelcycle.dev/cycle"
LABEL_STEP = "modelcycle.dev/step"
LABEL_JOB_NAME = "batch.kubernetes.io/job-name"

ANNOTATION_RETRAIN = "modelcycle.dev/retrain"
ANNOTATION_MODEL_VERSION = "modelcycle.dev/model-version"
ANNOTATION_MODEL_CYCLE = "modelcycle.dev/model-cycle"
ANNOTATION_INPUTS_HASH = "modelcycle.dev/inputs-hash"
ANNOTATION_APPLIED_HASH = "modelcycle.dev/applied-hash"

STEP_TRAIN = "train"
STEP_EVALUATE = "evaluate"
STEP_SERVING = "serving"

ARTIFACTS_MOUNT = "/artifacts"
TRAINER_COMMAND = "modelcycle-trainer"

#: Longest ModelCycle name whose children still fit the 63-character name and label limits
#: (``<name>-train-<cycle>`` with up to 10 cycle digits; ``<name>-serving`` as a DNS label).
MAX_NAME_LENGTH = 45


def pvc_name(name: str) -> str:
    return f"{name}-artifacts"


def train_job_name(name: str, cycle: int) -> str:
    return f"{name}-train-{cycle}"


def eval_job_name(name: str, cycle: int) -> str:
    return f"{name}-eval-{cycle}"


def serving_name(name: str) -> str:
    return f"{name}-serving"


def child_labels(name: str, step: str, cycle: int | None = None) -> dict[str, str]:
    """Labels on every child: they route a child's events back to its ModelCycle."""
    labels = {
        LABEL_MANAGED_BY: OPERATOR_NAME,
        LABEL_PART_OF: "modelcycle",
        LABEL_NAME: name,
        LABEL_STEP: step,
    }
    if cycle is not None:
        labels[LABEL_CYCLE] = str(cycle)
    return labels


def serving_selector(name: str) -> dict[str, str]:
    """The Deployment's selector; immutable once created, so it never includes a version."""
    return {LABEL_NAME: name, LABEL_STEP: STEP_SERVING}


def selector_string(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
