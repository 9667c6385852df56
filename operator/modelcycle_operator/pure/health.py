"""The built-in monitor's verdict: the model servers' live numbers -> ``Degraded``.

Input: the JSON each Ready serving replica answers at ``GET /v2/models/{m}/monitoring``
(``{"model", "version", "task", "feedback": {"samples", "correct", "accuracy", "rmse",
"mae"}, "drift": {"rows", "drifted", "driftedFeatures", "features", ...}}``). Replicas
are aggregated: feedback counts add up (accuracy = all correct / all samples; RMSE and MAE
weighted by samples), and the input counts as drifted when any replica that has enough
rows for a drift test says so (each replica sees its own share of the requests).

Verdict, in this order (``spec.monitoring.builtin``):

- ``Degraded=True, AccuracyDropped``: live accuracy < ``minAccuracy`` after at least
  ``minSamples`` feedback samples (classification);
- ``Degraded=True, ErrorIncreased``: live RMSE > ``maxError`` after ``minSamples`` samples
  (regression, when ``maxError`` is set);
- ``Degraded=True, DriftDetected``: the requests drifted from the training profile (the
  servers run the tests with the spec's ``driftPValue`` / ``driftFraction``);
- ``Degraded=False, InsufficientFeedback`` below ``minSamples``, else ``Healthy``;
- ``Degraded=Unknown, MonitorUnavailable`` when no replica of the champion answered, and
  ``NotServing`` when there is no champion to watch.

Limits: pure; the monitor (:mod:`modelcycle_operator.monitor`) does the HTTP. Only
replicas that serve the champion's model version count. A replica's feedback counters
include what it read from the shared feedback file at its start, so after a restart of
one of several replicas some samples count twice (the ratios stay right).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from modelcycle_operator.pure import conditions as cond
from modelcycle_operator.pure import naming
from modelcycle_operator.pure.spec import BuiltinMonitorSpec

__all__ = [
    "VERDICT_REASONS",
    "Assessment",
    "Live",
    "ServingPod",
    "aggregate",
    "assess",
    "ready_serving_pods",
]

ACCURACY_DROPPED = "AccuracyDropped"
ERROR_INCREASED = "ErrorIncreased"
DRIFT_DETECTED = "DriftDetected"
HEALTHY = "Healthy"
INSUFFICIENT_FEEDBACK = "InsufficientFeedback"
MONITOR_UNAVAILABLE = "MonitorUnavailable"
NOT_SERVING = "NotServing"
#: Reasons of ``Degraded`` that only the built-in monitor sets.
VERDICT_REASONS = frozenset(
    {
        ACCURACY_DROPPED,
        ERROR_INCREASED,
        DRIFT_DETECTED,
        HEALTHY,
        INSUFFICIENT_FEEDBACK,
        MONITOR_UNAVAILABLE,
        NOT_SERVING,
    }
)
_MAX_FEATURES_SHOWN = 8


@dataclasses.dataclass(frozen=True)
class ServingPod:
    name: str
    ip: str
    version: str


def ready_serving_pods(pods: Sequence[Mapping[str, Any]]) -> list[ServingPod]:
    """Pods that are Ready, not terminating and have an IP, by name."""
    out: list[ServingPod] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        if meta.get("deletionTimestamp") or not status.get("podIP"):
            continue
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or ()
            if isinstance(c, Mapping)
        )
        if not ready:
            continue
        annotations = meta.get("annotations") or {}
        out.append(
            ServingPod(
                name=str(meta.get("name") or ""),
                ip=str(status["podIP"]),
                version=str(annotations.get(naming.ANNOTATION_MODEL_VERSION) or ""),
            )
        )
    return sorted(out, key=lambda p: p.name)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


@dataclasses.dataclass(frozen=True)
class Live:
    """The aggregated live numbers of the replicas that serve one model version."""

    version: str
    replicas: int
    samples: int
    accuracy: float | None
    rmse: float | None
    mae: float | None
    drift_rows: int
    drifted: bool | None  # None: no replica had enough rows for a drift test
    drifted_replicas: int
    drifted_features: tuple[str, ...]


def aggregate(summaries: Sequence[Mapping[str, Any]], version: str) -> Live | None:
    """Add up the replicas' summaries of ``version``; None when none of them is about it."""
    mine = [s for s in summaries if isinstance(s, Mapping) and s.get("version") == version]
    if not mine:
        return None
    samples = correct = 0
    have_correct = False
    accuracy_sum = sq_sum = abs_sum = 0.0
    have_acc = have_rmse = have_mae = False
    drift_rows = 0
    tested = drifted_replicas = 0
    features: set[str] = set()
    for summary in mine:
        fb = _mapping(summary.get("feedback"))
        n = fb.get("samples")
        n = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 0
        samples += n
        if n:
            c = fb.get("correct")
            if isinstance(c, int) and not isinstance(c, bool):
                correct += c
                have_correct = True
            if (acc := _number(fb.get("accuracy"))) is not None:
                accuracy_sum += acc * n
                have_acc = True
            if (rmse := _number(fb.get("rmse"))) is not None:
                sq_sum += rmse * rmse * n
                have_rmse = True
            if (mae := _number(fb.get("mae"))) is not None:
                abs_sum += mae * n
                have_mae = True
        drift = _mapping(summary.get("drift"))
        rows = drift.get("rows")
        if isinstance(rows, int) and not isinstance(rows, bool) and rows > 0:
            drift_rows += rows
        flag = drift.get("drifted")
        if isinstance(flag, bool):
            tested += 1
            if flag:
                drifted_replicas += 1
                per_feature = drift.get("features")
                if isinstance(per_feature, Mapping):
                    features.update(
                        str(k)
                        for k, v in per_feature.items()
                        if isinstance(v, Mapping) and v.get("drifted") is True
                    )
    accuracy: float | None = None
    if samples and have_correct:
        accuracy = correct / samples
    elif samples and have_acc:
        accuracy = accuracy_sum / samples
    return Live(
        version=version,
        replicas=len(mine),
        samples=samples,
        accuracy=accuracy,
        rmse=math.sqrt(sq_sum / samples) if samples and have_rmse else None,
        mae=abs_sum / samples if samples and have_mae else None,
        drift_rows=drift_rows,
        drifted=(drifted_replicas > 0) if tested else None,
        drifted_replicas=drifted_replicas,
        drifted_features=tuple(sorted(features)),
    )


@dataclasses.dataclass(frozen=True)
class Assessment:
    """What ``Degraded`` should say about ``version`` (empty when nothing serves)."""

    status: str
    reason: str
    message: str
    version: str

    @property
    def degraded(self) -> bool:
        return self.status == cond.TRUE


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _drift_text(live: Live) -> str:
    shown = ", ".join(live.drifted_features[:_MAX_FEATURES_SHOWN])
    more = len(live.drifted_features) - _MAX_FEATURES_SHOWN
    if more > 0:
        shown += f" and {more} more"
    where = f"{live.drifted_replicas}/{live.replicas} replicas"
    return f"the requests drifted from the training data ({where}; features: {shown or '?'})"


def assess(
    summaries: Sequence[Mapping[str, Any]],
    monitor: BuiltinMonitorSpec,
    version: str,
    *,
    asked: int | None = None,
) -> Assessment:
    """The verdict on model version ``version`` from the replicas' summaries.

    ``asked`` is how many Ready replicas were asked (for the message when none answered).
    """
    if not version:
        return Assessment(cond.UNKNOWN, NOT_SERVING, "No model is serving: nothing to check", "")
    live = aggregate(summaries, version)
    if live is None:
        tried = f" ({asked} Ready replicas asked)" if asked else " (no Ready replica)"
        return Assessment(
            cond.UNKNOWN,
            MONITOR_UNAVAILABLE,
            f"No serving replica of model version {version} answered the monitoring "
            f"endpoint{tried}",
            version,
        )
    n = live.samples
    replicas = f"{live.replicas} replica{'s' if live.replicas != 1 else ''}"
    where = f"model version {version}, {replicas}"
    enough = n >= monitor.min_samples
    drift_note = f"; also {_drift_text(live)}" if live.drifted else ""
    if enough and live.accuracy is not None and live.accuracy < monitor.min_accuracy:
        return Assessment(
            cond.TRUE,
            ACCURACY_DROPPED,
            f"Live accuracy {_fmt(live.accuracy)} over {n} feedback samples is below "
            f"minAccuracy {_fmt(monitor.min_accuracy)} ({where}){drift_note}",
            version,
        )
    if (
        enough
        and monitor.max_error is not None
        and live.rmse is not None
        and live.rmse > monitor.max_error
    ):
        return Assessment(
            cond.TRUE,
            ERROR_INCREASED,
            f"Live RMSE {_fmt(live.rmse)} over {n} feedback samples is above maxError "
            f"{_fmt(monitor.max_error)} ({where}){drift_note}",
            version,
        )
    if live.drifted:
        return Assessment(
            cond.TRUE,
            DRIFT_DETECTED,
            f"{_drift_text(live)[0].upper()}{_drift_text(live)[1:]}, over the last "
            f"{live.drift_rows} input rows (driftPValue {_fmt(monitor.drift_p_value)}, "
            f"driftFraction {_fmt(monitor.drift_fraction)}; {where})",
            version,
        )
    if not enough:
        return Assessment(
            cond.FALSE,
            INSUFFICIENT_FEEDBACK,
            f"{n} of the {monitor.min_samples} feedback samples needed before live "
            f"accuracy counts ({where})",
            version,
        )
    if live.accuracy is not None:
        numbers = f"live accuracy {_fmt(live.accuracy)} over {n} feedback samples"
    elif live.rmse is not None:
        numbers = f"live RMSE {_fmt(live.rmse)} over {n} feedback samples"
    else:
        numbers = f"{n} feedback samples"
    return Assessment(cond.FALSE, HEALTHY, f"{numbers[0].upper()}{numbers[1:]} ({where})", version)
