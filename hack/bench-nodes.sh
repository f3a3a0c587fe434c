#!/usr/bin/env bash
# Benchmark: N SeiNodes created at once (32 requests in flight) on the running local cluster, against a sidecar
# simulator whose tasks take TASK_DURATION each.
#   Usage: hack/bench-nodes.sh [N] [TASK_DURATION]        (defaults: 10, 0ms; BENCH_PROFILE=release for figures)
# Prints: time to the first and to all Running (a watch, from the first create), per-node init latency, the
# operator's API requests by verb per node, status writes and reconciles per node, operator CPU seconds and peak
# RSS; then, with the operator stopped, the apiserver's own throughput for the same number of status writes
# from a minimal client (16 at a time, as the operator's default concurrency), and the ratio of the two.
# Last, the cluster alone: N claims and one-pod StatefulSets created at once with no operator (sei-bench cluster),
# the floor under "all Running" (PV binding by the controller-manager dominates it), and the ratio to it
# (BENCH_SKIP_CLUSTER=1 skips this part).
N="${1:-10}"
export TASK_DURATION="${2:-${TASK_DURATION:-0ms}}"
ns_prefix=bench
# shellcheck source=hack/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

bench() { "$target/sei-bench" "$@"; }
bench wait --namespace "$ns" --count "$N" --timeout 600s >"$work/wait.out" 2>"$work/wait.err" &
waiter=$!
for _ in $(seq 1 100); do grep -q watching "$work/wait.err" 2>/dev/null && break; sleep 0.05; done
sleep 0.5
load="$(cut -d' ' -f1-3 /proc/loadavg)"
cpu_before="$(awk '{print $14+$15}' "/proc/$op/stat")"
t0="$(now_ms)"
bench create --namespace "$ns" --count "$N" >"$work/create.out"
if ! wait "$waiter"; then cat "$work/wait.err" >&2; exit 1; fi
first="$(sed -n 's/^first_running_unix_ms=//p' "$work/wait.out")"
all="$(sed -n 's/^all_running_unix_ms=//p' "$work/wait.out")"
metrics="$(curl -fs "http://127.0.0.1:$port/metrics")"
ticks="$(getconf CLK_TCK)"
cpu="$(awk -v t="$ticks" -v b="$cpu_before" '{printf "%.2f", ($14+$15-b)/t}' "/proc/$op/stat")"
rss="$(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' "/proc/$op/status")"
kill "$op" 2>/dev/null; wait "$op" 2>/dev/null || true; op=""
finished="$(kubectl get snode -n "$ns" -o json | jq -r '.items[] | .status.planHistory[0].finishedAt')"
lat_ms="$(python3 -c '
import datetime, sys
t0 = int(sys.argv[1])
for f in sys.stdin.read().split():
    t = datetime.datetime.fromisoformat(f.replace("Z", "+00:00"))
    print(int(t.timestamp() * 1000) - t0)' "$t0" <<<"$finished" | sort -n)"
echo "nodes: $N ($profile build, sidecar tasks ${TASK_DURATION}, load before: $load)"
echo "$(cat "$work/create.out")"
echo "first Running after: $((first - t0)) ms"
echo "all Running after: $((all - t0)) ms"
echo "per-node init (create -> plan finished): min $(echo "$lat_ms" | head -1) ms, median $(echo "$lat_ms" | sed -n "$(( (N + 1) / 2 ))p") ms, max $(echo "$lat_ms" | tail -1) ms"
echo "$metrics" | awk -v n="$N" '/^sei_kube_requests_total/ {match($0, /verb="[a-z]+"/); v=substr($0, RSTART+6, RLENGTH-7); printf "api %-7s %7d total  %6.1f per node\n", v, $2, $2/n}'
writes="$(echo "$metrics" | awk '/^sei_kube_requests_total/ && /verb="(create|update|patch|delete)"/ {s+=$2} END {print s+0}')"
echo "api writes (create+update+patch+delete): $writes total, $(awk -v w="$writes" -v n="$N" 'BEGIN{printf "%.1f", w/n}') per node"
status_writes="$(echo "$metrics" | awk '/^sei_status_writes_total/ {s+=$2} END {print s+0}')"
echo "status writes: $status_writes total, $(awk -v w="$status_writes" -v n="$N" 'BEGIN{printf "%.1f", w/n}') per node"
echo "$metrics" | awk -v n="$N" '/^sei_reconciles_total/ {match($0, /kind="[A-Za-z]+"/); printf "reconciles (%s): %d total, %.1f per node\n", substr($0, RSTART+6, RLENGTH-7), $2, $2/n}'
echo "$metrics" | awk -v n="$N" '/^sei_reconcile_errors_total/ {s+=$2} END {printf "reconcile errors (backed off): %d total, %.2f per node\n", s, s/n}'
echo "$metrics" | awk -v n="$N" '/^sei_reconcile_conflicts_total/ {s+=$2} END {printf "write conflicts (409, retried): %d total, %.2f per node\n", s, s/n}'
echo "operator CPU: ${cpu}s, peak RSS: $rss"
baseline="$(bench status-writes --namespace "$ns" --count "$status_writes" --concurrency 16)"
echo "$baseline"
base_ms="$(sed -n 's/.* in \([0-9]*\) ms.*/\1/p' <<<"$baseline")"
echo "ratio: all Running in $((all - t0)) ms / the same status writes alone in ${base_ms} ms = $(awk -v a="$((all - t0))" -v b="$base_ms" 'BEGIN{printf "%.1f", a/b}')x"
# The cluster alone (no operator): the same number of claims and one-pod StatefulSets created at once.
[ -z "${BENCH_SKIP_CLUSTER:-}" ] || exit 0
kubectl create ns "$ns-cluster" >/dev/null
cluster_out="$(bench cluster --namespace "$ns-cluster" --count "$N")"
[ -n "${BENCH_KEEP:-}" ] || release_ns "$ns-cluster"
echo "$cluster_out"
cluster_ms="$(sed -n 's/.*all after \([0-9]*\) ms.*/\1/p' <<<"$cluster_out")"
echo "operator overhead: all Running in $((all - t0)) ms vs the cluster alone in ${cluster_ms} ms: $(awk -v a="$((all - t0))" -v b="$cluster_ms" 'BEGIN{printf "%.2f", a/b}')x"
