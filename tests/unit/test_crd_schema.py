"""The ModelCycle CRD and the examples, checked without a cluster.

What the API server would reject when the CRD is installed (a field without a type, a
default that fails its own schema) and what it cannot know (a field without a
description, an unbounded string that inflates the CEL cost estimate, a printer column
pointing at a field that does not exist, drift from docs/architecture.md) is caught here.
Every example is defaulted and validated by a small validator for the subset of OpenAPI v3
the CRD uses. CEL rules (x-kubernetes-validations) are only checked for shape here; the
server evaluates them in tests/integration/test_crd_validation.py.
"""

from __future__ import annotations

import copy
import datetime
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "modelcycle.dev_modelcycles.yaml"
EXAMPLES = ROOT / "examples"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

Schema = dict[str, Any]


def _load_crd() -> dict[str, Any]:
    with CRD_PATH.open(encoding="utf-8") as f:
        crd: dict[str, Any] = yaml.safe_load(f)
    return crd


CRD = _load_crd()
VERSION = CRD["spec"]["versions"][0]
SCHEMA: Schema = VERSION["schema"]["openAPIV3Schema"]


# --------------------------------------------------------------------------- walking


def walk(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """Every subschema with a readable path: `spec.data.url`, `status.history[]`, `...{}`."""
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}" if path else name)
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


ALL_NODES = dict(walk(SCHEMA))
FIELD_PATHS = [p for p in ALL_NODES if p]


def node(path: str) -> Schema:
    return ALL_NODES[path]


def resolve_json_path(json_path: str) -> Schema:
    """The schema a printer column's JSONPath (or a `status.history[].cycle` path) reads;
    `[?(...)]` filters step into items, unknown keys into a map's values."""
    current = SCHEMA
    for part in (
        re.sub(r"\[\?\(.*?\)\]", "[]", json_path).replace("[]", ".[]").strip(".").split(".")
    ):
        if part == "[]":
            current = current["items"]
        elif part == "metadata" and current is SCHEMA:
            return {"type": "object"}
        elif part in current.get("properties", {}):
            current = current["properties"][part]
        else:  # a key of a map, e.g. metrics.accuracy
            current = current["additionalProperties"]
    return current


# --------------------------------------------------------------------------- validator


class SchemaError(AssertionError):
    pass


_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$",
)


def _type_ok(value: Any, type_: str) -> bool:
    match type_:
        case "object":
            return isinstance(value, dict)
        case "array":
            return isinstance(value, list)
        case "string":
            return isinstance(value, str)
        case "boolean":
            return isinstance(value, bool)
        case "integer":
            return isinstance(value, int) and not isinstance(value, bool)
        case "number":
            return isinstance(value, int | float) and not isinstance(value, bool)
    raise SchemaError(f"validator does not know type {type_!r}")


def validate(value: Any, schema: Schema, path: str = "") -> list[str]:
    """Errors of `value` against the OpenAPI subset the CRD uses; unknown fields are errors
    (as with `kubectl --validate=strict`)."""
    where = path or "<root>"
    if value is None:
        return [] if schema.get("nullable") else [f"{where}: must not be null"]
    if schema.get("x-kubernetes-int-or-string"):
        if not (_type_ok(value, "integer") or _type_ok(value, "string")):
            return [f"{where}: must be an integer or a string"]
    elif not _type_ok(value, schema["type"]):
        return [f"{where}: must be of type {schema['type']}"]

    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} not in {schema['enum']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{where}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{where}: {value} > maximum {schema['maximum']}")
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{where}: longer than {schema['maxLength']}")
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{where}: shorter than {schema['minLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
        if schema.get("format") == "date-time" and not _RFC3339.match(value):
            errors.append(f"{where}: {value!r} is not an RFC 3339 date-time")
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{where}: more than {schema['maxItems']} items")
        for i, item in enumerate(value):
            errors += validate(item, schema["items"], f"{path}[{i}]")
    if isinstance(value, dict):
        errors += _validate_object(value, schema, path, where)
    return errors


def _validate_object(value: dict[str, Any], schema: Schema, path: str, where: str) -> list[str]:
    errors = [f"{where}.{key}: required" for key in schema.get("required", []) if key not in value]
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        errors.append(f"{where}: more than {schema['maxProperties']} properties")
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return errors
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    for key, sub in value.items():
        child = f"{path}.{key}" if path else key
        if key in properties:
            errors += validate(sub, properties[key], child)
        elif isinstance(extra, dict):
            errors += validate(sub, extra, child)
        elif not (path == "" and key == "metadata"):
            errors.append(f'unknown field "{child}"')
    return errors


def apply_defaults(value: Any, schema: Schema) -> Any:
    """Defaulting as the API server does it: fill missing properties with a copy of their
    default, then descend (so defaults of defaults apply too)."""
    if isinstance(value, dict):
        out = dict(value)
        for key, sub in schema.get("properties", {}).items():
            if key not in out and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
        for key, sub in schema.get("properties", {}).items():
            if key in out:
                out[key] = apply_defaults(out[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in set(out) - set(schema.get("properties", {})):
                out[key] = apply_defaults(out[key], extra)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(item, schema["items"]) for item in value]
    return value


# --------------------------------------------------------------------------- examples


def _example_documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        with path.open(encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                if isinstance(doc, dict) and doc.get("kind") == "ModelCycle":
                    docs.append((path.name, doc))
    return docs


EXAMPLE_DOCS = _example_documents()
EXAMPLE_IDS = [name for name, _ in EXAMPLE_DOCS]

# A small valid ModelCycle the negative tests of the validator mutate.
BASE: dict[str, Any] = {
    "apiVersion": "modelcycle.dev/v1alpha1",
    "kind": "ModelCycle",
    "metadata": {"name": "base"},
    "spec": {"evaluation": {"threshold": 0.8}},
}


DELETE = object()


def with_value(obj: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    *parents, last = dotted.split(".")
    target = out
    for key in parents:
        target = target.setdefault(key, {})
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return out


# =========================================================================== tests


class TestCrdIdentity:
    def test_is_a_v1_crd(self) -> None:
        assert CRD["apiVersion"] == "apiextensions.k8s.io/v1"
        assert CRD["kind"] == "CustomResourceDefinition"
        assert CRD["metadata"]["name"] == "modelcycles.modelcycle.dev"

    @pytest.mark.parametrize(
        ("key", "expected"),
        [
            ("kind", "ModelCycle"),
            ("listKind", "ModelCycleList"),
            ("plural", "modelcycles"),
            ("singular", "modelcycle"),
            ("shortNames", ["mc"]),
            ("categories", ["mlops"]),
        ],
    )
    def test_names(self, key: str, expected: object) -> None:
        assert CRD["spec"]["names"][key] == expected

    def test_group_and_scope(self) -> None:
        assert CRD["spec"]["group"] == "modelcycle.dev"
        assert CRD["spec"]["scope"] == "Namespaced"

    def test_one_served_storage_version_with_status_subresource(self) -> None:
        assert [v["name"] for v in CRD["spec"]["versions"]] == ["v1alpha1"]
        assert VERSION["served"] is True
        assert VERSION["storage"] is True
        assert VERSION["subresources"] == {"status": {}}


READY = '.status.conditions[?(@.type=="Ready")]'
COLUMNS = [
    # name, type, jsonPath, priority
    ("Ready", "string", f"{READY}.status", 0),
    ("Cycle", "integer", ".status.cycle", 0),
    ("Serving", "string", ".status.champion.version", 0),
    ("Accuracy", "number", ".status.champion.metrics.accuracy", 0),
    ("Age", "date", ".metadata.creationTimestamp", 0),
    ("Step", "string", ".status.step", 1),
    ("Metric", "string", ".status.champion.metric", 1),
    ("Score", "number", ".status.champion.score", 1),
    ("Reason", "string", f"{READY}.reason", 1),
]


class TestPrinterColumns:
    def test_order(self) -> None:
        assert [c["name"] for c in VERSION["additionalPrinterColumns"]] == [c[0] for c in COLUMNS]

    @pytest.mark.parametrize(
        ("name", "type_", "json_path", "priority"), COLUMNS, ids=[c[0] for c in COLUMNS]
    )
    def test_column(self, name: str, type_: str, json_path: str, priority: int) -> None:
        column = next(c for c in VERSION["additionalPrinterColumns"] if c["name"] == name)
        assert column["type"] == type_
        assert column["jsonPath"] == json_path
        assert column.get("priority", 0) == priority
        assert column.get("description")

    @pytest.mark.parametrize("column", VERSION["additionalPrinterColumns"], ids=lambda c: c["name"])
    def test_column_reads_a_field_of_matching_type(self, column: dict[str, Any]) -> None:
        target = resolve_json_path(column["jsonPath"])
        if column["type"] != "date":
            assert target["type"] == column["type"]


class TestStructuralSchema:
    @pytest.mark.parametrize("path", ["", *FIELD_PATHS])
    def test_every_field_has_a_description(self, path: str) -> None:
        description = node(path).get("description", "")
        assert isinstance(description, str)
        assert description.strip(), f"{path or '<root>'} has no description"

    @pytest.mark.parametrize("path", ["", *FIELD_PATHS])
    def test_every_field_has_a_type(self, path: str) -> None:
        schema = node(path)
        if schema.get("x-kubernetes-int-or-string"):
            assert schema["anyOf"] == [{"type": "integer"}, {"type": "string"}]
            assert "type" not in schema
        else:
            assert schema["type"] in {"object", "array", "string", "integer", "number", "boolean"}

    @pytest.mark.parametrize("path", ["", *FIELD_PATHS])
    def test_no_additional_properties_false(self, path: str) -> None:
        """Structural schemas prune unknown fields; `false` would be rejected by the server."""
        schema = node(path)
        assert schema.get("additionalProperties", {}) is not False
        assert not ("properties" in schema and "additionalProperties" in schema)

    @pytest.mark.parametrize(
        "path",
        [
            p
            for p in FIELD_PATHS
            if node(p).get("type") == "string" and p not in {"apiVersion", "kind"}
        ],
    )
    def test_every_free_string_is_bounded(self, path: str) -> None:
        """Unbounded strings make the CEL cost estimate exceed the server's budget."""
        schema = node(path)
        if "enum" in schema or schema.get("format") == "date-time":
            return
        assert isinstance(schema.get("maxLength"), int), f"{path} has no maxLength"

    @pytest.mark.parametrize("path", [p for p in FIELD_PATHS if node(p).get("type") == "array"])
    def test_every_list_is_bounded(self, path: str) -> None:
        assert isinstance(node(path).get("maxItems"), int)

    @pytest.mark.parametrize(
        "path",
        [
            p
            for p in FIELD_PATHS
            if "additionalProperties" in node(p)
            or node(p).get("x-kubernetes-preserve-unknown-fields")
        ],
    )
    def test_every_map_is_bounded(self, path: str) -> None:
        assert isinstance(node(path).get("maxProperties"), int)

    @pytest.mark.parametrize("path", [p for p in ["", *FIELD_PATHS] if "default" in node(p)])
    def test_defaults_satisfy_their_own_schema(self, path: str) -> None:
        schema = node(path)
        default = apply_defaults(schema["default"], schema)
        assert validate(default, schema, path) == []

    @pytest.mark.parametrize("path", [p for p in FIELD_PATHS if "pattern" in node(p)])
    def test_patterns_compile(self, path: str) -> None:
        re.compile(node(path)["pattern"])

    def test_only_parameters_preserve_unknown_fields(self) -> None:
        preserving = [p for p in FIELD_PATHS if node(p).get("x-kubernetes-preserve-unknown-fields")]
        assert preserving == ["spec.training.parameters"]
        assert node("spec.training.parameters")["type"] == "object"


RULES = [
    (path, rule)
    for path, schema in walk(SCHEMA)
    for rule in schema.get("x-kubernetes-validations", [])
]


class TestCelRules:
    @pytest.mark.parametrize(
        ("path", "rule"), RULES, ids=[f"{p or 'root'}-{i}" for i, (p, _) in enumerate(RULES)]
    )
    def test_rule_has_a_message_and_a_valid_field_path(
        self, path: str, rule: dict[str, Any]
    ) -> None:
        assert rule["rule"].strip()
        assert rule["message"].strip()
        if "fieldPath" in rule:
            assert rule["fieldPath"].startswith(".")
            assert f"{path}{rule['fieldPath']}" in ALL_NODES

    @pytest.mark.parametrize(
        ("path", "fragment"),
        [
            ("", "metadata.name"),
            ("spec", "regression metrics"),
            ("spec", "classification metrics"),
            ("spec.data", "exactly one of spec.data.builtin, spec.data.url or spec.data.file"),
            ("spec.data", "target column"),
            ("spec.data", "builtin dataset"),
            ("spec.data.url.url", "http:// or https://"),
            ("spec.data.file.path", "relative"),
            ("spec.data.file.path", "'..'"),
            ("spec.evaluation", "within [0, 1]"),
            ("spec.evaluation", ">= 0 for the error metrics"),
            ("spec.evaluation", "<= 1 for metric r2"),
            ("spec.evaluation", "compareWithChampion"),
            ("spec.monitoring.schedule", "5-field cron"),
            ("spec.monitoring.alerts.matchLabels", "modelcycle or namespace"),
            ("spec.artifacts", "existingClaim"),
        ],
    )
    def test_cross_field_rule_exists(self, path: str, fragment: str) -> None:
        messages = [r["message"] for p, r in RULES if p == path]
        assert any(fragment in m for m in messages), messages

    @pytest.mark.parametrize(
        ("schedule", "ok"),
        [
            ("", True),
            ("0 3 * * *", True),
            ("*/15 * * * 1-5", True),
            ("0 0 1 JAN,JUL MON", True),
            ("0 3 * *", False),
            ("0 3 * * * *", False),
            ("daily", False),
            ("@hourly", False),
        ],
    )
    def test_schedule_regex(self, schedule: str, ok: bool) -> None:
        """The cron rule's regex, run by Python (RE2 and `re` agree on it)."""
        rule = node("spec.monitoring.schedule")["x-kubernetes-validations"][0]["rule"]
        regex = re.search(r"matches\('(.*)'\)", rule)
        assert regex
        assert (schedule == "" or re.search(regex.group(1), schedule) is not None) is ok

    @pytest.mark.parametrize(
        ("path_value", "ok"),
        [
            ("datasets/x.csv", True),
            ("x..csv", True),
            ("a/..b/c.csv", True),
            ("../x.csv", False),
            ("a/../b.csv", False),
            ("a/..", False),
            ("..", False),
        ],
    )
    def test_file_path_dotdot_regex(self, path_value: str, ok: bool) -> None:
        rules = node("spec.data.file.path")["x-kubernetes-validations"]
        rule = next(r["rule"] for r in rules if "matches" in r["rule"])
        regex = re.search(r"matches\('(.*)'\)", rule)
        assert regex
        assert (re.search(regex.group(1), path_value) is None) is ok


class TestSpecSchema:
    def test_spec_and_evaluation_threshold_are_required(self) -> None:
        assert SCHEMA["required"] == ["spec"]
        assert node("spec")["required"] == ["evaluation"]
        assert node("spec.evaluation")["required"] == ["threshold"]
        assert "default" not in node("spec.evaluation")

    def test_data_defaults_to_builtin_iris(self) -> None:
        assert node("spec.data")["default"] == {"builtin": {"name": "iris"}}

    @pytest.mark.parametrize(
        ("path", "minimum", "maximum", "default"),
        [
            ("spec.data.testFraction", 0.05, 0.9, 0.25),
            ("spec.data.seed", 0, 2**31 - 1, 42),
            ("spec.training.activeDeadlineSeconds", 30, 86400, 900),
            ("spec.training.backoffLimit", 0, 10, 1),
            ("spec.serving.replicas", 0, 20, 1),
            ("spec.serving.port", 1024, 65535, 8080),
            ("spec.serving.progressDeadlineSeconds", 10, 3600, 180),
            ("spec.monitoring.cooldownSeconds", 0, 604800, 300),
            ("spec.monitoring.builtin.intervalSeconds", 5, 3600, 30),
            ("spec.monitoring.builtin.minAccuracy", 0, 1, 0.7),
            ("spec.monitoring.builtin.driftPValue", 0, 1, 0.05),
            ("spec.monitoring.builtin.driftFraction", 0, 1, 0.5),
        ],
    )
    def test_ranges(self, path: str, minimum: float, maximum: float, default: float) -> None:
        schema = node(path)
        assert (schema["minimum"], schema["maximum"], schema["default"]) == (
            minimum,
            maximum,
            default,
        )

    @pytest.mark.parametrize(
        ("path", "values"),
        [
            ("spec.data.builtin.name", ["iris", "wine", "breast_cancer", "digits", "diabetes"]),
            ("spec.data.url.format", ["csv", "parquet"]),
            ("spec.data.file.format", ["csv", "parquet"]),
            ("spec.data.task", ["auto", "classification", "regression"]),
            ("spec.training.preprocessing", ["none", "standard", "minmax"]),
            (
                "spec.evaluation.metric",
                [
                    "accuracy",
                    "balanced_accuracy",
                    "f1_macro",
                    "precision_macro",
                    "recall_macro",
                    "roc_auc",
                    "r2",
                    "rmse",
                    "mae",
                ],
            ),
        ],
    )
    def test_enums(self, path: str, values: list[str]) -> None:
        assert node(path)["enum"] == values

    @pytest.mark.parametrize(
        ("estimator", "ok"),
        [
            ("sklearn.linear_model.LogisticRegression", True),
            ("xgboost.XGBClassifier", True),
            ("_private.Mod_1", True),
            ("LogisticRegression", False),
            ("sklearn..Ridge", False),
            ("sklearn.linear_model.", False),
            ("1sklearn.Ridge", False),
            ("sklearn.linear-model.Ridge", False),
            ("os.system; rm", False),
        ],
    )
    def test_estimator_pattern(self, estimator: str, ok: bool) -> None:
        errors = validate(estimator, node("spec.training.estimator"), "estimator")
        assert (errors == []) is ok

    @pytest.mark.parametrize("side", ["training", "serving"])
    @pytest.mark.parametrize("kind", ["requests", "limits"])
    @pytest.mark.parametrize(
        ("quantity", "ok"),
        [("500m", True), ("1Gi", True), (2, True), ("1.5", True), ("1e3", True), ("lots", False)],
    )
    def test_resources_are_resource_requirements(
        self, side: str, kind: str, quantity: object, ok: bool
    ) -> None:
        schema = node(f"spec.{side}.resources.{kind}")
        assert schema["additionalProperties"]["x-kubernetes-int-or-string"] is True
        assert (validate({"cpu": quantity}, schema, kind) == []) is ok


class TestStatusSchema:
    def test_conditions_are_a_map_list_of_metav1_conditions(self) -> None:
        conditions = node("status.conditions")
        assert conditions["x-kubernetes-list-type"] == "map"
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]
        item = conditions["items"]
        assert set(item["required"]) == {
            "type",
            "status",
            "lastTransitionTime",
            "reason",
            "message",
        }
        assert set(item["properties"]) == set(item["required"]) | {"observedGeneration"}
        assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
        assert item["properties"]["lastTransitionTime"]["format"] == "date-time"
        assert item["properties"]["observedGeneration"]["type"] == "integer"

    @pytest.mark.parametrize(
        ("path", "max_items"), [("status.history", 20), ("status.triggers.alertKeys", 100)]
    )
    def test_bounded_lists(self, path: str, max_items: int) -> None:
        assert node(path)["maxItems"] == max_items

    @pytest.mark.parametrize("path", ["status.champion.metrics", "status.challenger.metrics"])
    def test_metrics_are_maps_of_numbers(self, path: str) -> None:
        assert node(path)["additionalProperties"]["type"] == "number"

    def test_a_full_status_validates(self) -> None:
        status = {
            "observedGeneration": 3,
            "cycle": 2,
            "step": "Serving",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "observedGeneration": 3,
                    "lastTransitionTime": "2025-01-01T00:00:00Z",
                    "reason": "Serving",
                    "message": "serving 2-0123abcd",
                }
            ],
            "champion": {
                "cycle": 2,
                "version": "2-0123abcd",
                "score": 0.97,
                "metrics": {"accuracy": 0.97},
            },
            "challenger": {"cycle": 2, "verdict": "Promoted", "reason": "accuracy 0.97 >= 0.9"},
            "endpoint": {
                "service": "iris-serving",
                "url": "http://iris-serving.ns.svc:8080",
                "modelName": "iris",
            },
            "lastTrigger": {
                "type": "Manual",
                "time": "2025-01-01T00:00:00.5+00:00",
                "generation": 3,
            },
            "triggers": {"handledRetrain": "1", "handledGeneration": 3, "alertKeys": ["f@t"]},
            "history": [{"cycle": 1, "trigger": "Created", "verdict": "Failed", "score": None}],
        }
        assert validate(status, SCHEMA["properties"]["status"], "status") == []


class TestExamples:
    def test_the_documented_examples_exist(self) -> None:
        assert {p.name for p in EXAMPLES.glob("*.yaml")} >= {
            "iris.yaml",
            "wine-random-forest.yaml",
            "diabetes-regression.yaml",
            "csv-url.yaml",
            "monitored.yaml",
        }
        assert len(EXAMPLE_DOCS) >= 5

    @pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
    def test_example_is_commented_for_users(self, path: Path) -> None:
        assert path.read_text(encoding="utf-8").startswith("#")

    @pytest.mark.parametrize(("name", "doc"), EXAMPLE_DOCS, ids=EXAMPLE_IDS)
    def test_example_validates_after_defaulting(self, name: str, doc: dict[str, Any]) -> None:
        assert validate(apply_defaults(doc, SCHEMA), SCHEMA) == []

    @pytest.mark.parametrize(("name", "doc"), EXAMPLE_DOCS, ids=EXAMPLE_IDS)
    def test_example_is_namespace_less_and_well_named(self, name: str, doc: dict[str, Any]) -> None:
        assert doc["apiVersion"] == "modelcycle.dev/v1alpha1"
        assert "namespace" not in doc["metadata"]
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
        assert len(doc["metadata"]["name"]) <= 45
        assert "status" not in doc

    @pytest.mark.parametrize(("name", "doc"), EXAMPLE_DOCS, ids=EXAMPLE_IDS)
    def test_example_has_exactly_one_data_source(self, name: str, doc: dict[str, Any]) -> None:
        """The CEL one-of rule, checked in Python for the examples."""
        data = apply_defaults(doc, SCHEMA)["spec"]["data"]
        assert len({"builtin", "url", "file"} & set(data)) == 1

    @pytest.mark.parametrize(
        ("file", "dotted", "expected"),
        [
            ("iris.yaml", "spec.data.builtin.name", "iris"),
            ("iris.yaml", "spec.training.estimator", "sklearn.linear_model.LogisticRegression"),
            ("iris.yaml", "spec.training.parameters.max_iter", 500),
            ("iris.yaml", "spec.evaluation.metric", "accuracy"),
            ("iris.yaml", "spec.evaluation.threshold", 0.9),
            (
                "wine-random-forest.yaml",
                "spec.training.estimator",
                "sklearn.ensemble.RandomForestClassifier",
            ),
            ("wine-random-forest.yaml", "spec.evaluation.compareWithChampion", True),
            ("diabetes-regression.yaml", "spec.training.estimator", "sklearn.linear_model.Ridge"),
            ("diabetes-regression.yaml", "spec.evaluation.metric", "rmse"),
            ("diabetes-regression.yaml", "spec.data.task", "regression"),
            ("csv-url.yaml", "spec.data.url.format", "csv"),
            ("monitored.yaml", "spec.monitoring.builtin.enabled", True),
            ("monitored.yaml", "spec.monitoring.alerts.enabled", True),
        ],
    )
    def test_example_content(self, file: str, dotted: str, expected: object) -> None:
        doc = next(d for n, d in EXAMPLE_DOCS if n == file)
        value: Any = doc
        for key in dotted.split("."):
            value = value[key]
        assert value == expected

    @pytest.mark.parametrize(
        "dotted",
        [
            "spec.data.url.url",
            "spec.data.target",
            "spec.monitoring.schedule",
            "spec.monitoring.alerts.matchLabels",
        ],
    )
    def test_csv_and_monitored_examples_set_their_fields(self, dotted: str) -> None:
        docs = dict(EXAMPLE_DOCS)
        doc = docs["csv-url.yaml"] if dotted.startswith("spec.data") else docs["monitored.yaml"]
        value: Any = doc
        for key in dotted.split("."):
            value = value[key]
        assert value
        if dotted == "spec.data.url.url":
            assert value.startswith("https://")


class TestValidatorRejects:
    """The validator the examples pass is not vacuous: it rejects what the server would."""

    def test_base_is_valid(self) -> None:
        assert validate(apply_defaults(BASE, SCHEMA), SCHEMA) == []

    @pytest.mark.parametrize(
        ("dotted", "value", "error"),
        [
            ("spec.foo", 1, 'unknown field "spec.foo"'),
            ("spec.training.foo", 1, 'unknown field "spec.training.foo"'),
            ("spec.evaluation", DELETE, "spec.evaluation: required"),
            ("spec.evaluation.threshold", DELETE, "spec.evaluation.threshold: required"),
            (
                "spec.evaluation.threshold",
                "high",
                "spec.evaluation.threshold: must be of type number",
            ),
            ("spec.evaluation.metric", "precision", "spec.evaluation.metric: 'precision' not in"),
            ("spec.data.testFraction", 0.01, "spec.data.testFraction: 0.01 < minimum"),
            ("spec.data.seed", 2**31, "spec.data.seed: 2147483648 > maximum"),
            ("spec.data.builtin", {"name": "mnist"}, "spec.data.builtin.name: 'mnist' not in"),
            ("spec.data.url", {"format": "csv"}, "spec.data.url.url: required"),
            ("spec.serving.port", 80, "spec.serving.port: 80 < minimum"),
            ("spec.serving.replicas", 1.5, "spec.serving.replicas: must be of type integer"),
            ("spec.suspend", "yes", "spec.suspend: must be of type boolean"),
            ("spec.training.estimator", "Ridge", "spec.training.estimator: 'Ridge' does not match"),
            ("spec.training.parameters", [1], "spec.training.parameters: must be of type object"),
            (
                "spec.monitoring.alerts.matchLabels",
                {"team": 1},
                "spec.monitoring.alerts.matchLabels.team: must be of type string",
            ),
            ("spec.monitoring.schedule", "x" * 129, "spec.monitoring.schedule: longer than 128"),
            ("spec.artifacts.size", "big", "spec.artifacts.size: 'big' does not match"),
            (
                "spec.artifacts.existingClaim",
                "Bad_Name",
                "spec.artifacts.existingClaim: 'Bad_Name' does not match",
            ),
            ("status.step", "Bogus", "status.step: 'Bogus' not in"),
            (
                "status.history",
                [{"cycle": i} for i in range(21)],
                "status.history: more than 20 items",
            ),
            (
                "status.triggers",
                {"alertKeys": ["k"] * 101},
                "status.triggers.alertKeys: more than 100 items",
            ),
            (
                "status.conditions",
                [{"type": "Ready", "status": "True"}],
                "status.conditions[0].reason: required",
            ),
            (
                "status.lastTrigger",
                {"time": "yesterday"},
                "status.lastTrigger.time: 'yesterday' is not an RFC 3339",
            ),
        ],
    )
    def test_rejects(self, dotted: str, value: object, error: str) -> None:
        errors = validate(apply_defaults(with_value(BASE, dotted, value), SCHEMA), SCHEMA)
        assert any(e.startswith(error) for e in errors), errors


class TestDefaulting:
    def test_minimal_object_gets_the_documented_defaults(self) -> None:
        spec = apply_defaults(BASE, SCHEMA)["spec"]
        assert spec["data"] == {
            "builtin": {"name": "iris"},
            "target": "target",
            "task": "auto",
            "testFraction": 0.25,
            "seed": 42,
            "includeFeedback": True,
        }
        assert spec["training"]["estimator"] == "sklearn.linear_model.LogisticRegression"
        assert spec["evaluation"] == {
            "threshold": 0.8,
            "metric": "accuracy",
            "compareWithChampion": False,
            "minImprovement": 0.0,
        }
        assert spec["serving"]["port"] == 8080
        assert spec["monitoring"]["builtin"]["enabled"] is False
        assert spec["artifacts"] == {"existingClaim": "", "size": "1Gi", "storageClassName": ""}

    def test_a_given_data_section_is_not_replaced_by_the_default(self) -> None:
        obj = with_value(BASE, "spec.data", {"url": {"url": "https://example.com/x.csv"}})
        data = apply_defaults(obj, SCHEMA)["spec"]["data"]
        assert "builtin" not in data
        assert data["url"]["format"] == "csv"


# ---------------------------------------------------------------- docs/architecture.md


def _architecture_blocks() -> tuple[str, str]:
    """The `spec:` and `status:` YAML blocks of docs/architecture.md."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    spec = next(b for b in blocks if b.startswith("spec:"))
    status = next(b for b in blocks if b.startswith("status:"))
    return spec, status


DOC_SPEC, DOC_STATUS = _architecture_blocks()
FREE_FORM = ("spec.training.parameters", "spec.training.resources", "spec.serving.resources")


def _leaves(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict) and value and not path.startswith(FREE_FORM):
        for key, sub in value.items():
            if key != "...":  # the page's "and so on"
                yield from _leaves(sub, f"{path}.{key}")
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        yield from _leaves(value[0], f"{path}[]")
    else:
        yield path, value


DOC_SPEC_LEAVES = dict(_leaves(yaml.safe_load(DOC_SPEC)["spec"], "spec"))
DOC_STATUS_LEAVES = dict(_leaves(yaml.safe_load(DOC_STATUS)["status"], "status"))
# Leaves whose documented value is an example, not a default.
NOT_DEFAULTS = {
    "spec.data.builtin.name",
    "spec.data.url.url",
    "spec.data.file.path",
    "spec.evaluation.threshold",
    "spec.training.resources",
    "spec.serving.resources",
}


def _comment_annotations() -> Iterator[tuple[str, str]]:
    """(field path, comment) for every `key: value  # comment` line of the spec block whose
    value is not a flow mapping."""
    stack: list[tuple[int, str]] = []
    for line in DOC_SPEC.splitlines():
        m = re.match(r"^(\s*)(\w+):\s*([^#]*?)\s*(?:#\s*(.*))?$", line)
        if not m:
            continue
        indent, key, value, comment = len(m.group(1)), m.group(2), m.group(3), m.group(4)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        if comment and not value.startswith("{"):
            yield ".".join(k for _, k in stack), comment


ANNOTATIONS = list(_comment_annotations())
DOC_ENUMS = [
    (path, comment.split(" | "))
    for path, comment in ANNOTATIONS
    if re.fullmatch(r"\w+( \| \w+)+", comment)
]
DOC_RANGES = [
    (path, m.group(1), m.group(2))
    for path, comment in ANNOTATIONS
    if (m := re.match(r"^([-\d.^]+?)\.\.([-\d.^]+)(;|$)", comment))
]


def _number(text: str) -> float:
    return float(2**31 - 1) if text == "2^31-1" else float(text)


class TestMatchesArchitecture:
    @pytest.mark.parametrize("path", sorted(DOC_SPEC_LEAVES))
    def test_documented_spec_field_exists(self, path: str) -> None:
        assert path in ALL_NODES

    @pytest.mark.parametrize(
        "path",
        [
            p
            for p in FIELD_PATHS
            if p.startswith("spec.")
            and not p.startswith(FREE_FORM)
            and not node(p).get("properties")
            and "{}" not in p
        ],
    )
    def test_every_spec_field_is_documented(self, path: str) -> None:
        assert path in DOC_SPEC_LEAVES

    @pytest.mark.parametrize("path", sorted(set(DOC_SPEC_LEAVES) - NOT_DEFAULTS))
    def test_documented_value_is_the_default(self, path: str) -> None:
        documented = DOC_SPEC_LEAVES[path]
        default = node(path).get("default")
        if isinstance(documented, float):
            assert isinstance(default, int | float)
            assert math.isclose(default, documented)
        else:
            assert default == documented

    @pytest.mark.parametrize(("path", "values"), DOC_ENUMS, ids=[p for p, _ in DOC_ENUMS])
    def test_documented_enum(self, path: str, values: list[str]) -> None:
        assert node(path)["enum"] == values

    @pytest.mark.parametrize(("path", "low", "high"), DOC_RANGES, ids=[p for p, _, _ in DOC_RANGES])
    def test_documented_range(self, path: str, low: str, high: str) -> None:
        schema = node(path)
        assert math.isclose(schema["minimum"], _number(low))
        assert math.isclose(schema["maximum"], _number(high))

    def test_annotations_were_found(self) -> None:
        """Guards the comment parser: the page documents at least these."""
        assert {p for p, _ in DOC_ENUMS} >= {"spec.data.task", "spec.evaluation.metric"}
        assert len(DOC_RANGES) >= 8

    @pytest.mark.parametrize(
        "path", sorted(p for p in DOC_STATUS_LEAVES if not p.startswith("status.conditions"))
    )
    def test_documented_status_field_exists(self, path: str) -> None:
        schema = resolve_json_path(path)
        documented = DOC_STATUS_LEAVES[path]
        if isinstance(documented, str) and re.fullmatch(r"\w+(\|\w+)+", documented):
            assert schema["enum"] == documented.split("|")

    def test_documented_steps(self) -> None:
        m = re.search(r"step: \w+\s+# (.*)", DOC_STATUS)
        assert m
        assert node("status.step")["enum"] == m.group(1).split(" | ")

    def test_status_has_nothing_undocumented(self) -> None:
        top = set(SCHEMA["properties"]["status"]["properties"])
        assert top == set(yaml.safe_load(DOC_STATUS)["status"])


def test_rfc3339_helper() -> None:
    stamp = datetime.datetime.now(datetime.UTC).isoformat()
    assert _RFC3339.match(stamp)
