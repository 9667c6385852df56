#!/usr/bin/env bash
# The ModelCycle demo, on the local control plane (`make demo` runs it after `cluster-up`):
#   1. the CRD and the operator;
#   2. the iris ModelCycle: collect, train, evaluate, gate, roll out -- watched with kubectl;
#   3. a V2 inference request to the serving pod;
#   4. the loop: predictions, feedback that contradicts them, live accuracy falls, the
#      operator's built-in monitor marks it Degraded and cycle 2 retrains on data + feedback.
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER="${CLUSTER:-demo}"
PY="${PY:-.venv/bin/python}"
export PYTHONPATH="$PWD/tests"
KUBECONFIG="$($PY -m localcluster --name "$CLUSTER" kubeconfig)"
export KUBECONFIG
NS="${NS:-modelcycle-demo}"
STATE="$(dirname "$KUBECONFIG")"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "The CRD"
kubectl apply --server-side --field-manager=demo -f crds/
kubectl wait --for=condition=Established crd/modelcycles.modelcycle.dev --timeout=60s

say "The operator (kopf run -m modelcycle_operator), log in $STATE/logs/operator.log"
if [ -f "$STATE/operator.pid" ] && kill -0 "$(cat "$STATE/operator.pid")" 2>/dev/null; then
  kill "$(cat "$STATE/operator.pid")" || true
  sleep 2
fi
MODELCYCLE_TIMER_SECONDS=5 setsid .venv/bin/kopf run -m modelcycle_operator --all-namespaces \
  --standalone >>"$STATE/logs/operator.log" 2>&1 </dev/null &
echo $! >"$STATE/operator.pid"

say "A namespace that enforces PodSecurity 'restricted', and the iris ModelCycle"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace "$NS" pod-security.kubernetes.io/enforce=restricted --overwrite
kubectl -n "$NS" delete modelcycle iris --ignore-not-found --wait=true
until kubectl -n "$NS" get serviceaccount default >/dev/null 2>&1; do sleep 0.5; done
kubectl -n "$NS" apply -f examples/iris.yaml

say "kubectl get mc -w (until Ready)"
last=""
for _ in $(seq 1 240); do
  line="$(kubectl -n "$NS" get mc iris -o wide --no-headers 2>/dev/null || true)"
  if [ "$line" != "$last" ]; then
    [ -z "$last" ] && kubectl -n "$NS" get mc iris -o wide | head -1
    echo "$line"
    last="$line"
  fi
  ready="$(kubectl -n "$NS" get mc iris -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)"
  [ "$ready" = "True" ] && break
  sleep 1
done
[ "$ready" = "True" ] || { echo "iris did not become Ready; see kubectl describe mc iris -n $NS"; exit 1; }

say "Status conditions"
kubectl -n "$NS" get mc iris -o jsonpath='{range .status.conditions[*]}{.type}{"\t"}{.status}{"\t"}{.reason}{"\t"}{.message}{"\n"}{end}'
say "What it created"
kubectl -n "$NS" get jobs,deployments,pods,services,pvc -l app.kubernetes.io/managed-by=modelcycle-operator

say "A V2 inference request to the serving pod"
POD_IP="$(kubectl -n "$NS" get pods -l modelcycle.dev/name=iris,modelcycle.dev/step=serving \
  --field-selector=status.phase=Running -o jsonpath='{.items[0].status.podIP}')"
BODY='{"id":"demo-1","inputs":[{"name":"input-0","shape":[3,4],"datatype":"FP64","data":[[5.1,3.5,1.4,0.2],[6.2,2.9,4.3,1.3],[7.7,3.0,6.1,2.3]]}]}'
echo "POST http://$POD_IP:8080/v2/models/iris/infer $BODY"
curl -sS -H 'Content-Type: application/json' -d "$BODY" "http://$POD_IP:8080/v2/models/iris/infer"
echo

if [ -x examples/demo-loop.sh ]; then
  bash examples/demo-loop.sh "$NS" "$POD_IP"
fi

say "Done. Try: export KUBECONFIG=$KUBECONFIG; kubectl -n $NS describe mc iris"
echo "Stop everything with: make demo-down"
