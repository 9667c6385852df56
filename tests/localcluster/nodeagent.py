"""The node agent: the kubelet of the local cluster, running containers as processes.

It registers one Ready Node and keeps its Lease fresh; watches the pods bound to it and
runs each container's command as a local process -- in the pod's own network namespace
(a veth on the cluster's bridge, the pod IP reported in the status) and its own private
mount namespace (volumes bind-mounted at their mountPaths, readOnly honoured) -- with
the pod's env (``valueFrom`` included), user, workingDir and terminationMessagePath;
restart policies with back-off; readiness / liveness / startup probes; graceful deletion.
It also provisions PersistentVolumes for the default StorageClass as host directories.

Memory limits are enforced with a memory cgroup per container (``localcluster.cgroups``):
over its limit a container is OOM-killed by the kernel and reported ``OOMKilled``.

What it does not do: pull images (an image names which locally installed program set
runs the container, see ``IMAGES``), CPU limits (CPU requests are scheduled, not
enforced), ephemeral containers, port-forward, exec and logs through the API (logs are
files, read with ``python -m localcluster logs``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import hashlib
import http.client
import ipaddress
import json
import logging
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localcluster.cgroups import MemoryCgroups, parse_quantity
from localcluster.cluster import K8S_VERSION, NODE_NAME, ClusterConfig
from localcluster.kubeapi import ApiError, KubeApi

log = logging.getLogger("node-agent")

VENV_BIN = str(Path(sys.executable).parent)
#: What the images run from: kept visible in every container even when a volume is
#: mounted over a parent of it (the project checked out under /tmp, an emptyDir at /tmp).
PRESERVE = sorted({str(Path(__file__).resolve().parents[2]), sys.prefix})
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PROVISIONER = "modelcycle.dev/local-hostpath"
BACKOFF_BASE = float(os.environ.get("MODELCYCLE_NODE_BACKOFF_SECONDS", "2"))
BACKOFF_CAP = float(os.environ.get("MODELCYCLE_NODE_BACKOFF_CAP_SECONDS", "60"))


@dataclass(frozen=True)
class Image:
    """What a container image means on this node: a PATH and a default entrypoint."""

    path: str
    entrypoint: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


_PY_ENV = (("PYTHONUNBUFFERED", "1"), ("PYTHONDONTWRITEBYTECODE", "1"), ("HOME", "/tmp"))
IMAGES: list[tuple[re.Pattern[str], Image]] = [
    (
        re.compile(r"^(ghcr\.io/modelcycle/)?(modelcycle-)?trainer(:.*)?$"),
        Image(f"{VENV_BIN}:{SYSTEM_PATH}", ("modelcycle-trainer",), _PY_ENV),
    ),
    (
        re.compile(r"^(ghcr\.io/modelcycle/)?(modelcycle-)?operator(:.*)?$"),
        Image(f"{VENV_BIN}:{SYSTEM_PATH}", ("kopf", "run", "-m", "modelcycle_operator"), _PY_ENV),
    ),
    (
        re.compile(r"^(docker\.io/)?(library/)?python(:.*)?$"),
        Image(f"{VENV_BIN}:{SYSTEM_PATH}", ("python3",), _PY_ENV),
    ),
    (
        re.compile(r"^(docker\.io/)?(library/)?(busybox|debian|alpine)(:.*)?$"),
        Image(SYSTEM_PATH, ("sh",)),
    ),
    (re.compile(r"^registry\.k8s\.io/pause(:.*)?$"), Image(SYSTEM_PATH, ("sleep", "infinity"))),
]


def resolve_image(ref: str) -> Image | None:
    for pattern, image in IMAGES:
        if pattern.match(ref):
            return image
    return None


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def proc_start(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def ip(*args: str) -> None:
    res = subprocess.run(["ip", *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.strip()}")


class ConfigError(Exception):
    """The pod cannot start yet or at all (missing Secret, unknown image...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# --------------------------------------------------------------------------- network


class PodNetwork:
    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.net = ipaddress.ip_network(config.pod_cidr)
        self.prefix = hashlib.sha256(config.name.encode()).hexdigest()[:4]
        self.lock = threading.Lock()
        self.used: set[str] = {config.gateway_ip}

    def netns(self, uid: str) -> str:
        return f"mc{self.prefix}-{uid[:13]}"

    def setup(self, uid: str, wanted: str | None) -> str:
        with self.lock:
            addr = wanted if wanted and wanted not in self.used else None
            if addr is None:
                for host in self.net.hosts():
                    if str(host) not in self.used and not str(host).endswith(".0.1"):
                        addr = str(host)
                        break
            if addr is None:
                raise ConfigError("NetworkNotReady", "pod network exhausted")
            self.used.add(addr)
        ns = self.netns(uid)
        host_if, peer_if = f"v{self.prefix}{uid[:10]}", f"p{self.prefix}{uid[:10]}"
        self.teardown(uid, release=False)
        ip("netns", "add", ns)
        ip("link", "add", host_if, "type", "veth", "peer", "name", peer_if, "netns", ns)
        ip("link", "set", host_if, "master", self.config.bridge, "up")
        ip("-n", ns, "link", "set", peer_if, "name", "eth0")
        ip("-n", ns, "addr", "add", f"{addr}/{self.net.prefixlen}", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "route", "add", "default", "via", self.config.gateway_ip)
        return addr

    def teardown(self, uid: str, release: bool = True, addr: str | None = None) -> None:
        subprocess.run(["ip", "netns", "del", self.netns(uid)], capture_output=True)
        subprocess.run(["ip", "link", "del", f"v{self.prefix}{uid[:10]}"], capture_output=True)
        if release and addr:
            with self.lock:
                self.used.discard(addr)

    def cleanup_stale(self) -> None:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            name = line.split()[0] if line.split() else ""
            if name.startswith(f"mc{self.prefix}-"):
                subprocess.run(["ip", "netns", "del", name], capture_output=True)


# --------------------------------------------------------------------------- containers


@dataclass
class Container:
    spec: dict[str, Any]
    init: bool
    proc: subprocess.Popen[bytes] | None = None
    started_at: str | None = None
    started_mono: float = 0.0
    restart_count: int = 0
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    ready: bool = False
    started: bool = False  # startup probe passed (or none)
    backoff_until: float = 0.0
    backoff: float = 0.0
    done: bool = False  # terminated and will not restart
    probe_next: dict[str, float] = field(default_factory=dict)
    probe_ok: dict[str, int] = field(default_factory=dict)
    probe_fail: dict[str, int] = field(default_factory=dict)
    container_id: str = ""
    cgroup: Path | None = None  # its memory cgroup while it runs, when it has a limit

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _grace_kill(containers: list[Container], grace: float) -> None:
    live = [c for c in containers if c.running()]
    for c in live:
        assert c.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(c.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(c.running() for c in live):
        time.sleep(0.05)
    for c in live:
        if c.running():
            assert c.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(c.proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                c.proc.wait(timeout=5)


class PodWorker(threading.Thread):
    """Runs one pod from binding to deletion."""

    def __init__(self, agent: Agent, pod: dict[str, Any]) -> None:
        super().__init__(daemon=True, name=f"pod-{pod['metadata']['name']}")
        self.agent = agent
        self.api = agent.api
        self.pod = pod
        self.uid: str = pod["metadata"]["uid"]
        self.ns: str = pod["metadata"]["namespace"]
        self.name: str = pod["metadata"]["name"]
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.gone = False
        self.shutdown = False
        self.dir = agent.state_dir / "pods" / self.uid
        self.pod_ip: str | None = None
        self.start_time = pod.get("status", {}).get("startTime") or now()
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.inits = [Container(c, True) for c in pod["spec"].get("initContainers", [])]
        self.apps = [Container(c, False) for c in pod["spec"]["containers"]]
        self.volumes: dict[str, Path] = {}
        self.last_status: dict[str, Any] | None = None
        self.start_mono = time.monotonic()

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.ns}/pods/{self.name}"

    def update(self, pod: dict[str, Any]) -> None:
        with self.lock:
            self.pod = pod
        self.wake.set()

    def deleted(self) -> None:
        self.gone = True
        self.wake.set()

    def stop_for_shutdown(self) -> None:
        self.shutdown = True
        self.wake.set()

    # ---------------------------------------------------------------- main loop

    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("pod %s/%s: worker failed", self.ns, self.name)
            _grace_kill(self.inits + self.apps, 2)
        finally:
            for c in self.inits + self.apps:
                MemoryCgroups.remove(c.cgroup)
                c.cgroup = None
            self.agent.network.teardown(self.uid, addr=self.pod_ip)
            self.agent.worker_done(self)

    def _deleting(self) -> bool:
        with self.lock:
            return bool(self.pod["metadata"].get("deletionTimestamp"))

    def _run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._kill_orphans()
        saved_ip = self.pod.get("status", {}).get("podIP")
        self.pod_ip = self.agent.network.setup(self.uid, saved_ip)
        self._push_status()
        while not self._stopping():
            try:
                self._setup_volumes()
                break
            except ConfigError as exc:
                for c in self.inits + self.apps:
                    c.state = {"waiting": {"reason": exc.reason, "message": str(exc)}}
                self._push_status()
                self.wake.wait(1.0)
                self.wake.clear()
        while not self._stopping():
            self._tick()
            written = self._push_status()
            # Leave only once the terminal status is on the API server: if it is down when
            # the last container exits, the exit codes would otherwise be lost for good.
            if self.phase in ("Succeeded", "Failed") and written:
                break
            self.wake.wait(0.1 if written else 1.0)
            self.wake.clear()
        if self.shutdown:
            _grace_kill(self.inits + self.apps, 5)
            return
        # Terminal or being deleted.
        if self.gone or self._deleting():
            grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
            if grace is None:
                grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
            _grace_kill(self.inits + self.apps, 2.0 if self.gone else float(grace))
            self._collect_exits()
            if not self.gone:
                self._push_status(final=True)
                self._delete_object()
            return
        # Terminal phase: the processes are gone; release the network; wait for deletion
        # in the agent (which deletes terminal pods once asked to).

    def _stopping(self) -> bool:
        return self.shutdown or self.gone or self._deleting()

    def _delete_object(self) -> None:
        with contextlib.suppress(ApiError):
            self.api.delete(
                self.path, {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}}
            )

    def _kill_orphans(self) -> None:
        """Processes a previous agent started for this pod (the agent was killed)."""
        pids_file = self.dir / "pids.json"
        try:
            pids = json.loads(pids_file.read_text())
        except (OSError, ValueError):
            return
        for entry in pids:
            if proc_start(entry["pid"]) == entry["start"]:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(entry["pid"], signal.SIGKILL)
        pids_file.unlink(missing_ok=True)

    def _save_pids(self) -> None:
        pids = [
            {"pid": c.proc.pid, "start": proc_start(c.proc.pid)}
            for c in self.inits + self.apps
            if c.proc is not None and c.running()
        ]
        (self.dir / "pids.json").write_text(json.dumps(pids))

    # ---------------------------------------------------------------- one step

    def _tick(self) -> None:
        spec = self.pod["spec"]
        policy = spec.get("restartPolicy", "Always")
        self._collect_exits(policy)
        ads = spec.get("activeDeadlineSeconds")
        if ads is not None and time.monotonic() - self.start_mono > float(ads):
            _grace_kill(self.inits + self.apps, 0)
            self._collect_exits("Never")
            self.phase, self.reason = "Failed", "DeadlineExceeded"
            self.message = f"Pod was active on the node longer than the specified deadline ({ads}s)"
            return
        failed_init = [
            c
            for c in self.inits
            if c.done and c.state.get("terminated", {}).get("exitCode", 0) != 0
        ]
        if failed_init:
            self.phase = "Failed"
            for c in self.apps:
                c.state = {"waiting": {"reason": "PodInitializing"}}
            return
        pending_init = [c for c in self.inits if not c.done]
        if pending_init:
            c = pending_init[0]
            if not c.running() and time.monotonic() >= c.backoff_until:
                self._start(c)
            self.phase = "Pending"
            for app in self.apps:
                app.state = {"waiting": {"reason": "PodInitializing"}}
            return
        for c in self.apps:
            if not c.done and not c.running() and time.monotonic() >= c.backoff_until:
                self._start(c)
        self._probe_all()
        if all(c.done for c in self.apps):
            codes = [c.state.get("terminated", {}).get("exitCode", 0) for c in self.apps]
            self.phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
        else:
            self.phase = "Running"

    def _collect_exits(self, policy: str | None = None) -> None:
        policy = policy or self.pod["spec"].get("restartPolicy", "Always")
        for c in self.inits + self.apps:
            if c.proc is None or c.proc.poll() is None:
                continue
            code = c.proc.returncode
            proc, c.proc = c.proc, None
            del proc
            exit_code = 128 - code if code < 0 else code
            oom = code == -signal.SIGKILL and MemoryCgroups.oom_killed(c.cgroup)
            MemoryCgroups.remove(c.cgroup)
            c.cgroup = None
            reason = "Completed" if exit_code == 0 else ("OOMKilled" if oom else "Error")
            term = {
                "exitCode": exit_code,
                "reason": reason,
                "startedAt": c.started_at,
                "finishedAt": now(),
                "containerID": c.container_id,
            }
            msg = self._termination_message(c, exit_code)
            if msg:
                term["message"] = msg
            if code < 0:
                term["signal"] = -code
            c.state = {"terminated": term}
            c.ready = False
            c.started = False
            self._save_pids()
            restart = (policy == "Always" and not c.init) or (
                policy in ("Always", "OnFailure") and exit_code != 0
            )
            if c.init and exit_code == 0:
                c.done = True
            elif restart and not self._stopping():
                c.last_state = {"terminated": term}
                c.restart_count += 1
                ran = time.monotonic() - c.started_mono
                c.backoff = (
                    BACKOFF_BASE
                    if (c.backoff == 0 or ran > 600)
                    else min(c.backoff * 2, BACKOFF_CAP)
                )
                c.backoff_until = time.monotonic() + c.backoff
                c.state = {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": f"back-off {c.backoff:.0f}s restarting failed "
                        f"container={c.name} pod={self.name}_{self.ns}({self.uid})",
                    }
                }
            else:
                c.done = True

    def _termination_message(self, c: Container, exit_code: int) -> str:
        path = self.dir / f"termination-{c.name}"
        text = ""
        with contextlib.suppress(OSError):
            text = path.read_bytes()[:4096].decode(errors="replace")
            path.write_bytes(b"")
        policy = c.spec.get("terminationMessagePolicy", "File")
        if not text.strip() and exit_code != 0 and policy == "FallbackToLogsOnError":
            with contextlib.suppress(OSError):
                lines = self._log_path(c).read_text(errors="replace").splitlines()[-80:]
                text = "\n".join(lines)[-2048:]
        return text

    def _log_path(self, c: Container) -> Path:
        return self.agent.state_dir / "containers" / f"{self.ns}_{self.name}_{c.name}.log"

    # ---------------------------------------------------------------- start

    def _start(self, c: Container) -> None:
        try:
            argv, env, image = self._command(c)
        except ConfigError as exc:
            c.state = {"waiting": {"reason": exc.reason, "message": str(exc)}}
            c.backoff_until = time.monotonic() + 2
            return
        sc = {
            **(self.pod["spec"].get("securityContext") or {}),
            **(c.spec.get("securityContext") or {}),
        }
        uid = sc.get("runAsUser")
        gid = sc.get("runAsGroup", uid if uid is not None else None)
        if sc.get("runAsNonRoot") and (uid is None or int(uid) == 0):
            c.state = {
                "waiting": {
                    "reason": "CreateContainerConfigError",
                    "message": "container has runAsNonRoot and image will run "
                    "as root (set runAsUser)",
                }
            }
            c.backoff_until = time.monotonic() + 5
            return
        groups = [
            int(g)
            for g in (self.pod["spec"].get("securityContext") or {}).get("supplementalGroups", [])
        ]
        fs_group = (self.pod["spec"].get("securityContext") or {}).get("fsGroup")
        if fs_group is not None:
            groups.append(int(fs_group))
        if gid is not None:
            groups.append(int(gid))
        term_host = self.dir / f"termination-{c.name}"
        term_host.write_bytes(b"")
        term_host.chmod(0o666)
        mounts = []
        for vm in c.spec.get("volumeMounts", []):
            src = self.volumes.get(vm["name"])
            if src is None:
                c.state = {
                    "waiting": {
                        "reason": "CreateContainerConfigError",
                        "message": f"volume {vm['name']!r} not found",
                    }
                }
                return
            if vm.get("subPath"):
                src = src / vm["subPath"]
                src.mkdir(parents=True, exist_ok=True)
            read_only = bool(vm.get("readOnly")) or self._volume_read_only(vm["name"])
            mounts.append({"source": str(src), "target": vm["mountPath"], "readOnly": read_only})
        mounts.append(
            {
                "source": str(term_host),
                "target": c.spec.get("terminationMessagePath", "/dev/termination-log"),
            }
        )
        spec = {
            "argv": argv,
            "env": env,
            "mounts": mounts,
            "workingDir": c.spec.get("workingDir"),
            "uid": uid,
            "gid": gid,
            "groups": sorted(set(groups)),
            "readOnlyRootFilesystem": bool(sc.get("readOnlyRootFilesystem")),
            "terminationHostPath": str(term_host),
            "preserve": PRESERVE,
        }
        limit = parse_quantity(((c.spec.get("resources") or {}).get("limits") or {}).get("memory"))
        cgroup_fd = -1
        if limit is not None:
            c.cgroup = self.agent.cgroups.create(f"{self.uid[:13]}-{c.name}", limit)
            if c.cgroup is not None:
                # Passed open: `ip netns exec` mounts a fresh /sys without the cgroup trees.
                cgroup_fd = os.open(c.cgroup / "cgroup.procs", os.O_WRONLY)
                spec["cgroupProcsFd"] = cgroup_fd
        spec_file = self.dir / f"exec-{c.name}.json"
        spec_file.write_text(json.dumps(spec))
        logf = self._log_path(c)
        logf.parent.mkdir(parents=True, exist_ok=True)
        with open(logf, "ab") as out:
            c.proc = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.agent.network.netns(self.uid),
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "--",
                    sys.executable,
                    "-m",
                    "localcluster.podexec",
                    str(spec_file),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                pass_fds=(cgroup_fd,) if cgroup_fd >= 0 else (),
                env={
                    "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
                    "PATH": SYSTEM_PATH,
                },
            )
        if cgroup_fd >= 0:
            os.close(cgroup_fd)
        c.started_at = now()
        c.started_mono = time.monotonic()
        c.container_id = f"local://{uuid.uuid4().hex[:16]}"
        c.state = {"running": {"startedAt": c.started_at}}
        c.started = "startupProbe" not in c.spec
        c.ready = False
        c.probe_next = {}
        c.probe_ok = {}
        c.probe_fail = {}
        self._save_pids()
        log.info(
            "pod %s/%s: started container %s (%s) pid %d",
            self.ns,
            self.name,
            c.name,
            image,
            c.proc.pid,
        )

    def _volume_read_only(self, name: str) -> bool:
        for v in self.pod["spec"].get("volumes", []):
            if v["name"] == name:
                if "persistentVolumeClaim" in v:
                    return bool(v["persistentVolumeClaim"].get("readOnly"))
                return any(k in v for k in ("secret", "configMap", "projected", "downwardAPI"))
        return False

    def _command(self, c: Container) -> tuple[list[str], dict[str, str], str]:
        ref = c.spec.get("image", "")
        image = resolve_image(ref)
        if image is None:
            raise ConfigError(
                "ErrImageNeverPull",
                f'image "{ref}" is not provided on node {NODE_NAME}; '
                "it runs only the images in localcluster.nodeagent.IMAGES",
            )
        env: dict[str, str] = {
            "PATH": image.path,
            "HOSTNAME": self.name,
            "KUBERNETES_SERVICE_HOST": self.agent.api_host,
            "KUBERNETES_SERVICE_PORT": str(self.agent.api_port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(self.agent.api_port),
            "KUBERNETES_PORT": f"tcp://{self.agent.api_host}:{self.agent.api_port}",
        }
        env.update(dict(image.env))
        for ef in c.spec.get("envFrom", []):
            prefix = ef.get("prefix", "")
            if "configMapRef" in ef:
                data = self._object_data(
                    "configmaps",
                    ef["configMapRef"]["name"],
                    ef["configMapRef"].get("optional", False),
                )
            else:
                data = self._object_data(
                    "secrets", ef["secretRef"]["name"], ef["secretRef"].get("optional", False)
                )
            env.update({prefix + k: v for k, v in data.items()})
        for e in c.spec.get("env", []):
            if "valueFrom" in e:
                value = self._value_from(e["name"], e["valueFrom"], c)
                if value is None:
                    continue
                env[e["name"]] = value
            else:
                env[e["name"]] = expand(e.get("value", ""), env)
        command = [expand(a, env) for a in c.spec.get("command", [])]
        args = [expand(a, env) for a in c.spec.get("args", [])]
        argv = (command or list(image.entrypoint)) + args
        if not argv:
            raise ConfigError("CreateContainerConfigError", "no command and no image entrypoint")
        return argv, env, ref

    def _object_data(self, kind: str, name: str, optional: bool) -> dict[str, str]:
        obj = self.api.get_or_none(f"/api/v1/namespaces/{self.ns}/{kind}/{name}")
        if obj is None:
            if optional:
                return {}
            raise ConfigError("CreateContainerConfigError", f'{kind[:-1]} "{name}" not found')
        if kind == "secrets":
            return {
                k: base64.b64decode(v).decode(errors="replace")
                for k, v in (obj.get("data") or {}).items()
            }
        return dict(obj.get("data") or {})

    def _value_from(self, name: str, vf: dict[str, Any], c: Container) -> str | None:
        if "fieldRef" in vf:
            return self._field(vf["fieldRef"]["fieldPath"])
        if "secretKeyRef" in vf or "configMapKeyRef" in vf:
            kind = "secrets" if "secretKeyRef" in vf else "configmaps"
            ref = vf.get("secretKeyRef") or vf["configMapKeyRef"]
            data = self._object_data(kind, ref["name"], ref.get("optional", False))
            if ref["key"] not in data:
                if ref.get("optional"):
                    return None
                raise ConfigError(
                    "CreateContainerConfigError",
                    f"couldn't find key {ref['key']} in {kind[:-1]} {self.ns}/{ref['name']}",
                )
            return data[ref["key"]]
        if "resourceFieldRef" in vf:
            res = vf["resourceFieldRef"]["resource"]
            kind, _, which = res.partition(".")
            value = (c.spec.get("resources", {}).get(kind, {}) or {}).get(which)
            return str(value) if value is not None else "0"
        raise ConfigError("CreateContainerConfigError", f"env {name}: unsupported valueFrom")

    def _field(self, path: str) -> str:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
        simple = {
            "metadata.name": meta["name"],
            "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"],
            "spec.nodeName": spec.get("nodeName", ""),
            "spec.serviceAccountName": spec.get("serviceAccountName", ""),
            "status.podIP": self.pod_ip or "",
            "status.hostIP": self.agent.api_host,
            "status.podIPs": self.pod_ip or "",
            "status.hostIPs": self.agent.api_host,
        }
        if path in ("metadata.labels", "metadata.annotations"):
            items = meta.get(path.split(".")[1]) or {}
            return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
        if path not in simple:
            raise ConfigError("CreateContainerConfigError", f"unsupported fieldPath {path}")
        return str(simple[path])

    # ---------------------------------------------------------------- volumes

    def _setup_volumes(self) -> None:
        spec = self.pod["spec"]
        fs_group = (spec.get("securityContext") or {}).get("fsGroup")
        base = self.dir / "volumes"
        for v in spec.get("volumes", []):
            name = v["name"]
            if name in self.volumes:
                continue
            target = base / name
            if "emptyDir" in v:
                target.mkdir(parents=True, exist_ok=True)
                target.chmod(0o777)
            elif "hostPath" in v:
                target = Path(v["hostPath"]["path"])
                if v["hostPath"].get("type") in ("DirectoryOrCreate", None, ""):
                    target.mkdir(parents=True, exist_ok=True)
            elif "persistentVolumeClaim" in v:
                target = self._pvc_path(v["persistentVolumeClaim"]["claimName"])
                if fs_group is not None:
                    _chgrp_tree(target, int(fs_group))
            elif "configMap" in v or "secret" in v:
                kind = "configmaps" if "configMap" in v else "secrets"
                src = v.get("configMap") or v["secret"]
                ref = src.get("name") or src.get("secretName")
                data = self._object_data(kind, ref, src.get("optional", False))
                self._write_files(
                    target, data, src.get("items"), src.get("defaultMode", 0o644), fs_group
                )
            elif "projected" in v:
                self._projected(target, v["projected"], fs_group)
            elif "downwardAPI" in v:
                files = {
                    i["path"]: self._field(i["fieldRef"]["fieldPath"])
                    for i in v["downwardAPI"].get("items", [])
                    if "fieldRef" in i
                }
                self._write_files(
                    target, files, None, v["downwardAPI"].get("defaultMode", 0o644), fs_group
                )
            else:
                raise ConfigError(
                    "CreateContainerConfigError", f"volume {name}: unsupported volume type"
                )
            self.volumes[name] = target

    def _pvc_path(self, claim: str) -> Path:
        pvc = self.api.get_or_none(f"/api/v1/namespaces/{self.ns}/persistentvolumeclaims/{claim}")
        if pvc is None:
            raise ConfigError(
                "CreateContainerConfigError", f'persistentvolumeclaim "{claim}" not found'
            )
        pv_name = pvc["spec"].get("volumeName")
        if not pv_name or pvc.get("status", {}).get("phase") != "Bound":
            raise ConfigError("ContainerCreating", f'persistentvolumeclaim "{claim}" is not bound')
        pv = self.api.get(f"/api/v1/persistentvolumes/{pv_name}")
        host = pv["spec"].get("hostPath", {}).get("path") or pv["spec"].get("local", {}).get("path")
        if not host:
            raise ConfigError(
                "CreateContainerConfigError",
                f"persistentvolume {pv_name} has no host path on this node",
            )
        Path(host).mkdir(parents=True, exist_ok=True)
        return Path(host)

    def _write_files(
        self,
        target: Path,
        data: dict[str, str],
        items: list[dict[str, Any]] | None,
        mode: int,
        fs_group: int | None,
    ) -> None:
        target.mkdir(parents=True, exist_ok=True)
        chosen = (
            {i["key"]: (i["path"], i.get("mode", mode)) for i in items if i["key"] in data}
            if items
            else {k: (k, mode) for k in data}
        )
        for key, (rel, m) in chosen.items():
            f = target / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(data[key])
            if fs_group is not None:
                os.chown(f, 0, fs_group)
                m = m | 0o040
            f.chmod(m)

    def _projected(self, target: Path, projected: dict[str, Any], fs_group: int | None) -> None:
        mode = projected.get("defaultMode", 0o644)
        for src in projected.get("sources", []):
            if "serviceAccountToken" in src:
                sat = src["serviceAccountToken"]
                token = self._token(sat.get("audience"), sat.get("expirationSeconds", 3607))
                self._write_files(
                    target, {"t": token}, [{"key": "t", "path": sat["path"]}], mode, fs_group
                )
            elif "configMap" in src or "secret" in src:
                kind = "configmaps" if "configMap" in src else "secrets"
                ref = src.get("configMap") or src["secret"]
                data = self._object_data(kind, ref["name"], ref.get("optional", False))
                self._write_files(target, data, ref.get("items"), mode, fs_group)
            elif "downwardAPI" in src:
                files = {
                    i["path"]: self._field(i["fieldRef"]["fieldPath"])
                    for i in src["downwardAPI"].get("items", [])
                    if "fieldRef" in i
                }
                self._write_files(target, files, None, mode, fs_group)

    def _token(self, audience: str | None, expiration: int) -> str:
        sa = self.pod["spec"].get("serviceAccountName", "default")
        body: dict[str, Any] = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": int(expiration),
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": self.name,
                    "uid": self.uid,
                },
            },
        }
        if audience:
            body["spec"]["audiences"] = [audience]
        try:
            res = self.api.create(f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token", body)
        except ApiError as exc:
            raise ConfigError(
                "CreateContainerConfigError", f"token for service account {sa}: {exc}"
            ) from exc
        return str(res["status"]["token"])

    # ---------------------------------------------------------------- probes

    def _probe_all(self) -> None:
        for c in self.apps:
            if not c.running():
                continue
            t = time.monotonic()
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = c.spec.get(kind)
                if kind == "readinessProbe" and probe is None:
                    c.ready = c.started
                    continue
                if probe is None or (kind != "startupProbe" and not c.started):
                    continue
                if kind == "startupProbe" and c.started:
                    continue
                nxt = c.probe_next.get(kind)
                if nxt is None:
                    nxt = c.started_mono + float(probe.get("initialDelaySeconds", 0))
                    c.probe_next[kind] = nxt
                if t < nxt:
                    continue
                c.probe_next[kind] = t + float(probe.get("periodSeconds", 10))
                ok = self._probe(c, probe)
                if ok:
                    c.probe_ok[kind] = c.probe_ok.get(kind, 0) + 1
                    c.probe_fail[kind] = 0
                else:
                    c.probe_fail[kind] = c.probe_fail.get(kind, 0) + 1
                    c.probe_ok[kind] = 0
                success_n = int(probe.get("successThreshold", 1))
                fail_n = int(probe.get("failureThreshold", 3))
                if kind == "readinessProbe":
                    if c.probe_ok.get(kind, 0) >= success_n:
                        c.ready = True
                    elif c.probe_fail.get(kind, 0) >= fail_n:
                        c.ready = False
                elif ok and kind == "startupProbe":
                    c.started = True
                elif c.probe_fail.get(kind, 0) >= fail_n:
                    log.info(
                        "pod %s/%s: container %s failed %s, will be restarted",
                        self.ns,
                        self.name,
                        c.name,
                        kind,
                    )
                    grace = probe.get("terminationGracePeriodSeconds") or self.pod["spec"].get(
                        "terminationGracePeriodSeconds", 30
                    )
                    _grace_kill([c], float(grace))
                    break

    def _port(self, c: Container, port: Any) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for p in c.spec.get("ports", []):
            if p.get("name") == port:
                return int(p["containerPort"])
        return -1

    def _probe(self, c: Container, probe: dict[str, Any]) -> bool:
        timeout = float(probe.get("timeoutSeconds", 1))
        try:
            if "httpGet" in probe:
                hg = probe["httpGet"]
                conn = http.client.HTTPConnection(
                    hg.get("host") or self.pod_ip or "", self._port(c, hg["port"]), timeout=timeout
                )
                try:
                    headers = {h["name"]: h["value"] for h in hg.get("httpHeaders", [])}
                    conn.request("GET", hg.get("path", "/"), headers=headers)
                    return 200 <= conn.getresponse().status < 400
                finally:
                    conn.close()
            if "tcpSocket" in probe:
                ts = probe["tcpSocket"]
                with socket.create_connection(
                    (ts.get("host") or self.pod_ip or "", self._port(c, ts["port"])),
                    timeout=timeout,
                ):
                    return True
            if "exec" in probe and c.proc is not None:
                sc = c.spec.get("securityContext") or {}
                pod_sc = self.pod["spec"].get("securityContext") or {}
                uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
                argv = ["nsenter", "-t", str(c.proc.pid), "-n", "-m"]
                if uid is not None:
                    gid = sc.get("runAsGroup", pod_sc.get("runAsGroup", uid))
                    argv += ["-S", str(uid), "-G", str(gid)]
                _, env, _ = self._command(c)
                res = subprocess.run(
                    [*argv, "--", *probe["exec"]["command"]],
                    env=env,
                    capture_output=True,
                    timeout=timeout,
                )
                return res.returncode == 0
        except (OSError, subprocess.TimeoutExpired, http.client.HTTPException, ConfigError):
            return False
        return False

    # ---------------------------------------------------------------- status

    def _container_status(self, c: Container) -> dict[str, Any]:
        st: dict[str, Any] = {
            "name": c.name,
            "image": c.spec.get("image", ""),
            "imageID": f"local://{c.spec.get('image', '')}",
            "ready": c.ready and c.running(),
            "restartCount": c.restart_count,
            "started": c.running() and c.started,
            "state": c.state,
        }
        if c.container_id:
            st["containerID"] = c.container_id
        if c.last_state:
            st["lastState"] = c.last_state
        return st

    def _push_status(self, final: bool = False) -> bool:
        """Write the pod's status if it changed; False when the API server did not take it."""
        inits_done = all(c.done for c in self.inits)
        ready = self.phase == "Running" and all(c.ready and c.running() for c in self.apps)
        t = now()
        prev = {c["type"]: c for c in self.pod.get("status", {}).get("conditions", [])}

        def cond(kind: str, ok: bool, reason: str | None = None) -> dict[str, Any]:
            status = "True" if ok else "False"
            old = prev.get(kind)
            since = old["lastTransitionTime"] if old and old.get("status") == status else t
            out = {
                "type": kind,
                "status": status,
                "lastTransitionTime": since,
                "lastProbeTime": None,
            }
            if reason and not ok:
                out["reason"] = reason
            return out

        terminal = self.phase in ("Succeeded", "Failed")
        status: dict[str, Any] = {
            "phase": self.phase,
            "hostIP": self.agent.api_host,
            "hostIPs": [{"ip": self.agent.api_host}],
            "startTime": self.start_time,
            "conditions": [
                cond("PodReadyToStartContainers", self.pod_ip is not None and not final),
                cond("Initialized", inits_done, "ContainersNotInitialized"),
                cond("Ready", ready, "PodCompleted" if terminal else "ContainersNotReady"),
                cond(
                    "ContainersReady", ready, "PodCompleted" if terminal else "ContainersNotReady"
                ),
            ],
            "containerStatuses": [self._container_status(c) for c in self.apps],
        }
        if self.inits:
            status["initContainerStatuses"] = [self._container_status(c) for c in self.inits]
        if self.pod_ip:
            status["podIP"] = self.pod_ip
            status["podIPs"] = [{"ip": self.pod_ip}]
        if self.reason:
            status["reason"] = self.reason
            status["message"] = self.message
        comparable = json.dumps(status, sort_keys=True)
        if comparable == self.last_status_json():
            return True
        try:
            self.api.strategic_patch(self.path + "/status", {"status": status})
            self._last = comparable
            return True
        except ApiError as exc:
            if exc.status == 404:
                self.gone = True
            else:
                log.warning("pod %s/%s: status update failed: %s", self.ns, self.name, exc)
        except Exception as exc:  # noqa: BLE001 - API down: retried on the next tick
            log.warning("pod %s/%s: status update failed: %s", self.ns, self.name, exc)
        return False

    _last: str = ""

    def last_status_json(self) -> str:
        return self._last


def _chgrp_tree(root: Path, gid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath, *(os.path.join(dirpath, f) for f in dirnames + filenames)]:
            with contextlib.suppress(OSError):
                st = os.lstat(name)
                if st.st_gid != gid:
                    os.lchown(name, -1, gid)
                if os.path.isdir(name) and not os.path.islink(name):
                    os.chmod(name, (st.st_mode & 0o7777) | 0o2070)


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: $$ escapes, unknown references stay as written."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, value)


# --------------------------------------------------------------------------- agent


class Agent:
    def __init__(self, state_dir: Path, cluster_name: str) -> None:
        self.state_dir = state_dir
        self.config = ClusterConfig(name=cluster_name, state_root=state_dir.parent)
        self.api = KubeApi(state_dir / "kubeconfig")
        server = self.api.server.removeprefix("https://")
        self.api_host, port = server.rsplit(":", 1)
        self.api_port = int(port)
        self.network = PodNetwork(self.config)
        self.cgroups = MemoryCgroups(cluster_name)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.workers: dict[str, PodWorker] = {}
        self.finished: set[str] = set()

    # ------------------------------------------------------------ node

    def node_status(self) -> dict[str, Any]:
        t = now()
        mem_kib = 24 * 1024 * 1024
        with contextlib.suppress(OSError, ValueError):
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    mem_kib = int(line.split()[1])
        capacity = {
            "cpu": "32",
            "memory": f"{mem_kib}Ki",
            "pods": "500",
            "ephemeral-storage": "100Gi",
        }

        def cond(kind: str, status: str, reason: str, msg: str) -> dict[str, Any]:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": msg,
                "lastHeartbeatTime": t,
                "lastTransitionTime": self.started_at,
            }

        return {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
                cond(
                    "Ready", "True", "KubeletReady", "modelcycle node agent is posting ready status"
                ),
            ],
            "addresses": [
                {"type": "InternalIP", "address": self.api_host},
                {"type": "Hostname", "address": NODE_NAME},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": hashlib.md5(NODE_NAME.encode()).hexdigest(),
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, NODE_NAME)),
                "bootID": str(uuid.uuid4()),
                "kernelVersion": platform.release(),
                "osImage": "local processes (modelcycle node agent)",
                "containerRuntimeVersion": "local://0.1.0",
                "kubeletVersion": K8S_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(
                    platform.machine(), platform.machine()
                ),
            },
        }

    def register(self) -> None:
        self.started_at = now()
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "labels": {
                    "kubernetes.io/hostname": NODE_NAME,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "node.kubernetes.io/instance-type": "local",
                },
            },
            "spec": {},
        }
        try:
            self.api.create("/api/v1/nodes", node)
        except ApiError as exc:
            if exc.status != 409:
                raise
        self.api.strategic_patch(
            f"/api/v1/nodes/{NODE_NAME}/status", {"status": self.node_status()}
        )
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": NODE_NAME, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": NODE_NAME,
                "leaseDurationSeconds": 40,
                "renewTime": micro_now(),
            },
        }
        try:
            self.api.create("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease)
        except ApiError as exc:
            if exc.status != 409:
                raise
        log.info("registered node %s", NODE_NAME)

    def heartbeat_loop(self) -> None:
        last_status = time.monotonic()
        while not self.stop.wait(10):
            try:
                self.api.merge_patch(
                    f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{NODE_NAME}",
                    {"spec": {"renewTime": micro_now(), "holderIdentity": NODE_NAME}},
                )
                if time.monotonic() - last_status > 60:
                    self.api.strategic_patch(
                        f"/api/v1/nodes/{NODE_NAME}/status", {"status": self.node_status()}
                    )
                    last_status = time.monotonic()
            except Exception as exc:  # noqa: BLE001 - API restarts are survived
                log.warning("heartbeat failed: %s", exc)
                with contextlib.suppress(Exception):
                    self.register()

    # ------------------------------------------------------------ pods

    def on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self.lock:
            worker = self.workers.get(uid)
            if kind == "DELETED":
                self.finished.discard(uid)
                if worker:
                    worker.deleted()
                return
            if worker:
                worker.update(pod)
                return
            terminal = pod.get("status", {}).get("phase") in ("Succeeded", "Failed")
            if uid in self.finished or terminal:
                if pod["metadata"].get("deletionTimestamp"):
                    self.finished.add(uid)
                    threading.Thread(target=self._delete_terminal, args=(pod,), daemon=True).start()
                return
            worker = PodWorker(self, pod)
            self.workers[uid] = worker
        worker.start()

    def _delete_terminal(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        with contextlib.suppress(ApiError):
            self.api.delete(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}},
            )
        shutil.rmtree(self.state_dir / "pods" / meta["uid"], ignore_errors=True)

    def worker_done(self, worker: PodWorker) -> None:
        with self.lock:
            self.workers.pop(worker.uid, None)
            if not worker.gone:
                self.finished.add(worker.uid)
            if worker.gone or worker._deleting():
                shutil.rmtree(worker.dir, ignore_errors=True)
            pod = worker.pod
        # A terminal pod deleted while its worker was finishing.
        if pod["metadata"].get("deletionTimestamp") and not worker.gone:
            self._delete_terminal(pod)

    # ------------------------------------------------------------ volumes

    def on_pvc(self, kind: str, pvc: dict[str, Any]) -> None:
        if kind == "DELETED" or pvc["spec"].get("volumeName"):
            return
        if pvc.get("status", {}).get("phase") not in (None, "Pending"):
            return
        cls_name = pvc["spec"].get("storageClassName")
        if not cls_name:
            return
        cls = self.api.get_or_none(f"/apis/storage.k8s.io/v1/storageclasses/{cls_name}")
        if not cls or cls.get("provisioner") != PROVISIONER:
            return
        meta = pvc["metadata"]
        pv_name = f"pvc-{meta['uid']}"
        host = self.state_dir / "volumes" / pv_name
        host.mkdir(parents=True, exist_ok=True)
        host.chmod(0o777)
        pv = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": pv_name,
                "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
            },
            "spec": {
                "capacity": {"storage": pvc["spec"]["resources"]["requests"]["storage"]},
                "accessModes": pvc["spec"].get("accessModes", ["ReadWriteOnce"]),
                "persistentVolumeReclaimPolicy": cls.get("reclaimPolicy", "Delete"),
                "storageClassName": cls_name,
                "volumeMode": pvc["spec"].get("volumeMode", "Filesystem"),
                "hostPath": {"path": str(host), "type": "DirectoryOrCreate"},
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": meta["namespace"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        try:
            self.api.create("/api/v1/persistentvolumes", pv)
            log.info(
                "provisioned %s for %s/%s at %s", pv_name, meta["namespace"], meta["name"], host
            )
        except ApiError as exc:
            if exc.status != 409:
                log.warning("provisioning %s failed: %s", pv_name, exc)

    def reclaim_loop(self) -> None:
        while not self.stop.wait(3):
            try:
                pvs = self.api.get("/api/v1/persistentvolumes")["items"]
            except Exception:  # noqa: BLE001
                continue
            for pv in pvs:
                ann = pv["metadata"].get("annotations") or {}
                if ann.get("pv.kubernetes.io/provisioned-by") != PROVISIONER:
                    continue
                if pv.get("status", {}).get("phase") not in ("Released", "Failed"):
                    continue
                if pv["spec"].get("persistentVolumeReclaimPolicy") != "Delete":
                    continue
                path = pv["spec"].get("hostPath", {}).get("path", "")
                if path.startswith(str(self.state_dir / "volumes")):
                    shutil.rmtree(path, ignore_errors=True)
                with contextlib.suppress(ApiError):
                    self.api.delete(f"/api/v1/persistentvolumes/{pv['metadata']['name']}")
                    log.info("deleted released volume %s", pv["metadata"]["name"])

    # ------------------------------------------------------------ run

    def run(self) -> None:
        self.network.cleanup_stale()
        while True:
            try:
                self.register()
                break
            except Exception as exc:  # noqa: BLE001 - wait for the API server
                log.warning("registering node: %s", exc)
                time.sleep(0.5)
        threads = [
            threading.Thread(target=self.heartbeat_loop, daemon=True, name="heartbeat"),
            threading.Thread(
                target=self.api.list_and_watch,
                daemon=True,
                name="pods",
                args=(
                    "/api/v1/pods",
                    self.on_pod,
                    self.stop,
                    {"fieldSelector": f"spec.nodeName={NODE_NAME}"},
                ),
            ),
            threading.Thread(
                target=self.api.list_and_watch,
                daemon=True,
                name="pvcs",
                args=("/api/v1/persistentvolumeclaims", self.on_pvc, self.stop),
            ),
            threading.Thread(target=self.reclaim_loop, daemon=True, name="reclaim"),
        ]
        for t in threads:
            t.start()
        self.stop.wait()
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            w.stop_for_shutdown()
        for w in workers:
            w.join(timeout=15)
        self.network.cleanup_stale()
        self.cgroups.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="the local cluster's node agent")
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--cluster-name", required=True)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s %(message)s"
    )
    agent = Agent(args.state_dir, args.cluster_name)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping every container, then exiting", signum)
        agent.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.run()


if __name__ == "__main__":
    main()
