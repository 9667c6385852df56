"""Bring the local control plane up and down, and say how it is.

A cluster lives in one state directory (``ClusterConfig.state_dir``): its PKI, its
kubeconfig, the logs of every process, and ``state.json`` with the PID (and the start
time, so a reused PID is never signalled) of each process it started. ``down`` stops
exactly those processes, in reverse order, and removes the pod network it created.

Nothing here listens anywhere but 127.0.0.1 and the cluster's own pod-network bridge.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = os.environ.get("K8S_VERSION", "v1.35.4")
ETCD_VERSION = os.environ.get("ETCD_DEB_VERSION", "3.5.16")
HELM_VERSION = os.environ.get("HELM_VERSION", "v3.22.0")
CACHE = Path(os.environ.get("MODELCYCLE_CACHE", Path.home() / ".cache" / "modelcycle"))
BIN = CACHE / "bin"
NODE_NAME = "modelcycle-node"
ADMIN_TOKEN_USER = "modelcycle-admin"


def binary(name: str) -> Path:
    version = {"etcd": ETCD_VERSION, "helm": HELM_VERSION}.get(name, K8S_VERSION)
    return BIN / f"{name}-{version}"


def ensure_binaries(*targets: str) -> None:
    """Build whatever is missing (cached by version; a no-op when warm)."""
    script = REPO / "tests" / "localcluster" / "build-binaries.sh"
    for target in targets or ("etcd", "k8s"):
        subprocess.run(["bash", str(script), target], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reuse_port(saved: Any) -> int:
    """The port a component had before, if it can still be bound; else a free one.

    A restarted kube-apiserver keeps its address, as a real one does: clients (the
    operator, kubeconfigs already written) reconnect to the same URL.
    """
    try:
        port = int(saved)
    except (TypeError, ValueError):
        return free_port()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return free_port()
    return port


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    """Where a cluster lives and which pod network it owns.

    Two clusters (the demo's and the test suite's) can run side by side: the name picks
    the state directory, the bridge and the /16 pod subnet.
    """

    name: str = "demo"
    state_root: Path = Path(os.environ.get("MODELCYCLE_CLUSTERS", "/var/lib/modelcycle/clusters"))

    @property
    def state_dir(self) -> Path:
        return self.state_root / self.name

    @property
    def subnet_index(self) -> int:
        # 10.100.0.0/16 .. 10.249.0.0/16, stable per name; ``up`` refuses a subnet that
        # another interface already routes.
        return 100 + int(hashlib.sha256(self.name.encode()).hexdigest(), 16) % 150

    @property
    def gateway_ip(self) -> str:
        return f"10.{self.subnet_index}.0.1"

    @property
    def pod_cidr(self) -> str:
        return f"10.{self.subnet_index}.0.0/16"

    @property
    def bridge(self) -> str:
        return f"mcbr-{hashlib.sha256(self.name.encode()).hexdigest()[:8]}"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"


# Popen objects of the components this process started, kept so that Python does not
# warn about (or lose track of) children that outlive the call that started them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class ClusterError(RuntimeError):
    pass


def _open_to_pods(path: Path) -> None:
    """Pods run as non-root users from the project's virtualenv: every directory above it
    must be searchable by others. The checkout itself is made so (``mktemp -d`` makes
    0700 directories); a closed directory outside it is an error that says which."""
    for p in (path, *path.parents):
        mode = p.stat().st_mode
        if mode & 0o001:
            continue
        if p == REPO or REPO in p.parents:
            p.chmod(mode | 0o005)
        else:
            raise ClusterError(
                f"{p} is not searchable by other users (mode {oct(mode & 0o777)}), so pods "
                f"running as non-root cannot execute {path}; put the checkout elsewhere"
            )


def _proc_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime), counted after the parenthesised command name.
    return stat.rsplit(")", 1)[1].split()[19]


class Cluster:
    """One local control plane: ``up()``, ``down()``, ``status()``."""

    def __init__(self, config: ClusterConfig | None = None) -> None:
        self.config = config or ClusterConfig()
        self.dir = self.config.state_dir
        self.pki = self.dir / "pki"
        self.logs = self.dir / "logs"
        self.state_file = self.dir / "state.json"

    # ------------------------------------------------------------------ state

    def _state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.state_file.read_text()))
        except (OSError, ValueError):
            return {"processes": {}}

    def _save_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)

    @property
    def api_port(self) -> int:
        return int(self._state()["apiPort"])

    @property
    def server(self) -> str:
        return f"https://{self.config.gateway_ip}:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.config.kubeconfig

    @property
    def admin_token(self) -> str:
        return (self.pki / "admin.token").read_text().strip()

    def alive(self, component: str) -> bool:
        proc = self._state().get("processes", {}).get(component)
        if not proc:
            return False
        return _proc_start_time(int(proc["pid"])) == proc["start"]

    # ------------------------------------------------------------------ PKI

    def _pki(self) -> None:
        self.pki.mkdir(parents=True, exist_ok=True)
        p = self.pki
        if (p / "apiserver.crt").exists():
            return

        def ssl_cmd(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True)

        ssl_cmd(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "365",
            "-keyout",
            str(p / "ca.key"),
            "-out",
            str(p / "ca.crt"),
            "-subj",
            "/CN=modelcycle-local-ca",
        )
        sans = [
            "DNS:localhost",
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local",
            "IP:127.0.0.1",
            f"IP:{self.config.gateway_ip}",
            "IP:10.96.0.1",
        ]
        ext = p / "san.ext"
        ext.write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\nsubjectAltName=" + ",".join(sans) + "\n"
        )
        ssl_cmd(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(p / "apiserver.key"),
            "-out",
            str(p / "apiserver.csr"),
            "-subj",
            "/CN=kube-apiserver",
        )
        ssl_cmd(
            "x509",
            "-req",
            "-in",
            str(p / "apiserver.csr"),
            "-CA",
            str(p / "ca.crt"),
            "-CAkey",
            str(p / "ca.key"),
            "-CAcreateserial",
            "-days",
            "365",
            "-out",
            str(p / "apiserver.crt"),
            "-extfile",
            str(ext),
        )
        ssl_cmd("genrsa", "-out", str(p / "sa.key"), "2048")
        ssl_cmd("rsa", "-in", str(p / "sa.key"), "-pubout", "-out", str(p / "sa.pub"))
        token = hashlib.sha256(os.urandom(32)).hexdigest()
        (p / "admin.token").write_text(token + "\n")
        (p / "tokens.csv").write_text(f'{token},{ADMIN_TOKEN_USER},1000,"system:masters"\n')
        for f in p.iterdir():
            f.chmod(0o600)

    def _write_kubeconfig(self) -> None:
        kc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "modelcycle-local",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority": str(self.pki / "ca.crt"),
                    },
                }
            ],
            "users": [{"name": ADMIN_TOKEN_USER, "user": {"token": self.admin_token}}],
            "contexts": [
                {
                    "name": "modelcycle-local",
                    "context": {
                        "cluster": "modelcycle-local",
                        "user": ADMIN_TOKEN_USER,
                        "namespace": "default",
                    },
                }
            ],
            "current-context": "modelcycle-local",
        }
        self.kubeconfig.write_text(json.dumps(kc, indent=2))
        self.kubeconfig.chmod(0o600)

    # ------------------------------------------------------------------ network

    def _network_up(self) -> None:
        br, gw = self.config.bridge, self.config.gateway_ip
        routes = subprocess.run(
            ["ip", "-o", "route", "show", self.config.pod_cidr], capture_output=True, text=True
        ).stdout
        for line in routes.splitlines():
            if f" dev {br} " not in f"{line} ":
                raise ClusterError(
                    f"pod network {self.config.pod_cidr} of cluster "
                    f"{self.config.name!r} is already routed elsewhere: "
                    f"{line.strip()} (another local cluster? pick another name)"
                )
        if subprocess.run(["ip", "link", "show", br], capture_output=True).returncode != 0:
            subprocess.run(["ip", "link", "add", br, "type", "bridge"], check=True)
        addrs = subprocess.run(
            ["ip", "-o", "addr", "show", "dev", br], capture_output=True, text=True, check=True
        ).stdout
        if f" {gw}/" not in addrs:
            subprocess.run(["ip", "addr", "add", f"{gw}/16", "dev", br], check=True)
        subprocess.run(["ip", "link", "set", br, "up"], check=True)

    def _network_down(self) -> None:
        subprocess.run(["ip", "link", "del", self.config.bridge], capture_output=True)

    # ------------------------------------------------------------------ processes

    def _spawn(self, component: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{component}.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            cwd=self.dir,
        )
        log.close()
        _CHILDREN[proc.pid] = proc
        state = self._state()
        state.setdefault("processes", {})[component] = {
            "pid": proc.pid,
            "start": _proc_start_time(proc.pid),
            "argv": argv,
        }
        self._save_state(state)

    def _stop(self, component: str, grace: float = 10.0) -> None:
        state = self._state()
        proc = state.get("processes", {}).get(component)
        if not proc:
            return
        pid = int(proc["pid"])
        if _proc_start_time(pid) == proc["start"]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            child = _CHILDREN.pop(pid, None)
            while time.monotonic() < deadline and _proc_start_time(pid) == proc["start"]:
                if child is not None:
                    child.poll()
                else:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, os.WNOHANG)
                time.sleep(0.05)
            if _proc_start_time(pid) == proc["start"]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                if child is not None:
                    child.wait()
        state["processes"].pop(component, None)
        self._save_state(state)

    def _wait_http(self, url: str, timeout: float, component: str, token: bool = True) -> None:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not self.alive(component):
                tail = (self.logs / f"{component}.log").read_text(errors="replace")[-3000:]
                raise ClusterError(f"{component} exited during start-up; its log ends:\n{tail}")
            req = urllib.request.Request(url)
            if token:
                req.add_header("Authorization", f"Bearer {self.admin_token}")
            try:
                with urllib.request.urlopen(req, timeout=2, context=ctx) as resp:
                    if resp.status == 200:
                        return
            except Exception as exc:  # noqa: BLE001 - keep polling until the deadline
                last = str(exc)
            time.sleep(0.1)
        raise ClusterError(f"{component} not healthy at {url} after {timeout:.0f}s: {last}")

    # ------------------------------------------------------------------ up / down

    def up(self, timeout: float = 120.0) -> None:
        """Start everything that is not running yet; idempotent."""
        if os.geteuid() != 0:
            raise ClusterError("the local cluster needs root (network and mount namespaces)")
        ensure_binaries("etcd", "k8s")
        for path in (REPO, Path(sys.prefix)):
            _open_to_pods(path)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._pki()
        self._network_up()
        state = self._state()
        if not self.alive("kube-apiserver"):
            state["apiPort"] = reuse_port(state.get("apiPort"))
        if not self.alive("etcd"):
            state["etcdPort"] = reuse_port(state.get("etcdPort"))
        self._save_state(state)
        self._write_kubeconfig()
        started = time.monotonic()
        p = self.pki
        etcd_port = int(state["etcdPort"])
        if not self.alive("etcd"):
            peer = free_port()
            self._spawn(
                "etcd",
                [
                    str(binary("etcd")),
                    "--name",
                    "local",
                    "--data-dir",
                    str(self.dir / "etcd"),
                    "--listen-client-urls",
                    f"http://127.0.0.1:{etcd_port}",
                    "--advertise-client-urls",
                    f"http://127.0.0.1:{etcd_port}",
                    "--listen-peer-urls",
                    f"http://127.0.0.1:{peer}",
                    "--initial-advertise-peer-urls",
                    f"http://127.0.0.1:{peer}",
                    "--initial-cluster",
                    f"local=http://127.0.0.1:{peer}",
                    "--unsafe-no-fsync",
                    "--log-level",
                    "warn",
                    "--quota-backend-bytes",
                    str(4 * 1024**3),
                ],
                env={"ETCD_UNSUPPORTED_ARCH": ""},
            )
            self._wait_http(f"http://127.0.0.1:{etcd_port}/health", 30, "etcd", token=False)
        if not self.alive("kube-apiserver"):
            self._spawn(
                "kube-apiserver",
                [
                    str(binary("kube-apiserver")),
                    f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                    f"--bind-address={self.config.gateway_ip}",
                    f"--advertise-address={self.config.gateway_ip}",
                    f"--secure-port={self.api_port}",
                    f"--cert-dir={self.dir / 'apiserver-certs'}",
                    f"--tls-cert-file={p / 'apiserver.crt'}",
                    f"--tls-private-key-file={p / 'apiserver.key'}",
                    f"--client-ca-file={p / 'ca.crt'}",
                    f"--token-auth-file={p / 'tokens.csv'}",
                    f"--service-account-key-file={p / 'sa.pub'}",
                    f"--service-account-signing-key-file={p / 'sa.key'}",
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                    "--authorization-mode=Node,RBAC",
                    "--enable-admission-plugins=NodeRestriction,PodSecurity,ServiceAccount,"
                    "DefaultStorageClass,NamespaceLifecycle,LimitRanger,ResourceQuota",
                    "--service-cluster-ip-range=10.96.0.0/16",
                    "--allow-privileged=false",
                    "--profiling=false",
                    "--max-requests-inflight=800",
                    "--max-mutating-requests-inflight=400",
                    "--event-ttl=1h",
                    "--v=1",
                ],
            )
            self._wait_http(f"{self.server}/readyz", timeout, "kube-apiserver")
        kc = str(self.kubeconfig)
        if not self.alive("kube-controller-manager"):
            self._spawn(
                "kube-controller-manager",
                [
                    str(binary("kube-controller-manager")),
                    f"--kubeconfig={kc}",
                    f"--authentication-kubeconfig={kc}",
                    f"--authorization-kubeconfig={kc}",
                    "--leader-elect=false",
                    f"--service-account-private-key-file={p / 'sa.key'}",
                    f"--root-ca-file={p / 'ca.crt'}",
                    "--use-service-account-credentials=true",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={free_port()}",
                    "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service,-route",
                    "--kube-api-qps=200",
                    "--kube-api-burst=400",
                    "--concurrent-job-syncs=20",
                    "--concurrent-deployment-syncs=20",
                    "--concurrent-gc-syncs=40",
                    "--node-monitor-grace-period=60s",
                    "--v=1",
                ],
            )
        if not self.alive("kube-scheduler"):
            self._spawn(
                "kube-scheduler",
                [
                    str(binary("kube-scheduler")),
                    f"--kubeconfig={kc}",
                    f"--authentication-kubeconfig={kc}",
                    f"--authorization-kubeconfig={kc}",
                    "--leader-elect=false",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={free_port()}",
                    "--kube-api-qps=200",
                    "--kube-api-burst=400",
                    "--v=1",
                ],
            )
        self._bootstrap()
        if not self.alive("node-agent"):
            self._spawn(
                "node-agent",
                [
                    sys.executable,
                    "-m",
                    "localcluster.nodeagent",
                    "--state-dir",
                    str(self.dir),
                    "--cluster-name",
                    self.config.name,
                ],
                env={"PYTHONPATH": str(REPO / "tests"), "PYTHONUNBUFFERED": "1"},
            )
        self._wait_node_ready(timeout)
        state = self._state()
        state["lastUpSeconds"] = round(time.monotonic() - started, 2)
        self._save_state(state)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            text=True,
            capture_output=True,
            timeout=timeout,
        )
        if check and res.returncode != 0:
            raise subprocess.CalledProcessError(res.returncode, res.args, res.stdout, res.stderr)
        return res

    def _bootstrap(self) -> None:
        """Cluster objects the kubelet side would bring: the default StorageClass."""
        manifest = REPO / "tests" / "localcluster" / "bootstrap.yaml"
        deadline = time.monotonic() + 60
        while True:
            res = self.kubectl(
                "apply",
                "--server-side",
                "--field-manager=localcluster",
                "-f",
                str(manifest),
                check=False,
            )
            if res.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"bootstrap objects not applied: {res.stderr}")
            time.sleep(0.5)

    def _wait_node_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive("node-agent"):
                tail = (self.logs / "node-agent.log").read_text(errors="replace")[-3000:]
                raise ClusterError(f"node agent exited; its log ends:\n{tail}")
            res = self.kubectl(
                "get",
                "node",
                NODE_NAME,
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                check=False,
            )
            if res.stdout.strip() == "True":
                return
            time.sleep(0.2)
        raise ClusterError(f"node {NODE_NAME} not Ready after {timeout:.0f}s")

    def restart(self, component: str) -> None:
        """Stop one component and bring it back (fault injection)."""
        self._stop(component)
        self.up()

    def down(self, purge: bool = False) -> None:
        for component in (
            "node-agent",
            "kube-scheduler",
            "kube-controller-manager",
            "kube-apiserver",
            "etcd",
        ):
            self._stop(component, grace=30.0 if component == "node-agent" else 10.0)
        self._network_down()
        if purge and self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)

    def status(self) -> dict[str, Any]:
        state = self._state()
        comps = {
            c: ("running" if self.alive(c) else "stopped")
            for c in (
                "etcd",
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "node-agent",
            )
        }
        return {
            "name": self.config.name,
            "kubeconfig": str(self.kubeconfig),
            "server": self.server if "apiPort" in state else None,
            "components": comps,
            "podNetwork": self.config.pod_cidr,
            "logs": str(self.logs),
            "lastUpSeconds": state.get("lastUpSeconds"),
        }
