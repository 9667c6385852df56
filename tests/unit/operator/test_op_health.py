"""The built-in monitor's verdict from the model servers' monitoring summaries."""

from __future__ import annotations

import math
from typing import Any

import pytest

from modelcycle_operator.pure import health
from modelcycle_operator.pure.spec import BuiltinMonitorSpec

V = "1-deadbeef"
SPEC = BuiltinMonitorSpec(enabled=True, min_accuracy=0.8, min_samples=20)


def summary(
    samples: int = 0,
    correct: int | None = None,
    *,
    version: str = V,
    rmse: float | None = None,
    mae: float | None = None,
    drifted: bool | None = None,
    rows: int = 0,
    features: dict[str, bool] | None = None,
) -> dict[str, Any]:
    classifier = rmse is None
    return {
        "model": "iris",
        "version": version,
        "task": "classification" if classifier else "regression",
        "feedback": {
            "samples": samples,
            "correct": correct if classifier else None,
            "accuracy": (correct / samples) if classifier and samples and correct is not None
            else None,
            "rmse": rmse,
            "mae": mae,
        },
        "drift": {
            "rows": rows,
            "drifted": drifted,
            "features": {k: {"drifted": v, "pvalue": 0.0} for k, v in (features or {}).items()},
        },
    }  # fmt: skip


def pod(name: str, ip: str | None = "10.0.0.1", ready: bool = True, **meta: Any) -> Any:
    return {
        "metadata": {
            "name": name,
            "annotations": {"modelcycle.dev/model-version": meta.pop("version", V)},
            **meta,
        },
        "status": {
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


class TestReadyPods:
    def test_only_ready_running_pods_with_an_ip(self) -> None:
        pods = [
            pod("b"),
            pod("a", ip="10.0.0.2"),
            pod("not-ready", ready=False),
            pod("no-ip", ip=None),
            pod("going", deletionTimestamp="2026-01-01T00:00:00Z"),
            {"metadata": {"name": "bare"}},
        ]
        ready = health.ready_serving_pods(pods)
        assert [(p.name, p.ip, p.version) for p in ready] == [
            ("a", "10.0.0.2", V),
            ("b", "10.0.0.1", V),
        ]


class TestAggregate:
    def test_replicas_add_up(self) -> None:
        live = health.aggregate([summary(10, 9), summary(30, 3)], V)
        assert live is not None
        assert (live.replicas, live.samples) == (2, 40)
        assert live.accuracy == pytest.approx(12 / 40)

    def test_other_versions_do_not_count(self) -> None:
        live = health.aggregate([summary(10, 10), summary(30, 0, version="0-old")], V)
        assert live is not None
        assert (live.replicas, live.samples, live.accuracy) == (1, 10, 1.0)

    def test_none_of_the_version(self) -> None:
        assert health.aggregate([summary(10, 10, version="0-old")], V) is None
        assert health.aggregate([], V) is None

    def test_regression_errors_are_weighted(self) -> None:
        live = health.aggregate([summary(10, rmse=1.0, mae=1.0), summary(30, rmse=3.0, mae=2.0)], V)
        assert live is not None
        assert live.accuracy is None
        assert live.rmse == pytest.approx(math.sqrt((10 * 1 + 30 * 9) / 40))
        assert live.mae == pytest.approx((10 + 60) / 40)

    @pytest.mark.parametrize(
        ("flags", "drifted", "replicas"),
        [
            ([None, None], None, 0),
            ([False, None], False, 0),
            ([False, True], True, 1),
            ([True, True], True, 2),
        ],
    )
    def test_drift_of_any_tested_replica(
        self, flags: list[bool | None], drifted: bool | None, replicas: int
    ) -> None:
        live = health.aggregate(
            [summary(rows=40, drifted=f, features={"petal": bool(f)}) for f in flags], V
        )
        assert live is not None
        assert live.drifted is drifted
        assert live.drifted_replicas == replicas
        assert live.drift_rows == 80
        assert live.drifted_features == (("petal",) if drifted else ())

    @pytest.mark.parametrize(
        "broken",
        [
            {"version": V, "feedback": None, "drift": None},
            {"version": V, "feedback": {"samples": "x", "correct": "y"}, "drift": {"rows": -1}},
            {"version": V, "feedback": {"samples": True}, "drift": {"drifted": "yes"}},
            {"version": V, "feedback": {"samples": 5, "accuracy": float("nan")}},
            {"version": V},
        ],
    )
    def test_garbage_counts_as_nothing(self, broken: dict[str, Any]) -> None:
        live = health.aggregate([broken], V)
        assert live is not None
        assert live.accuracy is None
        assert live.drifted is None


def assess(*summaries: dict[str, Any], spec: BuiltinMonitorSpec = SPEC) -> health.Assessment:
    return health.assess(list(summaries), spec, V, asked=len(summaries))


class TestAssess:
    @pytest.mark.parametrize(
        ("samples", "correct", "status", "reason"),
        [
            (0, 0, "False", "InsufficientFeedback"),
            (19, 0, "False", "InsufficientFeedback"),  # below minSamples, however bad
            (20, 15, "True", "AccuracyDropped"),  # 0.75 < 0.8
            (20, 16, "False", "Healthy"),  # exactly 0.8 is not below
            (100, 79, "True", "AccuracyDropped"),
            (100, 100, "False", "Healthy"),
        ],
    )
    def test_accuracy(self, samples: int, correct: int, status: str, reason: str) -> None:
        a = assess(summary(samples, correct))
        assert (a.status, a.reason, a.version) == (status, reason, V)
        assert a.degraded is (status == "True")
        assert str(samples) in a.message

    def test_message_names_the_numbers(self) -> None:
        a = assess(summary(30, 0))
        assert a.message.startswith("Live accuracy 0 over 30 feedback samples is below")
        assert "minAccuracy 0.8" in a.message
        assert V in a.message

    def test_samples_of_all_replicas_count(self) -> None:
        assert assess(summary(10, 0), summary(10, 0)).reason == "AccuracyDropped"

    @pytest.mark.parametrize(
        ("max_error", "rmse", "reason"),
        [
            (None, 100.0, "Healthy"),
            (5.0, 4.0, "Healthy"),
            (5.0, 5.0, "Healthy"),
            (5.0, 5.5, "ErrorIncreased"),
        ],
    )
    def test_regression(self, max_error: float | None, rmse: float, reason: str) -> None:
        spec = BuiltinMonitorSpec(enabled=True, max_error=max_error, min_samples=20)
        a = assess(summary(25, rmse=rmse, mae=rmse), spec=spec)
        assert a.reason == reason

    def test_drift(self) -> None:
        a = assess(summary(5, 5, rows=60, drifted=True, features={"petal length": True}))
        assert (a.status, a.reason) == ("True", "DriftDetected")
        assert "petal length" in a.message
        assert "60" in a.message

    def test_accuracy_before_drift(self) -> None:
        a = assess(summary(30, 0, rows=60, drifted=True, features={"sepal": True}))
        assert a.reason == "AccuracyDropped"
        assert "also the requests drifted" in a.message

    def test_no_drift_yet(self) -> None:
        assert assess(summary(30, 30, rows=10, drifted=None)).reason == "Healthy"

    def test_nobody_answered(self) -> None:
        a = health.assess([], SPEC, V, asked=2)
        assert (a.status, a.reason) == ("Unknown", "MonitorUnavailable")
        assert "2 Ready replicas" in a.message

    def test_nothing_serving(self) -> None:
        a = health.assess([summary(30, 0)], SPEC, "")
        assert (a.status, a.reason) == ("Unknown", "NotServing")

    def test_every_reason_is_a_verdict_reason(self) -> None:
        seen = {
            assess(summary(0, 0)).reason,
            assess(summary(30, 0)).reason,
            assess(summary(30, 30)).reason,
            assess(summary(1, 1, rows=60, drifted=True)).reason,
            health.assess([], SPEC, V).reason,
            health.assess([], SPEC, "").reason,
        }
        assert seen <= health.VERDICT_REASONS
