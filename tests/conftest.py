"""Fixtures shared by the whole suite.

Integration tests (``tests/integration``) run against the real local control plane from
``tests/localcluster``: the session fixture ``cluster`` brings up a fresh one (its own
etcd data, its own pod network) and stops exactly what it started at the end. The
``operator`` fixture runs the real operator (``kopf run -m modelcycle_operator``) on the
host against it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubetest import LocalCluster, wait_for
from localcluster import ClusterConfig
from localcluster.cluster import free_port

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    c = LocalCluster(ClusterConfig(name=os.environ.get("MODELCYCLE_TEST_CLUSTER", "test")))
    c.down(purge=True)
    c.up()
    try:
        c.kubectl("apply", "--server-side", "--field-manager=tests", "-f", str(REPO / "crds"))

        # Poll rather than `kubectl wait`: on a loaded machine the CRD can take a while to be
        # served, and a failure should say what its conditions were.
        def established() -> bool:
            crd = c.get("crd", "modelcycles.modelcycle.dev") or {}
            return any(
                cond.get("type") == "Established" and cond.get("status") == "True"
                for cond in (crd.get("status") or {}).get("conditions") or []
            )

        wait_for(established, 180, "the ModelCycle CRD to be Established")
        yield c
    finally:
        if os.environ.get("MODELCYCLE_KEEP_CLUSTER") != "1":
            c.down()


@pytest.fixture
def namespace(cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    base = request.node.name.lower().replace("_", "-")
    name = "t-" + "".join(ch for ch in base if ch.isalnum() or ch == "-")[:40].strip("-")
    name = f"{name}-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", name)
    wait_for(
        lambda: (
            cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode
            == 0
        ),
        30,
        f"the default ServiceAccount in {name}",
    )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


class OperatorProcess:
    """The real operator, run on the host as a user would run it during development."""

    def __init__(self, cluster: LocalCluster, log_path: Path, env: dict[str, str]) -> None:
        self.cluster = cluster
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        #: The operator's alert receiver and the bearer token it accepts.
        self.receiver_url = ""
        self.token = ""

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
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
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig), **self.env},
            start_new_session=True,
        )
        log.close()

    def kill(self) -> None:
        """SIGKILL: no clean-up, as when a node dies."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture(scope="session")
def operator(cluster: LocalCluster) -> Iterator[OperatorProcess]:
    port = free_port()
    token = secrets.token_urlsafe(24)
    env = {
        "MODELCYCLE_TIMER_SECONDS": "5",
        "MODELCYCLE_RECEIVER_HOST": "127.0.0.1",
        "MODELCYCLE_RECEIVER_PORT": str(port),
        "MODELCYCLE_RECEIVER_TOKEN": token,
    }
    op = OperatorProcess(cluster, cluster.logs / "operator.log", env)
    op.receiver_url = f"http://127.0.0.1:{port}/alerts"
    op.token = token
    op.start()
    try:
        yield op
    finally:
        with contextlib.suppress(Exception):
            op.stop()
