#!/usr/bin/env bash
# The demo: the local cluster, the CRDs, the sidecar simulator and the operator (both in the background, stopped
# by `cargo xtask cluster down`), then a sample SeiNode, printing its progress until it is Running.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
D="${SEI_CLUSTER_DIR:-$root/.cluster}"
SIM_PORT="${SEI_DEMO_SIM_PORT:-7777}"
OP_HTTP="${SEI_DEMO_HTTP_ADDR:-127.0.0.1:8080}"
WEBHOOK_PORT="${SEI_DEMO_WEBHOOK_PORT:-9443}"
log() { printf '[demo %s] %s\n' "$(date +%T)" "$*" >&2; }

"$root/hack/cluster.sh" up >/dev/null
# shellcheck disable=SC1091
source "$D/env"
kubectl() { "$SEI_CLUSTER_BIN/kubectl" "$@"; }

log "building the operator and the sidecar simulator"
(cd "$root" && cargo build --quiet -p sei-operator -p sei-tests --bin sei-operator --bin sidecar-sim)
target="$(cd "$root" && cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/debug"

log "installing the CRDs"
kubectl apply --server-side -f "$root/crds/generated/" >/dev/null
kubectl wait --for=condition=Established crd/seinodes.sei.io crd/seinodedeployments.sei.io \
  crd/workflowtemplates.sei.io crd/workflowruns.sei.io --timeout=30s >/dev/null

start_bg() { # name, then the command
  local name="$1"; shift
  local pid
  pid="$(cat "$D/pids/$name.pid" 2>/dev/null || true)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    log "$name already running (pid $pid)"
    return
  fi
  setsid "$@" >"$D/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$D/pids/$name.pid"
  log "started $name (pid $!, log $D/logs/$name.log)"
}

start_bg sidecar-sim "$target/sidecar-sim" --listen "127.0.0.1:$SIM_PORT" --bucket-dir "$D/bucket" --task-duration 300ms
# The WorkflowTemplate admission webhook: the apiserver calls the operator at https://127.0.0.1:$WEBHOOK_PORT.
W="$D/webhook"
"$root/hack/webhook-certs.sh" "$W"
start_bg sei-operator env KUBECONFIG="$KUBECONFIG" \
  SEI_WEBHOOK_ADDR="127.0.0.1:$WEBHOOK_PORT" SEI_WEBHOOK_CERT_DIR="$W" \
  SEI_SIDECAR_URL_TEMPLATE="http://127.0.0.1:$SIM_PORT/{namespace}/{name}" SEI_SIDECAR_ALLOW_UNAUTHENTICATED=true \
  SEI_HTTP_ADDR="$OP_HTTP" OTEL_EXPORTER_OTLP_ENDPOINT="$OTEL_EXPORTER_OTLP_ENDPOINT" \
  SEI_NAMESPACE=default SEI_LEASE_NAMESPACE=default "$target/sei-operator" run

kubectl apply -f - >/dev/null <<VWC
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: sei-operator-demo-workflowtemplates}
webhooks:
  - name: workflowtemplates.sei.io
    clientConfig:
      url: https://127.0.0.1:$WEBHOOK_PORT/validate-workflowtemplate
      caBundle: $(base64 -w0 "$W/ca.crt")
    rules:
      - {apiGroups: [sei.io], apiVersions: [v1alpha1], operations: [CREATE, UPDATE], resources: [workflowtemplates], scope: Namespaced}
    namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: default}}
    failurePolicy: Fail
    sideEffects: None
    admissionReviewVersions: [v1]
    timeoutSeconds: 5
VWC
log "registered the WorkflowTemplate admission webhook (namespace default)"

log "applying examples/demo/seinode.yaml"
kubectl apply -f "$root/examples/demo/seinode.yaml" >/dev/null
last=""
for _ in $(seq 1 240); do
  line="$(kubectl get snode demo-rpc -n default -o json | jq -r '
    [.status.phase // "-", (.status.plan.workflow // "-"),
     ((.status.plan.tasks // []) | map(.name + "=" + ((.runs // [{}])[0].state // "Pending")) | join(" "))] | join("  ")')"
  if [ "$line" != "$last" ]; then
    log "$line"
    last="$line"
  fi
  case "$line" in Running*) break ;; esac
  sleep 0.5
done
kubectl get snode,statefulset,pod,pvc -n default
cat <<MSG

The SeiNode demo-rpc is Running. Try:
  source $D/env
  kubectl get snode demo-rpc -o yaml          # status.planHistory holds the finished init plan
  kubectl patch snode demo-rpc --type merge -p '{"spec":{"image":"ghcr.io/sei-protocol/sei:v6.2.0"}}'
  kubectl get snode demo-rpc -w               # node-update runs, currentImage follows
  kubectl apply -f examples/workflows/upgrade-at-height.yaml   # your own workflows: README "Write your own workflow"
  curl -s http://$OP_HTTP/metrics             # operator metrics
  curl -s "\$JAEGER_QUERY_URL/api/services"     # traces
Stop everything with: cargo xtask cluster down
MSG
