"""Reliability on the local control plane: faults injected, bad input refused, nothing lost.

Each test injects one class of fault (or bad input) into a real cluster with the real
operator, then checks what was lost: history entries, Jobs, the served model. The numbers
of every run (how many kills, where they landed, how long a component was down) are
written to the JSON file named by ``MODELCYCLE_RELIABILITY_REPORT`` when it is set; the
tables in ``docs/reliability.md`` come from such runs.

Fixtures (``tests/conftest.py``): ``cluster``, ``namespace`` and the session-wide
``operator`` (``kill()`` sends SIGKILL to its process group, ``start()`` starts it again).
Every test leaves the operator running, whatever happens.

Notes on the harness:

- ``Cluster.restart(component)`` stops a control-plane component and starts it again on
  the port it had, as a restart of a real one looks to its clients.
- A real out-of-memory kill (the node agent enforces memory limits with cgroups) is in
  ``test_oom.py``; here the train container is SIGKILLed, which is what the kernel's OOM
  killer does to it.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import http.server
import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

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
    operator_log,
    step_in,
)
from kubetest import wait_for as _wait_for

#: kubetest.wait_for polling every 0.5 s by default (a ModelCycle changes slowly).
wait_for = functools.partial(_wait_for, interval=0.5)


pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CYCLE_TIMEOUT = 180.0
#: Every step a cycle rests in between two reconciles (Gating never outlives one; nor does
#: Evaluating, now that the train container evaluates and reports the metrics itself; nor
#: Collecting, which only an older operator's two-container training Job shows: the one
#: container collects and trains, step Training).
STEPS = ("Pending", "Training", "RollingOut", "Serving")


# --- helpers (also used by test_faults_serving.py) ------------------------------------------


def report(key: str, value: Any) -> None:
    """Record the numbers of a run under ``key`` in $MODELCYCLE_RELIABILITY_REPORT."""
    target = os.environ.get("MODELCYCLE_RELIABILITY_REPORT")
    if not target:
        return
    path = Path(target)
    data: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text())
    data[key] = value
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


def get_mc(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    mc = get_json(cluster, namespace, "modelcycle", name)
    assert mc is not None, f"ModelCycle {namespace}/{name} is gone"
    return mc


class Watch(kubetest.Watch):
    timeout = CYCLE_TIMEOUT
    interval = 0.5


def cycle_done(mc: dict[str, Any], cycle: int) -> bool:
    status = mc.get("status") or {}
    return (
        status.get("cycle") == cycle
        and status.get("step") == "Serving"
        and (status.get("champion") or {}).get("cycle") == cycle
        and condition(mc, "Ready").get("status") == "True"
        and status.get("observedGeneration") == mc["metadata"]["generation"]
    )


def ready_at(cycle: int) -> Callable[[dict[str, Any]], bool]:
    return lambda mc: cycle_done(mc, cycle)


def annotate_retrain(cluster: Any, namespace: str, name: str, value: str) -> None:
    cluster.kubectl(
        "annotate",
        "modelcycle",
        name,
        "-n",
        namespace,
        "--overwrite",
        f"modelcycle.dev/retrain={value}",
    )


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


def pods_of(cluster: Any, namespace: str, selector: str) -> list[dict[str, Any]]:
    pods = get_json(cluster, namespace, "pods", "-l", selector)
    return list((pods or {}).get("items") or [])


def container_state(pod: dict[str, Any], container: str) -> str:
    status = pod.get("status") or {}
    for c in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        if c.get("name") == container:
            return next(iter(c.get("state") or {"unknown": {}}))
    return "unknown"


def started_at(pod: dict[str, Any], container: str) -> float:
    """When ``container`` of ``pod`` started running (epoch seconds, whole seconds)."""
    for c in (pod.get("status") or {}).get("containerStatuses") or []:
        if c.get("name") == container:
            text = ((c.get("state") or {}).get("running") or {}).get("startedAt") or ""
            if text:
                when = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
                return when.replace(tzinfo=datetime.UTC).timestamp()
    return float("inf")


def signal_pod(cluster: Any, pod: dict[str, Any], sig: int) -> list[int]:
    """Send ``sig`` to every container process the node agent runs for ``pod`` (pids.json)."""
    pids_file = Path(cluster.dir) / "pods" / pod["metadata"]["uid"] / "pids.json"
    entries = json.loads(pids_file.read_text())
    done = []
    for entry in entries:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(entry["pid"]), sig)
            done.append(int(entry["pid"]))
    return done


def kill_pod_processes(cluster: Any, pod: dict[str, Any]) -> list[int]:
    """SIGKILL every container process of ``pod``: what the OOM killer does."""
    return signal_pod(cluster, pod, signal.SIGKILL)


def events(cluster: Any, namespace: str, name: str) -> list[dict[str, Any]]:
    selector = f"involvedObject.name={name}"
    found = get_json(cluster, namespace, "events", "--field-selector", selector)
    return list((found or {}).get("items") or [])


def pvc_host_dir(cluster: Any, namespace: str, claim: str) -> Path:
    pvc = get_json(cluster, namespace, "pvc", claim)
    assert pvc is not None, f"no PVC {claim}"
    pv = json.loads(cluster.kubectl("get", "pv", pvc["spec"]["volumeName"], "-o", "json").stdout)
    return Path(pv["spec"]["hostPath"]["path"])


def restart(cluster: Any, component: str) -> float:
    """Stop a control-plane component and start it again; return the seconds it took."""
    started = time.monotonic()
    server = cluster.server
    cluster.restart(component)
    assert cluster.server == server, f"{component} restart moved the API server"
    return round(time.monotonic() - started, 1)


@pytest.fixture(scope="module", autouse=True)
def crd_installed(cluster: Any) -> None:
    found = cluster.kubectl("get", "crd", "modelcycles.modelcycle.dev", check=False)
    if found.returncode != 0:
        cluster.kubectl("apply", "-f", str(ROOT / "crds"))
        cluster.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/modelcycles.modelcycle.dev",
        )


@contextlib.contextmanager
def operator_left_running(operator: Any) -> Iterator[None]:
    """The operator fixture is shared: leave it running whatever happens."""
    try:
        yield
    finally:
        operator.start()


# --- operator SIGKILLed at random moments -------------------------------------------------

KILL_SEED = 20261201
MIN_KILLS = 20
MIN_CYCLES = 3
MAX_CYCLES = 16  # cycles take about 5 s now: room for MIN_KILLS kills
KILL_PHASE_SECONDS = 300.0


def hunting(kills: list[dict[str, Any]]) -> str | None:
    """After MIN_CYCLES cycles of random kills, a step no kill has landed in yet."""
    cycles = {k["cycle"] for k in kills}
    if len(cycles) < MIN_CYCLES:
        return None
    seen = {k["step"] for k in kills}
    return next((s for s in STEPS if s not in seen), None)


def test_operator_sigkilled_at_random_moments_over_many_cycles(
    cluster: Any, namespace: str, operator: Any
) -> None:
    """>= 20 SIGKILLs at seeded random delays, landing in every step; nothing lost or redone."""
    name = "sigkill"
    explain = explainer(cluster, namespace, name, operator)
    rng = random.Random(KILL_SEED)
    apply(cluster, namespace, manifest(name, base_spec()))
    kills: list[dict[str, Any]] = []
    annotated: set[int] = set()
    started = time.monotonic()
    with operator_left_running(operator):
        while True:
            delay = rng.uniform(0.3, 4.0)
            time.sleep(delay)
            mc = get_mc(cluster, namespace, name)
            cycle = int((mc.get("status") or {}).get("cycle") or 0)
            if cycle_done(mc, cycle):
                covered = set(STEPS) <= {k["step"] for k in kills}
                if len(kills) >= MIN_KILLS and covered and cycle >= MIN_CYCLES:
                    break
                if cycle >= MAX_CYCLES:
                    break
                if cycle not in annotated:
                    annotate_retrain(cluster, namespace, name, f"after-{cycle}")
                    annotated.add(cycle)
            hunted = hunting(kills)
            if hunted and (mc.get("status") or {}).get("step") != hunted:
                # A step the random kills keep missing (Pending lasts well under a
                # second): wait for it (starting the next cycle if need be), then kill.

                def probe(step: str = hunted) -> dict[str, Any] | None:
                    found = get_mc(cluster, namespace, name)
                    status = found.get("status") or {}
                    if status.get("step") == step:
                        return found
                    n = int(status.get("cycle") or 0)
                    if cycle_done(found, n) and n not in annotated and n < MAX_CYCLES:
                        annotate_retrain(cluster, namespace, name, f"after-{n}")
                        annotated.add(n)
                    return None

                mc = wait_for(
                    probe,
                    timeout=120,
                    what=f"step {hunted} to kill in",
                    explain=explain,
                    interval=0.05,
                )
            status = mc.get("status") or {}
            operator.kill()
            kills.append(
                {
                    "cycle": int(status.get("cycle") or 0),
                    "step": str(status.get("step") or "(no status)"),
                    "delay": round(delay, 2),
                    "hunted": bool(hunted),
                }
            )
            operator.start()
            if time.monotonic() - started > KILL_PHASE_SECONDS:
                raise AssertionError(
                    f"the cycles made too little progress under the kills: {kills}\n{explain()}"
                )
    cycles = len(annotated) + 1
    mc = Watch(cluster, operator, namespace).until(name, ready_at(cycles), f"Ready at {cycles}")
    duration = round(time.monotonic() - started, 1)
    time.sleep(6)  # a quiet period: more than one timer interval, nothing may start
    mc = get_mc(cluster, namespace, name)
    status = mc["status"]

    by_step = Counter(k["step"] for k in kills)
    hunted = Counter(k["step"] for k in kills if k["hunted"])
    report(
        "operator_sigkill",
        {
            "kills": len(kills),
            "cycles": cycles,
            "seconds": duration,
            "byStep": dict(by_step),
            "huntedByStep": dict(hunted),
            "seed": KILL_SEED,
            "detail": kills,
        },
    )
    assert len(kills) >= MIN_KILLS
    missing = [s for s in STEPS if not by_step[s]]
    assert not missing, f"no kill landed in {missing}: {kills}"

    # Every cycle completed exactly once, and nothing more started.
    assert status["cycle"] == cycles, status
    history = status["history"]
    assert [h["cycle"] for h in history] == list(range(1, cycles + 1)), history
    assert all(h["verdict"] == "Promoted" for h in history), history
    versions = [h["version"] for h in history]
    assert len(set(versions)) == cycles
    assert all(v.startswith(f"{n}-") for n, v in enumerate(versions, start=1)), versions
    assert all(h.get("startedAt") and h.get("finishedAt") for h in history), history

    # Exactly one Job per cycle (train also evaluates), each run by one pod that succeeded.
    expected = sorted(f"{name}-train-{n}" for n in range(1, cycles + 1))
    assert children(cluster, namespace, name, "jobs") == expected
    jobs = get_json(cluster, namespace, "jobs", "-l", f"{NAME_LABEL}={name}")
    for job in (jobs or {}).get("items") or []:
        js = job.get("status") or {}
        assert (js.get("succeeded"), js.get("failed") or 0) == (1, 0), (job["metadata"]["name"], js)
    job_pods = [
        p
        for p in pods_of(cluster, namespace, f"{NAME_LABEL}={name}")
        if (p["metadata"].get("labels") or {}).get("modelcycle.dev/step") in ("train", "evaluate")
    ]
    assert len(job_pods) == cycles, [p["metadata"]["name"] for p in job_pods]
    # At most one "Created Job" line each over all the restarts: a kill that lands after the
    # POST reached the API server but before its answer was read leaves the Job created and
    # no line (the next operator's create finds it existing), so zero is allowed too; the
    # one pod per Job above is what shows that nothing ran twice.
    log = operator_log(operator)
    created = {job_name: log.count(f"Created Job {job_name}\n") for job_name in expected}
    assert all(n <= 1 for n in created.values()), created

    # Transitions happened once each: one CycleStarted and one Promoted Event per cycle.
    reasons = Counter(
        (e.get("reason"), e.get("message", "").split(":")[0].split(" (")[0])
        for e in events(cluster, namespace, name)
    )
    for n in range(1, cycles + 1):
        assert reasons[("CycleStarted", f"Started cycle {n}")] <= 1, reasons
        assert reasons[("Promoted", f"Cycle {n}")] <= 1, reasons

    # The Deployment serves the last promoted version on all its replicas.
    champion = status["champion"]
    assert champion["version"] == versions[-1]
    deployment = get_json(cluster, namespace, "deployment", f"{name}-serving")
    assert deployment is not None
    template = deployment["spec"]["template"]["metadata"]["annotations"]
    assert template[VERSION_ANNOTATION] == versions[-1]
    ds = deployment.get("status") or {}
    assert ds.get("availableReplicas") == ds.get("updatedReplicas") == 1, ds


# --- control-plane components restarted mid-cycle ----------------------------------------


def test_apiserver_and_etcd_restarted_mid_cycle(
    cluster: Any, namespace: str, operator: Any
) -> None:
    """The operator (and the controller manager, scheduler, node agent) ride out restarts.

    The train container keeps running through the outage and usually exits during it:
    the node agent holds its terminal status until the API server takes it.
    """
    name = "restarts"
    watch = Watch(cluster, operator, namespace)
    pid_before = operator.proc.pid if operator.alive() else None
    apply(cluster, namespace, manifest(name, base_spec()))
    watch.until(name, step_in(["Training"], 1), "Training", interval=0.2)
    selector = f"batch.kubernetes.io/job-name={name}-train-1"

    def train_running() -> dict[str, Any] | None:
        for pod in pods_of(cluster, namespace, selector):
            if container_state(pod, "train") == "running":
                return pod
        return None

    wait_for(train_running, timeout=60, what="the train container", interval=0.1)
    api_seconds = restart(cluster, "kube-apiserver")
    etcd_seconds = restart(cluster, "etcd")
    watch.until(
        name,
        step_in(["RollingOut", "Serving"], 1),
        "RollingOut after the restarts",
        interval=0.1,
    )
    rollout_step = get_mc(cluster, namespace, name)["status"]["step"]
    etcd_rollout_seconds = restart(cluster, "etcd")
    mc = watch.until(name, ready_at(1), "Ready after the restarts")

    # Watches were re-established: a ModelCycle created only now is picked up (a timer
    # only runs for objects the operator already knows), and its pod runs.
    probe = "after-restarts"
    probe_started = time.monotonic()
    apply(cluster, namespace, manifest(probe, base_spec()))
    Watch(cluster, operator, namespace).until(
        probe,
        step_in(["Training", "Evaluating", "RollingOut", "Serving"], 1),
        "a new ModelCycle handled after the restarts",
        timeout=60,
    )
    pickup = round(time.monotonic() - probe_started, 1)

    report(
        "control_plane_restarts",
        {
            "duringTraining": {"apiserverSeconds": api_seconds, "etcdSeconds": etcd_seconds},
            "duringRollout": {"step": rollout_step, "etcdSeconds": etcd_rollout_seconds},
            "newObjectPickedUpSeconds": pickup,
        },
    )
    assert operator.alive(), "the operator exited"
    assert operator.proc.pid == pid_before, "the operator was restarted"
    for component in (
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "node-agent",
    ):
        assert cluster.alive(component), component
    status = mc["status"]
    assert [h["verdict"] for h in status["history"]] == ["Promoted"]
    assert children(cluster, namespace, name, "jobs") == [f"{name}-train-1"]
    node = json.loads(cluster.kubectl("get", "node", "-o", "json").stdout)["items"][0]
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready
    assert ready[0]["status"] == "True"


# --- a training pod killed (the OOM killer's SIGKILL) -------------------------------------


def test_training_pod_killed_retries_per_backoff_limit_then_stalls(
    cluster: Any, namespace: str, operator: Any
) -> None:
    name = "podkill"
    backoff_limit = 1
    # A slow fit, so the train container is alive long enough to be killed.
    training = {
        "estimator": "sklearn.ensemble.RandomForestClassifier",
        "parameters": {"n_estimators": 20000, "n_jobs": 1},
        "backoffLimit": backoff_limit,
        "activeDeadlineSeconds": 300,
    }
    apply(cluster, namespace, manifest(name, base_spec(training=training)))
    selector = f"batch.kubernetes.io/job-name={name}-train-1"
    explain = explainer(cluster, namespace, name, operator)
    killed: list[str] = []
    snapshot: Path | None = None
    for attempt in range(backoff_limit + 1):

        def running_pod() -> dict[str, Any] | None:
            # The one container collects, then fits: kill it in the fit, once this
            # attempt's snapshot is written (the fit of 20000 trees takes much longer).
            nonlocal snapshot
            for pod in pods_of(cluster, namespace, selector):
                if (
                    pod["metadata"]["name"] not in killed
                    and container_state(pod, "train") == "running"
                ):
                    if snapshot is None:
                        volume = pvc_host_dir(cluster, namespace, f"{name}-artifacts")
                        snapshot = volume / "cycles" / "1" / "data" / "snapshot.json"
                    started = started_at(pod, "train")
                    if snapshot.is_file() and snapshot.stat().st_mtime >= started:
                        return pod
            return None

        pod = wait_for(
            running_pod,
            timeout=90,
            what=f"train container of attempt {attempt + 1}",
            explain=explain,
            interval=0.2,
        )
        assert kill_pod_processes(cluster, pod), pod["metadata"]["name"]
        killed.append(pod["metadata"]["name"])

    mc = Watch(cluster, operator, namespace).until(
        name,
        step_in(["Failed"], 1),
        "Failed",
        fail_on_stall=False,
        timeout=120,
    )
    stalled = condition(mc, "Stalled")
    job = get_json(cluster, namespace, "job", f"{name}-train-1")
    assert job is not None
    pods = pods_of(cluster, namespace, selector)
    report(
        "training_pod_killed",
        {
            "kills": len(killed),
            "backoffLimit": backoff_limit,
            "pods": len(pods),
            "jobFailed": (job.get("status") or {}).get("failed"),
            "stalled": {k: stalled.get(k) for k in ("status", "reason", "message")},
        },
    )
    assert (stalled["status"], stalled["reason"]) == ("True", "TrainingFailed"), stalled
    assert "137" in stalled["message"], stalled["message"]
    assert condition(mc, "DataCollected")["status"] == "True", condition(mc, "DataCollected")
    assert (job.get("status") or {}).get("failed") == backoff_limit + 1
    assert sorted(p["metadata"]["name"] for p in pods) == sorted(killed)
    for pod in pods:  # what train --data leaves in its termination log once it has collected
        (status,) = pod["status"]["containerStatuses"]
        left = json.loads(status["state"]["terminated"]["message"])
        assert (left["stage"], left["collected"]["rows"]) == ("train", 150), left
    assert mc["status"]["history"][-1]["verdict"] == "Failed"
    time.sleep(6)  # a failed cycle stays failed: no new pod, no new Job
    assert len(pods_of(cluster, namespace, selector)) == backoff_limit + 1
    assert children(cluster, namespace, name, "jobs") == [f"{name}-train-1"]


# --- bad data through the operator --------------------------------------------------------

NAN_CSV = "sepal_length,sepal_width,petal_length,petal_width,species\n" + "".join(
    f"{5 + i % 3}.1,{'NaN' if i % 7 == 0 else '3.5'},1.4,{'' if i % 11 == 0 else '0.2'},{i % 3}\n"
    for i in range(60)
)


@pytest.fixture
def gateway_http(cluster: Any) -> Iterator[str]:
    """An http server on the cluster's gateway IP (reachable from pods) serving NAN_CSV."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = NAN_CSV.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/csv")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    yield from serve_on_gateway(cluster, Handler)


def serve_on_gateway(
    cluster: Any, handler: type[http.server.BaseHTTPRequestHandler]
) -> Iterator[str]:
    gateway = cluster.config.gateway_ip
    server = http.server.ThreadingHTTPServer((gateway, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{gateway}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_csv_with_nans_over_http_stalls_with_the_columns_named(
    cluster: Any, namespace: str, operator: Any, gateway_http: str
) -> None:
    name = "nan-data"
    data = {
        "url": {"url": f"{gateway_http}/iris-with-nans.csv", "format": "csv"},
        "target": "species",
        "testFraction": 0.25,
        "seed": 1,
    }
    started = time.monotonic()
    apply(cluster, namespace, manifest(name, {**base_spec(), "data": data}))
    mc = Watch(cluster, operator, namespace).until(
        name,
        step_in(["Failed"], 1),
        "Failed",
        fail_on_stall=False,
        timeout=120,
    )
    stalled = condition(mc, "Stalled")
    report(
        "bad_data_through_operator",
        {
            "seconds": round(time.monotonic() - started, 1),
            "reason": stalled.get("reason"),
            "message": stalled.get("message"),
        },
    )
    assert (stalled["status"], stalled["reason"]) == ("True", "DataCollectionFailed")
    nan_rows = math.ceil(60 / 7)
    empty_rows = math.ceil(60 / 11)
    assert f"sepal_width ({nan_rows})" in stalled["message"], stalled["message"]
    assert f"petal_width ({empty_rows})" in stalled["message"], stalled["message"]
    job = get_json(cluster, namespace, "job", f"{name}-train-1")
    assert job is not None
    assert (job.get("status") or {}).get("failed") == 1


# --- two operator replicas with kopf peering ----------------------------------------------


class Peer:
    """An operator process started as the chart starts it with peering.enabled."""

    def __init__(self, cluster: Any, peering: str, priority: int, log_path: Path) -> None:
        self.log_path = log_path
        log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kopf",
                "run",
                "-m",
                "modelcycle_operator",
                "--all-namespaces",
                f"--peering={peering}",
                f"--priority={priority}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={
                **os.environ,
                "KUBECONFIG": str(cluster.kubeconfig),
                "MODELCYCLE_TIMER_SECONDS": "5",
                "MODELCYCLE_RECEIVER_PORT": "0",  # two replicas on one host: no port clash
            },
            start_new_session=True,
        )
        log.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def test_two_peered_operator_replicas_do_no_step_twice(
    cluster: Any, namespace: str, operator: Any, tmp_path: Path
) -> None:
    """Two replicas at once (the chart's peering); the active one stops mid-cycle."""
    peering = "reliability"
    cluster.kubectl("apply", "-f", str(ROOT / "charts/modelcycle-operator/crds/kopf-peering.yaml"))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/clusterkopfpeerings.kopf.dev",
    )
    apply(
        cluster,
        "default",
        {
            "apiVersion": "kopf.dev/v1",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": peering},
        },
    )
    name = "peered"
    operator.stop()
    peers: list[Peer] = []
    with operator_left_running(operator):
        try:
            high = Peer(cluster, peering, 200, tmp_path / "high.log")
            low = Peer(cluster, peering, 100, tmp_path / "low.log")
            peers = [high, low]

            def registered() -> bool:
                obj = get_json(cluster, "default", "clusterkopfpeering", peering)
                return len((obj or {}).get("status") or {}) == 2

            # Both keep-alives are in the peering object: the low one is paused (kopf
            # starts its watches paused and keeps them so while a higher priority lives).
            wait_for(registered, timeout=30, what="both replicas in the peering object")
            apply(cluster, namespace, manifest(name, base_spec()))
            Watch(cluster, operator, namespace).until(
                name,
                step_in(["Training", "Evaluating"], 1),
                "Training",
                interval=0.2,
            )
            resuming = "Resuming operations after the pause"
            before = low.log().count(resuming)  # kopf says it once at start-up, too
            handoff = time.monotonic()
            handoff_stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            high.stop()  # a rolling update: the active replica exits cleanly
            wait_for(
                lambda: low.log().count(resuming) > before,
                timeout=60,
                what="the standby to resume",
                explain=lambda: low.log()[-3000:],
            )
            resumed = round(time.monotonic() - handoff, 1)
            mc = Watch(cluster, operator, namespace).until(
                name, ready_at(1), "Ready via the standby"
            )
        finally:
            for peer in peers:
                peer.stop()
    logs = [peer.log() for peer in peers]
    jobs = [f"{name}-train-1"]
    created = {job: [log.count(f"Created Job {job}\n") for log in logs] for job in jobs}
    report(
        "peering",
        {
            "replicas": 2,
            "handoffSeconds": resumed,
            "createdJobsPerReplica": created,
            "cycles": mc["status"]["cycle"],
        },
    )
    assert children(cluster, namespace, name, "jobs") == sorted(jobs)
    for job, counts in created.items():
        assert sum(counts) == 1, (job, counts)
    assert [h["verdict"] for h in mc["status"]["history"]] == ["Promoted"]
    # Each replica did part of the cycle: the handoff happened in the middle of it.
    assert any(c[0] for c in created.values()), created
    assert "cycle 1 is now Serving" in logs[1], "the standby did not finish the cycle"
    # While paused, the standby did nothing for this object (kopf's lines: "[%Y-%m-%d %H:...").
    paused_part = [line for line in logs[1].splitlines() if line[1:20] < handoff_stamp]
    assert not [line for line in paused_part if f"{namespace}/{name}" in line], paused_part


# --- property-based specs against the API server -------------------------------------------

SPEC_EXAMPLES = 200


def test_generated_specs_are_refused_by_field_or_handled_by_the_operator(
    cluster: Any, namespace: str, operator: Any
) -> None:
    """Specs from the CRD's schema: the API server names the field it refuses, the operator
    handles (or refuses, naming the field) what it accepts, and never loops."""
    from hypothesis import HealthCheck, given, settings
    from kubernetes import client, config

    from unit.test_fuzz_specs import check_decide, specs

    api = client.CustomObjectsApi(config.new_client_from_config(str(cluster.kubeconfig)))
    outcomes: Counter[str] = Counter()
    refusals: Counter[str] = Counter()
    accepted: list[tuple[str, dict[str, Any]]] = []

    @settings(
        max_examples=SPEC_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(specs)
    def one(spec: Any) -> None:
        body = manifest("fuzz", spec)
        refused: client.ApiException | None = None
        try:
            created = api.create_namespaced_custom_object(
                "modelcycle.dev", "v1alpha1", namespace, "modelcycles", body, dry_run="All"
            )
        except client.ApiException as exc:
            refused = exc
        if refused is not None:
            assert refused.status in (400, 422), (refused.status, refused.body)
            message = str(json.loads(refused.body).get("message") or "")
            assert "spec" in message or "metadata" in message, message
            field = message.split(": ")[1] if ": " in message else message
            refusals[field.strip("[")] += 1
            outcomes["refused by the API server"] += 1
            return
        outcome = check_decide(created)
        outcomes[outcome] += 1
        accepted.append((outcome, created["spec"]))

    one()

    # A few accepted ones for real: the running operator settles them and stays quiet.
    chosen = [s for o, s in accepted if o == "InvalidSpec"][:3]
    chosen += [{**s, "suspend": True} for o, s in accepted if o != "InvalidSpec"][: 4 - len(chosen)]
    names = []
    for i, spec in enumerate(chosen):
        names.append(f"real-{i}")
        apply(cluster, namespace, manifest(names[-1], spec))
    settled: dict[str, str] = {}
    for name in names:
        mc = Watch(cluster, operator, namespace).until(
            name,
            lambda mc: (mc.get("status") or {}).get("step") in ("Suspended", "Failed"),
            "settled",
            fail_on_stall=False,
            timeout=60,
        )
        stalled = condition(mc, "Stalled")
        if mc["status"]["step"] == "Failed":
            assert stalled["reason"] == "InvalidSpec"
            assert stalled["message"].startswith("spec"), stalled
        settled[name] = mc["metadata"]["resourceVersion"]
    time.sleep(12)  # more than two timer intervals: nothing may be written any more
    for name in names:
        again = get_mc(cluster, namespace, name)
        assert again["metadata"]["resourceVersion"] == settled[name], (name, again["status"])
    assert children(cluster, namespace, "fuzz", "jobs") == []
    report(
        "property_based_specs",
        {
            "examples": SPEC_EXAMPLES,
            "outcomes": dict(outcomes),
            "topRefusals": dict(refusals.most_common(8)),
            "createdForReal": len(names),
        },
    )
    assert outcomes["refused by the API server"] > 0, outcomes
    assert sum(n for o, n in outcomes.items() if o != "refused by the API server") > 0, outcomes


# --- the manual trigger ----------------------------------------------------------------------


def test_the_retrain_annotation_alone_starts_the_next_cycle_promptly(
    cluster: Any, namespace: str, operator: Any
) -> None:
    """Found here: kopf leaves annotations under its own storage prefix (modelcycle.dev)
    out of the object's essence, so the annotation woke no handler and an idle ModelCycle
    saw it only at the slow resync (300 s). Fixed by a raw-event handler; kept as the
    regression test."""
    name = "manual"
    watch = Watch(cluster, operator, namespace)
    apply(cluster, namespace, manifest(name, base_spec(serving={"enabled": False})))
    watch.until(
        name,
        lambda mc: (
            (mc.get("status") or {}).get("step") == "Serving"
            and condition(mc, "Reconciling").get("status") == "False"
        ),
        "cycle 1 promoted",
    )
    time.sleep(3)  # let the children's last events pass: only the annotation changes now
    annotate_retrain(cluster, namespace, name, "now")
    watch.until(name, lambda mc: (mc.get("status") or {}).get("cycle") == 2, "cycle 2", timeout=30)
