"""The promotion gate: does the challenger's score clear the threshold (and the champion)?

Direction-aware: higher is better for the classification scores and r2, lower for rmse and
mae. With ``compareWithChampion`` the challenger must also be at least ``minImprovement``
better than the serving model on the same metric; a tie passes when ``minImprovement`` is
0 ("not worse"), since a retrain on the same data often reproduces the same score.

Limits: pure; it judges the numbers it is given and never reads metrics files.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from modelcycle_operator.pure.spec import LOWER_IS_BETTER

__all__ = ["Verdict", "evaluate_gate", "score_of"]

THRESHOLD_MET = "ThresholdMet"
BELOW_THRESHOLD = "BelowThreshold"
WORSE_THAN_CHAMPION = "WorseThanChampion"
METRIC_MISSING = "MetricMissing"

_EPSILON = 1e-12


@dataclasses.dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str
    message: str


def score_of(metrics: Mapping[str, Any] | None, metric: str) -> float | None:
    """The metric as a finite float, or None when absent or not a number."""
    if not metrics:
        return None
    value = metrics.get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def evaluate_gate(
    *,
    metric: str,
    threshold: float,
    metrics: Mapping[str, Any] | None,
    champion_metrics: Mapping[str, Any] | None = None,
    compare_with_champion: bool = False,
    min_improvement: float = 0.0,
) -> Verdict:
    score = score_of(metrics, metric)
    if score is None:
        reported = ", ".join(sorted(metrics or {})) or "none"
        return Verdict(
            False,
            METRIC_MISSING,
            f"The evaluation did not report {metric} (reported: {reported})",
        )
    lower = metric in LOWER_IS_BETTER
    if lower:
        if score > threshold + _EPSILON:
            return Verdict(
                False,
                BELOW_THRESHOLD,
                f"{metric} {_fmt(score)} is above the threshold {_fmt(threshold)} "
                f"(lower is better)",
            )
        met = f"{metric} {_fmt(score)} <= threshold {_fmt(threshold)}"
    else:
        if score < threshold - _EPSILON:
            return Verdict(
                False,
                BELOW_THRESHOLD,
                f"{metric} {_fmt(score)} is below the threshold {_fmt(threshold)}",
            )
        met = f"{metric} {_fmt(score)} >= threshold {_fmt(threshold)}"

    if not compare_with_champion:
        return Verdict(True, THRESHOLD_MET, met)
    champion = score_of(champion_metrics, metric)
    if champion is None:
        return Verdict(True, THRESHOLD_MET, f"{met}; no champion {metric} to compare with")
    improvement = (champion - score) if lower else (score - champion)
    if improvement < min_improvement - _EPSILON:
        return Verdict(
            False,
            WORSE_THAN_CHAMPION,
            f"{metric} {_fmt(score)} vs champion {_fmt(champion)}: improvement "
            f"{_fmt(improvement)} is less than the required {_fmt(min_improvement)}",
        )
    return Verdict(
        True,
        THRESHOLD_MET,
        f"{met}; improves on champion {_fmt(champion)} by {_fmt(improvement)} "
        f"(required {_fmt(min_improvement)})",
    )
