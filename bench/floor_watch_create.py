"""The floor for the operator's create-to-Job latency: a minimal watch-and-create loop.

    .venv/bin/python bench/floor_watch_create.py --kubeconfig PATH

Same Python client as the operator (``kubernetes``), same process model as a developer
runs it (one Python process on the host). It lists every ModelCycle once (the objects
already present are only remembered, as a controller's cache would), prints
``READY <count> <seconds>`` on stdout, then watches ModelCycles cluster-wide and, for each
new one that is not ``spec.suspend``, creates its training Job ``<name>-train-1`` (owned by
the ModelCycle, so the garbage collector removes it with it). Nothing else: no status, no
PVC, no Events, no retries beyond re-listing when the watch expires (410).

It is what the operator's create path cannot beat with this client on this machine; the
difference between the two is the operator's own cost (kopf's machinery, the reads before
the decision, the writes before the Job).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

GROUP, VERSION, PLURAL = "modelcycle.dev", "v1alpha1", "modelcycles"


def job_manifest(mc: dict[str, Any]) -> dict[str, Any]:
    meta = mc["metadata"]
    name = f"{meta['name']}-train-1"
    labels = {
        "app.kubernetes.io/managed-by": "floor-watch-create",
        "modelcycle.dev/name": meta["name"],
        "modelcycle.dev/cycle": "1",
        "modelcycle.dev/step": "train",
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "ModelCycle",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "backoffLimit": 1,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "train",
                            "image": "ghcr.io/modelcycle/trainer:0.1.0",
                            "command": ["modelcycle-trainer", "train", "--cycle", "1"],
                        }
                    ],
                },
            },
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", required=True)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    api = config.new_client_from_config(config_file=args.kubeconfig)
    custom = client.CustomObjectsApi(api)
    batch = client.BatchV1Api(api)
    seen: set[str] = set()

    def relist() -> str:
        listed = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        for item in listed.get("items", []):
            seen.add(item["metadata"]["uid"])
        return str(listed["metadata"]["resourceVersion"])

    started = time.monotonic()
    rv = relist()
    print(f"READY {len(seen)} {time.monotonic() - started:.3f}", flush=True)
    created = 0
    while True:
        try:
            stream = watch.Watch().stream(
                custom.list_cluster_custom_object,
                GROUP,
                VERSION,
                PLURAL,
                resource_version=rv,
                timeout_seconds=60,
                allow_watch_bookmarks=True,
            )
            for event in stream:
                obj = event["object"]
                meta = obj.get("metadata") or {}
                rv = str(meta.get("resourceVersion") or rv)
                if event["type"] != "ADDED" or meta.get("uid") in seen:
                    continue
                seen.add(meta["uid"])
                if (obj.get("spec") or {}).get("suspend"):
                    continue
                try:
                    batch.create_namespaced_job(meta["namespace"], job_manifest(obj))
                    created += 1
                except ApiException as exc:
                    if exc.status != 409:
                        print(f"create failed: {exc.status} {exc.reason}", file=sys.stderr)
        except ApiException as exc:
            if exc.status == 410:
                rv = relist()
                continue
            print(f"watch failed: {exc.status} {exc.reason}; re-listing", file=sys.stderr)
            time.sleep(0.5)
            rv = relist()
        except (KeyboardInterrupt, SystemExit):
            print(f"created {created} Jobs", file=sys.stderr)
            return 0


if __name__ == "__main__":
    sys.exit(main())
