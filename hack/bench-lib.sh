# Sourced by the bench-*.sh scripts: builds the operator and the simulator, makes a namespace, starts an
# instant sidecar simulator and an operator scoped to that namespace, and cleans up on exit.
# Sets: root, D, kubectl(), target, now_ms(), ns, work, sim, op, port.   Needs: $ns_prefix.
# Environment: BENCH_PROFILE (debug|release, default debug), TASK_DURATION (the simulator's time per sidecar task,
# default 0ms: instant), SEI_CONCURRENCY (the operator's, default its own), BENCH_KEEP=1 (keep the namespace),
# BENCH_NO_BUILD=1 (use the binaries already built), BENCH_OP_LOG (keep the operator's log there; SEI_LOG sets
# its level, default warn).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
D="${SEI_CLUSTER_DIR:-$root/.cluster}"
[ -f "$D/env" ] || { echo "the local cluster is not up: cargo xtask cluster up" >&2; exit 1; }
# shellcheck disable=SC1091
source "$D/env"
kubectl() { "$SEI_CLUSTER_BIN/kubectl" "$@"; }
profile="${BENCH_PROFILE:-debug}"
flag=""; [ "$profile" = release ] && flag="--release"
[ -n "${BENCH_NO_BUILD:-}" ] ||
  (cd "$root" && cargo build --quiet $flag -p sei-operator -p sei-tests --bin sei-operator --bin sidecar-sim --bin sei-bench)
task_duration="${TASK_DURATION:-0ms}"
target="$(cd "$root" && cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/$profile"
now_ms() { date +%s%3N; }
ns="$ns_prefix-$(date +%s)"
work="$(mktemp -d)"
cleanup() {
  [ -n "${op:-}" ] && kill "$op" 2>/dev/null || true
  [ -n "${sim:-}" ] && kill "$sim" 2>/dev/null || true
  [ -n "${BENCH_KEEP:-}" ] || release_ns "$ns"
  rm -rf "$work"
}
# Deletes a namespace the bench made and waits until it is gone, so the next run starts on an idle cluster:
# with the operator stopped, nothing removes the SeiNodes' finalizers, so they are removed here first (a
# namespace left Terminating is retried by its controller for ever: 0.7 of a core of apiserver CPU at idle
# after a few runs, which slowed every later run).
# Then waits for the claims' volumes to go too: the controller-manager's volume controller deletes them one at a
# time after the namespace is gone (1,000 volumes: minutes), and a run started meanwhile waits behind it (one
# node's pod took 14.6 s instead of 0.05 s right after a 1,000-node run).
release_ns() {
  "$target/sei-bench" release --namespace "$1" >/dev/null 2>&1 || true
  kubectl delete ns "$1" --wait=false >/dev/null 2>&1 || true
  kubectl wait --for=delete "namespace/$1" --timeout=600s >/dev/null 2>&1 || true
  for _ in $(seq 1 1200); do
    left="$(kubectl get pv -o json 2>/dev/null | jq --arg ns "$1" '[.items[] | select(.spec.claimRef.namespace == $ns)] | length')"
    [ "${left:-0}" = 0 ] && break
    sleep 0.5
  done
}
trap cleanup EXIT
kubectl apply --server-side --force-conflicts -f "$root/crds/generated/" >/dev/null
kubectl create ns "$ns" >/dev/null
"$target/sidecar-sim" --listen 127.0.0.1:0 --bucket-dir "$work/bucket" --task-duration "$task_duration" >"$work/sim.out" 2>"$work/sim.log" &
sim=$!
for _ in $(seq 1 100); do grep -q listening "$work/sim.out" 2>/dev/null && break; sleep 0.05; done
sim_addr="$(sed -n 's/^listening on //p' "$work/sim.out")"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
KUBECONFIG="$KUBECONFIG" SEI_NAMESPACE="$ns" SEI_LEASE_NAMESPACE="$ns" SEI_HTTP_ADDR="127.0.0.1:$port" \
  SEI_SIDECAR_URL_TEMPLATE="http://$sim_addr/{namespace}/{name}" SEI_SIDECAR_ALLOW_UNAUTHENTICATED=true SEI_LOG="${SEI_LOG:-warn}" \
  "$target/sei-operator" run >"${BENCH_OP_LOG:-$work/op.log}" 2>&1 &
op=$!
for _ in $(seq 1 200); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.05; done
sleep 1 # leadership + informers
