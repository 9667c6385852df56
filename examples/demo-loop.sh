#!/usr/bin/env bash
# The closed loop, run at the end of examples/demo.sh (iris is Ready, the operator runs on
# the host, KUBECONFIG is exported):
#   1. switch on the operator's built-in monitor for iris (kubectl patch --type merge);
#   2. send predictions to the serving pod, then ground-truth feedback that contradicts them;
#   3. watch live accuracy fall in the model server's /metrics, and iris turn Degraded;
#   4. watch cycle 2 retrain by itself on the data plus the feedback, then show the new
#      champion (or the rejection, with the gate's reason) and the history.
#
# Usage: examples/demo-loop.sh NAMESPACE POD_IP     (MC=iris PORT=8080 SAMPLES=30 by default)
set -euo pipefail
NS="${1:?usage: demo-loop.sh NAMESPACE POD_IP}"
POD_IP="${2:?usage: demo-loop.sh NAMESPACE POD_IP}"
MC="${MC:-iris}"
PORT="${PORT:-8080}"
SAMPLES="${SAMPLES:-30}"
URL="http://$POD_IP:$PORT"
PY="${PY:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
fail() {
  echo "demo-loop: $*" >&2
  echo "demo-loop: look at: kubectl -n $NS describe mc $MC" >&2
  exit 1
}
jp() { kubectl -n "$NS" get mc "$MC" -o jsonpath="$1" 2>/dev/null || true; }
condition() { jp "{.status.conditions[?(@.type==\"$1\")].$2}"; }
live() { # the live gauges of the serving pod, from its Prometheus text
  curl -sS --max-time 5 "$URL/metrics" |
    grep -E '^modelcycle_live_(accuracy|feedback_samples)\{' || echo "(no live numbers yet)"
}
# wait_until SECONDS WHAT COMMAND...: poll once a second, fail with WHAT after SECONDS.
wait_until() {
  local limit=$1 what=$2
  shift 2
  for _ in $(seq 1 "$limit"); do
    if "$@"; then return 0; fi
    sleep 1
  done
  fail "timed out after ${limit} s waiting for $what"
}

monitor_reports() { [ -n "$(condition Degraded reason | grep -v -x -E 'Initializing|MonitorDisabled|NewChampion')" ]; }
degraded() { [ "$(condition Degraded status)" = "True" ]; }
cycle_started() { [ "$(jp '{.status.cycle}')" -ge 2 ] 2>/dev/null; }
cycle_finished() {
  local step
  step="$(jp '{.status.step}')"
  [ "$(jp '{.status.history[-1:].cycle}')" = "2" ] && case "$step" in Serving | Rejected | Failed) true ;; *) false ;; esac
}

[ "$(jp '{.status.cycle}')" = "1" ] || fail "expected $NS/$MC at cycle 1, found cycle '$(jp '{.status.cycle}')'"
curl -sS --max-time 5 -o /dev/null "$URL/v2/health/ready" || fail "the serving pod at $URL does not answer"

say "1. Switch on the built-in monitor: every 5 s, Degraded below 80% live accuracy after 20 samples"
PATCH='{"spec":{"monitoring":{"cooldownSeconds":0,"builtin":{"enabled":true,"intervalSeconds":5,"minAccuracy":0.8,"minSamples":20,"retrain":true}}}}'
echo "kubectl -n $NS patch mc $MC --type merge -p '$PATCH'"
kubectl -n "$NS" patch mc "$MC" --type merge -p "$PATCH"
wait_until 60 "the built-in monitor's first verdict" monitor_reports
echo "Degraded=$(condition Degraded status) ($(condition Degraded reason)): $(condition Degraded message)"

say "2. $SAMPLES predictions, then feedback saying every one of them was wrong"
RID="demo-loop-$(date +%s)"
BODY="$("$PY" - "$RID" "$SAMPLES" <<'EOF'
import json, sys
rid, n = sys.argv[1], int(sys.argv[2])
rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
data = [rows[i % 3] for i in range(n)]
inputs = [{"name": "input-0", "shape": [n, 4], "datatype": "FP64", "data": data}]
print(json.dumps({"id": rid, "inputs": inputs}))
EOF
)"
ANSWER="$(curl -sS --fail-with-body --max-time 10 -H 'Content-Type: application/json' \
  -d "$BODY" "$URL/v2/models/$MC/infer")" || fail "inference failed: $ANSWER"
FEEDBACK="$(printf '%s' "$ANSWER" | "$PY" -c '
import json, sys
names = {"setosa": 0, "versicolor": 1, "virginica": 2}
answer = json.load(sys.stdin)
flat = []
for item in answer["outputs"][0]["data"]:
    flat.extend(item if isinstance(item, list) else [item])
predicted = [names.get(p, p) if isinstance(p, str) else int(p) for p in flat]
print("predicted:", predicted, file=sys.stderr)
print(json.dumps({"id": answer["id"], "labels": [(int(p) + 1) % 3 for p in predicted]}))
')"
echo "feedback:  $FEEDBACK"
curl -sS --fail-with-body --max-time 10 -H 'Content-Type: application/json' \
  -d "$FEEDBACK" "$URL/v2/models/$MC/feedback" || fail "feedback was not recorded"
echo

say "3. Live accuracy from the model server's /metrics, and the monitor's verdict"
live
wait_until 60 "Degraded=True" degraded
echo "Degraded=True ($(condition Degraded reason)): $(condition Degraded message)"

say "4. Cycle 2 starts by itself (trigger Monitor) and trains on iris plus the feedback"
wait_until 60 "cycle 2 to start" cycle_started
echo "lastTrigger: $(jp '{.status.lastTrigger.type}'): $(jp '{.status.lastTrigger.reason}')"
# One degradation, one retrain: the cooldown keeps a rejected challenger from looping.
kubectl -n "$NS" patch mc "$MC" --type merge -p '{"spec":{"monitoring":{"cooldownSeconds":300}}}' >/dev/null
echo "(cooldownSeconds back to 300: no trigger retrains sooner than 5 minutes after a cycle starts)"
echo "kubectl get mc $MC -o wide -w"
kubectl -n "$NS" get mc "$MC" -o wide | head -1
last=""
for _ in $(seq 1 240); do
  line="$(kubectl -n "$NS" get mc "$MC" -o wide --no-headers 2>/dev/null || true)"
  if [ "$line" != "$last" ]; then
    echo "$line"
    last="$line"
  fi
  if cycle_finished; then break; fi
  sleep 1
done
cycle_finished || fail "cycle 2 did not finish within 240 s"

say "The result"
VERDICT="$(jp '{.status.history[-1:].verdict}')"
echo "cycle 2: $VERDICT ($(jp '{.status.history[-1:].reason}')), accuracy on the held-out split $(jp '{.status.history[-1:].score}')"
echo "data:    cycle 1 $(jp '{.status.history[0].dataHash}')"
echo "         cycle 2 $(jp '{.status.history[-1:].dataHash}') (iris plus $SAMPLES feedback rows)"
if [ "$VERDICT" = "Promoted" ]; then
  echo "champion: model version $(jp '{.status.champion.version}') from cycle $(jp '{.status.champion.cycle}')"
else
  echo "rejected: $(condition Gated message)"
  echo "          (feedback that contradicts the truth made the challenger worse on the"
  echo "          held-out split: the gate kept it out of production)"
  echo "champion: still model version $(jp '{.status.champion.version}') from cycle $(jp '{.status.champion.cycle}')"
fi
echo
echo "history:"
printf 'CYCLE\tTRIGGER\tVERSION\tVERDICT\tSCORE\tDATA HASH\n'
kubectl -n "$NS" get mc "$MC" -o jsonpath='{range .status.history[*]}{.cycle}{"\t"}{.trigger}{"\t"}{.version}{"\t"}{.verdict}{"\t"}{.score}{"\t"}{.dataHash}{"\n"}{end}'
echo
echo "Events: kubectl -n $NS get events --field-selector involvedObject.name=$MC"
