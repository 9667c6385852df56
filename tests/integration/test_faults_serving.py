"""Serving faults: model-server pods killed under load and while feedback is posted.

A ModelCycle serves iris on two replicas. Load threads send V2 infer requests straight
to the two pod IPs (Service ClusterIPs are not routed here) and count every failure by
IP; a feedback thread posts labelled rows, each with its own id, to the pod that is about
to die. Then:

1. the victim's server process is SIGKILLed (what the OOM killer does): the container
   restarts in the same pod and the Deployment is whole again; failures only on that IP,
   and every acknowledged feedback record is on the artifact volume;
2. the other pod is deleted (``kubectl delete pod``, graceful): the ReplicaSet replaces
   it; failures only on the deleted pod's IP;
3. a retrain folds every record of the feedback file into the next cycle's training data
   (checked in the cycle's data snapshot, as soon as it is collected).

The numbers go to $MODELCYCLE_RELIABILITY_REPORT (see test_reliability.py).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from test_reliability import (
    NAME_LABEL,
    VERSION_ANNOTATION,
    Watch,
    annotate_retrain,
    apply,
    base_spec,
    condition,
    get_json,
    kill_pod_processes,
    manifest,
    pods_of,
    pvc_host_dir,
    ready_at,
    report,
    wait_for,
)

pytestmark = pytest.mark.integration

PORT = 8080
IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
IRIS_CLASSES = [0, 2, 1]


def _post(url: str, body: dict[str, Any], timeout: float = 2.0) -> tuple[int, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with contextlib.closing(exc):
            return exc.code, exc.read()


@dataclass
class Load:
    """Threads sending infer requests to fixed pod IPs, counting outcomes per IP."""

    model: str
    ips: list[str]
    ok: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    errors: dict[str, Counter[str]] = field(default_factory=dict)
    first_failure: dict[str, float] = field(default_factory=dict)
    last_failure: dict[str, float] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def _run(self, ip: str) -> None:
        url = f"http://{ip}:{PORT}/v2/models/{self.model}/infer"
        body = {
            "inputs": [{"name": "input-0", "shape": [3, 4], "datatype": "FP64", "data": IRIS_ROWS}]
        }
        while not self.stop.is_set():
            try:
                status, answer = _post(url, body)
                good = status == 200 and answer["outputs"][0]["data"] == IRIS_CLASSES
                why = f"HTTP {status}" if not good else ""
            except Exception as exc:  # noqa: BLE001 - every failure counts, whatever it is
                good, why = False, type(exc).__name__
            if good:
                self.ok[ip] += 1
                time.sleep(0.002)  # leave the 2 cores some room for the cluster
                continue
            now = time.monotonic()
            self.failed[ip] += 1
            self.errors.setdefault(ip, Counter())[why] += 1
            self.first_failure.setdefault(ip, now)
            self.last_failure[ip] = now
            time.sleep(0.01)
            continue

    def __enter__(self) -> Load:
        for ip in self.ips:
            t = threading.Thread(target=self._run, args=(ip,), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)

    def summary(self) -> dict[str, Any]:
        return {
            ip: {
                "ok": self.ok[ip],
                "failed": self.failed[ip],
                "errors": dict(self.errors.get(ip, {})),
                "failureWindowSeconds": round(
                    self.last_failure.get(ip, 0) - self.first_failure.get(ip, 0), 2
                ),
            }
            for ip in self.ips
        }


@dataclass
class Feedback:
    """A thread posting one labelled row at a time (unique ids) to one pod."""

    model: str
    ip: str
    acked: list[str] = field(default_factory=list)
    failed: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def _run(self) -> None:
        url = f"http://{self.ip}:{PORT}/v2/models/{self.model}/feedback"
        n = 0
        while not self.stop.is_set():
            n += 1
            rid = f"fb-{self.ip}-{n}"
            row = IRIS_ROWS[n % 3]
            try:
                status, answer = _post(
                    url, {"id": rid, "features": row, "label": IRIS_CLASSES[n % 3]}
                )
            except Exception:  # noqa: BLE001 - not acknowledged: may or may not be on disk
                status, answer = 0, None
            if status == 200 and isinstance(answer, dict) and answer.get("recorded") == 1:
                self.acked.append(rid)
            else:
                self.failed += 1
                time.sleep(0.02)

    def __enter__(self) -> Feedback:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=10)


def serving_pods(cluster: Any, namespace: str, name: str, version: str) -> list[dict[str, Any]]:
    """Ready, not-terminating serving pods running ``version``."""
    found = []
    for pod in pods_of(cluster, namespace, f"{NAME_LABEL}={name},modelcycle.dev/step=serving"):
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            continue
        if (meta.get("annotations") or {}).get(VERSION_ANNOTATION) != version:
            continue
        conditions = (pod.get("status") or {}).get("conditions") or ()
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            found.append(pod)
    return found


def deployment_whole(cluster: Any, namespace: str, name: str, replicas: int) -> bool:
    dep = get_json(cluster, namespace, "deployment", f"{name}-serving")
    status = (dep or {}).get("status") or {}
    return (
        status.get("availableReplicas") == replicas
        and status.get("readyReplicas") == replicas
        and status.get("updatedReplicas") == replicas
        and status.get("replicas") == replicas
    )


def collected_at(cycle: int) -> Callable[[dict[str, Any]], bool]:
    def predicate(mc: dict[str, Any]) -> bool:
        return (mc.get("status") or {}).get("cycle") == cycle and condition(
            mc, "DataCollected"
        ).get("status") == "True"

    return predicate


@contextlib.contextmanager
def feedback_and_load(model: str, ips: list[str], victim: str) -> Iterator[tuple[Load, Feedback]]:
    with Load(model, ips) as load, Feedback(model, victim) as fb:
        yield load, fb


def test_serving_pods_killed_under_load_lose_no_request_elsewhere_and_no_feedback(
    cluster: Any, namespace: str, operator: Any
) -> None:
    name = "served"
    replicas = 2
    watch = Watch(cluster, operator, namespace)
    t0 = time.monotonic()
    marks: dict[str, float] = {}

    def mark(what: str) -> None:
        marks[what] = round(time.monotonic() - t0, 1)

    apply(cluster, namespace, manifest(name, base_spec(serving={"replicas": replicas})))
    mc = watch.until(name, ready_at(1), "Ready at cycle 1")
    version = mc["status"]["champion"]["version"]
    mark("ready1")

    def all_ready() -> list[dict[str, Any]] | None:
        ready = serving_pods(cluster, namespace, name, version)
        return ready if len(ready) == replicas else None

    pods = wait_for(all_ready, timeout=60, what="two ready serving pods")
    victim, other = pods
    victim_ip, other_ip = victim["status"]["podIP"], other["status"]["podIP"]

    # 1. SIGKILL the victim's model server while it takes load and feedback.
    with feedback_and_load(name, [victim_ip, other_ip], victim_ip) as (load, fb):
        wait_for(lambda: load.ok[victim_ip] > 50 and len(fb.acked) > 20, timeout=30, what="load")
        acked_before_kill = len(fb.acked)
        killed_at = time.monotonic()
        mark("kill")
        assert kill_pod_processes(cluster, victim)
        wait_for(lambda: load.failed[victim_ip] > 0, timeout=10, what="the kill to be seen")

        def restarted() -> bool:
            pod = get_json(cluster, namespace, "pod", victim["metadata"]["name"])
            statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or [{}]
            return bool(statuses[0].get("restartCount")) and bool(statuses[0].get("ready"))

        wait_for(restarted, timeout=60, what="the killed container to restart and be ready")
        wait_for(
            lambda: deployment_whole(cluster, namespace, name, replicas),
            timeout=60,
            what="the Deployment to be whole again",
        )
        recovered = round(time.monotonic() - killed_at, 1)
        ok_at_recovery = load.ok[victim_ip]
        wait_for(lambda: load.ok[victim_ip] > ok_at_recovery + 20, timeout=30, what="answers")
    kill_phase = load.summary()
    mark("killPhaseDone")
    acked = list(fb.acked)

    # 2. Delete the other pod (graceful) under load: the ReplicaSet replaces it.
    with Load(name, [victim_ip, other_ip]) as load2:
        wait_for(lambda: load2.ok[other_ip] > 50, timeout=30, what="load")
        deleted_at = time.monotonic()
        mark("delete")
        cluster.kubectl("delete", "pod", other["metadata"]["name"], "-n", namespace, "--wait=false")

        def replaced() -> list[dict[str, Any]] | None:
            now = serving_pods(cluster, namespace, name, version)
            fresh = [p for p in now if p["metadata"]["name"] != other["metadata"]["name"]]
            return fresh if len(fresh) == replicas else None

        fresh = wait_for(replaced, timeout=90, what="a replacement serving pod")
        wait_for(
            lambda: deployment_whole(cluster, namespace, name, replicas),
            timeout=60,
            what="the Deployment to be whole again",
        )
        replaced_in = round(time.monotonic() - deleted_at, 1)
        time.sleep(1)
    delete_phase = load2.summary()
    mark("deletePhaseDone")
    new_ip = next(p["status"]["podIP"] for p in fresh if p["status"]["podIP"] != victim_ip)
    with Load(name, [new_ip]) as load3:
        wait_for(lambda: load3.ok[new_ip] > 20, timeout=30, what="the new pod to answer")
    assert load3.failed[new_ip] == 0

    # Every acknowledged feedback record is on the artifact volume.
    volume = pvc_host_dir(cluster, namespace, f"{name}-artifacts")
    lines = (volume / "feedback" / f"{version}.jsonl").read_bytes().splitlines()
    on_disk = []
    torn = 0
    for line in lines:
        try:
            on_disk.append(json.loads(line)["id"])
        except (ValueError, KeyError):
            torn += 1
    missing = sorted(set(acked) - set(on_disk))

    # 3. The next cycle folds every record of the file into its training data.
    annotate_retrain(cluster, namespace, name, "with-feedback")
    mark("retrain")
    second = watch.until(name, collected_at(2), "cycle 2 collected its data")
    mark("ready2")
    snapshot = json.loads((volume / "cycles" / "2" / "data" / "snapshot.json").read_text())
    first_snapshot = json.loads((volume / "cycles" / "1" / "data" / "snapshot.json").read_text())

    report(
        "serving_faults",
        {
            "replicas": replicas,
            "timeline": marks,
            "sigkill": {"load": kill_phase, "recoveredSeconds": recovered, "victim": victim_ip},
            "delete": {"load": delete_phase, "replacedSeconds": replaced_in, "victim": other_ip},
            "feedback": {
                "acked": len(acked),
                "ackedBeforeKill": acked_before_kill,
                "notAcked": fb.failed,
                "linesOnDisk": len(lines),
                "tornLines": torn,
                "missing": len(missing),
                "cycle2FeedbackRows": snapshot["feedbackRows"],
                "cycle2FeedbackSkipped": snapshot["feedbackSkipped"],
            },
        },
    )
    # Failures only on the pod that died, and it did fail (the kill was real).
    assert load.failed[other_ip] == 0, kill_phase
    assert load.failed[victim_ip] > 0, kill_phase
    assert load2.failed[victim_ip] == 0, delete_phase
    # Nothing acknowledged is lost; nothing on disk is lost on the way to the next cycle.
    assert not missing, f"{len(missing)} acknowledged records not on disk: {missing[:5]}"
    assert len(set(on_disk)) == len(on_disk), "a record was written twice"
    assert snapshot["feedbackRows"] == len(on_disk), snapshot
    assert snapshot["feedbackSkipped"] == torn, snapshot
    assert snapshot["trainRows"] == first_snapshot["trainRows"] + len(on_disk)
    assert snapshot["dataHash"] != first_snapshot["dataHash"]
    assert second["status"]["challenger"]["dataHash"] == snapshot["dataHash"]
