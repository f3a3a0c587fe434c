#!/usr/bin/env bash
# Benchmark: genesis ceremonies of N validators and a rolling update of an M-node fleet, against an instant
# sidecar simulator, on the running local cluster.   Usage: hack/bench-fleet.sh [N...] (default: 4 20)
# Env: ROLLOUT_NODES (default 20), MAX_UNAVAILABLE (default 1), BENCH_PROFILE (debug|release).
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(4 20)
M="${ROLLOUT_NODES:-20}"; U="${MAX_UNAVAILABLE:-1}"
ns_prefix=bench-fleet
# shellcheck source=hack/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

wait_phase() { # name, phase, timeout seconds
  local t0; t0="$(now_ms)"
  until [ "$(kubectl get snd "$1" -n "$ns" -o jsonpath='{.status.phase}' 2>/dev/null)" = "$2" ]; do
    if [ $(( $(now_ms) - t0 )) -gt $(( $3 * 1000 )) ]; then echo "timeout waiting for $1 to be $2" >&2; kubectl get snd "$1" -n "$ns" -o yaml | tail -30 >&2; exit 1; fi
    sleep 0.1
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
  wait_phase "genesis-$n" Ready 300
  echo "genesis ceremony, $n validators: Ready after $(( $(now_ms) - t0 )) ms"
done

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
wait_phase fleet Ready 300
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
