"""A training container out of memory, for real: the node agent enforces memory limits.

The train container gets a 100 MiB limit; importing scikit-learn and skops alone takes
about 150 MB, so the kernel's OOM killer stops it on every attempt — after it has collected
the data (collect imports no scikit-learn, and fits): the termination message it leaves
says so (`{"stage": "train", "collected": ...}`). The Job retries as its backoffLimit says
and the ModelCycle is Stalled with TrainingFailed and a message that says the container ran
out of memory, DataCollected=True.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubetest import apply, base_spec, condition, get_json, manifest, wait_for

pytestmark = pytest.mark.integration


def test_training_out_of_memory_retries_then_stalls_saying_so(
    cluster: Any, namespace: str, operator: Any
) -> None:
    name = "oom"
    backoff_limit = 1
    training = {
        "backoffLimit": backoff_limit,
        "resources": {"requests": {"memory": "64Mi"}, "limits": {"memory": "100Mi"}},
    }
    apply(cluster, namespace, manifest(name, base_spec(training=training)))

    def stalled() -> dict[str, Any] | None:
        c = condition(get_json(cluster, namespace, "modelcycle", name), "Stalled")
        return c if c.get("status") == "True" else None

    cond = wait_for(
        stalled, 240, f"{namespace}/{name} Stalled", explain=lambda: operator.log()[-3000:]
    )
    assert cond["reason"] == "TrainingFailed", cond
    assert "out of memory (OOMKilled)" in cond["message"], cond["message"]
    job = get_json(cluster, namespace, "job", f"{name}-train-1")
    assert job is not None
    assert (job.get("status") or {}).get("failed") == backoff_limit + 1
    pods = (
        get_json(cluster, namespace, "pods", "-l", f"batch.kubernetes.io/job-name={name}-train-1")
        or {}
    ).get("items", [])
    assert len(pods) == backoff_limit + 1
    for pod in pods:
        assert not pod["status"].get("initContainerStatuses"), "one container"
        (status,) = pod["status"]["containerStatuses"]
        assert status["name"] == "train"
        train = status["state"]["terminated"]
        assert (train["exitCode"], train["reason"]) == (137, "OOMKilled"), train
        left = json.loads(train["message"])  # collect fitted in the limit, then the fit died
        assert left["stage"] == "train", left
        assert left["collected"]["rows"] == 150, left
        assert "error" not in left, left
    collected = condition(get_json(cluster, namespace, "modelcycle", name), "DataCollected")
    assert collected["status"] == "True", collected
    assert "150 rows" in collected["message"], collected
