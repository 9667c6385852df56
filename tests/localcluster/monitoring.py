"""A real Prometheus and a real Alertmanager beside the local cluster.

Prometheus discovers the serving pods through the API server (``kubernetes_sd_configs``
with the cluster's kubeconfig), scrapes ``/metrics`` on their pod IPs, evaluates the rule
file given to it, and sends alerts to Alertmanager, which posts its version-4 webhook to
the operator's alert receiver with a bearer token -- the path a production cluster takes.
Both are the upstream binaries built by ``build-binaries.sh prometheus``, bound to
127.0.0.1 on free ports, and stopped by their own PIDs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from localcluster.cluster import BIN, Cluster, ensure_binaries, free_port

PROMETHEUS_VERSION = os.environ.get("PROMETHEUS_VERSION", "v0.316.0")
ALERTMANAGER_VERSION = os.environ.get("ALERTMANAGER_VERSION", "v0.28.1")


def scrape_config(kubeconfig: Path, interval: str = "2s") -> dict[str, Any]:
    """Serving pods of every ModelCycle, labelled the way the receiver routes alerts."""
    return {
        "job_name": "modelcycle-serving",
        "scrape_interval": interval,
        "scrape_timeout": "1s",
        "kubernetes_sd_configs": [{"role": "pod", "kubeconfig_file": str(kubeconfig)}],
        "relabel_configs": [
            {
                "source_labels": ["__meta_kubernetes_pod_label_modelcycle_dev_step"],
                "regex": "serving",
                "action": "keep",
            },
            {
                "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                "regex": "http",
                "action": "keep",
            },
            {
                "source_labels": ["__meta_kubernetes_pod_phase"],
                "regex": "Running",
                "action": "keep",
            },
            {
                "source_labels": ["__meta_kubernetes_pod_label_modelcycle_dev_name"],
                "target_label": "modelcycle",
            },
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        ],
    }


class Monitoring:
    def __init__(self, cluster: Cluster, workdir: Path) -> None:
        self.cluster = cluster
        self.dir = workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.prom_port = 0
        self.am_port = 0

    def start(self, rules: dict[str, Any], receiver_url: str, token: str) -> None:
        ensure_binaries("prometheus")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.am_port, self.prom_port = free_port(), free_port()
        token_file = self.dir / "receiver.token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        am_config = {
            "route": {
                "receiver": "modelcycle",
                "group_by": ["alertname", "modelcycle", "namespace"],
                "group_wait": "1s",
                "group_interval": "2s",
                "repeat_interval": "1m",
            },
            "receivers": [
                {
                    "name": "modelcycle",
                    "webhook_configs": [
                        {
                            "url": receiver_url,
                            "send_resolved": True,
                            "http_config": {
                                "authorization": {
                                    "type": "Bearer",
                                    "credentials_file": str(token_file),
                                }
                            },
                        }
                    ],
                }
            ],
        }
        (self.dir / "alertmanager.yml").write_text(yaml.safe_dump(am_config))
        (self.dir / "rules.yml").write_text(yaml.safe_dump(rules))
        prom_config = {
            "global": {"scrape_interval": "2s", "evaluation_interval": "1s"},
            "rule_files": [str(self.dir / "rules.yml")],
            "alerting": {
                "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{self.am_port}"]}]}]
            },
            "scrape_configs": [scrape_config(self.cluster.kubeconfig)],
        }
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(prom_config))
        self._spawn(
            "alertmanager",
            [
                str(BIN / f"alertmanager-{ALERTMANAGER_VERSION}"),
                f"--config.file={self.dir / 'alertmanager.yml'}",
                f"--storage.path={self.dir / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{self.am_port}",
                "--cluster.listen-address=",
            ],
        )
        self._spawn(
            "prometheus",
            [
                str(BIN / f"prometheus-{PROMETHEUS_VERSION}"),
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{self.prom_port}",
            ],
        )
        self._wait(f"http://127.0.0.1:{self.am_port}/-/ready", "alertmanager")
        self._wait(f"http://127.0.0.1:{self.prom_port}/-/ready", "prometheus")

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        self.procs[name] = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def _wait(self, url: str, name: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                tail = (self.dir / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited:\n{tail}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(url, timeout=1) as r,
            ):
                if r.status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready at {url}")

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.prom_port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr}
        )
        with urllib.request.urlopen(url, timeout=5) as r:
            return list(json.loads(r.read())["data"]["result"])

    def alerts(self) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.am_port}/api/v2/alerts"
        with urllib.request.urlopen(url, timeout=5) as r:
            return list(json.loads(r.read()))

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
