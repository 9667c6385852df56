"""Command line for the local control plane.

    python -m localcluster up [--name demo]       start it (builds binaries when missing)
    python -m localcluster down [--purge]         stop exactly what it started
    python -m localcluster status                 components, server, kubeconfig path
    python -m localcluster kubeconfig             print the kubeconfig path
    python -m localcluster logs NAMESPACE/POD [CONTAINER]   a container's log
    python -m localcluster build                  build the binaries only

(``make cluster-up`` and friends set PYTHONPATH=tests and use the project's virtualenv.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from localcluster.cluster import Cluster, ClusterConfig, ClusterError, ensure_binaries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="localcluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--name", default="demo", help="cluster name (default: demo)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up")
    down = sub.add_parser("down")
    down.add_argument("--purge", action="store_true", help="also delete the state directory")
    sub.add_parser("status")
    sub.add_parser("kubeconfig")
    sub.add_parser("build")
    logs = sub.add_parser("logs")
    logs.add_argument("pod", help="NAMESPACE/POD")
    logs.add_argument("container", nargs="?")
    args = parser.parse_args(argv)
    cluster = Cluster(ClusterConfig(name=args.name))
    try:
        if args.command == "up":
            cluster.up()
            st = cluster.status()
            print(
                f"local cluster {st['name']!r} is up at {st['server']} "
                f"(took {st['lastUpSeconds']} s)"
            )
            print(f"export KUBECONFIG={st['kubeconfig']}")
        elif args.command == "down":
            cluster.down(purge=args.purge)
            print(f"local cluster {args.name!r} stopped")
        elif args.command == "status":
            print(json.dumps(cluster.status(), indent=2))
        elif args.command == "kubeconfig":
            print(cluster.kubeconfig)
        elif args.command == "build":
            ensure_binaries("etcd", "k8s", "helm")
        elif args.command == "logs":
            return print_logs(cluster, args.pod, args.container)
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def print_logs(cluster: Cluster, pod: str, container: str | None) -> int:
    if "/" not in pod:
        print("error: give the pod as NAMESPACE/POD", file=sys.stderr)
        return 2
    ns, name = pod.split("/", 1)
    logdir = cluster.dir / "containers"
    files = sorted(logdir.glob(f"{ns}_{name}_*.log"))
    if container:
        files = [f for f in files if f.name == f"{ns}_{name}_{container}.log"]
    if not files:
        print(
            f"error: no logs for {pod}{' ' + container if container else ''} in {logdir}",
            file=sys.stderr,
        )
        return 1
    for f in files:
        if len(files) > 1:
            print(f"==> {f.stem.split('_', 2)[2]} <==")
        sys.stdout.write(Path(f).read_text(errors="replace"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
