"""The local control plane is a real Kubernetes: what the rest of the suite relies on.

Each test drives the cluster with kubectl and checks the resulting state of the cluster
(and, through pod IPs, of the processes the node agent runs).
"""

from __future__ import annotations

import datetime as dt
import json
import textwrap
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from kubetest import LocalCluster, wait_for

pytestmark = pytest.mark.integration

PY = "python:3.11"
RESTRICTED_SC = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def job(name: str, code: str, **spec: Any) -> dict[str, Any]:
    container = {
        "name": "main",
        "image": PY,
        "command": ["python", "-c", textwrap.dedent(code)],
        "securityContext": RESTRICTED_SC,
        **spec.pop("container", {}),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": spec.pop("backoffLimit", 0),
            "template": {"spec": {"restartPolicy": "Never", "containers": [container], **spec}},
        },
    }


def job_condition(cluster: LocalCluster, ns: str, name: str) -> str | None:
    j = cluster.get("job", name, ns) or {}
    for c in j.get("status", {}).get("conditions", []):
        if c["type"] in ("Complete", "Failed") and c["status"] == "True":
            return str(c["type"])
    return None


def job_pod(cluster: LocalCluster, ns: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl(
        "get", "pods", "-n", ns, "-l", f"batch.kubernetes.io/job-name={name}", "-o", "json"
    )
    items = json.loads(out.stdout)["items"]
    assert items, f"no pod for job {name}"
    return dict(items[0])


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_job_completes_with_termination_message(cluster: LocalCluster, namespace: str) -> None:
    cluster.apply(
        job(
            "ok",
            """
        import json, os, sys
        print("running as", os.getuid(), file=sys.stderr)
        with open("/dev/termination-log", "w") as f:
            json.dump({"answer": 42, "uid": os.getuid()}, f)
    """,
        ),
        namespace,
    )
    assert wait_for(lambda: job_condition(cluster, namespace, "ok"), 60, "job ok") == "Complete"
    pod = job_pod(cluster, namespace, "ok")
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 0
    assert term["reason"] == "Completed"
    assert json.loads(term["message"]) == {"answer": 42, "uid": 1000}
    assert pod["status"]["phase"] == "Succeeded"
    assert "running as 1000" in cluster.container_log(namespace, pod["metadata"]["name"], "main")


def test_failing_job_reports_exit_code(cluster: LocalCluster, namespace: str) -> None:
    cluster.apply(
        job(
            "bad",
            "import sys; print('boom'); sys.exit(3)",
            container={"terminationMessagePolicy": "FallbackToLogsOnError"},
        ),
        namespace,
    )
    assert wait_for(lambda: job_condition(cluster, namespace, "bad"), 60, "job bad") == "Failed"
    j = cluster.get("job", "bad", namespace)
    assert j is not None
    failed = next(c for c in j["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    term = job_pod(cluster, namespace, "bad")["status"]["containerStatuses"][0]["state"]
    assert term["terminated"]["exitCode"] == 3
    assert term["terminated"]["reason"] == "Error"
    assert "boom" in term["terminated"]["message"]


def test_env_value_from_and_volumes(cluster: LocalCluster, namespace: str) -> None:
    cluster.kubectl(
        "create",
        "configmap",
        "cfg",
        "-n",
        namespace,
        "--from-literal=color=blue",
        "--from-literal=settings.yaml=a: 1",
    )
    cluster.kubectl(
        "create", "secret", "generic", "sec", "-n", namespace, "--from-literal=password=s3cret"
    )
    manifest = job(
        "env",
        """
        import json, os, pathlib
        out = {k: os.environ.get(k) for k in ("POD", "NS", "COLOR", "PASS", "IP")}
        out["cfgfile"] = pathlib.Path("/etc/cfg/settings.yaml").read_text()
        out["secfile"] = pathlib.Path("/etc/sec/password").read_text()
        out["cwd"] = os.getcwd()
        out["token"] = len(pathlib.Path(
            "/var/run/secrets/kubernetes.io/serviceaccount/token").read_text()) > 100
        try:
            pathlib.Path("/etc/cfg/new").write_text("x")
            out["ro"] = False
        except OSError:
            out["ro"] = True
        try:
            pathlib.Path("/usr/local/forbidden").write_text("x")
            out["rootfs_ro"] = False
        except OSError:
            out["rootfs_ro"] = True
        pathlib.Path("/scratch/x").write_text("writable")
        open("/dev/termination-log", "w").write(json.dumps(out))
    """,
        container={
            "workingDir": "/scratch",
            "securityContext": {**RESTRICTED_SC, "readOnlyRootFilesystem": True},
            "env": [
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {
                    "name": "COLOR",
                    "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "color"}},
                },
                {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
            ],
            "volumeMounts": [
                {"name": "cfg", "mountPath": "/etc/cfg"},
                {"name": "sec", "mountPath": "/etc/sec", "readOnly": True},
                {"name": "scratch", "mountPath": "/scratch"},
            ],
        },
        volumes=[
            {"name": "cfg", "configMap": {"name": "cfg"}},
            {"name": "sec", "secret": {"secretName": "sec"}},
            {"name": "scratch", "emptyDir": {}},
        ],
    )
    cluster.apply(manifest, namespace)
    assert wait_for(lambda: job_condition(cluster, namespace, "env"), 60, "job env") == "Complete"
    pod = job_pod(cluster, namespace, "env")
    out = json.loads(pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"])
    assert out["POD"] == pod["metadata"]["name"]
    assert out["NS"] == namespace
    assert out["IP"] == pod["status"]["podIP"]
    assert out["COLOR"] == "blue"
    assert out["PASS"] == "s3cret"
    assert out["cfgfile"] == "a: 1"
    assert out["secfile"] == "s3cret"
    assert out["cwd"] == "/scratch"
    assert out["token"] is True
    assert out["ro"] is True
    assert out["rootfs_ro"] is True


def http_server_deployment(name: str, replicas: int = 1) -> dict[str, Any]:
    code = textwrap.dedent("""
        import http.server, os, signal, sys
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = os.environ["HOSTNAME"].encode()
                self.send_response(200); self.send_header("Content-Length", str(len(body)))
                self.end_headers(); self.wfile.write(body)
            def log_message(self, *a): pass
        signal.signal(signal.SIGTERM, lambda *a: (print("got SIGTERM", flush=True), sys.exit(0)))
        http.server.HTTPServer(("0.0.0.0", 8080), H).serve_forever()
    """)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "web",
                            "image": PY,
                            "command": ["python", "-c", code],
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "securityContext": RESTRICTED_SC,
                            "readinessProbe": {
                                "httpGet": {"path": "/", "port": "http"},
                                "periodSeconds": 1,
                            },
                            "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 2},
                        }
                    ],
                },
            },
        },
    }


def pod_ips(cluster: LocalCluster, ns: str, selector: str) -> list[str]:
    out = cluster.kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "json").stdout
    return [
        p["status"]["podIP"]
        for p in json.loads(out)["items"]
        if p["status"].get("podIP") and not p["metadata"].get("deletionTimestamp")
    ]


def test_deployment_available_reachable_and_stopped(cluster: LocalCluster, namespace: str) -> None:
    cluster.apply(http_server_deployment("web", replicas=2), namespace)
    cluster.kubectl(
        "rollout", "status", "deployment/web", "-n", namespace, "--timeout=90s", timeout=100
    )
    d = cluster.get("deployment", "web", namespace)
    assert d is not None
    available = next(c for c in d["status"]["conditions"] if c["type"] == "Available")
    assert available["status"] == "True"
    ips = pod_ips(cluster, namespace, "app=web")
    assert len(set(ips)) == 2, "two pods, two IPs, one port"
    names = set()
    for addr in ips:
        status, body = http_get(f"http://{addr}:8080/")
        assert status == 200
        names.add(body)
    assert len(names) == 2, "each pod answered on its own IP with its own hostname"
    # EndpointSlices list the ready pods.
    cluster.kubectl("expose", "deployment", "web", "-n", namespace, "--port=8080")
    wait_for(
        lambda: (
            sorted(
                a
                for s in json.loads(
                    cluster.kubectl(
                        "get",
                        "endpointslices",
                        "-n",
                        namespace,
                        "-l",
                        "kubernetes.io/service-name=web",
                        "-o",
                        "json",
                    ).stdout
                )["items"]
                for e in s.get("endpoints") or []
                for a in e["addresses"]
            )
            == sorted(ips)
        ),
        30,
        "endpoint slices with both pod IPs",
    )
    cluster.kubectl(
        "delete", "deployment", "web", "-n", namespace, "--wait=true", "--timeout=60s", timeout=70
    )
    wait_for(
        lambda: (
            not json.loads(
                cluster.kubectl(
                    "get", "pods", "-n", namespace, "-l", "app=web", "-o", "json"
                ).stdout
            )["items"]
        ),
        60,
        "pods of the deleted deployment gone",
    )
    for addr in ips:
        with pytest.raises((ConnectionError, TimeoutError, urllib.error.URLError)):
            http_get(f"http://{addr}:8080/", timeout=1)
    # Graceful: the process saw SIGTERM before it went.
    logs = [f.read_text() for f in (cluster.dir / "containers").glob(f"{namespace}_web-*_web.log")]
    assert logs
    assert all("got SIGTERM" in text for text in logs)


def test_crash_loop_backoff_and_restart_count(cluster: LocalCluster, namespace: str) -> None:
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "crasher"},
            "spec": {
                "restartPolicy": "Always",
                "containers": [
                    {
                        "name": "c",
                        "image": PY,
                        "command": ["python", "-c", "import sys; sys.exit(1)"],
                        "securityContext": RESTRICTED_SC,
                    }
                ],
            },
        },
        namespace,
    )

    def looping() -> bool:
        pod = cluster.get("pod", "crasher", namespace) or {}
        statuses = pod.get("status", {}).get("containerStatuses") or [{}]
        st = statuses[0]
        return st.get("restartCount", 0) >= 2 and (
            st.get("state", {}).get("waiting", {}).get("reason") == "CrashLoopBackOff"
        )

    wait_for(looping, 60, "CrashLoopBackOff with restarts")
    pod = cluster.get("pod", "crasher", namespace)
    assert pod is not None
    last = pod["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert last["exitCode"] == 1


def test_pvc_binds_and_data_outlives_pods(cluster: LocalCluster, namespace: str) -> None:
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
        namespace,
    )
    wait_for(
        lambda: (
            (cluster.get("pvc", "data", namespace) or {}).get("status", {}).get("phase") == "Bound"
        ),
        30,
        "PVC bound",
    )
    pvc = cluster.get("pvc", "data", namespace)
    assert pvc is not None
    assert pvc["spec"]["storageClassName"] == "local-hostpath", "the default StorageClass"
    vol = {
        "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}],
        "securityContext": {"fsGroup": 1000},
        "container": {"volumeMounts": [{"name": "d", "mountPath": "/data"}]},
    }
    cluster.apply(
        job("writer", "open('/data/hello.txt', 'w').write('from the writer')", **vol), namespace
    )
    assert wait_for(lambda: job_condition(cluster, namespace, "writer"), 60, "writer") == "Complete"
    cluster.apply(
        job(
            "reader",
            """
        open('/dev/termination-log', 'w').write(open('/data/hello.txt').read())
    """,
            **vol,
        ),
        namespace,
    )
    assert wait_for(lambda: job_condition(cluster, namespace, "reader"), 60, "reader") == "Complete"
    term = job_pod(cluster, namespace, "reader")["status"]["containerStatuses"][0]["state"]
    assert term["terminated"]["message"] == "from the writer"


def test_service_account_token_has_exactly_its_rbac(cluster: LocalCluster, namespace: str) -> None:
    cluster.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    cluster.kubectl(
        "create", "role", "cm-reader", "-n", namespace, "--verb=get,list", "--resource=configmaps"
    )
    cluster.kubectl(
        "create",
        "rolebinding",
        "cm-reader",
        "-n",
        namespace,
        "--role=cm-reader",
        f"--serviceaccount={namespace}:reader",
    )
    manifest = job(
        "rbac",
        """
        import json
        from kubernetes import client, config
        config.load_incluster_config()
        v1 = client.CoreV1Api()
        ns = open("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read()
        out = {"configmaps": len(v1.list_namespaced_config_map(ns).items)}
        for what, call in [("secrets", lambda: v1.list_namespaced_secret(ns)),
                           ("pods", lambda: v1.list_namespaced_pod(ns)),
                           ("other-ns", lambda: v1.list_namespaced_config_map("default"))]:
            try:
                call()
                out[what] = "allowed"
            except client.ApiException as e:
                out[what] = e.status
        open("/dev/termination-log", "w").write(json.dumps(out))
    """,
        serviceAccountName="reader",
    )
    cluster.apply(manifest, namespace)
    assert wait_for(lambda: job_condition(cluster, namespace, "rbac"), 60, "rbac") == "Complete"
    term = job_pod(cluster, namespace, "rbac")["status"]["containerStatuses"][0]["state"]
    out = json.loads(term["terminated"]["message"])
    assert out["configmaps"] >= 1  # kube-root-ca.crt
    assert out["secrets"] == 403
    assert out["pods"] == 403
    assert out["other-ns"] == 403


def test_deleting_owner_collects_children(cluster: LocalCluster, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "owner", "-n", namespace)
    owner = cluster.get("configmap", "owner", namespace)
    assert owner is not None
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "child",
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "owner",
                        "uid": owner["metadata"]["uid"],
                    }
                ],
            },
        },
        namespace,
    )
    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)
    wait_for(
        lambda: cluster.get("configmap", "child", namespace) is None,
        30,
        "garbage collection of the child",
    )


def test_restricted_namespace_refuses_privileged_pod(cluster: LocalCluster, namespace: str) -> None:
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    bad = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root"},
        "spec": {"containers": [{"name": "c", "image": PY, "command": ["sleep", "1"]}]},
    }
    res = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(bad), check=False)
    assert res.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in res.stderr
    assert "runAsNonRoot" in res.stderr
    good = {
        **bad,
        "spec": {
            "containers": [
                {
                    **bad["spec"]["containers"][0],  # type: ignore[index]
                    "securityContext": RESTRICTED_SC,
                }
            ]
        },
    }
    cluster.apply(good, namespace)


def test_a_container_exit_while_the_apiserver_is_down_is_reported_after(
    cluster: LocalCluster, namespace: str
) -> None:
    """kube-apiserver restarted on the address it had, and the node agent keeps the exit.

    The container exits while the API server is stopped: the agent must hold on to the
    terminal status until the server is back (it used to give up, leaving the pod Running
    for ever), and the restarted server must listen where every client already dials.
    """
    server = cluster.server
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "outlives-api"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": PY,
                    "command": ["python", "-c", "import time, sys; time.sleep(6); sys.exit(3)"],
                    "securityContext": RESTRICTED_SC,
                }
            ],
        },
    }
    cluster.apply(pod, namespace)

    def running() -> bool:
        p = cluster.get("pod", "outlives-api", namespace) or {}
        states = [c.get("state", {}) for c in p.get("status", {}).get("containerStatuses", [])]
        return any("running" in s for s in states)

    wait_for(running, 60, "the container to run")
    cluster._stop("kube-apiserver")
    time.sleep(9)  # the container exits (at 6 s) while the API server is down
    back = time.time()
    cluster.up()
    assert cluster.server == server, "the restarted kube-apiserver moved to another port"

    def terminated() -> dict[str, Any] | None:
        p = cluster.get("pod", "outlives-api", namespace) or {}
        for c in p.get("status", {}).get("containerStatuses", []):
            if "terminated" in c.get("state", {}):
                return dict(c["state"]["terminated"], phase=p["status"].get("phase"))
        return None

    term = wait_for(terminated, 60, "the exit written after the API server came back")
    assert term["exitCode"] == 3
    assert term["phase"] == "Failed"
    finished = dt.datetime.fromisoformat(term["finishedAt"].replace("Z", "+00:00")).timestamp()
    assert finished < back, "the container did not exit while the API server was down"


def test_memory_limit_is_enforced_and_reported_oomkilled(
    cluster: LocalCluster, namespace: str
) -> None:
    """Over its memory limit a container is killed by the kernel, and the status says so."""
    limits = {"resources": {"limits": {"memory": "200Mi"}, "requests": {"memory": "50Mi"}}}
    cluster.apply(
        job("hog", "x = b'x' * (800 * 2**20); print(len(x))", container=limits), namespace
    )
    cluster.apply(
        job("fits", "x = b'x' * (60 * 2**20); print(len(x))", container=limits), namespace
    )
    assert wait_for(lambda: job_condition(cluster, namespace, "hog"), 90, "job hog") == "Failed"
    assert wait_for(lambda: job_condition(cluster, namespace, "fits"), 90, "job fits") == "Complete"
    term = job_pod(cluster, namespace, "hog")["status"]["containerStatuses"][0]["state"]
    assert term["terminated"]["exitCode"] == 137
    assert term["terminated"]["reason"] == "OOMKilled"
    ok = job_pod(cluster, namespace, "fits")["status"]["containerStatuses"][0]["state"]
    assert ok["terminated"]["exitCode"] == 0
