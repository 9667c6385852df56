"""The Helm chart on the local control plane: the operator as a user installs it.

One release, installed once for the module into a namespace that enforces the
"restricted" Pod Security Standard, runs the operator image (which the node agent maps to
``kopf run -m modelcycle_operator`` from the project's virtualenv) under the chart's
ServiceAccount and RBAC. The tests then check the resulting state of the cluster:

- the operator pod is admitted and becomes Ready (restricted securityContext, probes on
  kopf's liveness endpoint);
- an iris ModelCycle in a second restricted namespace reaches Ready=True -- which
  proves that the chart's RBAC is enough for the whole cycle and that everything the
  operator creates is admitted under "restricted";
- ``kubectl auth can-i`` as the ServiceAccount: what it may do and, mostly, what not;
- ``helm upgrade`` with a changed value rolls the operator and keeps the receiver token;
- ``helm uninstall`` leaves the ModelCycles and (crds.keep) the CRD.

The session's ``cluster`` fixture has already applied the CRD (server-side, not by
Helm). The release adopts it (``crds.enabled=true``), so that ``crds.keep`` is tested for
real: Helm owns the CRD and still must not delete it. This module never requests the
``operator`` fixture: two operators would fight over the same ModelCycles.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetest import LocalCluster, wait_for
from localcluster.cluster import binary

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modelcycle-operator"
HELM = binary("helm")
CRD = "modelcycles.modelcycle.dev"
RELEASE = "mc"
FULLNAME = f"{RELEASE}-modelcycle-operator"
READY_TIMEOUT = 240


@dataclass
class Release:
    cluster: LocalCluster
    namespace: str  # the operator's
    workload_namespace: str  # where the ModelCycle runs
    install_output: str = ""

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [str(HELM), "--kubeconfig", str(self.cluster.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=ROOT,
        )
        if check and res.returncode != 0:
            pytest.fail(
                f"helm {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}\n{self.diagnose()}"
            )
        return res

    @property
    def service_account(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{FULLNAME}"

    def operator_pods(self) -> list[dict[str, Any]]:
        res = self.cluster.kubectl(
            "get",
            "pods",
            "-n",
            self.namespace,
            "-l",
            f"app.kubernetes.io/instance={RELEASE}",
            "-o",
            "json",
        )
        return list(json.loads(res.stdout)["items"])

    def ready_operator_pod(self) -> dict[str, Any] | None:
        for pod in self.operator_pods():
            if pod["metadata"].get("deletionTimestamp"):
                continue
            conditions = {
                c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])
            }
            if conditions.get("Ready") == "True":
                return pod
        return None

    def can_i(self, *args: str) -> bool:
        res = self.cluster.kubectl(
            "auth", "can-i", *args, f"--as={self.service_account}", check=False
        )
        answer = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
        assert answer in ("yes", "no"), f"kubectl auth can-i {args}: {res.stdout} {res.stderr}"
        return answer == "yes"

    def diagnose(self) -> str:
        parts = []
        for pod in self.operator_pods():
            name = pod["metadata"]["name"]
            parts.append(f"--- pod {name}: {json.dumps(pod.get('status', {}))[:2000]}")
            parts.append(self.cluster.container_log(self.namespace, name, "operator")[-6000:])
        res = self.cluster.kubectl(
            "get", "events", "-n", self.namespace, "--sort-by=.lastTimestamp", check=False
        )
        parts.append(res.stdout[-3000:])
        mc = self.cluster.get("modelcycle", "iris", self.workload_namespace)
        if mc:
            parts.append(f"--- iris status: {json.dumps(mc.get('status', {}), indent=1)[:4000]}")
        res = self.cluster.kubectl(
            "get", "pods,jobs,pvc", "-n", self.workload_namespace, "-o", "wide", check=False
        )
        parts.append(res.stdout + res.stderr)
        return "\n".join(parts)


def _restricted_namespace(cluster: LocalCluster, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl(
        "label",
        "namespace",
        name,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )
    wait_for(
        lambda: cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
        30,
        f"the default ServiceAccount in {name}",
    )
    return name


@pytest.fixture(scope="module")
def release(cluster: LocalCluster, operator: Any) -> Iterator[Release]:
    if not HELM.exists():
        pytest.fail(f"helm is not built at {HELM} (run `make binaries`)")
    # The session's host-run operator would fight the chart's: it pauses for this module.
    operator.stop()
    try:
        yield from _release(cluster)
    finally:
        operator.start()


def _release(cluster: LocalCluster) -> Iterator[Release]:
    rel = Release(
        cluster,
        _restricted_namespace(cluster, "t-helm-op"),
        _restricted_namespace(cluster, "t-helm-ml"),
    )
    # Let the release adopt the CRD the session applied, so that crds.keep is real.
    cluster.kubectl(
        "annotate",
        "crd",
        CRD,
        f"meta.helm.sh/release-name={RELEASE}",
        f"meta.helm.sh/release-namespace={rel.namespace}",
        "--overwrite",
    )
    cluster.kubectl("label", "crd", CRD, "app.kubernetes.io/managed-by=Helm", "--overwrite")
    installed = False
    try:
        res = rel.helm(
            "install",
            RELEASE,
            str(CHART),
            "--namespace",
            rel.namespace,
            "--set",
            "crds.enabled=true",
            "--set",
            "crds.keep=true",
            "--set",
            "timerSeconds=5",
            "--wait",
            "--timeout",
            "180s",
        )
        installed = True
        rel.install_output = res.stdout
        yield rel
    finally:
        if installed and os.environ.get("MODELCYCLE_KEEP_CLUSTER") != "1":
            rel.helm("uninstall", RELEASE, "--namespace", rel.namespace, check=False)
        # Without an operator nobody would remove kopf's finalizer; let the namespace go.
        for name in ("iris",):
            cluster.kubectl(
                "patch",
                "modelcycle",
                name,
                "-n",
                rel.workload_namespace,
                "--type=merge",
                "-p",
                '{"metadata":{"finalizers":null}}',
                check=False,
            )
        for ns in (rel.workload_namespace, rel.namespace):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        cluster.kubectl(
            "annotate",
            "crd",
            CRD,
            "meta.helm.sh/release-name-",
            "meta.helm.sh/release-namespace-",
            "helm.sh/resource-policy-",
            check=False,
        )


def _assert_hardened(pod: dict[str, Any]) -> None:
    """Beyond what "restricted" admission demands: a read-only root filesystem too."""
    spec = pod["spec"]
    name = pod["metadata"]["name"]
    pod_sc = spec.get("securityContext") or {}
    assert pod_sc.get("runAsNonRoot") is True, name
    for c in spec.get("initContainers", []) + spec["containers"]:
        sc = c.get("securityContext") or {}
        what = f"{name}/{c['name']}"
        assert sc.get("allowPrivilegeEscalation") is False, what
        assert sc.get("readOnlyRootFilesystem") is True, what
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], what
        assert not sc.get("capabilities", {}).get("add"), what
        assert not sc.get("privileged"), what
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        assert seccomp == "RuntimeDefault", what
        assert (sc.get("runAsUser") or pod_sc.get("runAsUser") or 0) != 0, what


def test_operator_pod_is_admitted_under_restricted_and_ready(release: Release) -> None:
    pod = wait_for(release.ready_operator_pod, 120, "a Ready operator pod")
    spec = pod["spec"]
    assert spec["serviceAccountName"] == FULLNAME
    _assert_hardened(pod)
    container = spec["containers"][0]
    assert container["image"] == "ghcr.io/modelcycle/operator:0.1.0"
    assert "--all-namespaces" in container["args"]
    # The namespace enforces "restricted": the pod would not exist otherwise.
    ns = release.cluster.get("namespace", release.namespace)
    assert ns is not None
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert "NOTES:" in release.install_output
    url = f"http://{FULLNAME}-alerts.{release.namespace}.svc:8081/alerts"
    assert url in release.install_output


def test_the_receiver_service_selects_the_operator(release: Release) -> None:
    service = release.cluster.get("service", f"{FULLNAME}-alerts", release.namespace)
    assert service is not None
    assert service["spec"]["ports"][0]["port"] == 8081
    pod = wait_for(release.ready_operator_pod, 120, "a Ready operator pod")
    labels = pod["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def _ready(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any] | None:
    mc = cluster.get("modelcycle", name, namespace)
    if not mc:
        return None
    for c in mc.get("status", {}).get("conditions", []):
        if c["type"] == "Ready" and c["status"] == "True":
            return mc
    return None


def test_a_modelcycle_reaches_ready_with_only_the_charts_rbac(release: Release) -> None:
    wait_for(release.ready_operator_pod, 120, "a Ready operator pod")
    release.cluster.kubectl(
        "apply", "-n", release.workload_namespace, "-f", str(ROOT / "examples" / "iris.yaml")
    )
    deadline = time.monotonic() + READY_TIMEOUT
    mc = None
    while time.monotonic() < deadline and mc is None:
        mc = _ready(release.cluster, release.workload_namespace, "iris")
        if mc is None:
            time.sleep(2)
    if mc is None:
        pytest.fail(f"iris was not Ready within {READY_TIMEOUT}s\n{release.diagnose()}")
    assert mc["status"]["champion"]["version"]
    # Every pod the operator created was admitted under "restricted".
    pods = json.loads(
        release.cluster.kubectl(
            "get", "pods", "-n", release.workload_namespace, "-o", "json"
        ).stdout
    )["items"]
    assert pods
    kinds = set()
    for pod in pods:
        _assert_hardened(pod)
        kinds.add(pod["metadata"]["labels"].get("modelcycle.dev/step"))
    assert {"train", "serving"} <= kinds, kinds  # the Jobs' pods and the serving pods


@pytest.mark.parametrize(
    ("args", "allowed"),
    [
        (("create", "jobs.batch", "-n", "{ml}"), True),
        (("watch", "pods", "-n", "{ml}"), True),
        (("patch", "modelcycles.modelcycle.dev", "--subresource=status", "-n", "{ml}"), True),
        (("patch", "deployments.apps", "-n", "{ml}"), True),
        (("list", "customresourcedefinitions.apiextensions.k8s.io"), True),
        (("get", "secrets", "-n", "{ml}"), False),
        (("get", "secrets", "-n", "kube-system"), False),
        (("get", "secrets", "-n", "{op}"), False),
        (("list", "secrets", "--all-namespaces"), False),
        (("create", "pods", "-n", "{ml}"), False),
        (("create", "pods/exec", "-n", "{ml}"), False),
        (("delete", "modelcycles.modelcycle.dev", "-n", "{ml}"), False),
        (("delete", "namespaces"), False),
        (("create", "clusterrolebindings.rbac.authorization.k8s.io"), False),
        (("update", "customresourcedefinitions.apiextensions.k8s.io"), False),
        (("*", "*"), False),
    ],
)
def test_the_service_account_can_do_what_it_needs_and_no_more(
    release: Release, args: tuple[str, ...], allowed: bool
) -> None:
    concrete = [a.format(ml=release.workload_namespace, op=release.namespace) for a in args]
    assert release.can_i(*concrete) is allowed, concrete


def _token(release: Release) -> str:
    secret = release.cluster.get("secret", f"{FULLNAME}-receiver", release.namespace)
    assert secret is not None
    return base64.b64decode(secret["data"]["token"]).decode()


def _deployment_env(release: Release) -> dict[str, str]:
    deployment = release.cluster.get("deployment", FULLNAME, release.namespace)
    assert deployment is not None
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def test_upgrade_with_a_changed_value_rolls_the_operator_and_keeps_the_token(
    release: Release,
) -> None:
    token = _token(release)
    assert len(token) == 40
    before = {p["metadata"]["uid"] for p in release.operator_pods()}
    release.helm(
        "upgrade",
        RELEASE,
        str(CHART),
        "--namespace",
        release.namespace,
        "--reuse-values",
        "--set",
        "timerSeconds=7",
        "--wait",
        "--timeout",
        "180s",
    )
    assert _deployment_env(release)["MODELCYCLE_TIMER_SECONDS"] == "7"
    pod = wait_for(
        lambda: (p := release.ready_operator_pod()) and p["metadata"]["uid"] not in before and p,
        180,
        "a new Ready operator pod after the upgrade",
    )
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["MODELCYCLE_TIMER_SECONDS"] == "7"
    assert _token(release) == token, "the generated token must survive upgrades"
    history = release.helm("history", RELEASE, "-n", release.namespace, "-o", "yaml").stdout
    assert [h["status"] for h in yaml.safe_load(history)][-1] == "deployed"


def test_uninstall_keeps_the_modelcycles_and_the_crd(release: Release) -> None:
    if release.cluster.get("modelcycle", "iris", release.workload_namespace) is None:
        release.cluster.kubectl(
            "apply", "-n", release.workload_namespace, "-f", str(ROOT / "examples" / "iris.yaml")
        )
    release.helm("uninstall", RELEASE, "--namespace", release.namespace, "--wait")
    assert release.cluster.get("deployment", FULLNAME, release.namespace) is None
    assert release.cluster.get("clusterrole", FULLNAME) is None
    crd = release.cluster.get("crd", CRD)
    assert crd is not None, "crds.keep: the CRD must survive the uninstall"
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert release.cluster.get("modelcycle", "iris", release.workload_namespace) is not None
    # Reinstalling over the kept CRD works (it is still annotated for this release).
    release.helm(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        release.namespace,
        "--set",
        "crds.enabled=true",
        "--wait",
        "--timeout",
        "180s",
    )
    wait_for(release.ready_operator_pod, 120, "a Ready operator pod after reinstalling")
