"""Closing the loop on the local control plane: serve, observe, trigger, retrain.

Two ModelCycles share one namespace for the whole module (a cycle takes 15-30 s here, so
the assertions reuse them in file order; each test still starts from whatever state the
previous left and asserts relative to it):

- ``looped`` runs the built-in monitor (every 5 s, minAccuracy 0.8 after 20 samples):
  drifted requests make it ``Degraded=True, DriftDetected``; feedback that contradicts the
  predictions makes it ``AccuracyDropped`` and, with ``retrain`` on, starts cycle 2 by
  itself (trigger ``Monitor``) on the data plus the feedback; at the end a cron schedule
  starts a cycle (trigger ``Schedule``).
- ``alerted`` is driven through the operator's alert receiver: hand-made Alertmanager
  payloads (auth, malformed bodies, dedup, cooldown, resolved, unknown targets), then a
  real Prometheus scraping the serving pods and a real Alertmanager firing a rule into it.

The serving pods are reached by pod IP (no kube-proxy here); the receiver listens on the
host (``operator.receiver_url``, token ``operator.token``, from ``tests/conftest.py``).
Every wait is bounded and explains itself with the object's status and the operator log.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kubetest import condition
from localcluster.monitoring import Monitoring

pytestmark = pytest.mark.integration

LOOPED = "looped"
ALERTED = "alerted"
CYCLE_TIMEOUT = 240.0
NAME_LABEL = "modelcycle.dev/name"
VERSION_ANNOTATION = "modelcycle.dev/model-version"
# Iris-like rows (one per class) and feature spreads, for predictions and shifted inputs.
IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
IRIS_STD = [0.83, 0.43, 1.76, 0.76]
IRIS_NAMES = {"setosa": 0, "versicolor": 1, "virginica": 2}
FINISHED = {"Serving", "Rejected", "Failed"}


# --- helpers ------------------------------------------------------------------------------


def spec(**monitoring: Any) -> dict[str, Any]:
    return {
        "data": {"builtin": {"name": "iris"}, "seed": 42, "includeFeedback": True},
        "training": {
            "estimator": "sklearn.linear_model.LogisticRegression",
            "parameters": {"max_iter": 500},
            "activeDeadlineSeconds": 300,
            "backoffLimit": 0,
        },
        "evaluation": {"metric": "accuracy", "threshold": 0.8},
        "serving": {"replicas": 1, "progressDeadlineSeconds": 120},
        "monitoring": monitoring,
    }


def get_mc(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    mc = cluster.get("modelcycle", name, namespace)
    assert mc is not None, f"ModelCycle {namespace}/{name} is gone"
    return mc


def status_of(mc: dict[str, Any]) -> dict[str, Any]:
    return dict(mc.get("status") or {})


def patch_spec(cluster: Any, namespace: str, name: str, patch: dict[str, Any]) -> None:
    cluster.kubectl(
        "patch", "modelcycle", name, "-n", namespace, "--type", "merge",
        "-p", json.dumps({"spec": patch}),
    )  # fmt: skip


class Waiter:
    """Polls one ModelCycle; a timeout shows its status, its pods and the operator log."""

    def __init__(self, cluster: Any, operator: Any, namespace: str, name: str) -> None:
        self.cluster, self.operator, self.namespace, self.name = cluster, operator, namespace, name

    def explain(self) -> str:
        mc = self.cluster.get("modelcycle", self.name, self.namespace)
        status = json.dumps((mc or {}).get("status"), indent=1)[:5000]
        pods = self.cluster.kubectl(
            "get", "pods,jobs", "-n", self.namespace, "-o", "wide", check=False
        ).stdout
        log = "\n".join(self.operator.log().splitlines()[-50:])
        return f"--- {self.namespace}/{self.name}:\n{status}\n--- pods:\n{pods}\n--- log:\n{log}"

    def until(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        what: str,
        timeout: float = CYCLE_TIMEOUT,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            mc = get_mc(self.cluster, self.namespace, self.name)
            if predicate(mc):
                return mc
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:.0f} s waiting for {self.name}: {what}\n"
                    f"{self.explain()}"
                )
            time.sleep(1.0)


def ready_at(cycle: int) -> Callable[[dict[str, Any]], bool]:
    def predicate(mc: dict[str, Any]) -> bool:
        status = status_of(mc)
        return (
            condition(mc, "Ready").get("status") == "True"
            and status.get("step") == "Serving"
            and (status.get("champion") or {}).get("cycle") == cycle
        )

    return predicate


def finished(cycle: int) -> Callable[[dict[str, Any]], bool]:
    def predicate(mc: dict[str, Any]) -> bool:
        status = status_of(mc)
        history = status.get("history") or []
        return (
            status.get("cycle") == cycle
            and status.get("step") in FINISHED
            and bool(history)
            and history[-1].get("cycle") == cycle
        )

    return predicate


def started(after: int, trigger: str) -> Callable[[dict[str, Any]], bool]:
    def predicate(mc: dict[str, Any]) -> bool:
        status = status_of(mc)
        return (status.get("cycle") or 0) > after and (status.get("lastTrigger") or {}).get(
            "type"
        ) == trigger

    return predicate


def serving_ip(cluster: Any, namespace: str, name: str, version: str) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        selector = f"{NAME_LABEL}={name},modelcycle.dev/step=serving"
        pods = cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json")
        for pod in json.loads(pods.stdout).get("items") or ():
            meta, st = pod["metadata"], pod.get("status") or {}
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in st.get("conditions") or ()
            )
            if (
                ready
                and st.get("podIP")
                and not meta.get("deletionTimestamp")
                and (meta.get("annotations") or {}).get(VERSION_ANNOTATION) == version
            ):
                return str(st["podIP"])
        time.sleep(0.5)
    raise AssertionError(f"no ready serving pod of {namespace}/{name} at {version}")


def post(
    url: str, body: Any, token: str | None = None, raw: bytes | None = None
) -> tuple[int, dict[str, Any]]:
    data = raw if raw is not None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        text = exc.read()
        try:
            return exc.code, json.loads(text or b"{}")
        except ValueError:
            return exc.code, {"raw": text.decode(errors="replace")}


def as_classes(data: list[Any]) -> list[int]:
    flat: list[Any] = []
    for item in data:
        flat.extend(item if isinstance(item, list) else [item])
    return [IRIS_NAMES[x] if isinstance(x, str) and x in IRIS_NAMES else int(x) for x in flat]


def predict(ip: str, name: str, rows: list[list[float]], request_id: str) -> list[int]:
    body = {
        "id": request_id,
        "inputs": [{"name": "input-0", "shape": [len(rows), 4], "datatype": "FP64", "data": rows}],
    }
    code, answer = post(f"http://{ip}:8080/v2/models/{name}/infer", body)
    assert code == 200, answer
    return as_classes(answer["outputs"][0]["data"])


def contradict(ip: str, name: str, n: int) -> int:
    """Predict ``n`` iris rows, then send feedback that every prediction was wrong."""
    request_id = f"wrong-{uuid.uuid4().hex[:8]}"
    rows = [IRIS_ROWS[i % 3] for i in range(n)]
    predictions = predict(ip, name, rows, request_id)
    wrong = [(p + 1) % 3 for p in predictions]
    code, answer = post(
        f"http://{ip}:8080/v2/models/{name}/feedback", {"id": request_id, "labels": wrong}
    )
    assert code == 200, answer
    return int(answer["recorded"])


def live_metric(ip: str, metric: str) -> float | None:
    with urllib.request.urlopen(f"http://{ip}:8080/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(metric + "{"):
                return float(line.rsplit(" ", 1)[1])
    return None


def snapshot(cluster: Any, namespace: str, name: str, cycle: int) -> dict[str, Any]:
    """The cycle's data snapshot, read from the artifact volume's host directory."""
    pvc = cluster.get("persistentvolumeclaim", f"{name}-artifacts", namespace)
    assert pvc is not None
    pv = cluster.get("persistentvolume", pvc["spec"]["volumeName"])
    assert pv is not None
    root = Path(pv["spec"].get("hostPath", {}).get("path") or pv["spec"]["local"]["path"])
    data: dict[str, Any] = json.loads(
        (root / "cycles" / str(cycle) / "data" / "snapshot.json").read_text()
    )
    return data


def assert_verdict_matches_metrics(mc: dict[str, Any], cycle: int) -> dict[str, Any]:
    status = status_of(mc)
    entry = status["history"][-1]
    assert entry["cycle"] == cycle
    threshold = mc["spec"]["evaluation"]["threshold"]
    score = entry.get("score")
    assert isinstance(score, float), entry
    if entry["verdict"] == "Promoted":
        assert score >= threshold, entry
        assert status["champion"]["cycle"] == cycle
    else:
        assert entry["verdict"] == "Rejected", entry
        assert score < threshold, entry
        assert status["champion"]["cycle"] < cycle
    return dict(entry)


def alert(
    name: str, namespace: str, *, fingerprint: str, starts: str, status: str = "firing"
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "ModelAccuracyLow", "modelcycle": name, "namespace": namespace},
        "annotations": {"summary": "live accuracy below 0.8"},
        "startsAt": starts,
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-01-01T00:10:00Z",
        "generatorURL": "http://prometheus.example/graph",
        "fingerprint": fingerprint,
    }


def payload(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="ModelAccuracyLow"}',
        "truncatedAlerts": 0,
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "receiver": "modelcycle",
        "groupLabels": {"alertname": "ModelAccuracyLow"},
        "commonLabels": {"alertname": "ModelAccuracyLow"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example",
        "alerts": list(alerts),
    }


def event_reasons(cluster: Any, namespace: str, name: str) -> list[str]:
    out = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}",
        "-o", "jsonpath={.items[*].reason}",
    )  # fmt: skip
    return list(out.stdout.split())


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loop_ns(cluster: Any, operator: Any) -> Iterator[str]:
    """One namespace and both ModelCycles, created together so their first cycles overlap."""
    name = f"t-loop-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", name)
    deadline = time.monotonic() + 30
    while cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode != 0:
        assert time.monotonic() < deadline, "no default ServiceAccount"
        time.sleep(0.3)
    looped = spec(
        cooldownSeconds=0,
        builtin={
            "enabled": True,
            "intervalSeconds": 5,
            "minAccuracy": 0.8,
            "minSamples": 20,
            "retrain": False,
        },
    )
    alerted = spec(cooldownSeconds=0, alerts={"enabled": True})
    for mc_name, mc_spec in ((LOOPED, looped), (ALERTED, alerted)):
        cluster.apply(
            {
                "apiVersion": "modelcycle.dev/v1alpha1",
                "kind": "ModelCycle",
                "metadata": {"name": mc_name},
                "spec": mc_spec,
            },
            name,
        )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


# --- the built-in monitor -----------------------------------------------------------------


def test_drifted_inputs_make_the_model_degraded(cluster: Any, operator: Any, loop_ns: str) -> None:
    watch = Waiter(cluster, operator, loop_ns, LOOPED)
    mc = watch.until(ready_at(1), "Ready at cycle 1")
    version = status_of(mc)["champion"]["version"]
    ip = serving_ip(cluster, loop_ns, LOOPED, version)

    # Rows several standard deviations away from anything in the training data.
    shifted = [
        [x + 5 * s for x, s in zip(IRIS_ROWS[i % 3], IRIS_STD, strict=True)] for i in range(60)
    ]
    predict(ip, LOOPED, shifted, f"drift-{uuid.uuid4().hex[:6]}")
    mc = watch.until(
        lambda m: condition(m, "Degraded").get("reason") == "DriftDetected",
        "Degraded=True DriftDetected",
        timeout=60,
    )
    degraded = condition(mc, "Degraded")
    assert degraded["status"] == "True"
    assert "drifted" in degraded["message"]
    assert live_metric(ip, "modelcycle_input_drifted") == 1.0
    # retrain is off: the verdict is recorded, no cycle starts.
    time.sleep(6)
    mc = get_mc(cluster, loop_ns, LOOPED)
    assert status_of(mc)["cycle"] == 1
    assert "Degraded" in event_reasons(cluster, loop_ns, LOOPED)


def test_builtin_monitor_retrains_on_contradicting_feedback(
    cluster: Any, operator: Any, loop_ns: str
) -> None:
    watch = Waiter(cluster, operator, loop_ns, LOOPED)
    mc = watch.until(ready_at(1), "Ready at cycle 1")
    status = status_of(mc)
    version = status["champion"]["version"]
    first_hash = status["history"][0]["dataHash"]
    ip = serving_ip(cluster, loop_ns, LOOPED, version)

    recorded = contradict(ip, LOOPED, 30)
    assert recorded == 30
    accuracy = live_metric(ip, "modelcycle_live_accuracy")
    assert accuracy is not None
    assert accuracy < 0.8
    mc = watch.until(
        lambda m: condition(m, "Degraded").get("reason") == "AccuracyDropped",
        "Degraded=True AccuracyDropped",
        timeout=60,
    )
    degraded = condition(mc, "Degraded")
    assert degraded["status"] == "True"
    assert "minAccuracy 0.8" in degraded["message"]
    assert status_of(mc)["cycle"] == 1  # retrain is still off

    patch_spec(cluster, loop_ns, LOOPED, {"monitoring": {"builtin": {"retrain": True}}})
    mc = watch.until(started(1, "Monitor"), "cycle 2 started by the monitor", timeout=60)
    # Keep whatever cycle 2 decides from starting cycle 3 right away.
    patch_spec(cluster, loop_ns, LOOPED, {"monitoring": {"cooldownSeconds": 3600}})
    assert "AccuracyDropped" in status_of(mc)["lastTrigger"]["reason"]
    assert status_of(mc)["lastTrigger"]["value"] == f"{version}:AccuracyDropped"

    mc = watch.until(finished(2), "cycle 2 finished")
    entry = assert_verdict_matches_metrics(mc, 2)
    assert entry["trigger"] == "Monitor"
    assert entry["dataHash"] != first_hash
    assert snapshot(cluster, loop_ns, LOOPED, 1)["feedbackRows"] == 0
    assert snapshot(cluster, loop_ns, LOOPED, 2)["feedbackRows"] >= 30

    if entry["verdict"] == "Promoted":
        # The new champion has no feedback yet.
        watch.until(
            lambda m: condition(m, "Degraded").get("reason") == "InsufficientFeedback",
            "the new champion judged InsufficientFeedback",
            timeout=60,
        )
    else:
        # The old champion stays degraded; the cooldown keeps it from retraining again.
        mc = watch.until(
            lambda m: (
                (status_of(m).get("triggers") or {}).get("lastSkipped", {}).get("reason")
                == "Cooldown"
            ),
            "the monitor's next request skipped for the cooldown",
            timeout=60,
        )
        assert status_of(mc)["cycle"] == 2


@pytest.mark.slow
def test_schedule_starts_a_cycle(cluster: Any, operator: Any, loop_ns: str) -> None:
    watch = Waiter(cluster, operator, loop_ns, LOOPED)
    mc = watch.until(lambda m: status_of(m).get("step") in FINISHED, "no cycle in progress")
    cycle = status_of(mc)["cycle"]
    patch_spec(
        cluster,
        loop_ns,
        LOOPED,
        {"monitoring": {"schedule": "*/1 * * * *", "cooldownSeconds": 0, "builtin": None}},
    )
    mc = watch.until(
        lambda m: bool((status_of(m).get("triggers") or {}).get("nextScheduled")),
        "nextScheduled recorded",
        timeout=30,
    )
    mc = watch.until(started(cycle, "Schedule"), "a cycle started by the schedule", timeout=90)
    triggers = status_of(mc)["triggers"]
    assert triggers["schedule"] == "*/1 * * * *"
    assert triggers["lastScheduled"].endswith(":00Z")
    assert triggers["nextScheduled"] > triggers["lastScheduled"]
    assert status_of(mc)["lastTrigger"]["value"] == f"schedule@{triggers['lastScheduled']}"
    # No more cycles for this one (the Prometheus test below scrapes its pods too).
    patch_spec(cluster, loop_ns, LOOPED, {"monitoring": {"schedule": "", "cooldownSeconds": 3600}})


# --- the alert receiver -------------------------------------------------------------------


def test_receiver_refuses_bad_requests(cluster: Any, operator: Any, loop_ns: str) -> None:
    url = operator.receiver_url
    with urllib.request.urlopen(url.replace("/alerts", "/healthz"), timeout=10) as response:
        assert json.loads(response.read()) == {"status": "ok", "tokenConfigured": True}
    good = payload(alert(ALERTED, loop_ns, fingerprint="f-auth", starts="2026-01-01T00:00:00Z"))

    code, answer = post(url, good)
    assert (code, "bearer token is required" in answer["error"]) == (401, True)
    code, answer = post(url, good, token="not-the-token")
    assert (code, answer) == (401, {"error": "the bearer token is not valid"})
    assert operator.token not in operator.log()

    malformed: list[tuple[Any, str]] = [
        (b"{not json", "not JSON"),
        ([], "JSON object"),
        ({**good, "version": "3"}, "version"),
        ({**good, "status": "bad"}, "status"),
        ({**good, "alerts": {}}, "alerts must be a list"),
        ({**good, "alerts": [{**good["alerts"][0], "startsAt": "yesterday"}]}, "startsAt"),
        ({**good, "alerts": [{**good["alerts"][0], "labels": {"a": 1}}]}, "labels.a"),
        ({**good, "alerts": [{**good["alerts"][0], "status": "pending"}]}, "alerts[0].status"),
    ]
    for body, fragment in malformed:
        raw = body if isinstance(body, bytes) else None
        code, answer = post(url, body, token=operator.token, raw=raw)
        assert code == 400, (body, answer)
        assert fragment in answer["error"], (fragment, answer)

    # Refused from the Content-Length alone, before any of the body is read.
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.putrequest("POST", parts.path)
    connection.putheader("Authorization", f"Bearer {operator.token}")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(64 * 1024 * 1024))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413
    assert "larger than" in json.loads(response.read())["error"]
    connection.close()

    # None of it reached the ModelCycle.
    mc = get_mc(cluster, loop_ns, ALERTED)
    triggers = status_of(mc).get("triggers") or {}
    assert "lastAlert" not in triggers
    assert "pending" not in triggers
    assert (status_of(mc).get("lastTrigger") or {}).get("type") in (None, "Created")


def test_alerts_retrain_once_and_respect_the_cooldown(
    cluster: Any, operator: Any, loop_ns: str
) -> None:
    url, token = operator.receiver_url, operator.token
    watch = Waiter(cluster, operator, loop_ns, ALERTED)
    mc = watch.until(ready_at(1), "Ready at cycle 1")
    status = status_of(mc)
    first_hash = status["history"][0]["dataHash"]
    ip = serving_ip(cluster, loop_ns, ALERTED, status["champion"]["version"])
    assert contradict(ip, ALERTED, 20) == 20

    starts = "2026-01-01T00:00:00.123456789Z"  # Alertmanager's nanoseconds
    firing = alert(ALERTED, loop_ns, fingerprint="fp-accuracy", starts=starts)
    code, answer = post(url, payload(firing), token=token)
    assert code == 202, answer
    assert [r["result"] for r in answer["results"]] == ["Retrain"], answer
    assert answer["results"][0]["modelcycle"] == f"{loop_ns}/{ALERTED}"
    # Alertmanager's repeat of the same alert (same fingerprint and startsAt).
    code, answer = post(url, payload(firing), token=token)
    assert (code, [r["result"] for r in answer["results"]]) == (202, ["Duplicate"]), answer

    mc = watch.until(started(1, "Alert"), "cycle 2 started by the alert", timeout=60)
    last = status_of(mc)["lastTrigger"]
    assert last["value"] == f"fp-accuracy@{starts}"
    assert "ModelAccuracyLow" in last["reason"]
    assert f"fp-accuracy@{starts}" in status_of(mc)["triggers"]["alertKeys"]

    # Inside the cooldown: recorded as skipped, no retrain.
    patch_spec(cluster, loop_ns, ALERTED, {"monitoring": {"cooldownSeconds": 3600}})
    watch.until(lambda m: m["status"].get("observedGeneration") == m["metadata"]["generation"],
                "the cooldown change observed", timeout=30)  # fmt: skip
    other = alert(ALERTED, loop_ns, fingerprint="fp-other", starts="2026-01-01T00:05:00Z")
    unknown = alert("nobody", loop_ns, fingerprint="fp-unknown", starts=starts)
    unrouted = {
        **alert(ALERTED, loop_ns, fingerprint="fp-unrouted", starts=starts),
        "labels": {"alertname": "NoTarget"},
    }
    resolved = alert(ALERTED, loop_ns, fingerprint="fp-accuracy", starts=starts, status="resolved")
    code, answer = post(url, payload(other, unknown, unrouted), token=token)
    assert code == 202, answer
    assert [r["result"] for r in answer["results"]] == ["Cooldown", "UnknownTarget", "Unrouted"]
    code, answer = post(url, payload(resolved), token=token)
    assert (code, [r["result"] for r in answer["results"]]) == (202, ["Resolved"]), answer

    mc = get_mc(cluster, loop_ns, ALERTED)
    triggers = status_of(mc)["triggers"]
    assert triggers["lastSkipped"]["type"] == "Alert"
    assert triggers["lastSkipped"]["reason"] == "Cooldown"
    assert triggers["lastSkipped"]["key"] == "fp-other@2026-01-01T00:05:00Z"
    assert triggers["lastAlert"]["status"] == "resolved"
    assert "AlertSkipped" in event_reasons(cluster, loop_ns, ALERTED)

    mc = watch.until(finished(2), "cycle 2 finished")
    entry = assert_verdict_matches_metrics(mc, 2)
    assert entry["trigger"] == "Alert"
    assert entry["dataHash"] != first_hash
    assert snapshot(cluster, loop_ns, ALERTED, 2)["feedbackRows"] >= 20
    time.sleep(3)
    assert status_of(get_mc(cluster, loop_ns, ALERTED))["cycle"] == 2  # one retrain only


def test_prometheus_and_alertmanager_fire_into_the_receiver(
    cluster: Any, operator: Any, loop_ns: str
) -> None:
    watch = Waiter(cluster, operator, loop_ns, ALERTED)
    mc = watch.until(lambda m: status_of(m).get("step") in FINISHED, "no cycle in progress")
    status = status_of(mc)
    cycle = status["cycle"]
    before = (status.get("lastTrigger") or {}).get("value")
    patch_spec(cluster, loop_ns, ALERTED, {"monitoring": {"cooldownSeconds": 0}})
    rules = {
        "groups": [
            {
                "name": "modelcycle",
                "rules": [
                    {
                        "alert": "ModelAccuracyLow",
                        "expr": "modelcycle_live_accuracy < 0.8 "
                        "and modelcycle_live_feedback_samples >= 10",
                        "for": "0s",
                        "labels": {"severity": "critical"},
                        "annotations": {"summary": "live accuracy {{ $value }} below 0.8"},
                    }
                ],
            }
        ]
    }
    monitoring = Monitoring(cluster, cluster.dir / "monitoring-test-loop")
    monitoring.start(rules, operator.receiver_url, operator.token)
    try:
        ip = serving_ip(cluster, loop_ns, ALERTED, status["champion"]["version"])
        contradict(ip, ALERTED, 15)
        mc = watch.until(
            lambda m: (
                started(cycle, "Alert")(m) and status_of(m)["lastTrigger"].get("value") != before
            ),
            "a cycle started by Alertmanager",
            timeout=120,
        )
        last = status_of(mc)["lastTrigger"]
        assert "ModelAccuracyLow" in last["reason"]
        fired = monitoring.alerts()
        assert any(
            a["labels"].get("modelcycle") == ALERTED and a["labels"].get("namespace") == loop_ns
            for a in fired
        ), fired
    finally:
        patch_spec(cluster, loop_ns, ALERTED, {"monitoring": {"cooldownSeconds": 3600}})
        monitoring.stop()
