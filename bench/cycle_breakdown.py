# ruff: noqa: E501 - long report labels
"""The whole cycle: examples/iris.yaml from apply to Ready, broken down by step.

    .venv/bin/python bench/cycle_breakdown.py            # 3 runs, ~3 min
    .venv/bin/python bench/cycle_breakdown.py --runs 5

Run as root from the repository with the project's virtualenv. Own local cluster
(``ClusterConfig(name="bench")``), the CRD, the operator as a developer runs it (default
settings), torn down at the end (also on Ctrl-C / SIGTERM / an exception).

Each run creates the iris ModelCycle in a fresh namespace that enforces PodSecurity
``restricted`` (as the demo does) and records every Job, Pod, Deployment and ModelCycle
event of that namespace with this process's wall clock (the node agent pushes pod status
every 0.1 s, so "first seen running" is within ~0.1 s of the fact; the containers'
startedAt/finishedAt have 1 s resolution and are kept for reference). In-pod figures come
from the termination messages (``fitSeconds``).

The unavoidable parts, measured right after each run (the machine is shared and noisy, so
each run is compared with its own floor; the ratio is summarised across runs):

- pod start: a bare pod (busybox ``sleep``) from create to its container first seen running;
- interpreter and imports, once (one process could do the whole job): ``python -c 'import
  numpy, sklearn.datasets, sklearn.linear_model, sklearn.metrics, skops.io'`` (hyperfine);
- fit: the run's own in-pod ``fitSeconds``;
- evaluate: predict + the metrics the evaluate step reports, in-process (the train
  container does it since `train --evaluation`; there is no eval Job any more);
- serving: the serving command of the Deployment (built by the operator's builders) run
  locally on the same model, from process start to 200 on ``/v2/health/ready`` (polled
  every 10 ms) -- its interpreter, imports and model load, without the readiness probe's
  2 s period.

Target: apply -> Ready within 2 x their sum.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from operator_latency import (
    GROUP,
    PLURAL,
    REPO,
    RESULTS,
    VERSION,
    BenchCluster,
    log,
    machine_info,
    operator_process,
    render_report,
    snapshot_operator,
    summarize,
    terminate_on_sigterm,
    versions,
    wait_until,
)

POD_ENV = {"HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
WORKDIR = Path("/var/lib/modelcycle/clusters/bench-logs")
IMPORTS = "import numpy, sklearn.datasets, sklearn.linear_model, sklearn.metrics, skops.io"


class Recorder:
    """Every event of one kind in one namespace: (wall time, type, object as a dict)."""

    def __init__(self, kubeconfig: Path, namespace: str, kind: str) -> None:
        api = k8s_config.new_client_from_config(config_file=str(kubeconfig))
        self.api = api
        self.namespace = namespace
        self.kind = kind
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self.stop = threading.Event()
        if kind == "pods":
            core = k8s.CoreV1Api(api)
            self.list = lambda **kw: core.list_namespaced_pod(namespace, **kw)
        elif kind == "jobs":
            batch = k8s.BatchV1Api(api)
            self.list = lambda **kw: batch.list_namespaced_job(namespace, **kw)
        elif kind == "deployments":
            apps = k8s.AppsV1Api(api)
            self.list = lambda **kw: apps.list_namespaced_deployment(namespace, **kw)
        else:
            custom = k8s.CustomObjectsApi(api)
            self.list = lambda **kw: custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, **kw
            )
        listed = self.list()
        self.rv = (
            listed["metadata"]["resourceVersion"]
            if isinstance(listed, dict)
            else listed.metadata.resource_version
        )
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                for ev in k8s_watch.Watch().stream(
                    self.list, resource_version=self.rv, timeout_seconds=5
                ):
                    now = time.time()
                    obj = ev["object"]
                    if not isinstance(obj, dict):
                        obj = self.api.sanitize_for_serialization(obj)
                    self.rv = obj["metadata"]["resourceVersion"]
                    self.events.append((now, ev["type"], obj))
                    if self.stop.is_set():
                        return
            except Exception:  # noqa: BLE001 - dropped watch: resume from the last rv
                time.sleep(0.1)


def first(
    events: list[tuple[float, str, dict[str, Any]]], pred: Any
) -> tuple[float, dict[str, Any]] | None:
    for t, _type, obj in events:
        with contextlib.suppress(KeyError, TypeError, IndexError, AttributeError):
            if pred(obj):
                return t, obj
    return None


def cstatus(pod: dict[str, Any], name: str) -> dict[str, Any]:
    st = pod.get("status") or {}
    for c in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or []):
        if c["name"] == name:
            return c
    return {}


def running_or_done(pod: dict[str, Any], name: str) -> bool:
    state = cstatus(pod, name).get("state") or {}
    return bool(state.get("running") or state.get("terminated"))


def terminated(pod: dict[str, Any], name: str) -> dict[str, Any] | None:
    state = cstatus(pod, name).get("state") or {}
    return state.get("terminated")


def pod_ready(pod: dict[str, Any]) -> bool:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c["type"] == "Ready" and c["status"] == "True":
            return True
    return False


def job_done(job: dict[str, Any]) -> bool:
    return int((job.get("status") or {}).get("succeeded") or 0) >= 1


def mc_ready(mc: dict[str, Any]) -> bool:
    for c in (mc.get("status") or {}).get("conditions") or []:
        if c["type"] == "Ready" and c["status"] == "True":
            return True
    return False


def one_run(bc: BenchCluster, index: int, timeout: float) -> dict[str, Any]:
    ns = f"iris-{index}"
    bc.namespace(ns, {"pod-security.kubernetes.io/enforce": "restricted"})
    recs = {k: Recorder(bc.kubeconfig, ns, k) for k in ("pods", "jobs", "deployments", "mc")}
    body = yaml.safe_load((REPO / "examples" / "iris.yaml").read_text())
    body["metadata"]["namespace"] = ns
    try:
        bc.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
        t_apply = time.time()
        wait_until(lambda: first(recs["mc"].events, mc_ready) is not None, timeout, "iris Ready")
        time.sleep(0.3)
    finally:
        for r in recs.values():
            r.stop.set()
    pods, jobs = recs["pods"].events, recs["jobs"].events
    deps, mcs = recs["deployments"].events, recs["mc"].events

    def job_pod(job: str) -> Any:
        return lambda p, c=None: p["metadata"]["labels"].get("job-name") == job

    def pod_with(job: str, cond: Any) -> tuple[float, dict[str, Any]] | None:
        return first(pods, lambda p: job_pod(job)(p) and cond(p))

    def serving(p: dict[str, Any]) -> bool:
        return p["metadata"]["labels"].get("modelcycle.dev/step") == "serving"

    t: dict[str, float | None] = {"apply": t_apply}

    def put(key: str, hit: tuple[float, dict[str, Any]] | None) -> dict[str, Any] | None:
        t[key] = hit[0] if hit else None
        return hit[1] if hit else None

    put("trainJob", first(jobs, lambda j: j["metadata"]["name"] == "iris-train-1"))
    put("trainPod", pod_with("iris-train-1", lambda p: True))
    put("trainScheduled", pod_with("iris-train-1", lambda p: p["spec"].get("nodeName")))
    put("collectRunning", pod_with("iris-train-1", lambda p: running_or_done(p, "collect")))
    collect_pod = put("collectDone", pod_with("iris-train-1", lambda p: terminated(p, "collect")))
    put("trainRunning", pod_with("iris-train-1", lambda p: running_or_done(p, "train")))
    train_pod = put("trainDone", pod_with("iris-train-1", lambda p: terminated(p, "train")))
    put(
        "trainJobDone",
        first(jobs, lambda j: j["metadata"]["name"] == "iris-train-1" and job_done(j)),
    )
    put("evalJob", first(jobs, lambda j: j["metadata"]["name"] == "iris-eval-1"))  # older images
    put("deployment", first(deps, lambda d: d["metadata"]["name"] == "iris-serving"))
    # The operator acts on the train pod's Succeeded phase or on the Job's Complete
    # condition, whichever it sees first: split "train exit -> Deployment" there.
    done_or_acted = [v for v in (t["trainJobDone"], t["deployment"]) if v is not None]
    t["trainSeen"] = min(done_or_acted) if done_or_acted else None
    put("servingPod", first(pods, serving))
    put(
        "servingRunning",
        first(
            pods,
            lambda p: (
                serving(p) and running_or_done(p, "serve")
                if cstatus(p, "serve")
                else serving(p)
                and bool(
                    [
                        c
                        for c in (p.get("status") or {}).get("containerStatuses") or []
                        if (c.get("state") or {}).get("running")
                    ]
                )
            ),
        ),
    )
    put("servingReady", first(pods, lambda p: serving(p) and pod_ready(p)))
    put("ready", first(mcs, mc_ready))

    def msg(pod: dict[str, Any] | None, name: str) -> dict[str, Any]:
        term = terminated(pod, name) if pod else None
        if not term:
            return {}
        out = {"startedAt": term.get("startedAt"), "finishedAt": term.get("finishedAt")}
        with contextlib.suppress(ValueError, TypeError):
            out["message"] = json.loads(term.get("message") or "{}")
        return out

    in_pod = {
        "collect": msg(collect_pod, "collect"),
        "train": msg(train_pod, "train"),
    }
    if t["evalJob"] is not None:
        raise RuntimeError("the operator created iris-eval-1: train reported no metrics")

    def d(a: str, b: str) -> float | None:
        ta, tb = t.get(a), t.get(b)
        return round(tb - ta, 3) if ta is not None and tb is not None else None

    fit = (in_pod["train"].get("message") or {}).get("fitSeconds")
    steps = {
        "operator: apply → train Job": (d("apply", "trainJob"), "operator"),
        "Job controller + scheduler: Job → pod scheduled": (
            d("trainJob", "trainScheduled"),
            "platform",
        ),
    }
    if t["collectRunning"] is None:  # the one-container Job (train --data)
        steps["node agent: pod scheduled → train running"] = (
            d("trainScheduled", "trainRunning"),
            "pod start",
        )
        steps["train container (interpreter, imports, collect, fit, dump, evaluate)"] = (
            d("trainRunning", "trainDone"),
            "workload",
        )
    else:  # an older operator's Job: a collect initContainer, then train
        steps["node agent: pod scheduled → collect running"] = (
            d("trainScheduled", "collectRunning"),
            "pod start",
        )
        steps["collect container (interpreter, imports, load, split, write)"] = (
            d("collectRunning", "collectDone"),
            "workload",
        )
        steps["node agent: collect exit → train running"] = (
            d("collectDone", "trainRunning"),
            "pod start",
        )
        steps["train container (interpreter, imports, fit, dump, evaluate)"] = (
            d("trainRunning", "trainDone"),
            "workload",
        )
    steps |= {
        "  of which fit (fitSeconds, in-pod)": (fit, "workload"),
        "train exit → train Job complete, or the operator acting first": (
            d("trainDone", "trainSeen"),
            "platform",
        ),
        "  (train exit → train Job complete, for reference)": (
            d("trainDone", "trainJobDone"),
            "platform",
        ),
        "operator: train done → evaluated, gated, Deployment": (
            d("trainSeen", "deployment"),
            "operator",
        ),
        "Deployment controller: Deployment → serving pod": (
            d("deployment", "servingPod"),
            "platform",
        ),
        "serving pod → Ready (start, imports, load, readiness)": (
            d("servingPod", "servingReady"),
            "serving",
        ),
        "operator: serving pod Ready → ModelCycle Ready": (d("servingReady", "ready"), "operator"),
    }
    total = d("apply", "ready")
    log(f"run {index}: apply -> Ready {total} s")
    with contextlib.suppress(Exception):
        bc.core.delete_namespace(ns)
    return {
        "namespace": ns,
        "totalSeconds": total,
        "steps": {k: v[0] for k, v in steps.items()},
        "kinds": {k: v[1] for k, v in steps.items()},
        "timeline": {k: (round(v - t_apply, 3) if v is not None else None) for k, v in t.items()},
        "inPod": in_pod,
    }


def pod_start(bc: BenchCluster, repeats: int, index: int = 0) -> list[float]:
    ns = "podstart"
    bc.namespace(ns)
    out = []
    for i in range(repeats):
        name = f"bare-{index}-{i}"
        rec = Recorder(bc.kubeconfig, ns, "pods")
        body = {
            "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "30"]}],
            },
        }
        bc.core.create_namespaced_pod(ns, body)
        t0 = time.time()
        try:
            wait_until(
                lambda r=rec: first(r.events, lambda p: running_or_done(p, "c")) is not None,
                60,
                "bare pod running",
                0.02,
            )
            hit = first(rec.events, lambda p: running_or_done(p, "c"))
            assert hit is not None
            out.append(round(hit[0] - t0, 3))
        finally:
            rec.stop.set()
            with contextlib.suppress(Exception):
                bc.core.delete_namespaced_pod(name, ns, grace_period_seconds=0)
        time.sleep(0.5)
    return out


def hyperfine(commands: dict[str, str], runs: int, warmup: int = 1) -> dict[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "h.json"
        argv = [
            "hyperfine",
            "-N",
            "--warmup",
            str(warmup),
            "--runs",
            str(runs),
            "--export-json",
            str(out),
            "--style",
            "none",
        ]
        for name, cmd in commands.items():
            argv += ["-n", name, cmd]
        subprocess.run(argv, check=True, env={**os.environ, **POD_ENV}, capture_output=True)
        data = json.loads(out.read_text())
    return {r["command"]: summarize(r["times"]) for r in data["results"]}


def in_process_fit_eval(repeats: int) -> dict[str, Any]:
    code = r"""
import json, time, statistics
from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split
from sklearn.linear_model import LogisticRegression
from sklearn import metrics
X, y = load_iris(return_X_y=True)
Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=42, stratify=y)
fits, evals = [], []
for _ in range(REPEATS):
    t = time.perf_counter(); m = LogisticRegression(max_iter=500).fit(Xtr, ytr); fits.append(time.perf_counter() - t)
    t = time.perf_counter()
    p = m.predict(Xte); proba = m.predict_proba(Xte)
    metrics.accuracy_score(yte, p); metrics.balanced_accuracy_score(yte, p)
    metrics.f1_score(yte, p, average="macro"); metrics.precision_score(yte, p, average="macro")
    metrics.recall_score(yte, p, average="macro"); metrics.roc_auc_score(yte, proba, multi_class="ovr")
    metrics.confusion_matrix(yte, p)
    evals.append(time.perf_counter() - t)
print(json.dumps({"fit": statistics.median(fits), "evaluate": statistics.median(evals)}))
""".replace("REPEATS", str(repeats))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(res.stdout)


def serve_to_ready(work: Path, serve_cmd: list[str]) -> float:
    """Local ``serve`` process start -> 200 on /v2/health/ready (polled every 10 ms)."""
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [str(Path(sys.executable).parent / serve_cmd[0]), *serve_cmd[1:]]
    argv = [str(work) if a == "/artifacts" else a for a in argv]
    argv = [a.replace("/artifacts/", f"{work}/") for a in argv]
    argv[argv.index("--port") + 1] = str(port)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        argv,
        env={**os.environ, **POD_ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while time.monotonic() - t0 < 60:
            with (
                contextlib.suppress(Exception),
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as r,
            ):
                if r.status == 200:
                    return round(time.monotonic() - t0, 3)
            if proc.poll() is not None:
                raise RuntimeError(f"serve exited with {proc.returncode}")
            time.sleep(0.01)
        raise RuntimeError("serve not ready within 60 s")
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)


def local_model() -> tuple[Path, list[str]]:
    """The iris model trained locally with the Job's own commands; and the serve command."""
    from training_overhead import job_commands, localize

    from modelcycle_operator.pure import builders
    from modelcycle_operator.pure.spec import ModelCycle
    from modelcycle_operator.settings import load_settings

    work = Path(tempfile.mkdtemp(prefix="mc-cycle-bench-"))
    job_cmd, _, _ = job_commands()  # the one container: collect + train + evaluate
    subprocess.run(
        ["bash", "-c", localize(job_cmd, work, work / "t2")],
        check=True,
        env={**os.environ, **POD_ENV},
        capture_output=True,
    )
    version = json.loads((work / "t2").read_text())["version"]
    body = yaml.safe_load((REPO / "examples" / "iris.yaml").read_text())
    body["metadata"].update(namespace="bench", uid="00000000-0000-0000-0000-000000000000")
    mc = ModelCycle.from_body(body)
    dep = builders.serving_deployment(mc, {"cycle": 1, "version": version}, load_settings({}))
    serve_cmd = list(dep["spec"]["template"]["spec"]["containers"][0]["command"])
    return work, serve_cmd


def unavoidable_now(
    bc: BenchCluster, run: dict[str, Any], work: Path, serve_cmd: list[str], index: int
) -> dict[str, float]:
    """The unavoidable parts, measured right after the run (same machine load)."""
    imports = hyperfine({"imports": f"{sys.executable} -c '{IMPORTS}'"}, runs=3)
    fe = in_process_fit_eval(10)
    fit = (run["inPod"]["train"].get("message") or {}).get("fitSeconds") or fe["fit"]
    return {
        "pod start (bare pod create → running)": pod_start(bc, 1, index)[0],
        "interpreter + imports, once": imports["imports"]["median"],
        "fit (the run's in-pod fitSeconds)": float(fit),
        "evaluate (predict + the reported metrics, in-process)": fe["evaluate"],
        "serve: process start → /v2/health/ready (local, 10 ms polling)": serve_to_ready(
            work, serve_cmd
        ),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=240)
    ap.add_argument("--keep-cluster", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--cluster", default="bench", help="local cluster name (default: bench)")
    ap.add_argument(
        "--no-report",
        action="store_true",
        help="only write the JSON; leave bench/RESULTS-operator.md as it is",
    )
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("run as root: the local cluster needs network and mount namespaces")
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    out_path = args.out or RESULTS / f"operator-cycle-{date}.json"
    result: dict[str, Any] = {
        "command": "python bench/cycle_breakdown.py " + " ".join(argv or sys.argv[1:]),
        "machine": machine_info(),
        "versions": versions(),
        "operatorSource": snapshot_operator(WORKDIR),
    }
    work, serve_cmd = local_model()
    runs: list[dict[str, Any]] = []
    try:
        with terminate_on_sigterm(), BenchCluster(args.cluster, keep=args.keep_cluster) as bc:
            op = operator_process(bc, WORKDIR / "operator-cycle.log")
            op.start()
            try:
                wait_until(lambda: "Activity 'configure' succeeded" in op.text(), 60, "operator up")
                for i in range(args.runs):
                    run = one_run(bc, i, args.timeout)
                    time.sleep(1)
                    run["unavoidable"] = unavoidable_now(bc, run, work, serve_cmd, i)
                    run["unavoidableSeconds"] = round(sum(run["unavoidable"].values()), 3)
                    run["ratio"] = round(run["totalSeconds"] / run["unavoidableSeconds"], 3)
                    log(f"run {i}: unavoidable {run['unavoidableSeconds']} s, ratio {run['ratio']}")
                    runs.append(run)
            finally:
                op.stop()
                result["runs"] = runs
                result["machine"]["loadavgEnd"] = Path("/proc/loadavg").read_text().split()[:3]
                RESULTS.mkdir(parents=True, exist_ok=True)
                out_path.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    totals = [r["totalSeconds"] for r in runs]
    steps: dict[str, Any] = {}
    for key, kind in runs[0]["kinds"].items():
        vals = [r["steps"][key] for r in runs if r["steps"].get(key) is not None]
        steps[key] = (summarize(vals), kind)
    by_kind: dict[str, list[float]] = {}
    for r in runs:
        acc: dict[str, float] = {}
        for key, kind in r["kinds"].items():
            if not key.startswith("  ") and r["steps"].get(key) is not None:
                acc[kind] = acc.get(kind, 0.0) + r["steps"][key]
        for kind, v in acc.items():
            by_kind.setdefault(kind, []).append(v)
    for kind, vals in by_kind.items():
        steps[f"sum: {kind}"] = (summarize(vals), "sum")
    parts = {k: summarize([r["unavoidable"][k] for r in runs]) for k in runs[0]["unavoidable"]}
    result["summary"] = {
        "runs": len(runs),
        "steps": steps,
        "totalSeconds": summarize(totals),
        "unavoidableParts": parts,
        "unavoidable": {k: v["median"] for k, v in parts.items()},
        "unavoidableSeconds": statistics.median([r["unavoidableSeconds"] for r in runs]),
        "ratio": summarize([r["ratio"] for r in runs]),
    }
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    log(
        f"wrote {out_path}: apply->Ready median {result['summary']['totalSeconds'].get('median')} s,"
        f" ratio {result['summary']['ratio'].get('median')}"
    )
    if not args.no_report:
        render_report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
