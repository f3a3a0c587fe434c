#!/usr/bin/env bash
# Benchmark: N SeiNodes created at once against an instant sidecar simulator, on the running local cluster.
# Prints the time until all are Running, per-node init latency, API requests by verb per node, status writes
# per node, the operator's CPU seconds and peak RSS.   Usage: hack/bench-nodes.sh [N] (default 10)
N="${1:-10}"
ns_prefix=bench
# shellcheck source=hack/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

for i in $(seq 0 $((N - 1))); do
  cat <<YAML
---
apiVersion: sei.io/v1alpha1
kind: SeiNode
metadata: {name: bench-$i, namespace: $ns}
spec: {chainId: atlantic-2, image: "seid:v1", fullNode: {}}
YAML
done >"$work/nodes.yaml"
t0="$(now_ms)"
kubectl apply -f "$work/nodes.yaml" >/dev/null
while :; do
  running="$(kubectl get snode -n "$ns" -o json | jq '[.items[] | select(.status.phase == "Running")] | length')"
  [ "$running" -ge "$N" ] && break
  if [ $(( $(now_ms) - t0 )) -gt 300000 ]; then echo "timeout: $running/$N Running after 300s" >&2; exit 1; fi
  sleep 0.1
done
t1="$(now_ms)"
latencies="$(kubectl get snode -n "$ns" -o json | jq -r '.items[] | .status.planHistory[0].finishedAt')"
lat_ms="$(for f in $latencies; do python3 -c "import datetime,sys; t=datetime.datetime.fromisoformat(sys.argv[1].replace('Z','+00:00')); print(int(t.timestamp()*1000)-$t0)" "$f"; done | sort -n)"
metrics="$(curl -fs "http://127.0.0.1:$port/metrics")"
ticks="$(getconf CLK_TCK)"
cpu="$(awk -v t="$ticks" '{printf "%.2f", ($14+$15)/t}' "/proc/$op/stat")"
rss="$(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' "/proc/$op/status")"
echo "nodes: $N ($profile build, instant simulator)"
echo "all Running after: $((t1 - t0)) ms"
echo "per-node init (apply -> plan finished): min $(echo "$lat_ms" | head -1) ms, median $(echo "$lat_ms" | sed -n "$(( (N + 1) / 2 ))p") ms, max $(echo "$lat_ms" | tail -1) ms"
echo "$metrics" | awk -v n="$N" '/^sei_kube_requests_total/ {match($0, /verb="[a-z]+"/); v=substr($0, RSTART+6, RLENGTH-7); printf "api %-7s %6d total  %6.1f per node\n", v, $2, $2/n}'
echo "$metrics" | awk -v n="$N" '/^sei_status_writes_total/ {printf "status writes %d total  %.1f per node\n", $2, $2/n}'
writes="$(echo "$metrics" | awk '/^sei_kube_requests_total/ && /verb="(create|update|patch|delete)"/ {s+=$2} END {print s+0}')"
echo "api writes (create+update+patch+delete): $writes total, $(awk -v w="$writes" -v n="$N" 'BEGIN{printf "%.1f", w/n}') per node"
echo "operator CPU: ${cpu}s, peak RSS: $rss"
