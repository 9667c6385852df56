"""Helpers shared by the workload tests (imported by name: this directory is on sys.path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelcycle_trainer import collect, train

LR: dict[str, Any] = {
    "estimator": "sklearn.linear_model.LogisticRegression",
    "parameters": {"max_iter": 1000},
}


def collect_and_train(
    artifacts: Path,
    data: dict[str, Any],
    training: dict[str, Any] | None = None,
    cycle: int = 1,
) -> tuple[dict[str, Any], dict[str, Any]]:
    collected = collect.run(artifacts, cycle, data)
    trained = train.run(artifacts, cycle, training or LR, ["sklearn"])
    return collected, trained
