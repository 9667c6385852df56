"""Helpers for tests against the local cluster: a Cluster with kubectl conveniences, polling."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from localcluster import Cluster


class LocalCluster(Cluster):
    """The suite's cluster, with a few conveniences for tests."""

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        args = ["get", kind, name, "-o", "json"]
        if namespace:
            args += ["-n", namespace]
        res = self.kubectl(*args, check=False)
        if res.returncode != 0:
            if "NotFound" in res.stderr:
                return None
            raise subprocess.CalledProcessError(res.returncode, res.args, res.stdout, res.stderr)
        return dict(json.loads(res.stdout))

    def apply(self, manifest: str | dict[str, Any], namespace: str | None = None) -> None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        args = ["apply", "-f", "-"]
        if namespace:
            args += ["-n", namespace]
        self.kubectl(*args, input=text)

    def container_log(self, namespace: str, pod: str, container: str) -> str:
        path = self.dir / "containers" / f"{namespace}_{pod}_{container}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.25,
    explain: Callable[[], str] | None = None,
) -> Any:
    """Poll until ``predicate()`` is truthy; fail naming ``what``, the last value, and
    whatever ``explain()`` adds (status, children, logs)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    context = f"\n{explain()}" if explain else ""
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r}){context}")


# --- ModelCycle helpers shared by the integration tests ---------------------------------

NAME_LABEL = "modelcycle.dev/name"
VERSION_ANNOTATION = "modelcycle.dev/model-version"


def base_spec(**sections: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "data": {"builtin": {"name": "iris"}, "testFraction": 0.25, "seed": 42},
        "training": {
            "estimator": "sklearn.linear_model.LogisticRegression",
            "parameters": {"max_iter": 500},
            "activeDeadlineSeconds": 300,
            "backoffLimit": 0,
        },
        "evaluation": {"metric": "accuracy", "threshold": 0.8},
        "serving": {"replicas": 1, "progressDeadlineSeconds": 120},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def manifest(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "modelcycle.dev/v1alpha1",
        "kind": "ModelCycle",
        "metadata": {"name": name},
        "spec": spec,
    }


def condition(mc: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    """The ModelCycle's condition of that type ({} when it has none)."""
    for c in ((mc or {}).get("status") or {}).get("conditions") or ():
        if c.get("type") == type_:
            return dict(c)
    return {}


def apply(cluster: Any, namespace: str, obj: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj))


def get_json(cluster: Any, namespace: str, *what: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", *what, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        if "NotFound" in result.stderr or "not found" in result.stderr:
            return None
        raise AssertionError(f"kubectl get {' '.join(what)} failed: {result.stderr}")
    value: dict[str, Any] = json.loads(result.stdout)
    return value


# --- waiting on ModelCycles, with timeouts that explain themselves -----------------------


def operator_log(operator: Any) -> str:
    """The operator fixture's whole log ("" when there is none)."""
    try:
        return Path(operator.log_path).read_text(errors="replace")
    except (OSError, AttributeError):
        return ""


def explainer(cluster: Any, namespace: str, name: str, operator: Any) -> Callable[[], str]:
    """What a timeout prints: the ModelCycle's status, its namespace's pods, Jobs and
    Deployments, and the operator log's last 60 lines."""

    def explain() -> str:
        mc = get_json(cluster, namespace, "modelcycle", name)
        status = json.dumps((mc or {}).get("status"), indent=1)[:4000]
        kids = cluster.kubectl(
            "get", "pods,jobs,deploy", "-n", namespace, "-o", "wide", check=False
        ).stdout
        tail = "\n".join(operator_log(operator).splitlines()[-60:]) or "(no operator log)"
        return (
            f"--- status of {namespace}/{name}:\n{status}\n--- children:\n{kids}"
            f"\n--- operator log:\n{tail}"
        )

    return explain


class Watch:
    """Waits on the ModelCycles of one namespace; a timeout explains itself, and a
    ModelCycle that goes Stalled fails the wait at once (unless ``fail_on_stall=False``).
    Test modules subclass it to set their own ``timeout`` and polling ``interval``."""

    timeout = 180.0
    interval = 0.5

    def __init__(self, cluster: Any, operator: Any, namespace: str) -> None:
        self.cluster, self.operator, self.namespace = cluster, operator, namespace

    def until(
        self,
        name: str,
        predicate: Callable[[dict[str, Any]], bool],
        what: str,
        *,
        timeout: float | None = None,
        interval: float | None = None,
        fail_on_stall: bool = True,
    ) -> dict[str, Any]:
        cluster, namespace = self.cluster, self.namespace
        explain = explainer(cluster, namespace, name, self.operator)

        def probe() -> dict[str, Any] | None:
            mc = get_json(cluster, namespace, "modelcycle", name)
            if mc is None:
                return None
            if predicate(mc):
                return mc
            stalled = condition(mc, "Stalled")
            if fail_on_stall and stalled.get("status") == "True":
                raise AssertionError(
                    f"{namespace}/{name} stalled while waiting for {what}: "
                    f"{stalled.get('reason')}: {stalled.get('message')}\n{explain()}"
                )
            return None

        result: dict[str, Any] = wait_for(
            probe,
            self.timeout if timeout is None else timeout,
            f"{namespace}/{name}: {what}",
            interval=self.interval if interval is None else interval,
            explain=explain,
        )
        return result


def step_in(steps: Iterable[str], cycle: int | None = None) -> Callable[[dict[str, Any]], bool]:
    """A ModelCycle whose step is one of ``steps`` (in cycle ``cycle``, if given)."""
    wanted = set(steps)

    def predicate(mc: dict[str, Any]) -> bool:
        status = mc.get("status") or {}
        if cycle is not None and status.get("cycle") != cycle:
            return False
        return status.get("step") in wanted

    return predicate
