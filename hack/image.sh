#!/usr/bin/env bash
# Writes the operator's OCI image without Docker, with crane (go-containerregistry, built by hack/build-crane.sh).
#
#   hack/image.sh BINARY OUTDIR
#
# Environment: IMAGE_VERSION and IMAGE_SOURCE (required, the org.opencontainers.image.version/source labels),
# IMAGE_REVISION (the commit; empty when unknown), IMAGE_NAME (default sei-operator).
#
# The image (kept in sync with the Dockerfile by operator/tests/image.rs):
#   - one layer: the binary at /usr/local/bin/sei-operator, the shared libraries it loads (from `ldd`, at the
#     same paths, so the binary runs unchanged), /etc/passwd and /etc/group with the user nonroot (65532),
#     the CA bundle of the build machine, an empty /tmp;
#   - config: user 65532:65532, entrypoint the binary, cmd `run`, platform linux/amd64, OCI labels.
# Output: OUTDIR/oci (an OCI image layout: `crane push OUTDIR/oci <registry>/sei-operator:<tag>`),
# OUTDIR/sei-operator.tar (a `docker load`/`kind load image-archive` tarball tagged IMAGE_NAME:IMAGE_VERSION)
# and OUTDIR/digest. Layer timestamps are fixed (SOURCE_DATE_EPOCH, default 0), so the same binary gives the
# same layer.
set -euo pipefail

[ $# -eq 2 ] || { echo "usage: $0 BINARY OUTDIR" >&2; exit 2; }
binary="$(realpath "$1")"
out="$2"
: "${IMAGE_VERSION:?IMAGE_VERSION is required}" "${IMAGE_SOURCE:?IMAGE_SOURCE is required}"
name="${IMAGE_NAME:-sei-operator}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
crane="$("$root/hack/build-crane.sh" | tail -n1)"
log() { printf '[image %s] %s\n' "$(date +%T)" "$*" >&2; }

work="$(mktemp -d)"
registry_pid=""
cleanup() {
  if [ -n "$registry_pid" ]; then kill "$registry_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# ---- the root filesystem
fs="$work/rootfs"
mkdir -p "$fs/usr/local/bin" "$fs/etc/ssl/certs" "$fs/tmp" "$fs/home/nonroot"
chmod 1777 "$fs/tmp"
install -m 0755 "$binary" "$fs/usr/local/bin/sei-operator"
# Every library the dynamic loader maps (`ldd` prints "name => /path (addr)" and the loader as "/path (addr)"),
# copied (symlinks followed) to the path the binary asks for.
ldd "$binary" | awk '{for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i}' | sort -u | while read -r lib; do
  mkdir -p "$fs$(dirname "$lib")"
  cp -L "$lib" "$fs$lib"
done
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
  >"$fs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$fs/etc/group"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp -L /etc/ssl/certs/ca-certificates.crt "$fs/etc/ssl/certs/ca-certificates.crt"
fi
chown 65532:65532 "$fs/home/nonroot" 2>/dev/null || log "not root: /home/nonroot stays owned by $(id -u)"
(cd "$fs" && find . -mindepth 1 | sed 's|^\./||' | LC_ALL=C sort) >"$work/files"
tar --no-recursion --numeric-owner --mtime="@${SOURCE_DATE_EPOCH:-0}" -C "$fs" -cf "$work/layer.tar" -T "$work/files"

# ---- the image, through a registry in this process tree (crane mutate works on a registry)
"$crane" registry serve --address 127.0.0.1:0 2>"$work/registry.log" &
registry_pid=$!
port=""
for _ in $(seq 100); do
  port="$(sed -n 's/.*serving on port \([0-9]*\).*/\1/p' "$work/registry.log")"
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { cat "$work/registry.log" >&2; echo "crane registry did not start" >&2; exit 1; }
ref="127.0.0.1:$port/$name"

log "layer $(du -h "$work/layer.tar" | cut -f1) ($(wc -l <"$work/files") entries)"
"$crane" append --oci-empty-base -f "$work/layer.tar" -t "$ref:layer" >/dev/null
labels=(-l "org.opencontainers.image.title=$name" -l "org.opencontainers.image.version=$IMAGE_VERSION"
  -l "org.opencontainers.image.source=$IMAGE_SOURCE" -l "org.opencontainers.image.licenses=Apache-2.0"
  -l "org.opencontainers.image.revision=${IMAGE_REVISION:-}")
"$crane" mutate "$ref:layer" -t "$ref:$IMAGE_VERSION" --set-platform linux/amd64 \
  --entrypoint /usr/local/bin/sei-operator --cmd run --user 65532:65532 --workdir / "${labels[@]}" >/dev/null

rm -rf "$out/oci" "$out/$name.tar"
mkdir -p "$out"
"$crane" pull --format=oci "$ref:$IMAGE_VERSION" "$out/oci"
# A no-op mutate writes the same image as a tarball tagged IMAGE_NAME:IMAGE_VERSION (not the local registry).
"$crane" mutate "$ref:$IMAGE_VERSION" -t "$name:$IMAGE_VERSION" -o "$out/$name.tar" >/dev/null
"$crane" digest "$ref:$IMAGE_VERSION" >"$out/digest"
log "wrote $out/oci and $out/$name.tar ($(du -sh "$out/oci" | cut -f1), digest $(cat "$out/digest"))"
