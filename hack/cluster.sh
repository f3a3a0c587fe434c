#!/usr/bin/env bash
# The local control plane: real etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok and Jaeger,
# built from Go modules (hack/build-testbin.sh) and run on 127.0.0.1 only.
#
#   hack/cluster.sh up       build the binaries if the cache is missing, start everything, wait until healthy
#   hack/cluster.sh down     stop every process this script started, by PID, and remove the state directory
#   hack/cluster.sh status   show each component's PID and health
#   hack/cluster.sh env      print the env file (source it: `source "$(hack/cluster.sh env-path)"`)
#   hack/cluster.sh env-path print the path of the env file
#
# `cargo xtask cluster <cmd>` runs this script.
#
# State lives in $SEI_CLUSTER_DIR (default: <repo>/.cluster): pki/, kubeconfig, env, logs/<component>.log,
# pids/<component>.pid. Ports are fixed so that the demo and the docs can name them; override with the
# SEI_*_PORT variables below if one is taken. SEI_APISERVER_PROFILING=true serves the API server's
# /debug/pprof (how BENCHMARKS.md's API server profiles were taken; off by default, as in production).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
D="${SEI_CLUSTER_DIR:-$root/.cluster}"
ETCD_PORT="${SEI_ETCD_PORT:-23790}"
ETCD_PEER_PORT="${SEI_ETCD_PEER_PORT:-23800}"
API_PORT="${SEI_APISERVER_PORT:-6443}"
KCM_PORT="${SEI_KCM_PORT:-10257}"
SCHED_PORT="${SEI_SCHEDULER_PORT:-10259}"
OTLP_GRPC_PORT="${SEI_OTLP_GRPC_PORT:-4317}"
OTLP_HTTP_PORT="${SEI_OTLP_HTTP_PORT:-4318}"
JAEGER_QUERY_PORT="${SEI_JAEGER_QUERY_PORT:-16686}"
JAEGER_GRPC_PORT="${SEI_JAEGER_GRPC_PORT:-16685}"
JAEGER_HEALTH_PORT="${SEI_JAEGER_HEALTH_PORT:-13133}"
NODE_NAME="kwok-node-0"
# Order matters: started left to right, stopped right to left.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok jaeger)

log() { printf '[cluster %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "$*"; exit 1; }

pid_of() { cat "$D/pids/$1.pid" 2>/dev/null || true; }

# A PID file is trusted only while that PID still runs the binary we started (PIDs get reused).
alive() {
  local pid
  pid="$(pid_of "$1")"
  [ -n "$pid" ] || return 1
  [ -r "/proc/$pid/cmdline" ] || return 1
  local argv0
  argv0="$(tr '\0' '\n' <"/proc/$pid/cmdline" | head -n 1)"
  [ "$(basename "$argv0")" = "$1" ] || return 1
}

port_free() { ! ss -Hltn "sport = :$1" | grep -q .; }

curl_api() {
  curl -fsS --max-time 5 --cacert "$D/pki/ca.crt" --cert "$D/pki/admin.crt" --key "$D/pki/admin.key" \
    "https://127.0.0.1:$API_PORT$1"
}

health() {
  case "$1" in
    etcd) curl -fsS --max-time 3 "http://127.0.0.1:$ETCD_PORT/health" 2>/dev/null | grep -q '"health":"true"' ;;
    kube-apiserver) [ "$(curl_api /readyz 2>/dev/null)" = ok ] ;;
    kube-controller-manager) [ "$(curl -fsSk --max-time 3 "https://127.0.0.1:$KCM_PORT/healthz" 2>/dev/null)" = ok ] ;;
    kube-scheduler) [ "$(curl -fsSk --max-time 3 "https://127.0.0.1:$SCHED_PORT/healthz" 2>/dev/null)" = ok ] ;;
    kwok)
      curl_api "/api/v1/nodes/$NODE_NAME" 2>/dev/null |
        jq -e '.status.conditions[]? | select(.type=="Ready" and .status=="True")' >/dev/null
      ;;
    jaeger) curl -fsS --max-time 3 "http://127.0.0.1:$JAEGER_HEALTH_PORT/status" >/dev/null 2>&1 ;;
  esac
}

gen_pki() {
  local p="$D/pki"
  mkdir -p "$p"
  [ -f "$p/admin.crt" ] && return 0
  (
    cd "$p"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -subj /CN=sei-local-ca -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=kube-apiserver \
      -keyout apiserver.key -out apiserver.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' >apiserver.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile apiserver.ext -out apiserver.crt 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/O=system:masters/CN=admin" \
      -keyout admin.key -out admin.csr 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n' >admin.ext
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile admin.ext -out admin.crt 2>/dev/null
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key 2>/dev/null
    rm -f ./*.csr ./*.ext
  )
}

write_kubeconfig() {
  local b64="base64 -w0"
  cat >"$D/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: sei-local
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $($b64 <"$D/pki/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $($b64 <"$D/pki/admin.crt")
    client-key-data: $($b64 <"$D/pki/admin.key")
contexts:
- name: sei-local
  context: {cluster: sei-local, user: admin}
current-context: sei-local
EOF
  chmod 600 "$D/kubeconfig"
}

write_jaeger_config() {
  cat >"$D/jaeger.yaml" <<EOF
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces: {receivers: [otlp], processors: [batch], exporters: [jaeger_storage_exporter]}
  telemetry: {metrics: {level: none}, logs: {level: info}}
extensions:
  healthcheckv2: {use_v2: true, http: {endpoint: "127.0.0.1:$JAEGER_HEALTH_PORT"}}
  jaeger_storage: {backends: {mem: {memory: {max_traces: 100000}}}}
  jaeger_query:
    storage: {traces: mem}
    enable_tracing: false
    http: {endpoint: "127.0.0.1:$JAEGER_QUERY_PORT"}
    grpc: {endpoint: "127.0.0.1:$JAEGER_GRPC_PORT"}
receivers:
  otlp:
    protocols:
      grpc: {endpoint: "127.0.0.1:$OTLP_GRPC_PORT"}
      http: {endpoint: "127.0.0.1:$OTLP_HTTP_PORT"}
processors: {batch: {timeout: 200ms}}
exporters: {jaeger_storage_exporter: {trace_storage: mem}}
EOF
}

# Audit log of every write (Metadata level: who, what, when, the answer; no bodies), so tests can prove which
# client wrote what and when (e.g. that a fenced former leader wrote nothing after a takeover).
write_audit_policy() {
  cat >"$D/audit-policy.yaml" <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    verbs: [get, list, watch]
  - level: Metadata
EOF
}

write_env() {
  cat >"$D/env" <<EOF
export KUBECONFIG=$D/kubeconfig
export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$OTLP_GRPC_PORT
export JAEGER_QUERY_URL=http://127.0.0.1:$JAEGER_QUERY_PORT
export SEI_CLUSTER_BIN=$BIN
EOF
}

cmdline() {
  case "$1" in
    etcd)
      echo "$BIN/etcd --name=sei-local --data-dir=$D/data/etcd \
        --listen-client-urls=http://127.0.0.1:$ETCD_PORT --advertise-client-urls=http://127.0.0.1:$ETCD_PORT \
        --listen-peer-urls=http://127.0.0.1:$ETCD_PEER_PORT --initial-advertise-peer-urls=http://127.0.0.1:$ETCD_PEER_PORT \
        --initial-cluster=sei-local=http://127.0.0.1:$ETCD_PEER_PORT \
        --unsafe-no-fsync=true --log-level=warn"
      ;;
    kube-apiserver)
      echo "$BIN/kube-apiserver --etcd-servers=http://127.0.0.1:$ETCD_PORT \
        --bind-address=127.0.0.1 --secure-port=$API_PORT --advertise-address=127.0.0.1 \
        --endpoint-reconciler-type=none \
        --tls-cert-file=$D/pki/apiserver.crt --tls-private-key-file=$D/pki/apiserver.key \
        --client-ca-file=$D/pki/ca.crt \
        --service-account-issuer=https://127.0.0.1:$API_PORT \
        --service-account-key-file=$D/pki/sa.key --service-account-signing-key-file=$D/pki/sa.key \
        --service-cluster-ip-range=10.96.0.0/16 --authorization-mode=Node,RBAC \
        --allow-privileged=true --profiling=${SEI_APISERVER_PROFILING:-false} --v=1 \
        --audit-policy-file=$D/audit-policy.yaml --audit-log-path=$D/logs/audit.log --audit-log-format=json \
        --audit-log-maxsize=200 --audit-log-maxbackup=1"
      ;;
    # Client rate limits as a production control plane of this size would have them: the defaults (20 qps for
    # the controller-manager, 50 for the scheduler) are sized for small clusters; raised to 100 (burst 200),
    # which the StatefulSet, PV and scheduling work of 1,000 nodes created at once needs (BENCHMARKS.md).
    kube-controller-manager)
      echo "$BIN/kube-controller-manager --kubeconfig=$D/kubeconfig --leader-elect=false \
        --bind-address=127.0.0.1 --secure-port=$KCM_PORT \
        --authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics \
        --service-account-private-key-file=$D/pki/sa.key --root-ca-file=$D/pki/ca.crt \
        --use-service-account-credentials=false --enable-hostpath-provisioner=true \
        --controllers=* --concurrent-statefulset-syncs=5 --kube-api-qps=100 --kube-api-burst=200 --v=1"
      ;;
    kube-scheduler)
      echo "$BIN/kube-scheduler --kubeconfig=$D/kubeconfig --leader-elect=false \
        --bind-address=127.0.0.1 --secure-port=$SCHED_PORT \
        --authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics --kube-api-qps=100 --kube-api-burst=200 --v=1"
      ;;
    kwok)
      echo "$BIN/kwok --kubeconfig=$D/kubeconfig --config=$BIN/kwok-stages.yaml \
        --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
        --node-lease-duration-seconds=40 --cidr=10.244.0.0/16 --node-ip=127.0.0.1"
      ;;
    jaeger)
      echo "$BIN/jaeger --config=$D/jaeger.yaml"
      ;;
  esac
}

ports_of() {
  case "$1" in
    etcd) echo "$ETCD_PORT $ETCD_PEER_PORT" ;;
    kube-apiserver) echo "$API_PORT" ;;
    kube-controller-manager) echo "$KCM_PORT" ;;
    kube-scheduler) echo "$SCHED_PORT" ;;
    kwok) echo "" ;;
    jaeger) echo "$OTLP_GRPC_PORT $OTLP_HTTP_PORT $JAEGER_QUERY_PORT $JAEGER_GRPC_PORT $JAEGER_HEALTH_PORT" ;;
  esac
}

start_one() {
  local c="$1" timeout="$2" p t0
  if alive "$c" && health "$c"; then
    log "$c already running (pid $(pid_of "$c"))"
    return 0
  fi
  for p in $(ports_of "$c"); do
    port_free "$p" || die "$c cannot start: port 127.0.0.1:$p is already in use ($(ss -Hltnp "sport = :$p" | awk '{print $NF}' | head -1)); stop it or set the matching SEI_*_PORT"
  done
  # setsid: the process survives this shell, and Ctrl-C in the terminal that ran `up` does not kill it.
  # shellcheck disable=SC2046
  setsid $(cmdline "$c") >"$D/logs/$c.log" 2>&1 </dev/null &
  echo $! >"$D/pids/$c.pid"
  t0=$SECONDS
  until health "$c"; do
    if ! alive "$c"; then
      log "$c FAILED to start: the process exited. Log: $D/logs/$c.log (last lines below)"
      tail -n 20 "$D/logs/$c.log" >&2 || true
      exit 1
    fi
    if ((SECONDS - t0 > timeout)); then
      log "$c FAILED to start: not healthy after ${timeout}s. Log: $D/logs/$c.log (last lines below)"
      tail -n 20 "$D/logs/$c.log" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
  log "$c ready in $((SECONDS - t0))s (pid $(pid_of "$c"))"
}

kubectl_local() { KUBECONFIG="$D/kubeconfig" "$BIN/kubectl" "$@"; }

register_node_and_storage() {
  kubectl_local apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $NODE_NAME
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: $NODE_NAME
    node-role.kubernetes.io/agent: ""
spec: {}
---
# Dynamic provisioning by kube-controller-manager's own hostPath provisioner (--enable-hostpath-provisioner):
# PVCs bind without a CSI driver, and Delete reclaims the directory under /tmp/hostpath_pv.
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kubernetes.io/host-path
reclaimPolicy: Delete
volumeBindingMode: Immediate
EOF
}

cmd_up() {
  local t0=$SECONDS
  BIN="$("$root/hack/build-testbin.sh")" || die "building the control plane binaries failed (see the messages above)"
  log "binaries: $BIN (build or cache check took $((SECONDS - t0))s)"
  mkdir -p "$D/logs" "$D/pids" "$D/data"
  gen_pki
  write_kubeconfig
  write_jaeger_config
  write_audit_policy
  write_env
  local t1=$SECONDS
  start_one etcd 30
  start_one kube-apiserver 90
  start_one kube-controller-manager 60
  start_one kube-scheduler 60
  register_node_and_storage
  # Room for many nodes' requests (upstream defaults ask for up to 64 CPUs / 512Gi per pod): kwok's
  # node-initialize stage keeps capacity that is already set.
  kubectl_local patch node "$NODE_NAME" --subresource=status --type=merge -p \
    '{"status":{"capacity":{"cpu":"100000","memory":"1000Ti","pods":"10000"},"allocatable":{"cpu":"100000","memory":"1000Ti","pods":"10000"}}}' >/dev/null
  start_one kwok 60
  start_one jaeger 60
  log "cluster up in $((SECONDS - t1))s; env file: $D/env"
  echo "$D/env"
}

stop_one() {
  local c="$1" pid i
  pid="$(pid_of "$c")"
  if [ -z "$pid" ]; then return 0; fi
  if alive "$c"; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
      alive "$c" || break
      sleep 0.1
    done
    if alive "$c"; then
      log "$c (pid $pid) did not stop in 10s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped $c (pid $pid)"
  fi
  rm -f "$D/pids/$c.pid"
}

cmd_down() {
  local i
  [ -d "$D" ] || { log "no cluster state at $D"; return 0; }
  # Started by the demo (hack/demo.sh), if it ran.
  stop_one sei-operator
  stop_one sidecar-sim
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    stop_one "${COMPONENTS[$i]}"
  done
  rm -rf "$D"
  log "cluster down"
}

cmd_status() {
  local c rc=0 state
  [ -f "$D/env" ] || { echo "cluster: not up (no $D/env)"; return 1; }
  # shellcheck disable=SC1091
  BIN="$(sed -n 's/^export SEI_CLUSTER_BIN=//p' "$D/env")"
  for c in "${COMPONENTS[@]}"; do
    if ! alive "$c"; then
      state="not running"; rc=1
    elif health "$c"; then
      state="healthy"
    else
      state="running, NOT healthy"; rc=1
    fi
    printf '%-24s pid %-8s %-22s log %s\n' "$c" "$(pid_of "$c")" "$state" "$D/logs/$c.log"
  done
  echo "env file: $D/env"
  return $rc
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cat "$D/env" ;;
  env-path) echo "$D/env" ;;
  build) "$root/hack/build-testbin.sh" ;;
  *)
    sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
