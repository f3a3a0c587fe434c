#!/usr/bin/env bash
# Benchmark: genesis ceremonies of N validators and a rolling update of an M-node fleet, against an instant
# sidecar simulator, on the running local cluster.   Usage: hack/bench-fleet.sh [N...] (default: 4 20)
# Env: ROLLOUT_NODES (default 20; 0 skips the rollout), MAX_UNAVAILABLE (default 1), BENCH_PROFILE (debug|release),
# CEREMONY_TIMEOUT (seconds, default 600). For each ceremony it prints the time to Ready, the largest active plan
# (.status.plan, JSON bytes) seen while it ran, and the finished plan's summary in .status.planHistory.
# BENCH_PLAN_DIR=<dir> keeps that largest plan as <dir>/<name>.plan.json.
# A 100-validator ceremony: ROLLOUT_NODES=0 hack/bench-fleet.sh 100
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(4 20)
M="${ROLLOUT_NODES:-20}"; U="${MAX_UNAVAILABLE:-1}"
ns_prefix=bench-fleet
# shellcheck source=hack/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

plan_max=0
wait_phase() { # name, phase, timeout seconds; records the largest .status.plan seen in plan_max
  local t0 json bytes; t0="$(now_ms)"; plan_max=0
  while :; do
    json="$(kubectl get snd "$1" -n "$ns" -o json 2>/dev/null || echo '{}')"
    bytes="$(jq '.status.plan // null | if . == null then 0 else (tojson | length) end' <<<"$json")"
    if [ "$bytes" -gt "$plan_max" ]; then
      plan_max="$bytes"
      # BENCH_PLAN_DIR: keep the largest plan seen, for a look at where its bytes go.
      [ -z "${BENCH_PLAN_DIR:-}" ] || jq '.status.plan' <<<"$json" >"$BENCH_PLAN_DIR/$1.plan.json"
    fi
    [ "$(jq -r '.status.phase // ""' <<<"$json")" = "$2" ] && break
    if [ $(( $(now_ms) - t0 )) -gt $(( $3 * 1000 )) ]; then echo "timeout waiting for $1 to be $2" >&2; kubectl get snd "$1" -n "$ns" -o yaml | tail -30 >&2; exit 1; fi
    sleep 0.2
  done
}

for n in "${sizes[@]}"; do
  cat >"$work/g$n.yaml" <<YAML
apiVersion: sei.io/v1alpha1
kind: SeiNodeDeployment
metadata: {name: genesis-$n, namespace: $ns}
spec:
  replicas: $n
  template: {spec: {chainId: bench-$n, image: "seid:v1", validator: {}}}
  genesis: {chainId: bench-$n, maxCeremonyDuration: 10m}
YAML
  t0="$(now_ms)"
  kubectl apply -f "$work/g$n.yaml" >/dev/null
  wait_phase "genesis-$n" Ready "${CEREMONY_TIMEOUT:-600}"
  took=$(( $(now_ms) - t0 ))
  json="$(kubectl get snd "genesis-$n" -n "$ns" -o json)"
  echo "genesis ceremony, $n validators: Ready after $took ms; largest active plan $plan_max bytes;" \
    "planHistory $(jq '.status.planHistory | tojson | length' <<<"$json") bytes" \
    "($(jq -c '[.status.planHistory[] | {workflow, phase}]' <<<"$json")); status $(jq '.status | tojson | length' <<<"$json") bytes"
done
[ "$M" -gt 0 ] || exit 0

cat >"$work/fleet.yaml" <<YAML
apiVersion: sei.io/v1alpha1
kind: SeiNodeDeployment
metadata: {name: fleet, namespace: $ns}
spec:
  replicas: $M
  updateStrategy: {type: RollingUpdate, maxUnavailable: $U}
  template: {spec: {chainId: atlantic-2, image: "seid:v1", fullNode: {}}}
YAML
t0="$(now_ms)"
kubectl apply -f "$work/fleet.yaml" >/dev/null
wait_phase fleet Ready 600
echo "fleet of $M full nodes: Ready after $(( $(now_ms) - t0 )) ms"
t0="$(now_ms)"
kubectl patch snd fleet -n "$ns" --type merge -p '{"spec":{"template":{"spec":{"image":"seid:v2"}}}}' >/dev/null
sleep 0.5
until [ "$(kubectl get snode -n "$ns" -l sei.io/nodedeployment=fleet -o json | jq '[.items[] | select(.status.currentImage == "seid:v2" and .status.phase == "Running")] | length')" -ge "$M" ] \
  && [ "$(kubectl get snd fleet -n "$ns" -o jsonpath='{.status.phase}')" = Ready ]; do
  if [ $(( $(now_ms) - t0 )) -gt 600000 ]; then echo "timeout in the rollout" >&2; exit 1; fi
  sleep 0.2
done
echo "rolling update of $M nodes (maxUnavailable $U): done after $(( $(now_ms) - t0 )) ms"
ticks="$(getconf CLK_TCK)"
echo "operator CPU: $(awk -v t="$ticks" '{printf "%.2f", ($14+$15)/t}' "/proc/$op/stat")s, peak RSS: $(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' "/proc/$op/status")"
