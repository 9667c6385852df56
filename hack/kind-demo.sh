#!/usr/bin/env bash
# The ModelCycle demo on kind, for machines with Docker (the project's own demo, `make
# demo`, needs none: it uses the local control plane in tests/localcluster).
#
#   hack/kind-demo.sh          # cluster "modelcycle", images built here, iris to Ready
#   KEEP=0 hack/kind-demo.sh   # delete the cluster at the end
#
# Needs: docker, kind, kubectl, helm. Steps: create the kind cluster, build both images,
# load them into the cluster's node (no registry), install the chart with those images,
# apply examples/iris.yaml into a namespace that enforces the restricted Pod Security
# Standard, and wait for the ModelCycle to be Ready. .github/workflows/kind-e2e.yaml
# runs this script in CI.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER="${CLUSTER:-modelcycle}"
TAG="${TAG:-dev}"
RELEASE="${RELEASE:-modelcycle}"
OPERATOR_NS="${OPERATOR_NS:-modelcycle-system}"
NS="${NS:-modelcycle-demo}"
TIMEOUT="${TIMEOUT:-600}"
KEEP="${KEEP:-1}"
OPERATOR_IMAGE="ghcr.io/modelcycle/operator:${TAG}"
TRAINER_IMAGE="ghcr.io/modelcycle/trainer:${TAG}"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "kind-demo: $tool is not installed" >&2; exit 1; }
done

on_exit() {
  status=$?
  if [ "$status" -ne 0 ]; then
    say "Failed; what the cluster says"
    kubectl -n "$OPERATOR_NS" get pods -o wide || true
    kubectl -n "$OPERATOR_NS" logs "deployment/$RELEASE" --tail=100 || true
    kubectl -n "$NS" get mc,jobs,pods,deployments -o wide || true
    kubectl -n "$NS" describe mc iris || true
    kubectl get events -A --sort-by=.lastTimestamp | tail -40 || true
  fi
  if [ "$KEEP" = "0" ]; then
    kind delete cluster --name "$CLUSTER" || true
  fi
  exit "$status"
}
trap on_exit EXIT

say "kind cluster $CLUSTER"
if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --wait 120s
fi
kubectl config use-context "kind-$CLUSTER"

say "Images $OPERATOR_IMAGE and $TRAINER_IMAGE"
docker build -t "$OPERATOR_IMAGE" -f Dockerfile .
docker build -t "$TRAINER_IMAGE" -f trainer-image/Dockerfile .
kind load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE" "$TRAINER_IMAGE"

say "The chart (release $RELEASE in $OPERATOR_NS)"
kubectl create namespace "$OPERATOR_NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace "$OPERATOR_NS" pod-security.kubernetes.io/enforce=restricted --overwrite
# The images exist only on the node: never pull them.
helm upgrade --install "$RELEASE" charts/modelcycle-operator \
  --namespace "$OPERATOR_NS" \
  --set image.tag="$TAG" \
  --set image.pullPolicy=Never \
  --set workload.image.tag="$TAG" \
  --set timerSeconds=5 \
  --wait --timeout 5m
kubectl -n "$OPERATOR_NS" rollout status "deployment/$RELEASE" --timeout=180s

say "The iris ModelCycle in $NS"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace "$NS" pod-security.kubernetes.io/enforce=restricted --overwrite
kubectl -n "$NS" apply -f examples/iris.yaml
# The operator runs its Jobs and serving pods with the trainer image loaded above
# (workload.image.tag); a tag other than "latest" defaults to imagePullPolicy IfNotPresent.
kubectl -n "$NS" wait --for=condition=Ready mc/iris --timeout="${TIMEOUT}s"
kubectl -n "$NS" get mc iris -o wide

say "Done: the iris model is served at $(kubectl -n "$NS" get mc iris -o jsonpath='{.status.endpoint.url}')"
