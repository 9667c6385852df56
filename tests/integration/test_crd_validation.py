"""The ModelCycle CRD as the real API server enforces it.

Uses the session fixture `cluster` (the local control plane, with the CRD from crds/
installed) and the function fixture `namespace` from tests/conftest.py. Nothing here needs
the operator: the tests read back what the API server stored (defaults, printer columns,
the status subresource) and what it refused, and assert on the field path and, for the
CEL rules, on the rule's message.
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [
    p
    for p in sorted((ROOT / "examples").glob("*.yaml"))
    if any(
        isinstance(d, dict) and d.get("kind") == "ModelCycle"
        for d in yaml.safe_load_all(p.read_text(encoding="utf-8"))
    )
]
API_VERSION = "modelcycle.dev/v1alpha1"

DELETE = object()

BASE: dict[str, Any] = {
    "apiVersion": API_VERSION,
    "kind": "ModelCycle",
    "metadata": {"name": "base"},
    "spec": {
        "data": {"builtin": {"name": "iris"}},
        "training": {
            "estimator": "sklearn.linear_model.LogisticRegression",
            "parameters": {"max_iter": 200},
        },
        "evaluation": {"metric": "accuracy", "threshold": 0.8},
    },
}


def patched(patch: dict[str, Any]) -> dict[str, Any]:
    """BASE with each dotted path set to its value (or removed, for DELETE)."""
    obj = copy.deepcopy(BASE)
    for dotted, value in patch.items():
        *parents, last = dotted.split(".")
        target = obj
        for key in parents:
            target = target.setdefault(key, {})
        if value is DELETE:
            target.pop(last, None)
        else:
            target[last] = value
    return obj


def create(
    cluster: Any, namespace: str, obj: dict[str, Any], *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(
        "create",
        "--validate=strict",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(obj),
        check=check,
    )


def get(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "modelcycle", name, "-n", namespace, "-o", "json").stdout
    obj: dict[str, Any] = json.loads(out)
    return obj


def dig(obj: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        obj = obj[key]
    return obj


def leaves(value: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        return [leaf for k, v in value.items() for leaf in leaves(v, f"{path}.{k}" if path else k)]
    return [(path, value)]


# --------------------------------------------------------------------------- installed


def test_crd_is_established_with_a_structural_schema(cluster: Any) -> None:
    crd = json.loads(
        cluster.kubectl("get", "crd", "modelcycles.modelcycle.dev", "-o", "json").stdout
    )
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions.get("Established") == "True"
    assert conditions.get("NamesAccepted") == "True"
    assert conditions.get("NonStructuralSchema") in (None, "False")
    assert crd["status"]["acceptedNames"]["shortNames"] == ["mc"]
    assert crd["status"]["acceptedNames"]["categories"] == ["mlops"]


# --------------------------------------------------------------------------- examples

DEFAULTS = [
    ("spec.suspend", False),
    ("spec.data.target", "target"),
    ("spec.data.task", "auto"),
    ("spec.data.testFraction", 0.25),
    ("spec.data.seed", 42),
    ("spec.data.includeFeedback", True),
    ("spec.training.preprocessing", "none"),
    ("spec.training.activeDeadlineSeconds", 900),
    ("spec.training.backoffLimit", 1),
    ("spec.evaluation.metric", "accuracy"),
    ("spec.evaluation.compareWithChampion", False),
    ("spec.evaluation.minImprovement", 0),
    ("spec.serving.enabled", True),
    ("spec.serving.replicas", 1),
    ("spec.serving.port", 8080),
    ("spec.serving.progressDeadlineSeconds", 180),
    ("spec.serving.rollbackOnFailure", True),
    ("spec.monitoring.cooldownSeconds", 300),
    ("spec.monitoring.schedule", ""),
    ("spec.monitoring.alerts.enabled", True),
    ("spec.monitoring.builtin.enabled", False),
    ("spec.monitoring.builtin.intervalSeconds", 30),
    ("spec.monitoring.builtin.minAccuracy", 0.7),
    ("spec.artifacts.existingClaim", ""),
    ("spec.artifacts.size", "1Gi"),
]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_applies_and_is_defaulted(cluster: Any, namespace: str, path: Path) -> None:
    example = next(
        d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d["kind"] == "ModelCycle"
    )
    name = example["metadata"]["name"]
    apply = ("apply", "--server-side", "--field-manager=test", "-n", namespace, "-f", str(path))
    cluster.kubectl(*apply)
    stored = get(cluster, namespace, name)

    for dotted, value in leaves(example["spec"], "spec"):
        assert dig(stored, dotted) == value, f"{dotted} was changed or pruned"
    for dotted, default in DEFAULTS:
        given = leaves(example["spec"], "spec")
        if not any(p == dotted for p, _ in given):
            assert dig(stored, dotted) == default, dotted

    # Applying the same file again changes nothing: defaulting does not cause churn.
    cluster.kubectl(*apply)
    assert get(cluster, namespace, name)["metadata"]["generation"] == 1


def test_minimal_object_gets_every_default(cluster: Any, namespace: str) -> None:
    """Only evaluation.threshold is required; everything else, data included, defaults."""
    create(cluster, namespace, {**BASE, "spec": {"evaluation": {"threshold": 0.5}}})
    assert get(cluster, namespace, "base")["spec"] == {
        "suspend": False,
        "data": {
            "builtin": {"name": "iris"},
            "target": "target",
            "task": "auto",
            "testFraction": 0.25,
            "seed": 42,
            "includeFeedback": True,
        },
        "training": {
            "estimator": "sklearn.linear_model.LogisticRegression",
            "parameters": {},
            "preprocessing": "none",
            "image": "",
            "activeDeadlineSeconds": 900,
            "backoffLimit": 1,
        },
        "evaluation": {
            "metric": "accuracy",
            "threshold": 0.5,
            "compareWithChampion": False,
            "minImprovement": 0,
        },
        "serving": {
            "enabled": True,
            "replicas": 1,
            "port": 8080,
            "image": "",
            "progressDeadlineSeconds": 180,
            "rollbackOnFailure": True,
        },
        "monitoring": {
            "cooldownSeconds": 300,
            "alerts": {"enabled": True, "matchLabels": {}},
            "schedule": "",
            "builtin": {
                "enabled": False,
                "intervalSeconds": 30,
                "minAccuracy": 0.7,
                "minSamples": 20,
                "driftPValue": 0.05,
                "driftFraction": 0.5,
                "retrain": True,
            },
        },
        "artifacts": {"existingClaim": "", "size": "1Gi", "storageClassName": ""},
    }


def test_free_form_parameters_are_kept(cluster: Any, namespace: str) -> None:
    parameters = {
        "C": 0.5,
        "class_weight": {"0": 1, "1": 2},
        "solver": "lbfgs",
        "hidden_layer_sizes": [64, 32],
        "warm_start": True,
    }
    create(cluster, namespace, patched({"spec.training.parameters": parameters}))
    assert get(cluster, namespace, "base")["spec"]["training"]["parameters"] == parameters


@pytest.mark.parametrize(
    "patch",
    [
        pytest.param({"spec.data": {"url": {"url": "http://example.com/t.csv"}}}, id="http-url"),
        pytest.param(
            {"spec.data": {"file": {"path": "datasets/x..y/t.parquet", "format": "parquet"}}},
            id="file-with-dots-in-a-name",
        ),
        pytest.param(
            {
                "spec.data": {"builtin": {"name": "diabetes"}},
                "spec.evaluation": {"metric": "r2", "threshold": -0.5},
            },
            id="negative-r2",
        ),
        pytest.param(
            {
                "spec.data": {"url": {"url": "https://example.com/t.csv"}, "target": "y"},
                "spec.evaluation": {"metric": "mae", "threshold": 12},
            },
            id="mae-on-url-data-auto-task",
        ),
        pytest.param(
            {
                "spec.evaluation": {
                    "threshold": 0.9,
                    "compareWithChampion": True,
                    "minImprovement": 0.02,
                }
            },
            id="min-improvement-with-champion",
        ),
        pytest.param(
            {"spec.artifacts": {"existingClaim": "shared-data", "size": "1Gi"}},
            id="existing-claim-default-size",
        ),
        pytest.param({"spec.monitoring.schedule": "*/30 9-17 * * MON-FRI"}, id="cron-ranges"),
        pytest.param(
            {"spec.training.resources": {"limits": {"cpu": 2, "memory": "1Gi"}}}, id="int-or-string"
        ),
        pytest.param(
            {"spec.monitoring.builtin": {"enabled": True, "maxError": None}}, id="null-max-error"
        ),
        pytest.param({"spec.serving.port": 1024}, id="lowest-port"),
    ],
)
def test_edge_cases_are_accepted(cluster: Any, namespace: str, patch: dict[str, Any]) -> None:
    create(cluster, namespace, patched(patch))


# --------------------------------------------------------------------------- rejected

CLASSIFICATION_METRICS = "classification metrics (accuracy, balanced_accuracy"
REGRESSION_METRICS = "metrics r2, rmse and mae are regression metrics"

INVALID = [
    # missing required fields
    pytest.param({"spec": DELETE}, ["spec: Required value"], id="no-spec"),
    pytest.param(
        {"spec.evaluation": DELETE}, ["spec.evaluation: Required value"], id="no-evaluation"
    ),
    pytest.param(
        {"spec.evaluation.threshold": DELETE},
        ["spec.evaluation.threshold: Required value"],
        id="no-threshold",
    ),
    pytest.param(
        {"spec.data": {"url": {"format": "csv"}}},
        ["spec.data.url.url: Required value"],
        id="url-without-url",
    ),
    # wrong types
    pytest.param(
        {"spec.evaluation.threshold": "high"},
        ["spec.evaluation.threshold", "must be of type number"],
        id="threshold-string",
    ),
    pytest.param(
        {"spec.suspend": "yes"}, ["spec.suspend", "must be of type boolean"], id="suspend-string"
    ),
    pytest.param(
        {"spec.serving.replicas": 1.5},
        ["spec.serving.replicas", "must be of type integer"],
        id="replicas-float",
    ),
    pytest.param(
        {"spec.training.parameters": [1, 2]},
        ["spec.training.parameters", "must be of type object"],
        id="parameters-list",
    ),
    pytest.param(
        {"spec.monitoring.alerts.matchLabels": {"team": 1}},
        ["spec.monitoring.alerts.matchLabels.team", "must be of type string"],
        id="label-value-int",
    ),
    # out of range
    pytest.param(
        {"spec.data.testFraction": 0.01},
        ["spec.data.testFraction", "greater than or equal to 0.05"],
        id="test-fraction-low",
    ),
    pytest.param(
        {"spec.data.testFraction": 0.95},
        ["spec.data.testFraction", "less than or equal to 0.9"],
        id="test-fraction-high",
    ),
    pytest.param(
        {"spec.data.seed": -1}, ["spec.data.seed", "greater than or equal to 0"], id="seed-negative"
    ),
    pytest.param(
        {"spec.training.activeDeadlineSeconds": 10},
        ["spec.training.activeDeadlineSeconds", "greater than or equal to 30"],
        id="deadline-short",
    ),
    pytest.param(
        {"spec.training.backoffLimit": 11},
        ["spec.training.backoffLimit", "less than or equal to 10"],
        id="backoff-high",
    ),
    pytest.param(
        {"spec.serving.port": 80},
        ["spec.serving.port", "greater than or equal to 1024"],
        id="privileged-port",
    ),
    pytest.param(
        {"spec.serving.replicas": 21},
        ["spec.serving.replicas", "less than or equal to 20"],
        id="replicas-high",
    ),
    pytest.param(
        {"spec.monitoring.cooldownSeconds": -1},
        ["spec.monitoring.cooldownSeconds", "greater than or equal to 0"],
        id="cooldown-negative",
    ),
    pytest.param(
        {"spec.monitoring.builtin": {"intervalSeconds": 1}},
        ["spec.monitoring.builtin.intervalSeconds", "greater than or equal to 5"],
        id="interval-short",
    ),
    pytest.param(
        {"spec.evaluation.minImprovement": -0.1},
        ["spec.evaluation.minImprovement", "greater than or equal to 0"],
        id="min-improvement-negative",
    ),
    # bad enums and patterns
    pytest.param(
        {"spec.evaluation.metric": "precision"},
        ["spec.evaluation.metric: Unsupported value"],
        id="metric-enum",
    ),
    pytest.param(
        {"spec.data.builtin.name": "mnist"},
        ["spec.data.builtin.name: Unsupported value"],
        id="dataset-enum",
    ),
    pytest.param(
        {"spec.training.preprocessing": "robust"},
        ["spec.training.preprocessing: Unsupported value"],
        id="preprocessing-enum",
    ),
    pytest.param(
        {"spec.training.estimator": "LogisticRegression"},
        ["spec.training.estimator", "should match"],
        id="estimator-undotted",
    ),
    pytest.param(
        {"spec.training.estimator": "sklearn..Ridge"},
        ["spec.training.estimator", "should match"],
        id="estimator-empty-part",
    ),
    pytest.param(
        {"spec.training.resources": {"limits": {"cpu": "lots"}}},
        ["spec.training.resources.limits.cpu", "should match"],
        id="quantity",
    ),
    pytest.param(
        {"spec.artifacts.existingClaim": "Not_A_Name"},
        ["spec.artifacts.existingClaim", "should match"],
        id="claim-name",
    ),
    # unknown fields (strict field validation)
    pytest.param({"spec.foo": 1}, ['unknown field "spec.foo"'], id="unknown-spec-field"),
    pytest.param(
        {"spec.evaluation.treshold": 0.9},
        ['unknown field "spec.evaluation.treshold"'],
        id="misspelt-field",
    ),
    # CEL: data source
    pytest.param(
        {"spec.data.url": {"url": "https://example.com/t.csv"}},
        [
            "spec.data",
            "exactly one of spec.data.builtin, spec.data.url or spec.data.file must be set",
        ],
        id="two-sources",
    ),
    pytest.param(
        {"spec.data": {"target": "y"}},
        [
            "spec.data",
            "exactly one of spec.data.builtin, spec.data.url or spec.data.file must be set",
        ],
        id="no-source",
    ),
    pytest.param(
        {"spec.data": {"url": {"url": "ftp://example.com/t.csv"}}},
        ["spec.data.url.url", "url must start with http:// or https://"],
        id="ftp-url",
    ),
    pytest.param(
        {"spec.data": {"url": {"url": "https://"}}},
        ["spec.data.url.url", "url must start with http:// or https://"],
        id="url-without-host",
    ),
    pytest.param(
        {"spec.data": {"file": {"path": "/etc/passwd"}}},
        ["spec.data.file.path", "path must be relative"],
        id="absolute-path",
    ),
    pytest.param(
        {"spec.data": {"file": {"path": "datasets/../../etc/passwd"}}},
        ["spec.data.file.path", "path must not contain '..' segments"],
        id="dotdot-path",
    ),
    pytest.param(
        {"spec.data.target": "species"},
        ["spec.data.target", "builtin datasets name their target column 'target'"],
        id="builtin-target",
    ),
    pytest.param(
        {"spec.data.task": "regression"},
        ["spec.data.task", "task does not match the builtin dataset"],
        id="iris-as-regression",
    ),
    # CEL: threshold ranges per metric
    pytest.param(
        {"spec.evaluation.threshold": 1.5},
        ["spec.evaluation.threshold", "threshold must be within [0, 1]"],
        id="accuracy-above-1",
    ),
    pytest.param(
        {"spec.evaluation": {"metric": "roc_auc", "threshold": -0.1}},
        ["spec.evaluation.threshold", "threshold must be within [0, 1]"],
        id="roc-auc-negative",
    ),
    pytest.param(
        {
            "spec.data.builtin.name": "diabetes",
            "spec.evaluation": {"metric": "rmse", "threshold": -1},
        },
        ["spec.evaluation.threshold", "threshold must be >= 0 for the error metrics rmse and mae"],
        id="rmse-negative",
    ),
    pytest.param(
        {
            "spec.data.builtin.name": "diabetes",
            "spec.evaluation": {"metric": "r2", "threshold": 1.2},
        },
        ["spec.evaluation.threshold", "threshold must be <= 1 for metric r2"],
        id="r2-above-1",
    ),
    # CEL: metric vs task
    pytest.param(
        {
            "spec.data": {
                "url": {"url": "https://example.com/t.csv"},
                "target": "y",
                "task": "classification",
            },
            "spec.evaluation": {"metric": "rmse", "threshold": 3},
        },
        ["spec.evaluation.metric", REGRESSION_METRICS],
        id="rmse-for-classification",
    ),
    pytest.param(
        {"spec.evaluation": {"metric": "r2", "threshold": 0.5}},
        ["spec.evaluation.metric", REGRESSION_METRICS],
        id="r2-for-iris",
    ),
    pytest.param(
        {
            "spec.data": {"file": {"path": "t.csv"}, "target": "price", "task": "regression"},
            "spec.evaluation": {"metric": "accuracy", "threshold": 0.9},
        },
        ["spec.evaluation.metric", CLASSIFICATION_METRICS],
        id="accuracy-for-regression",
    ),
    pytest.param(
        {"spec.data.builtin.name": "diabetes"},
        ["spec.evaluation.metric", CLASSIFICATION_METRICS],
        id="accuracy-for-diabetes",
    ),
    # CEL: the rest
    pytest.param(
        {"spec.evaluation.minImprovement": 0.01},
        ["spec.evaluation.minImprovement", "minImprovement > 0 needs compareWithChampion true"],
        id="min-improvement-alone",
    ),
    pytest.param(
        {"spec.monitoring.schedule": "daily"},
        ["spec.monitoring.schedule", "schedule must be a 5-field cron expression"],
        id="schedule-word",
    ),
    pytest.param(
        {"spec.monitoring.schedule": "0 3 * *"},
        ["spec.monitoring.schedule", "schedule must be a 5-field cron expression"],
        id="schedule-four-fields",
    ),
    pytest.param(
        {"spec.monitoring.alerts.matchLabels": {"namespace": "other"}},
        ["spec.monitoring.alerts.matchLabels", "must not set modelcycle or namespace"],
        id="match-labels-namespace",
    ),
    pytest.param(
        {"spec.artifacts": {"existingClaim": "shared", "size": "10Gi"}},
        ["spec.artifacts.existingClaim", "leave them unset with existingClaim"],
        id="claim-and-size",
    ),
    pytest.param(
        {"spec.artifacts": {"existingClaim": "shared", "storageClassName": "fast"}},
        ["spec.artifacts.existingClaim", "leave them unset with existingClaim"],
        id="claim-and-storage-class",
    ),
    pytest.param(
        {"metadata.name": "iris.v2"},
        ["metadata.name must be a DNS-1035 label"],
        id="name-with-dot",
    ),
    pytest.param(
        {"metadata.name": "a" * 46},
        ["metadata.name must be a DNS-1035 label", "at most 45 characters"],
        id="name-too-long",
    ),
]


@pytest.mark.parametrize(("patch", "expected"), INVALID)
def test_invalid_object_is_rejected(
    cluster: Any, namespace: str, patch: dict[str, Any], expected: list[str]
) -> None:
    result = create(cluster, namespace, patched(patch), check=False)
    assert result.returncode != 0, f"accepted: {patch}"
    for text in expected:
        assert text in result.stderr, result.stderr
    listed = cluster.kubectl("get", "modelcycles", "-n", namespace, "-o", "name").stdout
    assert listed.strip() == ""


def test_unknown_field_is_rejected_by_server_side_apply(cluster: Any, namespace: str) -> None:
    obj = patched({"spec.foo": 1})
    result = cluster.kubectl(
        "apply",
        "--server-side",
        "--field-manager=test",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(obj),
        check=False,
    )
    assert result.returncode != 0
    assert ".spec.foo: field not declared in schema" in result.stderr


def test_rules_apply_on_update_too(cluster: Any, namespace: str) -> None:
    create(cluster, namespace, BASE)
    result = cluster.kubectl(
        "patch",
        "modelcycle",
        "base",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"data": {"url": {"url": "https://example.com/t.csv"}}}}),
        check=False,
    )
    assert result.returncode != 0
    assert "exactly one of spec.data.builtin" in result.stderr


# --------------------------------------------------------------------------- status

FULL_STATUS: dict[str, Any] = {
    "observedGeneration": 1,
    "cycle": 2,
    "step": "Serving",
    "conditions": [
        {
            "type": "Ready",
            "status": "True",
            "observedGeneration": 1,
            "lastTransitionTime": "2025-01-01T00:00:00Z",
            "reason": "Serving",
            "message": "serving 2-0123abcd",
        },
        {
            "type": "Reconciling",
            "status": "False",
            "observedGeneration": 1,
            "lastTransitionTime": "2025-01-01T00:00:00Z",
            "reason": "Idle",
            "message": "",
        },
    ],
    "champion": {
        "cycle": 2,
        "version": "2-0123abcd",
        "artifactPath": "/artifacts/cycles/2/model",
        "dataHash": "sha256:" + "0" * 64,
        "metric": "accuracy",
        "score": 0.97,
        "metrics": {"accuracy": 0.97, "f1_macro": 0.96},
        "image": "ghcr.io/modelcycle/trainer:dev",
    },
    "challenger": {
        "cycle": 2,
        "version": "2-0123abcd",
        "artifactPath": "/artifacts/cycles/2/model",
        "dataHash": "sha256:" + "0" * 64,
        "metric": "accuracy",
        "score": 0.97,
        "metrics": {"accuracy": 0.97},
        "verdict": "Promoted",
        "reason": "accuracy 0.97 >= threshold 0.8",
    },
    "endpoint": {
        "service": "base-serving",
        "url": "http://base-serving.ns.svc:8080",
        "modelName": "base",
    },
    "lastTrigger": {
        "type": "Manual",
        "reason": "annotation modelcycle.dev/retrain",
        "time": "2025-01-01T00:00:00.123456+00:00",
        "generation": 1,
        "value": "2",
    },
    "triggers": {
        "handledRetrain": "2",
        "handledGeneration": 1,
        "alertKeys": ["3f2a@2025-01-01T00:00:00Z"],
    },
    "history": [
        {
            "cycle": 1,
            "trigger": "Created",
            "version": "1-89abcdef",
            "verdict": "Promoted",
            "metric": "accuracy",
            "score": 0.95,
            "dataHash": "sha256:" + "1" * 64,
            "reason": "accuracy 0.95 >= threshold 0.8",
            "startedAt": "2025-01-01T00:00:00Z",
            "finishedAt": "2025-01-01T00:01:00Z",
        },
        {"cycle": 2, "trigger": "Manual", "verdict": "Failed", "reason": "training Job failed"},
    ],
}


def patch_status(
    cluster: Any, namespace: str, body: dict[str, Any], *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(
        "patch",
        "modelcycle",
        "base",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(body),
        check=check,
    )


def test_everything_the_operator_writes_is_kept(cluster: Any, namespace: str) -> None:
    create(cluster, namespace, BASE)
    patch_status(cluster, namespace, {"status": FULL_STATUS})
    assert get(cluster, namespace, "base")["status"] == FULL_STATUS


def test_status_patch_does_not_change_spec(cluster: Any, namespace: str) -> None:
    create(cluster, namespace, BASE)
    before = get(cluster, namespace, "base")
    patch_status(cluster, namespace, {"status": {"cycle": 1}, "spec": {"suspend": True}})
    after = get(cluster, namespace, "base")
    assert after["status"] == {"cycle": 1}
    assert after["spec"] == before["spec"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]


def test_spec_patch_does_not_change_status(cluster: Any, namespace: str) -> None:
    create(cluster, namespace, BASE)
    patch_status(cluster, namespace, {"status": {"cycle": 1, "step": "Training"}})
    cluster.kubectl(
        "patch",
        "modelcycle",
        "base",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"suspend": True}, "status": {"cycle": 99, "step": "Failed"}}),
    )
    after = get(cluster, namespace, "base")
    assert after["spec"]["suspend"] is True
    assert after["status"] == {"cycle": 1, "step": "Training"}
    assert after["metadata"]["generation"] == 2


def _condition(**overrides: Any) -> dict[str, Any]:
    return {**FULL_STATUS["conditions"][0], **overrides}


INVALID_STATUS = [
    pytest.param({"step": "Bogus"}, ["status.step: Unsupported value"], id="step-enum"),
    pytest.param(
        {"conditions": [_condition(), _condition(status="False")]},
        ["status.conditions[1]: Duplicate value"],
        id="duplicate-condition-type",
    ),
    pytest.param(
        {"conditions": [_condition(status="Maybe")]},
        ["status.conditions[0].status: Unsupported value"],
        id="condition-status-enum",
    ),
    pytest.param(
        {"conditions": [{k: v for k, v in _condition().items() if k != "reason"}]},
        ["status.conditions[0].reason: Required value"],
        id="condition-without-reason",
    ),
    pytest.param(
        {"conditions": [_condition(lastTransitionTime="yesterday")]},
        ["status.conditions[0].lastTransitionTime", "date-time"],
        id="condition-time-format",
    ),
    pytest.param(
        {"history": [{"cycle": i} for i in range(21)]},
        ["status.history", "must have at most 20 items"],
        id="history-too-long",
    ),
    pytest.param(
        {"triggers": {"alertKeys": [f"k{i}@t" for i in range(101)]}},
        ["status.triggers.alertKeys", "must have at most 100 items"],
        id="alert-keys-too-many",
    ),
    pytest.param(
        {"lastTrigger": {"type": "Cron"}},
        ["status.lastTrigger.type: Unsupported value"],
        id="trigger-enum",
    ),
    pytest.param(
        {"champion": {"metrics": {"accuracy": "high"}}},
        ["status.champion.metrics.accuracy", "must be of type number"],
        id="metric-not-a-number",
    ),
    pytest.param(
        {"history": [{"cycle": 1, "verdict": "Won"}]},
        ["status.history[0].verdict: Unsupported value"],
        id="verdict-enum",
    ),
]


@pytest.mark.parametrize(("status", "expected"), INVALID_STATUS)
def test_invalid_status_is_rejected(
    cluster: Any, namespace: str, status: dict[str, Any], expected: list[str]
) -> None:
    create(cluster, namespace, BASE)
    result = patch_status(cluster, namespace, {"status": status}, check=False)
    assert result.returncode != 0, f"accepted: {status}"
    for text in expected:
        assert text in result.stderr, result.stderr
    assert "status" not in get(cluster, namespace, "base")


# --------------------------------------------------------------------------- printing


def _table(cluster: Any, namespace: str, *args: str) -> list[list[str]]:
    out = cluster.kubectl("get", *args, "-n", namespace).stdout
    return [line.split() for line in out.strip().splitlines()]


def test_printer_columns(cluster: Any, namespace: str) -> None:
    create(cluster, namespace, BASE)
    header = _table(cluster, namespace, "mc")[0]
    assert header == ["NAME", "READY", "CYCLE", "SERVING", "ACCURACY", "AGE"]

    patch_status(cluster, namespace, {"status": FULL_STATUS})
    header, row = _table(cluster, namespace, "mc", "-o", "wide")
    assert header == [
        "NAME",
        "READY",
        "CYCLE",
        "SERVING",
        "ACCURACY",
        "AGE",
        "STEP",
        "METRIC",
        "SCORE",
        "REASON",
    ]
    values = dict(zip(header, row, strict=True))
    assert values["NAME"] == "base"
    assert values["READY"] == "True"
    assert values["CYCLE"] == "2"
    assert values["SERVING"] == "2-0123abcd"
    assert values["ACCURACY"] == "0.97"
    assert values["STEP"] == "Serving"
    assert values["METRIC"] == "accuracy"
    assert values["SCORE"] == "0.97"
    assert values["REASON"] == "Serving"


@pytest.mark.parametrize("resource", ["mc", "modelcycle", "modelcycles", "mlops"])
def test_names_and_category_resolve(cluster: Any, namespace: str, resource: str) -> None:
    create(cluster, namespace, BASE)
    listed = cluster.kubectl("get", resource, "-n", namespace, "-o", "name").stdout.split()
    assert listed == ["modelcycle.modelcycle.dev/base"]
