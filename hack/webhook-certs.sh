#!/usr/bin/env bash
# A CA and a serving certificate for the operator's admission webhook on the local cluster, where the
# apiserver calls it at https://127.0.0.1:<port> (so the certificate's SAN is IP:127.0.0.1).
# Usage: hack/webhook-certs.sh DIR   -> DIR/ca.crt, DIR/tls.crt, DIR/tls.key (kept when they exist).
# In a real cluster use cert-manager or your own CA for the Service's DNS name: see deploy/webhook/.
set -euo pipefail
dir="${1:?usage: $0 DIR}"
mkdir -p "$dir"
cd "$dir"
[ -s tls.crt ] && [ -s tls.key ] && [ -s ca.crt ] && exit 0
openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj /CN=sei-operator-local-ca \
  -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout tls.key -out tls.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' > san.ext
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 -extfile san.ext \
  -out tls.crt 2>/dev/null
rm -f tls.csr san.ext ca.srl
