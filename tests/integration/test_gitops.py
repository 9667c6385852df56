"""GitOps: the operator never writes spec, so an Argo CD sync never fights it.

The ModelCycle is applied as Argo CD applies it (server-side apply under its own field
manager); after a whole cycle the spec is exactly what was applied, and no field manager
but the applier owns any part of it: the operator's writes are status and its own
``modelcycle.dev/`` annotations.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetest import LocalCluster, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
APPLIER = "argocd-controller"


def _ready(cluster: LocalCluster, ns: str) -> bool:
    mc = cluster.get("modelcycle", "iris", ns) or {}
    conds = mc.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def _spec_owners(mc: dict[str, Any]) -> dict[str, list[str]]:
    owners: dict[str, list[str]] = {}
    for entry in mc["metadata"].get("managedFields", []):
        fields = entry.get("fieldsV1", {})
        if "f:spec" in fields:
            owners.setdefault(entry["manager"], []).append(entry.get("subresource", "main"))
    return owners


def test_a_whole_cycle_leaves_the_applied_spec_untouched(
    cluster: LocalCluster, namespace: str, operator: Any
) -> None:
    operator.start()
    doc = yaml.safe_load((ROOT / "examples" / "iris.yaml").read_text())
    cluster.kubectl(
        "apply",
        "--server-side",
        f"--field-manager={APPLIER}",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(doc),
    )
    applied = cluster.get("modelcycle", "iris", namespace)
    assert applied is not None
    wait_for(lambda: _ready(cluster, namespace), 240, "iris Ready")
    after = json.loads(
        cluster.kubectl(
            "get", "modelcycle", "iris", "-n", namespace, "-o", "json", "--show-managed-fields"
        ).stdout
    )
    assert after["spec"] == applied["spec"]
    assert after["metadata"]["generation"] == applied["metadata"]["generation"]
    assert _spec_owners(after) == {APPLIER: ["main"]}
    ours = {
        k
        for k in after["metadata"].get("annotations", {})
        if k not in (applied["metadata"].get("annotations") or {})
    }
    assert all(k.startswith("modelcycle.dev/") for k in ours), ours
    # A re-sync of the same manifest is a no-op: nothing to fight over.
    res = cluster.kubectl(
        "apply",
        "--server-side",
        f"--field-manager={APPLIER}",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(doc),
    )
    assert "serverside-applied" in res.stdout
    again = cluster.get("modelcycle", "iris", namespace)
    assert again is not None
    assert again["metadata"]["generation"] == applied["metadata"]["generation"]
