"""The Helm chart, rendered by the real helm binary and checked without a cluster.

``helm lint`` and ``helm template`` run for the default values and for each supported
value set; bad values must be refused with a message that says what is wrong. The
rendered objects are then read as data: least-privilege RBAC (no wildcards, no Secret
access, Roles per namespace in namespaced mode), a Deployment that passes the
"restricted" Pod Security Standard, the standard labels on every object, the CRD copy
identical to ``crds/``, the operator flags and settings each mode needs, and Prometheus
rules that a real Prometheus accepts and evaluates to alerts labelled for the receiver.

The helm binary is ``localcluster.cluster.binary("helm")`` (built by ``make binaries``);
without it these tests skip with that reason. The Prometheus check also needs the
Prometheus binary (``build-binaries.sh prometheus``).
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster.cluster import BIN, binary, free_port

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modelcycle-operator"
HELM = binary("helm")
KUBE_VERSION = "1.35.4"
RELEASE = "mc"
NAMESPACE = "modelcycle-system"
PROMETHEUS = BIN / "prometheus-v0.316.0"

pytestmark = pytest.mark.skipif(
    not HELM.exists(), reason=f"helm is not built at {HELM} (run `make binaries`)"
)

# Each supported way to install the chart, as --set arguments.
VALUE_SETS: dict[str, list[str]] = {
    "default": [],
    "namespaced": ["watchNamespaces={team-a,team-b}"],
    "prometheus": ["prometheus.enabled=true"],
    "prometheus-namespaced": ["prometheus.enabled=true", "watchNamespaces={team-a}"],
    "existing-secret": ["receiver.existingSecret=my-token", "receiver.existingSecretKey=bearer"],
    "peering": ["replicas=2", "peering.enabled=true"],
    "peering-namespaced": ["replicas=2", "peering.enabled=true", "watchNamespaces={team-a}"],
    "no-crds": ["crds.enabled=false"],
    "crds-not-kept": ["crds.keep=false"],
}

STANDARD_LABELS = {
    "helm.sh/chart": "modelcycle-operator-0.1.0",
    "app.kubernetes.io/name": "modelcycle-operator",
    "app.kubernetes.io/instance": RELEASE,
    "app.kubernetes.io/version": "0.1.0",
    "app.kubernetes.io/managed-by": "Helm",
}


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120, cwd=ROOT)
    if check and res.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{res.stderr}")
    return res


def set_args(sets: list[str]) -> list[str]:
    """--set for each entry; "json:key=value" entries use --set-json (typed numbers)."""
    return [
        arg
        for s in sets
        for arg in (("--set-json", s[5:]) if s.startswith("json:") else ("--set", s))
    ]


_RENDERED: dict[tuple[str, ...], list[dict[str, Any]]] = {}


def render(sets: list[str]) -> list[dict[str, Any]]:
    """Every object ``helm template`` renders for these values (cached per value set)."""
    key = tuple(sets)
    if key not in _RENDERED:
        res = helm(
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--kube-version",
            KUBE_VERSION,
            *set_args(sets),
        )
        _RENDERED[key] = [d for d in yaml.safe_load_all(res.stdout) if d]
    return _RENDERED[key]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return dict(containers[0])


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# --------------------------------------------------------------------------- lint, render


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_lint_passes(name: str) -> None:
    res = helm(
        "lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION, *set_args(VALUE_SETS[name])
    )
    assert "0 chart(s) failed" in res.stdout


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_template_renders_parseable_objects_with_standard_labels(name: str) -> None:
    docs = render(VALUE_SETS[name])
    assert docs
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(doc), doc
        labels = doc["metadata"].get("labels") or {}
        where = f"{doc['kind']} {doc['metadata']['name']}"
        for key, value in STANDARD_LABELS.items():
            assert labels.get(key) == value, f"{where}: label {key}"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", doc["metadata"]["name"]), where
        assert len(doc["metadata"]["name"]) <= 63, where


def test_default_render_has_the_expected_objects() -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in render([]))
    assert kinds == [
        ("ClusterRole", "mc-modelcycle-operator"),
        ("ClusterRoleBinding", "mc-modelcycle-operator"),
        ("CustomResourceDefinition", "modelcycles.modelcycle.dev"),
        ("Deployment", "mc-modelcycle-operator"),
        ("Secret", "mc-modelcycle-operator-receiver"),
        ("Service", "mc-modelcycle-operator-alerts"),
        ("ServiceAccount", "mc-modelcycle-operator"),
    ]


def test_namespaced_objects_live_in_the_release_namespace() -> None:
    for doc in render([]):
        if doc["kind"] in ("Deployment", "Secret", "Service", "ServiceAccount"):
            assert doc["metadata"]["namespace"] == NAMESPACE


SCHEMA_ERRORS = [
    (["unknownKey=1"], "additional properties 'unknownKey' not allowed"),
    (["crds.enable=true"], "additional properties 'enable' not allowed"),
    (["replicas=two"], "/replicas"),
    (["replicas=-1"], "/replicas"),
    (["timerSeconds=0"], "/timerSeconds"),
    (["crds.enabled=yes"], "/crds/enabled"),
    (["watchNamespaces={Not_A_Namespace}"], "/watchNamespaces/0"),
    (["workload.allowedEstimatorModules=null"], "allowedEstimatorModules"),
    (["workload.allowedEstimatorModules={}"], "/workload/allowedEstimatorModules"),
    (["workload.defaultResources.requests.cpu=lots"], "/workload/defaultResources/requests/cpu"),
    (["receiver.port=80"], "/receiver/port"),
    (["prometheus.rules.driftFor=soon"], "/prometheus/rules/driftFor"),
]
# Checks in templates (`fail`): helm lint only reports them (it renders in lint mode).
TEMPLATE_ERRORS = [
    (["replicas=2"], "replicas=2 needs peering.enabled=true"),
    (["serviceAccount.create=false"], "serviceAccount.create=false needs serviceAccount.name"),
]


@pytest.mark.parametrize(("sets", "message"), SCHEMA_ERRORS + TEMPLATE_ERRORS)
def test_bad_values_are_refused_with_the_reason(sets: list[str], message: str) -> None:
    res = helm(
        "template",
        RELEASE,
        str(CHART),
        "--kube-version",
        KUBE_VERSION,
        *set_args(sets),
        check=False,
    )
    assert res.returncode != 0, f"helm template accepted {sets}"
    assert message in res.stderr
    lint = helm("lint", str(CHART), "--kube-version", KUBE_VERSION, *set_args(sets), check=False)
    assert message in lint.stdout + lint.stderr
    if (sets, message) in SCHEMA_ERRORS:
        assert lint.returncode != 0, f"helm lint accepted {sets}"


def test_numbers_that_helm_set_passes_as_strings_are_refused() -> None:
    """`--set x=0.85` is a string to helm; the schema says to use --set-json or a file."""
    sets = ["prometheus.rules.liveAccuracyThreshold=0.85"]
    res = helm(
        "template",
        RELEASE,
        str(CHART),
        "--kube-version",
        KUBE_VERSION,
        *set_args(sets),
        check=False,
    )
    assert "/prometheus/rules/liveAccuracyThreshold': got string, want number" in res.stderr


# --------------------------------------------------------------------------- values and schema


def _schema() -> dict[str, Any]:
    return dict(json.loads((CHART / "values.schema.json").read_text()))


def _values() -> dict[str, Any]:
    return dict(yaml.safe_load((CHART / "values.yaml").read_text()))


# Objects whose keys are the user's (maps of strings) or Kubernetes' own (passed through).
FREE_FORM = {
    "global",
    "affinity",
    "tolerations[]",
    "extraEnv[]",
}


def _objects(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if schema.get("type") == "object":
        yield path, schema
        for key, sub in (schema.get("properties") or {}).items():
            yield from _objects(sub, f"{path}.{key}" if path else key)
    if isinstance(schema.get("items"), dict):
        yield from _objects(schema["items"], f"{path}[]")
    for sub in schema.get("anyOf", []):
        yield from _objects(sub, path)


def test_schema_closes_every_object_level() -> None:
    for path, obj in _objects(_schema()):
        if path in FREE_FORM:
            continue
        extra = obj.get("additionalProperties")
        is_string_map = extra == {"type": "string"} and not obj.get("properties")
        assert extra is False or is_string_map, f"{path or '<root>'}: additionalProperties"


def _leaves(value: Any, path: str = "") -> Iterator[str]:
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            yield from _leaves(sub, f"{path}.{key}" if path else key)
    else:
        yield path


def test_values_yaml_and_the_schema_name_the_same_keys() -> None:
    schema = _schema()
    values = _values()
    assert set(schema["properties"]) - {"global"} == set(values)
    for leaf in _leaves(_values()):
        node = schema
        for key in leaf.split("."):
            props = node.get("properties") or {}
            if key in props:
                node = props[key]
            else:
                assert node.get("additionalProperties") not in (None, False), leaf
                break


def test_every_value_is_commented() -> None:
    """Each key has a comment just above it, or sits inside a commented block."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    commented: list[tuple[int, bool]] = []  # (indent, has a comment) of the enclosing keys
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z][\w-]*):", line)
        if not m:
            continue
        indent = len(m.group(1))
        while commented and commented[-1][0] >= indent:
            commented.pop()
        above = lines[i - 1].strip() if i else ""
        has_comment = above.startswith("#")
        nxt = next((n for n in lines[i + 1 :] if n.strip()), "")
        is_section = line.rstrip().endswith(":") and len(nxt) - len(nxt.lstrip()) > indent
        if not is_section:
            assert has_comment or any(c for _, c in commented), (
                f"values.yaml:{i + 1}: {line.strip()} has no comment"
            )
        commented.append((indent, has_comment))


# --------------------------------------------------------------------------- RBAC


def _rules(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in ("ClusterRole", "Role"):
            for rule in doc.get("rules") or []:
                yield doc, rule


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_rbac_has_no_wildcards_and_no_secret_access(name: str) -> None:
    docs = render(VALUE_SETS[name])
    assert list(_rules(docs))
    for doc, rule in _rules(docs):
        where = f"{doc['kind']} {doc['metadata']['name']}: {rule}"
        for field in ("verbs", "resources", "apiGroups"):
            assert "*" not in rule.get(field, []), where
            assert not any("*" in item for item in rule.get(field, [])), where
        assert "nonResourceURLs" not in rule, where
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), where
        if "secrets" in rule["resources"]:
            # Only reads of named Secrets would ever be acceptable; today there are none.
            assert rule["verbs"] == ["get"], where
            assert rule.get("resourceNames"), where
        assert not {"roles", "clusterroles", "rolebindings", "clusterrolebindings"} & set(
            rule["resources"]
        ), where


def test_rbac_does_not_grant_secrets_at_all() -> None:
    """The token reaches the operator as a mounted file; the kubelet reads the Secret."""
    for name, sets in VALUE_SETS.items():
        for _, rule in _rules(render(sets)):
            assert "secrets" not in rule["resources"], name


def _grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


NEEDED = (
    {("modelcycle.dev", "modelcycles", v) for v in ("get", "list", "watch", "patch")}
    | {("modelcycle.dev", "modelcycles/status", v) for v in ("get", "patch", "update")}
    | {("", "events", "create"), ("events.k8s.io", "events", "create")}
    | {("batch", "jobs", v) for v in ("create", "get", "list", "watch")}
    | {("", "pods", v) for v in ("get", "list", "watch")}
    | {("", "persistentvolumeclaims", v) for v in ("create", "get")}
    | {("apps", "deployments", v) for v in ("get", "list", "watch", "patch")}
    | {("", "services", v) for v in ("get", "patch")}
)
KOPF_CLUSTER = {
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
}


def test_clusterwide_mode_is_one_clusterrole_with_what_the_operator_needs() -> None:
    docs = render([])
    assert not of_kind(docs, "Role")
    assert not of_kind(docs, "RoleBinding")
    grants = _grants(one(docs, "ClusterRole")["rules"])
    assert grants >= NEEDED | KOPF_CLUSTER
    # Nothing the operator never does.
    assert not {g for g in grants if g[2] == "deletecollection"}
    assert ("", "pods", "create") not in grants
    assert ("", "pods", "delete") not in grants
    assert not {g for g in grants if g[1] == "namespaces"}, "cluster-wide kopf needs none"
    assert not {g for g in grants if g[0] == "kopf.dev"}, "no peering without peering"
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == one(docs, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "mc-modelcycle-operator", "namespace": NAMESPACE}
    ]


def test_namespaced_mode_renders_a_role_per_namespace_and_a_minimal_clusterrole() -> None:
    docs = render(VALUE_SETS["namespaced"])
    roles = {d["metadata"]["namespace"]: d for d in of_kind(docs, "Role")}
    bindings = {d["metadata"]["namespace"]: d for d in of_kind(docs, "RoleBinding")}
    assert set(roles) == set(bindings) == {"team-a", "team-b"}
    for ns, role in roles.items():
        assert _grants(role["rules"]) >= NEEDED, ns
        assert bindings[ns]["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        }
        assert bindings[ns]["subjects"][0]["namespace"] == NAMESPACE
    cluster_grants = _grants(one(docs, "ClusterRole")["rules"])
    assert cluster_grants == KOPF_CLUSTER | {
        ("", "namespaces", "list"),
        ("", "namespaces", "watch"),
    }


def test_every_rule_says_who_needs_it_and_why() -> None:
    text = "\n".join(
        (CHART / "templates" / name).read_text() for name in ("rbac.yaml", "_helpers.tpl")
    )
    for i, line in enumerate(text.splitlines()):
        if line.strip().startswith("- apiGroups:"):
            block = text.splitlines()[max(0, i - 8) : i]
            comments = [b for b in block if b.strip().startswith("#")]
            assert comments, f"rule without a comment: {line}"
            assert any("Framework:" in c or "Application:" in c for c in comments), line


@pytest.mark.parametrize("name", ["peering", "peering-namespaced"])
def test_peering_rbac_is_limited_to_the_named_peering_object(name: str) -> None:
    docs = render(VALUE_SETS[name])
    peering_rules = [r for _, r in _rules(docs) if r["apiGroups"] == ["kopf.dev"]]
    assert peering_rules
    for rule in peering_rules:
        if set(rule["verbs"]) - {"list", "watch"}:
            assert rule["resourceNames"] == ["modelcycle-operator"]


# --------------------------------------------------------------------------- the Deployment

ALLOWED_RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def assert_restricted(pod: dict[str, Any]) -> None:
    """The checks of the "restricted" Pod Security Standard (v1.28+), as the API applies them."""
    psc = pod.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(field), field
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        assert kinds <= ALLOWED_RESTRICTED_VOLUMES, volume
    containers = pod["containers"] + pod.get("initContainers", [])
    for c in containers:
        sc = c.get("securityContext") or {}
        merged = {**psc, **sc}
        assert merged.get("runAsNonRoot") is True, c["name"]
        assert merged.get("runAsUser", 1) != 0, c["name"]
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        assert seccomp in ("RuntimeDefault", "Localhost"), c["name"]
        assert sc.get("allowPrivilegeEscalation") is False, c["name"]
        assert not sc.get("privileged"), c["name"]
        caps = sc.get("capabilities") or {}
        assert "ALL" in caps.get("drop", []), c["name"]
        assert set(caps.get("add", [])) <= {"NET_BIND_SERVICE"}, c["name"]
        for port in c.get("ports", []):
            assert not port.get("hostPort"), c["name"]


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_deployment_is_restricted_and_read_only(name: str) -> None:
    docs = render(VALUE_SETS[name])
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert_restricted(pod)
    assert pod["securityContext"]["runAsUser"] == 1000
    c = operator_container(docs)
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert c["resources"]["requests"]
    assert c["resources"]["limits"]["memory"]


def test_the_restricted_check_is_not_vacuous() -> None:
    pod = one(render([]), "Deployment")["spec"]["template"]["spec"]
    for breaking in (
        {"hostNetwork": True},
        {"volumes": [{"name": "h", "hostPath": {"path": "/"}}]},
    ):
        with pytest.raises(AssertionError):
            assert_restricted({**pod, **breaking})
    for breaking in (
        {"allowPrivilegeEscalation": True},
        {"runAsUser": 0},
        {"capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}},
        {"seccompProfile": {"type": "Unconfined"}},
        {"privileged": True},
    ):
        c = dict(pod["containers"][0])
        c["securityContext"] = {**c["securityContext"], **breaking}
        with pytest.raises(AssertionError):
            assert_restricted({**pod, "containers": [c]})


def test_probes_use_kopfs_liveness_endpoint() -> None:
    c = operator_container(render([]))
    assert "--liveness=http://0.0.0.0:8080/healthz" in c["args"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"healthz": 8080, "alerts": 8081}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "healthz"}, probe


def test_clusterwide_flags_and_settings() -> None:
    docs = render([])
    c = operator_container(docs)
    assert "command" not in c, "the image's ENTRYPOINT runs (see test_dockerfiles.py)"
    assert c["args"][:2] == ["--all-namespaces", "--standalone"]
    env = env_of(c)
    assert env["MODELCYCLE_NAMESPACES"] == ""
    assert env["MODELCYCLE_IMAGE"] == "ghcr.io/modelcycle/trainer:0.1.0"
    assert env["MODELCYCLE_ALLOWED_ESTIMATOR_MODULES"] == "sklearn"
    assert env["MODELCYCLE_TIMER_SECONDS"] == "10"
    assert env["MODELCYCLE_RECEIVER_PORT"] == "8081"
    assert env["MODELCYCLE_RECEIVER_TOKEN_FILE"] == "/var/run/secrets/modelcycle/receiver/token"
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert c["image"] == "ghcr.io/modelcycle/operator:0.1.0"
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_namespaced_flags_and_settings_agree() -> None:
    c = operator_container(render(VALUE_SETS["namespaced"]))
    assert [a for a in c["args"] if a.startswith("--namespace")] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]
    assert "--all-namespaces" not in c["args"]
    assert env_of(c)["MODELCYCLE_NAMESPACES"] == "team-a,team-b"


def test_settings_follow_the_values() -> None:
    c = operator_container(
        render(
            [
                "workload.image.tag=9.9.9",
                "workload.allowedEstimatorModules={sklearn,xgboost}",
                "timerSeconds=5",
                "workload.defaultResources.limits.cpu=2",
                "image.tag=1.2.3",
                "extraArgs={--verbose}",
            ]
        )
    )
    env = env_of(c)
    assert env["MODELCYCLE_IMAGE"] == "ghcr.io/modelcycle/trainer:9.9.9"
    assert env["MODELCYCLE_ALLOWED_ESTIMATOR_MODULES"] == "sklearn,xgboost"
    assert env["MODELCYCLE_TIMER_SECONDS"] == "5"
    assert env["MODELCYCLE_DEFAULT_CPU_LIMIT"] == "2"
    assert c["image"] == "ghcr.io/modelcycle/operator:1.2.3"
    assert c["args"][-1] == "--verbose"


@pytest.mark.parametrize(
    ("name", "kind"), [("peering", "ClusterKopfPeering"), ("peering-namespaced", "KopfPeering")]
)
def test_peering_runs_each_pod_with_its_own_priority(name: str, kind: str) -> None:
    docs = render(VALUE_SETS[name])
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    c = operator_container(docs)
    assert "--peering=modelcycle-operator" in c["args"]
    assert "--standalone" not in c["args"]
    shell, flag, script, argv0 = c["command"]
    assert (shell, flag, argv0) == ("/bin/sh", "-c", "kopf")
    assert script.startswith("exec kopf run -m modelcycle_operator ")
    assert '--priority="$(shuf -i 1-32767 -n 1)"' in script
    assert script.endswith('"$@"')
    peerings = of_kind(docs, kind)
    assert [p["metadata"]["name"] for p in peerings] == ["modelcycle-operator"]
    if kind == "KopfPeering":
        assert peerings[0]["metadata"]["namespace"] == "team-a"


def test_the_peering_priority_script_runs() -> None:
    """The wrapper, run by a real shell, execs kopf with a priority and the args."""
    c = operator_container(render(VALUE_SETS["peering"]))
    script = c["command"][2].replace("exec kopf", "exec echo kopf", 1)
    out = subprocess.run(
        ["/bin/sh", "-c", script, "kopf", *c["args"]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out[:4] == ["kopf", "run", "-m", "modelcycle_operator"]
    assert re.fullmatch(r"--priority=\d+", out[4])
    assert 1 <= int(out[4].split("=")[1]) <= 32767
    assert out[5:] == c["args"]


def test_kopf_peering_crds_ship_in_the_crds_directory() -> None:
    docs = [d for d in yaml.safe_load_all((CHART / "crds" / "kopf-peering.yaml").read_text()) if d]
    assert {(d["metadata"]["name"], d["spec"]["scope"]) for d in docs} == {
        ("clusterkopfpeerings.kopf.dev", "Cluster"),
        ("kopfpeerings.kopf.dev", "Namespaced"),
    }
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == ["kopf-peering.yaml"]


# --------------------------------------------------------------------------- receiver


def test_receiver_secret_service_and_mount() -> None:
    docs = render([])
    secret = one(docs, "Secret")
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert re.fullmatch(r"[A-Za-z0-9]{40}", token)
    service = one(docs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "alerts", "port": 8081, "targetPort": "alerts", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == {
        "app.kubernetes.io/name": "modelcycle-operator",
        "app.kubernetes.io/instance": RELEASE,
    }
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert service["spec"]["selector"].items() <= pod_labels(docs).items()
    volume = next(v for v in pod["volumes"] if v["name"] == "receiver-token")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert volume["secret"]["items"] == [{"key": "token", "path": "token"}]


def pod_labels(docs: list[dict[str, Any]]) -> dict[str, str]:
    return dict(one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"])


def test_secret_generation_keeps_the_token_across_upgrades() -> None:
    text = (CHART / "templates" / "secret.yaml").read_text()
    assert "lookup" in text
    assert "randAlphaNum 40" in text


def test_existing_secret_is_used_and_nothing_is_generated() -> None:
    docs = render(VALUE_SETS["existing-secret"])
    assert not of_kind(docs, "Secret")
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "receiver-token")
    assert volume["secret"]["secretName"] == "my-token"
    assert volume["secret"]["items"] == [{"key": "bearer", "path": "token"}]


def notes(tmp_path: Path, sets: list[str]) -> str:
    """NOTES.txt as `helm install` prints it, rendered offline through a wrapper template."""
    chart = tmp_path / "chart"
    if not chart.exists():
        shutil.copytree(CHART, chart)
        (chart / "templates" / "zz-notes.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: |\n"
            '    {{- include (print $.Template.BasePath "/NOTES.txt") . | nindent 4 }}\n'
        )
    res = helm(
        "template",
        RELEASE,
        str(chart),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
        "--show-only",
        "templates/zz-notes.yaml",
        *set_args(sets),
    )
    return str(yaml.safe_load(res.stdout)["data"]["notes"])


def test_notes_say_what_to_do_next(tmp_path: Path) -> None:
    text = notes(tmp_path, [])
    assert "examples/iris.yaml" in text
    assert "kubectl -n default get mc -w" in text
    assert "http://mc-modelcycle-operator-alerts.modelcycle-system.svc:8081/alerts" in text
    assert "pod-security.kubernetes.io/enforce=restricted" in text
    assert "kubectl -n team-a get mc -w" in notes(tmp_path, VALUE_SETS["namespaced"])
    assert "install the ModelCycle CRD yourself" in notes(tmp_path, VALUE_SETS["no-crds"])


def test_alertmanager_example_points_at_the_receiver() -> None:
    text = (CHART / "examples" / "alertmanager.yaml").read_text()
    config = yaml.safe_load(text)
    hook = next(r for r in config["receivers"] if r["name"] == "modelcycle")["webhook_configs"][0]
    assert hook["url"] == "http://RELEASE-modelcycle-operator-alerts.NAMESPACE.svc:8081/alerts"
    assert hook["http_config"]["authorization"]["type"] == "Bearer"
    assert hook["http_config"]["authorization"]["credentials_file"].endswith("/token")
    route = config["route"]["routes"][0]
    assert {"namespace", "modelcycle"} <= set(route["group_by"])
    # The same Service name the chart renders for a release called RELEASE.
    service = one(render([]), "Service")["metadata"]["name"]
    assert service.replace(RELEASE, "RELEASE", 1) + ".NAMESPACE.svc" in hook["url"]


# --------------------------------------------------------------------------- the CRD


def test_crd_copy_is_identical_to_the_repository_crd() -> None:
    source = (ROOT / "crds" / "modelcycle.dev_modelcycles.yaml").read_bytes()
    copy = (CHART / "files" / "crds" / "modelcycle.dev_modelcycles.yaml").read_bytes()
    assert copy == source, (
        "run: cp crds/modelcycle.dev_modelcycles.yaml charts/modelcycle-operator/files/crds/"
    )


def test_rendered_crd_is_the_source_with_labels_and_keep_policy() -> None:
    source = yaml.safe_load((ROOT / "crds" / "modelcycle.dev_modelcycles.yaml").read_text())
    crd = one(render([]), "CustomResourceDefinition")
    assert crd["spec"] == source["spec"]
    assert crd["metadata"]["name"] == source["metadata"]["name"]
    assert crd["metadata"]["labels"].items() >= source["metadata"]["labels"].items()
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    not_kept = one(render(VALUE_SETS["crds-not-kept"]), "CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in (not_kept["metadata"].get("annotations") or {})
    assert not of_kind(render(VALUE_SETS["no-crds"]), "CustomResourceDefinition")


# --------------------------------------------------------------------------- Prometheus


def test_podmonitor_selects_the_serving_pods() -> None:
    docs = render(VALUE_SETS["prometheus"])
    pm = one(docs, "PodMonitor")
    assert pm["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/managed-by": "modelcycle-operator",
        "modelcycle.dev/step": "serving",
    }
    assert pm["spec"]["namespaceSelector"] == {"any": True}
    endpoint = pm["spec"]["podMetricsEndpoints"][0]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    assert {
        "sourceLabels": ["__meta_kubernetes_pod_label_modelcycle_dev_name"],
        "targetLabel": "modelcycle",
        "action": "replace",
    } in endpoint["relabelings"]
    namespaced = one(render(VALUE_SETS["prometheus-namespaced"]), "PodMonitor")
    assert namespaced["spec"]["namespaceSelector"] == {"matchNames": ["team-a"]}
    assert not of_kind(render([]), "PodMonitor")
    assert not of_kind(render([]), "PrometheusRule")


def _rules_of(sets: list[str]) -> dict[str, dict[str, Any]]:
    rule = one(render(sets), "PrometheusRule")
    return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}


def test_prometheus_rules_name_the_modelcycle() -> None:
    rules = _rules_of(VALUE_SETS["prometheus"])
    assert set(rules) == {"ModelCycleLiveAccuracyLow", "ModelCycleInputDrift"}
    acc = rules["ModelCycleLiveAccuracyLow"]
    assert "modelcycle_live_accuracy" in acc["expr"]
    assert acc["expr"].endswith("< 0.7")
    assert acc["for"] == "5m"
    assert "modelcycle_feature_drift_pvalue" in rules["ModelCycleInputDrift"]["expr"]
    for rule in rules.values():
        assert "by (namespace, modelcycle)" in rule["expr"]
        assert "{{ $labels.modelcycle }}" in rule["annotations"]["summary"]
        assert rule["labels"]["severity"] == "warning"
    custom = _rules_of(
        [*VALUE_SETS["prometheus"], "json:prometheus.rules.liveAccuracyThreshold=0.85"]
    )
    assert custom["ModelCycleLiveAccuracyLow"]["expr"].endswith("< 0.85")


class _Metrics(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


# Two ModelCycles: "good" (accurate, inputs as in training) and "bad" (inaccurate, 3 of 4
# features drifted). "bad" comes with the label a generic labelmap produces, "good" with
# the PodMonitor's `modelcycle` label: the rules must handle both.
METRICS = b"""
modelcycle_live_accuracy{model="good",version="1-a"} 0.96
modelcycle_live_accuracy{model="bad",version="1-b"} 0.41
modelcycle_feature_drift_pvalue{model="good",feature="f0"} 0.40
modelcycle_feature_drift_pvalue{model="good",feature="f1"} 0.03
modelcycle_feature_drift_pvalue{model="good",feature="f2"} 0.70
modelcycle_feature_drift_pvalue{model="good",feature="f3"} 0.55
modelcycle_feature_drift_pvalue{model="bad",feature="f0"} 0.0001
modelcycle_feature_drift_pvalue{model="bad",feature="f1"} 0.002
modelcycle_feature_drift_pvalue{model="bad",feature="f2"} 0.0
modelcycle_feature_drift_pvalue{model="bad",feature="f3"} 0.30
"""


@contextlib.contextmanager
def _prometheus(tmp_path: Path, rules: dict[str, Any]) -> Iterator[int]:
    handler = type("H", (_Metrics,), {"body": METRICS.lstrip()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = free_port()
    target = f"127.0.0.1:{server.server_address[1]}"
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    # Both series sets come from one target; relabelling gives each its ModelCycle the
    # two ways a scrape config may: `modelcycle` (the PodMonitor's) or
    # `modelcycle_dev_name` (a labelmap of the pod labels).
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yml")],
        "scrape_configs": [
            {
                "job_name": "serving",
                "static_configs": [
                    {"targets": [target], "labels": {"namespace": "ns1", "pod": "p1"}}
                ],
                "metric_relabel_configs": [
                    {
                        "source_labels": ["model"],
                        "regex": "good",
                        "target_label": "modelcycle",
                        "replacement": "good",
                    },
                    {
                        "source_labels": ["model"],
                        "regex": "bad",
                        "target_label": "modelcycle_dev_name",
                        "replacement": "bad",
                    },
                ],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    try:
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        server.shutdown()
        server.server_close()


def _get(port: int, path: str, **query: str) -> Any:
    url = f"http://127.0.0.1:{port}{path}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


@pytest.mark.skipif(not PROMETHEUS.exists(), reason=f"Prometheus is not built at {PROMETHEUS}")
def test_a_real_prometheus_loads_the_rules_and_they_fire_for_the_right_modelcycle(
    tmp_path: Path,
) -> None:
    rule = one(render(VALUE_SETS["prometheus"]), "PrometheusRule")
    rules = {"groups": rule["spec"]["groups"]}
    exprs = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    with _prometheus(tmp_path, rules) as port:
        deadline = time.monotonic() + 60
        loaded: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                loaded = _get(port, "/api/v1/rules")["data"]["groups"]
                results = {
                    alert: _get(port, "/api/v1/query", query=expr)["data"]["result"]
                    for alert, expr in exprs.items()
                }
                if all(results.values()):
                    break
            time.sleep(0.5)
        else:
            log = (tmp_path / "prometheus.log").read_text(errors="replace")[-3000:]
            pytest.fail(f"the alert expressions never returned a result; prometheus log:\n{log}")
    assert [r["health"] for g in loaded for r in g["rules"]] == ["ok", "ok"]
    for alert, result in results.items():
        metrics = [r["metric"] for r in result]
        assert metrics == [{"namespace": "ns1", "modelcycle": "bad"}], alert
    # 3 of the 4 "bad" features are below 0.05 / 4.
    assert float(results["ModelCycleInputDrift"][0]["value"][1]) == pytest.approx(0.75)
    assert float(results["ModelCycleLiveAccuracyLow"][0]["value"][1]) == pytest.approx(0.41)


# --------------------------------------------------------------------------- kind and CI


def _value_keys() -> set[str]:
    return set(_leaves(_values()))


@pytest.mark.parametrize(
    "path", [ROOT / "hack" / "kind-demo.sh", ROOT / ".github" / "workflows" / "kind-e2e.yaml"]
)
def test_kind_scripts_set_only_values_the_chart_has(path: Path) -> None:
    text = path.read_text()
    keys = re.findall(r"--set(?:-string)?[ =]([A-Za-z][\w.]*)=", text)
    assert keys, f"{path.name} sets no chart values"
    known = _value_keys()
    for key in keys:
        assert key in known, f"{path.name}: --set {key} is not in values.yaml"
    assert "charts/modelcycle-operator" in text
    assert "examples/iris.yaml" in text
