# ruff: noqa: RUF001, E501 - report text: typographic dashes, arrows, long table rows
"""Operator latency and scale on the local control plane, against a watch-and-create floor.

    .venv/bin/python bench/operator_latency.py                  # sizes 1,100,1000; ~12 min
    .venv/bin/python bench/operator_latency.py --sizes 1,100 --probes 20
    .venv/bin/python bench/operator_latency.py --report-only    # re-render RESULTS-operator.md

Run as root (the local cluster needs network and mount namespaces), from the repository,
with the project's virtualenv. It brings up its own cluster (``ClusterConfig(name="bench")``,
state under /var/lib/modelcycle/clusters/bench), applies ``crds/``, runs the operator exactly
as a developer does (``python -m kopf run -m modelcycle_operator --all-namespaces
--standalone`` with KUBECONFIG, default settings) and stops everything it started at the end,
also on Ctrl-C, SIGTERM or an exception.

What it measures, for each population size N (N ModelCycles present, the probe included):

- The population: N-1 idle ModelCycles with ``spec.suspend: true`` in four namespaces
  (created with the Python client, 8 threads), which the operator still watches, times and
  reconciles, but which start no training (1000 training pods would measure the node).
- Create -> Job: probes (not suspended) created one at a time in namespace ``probe``, which
  has a ResourceQuota ``pods: 0`` so the Job exists but its pod never runs. Latency is local
  monotonic time from the create call's return to the ADDED event of ``<probe>-train-1`` on
  a Job watch in this process (and, for reference, the difference of the two server-side
  creationTimestamps, which have 1 s resolution). Each probe is deleted and gone before
  the next one; a random 0.1-0.4 s pause decorrelates probes from the operator's timers.
- Idle cost (operator only, population settled): a window with the apiserver's
  ``apiserver_request_total`` read before and after, minus a window with neither operator
  nor floor running; reconciles are counted from kopf's "Handler/Timer '...' succeeded"
  log lines of the window plus the resync task's "Resync: queued N reconciles" (each such
  handler is one reconcile; results from before these
  were counted carry the GETs of modelcycles instead, which every reconcile then started
  with); CPU seconds of the operator and of kube-apiserver; the operator's RSS and PSS.
  The counters are per verb and resource, not per client: the garbage collector's and the
  controllers' requests of the same kinds are counted too. ``--idle-resync S`` sets
  ``MODELCYCLE_IDLE_RESYNC_SECONDS`` so that idle resyncs fall inside the window.
- ``--cluster NAME`` (default ``bench``; state and logs under it) keeps this run apart from
  another benchmark's cluster; ``--no-report`` writes the JSON only.
- Startup: operator start -> all N-1 present ModelCycles resumed (kopf's
  ``Resuming is processed`` log line per object; since the ModelCycle handler is a raw
  event handler, its ``Handler 'on_modelcycle' succeeded`` line, one per listed object).
- The floor (``bench/floor_watch_create.py``) measured the same way at the same N.
- Alert -> Job: only if the operator has an alert receiver (``MODELCYCLE_RECEIVER_PORT``).

Raw results: ``bench/results/operator-latency-<date>.json``; the markdown summary of this
and of ``bench/cycle_breakdown.py`` / ``bench/training_overhead.py``:
``bench/RESULTS-operator.md`` (rewritten from the newest JSON of each).

Limits: 1 s is the resolution of every server-side timestamp; probes are sequential (the
figure is the latency of one change, not throughput under a burst); p99 of 30 samples is
close to the maximum, so both are reported.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime as dt
import json
import os
import platform
import random
import re
import signal
import ssl
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from kubernetes import client as k8s  # noqa: E402
from kubernetes import config as k8s_config  # noqa: E402
from kubernetes import watch as k8s_watch  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402

from localcluster import Cluster, ClusterConfig  # noqa: E402

GROUP, VERSION, PLURAL = "modelcycle.dev", "v1alpha1", "modelcycles"
RESULTS = REPO / "bench" / "results"
REPORT = REPO / "bench" / "RESULTS-operator.md"
PROBE_NS = "probe"
ALERT_NS = "alert"
POP_NAMESPACES = ("pop-0", "pop-1", "pop-2", "pop-3")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------- generic


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """n, median, p99 (nearest rank), min, max, mean of a sample."""
    xs = sorted(float(v) for v in values)
    if not xs:
        return {"n": 0}
    rank = max(0, min(len(xs) - 1, round(0.99 * len(xs) + 0.5) - 1))
    return {
        "n": len(xs),
        "median": round(statistics.median(xs), 4),
        "p99": round(xs[rank], 4),
        "min": round(xs[0], 4),
        "max": round(xs[-1], 4),
        "mean": round(statistics.fmean(xs), 4),
    }


def parse_ts(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def machine_info() -> dict[str, Any]:
    mem = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memGiB": round(int(mem) / 1024**2, 1),
        "kernel": platform.release(),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("kopf", "kubernetes", "aiohttp", "scikit-learn", "numpy", "scipy", "skops"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[dist] = md.version(dist)
    from localcluster.cluster import ETCD_VERSION, K8S_VERSION

    out["kubernetes-control-plane"] = K8S_VERSION
    out["etcd"] = ETCD_VERSION
    return out


def proc_memory(pid: int) -> dict[str, float]:
    """RSS (status) and PSS (smaps_rollup) of one process, MiB."""
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = round(int(line.split()[1]) / 1024, 1)
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                out["Pss"] = round(int(line.split()[1]) / 1024, 1)
    return {
        "rssMiB": out.get("VmRSS", 0.0),
        "hwmMiB": out.get("VmHWM", 0.0),
        "pssMiB": out.get("Pss", 0.0),
    }


def proc_cpu(pid: int) -> float:
    """utime + stime of one process (seconds)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_threads(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


# ----------------------------------------------------------------------------- cluster


class BenchCluster:
    """The bench's own local control plane, with the CRD; torn down on exit."""

    def __init__(self, name: str = "bench", keep: bool = False) -> None:
        self.cluster = Cluster(ClusterConfig(name=name))
        self.keep = keep
        self.api: k8s.ApiClient | None = None

    def __enter__(self) -> BenchCluster:
        log(f"cluster {self.cluster.config.name}: down (purge) and up")
        self.cluster.down(purge=True)
        try:
            self.cluster.up()
            self.cluster.kubectl(
                "apply", "--server-side", "--field-manager=bench", "-f", str(REPO / "crds")
            )
            for attempt in range(10):
                res = self.cluster.kubectl(
                    "wait",
                    "--for=condition=Established",
                    "--timeout=30s",
                    "crd/modelcycles.modelcycle.dev",
                    check=attempt == 9,
                )
                if res.returncode == 0:
                    break
                time.sleep(1)
            cfg = k8s.Configuration()
            k8s_config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg)
            cfg.connection_pool_maxsize = 16
            self.api = k8s.ApiClient(cfg)
        except BaseException:
            self.cluster.down(purge=True)
            raise
        log(f"cluster up in {self.cluster._state().get('lastUpSeconds')} s")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.keep:
            log(f"keeping the cluster: export KUBECONFIG={self.kubeconfig}")
            return
        log("cluster down")
        self.cluster.down(purge=True)

    @property
    def kubeconfig(self) -> Path:
        return self.cluster.kubeconfig

    @property
    def custom(self) -> k8s.CustomObjectsApi:
        return k8s.CustomObjectsApi(self.api)

    @property
    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api)

    @property
    def batch(self) -> k8s.BatchV1Api:
        return k8s.BatchV1Api(self.api)

    def component_pid(self, component: str) -> int:
        return int(self.cluster._state()["processes"][component]["pid"])

    def namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        body = {"metadata": {"name": name, "labels": labels or {}}}
        with contextlib.suppress(ApiException):
            self.core.create_namespace(body)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.core.read_namespaced_service_account("default", name)
                return
            except ApiException:
                time.sleep(0.2)
        raise RuntimeError(f"no default ServiceAccount in {name}")

    def metrics(self) -> dict[str, float]:
        """apiserver_request_total by 'VERB resource[/subresource] code'."""
        ctx = ssl.create_default_context(cafile=str(self.cluster.pki / "ca.crt"))
        req = urllib.request.Request(f"{self.cluster.server}/metrics")
        req.add_header("Authorization", f"Bearer {self.cluster.admin_token}")
        with urllib.request.urlopen(req, timeout=30, context=ctx) as resp:
            text = resp.read().decode()
        out: dict[str, float] = {}
        pat = re.compile(r"^apiserver_request_total\{(.*)\} (\S+)$")
        for line in text.splitlines():
            m = pat.match(line)
            if not m:
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            if labels.get("verb") == "WATCH" or not labels.get("resource"):
                continue
            res = labels["resource"]
            if labels.get("group"):
                res += f".{labels['group']}"
            if labels.get("subresource"):
                res += f"/{labels['subresource']}"
            key = f"{labels['verb']} {res} {labels.get('code', '')}"
            out[key] = out.get(key, 0.0) + float(m.group(2))
        return out


#: kopf logs one line per handler run that returned; every handler of a ModelCycle or its
#: children (the population has no schedule or monitor) is one call of reconcile(). The
#: operator's own resync task (no kopf timer since f28f06d) logs how many it queued.
HANDLER_RUN = re.compile(r"(?:Timer|Handler) '(?:on_[a-z_]+)' succeeded")
RESYNC_RUN = re.compile(r"Resync: queued (\d+) reconciles")
#: What kopf logs once per ModelCycle it resumed after a restart: the resume handler's
#: "Resuming is processed" before f28f06d, the ModelCycle event handler's success after
#: (kopf's listing fires it for every object).
RESUMED = re.compile(r"Resuming is processed|Handler 'on_modelcycle' succeeded")


def handler_runs(text: str) -> int:
    resynced = sum(int(n) for n in RESYNC_RUN.findall(text))
    return len(HANDLER_RUN.findall(text)) + resynced


def metrics_diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    keys = set(after) | set(before)
    diff = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in keys}
    return {k: v for k, v in sorted(diff.items()) if v}


def by_request(diff: dict[str, float]) -> dict[str, float]:
    """Drop the status code: 'VERB resource' -> count."""
    out: dict[str, float] = {}
    for key, value in diff.items():
        verb, res, _code = key.split(" ")
        out[f"{verb} {res}"] = out.get(f"{verb} {res}", 0.0) + value
    return dict(sorted(out.items()))


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# ----------------------------------------------------------------------------- processes


class HostProcess:
    """A process of ours on the host (the operator or the floor), in its own session."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "wb")  # noqa: SIM115 - handed to the child
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
            cwd=REPO,
            start_new_session=True,
        )
        out.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> float:
        """SIGTERM to our process group, SIGKILL after 20 s; returns the seconds it took."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return 0.0
        t0 = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None
        return time.monotonic() - t0


#: The operator's source is copied here at the start of a run, so that every start of the
#: operator in one run runs the same code (others edit operator/ meanwhile); the hash of
#: the copy is recorded with the results.
SNAPSHOT: dict[str, str] = {}
RECEIVER = {"port": 0, "token": ""}


def snapshot_operator(workdir: Path) -> str:
    """Copy operator/modelcycle_operator to workdir; return the sha256 of its .py files."""
    import hashlib
    import shutil

    src = REPO / "operator" / "modelcycle_operator"
    dst = workdir / "operator-src"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst / "modelcycle_operator", ignore=shutil.ignore_patterns("__pycache__"))
    digest = hashlib.sha256()
    for f in sorted((dst / "modelcycle_operator").rglob("*.py")):
        digest.update(f.relative_to(dst).as_posix().encode() + b"\0" + f.read_bytes())
    SNAPSHOT["path"] = str(dst)
    SNAPSHOT["sha256"] = digest.hexdigest()[:16]
    from localcluster.cluster import free_port

    RECEIVER["port"] = free_port()
    RECEIVER["token"] = os.urandom(16).hex()
    return SNAPSHOT["sha256"]


def operator_process(
    bc: BenchCluster, log_path: Path, env: dict[str, str] | None = None
) -> HostProcess:
    """The operator as a developer runs it (default settings), from the run's snapshot."""
    extra: dict[str, str] = {}
    if SNAPSHOT:
        extra["PYTHONPATH"] = SNAPSHOT["path"]
    if RECEIVER["port"]:
        # The default 0.0.0.0:8081 may be taken by another operator on this host.
        extra.update(
            MODELCYCLE_RECEIVER_HOST="127.0.0.1",
            MODELCYCLE_RECEIVER_PORT=str(RECEIVER["port"]),
            MODELCYCLE_RECEIVER_TOKEN=RECEIVER["token"],
        )
    return HostProcess(
        "operator",
        [
            sys.executable,
            "-m",
            "kopf",
            "run",
            "-m",
            "modelcycle_operator",
            "--all-namespaces",
            "--standalone",
        ],
        log_path,
        {"KUBECONFIG": str(bc.kubeconfig), "PYTHONUNBUFFERED": "1", **extra, **(env or {})},
    )


def floor_process(bc: BenchCluster, log_path: Path) -> HostProcess:
    return HostProcess(
        "floor",
        [
            sys.executable,
            str(REPO / "bench" / "floor_watch_create.py"),
            "--kubeconfig",
            str(bc.kubeconfig),
        ],
        log_path,
        {"PYTHONUNBUFFERED": "1"},
    )


def wait_until(pred: Callable[[], bool], timeout: float, what: str, step: float = 0.2) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(step)
    raise TimeoutError(f"{what} not within {timeout:.0f} s")


# ----------------------------------------------------------------------------- objects


def modelcycle(
    name: str, namespace: str, suspend: bool, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "suspend": suspend,
        "data": {"builtin": {"name": "iris"}},
        "training": {
            "estimator": "sklearn.linear_model.LogisticRegression",
            "parameters": {"max_iter": 500},
        },
        "evaluation": {"metric": "accuracy", "threshold": 0.8},
    }
    spec.update(extra or {})
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelCycle",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


class JobWatch:
    """ADDED events of Jobs in one namespace, with the local monotonic time of arrival."""

    def __init__(self, bc: BenchCluster, namespace: str) -> None:
        self.bc = bc
        self.namespace = namespace
        self.seen: dict[str, tuple[float, str]] = {}
        self.cond = threading.Condition()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        api = k8s.BatchV1Api(k8s_config.new_client_from_config(config_file=str(self.bc.kubeconfig)))
        self.api = api
        listed = api.list_namespaced_job(self.namespace)
        self.rv = listed.metadata.resource_version
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                stream = k8s_watch.Watch().stream(
                    self.api.list_namespaced_job,
                    self.namespace,
                    resource_version=self.rv,
                    timeout_seconds=30,
                )
                for ev in stream:
                    now = time.monotonic()
                    job = ev["object"]
                    self.rv = job.metadata.resource_version
                    if ev["type"] == "ADDED":
                        with self.cond:
                            self.seen.setdefault(
                                job.metadata.name,
                                (now, job.metadata.creation_timestamp.isoformat()),
                            )
                            self.cond.notify_all()
                    if self.stopped.is_set():
                        return
            except ApiException as exc:
                if exc.status == 410:
                    self.rv = self.api.list_namespaced_job(self.namespace).metadata.resource_version
                else:
                    time.sleep(0.2)
            except Exception:  # noqa: BLE001 - a dropped connection: watch again
                time.sleep(0.2)

    def wait(self, name: str, timeout: float) -> tuple[float, str] | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while name not in self.seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            return self.seen[name]


# ----------------------------------------------------------------------------- phases


class Bench:
    def __init__(self, bc: BenchCluster, args: argparse.Namespace, workdir: Path) -> None:
        self.bc = bc
        self.args = args
        self.workdir = workdir
        self.idle = 0  # suspended ModelCycles created so far
        self.jobs = JobWatch(bc, PROBE_NS)
        self.op: HostProcess | None = None
        self.op_starts = 0
        self.result: dict[str, Any] = {"sizes": {}}

    # --- operator lifecycle

    def start_operator(self) -> HostProcess:
        self.op_starts += 1
        env = {}
        if self.args.idle_resync:
            env["MODELCYCLE_IDLE_RESYNC_SECONDS"] = str(self.args.idle_resync)
        op = operator_process(self.bc, self.workdir / f"operator-{self.op_starts}.log", env)
        op.start()
        self.op = op
        return op

    def stop_operator(self) -> float:
        took = self.op.stop() if self.op else 0.0
        self.op = None
        return took

    # --- population

    def grow(self, target_idle: int) -> dict[str, Any]:
        todo = list(range(self.idle, target_idle))
        if not todo:
            return {"created": 0}
        custom = self.bc.custom

        def create(i: int) -> None:
            ns = POP_NAMESPACES[i % len(POP_NAMESPACES)]
            body = modelcycle(f"idle-{i:04d}", ns, suspend=True)
            for _ in range(5):
                try:
                    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
                    return
                except ApiException as exc:
                    if exc.status == 409:
                        return
                    time.sleep(0.5)
            raise RuntimeError(f"could not create idle-{i:04d}")

        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(create, todo))
        created_s = time.monotonic() - t0
        self.idle = target_idle
        observed_s = wait_until(
            lambda: self.count_observed() >= target_idle, 600, f"{target_idle} observed", 1.0
        )
        total = created_s + observed_s
        log(
            f"population {target_idle}: created {len(todo)} in {created_s:.1f} s, all observed "
            f"{total:.1f} s after the first create"
        )
        return {
            "created": len(todo),
            "createSeconds": round(created_s, 2),
            "allObservedSeconds": round(total, 2),
        }

    def count_observed(self) -> int:
        n = 0
        for ns in POP_NAMESPACES:
            items = self.bc.custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)[
                "items"
            ]
            n += sum(1 for it in items if (it.get("status") or {}).get("observedGeneration"))
        return n

    # --- probes

    def probes(self, system: str, size: int, count: int) -> dict[str, Any]:
        custom = self.bc.custom
        local, local_from_call, server, misses = [], [], [], []
        deletes: list[float] = []
        for i in range(count):
            name = f"{system[:2]}-{size}-{i}"
            body = modelcycle(name, PROBE_NS, suspend=False)
            t0 = time.monotonic()
            created = custom.create_namespaced_custom_object(GROUP, VERSION, PROBE_NS, PLURAL, body)
            t1 = time.monotonic()
            seen = self.jobs.wait(f"{name}-train-1", 30)
            if seen is None:
                misses.append(name)
            else:
                local.append(seen[0] - t1)
                local_from_call.append(seen[0] - t0)
                server.append(
                    parse_ts(seen[1]) - parse_ts(created["metadata"]["creationTimestamp"])
                )
            custom.delete_namespaced_custom_object(
                GROUP, VERSION, PROBE_NS, PLURAL, name, propagation_policy="Background"
            )
            t_del = time.monotonic()
            try:
                wait_until(lambda n=name: not self._probe_exists(n), 60, f"{name} deleted", 0.05)
                deletes.append(time.monotonic() - t_del)
            except TimeoutError:
                deletes.append(float("inf"))
            time.sleep(random.uniform(0.1, 0.4))
        res = {
            "localSeconds": summarize(local),
            "localFromCallSeconds": summarize(local_from_call),
            "serverSeconds": summarize(server),
            "samplesLocal": [round(x, 4) for x in local],
            "samplesServer": server,
            "missed": misses,
            "deleteSeconds": summarize([d for d in deletes if d != float("inf")]),
            "deleteTimedOut": sum(1 for d in deletes if d == float("inf")),
        }
        if system == "operator" and self.op is not None:
            res["memoryAfter"] = proc_memory(self.op.pid)
        s = res["localSeconds"]
        log(
            f"{system} N={size}: create->Job p50 {s.get('median')} s, p99 {s.get('p99')} s, "
            f"max {s.get('max')} s, missed {len(misses)}"
        )
        return res

    def _probe_exists(self, name: str) -> bool:
        items = self.bc.custom.list_namespaced_custom_object(
            GROUP, VERSION, PROBE_NS, PLURAL, field_selector=f"metadata.name={name}"
        )["items"]
        return bool(items)

    # --- windows

    def window(self, seconds: float, pid: int | None) -> dict[str, Any]:
        api_pid = self.bc.component_pid("kube-apiserver")
        m0 = self.bc.metrics()
        c0 = proc_cpu(pid) if pid else 0.0
        a0 = proc_cpu(api_pid)
        t0 = time.monotonic()
        time.sleep(seconds)
        m1 = self.bc.metrics()
        c1 = proc_cpu(pid) if pid else 0.0
        a1 = proc_cpu(api_pid)
        took = time.monotonic() - t0
        out: dict[str, Any] = {
            "seconds": round(took, 2),
            "requests": by_request(metrics_diff(m1, m0)),
            "apiserverCpuPerSecond": round((a1 - a0) / took, 3),
        }
        if pid:
            out["cpuPerSecond"] = round((c1 - c0) / took, 3)
        return out

    def idle_cost(self, size: int, seconds: float) -> dict[str, Any]:
        """The operator's window; :meth:`rebase` subtracts the no-operator baseline."""
        assert self.op is not None
        before = handler_runs(self.op.text())
        w = self.window(seconds, self.op.pid)
        w["handlerRuns"] = handler_runs(self.op.text()) - before
        return {
            "window": w,
            "memory": proc_memory(self.op.pid),
            "threads": proc_threads(self.op.pid),
        }

    def startup(self, present: int) -> dict[str, Any]:
        op = self.start_operator()

        def resumed() -> int:
            return len(RESUMED.findall(op.text()))

        t_first = None
        try:
            wait_until(
                lambda: "Activity 'configure' succeeded" in op.text(), 60, "kopf started", 0.05
            )
            t_first = time.monotonic() - op.started
            took = wait_until(lambda: resumed() >= present, 600, f"{present} resumed", 0.1)
            total = took + t_first
        except TimeoutError as exc:
            return {"error": str(exc), "resumed": resumed()}
        mem = proc_memory(op.pid)
        log(
            f"operator startup with {present} present: started {t_first:.2f} s, all resumed "
            f"{total:.2f} s; RSS {mem['rssMiB']} MiB"
        )
        return {
            "present": present,
            "startedSeconds": round(t_first, 2),
            "allResumedSeconds": round(total, 2),
            "memoryAfter": mem,
        }

    # --- alert

    def alert_setup(self) -> None:
        """Ready alert targets (serving off, cooldown 0) in their own namespace, or a reason."""
        text = "".join(
            p.read_text() for p in Path(SNAPSHOT.get("path", REPO / "operator")).rglob("*.py")
        )
        if "MODELCYCLE_RECEIVER_PORT" not in text or "/alerts" not in text:
            self.alert_skip = (
                "the operator has no alert receiver (no MODELCYCLE_RECEIVER_PORT / POST /alerts "
                "in operator/modelcycle_operator/)"
            )
            return
        self.alert_skip = ""
        self.bc.namespace(ALERT_NS)
        self.alert_jobs = JobWatch(self.bc, ALERT_NS)
        self.alert_jobs.start()
        self.targets = [f"alert-{i}" for i in range(self.args.alert_targets)]
        for name in self.targets:
            body = modelcycle(
                name,
                ALERT_NS,
                suspend=False,
                extra={"serving": {"enabled": False}, "monitoring": {"cooldownSeconds": 0}},
            )
            self.bc.custom.create_namespaced_custom_object(GROUP, VERSION, ALERT_NS, PLURAL, body)
        took = wait_until(
            lambda: all(self.target_idle(n)[0] for n in self.targets),
            300,
            "alert targets Ready",
            1.0,
        )
        log(f"{len(self.targets)} alert targets Ready after {took:.1f} s")

    def target_idle(self, name: str) -> tuple[bool, int]:
        mc = self.bc.custom.get_namespaced_custom_object(GROUP, VERSION, ALERT_NS, PLURAL, name)
        st = mc.get("status") or {}
        conds = {c["type"]: c["status"] for c in st.get("conditions") or []}
        pending = (st.get("triggers") or {}).get("pending")
        idle = conds.get("Ready") == "True" and conds.get("Reconciling") != "True" and not pending
        return idle, int(st.get("cycle") or 0)

    def alert_probes(self, size: int, count: int) -> dict[str, Any]:
        if self.alert_skip:
            return {"status": "skipped", "reason": self.alert_skip}
        url = f"http://127.0.0.1:{RECEIVER['port']}/alerts"
        local, server, answers, misses = [], [], [], []
        timed_out = ""
        for i in range(count):
            name = self.targets[i % len(self.targets)]
            try:
                wait_until(lambda n=name: self.target_idle(n)[0], 180, f"{name} idle", 0.2)
            except TimeoutError as exc:
                timed_out = str(exc)
                break
            cycle = self.target_idle(name)[1]
            now = dt.datetime.now(dt.UTC)
            labels = {
                "alertname": "ModelDegraded",
                "modelcycle": name,
                "namespace": ALERT_NS,
                "severity": "warning",
            }
            payload = {
                "version": "4",
                "status": "firing",
                "receiver": "modelcycle",
                "truncatedAlerts": 0,
                "groupKey": '{}:{alertname="ModelDegraded"}',
                "groupLabels": {"alertname": "ModelDegraded"},
                "commonLabels": labels,
                "commonAnnotations": {},
                "externalURL": "http://alertmanager:9093",
                "alerts": [
                    {
                        "status": "firing",
                        "labels": labels,
                        "annotations": {"summary": "bench"},
                        "startsAt": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                        "endsAt": "0001-01-01T00:00:00Z",
                        "generatorURL": "",
                        "fingerprint": os.urandom(8).hex(),
                    }
                ],
            }
            req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST")
            req.add_header("Content-Type", "application/json")
            req.add_header("Authorization", f"Bearer {RECEIVER['token']}")
            t_post = time.time()
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    answer = resp.status, resp.read().decode()[:300]
            except urllib.error.HTTPError as exc:
                answer = exc.code, exc.read().decode()[:300]
            t1 = time.monotonic()
            answers.append(answer)
            seen = self.alert_jobs.wait(f"{name}-train-{cycle + 1}", 30)
            if seen is None:
                misses.append(f"{name}-train-{cycle + 1}: {answer}")
            else:
                local.append(seen[0] - t1)
                server.append(parse_ts(seen[1]) - int(t_post))
            time.sleep(random.uniform(0.1, 0.4))
        if not timed_out:
            try:
                wait_until(
                    lambda: all(self.target_idle(n)[0] for n in self.targets),
                    180,
                    "alert targets idle again",
                    1.0,
                )
            except TimeoutError as exc:
                timed_out = str(exc)
        res = {
            "status": "measured",
            "localSeconds": summarize(local),
            "serverSeconds": summarize(server),
            "samplesLocal": [round(x, 4) for x in local],
            "answers": answers[:3],
            "missed": misses,
            "timedOut": timed_out,
        }
        s_ = res["localSeconds"]
        log(
            f"alert N={size}: alert->Job p50 {s_.get('median')} s, p99 {s_.get('p99')} s, "
            f"missed {len(misses)}"
        )
        return res

    # --- the whole run

    def run(self) -> dict[str, Any]:
        args = self.args
        self.bc.namespace(PROBE_NS)
        self.bc.core.create_namespaced_resource_quota(
            PROBE_NS, {"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}}
        )
        for ns in POP_NAMESPACES:
            self.bc.namespace(ns)
        self.jobs.start()
        self.start_operator()
        wait_until(lambda: "Activity 'configure' succeeded" in self.op.text(), 60, "operator up")
        time.sleep(2)
        self.result["createPath"] = create_path(self.bc, self, min(args.probes, 20))
        self.start_operator()
        wait_until(lambda: "Activity 'configure' succeeded" in self.op.text(), 60, "operator up")
        self.alert_setup()
        extra = len(getattr(self, "targets", []))
        for size in args.sizes:
            entry: dict[str, Any] = {}
            self.result["sizes"][str(size)] = entry
            entry["population"] = self.grow(size - 1)
            time.sleep(args.settle)
            entry["operatorIdle"] = self.idle_cost(size, args.window)
            entry["operatorProbes"] = self.probes("operator", size, args.probes)
            entry["alertProbes"] = self.alert_probes(size, args.alert_probes)
            entry["operatorStopSeconds"] = round(self.stop_operator(), 2)
            base = self.window(args.baseline, None)
            entry["baselineWindow"] = base
            # Redo the idle figures against this size's own baseline.
            entry["operatorIdle"] = self.rebase(entry["operatorIdle"], base)
            if not args.no_floor:
                entry["floor"] = self.floor(size)
            entry["operatorStartup"] = self.startup(size - 1 + extra)
            time.sleep(2)
        self.result["alertTargets"] = extra
        self.stop_operator()
        return self.result

    def rebase(self, idle: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
        w = idle["window"]
        scale = w["seconds"] / baseline["seconds"]
        reqs: dict[str, float] = {}
        for key in set(w["requests"]) | set(baseline["requests"]):
            v = w["requests"].get(key, 0.0) - scale * baseline["requests"].get(key, 0.0)
            if abs(v) >= 0.5:
                reqs[key] = round(v, 1)
        ours = idle_requests(reqs)
        reconciles = reconcile_count(w, ours)
        total = sum(ours.values())
        idle.update(
            allRequests=dict(sorted(reqs.items())),
            operatorRequests=ours,
            reconciles=reconciles,
            reconcilesPerSecond=round(reconciles / w["seconds"], 2),
            requestsPerSecond=round(total / w["seconds"], 1),
            requestsPerReconcile=round(total / reconciles, 2) if reconciles else None,
            perReconcile={k: round(v / reconciles, 2) for k, v in ours.items()}
            if reconciles
            else {},
            baselineRequestsPerSecond=round(
                sum(baseline["requests"].values()) / baseline["seconds"], 1
            ),
        )
        mem = idle["memory"]
        log(
            f"operator idle: {idle['reconcilesPerSecond']} reconciles/s, "
            f"{idle['requestsPerSecond']} req/s, {idle['requestsPerReconcile']} req/reconcile, "
            f"CPU {w.get('cpuPerSecond')} s/s (apiserver {w['apiserverCpuPerSecond']}), "
            f"RSS {mem['rssMiB']} MiB, PSS {mem['pssMiB']} MiB"
        )
        return idle

    def floor(self, size: int) -> dict[str, Any]:
        fl = floor_process(self.bc, self.workdir / f"floor-{size}.log")
        fl.start()
        out: dict[str, Any] = {}
        try:
            wait_until(lambda: "READY" in fl.text(), 120, "floor ready", 0.02)
            line = next(ln for ln in fl.text().splitlines() if ln.startswith("READY"))
            out["startupSeconds"] = round(time.monotonic() - fl.started, 2)
            out["listSeconds"] = float(line.split()[2])
            out["listed"] = int(line.split()[1])
            time.sleep(1)
            out["probes"] = self.probes("floor", size, self.args.probes)
            out["memory"] = proc_memory(fl.pid)
        finally:
            fl.stop()
        return out


# ----------------------------------------------------------------------------- report


def newest(kind: str) -> dict[str, Any] | None:
    files = sorted(RESULTS.glob(f"operator-{kind}-*.json"))
    return json.loads(files[-1].read_text()) if files else None


def fmt_s(s: dict[str, Any] | None, key: str = "median", unit: str = "s", digits: int = 3) -> str:
    if not s or not s.get("n"):
        return "—"
    return f"{s[key]:.{digits}f} {unit}".strip()


def spread(s: dict[str, Any] | None, unit: str = "s", digits: int = 3) -> str:
    if not s or not s.get("n"):
        return "—"
    return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}–{s['max']:.{digits}f}] {unit}".strip()


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**PASS**" if ok else "**MISS**")


def render_report() -> None:
    lat, cyc, trn = newest("latency"), newest("cycle"), newest("training")
    lines = [
        "# Operator benchmarks",
        "",
        "Written by `bench/operator_latency.py`, `bench/cycle_breakdown.py` and "
        "`bench/training_overhead.py` from the newest `bench/results/operator-*.json` of each "
        "(`python bench/operator_latency.py --report-only` re-renders it). Medians with "
        "[min–max] over repeated runs or probes; p99 is the nearest-rank 99th percentile.",
        "",
    ]
    any_ = lat or cyc or trn
    if any_:
        m, v = any_["machine"], any_["versions"]
        lines += [
            f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memGiB']} GiB, kernel {m['kernel']}; "
            "shared with other engineers' jobs (load average at start of each run below).",
            "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
            "",
        ]
    rows: list[tuple[str, str, str, str]] = []
    if lat:
        sizes = lat["sizes"]
        big_n = "1000" if "1000" in sizes else max(sizes, key=int)
        big = sizes[big_n]
        p = big["operatorProbes"]["localSeconds"]
        fl = (big.get("floor") or {}).get("probes", {}).get("localSeconds", {})
        rows.append(
            (
                f"p99 create→Job at {big_n} ModelCycles",
                "< 1 s",
                f"{p.get('p99', 0):.3f} s (p50 {p.get('median', 0):.3f} s; floor p99 "
                f"{fl.get('p99', 0):.3f} s)",
                verdict(p.get("p99", 9) < 1.0) if p.get("n") else "n/a",
            )
        )
        a = big.get("alertProbes") or {}
        if a.get("status") == "measured":
            al = a["localSeconds"]
            rows.append(
                (
                    f"p99 alert→new cycle's Job at {big_n}",
                    "< 1 s (as create)",
                    f"{al.get('p99', 0):.3f} s (p50 {al.get('median', 0):.3f} s, n={al.get('n')})",
                    verdict(al.get("p99", 9) < 1.0) if al.get("n") else "n/a",
                )
            )
        elif a:
            rows.append(
                (f"alert→Job at {big_n}", "< 1 s", "not measured: " + a.get("reason", ""), "n/a")
            )
        idle = recompute_idle(big["operatorIdle"])
        mem = idle["memory"]
        rows.append(
            (
                f"operator memory at {big_n}",
                "< 200 MiB",
                f"RSS {mem['rssMiB']} MiB, PSS {mem['pssMiB']} MiB",
                verdict(max(mem["rssMiB"], mem["pssMiB"]) < 200),
            )
        )
        rpr = idle.get("requestsPerReconcile")
        rows.append(
            (
                f"API requests per idle (resync) reconcile at {big_n}",
                "what the step needs: 0",
                f"{rpr} ({idle['reconcilesPerSecond']} reconciles/s → {idle['requestsPerSecond']} req/s)",
                verdict(rpr is not None and rpr <= 0.5),
            )
        )
        cp = lat.get("createPath")
        if cp:
            rows.append(
                (
                    "operator API requests per new ModelCycle, N=1 (create → Job → delete)",
                    f"what the step needs: {cp['needs']} writes (+1 read)",
                    f"{cp['operatorTotalPerProbe']} in {cp['reconcilesPerProbe']} reconciles",
                    verdict(cp["operatorTotalPerProbe"] <= cp["needs"] + 1),
                )
            )
        st = big.get("operatorStartup") or {}
        present = st.get("present", int(big_n) - 1 + lat.get("alertTargets", 0))
        rows.append(
            (
                f"startup with {present} present",
                "(reported)",
                f"{st.get('allResumedSeconds', '—')} s to all resumed "
                f"(floor: listed in {(big.get('floor') or {}).get('startupSeconds', '—')} s)",
                "n/a",
            )
        )
    if cyc:
        r = cyc["summary"]
        rows.append(
            (
                "iris apply → Ready vs the sum of its unavoidable parts",
                "≤ 2×",
                f"{r['totalSeconds']['median']:.2f} s vs {r['unavoidableSeconds']:.2f} s = "
                f"{r['ratio']['median']:.2f}× [{r['ratio']['min']:.2f}–{r['ratio']['max']:.2f}]",
                verdict(r["ratio"]["median"] <= 2.0),
            )
        )
    if trn:
        for key, label in (
            ("pipeline", "the Job (train --data: collect + train in one process)"),
            ("trainOnly", "train alone (data collected)"),
        ):
            r = trn["ratios"].get(key)
            if r:
                rows.append(
                    (
                        f"training overhead: {label} ÷ plain script",
                        "≤ 1.1×",
                        f"{r['median']:.2f}× [{r['min']:.2f}–{r['max']:.2f}]",
                        verdict(r["median"] <= 1.1),
                    )
                )
    lines += ["## Targets", "", "| figure | target | measured | verdict |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines.append("")
    if lat:
        lines += latency_section(lat)
    if cyc:
        lines += cycle_section(cyc)
    if trn:
        lines += training_section(trn)
    # A hand-written block (profiles, proposed fixes) survives re-rendering.
    kept = ""
    if REPORT.exists():
        m = re.search(r"<!-- findings:begin -->.*?<!-- findings:end -->", REPORT.read_text(), re.S)
        kept = m.group(0) if m else ""
    if kept:
        start = lines.index("## Targets")
        after = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        lines[after:after] = [kept, ""]
    REPORT.write_text("\n".join(lines) + "\n")
    log(f"wrote {REPORT.relative_to(REPO)}")


def recompute_idle(idle: dict[str, Any]) -> dict[str, Any]:
    """Idle figures from the operator's own requests (older results kept everything)."""
    ours = idle_requests(idle.get("allRequests") or idle["operatorRequests"])
    reconciles = reconcile_count(idle["window"], ours)
    total = sum(ours.values())
    secs = idle["window"]["seconds"]
    return {
        **idle,
        "operatorRequests": ours,
        "reconcilesPerSecond": round(reconciles / secs, 2),
        "requestsPerSecond": round(total / secs, 1),
        "requestsPerReconcile": round(total / reconciles, 2) if reconciles else None,
        "perReconcile": {k: round(v / reconciles, 2) for k, v in ours.items()}
        if reconciles
        else {},
    }


def latency_section(lat: dict[str, Any]) -> list[str]:
    m = lat["machine"]
    out = [
        f"## Operator latency and scale ({m['date']})",
        "",
        f"Command: `{lat['command']}` — load average at start {' '.join(m['loadavg'])}. "
        f"{lat['params']['probes']} sequential probes per size and system; population = "
        "N−1 suspended ModelCycles in 4 namespaces + the probe (+ the Ready alert targets); probe Jobs in a namespace with "
        "a `pods: 0` quota (the Job exists, no pod runs). Local = monotonic, create call's "
        "return → ADDED on this process's Job watch; server = Job.creationTimestamp − "
        "ModelCycle.creationTimestamp (1 s resolution); a negative minimum means the watch event arrived before the create call returned. Operator with default settings "
        "(timer 10 s).",
        "",
        "| N | system | create→Job p50 | p99 | min–max | server-side p50 / max (s) | startup: to all resumed / listed (s) | RSS / PSS (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, e in lat["sizes"].items():
        p = e["operatorProbes"]
        st = e.get("operatorStartup", {})
        mem = e["operatorIdle"]["memory"]
        srv = p["serverSeconds"]
        out.append(
            f"| {n} | operator | {fmt_s(p['localSeconds'])} | {fmt_s(p['localSeconds'], 'p99')} | "
            f"{p['localSeconds'].get('min', 0):.3f}–{p['localSeconds'].get('max', 0):.3f} | "
            f"{srv.get('median', 0):.0f} / {srv.get('max', 0):.0f} | "
            f"{st.get('allResumedSeconds', '—')} (all "
            f"{st.get('present', int(n) - 1 + lat.get('alertTargets', 0))} resumed) | "
            f"{mem['rssMiB']} / {mem['pssMiB']} |"
        )
        if "floor" in e:
            f = e["floor"]
            fp = f["probes"]
            out.append(
                f"| {n} | floor | {fmt_s(fp['localSeconds'])} | {fmt_s(fp['localSeconds'], 'p99')} | "
                f"{fp['localSeconds'].get('min', 0):.3f}–{fp['localSeconds'].get('max', 0):.3f} | "
                f"{fp['serverSeconds'].get('median', 0):.0f} / {fp['serverSeconds'].get('max', 0):.0f} | "
                f"{f['startupSeconds']} (listed {f['listed']}) | "
                f"{f['memory']['rssMiB']} / {f['memory']['pssMiB']} |"
            )
    out += [
        "",
        "Idle cost of the operator with the population settled (window minus a "
        "no-operator baseline window; only the operator's own resources and verbs are "
        "counted: GET/PATCH modelcycles, GET pvc/deployments/services/jobs, LIST pods; "
        "Events are left out because the PV controller posts them for the population's claims):",
        "",
        "| N | reconciles/s | API req/s | req/reconcile | operator CPU (s/s) | apiserver CPU (s/s) | population: all observed after (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, e in lat["sizes"].items():
        i = recompute_idle(e["operatorIdle"])
        out.append(
            f"| {n} | {i['reconcilesPerSecond']} | {i['requestsPerSecond']} | "
            f"{i['requestsPerReconcile']} | {i['window'].get('cpuPerSecond')} | "
            f"{i['window']['apiserverCpuPerSecond']} | "
            f"{e['population'].get('allObservedSeconds', '—')} |"
        )
    n_big = max(lat["sizes"], key=int)
    per = recompute_idle(lat["sizes"][n_big]["operatorIdle"])["perReconcile"]
    out += [
        "",
        f"Requests per idle reconcile at N={n_big}: "
        + ", ".join(f"`{k}` {v}" for k, v in per.items())
        + ".",
    ]
    cp = lat.get("createPath")
    if cp:
        out += [
            "",
            "Create path, per probe at N=1 (apiserver counters over "
            f"{cp['probes']} probes; {cp['note']}): operator's "
            + ", ".join(f"`{k}` {v}" for k, v in cp["operatorPerProbe"].items())
            + "; everyone else's: "
            + ", ".join(
                f"`{k}` {v}" for k, v in cp["perProbe"].items() if k not in cp["operatorPerProbe"]
            )
            + ".",
        ]
    out += [
        "",
        "Alert → Job (Alertmanager v4 payload POSTed to the operator's receiver for a "
        f"Ready ModelCycle with cooldown 0; {lat.get('alertTargets', 0)} targets alerted in turn, "
        "each only when idle; local = POST's return → ADDED of `<target>-train-<cycle+1>`):",
        "",
        "| N | alert→Job p50 | p99 | min–max | missed |",
        "|---|---|---|---|---|",
    ]
    for n, e in lat["sizes"].items():
        a = e.get("alertProbes") or {}
        if a.get("status") == "measured":
            al = a["localSeconds"]
            out.append(
                f"| {n} | {fmt_s(al)} | {fmt_s(al, 'p99')} | "
                f"{al.get('min', 0):.3f}–{al.get('max', 0):.3f} | {len(a['missed'])} |"
            )
        else:
            out.append(f"| {n} | — | — | — | {a.get('reason', 'not run')} |")
    out.append("")
    if lat.get("notes"):
        out += [*lat["notes"], ""]
    return out


def cycle_section(cyc: dict[str, Any]) -> list[str]:
    m = cyc["machine"]
    s = cyc["summary"]
    out = [
        f"## The whole cycle: iris from apply to Ready ({m['date']})",
        "",
        f"Command: `{cyc['command']}` — {s['runs']} runs, load average at start "
        f"{' '.join(m['loadavg'])}. Times from this process's watches (sub-second; "
        "the node agent pushes pod status every 0.1 s); in-pod figures from the termination "
        "messages.",
        "",
        "| step | median [min–max] (s) | kind |",
        "|---|---|---|",
    ]
    for step, (stat, kind) in s["steps"].items():
        out.append(f"| {step} | {spread(stat, '')} | {kind} |")
    out += [
        "",
        f"Total apply → Ready: {spread(s['totalSeconds'])}.",
        "",
        "Unavoidable parts (measured right after each run, same venv, same machine; medians "
        "over the runs; each run's ratio uses its own floor):",
        "",
        "| part | seconds |",
        "|---|---|",
    ]
    for part, val in s["unavoidable"].items():
        out.append(f"| {part} | {val:.3f} |")
    out += [
        f"| **sum** | **{s['unavoidableSeconds']:.3f}** |",
        "",
        f"Ratio apply→Ready ÷ sum: {spread(s['ratio'], '×', 2)} (target ≤ 2×).",
        "",
    ]
    if cyc.get("notes"):
        out += [*cyc["notes"], ""]
    return out


def training_section(trn: dict[str, Any]) -> list[str]:
    m = trn["machine"]
    out = [
        f"## Training overhead ({m['date']})",
        "",
        f"Command: `{trn['command']}` — hyperfine {trn['hyperfine']}, load average at start "
        f"{' '.join(m['loadavg'])}; same venv, same environment as the pod "
        "(HOME=/tmp, PYTHONDONTWRITEBYTECODE=1), the exact arguments the operator gives the "
        "Job for examples/iris.yaml.",
        "",
        "| command | median [min–max] (s) |",
        "|---|---|",
    ]
    for name, stat in trn["wall"].items():
        out.append(f"| {name} | {spread(stat, '')} |")
    out += ["", "| ratio | median [min–max] |", "|---|---|"]
    for name, stat in trn["ratios"].items():
        out.append(f"| {name} | {spread(stat, '×', 2)} |")
    if trn.get("imports"):
        out += [
            "",
            "Interpreter and imports alone (hyperfine):",
            "",
            "| import | median (s) |",
            "|---|---|",
        ]
        for name, stat in trn["imports"].items():
            out.append(f"| `{name}` | {stat['median']:.3f} |")
    if trn.get("profile"):
        out += [
            "",
            "Profile (`python -X importtime`, cumulative µs of the slowest top-level "
            "imports per command; cProfile of the run):",
            "",
        ]
        for name, prof in trn["profile"].items():
            out.append(f"- **{name}**: " + "; ".join(prof))
    if trn.get("notes"):
        out += ["", *trn["notes"]]
    out.append("")
    return out


# ----------------------------------------------------------------------------- main


OPERATOR_REQUESTS = (
    "GET modelcycles.modelcycle.dev",
    "PATCH modelcycles.modelcycle.dev",
    "PATCH modelcycles.modelcycle.dev/status",
    "GET persistentvolumeclaims",
    "POST persistentvolumeclaims",
    "GET deployments.apps",
    "GET services",
    "GET jobs.batch",
    "POST jobs.batch",
    "LIST pods",
    "POST events",
)


def reconcile_count(window: dict[str, Any], ours: dict[str, float]) -> float:
    """Reconciles in a window: kopf's handler-run log lines when counted (newer runs),
    else the GETs of modelcycles (older operators started every reconcile with one)."""
    if "handlerRuns" in window:
        return float(window["handlerRuns"])
    return ours.get("GET modelcycles.modelcycle.dev", 0.0)


def idle_requests(reqs: dict[str, float]) -> dict[str, float]:
    """The operator's share of an idle window: its resources and verbs, Events left out
    (the PV controller posts Events for the population's claims; an idle reconcile posts
    none, since Events are emitted on transitions only)."""
    keep = [k for k in OPERATOR_REQUESTS if not k.endswith(" events")]
    return {k: reqs[k] for k in keep if k in reqs}


#: What creating a cycle needs: the Job; the PVC it mounts; the status that records the step.
CREATE_NEEDS = 3


def create_path(bc: BenchCluster, bench: Bench, probes: int) -> dict[str, Any]:
    """Requests per probe at N=1: the counters over a probe run minus the bench's own."""
    m0 = bc.metrics()
    runs0 = handler_runs(bench.op.text()) if bench.op else 0
    bench.probes("operator-count", 0, probes)
    time.sleep(3)
    m1 = bc.metrics()
    runs = (handler_runs(bench.op.text()) if bench.op else 0) - runs0
    bench.stop_operator()
    diff = by_request(metrics_diff(m1, m0))
    per = {k: round(v / probes, 2) for k, v in diff.items()}
    ours = {k: per[k] for k in OPERATOR_REQUESTS if k in per}
    reconciles = round(runs / probes, 2)
    total = round(sum(ours.values()), 2)
    log(f"create path: {total} operator requests and {reconciles} reconciles per probe")
    return {
        "probes": probes,
        "perProbe": per,
        "operatorPerProbe": ours,
        "operatorTotalPerProbe": total,
        "reconcilesPerProbe": reconciles,
        "needs": CREATE_NEEDS,
        "note": "per probe = create, Job, delete; bench's own: POST/DELETE/LIST modelcycles; "
        "POST events also holds the Job controller's FailedCreate events (quota)",
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1,100,1000", help="ModelCycles present, probe included")
    ap.add_argument("--probes", type=int, default=30, help="probes per size and system")
    ap.add_argument("--window", type=float, default=30.0, help="idle window seconds")
    ap.add_argument("--baseline", type=float, default=15.0, help="no-operator window seconds")
    ap.add_argument("--settle", type=float, default=15.0, help="seconds after population grows")
    ap.add_argument("--alert-probes", type=int, default=6, help="alert probes per size")
    ap.add_argument("--alert-targets", type=int, default=3, help="Ready ModelCycles alerted")
    ap.add_argument("--no-floor", action="store_true")
    ap.add_argument("--keep-cluster", action="store_true")
    ap.add_argument(
        "--cluster", default="bench", help="local cluster name (state and logs under it)"
    )
    ap.add_argument(
        "--idle-resync",
        type=float,
        default=0.0,
        help="MODELCYCLE_IDLE_RESYNC_SECONDS for the operator (0: its default)",
    )
    ap.add_argument(
        "--no-report",
        action="store_true",
        help="write the JSON only, not RESULTS-operator.md (others edit it)",
    )
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    if args.report_only:
        render_report()
        return 0
    args.sizes = [int(s) for s in str(args.sizes).split(",") if s]
    if os.geteuid() != 0:
        sys.exit("run as root: the local cluster needs network and mount namespaces")
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    out_path = args.out or RESULTS / f"operator-latency-{date}.json"
    result: dict[str, Any] = {
        "command": "python bench/operator_latency.py " + " ".join(argv or sys.argv[1:]),
        "machine": machine_info(),
        "versions": versions(),
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    workdir = Path(f"/var/lib/modelcycle/clusters/{args.cluster}-logs")
    workdir.mkdir(parents=True, exist_ok=True)
    result["operatorSource"] = snapshot_operator(workdir)
    t0 = time.monotonic()
    with terminate_on_sigterm(), BenchCluster(name=args.cluster, keep=args.keep_cluster) as bc:
        bench = Bench(bc, args, workdir)
        try:
            result.update(bench.run())
        finally:
            bench.stop_operator()
            bench.jobs.stopped.set()
            result["wallSeconds"] = round(time.monotonic() - t0, 1)
            result["machine"]["loadavgEnd"] = Path("/proc/loadavg").read_text().split()[:3]
            RESULTS.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(result, indent=2) + "\n")
            log(f"wrote {out_path}")
    if not args.no_report:
        render_report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
