//! `sidecar-sim`: many virtual Sei sidecars on 127.0.0.1 (see `sei_tests::sim` and `--help`).

use std::io::{IsTerminal as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use sei_tests::sim::{self, FaultSpec, faults};

const ABOUT: &str = "\
Simulates the Sei node sidecar (`seictl serve`) of any number of nodes on one port of 127.0.0.1.

The sidecar of node NAME in namespace NS is served under /NS/NAME/v0/... and created on first use, so point the
operator's sidecar URL template at http://127.0.0.1:PORT/{namespace}/{name}. The first line on stdout is the bound
address (`listening on 127.0.0.1:PORT`); logs go to stderr (RUST_LOG, default info).

All state is in memory: stopping the process forgets every node, task, ready flag and fault (genesis artifacts
stay in the bucket directory).";

const AFTER: &str = "\
SIDECAR API (per node, prefix /NS/NAME)
  POST   /v0/tasks          {\"id\"?: uuid, \"type\": TYPE, \"params\"?: {...}} -> 201 {\"id\"}; 400 {\"error\"} for bad
                            JSON, missing or unknown type, non-UUID id. Idempotent by id: running/completed ->
                            no-op; failed -> runs again with run+1.
  GET    /v0/tasks          the 100 most recent tasks, newest first
  GET    /v0/tasks/ID       {id, type, status: running|completed|failed, run, params, result, error,
                            submittedAt, completedAt}; 404 {\"error\":\"task not found\"}
  DELETE /v0/tasks/ID       204 (cancels and forgets the task); 404
  GET    /v0/healthz        200 once a mark-ready task completed, 503 before and after mark-not-ready/restart
                            (also /v0/startupz; /v0/livez is always 200; /v0/status is Ready|Initializing)
  GET    /v0/node-id        {\"nodeId\": hex(SHA-256(ed25519 pubkey)[:20])}; 500 until generate-identity ran

TASK TYPES (each stays running for --task-duration, then):
  snapshot-restore, config-apply, config-patch (needs params.files), config-validate, configure-state-sync
                                                             succeed
  mark-ready / mark-not-ready                                set / clear the ready flag
  generate-identity {chainId, moniker}                       creates the node key; result {nodeId}
  generate-gentx {chainId?, stakingAmount, accountBalance}   signs a gentx with the node key
  upload-genesis-artifacts {nodeName?, chainId?}             writes CHAIN/NODE/gentx.json and identity.json
  assemble-and-upload-genesis {chainId?, namespace?, nodes: [NAME | {name}], accountBalance?, accounts?,
                              overrides?}                    stays running until every node's artifacts exist,
                                                             verifies the gentx signatures, writes
                                                             CHAIN/genesis.json and CHAIN/peers.json; result
                                                             {genesisHash: sha256 hex of genesis.json}
  configure-genesis {expectedGenesisHash?, chainId?}        reads CHAIN/genesis.json; fails on a hash mismatch
                                                             (naming both hashes) or while it is missing on a
                                                             ceremony node; other nodes use an embedded genesis
  set-genesis-peers {chainId?}                               reads CHAIN/peers.json; result {peers} without self
  stop-seid                                                  stops the node's seid (its RPC stops answering);
                                                             result {stopped, height}; a no-op when stopped
  restart-seid                                               starts seid again; after reset-data it reports
                                                             catching_up for 2s; result {height, restarts}
  reset-data                                                 fails while seid runs; result {wipedBytes}
  await-condition {condition: height|catchingUp, targetHeight?, action?: SIGTERM_SEID}
                                                             stays running until the node's height >= target
                                                             (or it is caught up), then runs the action;
                                                             result {observedValue, height}
  gov-vote {proposalId, option, memo?, keyName?, ...}        one broadcast per execution, memo + taskID=ID;
  gov-software-upgrade {title, upgradeName, upgradeHeight,   result {txHash, height, proposalId?, code,
                        ...}                                 codespace, rawLog, inclusionStatus}; a vote on an
  gov-param-change {title, changes: [..], ...}               unknown proposal (code 2) or an upgrade height not
                                                             in the future (code 18) fails committed_failed
  snapshot-upload-once {chainId?}                            (the catalogue's snapshot-now) writes
                                                             CHAIN/state-sync/HEIGHT.tar.gz; result {height, key}
  chainId defaults to the one given to generate-identity. The chain starts at height 1 and makes a block every
  400ms (see /admin/chain); every node's seid starts running at the chain's height.
  Node keys are derived from (namespace, name): seed = SHA-256(\"sei-sidecar-sim/node-key/v1\" 0 NS 0 NAME), so a
  node keeps its id across simulator restarts, as a real node keeps node_key.json on its volume.

FAULTS
  SELECTOR is TYPE, TYPE@NS/NAME, @NS/NAME or * (everything). Flags may repeat; faults fire in the order given.
  --fail SELECTOR[:N]             the next N executions (default 1) of selected tasks end failed with an error
                                  (config-validate fails with {\"diagnostics\": [...]} in its result)
  --latency SELECTOR=DURATION     delays the HTTP responses of selected sidecar requests (a client timeout
                                  shorter than this sees a timeout); with a TYPE, requests about such tasks
  --duration SELECTOR=DURATION    selected tasks stay running this long
  --http-status SELECTOR=CODE[:N] selected sidecar requests answer CODE (e.g. 503) N times (default: until cleared)
  Through the admin API only: tx-code (the next gov broadcast is included with ABCI \"code\" and raw log
  \"error\": committed_failed) and tx-pending (accepted, not included while the sidecar waits: the task fails
  with inclusionStatus pending, and the chain includes the tx anyway). `percent` and `firstRun` filter fail,
  tx-code and tx-pending.

ADMIN API (never authenticated)
  GET    /admin/faults                 installed faults with their remaining counts
  POST   /admin/faults                 a fault or a list: {\"kind\": \"fail\"|\"latency\"|\"duration\"|\"status\"|\"tx-code\"|\"tx-pending\",
                                       \"task\"?: TYPE, \"node\"?: \"NS/NAME\", \"count\"?: N, \"delay\"?: \"2s\",
                                       \"code\"?: 503, \"error\"?: MESSAGE, \"result\"?: {...}} -> 201
  DELETE /admin/faults                 removes every fault -> 204
  POST   /admin/nodes/NS/NAME/restart  the sidecar restarts: ready flag cleared, running tasks forgotten
                                       (completed/failed tasks, keys and the bucket stay)
  GET    /admin/nodes                  every node
  GET    /admin/nodes/NS/NAME          {ready, nodeId, chainId, genesisHash, peers, lastTraceparent, requests,
                                       unauthorized, restarts, executions: {ID: N}, tasks: [... +executions,
                                       lastTraceparent]}; 404 for a node never used
  GET    /admin/tasks                  every task of every node with its executions and last traceparent
  GET    /admin/chain                  {height, blockTime, txs: [{txHash, type, node, taskId, run, memo, height,
                                       code}], proposals: [{proposalId, type, title, votes}]}: every broadcast
  POST   /admin/chain                  {\"height\"?: N, \"blockTime\"?: \"400ms\" (\"0s\" halts the chain)}
  GET    /admin/nodes/NS/NAME/seid     {running, height, catchingUp, restarts}
  POST   /admin/nodes/NS/NAME/seid     {\"running\"?: bool, \"catchingUpFor\"?: \"5s\", \"lag\"?: N}

EXAMPLES
  sidecar-sim --listen 127.0.0.1:7777 --bucket-dir /tmp/genesis-bucket
  sidecar-sim --listen 127.0.0.1:0 --task-duration 50ms --fail 'config-validate:2' --latency 'snapshot-restore=2s'
  sidecar-sim --require-token /tmp/token --http-status '@sei/val-1=503:3'
  curl -X POST localhost:7777/sei/val-0/v0/tasks -d '{\"id\":\"5f0c…\",\"type\":\"mark-ready\"}'
  curl localhost:7777/sei/val-0/v0/healthz -i
  curl -X POST localhost:7777/admin/faults -d '{\"kind\":\"fail\",\"task\":\"config-validate\",\"count\":1}'
  curl -X POST localhost:7777/admin/nodes/sei/val-0/restart";

/// Command line of the simulator.
#[derive(Debug, Parser)]
#[command(name = "sidecar-sim", version, about = "Simulates Sei node sidecars on 127.0.0.1", long_about = ABOUT,
    after_long_help = AFTER)]
struct Args {
    /// Address to listen on; must be 127.0.0.1 (port 0 picks a free port).
    #[arg(long, env = "SIDECAR_SIM_LISTEN", default_value = "127.0.0.1:7777")]
    listen: SocketAddr,

    /// How long every task stays running before it completes (humantime: 200ms, 2s).
    #[arg(long, env = "SIDECAR_SIM_TASK_DURATION", default_value = "200ms", value_parser = humantime::parse_duration)]
    task_duration: Duration,

    /// Directory standing in for the genesis bucket [default: a new directory under the system temp dir].
    #[arg(long, env = "SIDECAR_SIM_BUCKET_DIR")]
    bucket_dir: Option<PathBuf>,

    /// Require `Authorization: Bearer <content of FILE>` on sidecar requests (not on healthz/livez/startupz);
    /// the file is re-read on every request, mismatches get 401.
    #[arg(long, env = "SIDECAR_SIM_REQUIRE_TOKEN", value_name = "FILE")]
    require_token: Option<PathBuf>,

    /// Put kube-rbac-proxy's check in front of every sidecar (not the probes): the bearer token is reviewed
    /// with a TokenReview and the user's access to `seinodetasks.sei.io` named after the node with a
    /// SubjectAccessReview, by the API server of this kubeconfig (the node pods' identity: it needs create on
    /// tokenreviews and subjectaccessreviews). 401 unauthenticated, 403 forbidden; decisions at
    /// GET /admin/rbac-proxy.
    #[arg(long, env = "SIDECAR_SIM_RBAC_PROXY_KUBECONFIG", value_name = "KUBECONFIG")]
    rbac_proxy_kubeconfig: Option<PathBuf>,

    /// Fail the next N executions of the selected tasks: SELECTOR[:N] (see FAULTS).
    #[arg(long, value_name = "SELECTOR[:N]")]
    fail: Vec<String>,

    /// Delay the responses of selected sidecar requests: SELECTOR=DURATION.
    #[arg(long, value_name = "SELECTOR=DURATION")]
    latency: Vec<String>,

    /// Keep selected tasks running this long: SELECTOR=DURATION.
    #[arg(long, value_name = "SELECTOR=DURATION")]
    duration: Vec<String>,

    /// Answer selected sidecar requests with an HTTP status: SELECTOR=CODE[:N].
    #[arg(long, value_name = "SELECTOR=CODE[:N]")]
    http_status: Vec<String>,
}

impl Args {
    fn faults(&self) -> anyhow::Result<Vec<FaultSpec>> {
        let mut specs = Vec::new();
        for f in &self.fail {
            specs.push(faults::parse_fail_flag(f).with_context(|| format!("--fail {f}"))?);
        }
        for l in &self.latency {
            specs.push(faults::parse_delay_flag("latency", l).with_context(|| format!("--latency {l}"))?);
        }
        for d in &self.duration {
            specs.push(faults::parse_delay_flag("duration", d).with_context(|| format!("--duration {d}"))?);
        }
        for s in &self.http_status {
            specs.push(faults::parse_status_flag(s).with_context(|| format!("--http-status {s}"))?);
        }
        for (i, spec) in specs.iter().enumerate() {
            spec.clone().into_fault(i as u64).context("invalid fault")?;
        }
        Ok(specs)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if args.listen.ip() != Ipv4Addr::LOCALHOST {
        bail!("--listen {}: the simulator only binds 127.0.0.1", args.listen);
    }
    let defaults = sim::Config::default();
    let config = sim::Config {
        task_duration: args.task_duration,
        bucket_dir: args.bucket_dir.clone().unwrap_or(defaults.bucket_dir),
        require_token: args.require_token.clone(),
        faults: args.faults()?,
        rbac_proxy: match &args.rbac_proxy_kubeconfig {
            Some(path) => Some(
                sim::RbacProxy::from_kubeconfig(path)
                    .await
                    .with_context(|| format!("--rbac-proxy-kubeconfig {}", path.display()))?,
            ),
            None => None,
        },
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
    }
    tracing::info!(
        %addr,
        bucket_dir = %config.bucket_dir.display(),
        task_duration = ?config.task_duration,
        faults = config.faults.len(),
        require_token = config.require_token.is_some(),
        rbac_proxy = config.rbac_proxy.is_some(),
        "Sidecar simulator started"
    );
    sim::serve(listener, config, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            () = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
