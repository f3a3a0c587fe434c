#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
# kwok, jaeger) from Go modules into a cache directory outside the repository, keyed by the versions.
# Rebuilds only when the cache stamp is missing. Prints the cache directory on the last line of stdout.
set -euo pipefail

K8S=v1.36.3
STG=v0.36.3
ETCD=v3.6.16
KWOK=v0.8.0
JAEGER=v1.76.0
KEY="k8s${K8S#v}-etcd${ETCD#v}-kwok${KWOK#v}-jaeger${JAEGER#v}"
CACHE_ROOT="${SEI_TESTBIN_CACHE:-/var/cache/sei-operator}"
BIN="$CACHE_ROOT/testbin-$KEY"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false

if [ -f "$BIN/.stamp" ] && [ "$(cat "$BIN/.stamp")" = "$KEY" ]; then
  echo "$BIN"
  exit 0
fi
mkdir -p "$BIN"
log() { printf '[build-testbin %s] %s\n' "$(date +%T)" "$*" >&2; }
step() {
  local name="$1"; shift
  local t0=$SECONDS
  log "building $name"
  if ! "$@" >&2; then
    log "FAILED to build $name"
    exit 1
  fi
  log "built $name in $((SECONDS - t0))s"
}

build_etcd() {
  cd "$root/tools/etcd"
  go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
}

build_k8s() {
  cd "$root/tools/k8s"
  local ldf="-s -w -X k8s.io/component-base/version.gitVersion=$K8S -X k8s.io/component-base/version.gitMajor=1"
  ldf="$ldf -X k8s.io/component-base/version.gitMinor=36 -X k8s.io/component-base/version.gitTreeState=clean"
  ldf="$ldf -X k8s.io/component-base/version.buildDate=2026-01-01T00:00:00Z"
  go build -trimpath -ldflags "$ldf" -o "$BIN/" k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
}

build_kwok() {
  cd "$root/tools/kwok"
  go build -trimpath -ldflags "-s -w" -o "$BIN/kwok" sigs.k8s.io/kwok/cmd/kwok
  # The standalone kwok controller has no built-in stages: take the upstream ones from the module cache.
  local s
  s="$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK/kustomize/stage"
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    cat "$s/$f"; echo '---'
  done >"$BIN/kwok-stages.yaml"
}

build_jaeger() {
  cd "$root/tools/jaeger"
  go build -trimpath -ldflags "-s -w" -o "$BIN/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger
}

total0=$SECONDS
[ -x "$BIN/etcd" ] || step etcd build_etcd
[ -x "$BIN/kubectl" ] || step "kube-apiserver, kube-controller-manager, kube-scheduler, kubectl" build_k8s
[ -x "$BIN/kwok" ] || step kwok build_kwok
[ -x "$BIN/jaeger" ] || step jaeger build_jaeger
echo "$KEY" >"$BIN/.stamp"
log "all binaries ready in $BIN ($((SECONDS - total0))s)"
echo "$BIN"
