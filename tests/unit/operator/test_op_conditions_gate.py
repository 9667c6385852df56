"""Conditions (transition-time semantics, kstatus summary) and the gate (direction, margins)."""

from __future__ import annotations

import datetime
import math

import pytest

from modelcycle_operator.pure import conditions as cond
from modelcycle_operator.pure.gate import evaluate_gate, score_of

T0 = datetime.datetime(2026, 12, 1, 12, 0, 0, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)


class TestSetCondition:
    def test_adds_missing(self) -> None:
        result = cond.set_condition([], "Ready", "True", "Ok", "fine", 3, T0)
        assert result == [
            {
                "type": "Ready",
                "status": "True",
                "observedGeneration": 3,
                "lastTransitionTime": "2026-12-01T12:00:00Z",
                "reason": "Ok",
                "message": "fine",
            }
        ]

    @pytest.mark.parametrize(
        ("old", "new", "moves"),
        [
            ("True", "True", False),
            ("False", "False", False),
            ("Unknown", "Unknown", False),
            ("True", "False", True),
            ("False", "True", True),
            ("Unknown", "True", True),
            ("True", "Unknown", True),
        ],
    )
    def test_transition_time_moves_only_on_flip(self, old: str, new: str, moves: bool) -> None:
        first = cond.set_condition([], "Ready", old, "A", "a", 1, T0)
        second = cond.set_condition(first, "Ready", new, "B", "b", 2, T1)
        (c,) = second
        expected = "2026-12-01T12:05:00Z" if moves else "2026-12-01T12:00:00Z"
        assert c["lastTransitionTime"] == expected
        assert (c["reason"], c["message"], c["observedGeneration"]) == ("B", "b", 2)

    def test_does_not_mutate_input(self) -> None:
        first = cond.set_condition([], "Ready", "True", "A", "a", 1, T0)
        snapshot = [dict(c) for c in first]
        cond.set_condition(first, "Ready", "False", "B", "b", 2, T1)
        assert first == snapshot

    def test_keeps_other_conditions(self) -> None:
        conditions = cond.set_condition([], "Ready", "True", "A", "a", 1, T0)
        conditions = cond.set_condition(conditions, "Stalled", "False", "B", "", 1, T0)
        conditions = cond.set_condition(conditions, "Ready", "False", "C", "", 1, T1)
        assert [c["type"] for c in conditions] == ["Ready", "Stalled"]

    def test_rejects_bad_status(self) -> None:
        with pytest.raises(ValueError, match="True, False or Unknown"):
            cond.set_condition([], "Ready", "Yes", "A", "", 1, T0)

    def test_long_message_is_truncated(self) -> None:
        (c,) = cond.set_condition([], "Ready", "True", "A", "x" * 5000, 1, T0)
        assert len(c["message"]) <= 2048

    def test_naive_time_is_utc(self) -> None:
        (c,) = cond.set_condition([], "Ready", "True", "A", "", 1, T0.replace(tzinfo=None))
        assert c["lastTransitionTime"] == "2026-12-01T12:00:00Z"


class TestGetAndEnsure:
    def test_get_condition(self) -> None:
        conditions = cond.set_condition([], "Ready", "True", "A", "a", 1, T0)
        assert cond.get_condition(conditions, "Ready") == conditions[0]
        assert cond.get_condition(conditions, "Stalled") is None
        assert cond.get_condition(None, "Ready") is None
        assert cond.is_true(conditions, "Ready")
        assert not cond.is_true(conditions, "Stalled")

    def test_ensure_adds_all_as_unknown_in_order(self) -> None:
        existing = cond.set_condition([], "Stalled", "True", "X", "", 1, T0)
        result = cond.ensure_conditions(existing, 2, T1)
        assert [c["type"] for c in result] == list(cond.ALL_TYPES)
        stalled = cond.get_condition(result, "Stalled")
        assert stalled is not None
        assert stalled["status"] == "True"
        assert all(c["status"] == "Unknown" for c in result if c["type"] != "Stalled")

    def test_parse_time_roundtrip(self) -> None:
        assert cond.parse_time(cond.rfc3339(T0)) == T0
        assert cond.parse_time("garbage") is None
        assert cond.parse_time(None) is None


CHAMPION: dict[str, object] = {"version": "1-abc", "cycle": 1, "metric": "accuracy", "score": 0.97}


class TestSummary:
    @pytest.mark.parametrize(
        ("step", "champion", "failure", "ready", "reconciling", "stalled"),
        [
            ("Training", None, None, ("False", "NoChampion"), "True", "False"),
            ("Training", CHAMPION, None, ("True", "ChampionServing"), "True", "False"),
            ("Serving", CHAMPION, None, ("True", "ChampionServing"), "False", "False"),
            ("Rejected", None, None, ("False", "ChallengerRejected"), "False", "False"),
            (
                "Failed",
                None,
                ("TrainingFailed", "boom"),
                ("False", "TrainingFailed"),
                "False",
                "True",
            ),
            (
                "Failed",
                CHAMPION,
                ("RolloutFailed", "boom"),
                ("True", "ChampionServing"),
                "False",
                "True",
            ),
            ("Suspended", None, None, ("False", "Suspended"), "False", "False"),
        ],
    )
    def test_kstatus_summary(  # noqa: PLR0917 - one parameter per parametrize column
        self,
        step: str,
        champion: dict[str, object] | None,
        failure: tuple[str, str] | None,
        ready: tuple[str, str],
        reconciling: str,
        stalled: str,
    ) -> None:
        summary = cond.summary_conditions(step=step, cycle=2, champion=champion, failure=failure)
        assert summary.ready[:2] == ready
        assert summary.reconciling[0] == reconciling
        assert summary.stalled[0] == stalled
        if failure is not None:
            assert summary.stalled[1:] == failure

    def test_ready_message_names_version_and_score(self) -> None:
        summary = cond.summary_conditions(step="Serving", cycle=1, champion=CHAMPION, failure=None)
        assert "1-abc" in summary.ready[2]
        assert "accuracy 0.97" in summary.ready[2]


class TestGate:
    @pytest.mark.parametrize(
        ("metric", "score", "threshold", "passed"),
        [
            ("accuracy", 0.9, 0.8, True),
            ("accuracy", 0.8, 0.8, True),
            ("accuracy", 0.79, 0.8, False),
            ("f1_macro", 0.5, 0.6, False),
            ("roc_auc", 0.99, 0.95, True),
            ("r2", 0.7, 0.5, True),
            ("rmse", 1.0, 2.0, True),
            ("rmse", 2.0, 2.0, True),
            ("rmse", 3.0, 2.0, False),
            ("mae", 0.1, 0.05, False),
        ],
    )
    def test_threshold_direction(
        self, metric: str, score: float, threshold: float, passed: bool
    ) -> None:
        verdict = evaluate_gate(metric=metric, threshold=threshold, metrics={metric: score})
        assert verdict.passed is passed
        assert verdict.reason == ("ThresholdMet" if passed else "BelowThreshold")
        assert f"{score:g}" in verdict.message
        assert f"{threshold:g}" in verdict.message

    @pytest.mark.parametrize(
        ("metric", "score", "champion", "margin", "passed"),
        [
            ("accuracy", 0.95, 0.94, 0.0, True),
            ("accuracy", 0.94, 0.94, 0.0, True),
            ("accuracy", 0.93, 0.94, 0.0, False),
            ("accuracy", 0.95, 0.94, 0.02, False),
            ("accuracy", 0.97, 0.94, 0.02, True),
            ("rmse", 1.0, 1.5, 0.2, True),
            ("rmse", 1.4, 1.5, 0.2, False),
            ("rmse", 1.6, 1.5, 0.0, False),
        ],
    )
    def test_champion_margin(
        self, metric: str, score: float, champion: float, margin: float, passed: bool
    ) -> None:
        verdict = evaluate_gate(
            metric=metric,
            threshold=0.5 if metric == "accuracy" else 10.0,
            metrics={metric: score},
            champion_metrics={metric: champion},
            compare_with_champion=True,
            min_improvement=margin,
        )
        assert verdict.passed is passed
        assert verdict.reason == ("ThresholdMet" if passed else "WorseThanChampion")
        assert f"{champion:g}" in verdict.message

    def test_threshold_comes_before_champion(self) -> None:
        verdict = evaluate_gate(
            metric="accuracy",
            threshold=0.9,
            metrics={"accuracy": 0.8},
            champion_metrics={"accuracy": 0.5},
            compare_with_champion=True,
        )
        assert verdict.reason == "BelowThreshold"

    def test_champion_ignored_unless_asked(self) -> None:
        verdict = evaluate_gate(
            metric="accuracy",
            threshold=0.5,
            metrics={"accuracy": 0.6},
            champion_metrics={"accuracy": 0.9},
        )
        assert verdict.passed

    def test_champion_without_metric_passes_on_threshold(self) -> None:
        verdict = evaluate_gate(
            metric="f1_macro",
            threshold=0.5,
            metrics={"f1_macro": 0.6},
            champion_metrics={"accuracy": 0.9},
            compare_with_champion=True,
        )
        assert verdict.passed
        assert "no champion" in verdict.message

    @pytest.mark.parametrize(
        "metrics",
        [
            {},
            None,
            {"accuracy": 0.9},
            {"f1_macro": "high"},
            {"f1_macro": math.nan},
            {"f1_macro": True},
        ],
    )
    def test_missing_metric(self, metrics: dict[str, object] | None) -> None:
        verdict = evaluate_gate(metric="f1_macro", threshold=0.5, metrics=metrics)
        assert not verdict.passed
        assert verdict.reason == "MetricMissing"
        assert "f1_macro" in verdict.message

    def test_score_of(self) -> None:
        assert score_of({"a": 1}, "a") == 1.0
        assert score_of({"a": math.inf}, "a") is None
