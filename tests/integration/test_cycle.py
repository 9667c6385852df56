"""Whole model cycles on the local control plane, with real training and real serving.

Fixtures (``tests/conftest.py``): ``cluster`` (``.kubectl(*args, input=None, check=True)``,
``.kubeconfig``), ``namespace`` (a fresh namespace per test) and ``operator`` (the operator
running as ``kopf run -m modelcycle_operator --all-namespaces``; ``.kill()`` sends SIGKILL,
``.start()``, ``.restart()``, ``.log_path``).

The tests check the resulting state of the cluster: the ModelCycle's status and printer
columns, which children exist, and what the serving pod answers. Service ClusterIPs are not
routed here (no kube-proxy), so requests go to the serving pod's IP. A cycle takes roughly
20-60 s; every wait has a timeout and reports the object and the operator's log when it
runs out.
"""

from __future__ import annotations

import copy
import functools
import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

import kubetest
from kubetest import (
    NAME_LABEL,
    VERSION_ANNOTATION,
    apply,
    base_spec,
    condition,
    explainer,
    get_json,
    manifest,
    step_in,
)
from kubetest import wait_for as _wait_for

#: kubetest.wait_for polling every 1.0 s by default (a ModelCycle changes slowly).
wait_for = functools.partial(_wait_for, interval=1.0)


pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CYCLE_TIMEOUT = 240.0
LATER_STEPS = {
    "Training": ["Training", "Evaluating", "RollingOut", "Serving"],
    "Evaluating": ["Evaluating", "RollingOut", "Serving"],
    "RollingOut": ["RollingOut", "Serving"],
}
# Three iris flowers, one per class: setosa (0), virginica (2), versicolor (1).
IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
IRIS_CLASSES = [0, 2, 1]
IRIS_NAMES = {"setosa": 0, "versicolor": 1, "virginica": 2}

T = TypeVar("T")


# --- helpers ------------------------------------------------------------------------------


def patch_spec(cluster: Any, namespace: str, name: str, spec: dict[str, Any]) -> None:
    cluster.kubectl(
        "patch",
        "modelcycle",
        name,
        "-n",
        namespace,
        "--type",
        "merge",
        "-p",
        json.dumps({"spec": spec}),
    )


def get_mc(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    mc = get_json(cluster, namespace, "modelcycle", name)
    assert mc is not None, f"ModelCycle {namespace}/{name} is gone"
    return mc


class Watch(kubetest.Watch):
    timeout = CYCLE_TIMEOUT
    interval = 1.0


def ready_at(cycle: int) -> Callable[[dict[str, Any]], bool]:
    def predicate(mc: dict[str, Any]) -> bool:
        status = mc.get("status") or {}
        return (
            condition(mc, "Ready").get("status") == "True"
            and status.get("step") == "Serving"
            and (status.get("champion") or {}).get("cycle") == cycle
            and status.get("observedGeneration") == mc["metadata"]["generation"]
        )

    return predicate


def children(cluster: Any, namespace: str, name: str, kind: str) -> list[str]:
    result = cluster.kubectl(
        "get",
        kind,
        "-n",
        namespace,
        "-l",
        f"{NAME_LABEL}={name}",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    )
    return sorted(result.stdout.split())


def serving_pod_ip(cluster: Any, namespace: str, name: str, version: str) -> str:
    """The IP of a Ready serving pod that runs ``version`` (old pods may still be going)."""

    def probe() -> str | None:
        pods = get_json(
            cluster, namespace, "pods", "-l", f"{NAME_LABEL}={name},modelcycle.dev/step=serving"
        )
        for pod in (pods or {}).get("items") or ():
            meta = pod["metadata"]
            if meta.get("deletionTimestamp"):
                continue
            if (meta.get("annotations") or {}).get(VERSION_ANNOTATION) != version:
                continue
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in (pod.get("status") or {}).get("conditions") or ()
            )
            ip = (pod.get("status") or {}).get("podIP")
            if ready and ip:
                return str(ip)
        return None

    return wait_for(probe, timeout=60, what=f"a ready serving pod of {name} at {version}")


def infer(ip: str, port: int, model: str, rows: list[list[float]]) -> dict[str, Any]:
    body = {
        "id": "integration-test",
        "inputs": [
            {
                "name": "input-0",
                "shape": [len(rows), len(rows[0])],
                "datatype": "FP64",
                "data": rows,
            }
        ],
    }
    request = urllib.request.Request(
        f"http://{ip}:{port}/v2/models/{model}/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
    return result


def as_classes(data: list[Any]) -> list[int]:
    flat: list[Any] = []
    for item in data:
        flat.extend(item if isinstance(item, list) else [item])
    return [IRIS_NAMES[x] if isinstance(x, str) and x in IRIS_NAMES else int(x) for x in flat]


def _is_close(cell: str, value: float) -> bool:
    try:
        return abs(float(cell) - value) < 1e-6
    except ValueError:
        return False


def load_example(path: Path) -> dict[str, Any]:
    for doc in yaml.safe_load_all(path.read_text()):
        if isinstance(doc, dict) and doc.get("kind") == "ModelCycle":
            doc = copy.deepcopy(doc)
            doc.setdefault("metadata", {}).pop("namespace", None)
            return doc
    raise AssertionError(f"{path} holds no ModelCycle")


@pytest.fixture(scope="module", autouse=True)
def crd_installed(cluster: Any) -> None:
    """Install the CRD unless the cluster fixture already did (apply is idempotent)."""
    found = cluster.kubectl("get", "crd", "modelcycles.modelcycle.dev", check=False)
    if found.returncode != 0:
        cluster.kubectl("apply", "-f", str(ROOT / "crds"))
        cluster.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/modelcycles.modelcycle.dev",
        )


# --- tests --------------------------------------------------------------------------------


def test_iris_example_reaches_ready_and_serves(cluster: Any, namespace: str, operator: Any) -> None:
    watch = Watch(cluster, operator, namespace)
    example = load_example(ROOT / "examples" / "iris.yaml")
    name = example["metadata"]["name"]
    apply(cluster, namespace, example)

    mc = watch.until(name, ready_at(1), "Ready=True at cycle 1")
    status = mc["status"]
    champion = status["champion"]
    assert champion["metrics"]["accuracy"] >= 0.8
    assert champion["version"].startswith("1-")
    assert champion["dataHash"].startswith("sha256:")
    assert status["endpoint"]["service"] == f"{name}-serving"
    assert condition(mc, "Stalled").get("status") == "False"
    assert condition(mc, "Reconciling").get("status") == "False"
    assert [h["verdict"] for h in status["history"]] == ["Promoted"]
    # No kopf bookkeeping on the object (no per-object timer, no create/update handler):
    # no finalizer to add and remove, no diff-base annotation; a delete needs no operator.
    meta = mc["metadata"]
    assert not meta.get("finalizers"), meta.get("finalizers")
    assert not [a for a in meta.get("annotations") or {} if "last-handled" in a], meta
    # train evaluated in its own process: one Job per cycle, metrics from its message
    assert children(cluster, namespace, name, "jobs") == [f"{name}-train-1"]
    evaluated = condition(mc, "Evaluated")
    assert evaluated.get("status") == "True"
    assert "on the held-out split" in str(evaluated.get("message"))
    assert set(champion["metrics"]) >= {"accuracy", "f1_macro", "roc_auc"}

    table = cluster.kubectl("get", "modelcycle", name, "-n", namespace).stdout
    header, row = table.splitlines()[:2]
    for column in ("READY", "CYCLE", "SERVING", "ACCURACY", "AGE"):
        assert column in header
    cells = row.split()
    assert "True" in cells
    assert champion["version"] in cells
    accuracy = float(champion["metrics"]["accuracy"])
    assert any(_is_close(cell, accuracy) for cell in cells), row

    port = int((example.get("spec") or {}).get("serving", {}).get("port", 8080))
    ip = serving_pod_ip(cluster, namespace, name, champion["version"])
    answer = infer(ip, port, name, IRIS_ROWS)
    assert answer["model_name"] == name
    assert answer["id"] == "integration-test"
    assert as_classes(answer["outputs"][0]["data"]) == IRIS_CLASSES


def test_unreachable_threshold_is_rejected(cluster: Any, namespace: str, operator: Any) -> None:
    watch = Watch(cluster, operator, namespace)
    name = "dummy"
    spec = base_spec(
        training={"estimator": "sklearn.dummy.DummyClassifier", "parameters": {}},
        evaluation={"metric": "accuracy", "threshold": 1.0},
    )
    apply(cluster, namespace, manifest(name, spec))
    mc = watch.until(name, step_in(["Rejected"], cycle=1), "Rejected")
    gated = condition(mc, "Gated")
    assert (gated["status"], gated["reason"]) == ("False", "BelowThreshold")
    assert "1" in gated["message"]
    ready = condition(mc, "Ready")
    assert ready["status"] == "False"
    assert mc["status"]["history"][-1]["verdict"] == "Rejected"
    assert "champion" not in mc["status"]
    assert get_json(cluster, namespace, "deployment", f"{name}-serving") is None
    assert children(cluster, namespace, name, "deployments") == []


def test_better_params_replace_the_champion_and_worse_are_rejected(
    cluster: Any, namespace: str, operator: Any
) -> None:
    watch = Watch(cluster, operator, namespace)
    name = "tree"
    stump = {
        "estimator": "sklearn.tree.DecisionTreeClassifier",
        "parameters": {"max_depth": 1, "random_state": 0},
    }
    deep = {
        "estimator": "sklearn.tree.DecisionTreeClassifier",
        "parameters": {"max_depth": 4, "random_state": 0},
    }
    spec = base_spec(
        training=stump,
        evaluation={"metric": "accuracy", "threshold": 0.4, "compareWithChampion": True},
    )
    apply(cluster, namespace, manifest(name, spec))
    first = watch.until(name, ready_at(1), "cycle 1 promoted")
    weak = first["status"]["champion"]["metrics"]["accuracy"]

    patch_spec(cluster, namespace, name, {"training": deep})
    second = watch.until(name, ready_at(2), "cycle 2 promoted")
    strong = second["status"]["champion"]["metrics"]["accuracy"]
    assert strong > weak
    assert second["status"]["lastTrigger"]["type"] == "SpecChanged"
    version = second["status"]["champion"]["version"]
    deployment = get_json(cluster, namespace, "deployment", f"{name}-serving")
    assert deployment is not None
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations[VERSION_ANNOTATION] == version

    patch_spec(cluster, namespace, name, {"training": stump})
    third = watch.until(name, step_in(["Rejected"], cycle=3), "cycle 3 rejected")
    gated = condition(third, "Gated")
    assert (gated["status"], gated["reason"]) == ("False", "WorseThanChampion")
    assert third["status"]["champion"]["version"] == version
    assert condition(third, "Ready").get("status") == "True"
    assert [h["verdict"] for h in third["status"]["history"]] == [
        "Promoted",
        "Promoted",
        "Rejected",
    ]
    deployment = get_json(cluster, namespace, "deployment", f"{name}-serving")
    assert deployment is not None
    assert deployment["spec"]["template"]["metadata"]["annotations"][VERSION_ANNOTATION] == version


BAD_INPUTS = [
    (
        "no-such-class",
        base_spec(training={"estimator": "sklearn.linear_model.DoesNotExist"}),
        "TrainingFailed",
        "DoesNotExist",
    ),
    (
        "not-allowed",
        base_spec(training={"estimator": "subprocess.Popen"}),
        "TrainingFailed",
        "subprocess",
    ),
    (
        "no-data",
        {**base_spec(), "data": {"url": {"url": "http://127.0.0.1:9/x.csv", "format": "csv"}}},
        "DataCollectionFailed",
        "127.0.0.1:9",
    ),
]


def test_bad_input_stalls_while_another_completes(
    cluster: Any, namespace: str, operator: Any
) -> None:
    watch = Watch(cluster, operator, namespace)
    for name, spec, _, _ in BAD_INPUTS:
        apply(cluster, namespace, manifest(name, spec))
    apply(cluster, namespace, manifest("healthy", base_spec()))

    for name, _, reason, cause in BAD_INPUTS:
        failed = watch.until(name, step_in(["Failed"], cycle=1), "Failed")
        stalled = condition(failed, "Stalled")
        assert (stalled["status"], stalled["reason"]) == ("True", reason), name
        assert cause in stalled["message"], name
        assert condition(failed, "Ready").get("status") == "False"
        assert failed["status"]["history"][-1]["verdict"] == "Failed"

    watch.until("healthy", ready_at(1), "the healthy one Ready")

    # A failed cycle stays failed: no new Job, no new cycle.
    time.sleep(15)
    for name, _, reason, _ in BAD_INPUTS:
        again = get_mc(cluster, namespace, name)
        assert again["status"]["cycle"] == 1
        assert again["status"]["step"] == "Failed"
        assert children(cluster, namespace, name, "jobs") == [f"{name}-train-1"]
        events = cluster.kubectl(
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            f"involvedObject.name={name}",
            "-o",
            "jsonpath={.items[*].reason}",
        ).stdout.split()
        assert reason in events, (name, events)


def test_operator_killed_during_every_step(cluster: Any, namespace: str, operator: Any) -> None:
    watch = Watch(cluster, operator, namespace)
    name = "resilient"
    apply(cluster, namespace, manifest(name, base_spec()))
    explain = explainer(cluster, namespace, name, operator)

    def job_done(job: str) -> bool:
        obj = get_json(cluster, namespace, "job", job)
        return bool(obj and (obj.get("status") or {}).get("succeeded"))

    def deployment_available() -> bool:
        obj = get_json(cluster, namespace, "deployment", f"{name}-serving")
        status = (obj or {}).get("status") or {}
        return (
            bool(obj)
            and status.get("availableReplicas") == obj["spec"]["replicas"]
            and (status.get("updatedReplicas") == obj["spec"]["replicas"])
        )

    stages: list[tuple[str, Callable[[], bool], str]] = [
        # Kill while the step's child runs; it finishes without the operator. The train
        # Job's one container collects, trains and evaluates (no eval Job): the restarted
        # operator reads the collection and gates from its message.
        ("Training", lambda: job_done(f"{name}-train-1"), "the train Job to succeed"),
        ("RollingOut", deployment_available, "the Deployment to be available"),
    ]
    killed = False
    try:
        for step, child_done, what in stages:
            watch.until(name, step_in(LATER_STEPS[step]), step, interval=0.3)
            operator.kill()
            killed = True
            wait_for(child_done, timeout=120, what=what, explain=explain)
            operator.start()
            killed = False
    finally:
        if killed:  # the operator fixture is shared: leave it running whatever happened
            operator.start()

    mc = watch.until(name, ready_at(1), "Ready after the restarts")
    assert children(cluster, namespace, name, "jobs") == [f"{name}-train-1"]
    assert children(cluster, namespace, name, "deployments") == [f"{name}-serving"]
    assert [h["verdict"] for h in mc["status"]["history"]] == ["Promoted"]
    assert mc["status"]["cycle"] == 1


def test_delete_removes_everything_it_created(cluster: Any, namespace: str, operator: Any) -> None:
    watch = Watch(cluster, operator, namespace)
    name = "ephemeral"
    apply(cluster, namespace, manifest(name, base_spec()))
    watch.until(name, ready_at(1), "Ready")
    for kind in ("jobs", "deployments", "services", "persistentvolumeclaims"):
        assert children(cluster, namespace, name, kind), f"no {kind} before delete"

    cluster.kubectl("delete", "modelcycle", name, "-n", namespace, "--timeout=60s")

    def all_gone() -> bool:
        return not any(
            children(cluster, namespace, name, kind)
            for kind in ("jobs", "deployments", "services", "persistentvolumeclaims", "pods")
        )

    wait_for(
        all_gone,
        timeout=180,
        what=f"the children of {name} to be garbage-collected",
        explain=lambda: cluster.kubectl("get", "all,pvc", "-n", namespace, check=False).stdout,
        interval=2.0,
    )
    assert get_json(cluster, namespace, "modelcycle", name) is None
