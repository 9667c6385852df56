"""A real Kubernetes control plane on this machine, without Docker.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the real binaries
(built once by ``build-binaries.sh`` and cached outside the repository); the node agent
(``nodeagent.py``) plays the kubelet by running each pod's containers as local processes,
each pod in its own network namespace on a bridge the cluster creates, each container in
a private mount namespace with its volumes bind-mounted at their mountPaths.

Only the container runtime is replaced. Everything else -- schema validation, CEL, RBAC,
service accounts, admission, the Job / Deployment / garbage-collector controllers -- is
Kubernetes itself.

This package is test and demo infrastructure: the product never imports it.
"""

from localcluster.cluster import Cluster, ClusterConfig

__all__ = ["Cluster", "ClusterConfig"]
