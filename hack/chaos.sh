#!/usr/bin/env bash
# The heavy chaos run of issue 11, with printed figures (CI runs the small version of the same test):
#   hack/chaos.sh [KILLS=100] [NODES=20] [VALIDATORS=10]
# 1. KILLS operator lives over NODES SeiNode inits and image updates and a VALIDATORS-validator ceremony, each
#    life ending at a failpoint or in a SIGKILL, with the simulator failing 30 % of first executions and
#    restarting now and then, and the API server and etcd restarted once each mid-run; then one calm operator
#    finishes everything. Prints a table; fails when an attempt executed twice or a plan did not end.
# 2. The same with lookup-before-submit off (a third of the kills): must find duplicates.
# Needs the local cluster (`cargo xtask cluster up`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
kills="${1:-100}" nodes="${2:-20}" validators="${3:-10}"
export SEI_CHAOS_NODES="$nodes"
echo "== chaos: $kills kills, $nodes nodes, $validators validators, control plane restarts"
SEI_CHAOS_KILLS="$kills" SEI_CHAOS_VALIDATORS="$validators" SEI_CHAOS_CONTROL_PLANE=1 \
  cargo test -p sei-operator --test chaos -- --nocapture --exact \
  operator_kills_at_failpoints_and_sidecar_faults_never_run_an_attempt_twice 2>&1 |
  grep -E '^(\||chaos run|duplicate:|test result)'
echo "== the same with lookup-before-submit off: $((kills / 3)) kills over 5 nodes"
SEI_CHAOS_KILLS="$((kills / 3))" SEI_CHAOS_NODES=5 \
  cargo test -p sei-operator --test chaos -- --nocapture --exact \
  with_blind_submits_the_chaos_run_finds_duplicate_executions 2>&1 |
  grep -E '^(\||chaos run|duplicate:|test result)'
