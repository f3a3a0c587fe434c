#!/usr/bin/env bash
# Builds crane (github.com/google/go-containerregistry, the OCI image tool) from its Go module into a cache
# directory outside the repository, keyed by the version, and prints the binary's path on the last line of
# stdout. Rebuilds only when the binary is missing. Used by `cargo xtask image`.
set -euo pipefail

CRANE=v0.22.1
CACHE_ROOT="${SEI_TESTBIN_CACHE:-/var/cache/sei-operator}"
DIR="$CACHE_ROOT/crane-${CRANE#v}"

if [ -x "$DIR/crane" ]; then
  echo "$DIR/crane"
  exit 0
fi
mkdir -p "$DIR"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
t0=$SECONDS
printf '[build-crane %s] building crane %s (go install)\n' "$(date +%T)" "$CRANE" >&2
GOBIN="$DIR.tmp" go install -trimpath -ldflags "-s -w" "github.com/google/go-containerregistry/cmd/crane@$CRANE" >&2
mv "$DIR.tmp/crane" "$DIR/crane" && rmdir "$DIR.tmp"
printf '[build-crane %s] built crane in %ss\n' "$(date +%T)" "$((SECONDS - t0))" >&2
echo "$DIR/crane"
