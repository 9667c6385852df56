"""A typed model of a ModelCycle's spec, parsed from the (API-server-defaulted) dict.

The CRD is the single source of truth for defaults and validation; the API server applies
both before the operator sees an object. The defaults are mirrored here anyway so that the
operator still works when a default is missing (an older CRD, a hand-made test object),
and the checks here repeat only what the operator relies on. A spec the operator cannot
use raises :class:`SpecError` with the field's path; the reconcile turns that into
``Stalled=True, reason=InvalidSpec`` instead of crashing.

Limits: pure data. The sections passed to the workload (``data``, ``training``, ``evaluation``) are
re-serialised by :meth:`DataSpec.to_dict` etc. in the CRD's camelCase, defaults filled in.
"""

from __future__ import annotations

import dataclasses
import math
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from modelcycle_operator.pure import naming

__all__ = [
    "BOUNDED_METRICS",
    "LOWER_IS_BETTER",
    "METRICS",
    "ArtifactsSpec",
    "BuiltinMonitorSpec",
    "DataSpec",
    "EvaluationSpec",
    "ModelCycle",
    "MonitoringSpec",
    "ServingSpec",
    "Spec",
    "SpecError",
    "TrainingSpec",
    "parse_spec",
]

METRICS = (
    "accuracy",
    "balanced_accuracy",
    "f1_macro",
    "precision_macro",
    "recall_macro",
    "roc_auc",
    "r2",
    "rmse",
    "mae",
)
LOWER_IS_BETTER = frozenset({"rmse", "mae"})
BOUNDED_METRICS = frozenset(METRICS) - LOWER_IS_BETTER

DATA_SOURCES = ("builtin", "url", "file")
TASKS = ("auto", "classification", "regression")
PREPROCESSING = ("none", "standard", "minmax")
FORMATS = ("csv", "parquet")

_ESTIMATOR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def redact_url(url: str) -> str:
    """Drop user-info, query and fragment: they may carry credentials or signed tokens."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


class SpecError(ValueError):
    """The spec cannot be used; the message starts with the offending field's path."""


# --- small typed readers ------------------------------------------------------------------


def _section(parent: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{path}.{key}: expected an object")
    return value


def _bool(d: Mapping[str, Any], key: str, default: bool, path: str) -> bool:
    value = d.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise SpecError(f"{path}.{key}: expected true or false, got {value!r}")
    return value


def _int(d: Mapping[str, Any], key: str, default: int, path: str, *, lo: int, hi: int) -> int:
    value = d.get(key, default)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{path}.{key}: expected an integer, got {value!r}")
    if not lo <= value <= hi:
        raise SpecError(f"{path}.{key}: must be within {lo}..{hi}, got {value}")
    return value


def _float(
    d: Mapping[str, Any],
    key: str,
    default: float | None,
    path: str,
    *,
    lo: float,
    hi: float,
) -> float:
    value = d.get(key, default)
    if value is None:
        raise SpecError(f"{path}.{key}: is required")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"{path}.{key}: expected a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or not lo <= number <= hi:
        raise SpecError(f"{path}.{key}: must be within {lo:g}..{hi:g}, got {value}")
    return number


def _str(d: Mapping[str, Any], key: str, default: str, path: str) -> str:
    value = d.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise SpecError(f"{path}.{key}: expected a string, got {value!r}")
    return value


def _enum(d: Mapping[str, Any], key: str, default: str, allowed: tuple[str, ...], path: str) -> str:
    value = _str(d, key, default, path)
    if value not in allowed:
        raise SpecError(f"{path}.{key}: must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _resources(d: Mapping[str, Any], path: str) -> dict[str, dict[str, str]]:
    value = _section(d, "resources", path)
    out: dict[str, dict[str, str]] = {}
    for kind in ("requests", "limits"):
        part = _section(value, kind, f"{path}.resources")
        if part:
            out[kind] = {str(k): str(v) for k, v in part.items()}
    return out


# --- sections -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DataSpec:
    source: str  # builtin | url | file
    builtin_name: str = "iris"
    url: str = ""
    file_path: str = ""
    format: str = "csv"
    target: str = "target"
    task: str = "auto"
    test_fraction: float = 0.25
    seed: int = 42
    include_feedback: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The section as the ``collect`` subcommand receives it (camelCase, defaults filled)."""
        out: dict[str, Any] = {}
        if self.source == "builtin":
            out["builtin"] = {"name": self.builtin_name}
        elif self.source == "url":
            out["url"] = {"url": self.url, "format": self.format}
        else:
            out["file"] = {"path": self.file_path, "format": self.format}
        out.update(
            target=self.target,
            task=self.task,
            testFraction=self.test_fraction,
            seed=self.seed,
            includeFeedback=self.include_feedback,
        )
        return out

    def describe(self) -> str:
        """Where the data comes from, for messages: a URL loses credentials and query."""
        if self.source == "builtin":
            return f"builtin dataset {self.builtin_name}"
        if self.source == "url":
            return redact_url(self.url)
        return f"file {self.file_path}"


@dataclasses.dataclass(frozen=True)
class TrainingSpec:
    estimator: str = "sklearn.linear_model.LogisticRegression"
    parameters: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    preprocessing: str = "none"
    image: str = ""
    resources: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)
    active_deadline_seconds: int = 900
    backoff_limit: int = 1

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "estimator": self.estimator,
            "parameters": dict(self.parameters),
            "preprocessing": self.preprocessing,
            "activeDeadlineSeconds": self.active_deadline_seconds,
            "backoffLimit": self.backoff_limit,
        }
        if self.image:
            out["image"] = self.image
        if self.resources:
            out["resources"] = {k: dict(v) for k, v in self.resources.items()}
        return out


@dataclasses.dataclass(frozen=True)
class EvaluationSpec:
    metric: str = "accuracy"
    threshold: float = 0.8
    compare_with_champion: bool = False
    min_improvement: float = 0.0

    @property
    def higher_is_better(self) -> bool:
        return self.metric not in LOWER_IS_BETTER

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "threshold": self.threshold,
            "compareWithChampion": self.compare_with_champion,
            "minImprovement": self.min_improvement,
        }


@dataclasses.dataclass(frozen=True)
class ServingSpec:
    enabled: bool = True
    replicas: int = 1
    port: int = 8080
    image: str = ""
    resources: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)
    progress_deadline_seconds: int = 180
    rollback_on_failure: bool = True


@dataclasses.dataclass(frozen=True)
class ArtifactsSpec:
    existing_claim: str = ""
    size: str = "1Gi"
    storage_class_name: str = ""


@dataclasses.dataclass(frozen=True)
class BuiltinMonitorSpec:
    """``spec.monitoring.builtin``: the operator's own check of the served model."""

    enabled: bool = False
    interval_seconds: int = 30
    min_accuracy: float = 0.7
    max_error: float | None = None
    min_samples: int = 20
    drift_p_value: float = 0.05
    drift_fraction: float = 0.5
    retrain: bool = True


@dataclasses.dataclass(frozen=True)
class MonitoringSpec:
    """``spec.monitoring``: what starts a cycle besides spec changes and the annotation."""

    cooldown_seconds: int = 300
    alerts_enabled: bool = True
    match_labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    schedule: str = ""
    builtin: BuiltinMonitorSpec = dataclasses.field(default_factory=BuiltinMonitorSpec)


@dataclasses.dataclass(frozen=True)
class Spec:
    data: DataSpec
    training: TrainingSpec
    evaluation: EvaluationSpec
    serving: ServingSpec
    artifacts: ArtifactsSpec
    monitoring: MonitoringSpec
    suspend: bool = False

    @property
    def cooldown_seconds(self) -> int:
        return self.monitoring.cooldown_seconds


def _parse_data(spec: Mapping[str, Any]) -> DataSpec:
    path = "spec.data"
    d = _section(spec, "data", "spec")
    given = [s for s in DATA_SOURCES if d.get(s) is not None]
    if len(given) > 1:
        raise SpecError(f"{path}: exactly one of builtin, url, file may be set, got {given}")
    source = given[0] if given else "builtin"
    base = DataSpec(
        source=source,
        target=_str(d, "target", "target", path) or "target",
        task=_enum(d, "task", "auto", TASKS, path),
        test_fraction=_float(d, "testFraction", 0.25, path, lo=0.05, hi=0.9),
        seed=_int(d, "seed", 42, path, lo=0, hi=2**31 - 1),
        include_feedback=_bool(d, "includeFeedback", True, path),
    )
    if source == "builtin":
        b = _section(d, "builtin", path)
        name = _str(b, "name", "iris", f"{path}.builtin").strip() or "iris"
        return dataclasses.replace(base, builtin_name=name)
    if source == "url":
        u = _section(d, "url", path)
        url = _str(u, "url", "", f"{path}.url").strip()
        if not url:
            raise SpecError(f"{path}.url.url: is required")
        if not (url.startswith("http://") or url.startswith("https://")):
            raise SpecError(f"{path}.url.url: only http(s) URLs are allowed, got {url!r}")
        fmt = _enum(u, "format", "csv", FORMATS, f"{path}.url")
        return dataclasses.replace(base, url=url, format=fmt)
    f = _section(d, "file", path)
    file_path = _str(f, "path", "", f"{path}.file").strip()
    if not file_path:
        raise SpecError(f"{path}.file.path: is required")
    if file_path.startswith("/") or ".." in file_path.split("/"):
        raise SpecError(
            f"{path}.file.path: must be relative to the artifact volume, got {file_path!r}"
        )
    fmt = _enum(f, "format", "csv", FORMATS, f"{path}.file")
    return dataclasses.replace(base, file_path=file_path, format=fmt)


def _parse_training(spec: Mapping[str, Any]) -> TrainingSpec:
    path = "spec.training"
    t = _section(spec, "training", "spec")
    estimator = _str(t, "estimator", TrainingSpec.estimator, path).strip()
    if not _ESTIMATOR.match(estimator):
        raise SpecError(
            f"{path}.estimator: expected an import path module.Class, got {estimator!r}"
        )
    parameters = t.get("parameters") or {}
    if not isinstance(parameters, Mapping):
        raise SpecError(f"{path}.parameters: expected an object")
    return TrainingSpec(
        estimator=estimator,
        parameters=dict(parameters),
        preprocessing=_enum(t, "preprocessing", "none", PREPROCESSING, path),
        image=_str(t, "image", "", path).strip(),
        resources=_resources(t, path),
        active_deadline_seconds=_int(t, "activeDeadlineSeconds", 900, path, lo=30, hi=86400),
        backoff_limit=_int(t, "backoffLimit", 1, path, lo=0, hi=10),
    )


def _parse_evaluation(spec: Mapping[str, Any]) -> EvaluationSpec:
    path = "spec.evaluation"
    e = _section(spec, "evaluation", "spec")
    metric = _enum(e, "metric", "accuracy", METRICS, path)
    # As the CRD: [0, 1] for the bounded scores, >= 0 for the errors, <= 1 for r2.
    lo = -math.inf if metric == "r2" else 0.0
    hi = math.inf if metric in LOWER_IS_BETTER else 1.0
    threshold = _float(e, "threshold", None, path, lo=lo, hi=hi)
    return EvaluationSpec(
        metric=metric,
        threshold=threshold,
        compare_with_champion=_bool(e, "compareWithChampion", False, path),
        min_improvement=_float(e, "minImprovement", 0.0, path, lo=0.0, hi=math.inf),
    )


def _parse_serving(spec: Mapping[str, Any]) -> ServingSpec:
    path = "spec.serving"
    s = _section(spec, "serving", "spec")
    return ServingSpec(
        enabled=_bool(s, "enabled", True, path),
        replicas=_int(s, "replicas", 1, path, lo=0, hi=20),
        port=_int(s, "port", 8080, path, lo=1024, hi=65535),
        image=_str(s, "image", "", path).strip(),
        resources=_resources(s, path),
        progress_deadline_seconds=_int(s, "progressDeadlineSeconds", 180, path, lo=10, hi=3600),
        rollback_on_failure=_bool(s, "rollbackOnFailure", True, path),
    )


def _parse_artifacts(spec: Mapping[str, Any]) -> ArtifactsSpec:
    path = "spec.artifacts"
    a = _section(spec, "artifacts", "spec")
    claim = _str(a, "existingClaim", "", path).strip()
    size = str(a.get("size") or "1Gi")
    return ArtifactsSpec(
        existing_claim=claim,
        size=size,
        storage_class_name=_str(a, "storageClassName", "", path).strip(),
    )


def _parse_monitoring(spec: Mapping[str, Any]) -> MonitoringSpec:
    path = "spec.monitoring"
    m = _section(spec, "monitoring", "spec")
    a = _section(m, "alerts", path)
    labels = _section(a, "matchLabels", f"{path}.alerts")
    for key, value in labels.items():
        if not isinstance(value, str):
            raise SpecError(f"{path}.alerts.matchLabels.{key}: expected a string, got {value!r}")
    b = _section(m, "builtin", path)
    bpath = f"{path}.builtin"
    max_error = b.get("maxError")
    builtin = BuiltinMonitorSpec(
        enabled=_bool(b, "enabled", False, bpath),
        interval_seconds=_int(b, "intervalSeconds", 30, bpath, lo=5, hi=3600),
        min_accuracy=_float(b, "minAccuracy", 0.7, bpath, lo=0.0, hi=1.0),
        max_error=(
            None if max_error is None else _float(b, "maxError", None, bpath, lo=0.0, hi=math.inf)
        ),
        min_samples=_int(b, "minSamples", 20, bpath, lo=1, hi=1_000_000),
        drift_p_value=_float(b, "driftPValue", 0.05, bpath, lo=0.0, hi=1.0),
        drift_fraction=_float(b, "driftFraction", 0.5, bpath, lo=0.0, hi=1.0),
        retrain=_bool(b, "retrain", True, bpath),
    )
    return MonitoringSpec(
        cooldown_seconds=_int(m, "cooldownSeconds", 300, path, lo=0, hi=604800),
        alerts_enabled=_bool(a, "enabled", True, f"{path}.alerts"),
        match_labels={str(k): str(v) for k, v in labels.items()},
        schedule=" ".join(_str(m, "schedule", "", path).split()),
        builtin=builtin,
    )


def parse_spec(spec: Mapping[str, Any] | None) -> Spec:
    """Parse and default a spec; raise :class:`SpecError` naming the first bad field."""
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        raise SpecError("spec: expected an object")
    return Spec(
        suspend=_bool(spec, "suspend", False, "spec"),
        data=_parse_data(spec),
        training=_parse_training(spec),
        evaluation=_parse_evaluation(spec),
        serving=_parse_serving(spec),
        artifacts=_parse_artifacts(spec),
        monitoring=_parse_monitoring(spec),
    )


@dataclasses.dataclass(frozen=True)
class ModelCycle:
    """The parts of a ModelCycle object the builders and the decision need."""

    name: str
    namespace: str
    uid: str
    generation: int
    annotations: Mapping[str, str]
    spec: Spec

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ModelCycle:
        meta = body.get("metadata") or {}
        name = str(meta.get("name") or "")
        if not _NAME.match(name) or len(name) > naming.MAX_NAME_LENGTH:
            raise SpecError(
                f"metadata.name: must be a DNS label of at most {naming.MAX_NAME_LENGTH} "
                f"characters starting with a letter (the children's names derive from it), "
                f"got {name!r}"
            )
        return cls(
            name=name,
            namespace=str(meta.get("namespace") or "default"),
            uid=str(meta.get("uid") or ""),
            generation=int(meta.get("generation") or 1),
            annotations={str(k): str(v) for k, v in (meta.get("annotations") or {}).items()},
            spec=parse_spec(body.get("spec")),
        )

    @property
    def claim_name(self) -> str:
        return self.spec.artifacts.existing_claim or naming.pvc_name(self.name)
