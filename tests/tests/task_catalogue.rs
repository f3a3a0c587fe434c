//! The task catalogue (issue 5, item 2): every task type of `sei_tasks::catalog::registry()`, started twice
//! under one idempotency key, has one effect, and each of its error classes is reached the way an operator
//! would meet it.
//!
//! - Sidecar tasks run against the sidecar simulator served in-process; no cluster is needed (their
//!   `Context` holds a Kubernetes client pointed at a closed port, which they must never use).
//! - Kubernetes-side and fleet tasks run against the local control plane, each test in a namespace of its
//!   own (skipped without a cluster, failing in CI like the rest of the harness).

#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use sei_crds::conditions;
use sei_crds::{SeiNode, SeiNodeDeployment};
use sei_engine::{ErrorClass, TaskError, TaskRef};
use sei_tasks::catalog;
use sei_tasks::platform::PlatformConfig;
use sei_tasks::sidecar;
use sei_tasks::task::{Context, Invocation, Outcome, StatusSink, StatusUpdates, Task};
use sei_tests::TestNamespace;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

/// Namespace of the virtual sidecars in sidecar-only tests (the simulator is per test).
const NS: &str = "catalogue";
const CHAIN: &str = "catalogue-1";
/// Generous: a simulated task takes 50 ms; only a hang reaches this.
const WAIT: Duration = Duration::from_secs(20);

const SIDECAR_TASKS: &[&str] = &[
    "snapshot-restore",
    "configure-genesis",
    "config-apply",
    "config-patch",
    "config-validate",
    "configure-state-sync",
    "mark-ready",
    "mark-not-ready",
    "generate-identity",
    "generate-gentx",
    "upload-genesis-artifacts",
    "assemble-and-upload-genesis",
    "set-genesis-peers",
    "stop-seid",
    "restart-seid",
    "reset-data",
    "await-condition",
    "gov-vote",
    "gov-software-upgrade",
    "gov-param-change",
    "snapshot-now",
];
const GOV_TASKS: &[&str] = &["gov-vote", "gov-software-upgrade", "gov-param-change"];
const KUBE_TASKS: &[&str] = &[
    "ensure-data-pvc",
    "apply-statefulset",
    "apply-service",
    "replace-pod",
    "observe-image",
    "validate-signing-key",
    "validate-node-key",
    "validate-operator-keyring",
    "record-peers",
];
/// Task types tested elsewhere, against the real cluster and simulator: the bootstrap Job's four
/// (`cargo test -p sei-tasks --lib bootstrap` for the Job's shape and key refusal, `operator/tests/modes_e2e.rs`
/// for a replayer's bootstrap run to Running) and the detached `result-export` (`modes_e2e`).
const TESTED_ELSEWHERE: &[&str] = &[
    "deploy-bootstrap-service",
    "deploy-bootstrap-job",
    "await-bootstrap-complete",
    "teardown-bootstrap",
    "result-export",
];

const FLEET_TASKS: &[&str] = &[
    "await-nodes-running",
    "collect-and-set-peers",
    "update-node-template",
    "record-genesis-hash",
    "await-genesis",
];

// ---------------------------------------------------------------------------------------------------------
// Harness

/// The sidecar simulator served in-process on a free 127.0.0.1 port until dropped.
struct Sim {
    addr: std::net::SocketAddr,
    bucket: PathBuf,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Sim {
    async fn start() -> Self {
        let bucket = std::env::temp_dir().join(format!("catalogue-bucket-{}", Uuid::new_v4().simple()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let config = sei_tests::sim::Config {
            task_duration: Duration::from_millis(50),
            bucket_dir: bucket.clone(),
            require_token: None,
            faults: Vec::new(),
            rbac_proxy: None,
        };
        tokio::spawn(async move {
            let _ = sei_tests::sim::serve(listener, config, async move {
                let _ = rx.await;
            })
            .await;
        });
        Self {
            addr,
            bucket,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            stop: Some(tx),
        }
    }

    fn url_template(&self) -> String {
        format!("http://{}/{{namespace}}/{{name}}", self.addr)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("http://{}{path}", self.addr))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The admin view of a virtual sidecar (`GET /admin/nodes/{ns}/{name}`).
    async fn node(&self, ns: &str, name: &str) -> Value {
        let (status, v) = self.get(&format!("/admin/nodes/{ns}/{name}")).await;
        assert_eq!(status, 200, "admin view of {ns}/{name}: {v}");
        v
    }

    /// How many times the simulator executed task `key` on node `ns/name`.
    async fn executions(&self, ns: &str, name: &str, key: Uuid) -> u64 {
        self.node(ns, name).await["executions"][key.to_string()]
            .as_u64()
            .unwrap_or(0)
    }

    /// Every task the simulator has seen (`GET /admin/tasks`).
    async fn tasks(&self) -> Vec<Value> {
        let (status, v) = self.get("/admin/tasks").await;
        assert_eq!(status, 200);
        v.as_array().cloned().unwrap_or_default()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("http://{}{path}", self.addr))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "POST {path} {body}: {}", r.status());
        r.json().await.unwrap()
    }

    /// The simulated chain: height, every broadcast tx, proposals (`GET /admin/chain`).
    async fn chain(&self) -> Value {
        self.get("/admin/chain").await.1
    }

    /// The txs node `name` broadcast.
    async fn txs_of(&self, name: &str) -> Vec<Value> {
        let node = format!("{NS}/{name}");
        self.chain().await["txs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["node"] == node.as_str())
            .cloned()
            .collect()
    }

    /// seid of node `name` as its RPC reports it (`GET /admin/nodes/NS/NAME/seid`).
    async fn seid(&self, name: &str) -> Value {
        self.get(&format!("/admin/nodes/{NS}/{name}/seid")).await.1
    }

    async fn fault(&self, body: Value) {
        let r = self
            .http
            .post(format!("http://{}/admin/faults", self.addr))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "installing fault {body}: {}", r.status());
    }

    fn bucket_file(&self, key: &str) -> Vec<u8> {
        std::fs::read(self.bucket.join(key)).unwrap()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = std::fs::remove_dir_all(&self.bucket);
    }
}

/// A 127.0.0.1 port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Kubernetes client pointed at a closed port: sidecar tasks must never need the API server.
fn offline_client() -> kube::Client {
    let url = format!("http://127.0.0.1:{}", closed_port());
    kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap()
}

fn context(client: kube::Client, url_template: &str, platform: PlatformConfig) -> Context {
    let sidecar = sidecar::Client::new(sidecar::Config {
        url_template: url_template.to_owned(),
        port: 0,
        token_path: None,
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    Context {
        client,
        sidecar,
        platform: Arc::new(platform),
        pods: None,
    }
}

fn task(task_type: &str) -> Arc<dyn Task> {
    catalog::registry()
        .get(task_type)
        .unwrap_or_else(|| panic!("{task_type} is not registered"))
        .clone()
}

/// Attempt 1 of `task_type` on `owner` (a fresh idempotency key).
fn invocation(
    namespace: &str,
    owner_kind: &str,
    owner: &str,
    task_type: &str,
    params: Value,
    owner_object: Value,
) -> Invocation {
    Invocation {
        namespace: namespace.to_owned(),
        owner_kind: owner_kind.to_owned(),
        owner: owner.to_owned(),
        task: TaskRef {
            task: task_type.to_owned(),
            task_type: task_type.to_owned(),
            target: None,
            attempt: 1,
            key: Uuid::new_v4(),
        },
        params,
        traceparent: None,
        status: StatusSink::default(),
        owner_object: Arc::new(owner_object),
    }
}

fn sidecar_invocation(node: &str, task_type: &str, params: Value) -> Invocation {
    invocation(NS, "SeiNode", node, task_type, params, Value::Null)
}

/// Polls until the outcome is neither Accepted nor Running (or `WAIT` passed).
async fn poll_until_settled(t: &dyn Task, cx: &Context, inv: &Invocation) -> Outcome {
    let deadline = Instant::now() + WAIT;
    loop {
        let outcome = t.poll(cx, inv).await;
        if !matches!(outcome, Outcome::Accepted | Outcome::Running) || Instant::now() > deadline {
            return outcome;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[track_caller]
fn failure(outcome: Outcome) -> TaskError {
    match outcome {
        Outcome::Failed(e) => e,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[track_caller]
fn outputs(outcome: Outcome) -> Map<String, Value> {
    match outcome {
        Outcome::Done(o) => o,
        other => panic!("expected Done, got {other:?}"),
    }
}

/// Starts `task_type` twice under one key, polls it to completion, starts it once more after completion (a
/// crash between completing and recording), and checks that the simulator executed it exactly once. A repeated
/// start looks the key up first and adopts what the sidecar knows (running, then completed with its outputs).
async fn run_once_started_twice(
    sim: &Sim,
    cx: &Context,
    node: &str,
    task_type: &str,
    params: Value,
) -> Map<String, Value> {
    let t = task(task_type);
    let inv = sidecar_invocation(node, task_type, params);
    assert_eq!(
        t.start(cx, &inv).await,
        Outcome::Accepted,
        "{task_type}: first start"
    );
    assert_eq!(
        t.start(cx, &inv).await,
        Outcome::Running,
        "{task_type}: second start adopts the running attempt"
    );
    let done = poll_until_settled(t.as_ref(), cx, &inv).await;
    let Outcome::Done(out) = done else {
        panic!("{task_type} did not complete: {done:?}")
    };
    assert_eq!(
        t.start(cx, &inv).await,
        Outcome::Done(out.clone()),
        "{task_type}: a start after completion adopts the result"
    );
    assert_eq!(
        t.poll(cx, &inv).await,
        Outcome::Done(out.clone()),
        "{task_type}: a completed task stays completed"
    );
    assert_eq!(
        sim.executions(NS, node, inv.task.key).await,
        1,
        "{task_type} started three times under one key must run once"
    );
    out
}

fn condition(updates: &StatusUpdates, type_: &str) -> Condition {
    updates
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
        .unwrap_or_else(|| panic!("no {type_} condition recorded in {updates:?}"))
}

/// A namespace of the test's own with the CRDs installed, and a context whose sidecar template is `sidecar`.
async fn cluster(prefix: &str, sidecar: &str, platform: PlatformConfig) -> Option<(TestNamespace, Context)> {
    let ns = sei_tests::test_namespace(prefix).await?;
    sei_tests::install_crds(&ns.client()).await.unwrap();
    let cx = context(ns.client(), sidecar, platform);
    Some((ns, cx))
}

fn unreachable_template() -> String {
    format!("http://127.0.0.1:{}/{{namespace}}/{{name}}", closed_port())
}

async fn create_node(ns: &TestNamespace, name: &str, spec: Value) -> SeiNode {
    let node: SeiNode = serde_json::from_value(json!({
        "apiVersion": "sei.io/v1alpha1",
        "kind": "SeiNode",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap();
    ns.api::<SeiNode>()
        .create(&PostParams::default(), &node)
        .await
        .unwrap()
}

fn full_node_spec(image: &str) -> Value {
    json!({"chainId": "atlantic-2", "image": image, "fullNode": {}})
}

/// An invocation of a node task whose owner is `node` (as the operator builds it from its reconcile snapshot).
fn node_invocation(ns: &TestNamespace, node: &SeiNode, task_type: &str, params: Value) -> Invocation {
    invocation(
        ns.name(),
        "SeiNode",
        &node.name_any(),
        task_type,
        params,
        serde_json::to_value(node).unwrap(),
    )
}

fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    let data: Map<String, Value> = data.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": data,
    }))
    .unwrap()
}

async fn put_secret(ns: &TestNamespace, s: &Secret) {
    let api = ns.api::<Secret>();
    let _ = api.delete(&s.name_any(), &DeleteParams::default()).await;
    api.create(&PostParams::default(), s).await.unwrap();
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sidecar's name of a catalogue task type (`snapshot-now` is seictl's `snapshot-upload-once`).
fn wire_type(task_type: &str) -> &str {
    match task_type {
        "snapshot-now" => "snapshot-upload-once",
        other => other,
    }
}

// ---------------------------------------------------------------------------------------------------------
// The catalogue as a whole

#[test]
fn every_registered_task_type_is_exercised_by_this_file() {
    let registered: BTreeSet<&str> = catalog::registry().task_types().collect();
    let covered: BTreeSet<&str> = SIDECAR_TASKS
        .iter()
        .chain(KUBE_TASKS)
        .chain(FLEET_TASKS)
        .chain(TESTED_ELSEWHERE)
        .copied()
        .collect();
    assert_eq!(
        registered, covered,
        "a task type was added or removed: give it tests here"
    );
    for t in SIDECAR_TASKS {
        assert!(
            sei_tests::sim::TASK_TYPES.contains(&wire_type(t)),
            "the simulator does not execute {t}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------
// Sidecar tasks

#[tokio::test]
async fn the_genesis_tasks_started_twice_under_one_key_run_once_and_exchange_real_artifacts() {
    let sim = Sim::start().await;
    let cx = context(offline_client(), &sim.url_template(), PlatformConfig::default());
    let node = "val-0";

    let out = run_once_started_twice(
        &sim,
        &cx,
        node,
        "generate-identity",
        json!({"chainId": CHAIN, "moniker": node}),
    )
    .await;
    let node_id = out["nodeId"].as_str().unwrap().to_owned();
    assert_eq!(node_id.len(), 40, "a node id is 20 bytes of hex: {node_id}");
    assert_eq!(
        sim.node(NS, node).await["nodeId"],
        node_id,
        "the sidecar serves the generated id"
    );

    let out = run_once_started_twice(
        &sim,
        &cx,
        node,
        "generate-gentx",
        json!({"chainId": CHAIN, "stakingAmount": "10000000usei", "accountBalance": "100000000usei"}),
    )
    .await;
    assert_eq!(out["nodeId"], node_id);
    assert_eq!(out["chainId"], CHAIN);

    let out = run_once_started_twice(
        &sim,
        &cx,
        node,
        "upload-genesis-artifacts",
        json!({"chainId": CHAIN, "nodeName": node}),
    )
    .await;
    let gentx_key = format!("{CHAIN}/{node}/gentx.json");
    assert_eq!(out["gentx"], gentx_key);
    assert!(
        !sim.bucket_file(&gentx_key).is_empty(),
        "the gentx is in the bucket"
    );

    let out = run_once_started_twice(
        &sim,
        &cx,
        node,
        "assemble-and-upload-genesis",
        json!({"chainId": CHAIN, "namespace": NS, "nodes": [node]}),
    )
    .await;
    let genesis = sim.bucket_file(&format!("{CHAIN}/genesis.json"));
    let hash = hex::encode(Sha256::digest(&genesis));
    assert_eq!(
        out["genesisHash"], hash,
        "the output is the SHA-256 of the uploaded genesis.json"
    );

    let out = run_once_started_twice(
        &sim,
        &cx,
        node,
        "configure-genesis",
        json!({"chainId": CHAIN, "expectedGenesisHash": hash}),
    )
    .await;
    assert_eq!(
        out["genesisHash"], hash,
        "the node verified and wrote the assembled genesis"
    );

    let out = run_once_started_twice(&sim, &cx, node, "set-genesis-peers", json!({"chainId": CHAIN})).await;
    let all: Vec<String> = serde_json::from_slice(&sim.bucket_file(&format!("{CHAIN}/peers.json"))).unwrap();
    assert_eq!(all.len(), 1, "peers.json lists the one validator: {all:?}");
    assert!(all[0].starts_with(&format!("{node_id}@")));
    // The journal keeps the peer list by reference (count + digest), never the list itself.
    assert_eq!(out["peerCount"], json!(0), "a node is never its own peer");
    assert_eq!(
        out["peersSha256"],
        json!(hex_sha256(b"")),
        "the digest of no addresses"
    );
    assert!(!out.contains_key("peers"), "no peer list in the outputs: {out:?}");
}

#[tokio::test]
async fn the_node_setup_tasks_started_twice_under_one_key_run_once_and_report_their_outputs() {
    let sim = Sim::start().await;
    let cx = context(offline_client(), &sim.url_template(), PlatformConfig::default());
    let node = "rpc-0";

    let out =
        run_once_started_twice(&sim, &cx, node, "snapshot-restore", json!({"targetHeight": 1234})).await;
    assert_eq!(out["height"], 1234);
    let out = run_once_started_twice(&sim, &cx, node, "configure-genesis", json!({})).await;
    assert_eq!(
        out["source"], "embedded",
        "a known chain's node uses the embedded genesis"
    );
    let out = run_once_started_twice(
        &sim,
        &cx,
        node,
        "config-apply",
        json!({"mode": "full", "overrides": {"p2p.max_num_inbound_peers": "40"}}),
    )
    .await;
    assert_eq!(out["mode"], "full");
    let out = run_once_started_twice(
        &sim,
        &cx,
        node,
        "config-patch",
        json!({"files": {"config.toml": {"p2p": {"max_num_outbound_peers": 10}}}}),
    )
    .await;
    assert_eq!(out["patched"], json!(["config.toml"]));
    let out = run_once_started_twice(&sim, &cx, node, "config-validate", json!({})).await;
    assert_eq!(out["valid"], true);
    let witnesses = json!(["rpc-a:26657", "rpc-b:26657"]);
    let out = run_once_started_twice(
        &sim,
        &cx,
        node,
        "configure-state-sync",
        json!({"useLocalSnapshot": true, "rpcServers": witnesses}),
    )
    .await;
    assert_eq!(out["rpcServers"], witnesses);

    let healthz = format!("/{NS}/{node}/v0/healthz");
    assert_eq!(sim.get(&healthz).await.0, 503, "not ready before mark-ready");
    run_once_started_twice(&sim, &cx, node, "mark-ready", json!({})).await;
    assert_eq!(sim.get(&healthz).await.0, 200, "ready after mark-ready");
    run_once_started_twice(&sim, &cx, node, "mark-not-ready", json!({})).await;
    assert_eq!(sim.get(&healthz).await.0, 503, "not ready after mark-not-ready");
}

/// The init config intent (issue 13): `config-apply`'s `layers` reach the sidecar flattened into one
/// `overrides` map (later layers win, `overrides` last); `config-patch` says whether the patch changed the
/// config (`restartRequired`), and `restart-seid` with `required: false` succeeds without asking the sidecar.
#[tokio::test]
async fn config_apply_layers_flatten_and_restart_seid_runs_only_when_required() {
    let sim = Sim::start().await;
    let cx = context(offline_client(), &sim.url_template(), PlatformConfig::default());
    let node = "cfg-0";
    run_once_started_twice(
        &sim,
        &cx,
        node,
        "config-apply",
        json!({"mode": "full",
               "layers": [{"logging.level": "error", "a": "1"}, {"a": "2", "b": "2"}],
               "overrides": {"logging.level": "debug"}}),
    )
    .await;
    let view = sim.get(&format!("/admin/nodes/{NS}/{node}")).await.1;
    assert_eq!(
        view["config"],
        json!({"mode": "full", "overrides": {"logging.level": "debug", "a": "2", "b": "2"}}),
        "{view}"
    );
    assert!(
        view["nodeId"].is_string(),
        "config-apply creates the node key: {view}"
    );
    let patch = json!({"files": {"config.toml": {"p2p": {"persistent-peers": "x@h:1"}}}});
    let first = run_once_started_twice(&sim, &cx, node, "config-patch", patch.clone()).await;
    assert_eq!(first["restartRequired"], true);
    let again = run_once_started_twice(&sim, &cx, node, "config-patch", patch).await;
    assert_eq!(again["restartRequired"], false, "the same patch changes nothing");

    let t = task("restart-seid");
    let skipped = sidecar_invocation(node, "restart-seid", json!({"required": false}));
    assert_eq!(
        t.start(&cx, &skipped).await,
        Outcome::Done(Map::from_iter([("skipped".to_owned(), json!(true))]))
    );
    assert_eq!(
        sim.executions(NS, node, skipped.task.key).await,
        0,
        "never submitted"
    );
    let out = run_once_started_twice(&sim, &cx, node, "restart-seid", json!({"required": true})).await;
    assert_eq!(out["restarts"], 1, "{out:?}");
}

/// `record-peers` records the configured list (sorted, de-duplicated) in the `PeersConfigured` condition,
/// the same way on every start.
#[tokio::test]
async fn record_peers_records_the_list_in_the_peers_configured_condition() {
    let cx = context(
        offline_client(),
        &unreachable_template(),
        PlatformConfig::default(),
    );
    let t = task("record-peers");
    let inv = invocation(
        NS,
        "SeiNode",
        "n",
        "record-peers",
        json!({"peers": ["b@h:2", "a@h:1", "b@h:2"]}),
        json!({"metadata": {"generation": 3}}),
    );
    for _ in 0..2 {
        assert_eq!(
            t.start(&cx, &inv).await,
            Outcome::Done(Map::from_iter([("peerCount".to_owned(), json!(2))]))
        );
        let c = condition(&inv.status.take(), conditions::PEERS_CONFIGURED);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "PeersWritten"));
        assert_eq!(c.message, "persistent_peers = a@h:1,b@h:2");
        assert_eq!(c.observed_generation, Some(3));
    }
}

/// Valid params for every sidecar task type (what a workflow would pass).
fn valid_params(task_type: &str) -> Value {
    match task_type {
        "config-apply" => json!({"mode": "full"}),
        "config-patch" => json!({"files": {"app.toml": {"minimum-gas-prices": "0.01usei"}}}),
        "generate-identity" => json!({"chainId": CHAIN, "moniker": "m"}),
        "generate-gentx" => {
            json!({"chainId": CHAIN, "stakingAmount": "1usei", "accountBalance": "2usei"})
        }
        "upload-genesis-artifacts" => json!({"nodeName": "n"}),
        "assemble-and-upload-genesis" => json!({"chainId": CHAIN, "namespace": NS, "nodes": ["n"]}),
        "await-condition" => json!({"condition": "height", "targetHeight": 1}),
        "gov-vote" => json!({"proposalId": 1, "option": "yes", "fees": "4000usei", "gas": 200_000}),
        "gov-software-upgrade" => json!({
            "title": "v2", "description": "upgrade to v2", "upgradeName": "v2", "upgradeHeight": 1_000_000_000,
            "initialDeposit": "10000000usei", "fees": "4000usei", "gas": 300_000,
        }),
        "gov-param-change" => json!({
            "title": "more validators", "description": "raise MaxValidators",
            "changes": [{"subspace": "staking", "key": "MaxValidators", "value": 150}],
            "initialDeposit": "10000000usei", "fees": "4000usei", "gas": 300_000,
        }),
        "snapshot-now" => json!({"chainId": CHAIN}),
        _ => json!({}),
    }
}

#[tokio::test]
async fn a_failed_sidecar_task_fails_the_attempt_as_transient_and_a_new_attempt_runs_again() {
    let sim = Sim::start().await;
    let cx = context(offline_client(), &sim.url_template(), PlatformConfig::default());
    for task_type in SIDECAR_TASKS {
        let node = format!("fail-{task_type}");
        sim.fault(
            json!({"kind": "fail", "task": wire_type(task_type), "node": format!("{NS}/{node}"), "count": 1}),
        )
        .await;
        let t = task(task_type);
        let inv = sidecar_invocation(&node, task_type, valid_params(task_type));
        assert_eq!(t.start(&cx, &inv).await, Outcome::Accepted, "{task_type}");
        let e = failure(poll_until_settled(t.as_ref(), &cx, &inv).await);
        assert_eq!(e.class, ErrorClass::Transient, "{task_type}: {}", e.message);
        assert!(
            (e.message.contains(task_type) && e.message.contains("injected failure"))
                || *task_type == "config-validate",
            "{task_type}: the message says what failed: {}",
            e.message
        );
        // The same attempt started again (its start was never journaled: a crash or a 409) adopts the failure
        // it finds under its key instead of re-submitting it, which the sidecar would execute a second time.
        let again = failure(t.start(&cx, &inv).await);
        assert_eq!(
            again.class,
            ErrorClass::Transient,
            "{task_type}: {}",
            again.message
        );
        assert_eq!(
            sim.executions(NS, &node, inv.task.key).await,
            1,
            "{task_type}: a repeated start of a failed attempt does not execute it again"
        );
    }

    // config-validate's diagnostics reach the error.
    let inv = sidecar_invocation("fail-config-validate", "config-validate", json!({}));
    sim.fault(
        json!({"kind": "fail", "task": "config-validate", "node": format!("{NS}/fail-config-validate")}),
    )
    .await;
    let t = task("config-validate");
    assert_eq!(t.start(&cx, &inv).await, Outcome::Accepted);
    let e = failure(poll_until_settled(t.as_ref(), &cx, &inv).await);
    assert!(e.message.contains("p2p.persistent_peers"), "{}", e.message);

    // The fault fired once: the next attempt (a new key) of the same task succeeds.
    let t = task("config-apply");
    let retry = sidecar_invocation("fail-config-apply", "config-apply", valid_params("config-apply"));
    assert_eq!(t.start(&cx, &retry).await, Outcome::Accepted);
    outputs(poll_until_settled(t.as_ref(), &cx, &retry).await);
}

#[tokio::test]
async fn configure_genesis_with_a_wrong_expected_hash_fails_terminally() {
    let sim = Sim::start().await;
    let cx = context(offline_client(), &sim.url_template(), PlatformConfig::default());
    std::fs::create_dir_all(sim.bucket.join(CHAIN)).unwrap();
    let genesis = br#"{"chain_id":"catalogue-1"}"#;
    std::fs::write(sim.bucket.join(CHAIN).join("genesis.json"), genesis).unwrap();
    let t = task("configure-genesis");

    let wrong = "0".repeat(64);
    let inv = sidecar_invocation(
        "joiner",
        "configure-genesis",
        json!({"chainId": CHAIN, "expectedGenesisHash": wrong}),
    );
    assert_eq!(t.start(&cx, &inv).await, Outcome::Accepted);
    let e = failure(poll_until_settled(t.as_ref(), &cx, &inv).await);
    assert_eq!(
        e.class,
        ErrorClass::Terminal,
        "retrying cannot fix a hash mismatch: {}",
        e.message
    );
    assert!(e.message.contains("mismatch"), "{}", e.message);

    let right = hex::encode(Sha256::digest(genesis));
    let inv = sidecar_invocation(
        "joiner",
        "configure-genesis",
        json!({"chainId": CHAIN, "expectedGenesisHash": right}),
    );
    assert_eq!(t.start(&cx, &inv).await, Outcome::Accepted);
    assert_eq!(
        outputs(poll_until_settled(t.as_ref(), &cx, &inv).await)["genesisHash"],
        right
    );
}

#[tokio::test]
async fn params_a_sidecar_task_does_not_know_fail_as_invalid_without_reaching_the_sidecar() {
    let sim = Sim::start().await;
    let cx = context(offline_client(), &sim.url_template(), PlatformConfig::default());
    for task_type in SIDECAR_TASKS {
        let mut params = valid_params(task_type);
        params["surprise"] = json!(true);
        for params in [params, json!("not an object")] {
            let inv = sidecar_invocation("n", task_type, params);
            let e = failure(task(task_type).start(&cx, &inv).await);
            assert_eq!(e.class, ErrorClass::Invalid, "{task_type}: {}", e.message);
            assert!(
                e.message.contains(&format!("invalid params for {task_type}")),
                "{}",
                e.message
            );
        }
    }
    let e = failure(
        task("generate-identity")
            .start(
                &cx,
                &sidecar_invocation("n", "generate-identity", json!({"moniker": "m"})),
            )
            .await,
    );
    assert!(
        e.message.contains("chainId"),
        "a missing required field is named: {}",
        e.message
    );
    assert_eq!(sim.tasks().await, Vec::<Value>::new(), "nothing was submitted");
}

#[tokio::test]
async fn a_submission_the_sidecar_refuses_fails_terminally_and_a_5xx_is_only_unavailable() {
    let sim = Sim::start().await;
    let cx = context(offline_client(), &sim.url_template(), PlatformConfig::default());
    let t = task("config-apply");

    sim.fault(json!({"kind": "status", "code": 400, "node": format!("{NS}/refused")}))
        .await;
    let inv = sidecar_invocation("refused", "config-apply", valid_params("config-apply"));
    let e = failure(t.start(&cx, &inv).await);
    assert_eq!(e.class, ErrorClass::Terminal, "{}", e.message);
    assert!(
        e.message.contains("injected fault"),
        "the sidecar's message is kept: {}",
        e.message
    );

    sim.fault(json!({"kind": "status", "code": 503, "node": format!("{NS}/busy")}))
        .await;
    let inv = sidecar_invocation("busy", "config-apply", valid_params("config-apply"));
    assert!(matches!(t.start(&cx, &inv).await, Outcome::Unavailable(_)));
    assert!(matches!(t.poll(&cx, &inv).await, Outcome::Unavailable(_)));
}

#[tokio::test]
async fn an_unreachable_sidecar_is_unavailable_on_start_and_poll_for_every_sidecar_task() {
    let cx = context(
        offline_client(),
        &unreachable_template(),
        PlatformConfig::default(),
    );
    for task_type in SIDECAR_TASKS {
        let inv = sidecar_invocation("n", task_type, valid_params(task_type));
        let t = task(task_type);
        let started = t.start(&cx, &inv).await;
        assert!(
            matches!(started, Outcome::Unavailable(_)),
            "{task_type} start: {started:?}"
        );
        let polled = t.poll(&cx, &inv).await;
        assert!(
            matches!(polled, Outcome::Unavailable(_)),
            "{task_type} poll: {polled:?}"
        );
    }
}

#[tokio::test]
async fn polling_a_key_the_sidecar_never_received_is_not_found_and_a_cancelled_task_is_forgotten() {
    let sim = Sim::start().await;
    let cx = context(offline_client(), &sim.url_template(), PlatformConfig::default());
    for task_type in SIDECAR_TASKS {
        let inv = sidecar_invocation("n", task_type, valid_params(task_type));
        assert_eq!(
            task(task_type).poll(&cx, &inv).await,
            Outcome::NotFound,
            "{task_type}"
        );
    }

    sim.fault(json!({"kind": "duration", "task": "snapshot-restore", "delay": "30s"}))
        .await;
    let t = task("snapshot-restore");
    let inv = sidecar_invocation("n", "snapshot-restore", json!({}));
    assert_eq!(t.start(&cx, &inv).await, Outcome::Accepted);
    assert_eq!(t.poll(&cx, &inv).await, Outcome::Running);
    t.cancel(&cx, &inv).await;
    assert_eq!(t.poll(&cx, &inv).await, Outcome::NotFound);
}

// ---------------------------------------------------------------------------------------------------------
// Day-2 sidecar tasks (issue 12, item 5)

/// Attempt `attempt` of run `task_type` in plan `plan`, with the keys the engine derives and an owner snapshot
/// whose `status.plan.id` is `plan` (what a gov task derives the earlier attempts' keys from).
fn attempt_invocation(node: &str, task_type: &str, params: Value, plan: Uuid, attempt: u32) -> Invocation {
    let mut inv = invocation(
        NS,
        "SeiNode",
        node,
        task_type,
        params,
        json!({"status": {"plan": {"id": plan}}}),
    );
    inv.task.attempt = attempt;
    inv.task.key = sei_engine::idempotency_key(plan, task_type, attempt);
    inv
}

#[tokio::test]
async fn stop_reset_and_restart_each_run_once_and_reset_data_refuses_while_seid_runs() {
    let sim = Sim::start().await;
    let cx = context(offline_client(), &sim.url_template(), PlatformConfig::default());
    let node = "resync-0";
    sim.post("/admin/chain", json!({"height": 500, "blockTime": "0s"}))
        .await;

    // reset-data on a running seid: the sidecar refuses (it would wipe a live database).
    let t = task("reset-data");
    let inv = sidecar_invocation(node, "reset-data", json!({}));
    assert_eq!(t.start(&cx, &inv).await, Outcome::Accepted);
    let e = failure(poll_until_settled(t.as_ref(), &cx, &inv).await);
    assert_eq!(e.class, ErrorClass::Transient, "{}", e.message);
    assert!(e.message.contains("stop-seid first"), "{}", e.message);
    assert_eq!(sim.seid(node).await["height"], 500, "nothing was wiped");

    // A stop that fails (fault) leaves seid running.
    sim.fault(json!({"kind": "fail", "task": "stop-seid", "node": format!("{NS}/{node}")}))
        .await;
    let t = task("stop-seid");
    let inv = sidecar_invocation(node, "stop-seid", json!({}));
    assert_eq!(t.start(&cx, &inv).await, Outcome::Accepted);
    failure(poll_until_settled(t.as_ref(), &cx, &inv).await);
    assert_eq!(sim.seid(node).await["running"], true);

    let out = run_once_started_twice(&sim, &cx, node, "stop-seid", json!({})).await;
    assert_eq!(out["height"], 500);
    assert_eq!(sim.seid(node).await["running"], false, "seid is stopped");

    let out = run_once_started_twice(&sim, &cx, node, "reset-data", json!({})).await;
    assert_eq!(out["wipedBytes"], 500 * 4096, "the data of 500 blocks was wiped");
    assert_eq!(sim.seid(node).await["height"], 0);

    let out = run_once_started_twice(&sim, &cx, node, "restart-seid", json!({})).await;
    assert_eq!(out["restarts"], 1);
    assert_eq!(out["catchingUp"], true, "a wiped node syncs again");
    let seid = sim.seid(node).await;
    assert_eq!(seid["running"], true, "{seid}");

    // ... and await-condition catchingUp waits until it is caught up.
    let out = run_once_started_twice(
        &sim,
        &cx,
        node,
        "await-condition",
        json!({"condition": "catchingUp"}),
    )
    .await;
    assert_eq!(out["catchingUp"], false);
    assert_eq!(out["observedValue"], 500);
    assert_eq!(sim.seid(node).await["catchingUp"], false);
}

#[tokio::test]
async fn await_condition_runs_until_the_height_is_reached_then_stops_seid_when_asked() {
    let sim = Sim::start().await;
    let cx = context(offline_client(), &sim.url_template(), PlatformConfig::default());
    let node = "upgrader-0";
    sim.post("/admin/chain", json!({"height": 100, "blockTime": "0s"}))
        .await;

    let t = task("await-condition");
    let inv = sidecar_invocation(
        node,
        "await-condition",
        json!({"condition": "height", "targetHeight": 120, "action": "SIGTERM_SEID"}),
    );
    assert_eq!(t.start(&cx, &inv).await, Outcome::Accepted);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        t.poll(&cx, &inv).await,
        Outcome::Running,
        "a halted chain at 100 never reaches 120"
    );
    assert_eq!(
        t.start(&cx, &inv).await,
        Outcome::Running,
        "a repeated start adopts the waiting attempt"
    );

    // The chain moves on (a block every 10 ms): the condition holds at 120 and seid stops right there.
    sim.post("/admin/chain", json!({"blockTime": "10ms"})).await;
    let out = outputs(poll_until_settled(t.as_ref(), &cx, &inv).await);
    let seen = out["observedValue"].as_u64().unwrap();
    assert!(seen >= 120, "observed {seen}");
    let seid = sim.seid(node).await;
    assert_eq!(seid["running"], false, "SIGTERM_SEID stopped seid: {seid}");
    assert_eq!(seid["height"], seen, "seid stopped at the height observed");
    assert_eq!(sim.executions(NS, node, inv.task.key).await, 1);

    // A height condition without a height is refused before anything reaches the sidecar.
    let bad = sidecar_invocation(node, "await-condition", json!({"condition": "height"}));
    let e = failure(t.start(&cx, &bad).await);
    assert_eq!(e.class, ErrorClass::Invalid);
    assert!(
        e.message.contains("await-condition") && e.message.contains("targetHeight"),
        "names the task and the field: {}",
        e.message
    );
    let bad = sidecar_invocation(node, "await-condition", json!({"condition": "blockTime"}));
    let e = failure(t.start(&cx, &bad).await);
    assert!(
        e.message.contains("invalid params for await-condition"),
        "{}",
        e.message
    );
    assert_eq!(sim.executions(NS, node, bad.task.key).await, 0);
}

#[tokio::test]
async fn gov_tasks_started_twice_under_one_key_broadcast_once_and_report_their_tx() {
    let sim = Sim::start().await;
    let cx = context(offline_client(), &sim.url_template(), PlatformConfig::default());
    let node = "val-0";

    let out = run_once_started_twice(
        &sim,
        &cx,
        node,
        "gov-software-upgrade",
        valid_params("gov-software-upgrade"),
    )
    .await;
    assert_eq!(out["inclusionStatus"], "committed_ok", "{out:?}");
    assert_eq!(out["code"], 0);
    assert_eq!(out["proposalId"], 1);
    assert!(out["height"].as_u64().unwrap() > 1);
    let upgrade_tx = out["txHash"].as_str().unwrap().to_owned();

    let out = run_once_started_twice(
        &sim,
        &cx,
        node,
        "gov-param-change",
        valid_params("gov-param-change"),
    )
    .await;
    assert_eq!(out["proposalId"], 2);
    assert_eq!(out["inclusionStatus"], "committed_ok");

    let vote = json!({"proposalId": 1, "option": "no-with-veto", "memo": "fleet vote", "fees": "4000usei", "gas": 200_000});
    let out = run_once_started_twice(&sim, &cx, node, "gov-vote", vote).await;
    assert_eq!(out["inclusionStatus"], "committed_ok");
    assert!(!out.contains_key("proposalId"), "a vote creates no proposal");

    let chain = sim.chain().await;
    let txs = chain["txs"].as_array().unwrap();
    assert_eq!(
        txs.len(),
        3,
        "one broadcast per task, though each was started three times: {chain}"
    );
    assert_eq!(txs[0]["txHash"], upgrade_tx.as_str());
    assert!(
        txs[2]["memo"].as_str().unwrap().starts_with("fleet vote taskID="),
        "the sidecar appends the task id to the memo: {}",
        txs[2]["memo"]
    );
    let proposals = chain["proposals"].as_array().unwrap();
    assert_eq!(proposals.len(), 2);
    assert_eq!(proposals[0]["votes"][format!("{NS}/{node}")], "no_with_veto");
}

#[tokio::test]
async fn a_gov_tx_rejected_on_chain_fails_terminally_with_its_code() {
    let sim = Sim::start().await;
    let cx = context(offline_client(), &sim.url_template(), PlatformConfig::default());
    let node = "val-1";

    // A vote on a proposal that does not exist: included with gov code 2.
    let t = task("gov-vote");
    let inv = sidecar_invocation(node, "gov-vote", valid_params("gov-vote"));
    assert_eq!(t.start(&cx, &inv).await, Outcome::Accepted);
    let e = failure(poll_until_settled(t.as_ref(), &cx, &inv).await);
    assert_eq!(e.class, ErrorClass::Terminal, "{}", e.message);
    assert!(
        e.message.contains("code 2") && e.message.contains("committed_failed"),
        "{}",
        e.message
    );
    assert!(e.message.contains("unknown proposal"), "{}", e.message);

    // An upgrade height already passed: sdk code 18.
    sim.post("/admin/chain", json!({"height": 5000, "blockTime": "0s"}))
        .await;
    let mut params = valid_params("gov-software-upgrade");
    params["upgradeHeight"] = json!(4000);
    let t = task("gov-software-upgrade");
    let inv = sidecar_invocation(node, "gov-software-upgrade", params);
    assert_eq!(t.start(&cx, &inv).await, Outcome::Accepted);
    let e = failure(poll_until_settled(t.as_ref(), &cx, &inv).await);
    assert_eq!(e.class, ErrorClass::Terminal);
    assert!(
        e.message.contains("code 18") && e.message.contains("in the past"),
        "{}",
        e.message
    );

    // An injected on-chain failure (out of gas) of a param change.
    sim.fault(json!({"kind": "tx-code", "code": 11, "error": "out of gas in location: WriteFlat", "task": "gov-param-change"}))
        .await;
    let t = task("gov-param-change");
    let inv = sidecar_invocation(node, "gov-param-change", valid_params("gov-param-change"));
    assert_eq!(t.start(&cx, &inv).await, Outcome::Accepted);
    let e = failure(poll_until_settled(t.as_ref(), &cx, &inv).await);
    assert_eq!(e.class, ErrorClass::Terminal);
    assert!(e.message.contains("out of gas"), "{}", e.message);
    let chain = sim.chain().await;
    assert_eq!(
        chain["txs"].as_array().unwrap().len(),
        3,
        "rejected txs are on chain too"
    );
    assert_eq!(chain["proposals"], json!([]), "but none created a proposal");
}

/// The operator crashed after submitting (its journal never recorded the start), while the sidecar's broadcast
/// was accepted but not seen included: the sidecar task failed with `inclusionStatus: pending`, and the chain
/// included the tx anyway. The repeated start of the same attempt must adopt that failure: re-submitting the
/// key would make the sidecar execute the failed id again, i.e. broadcast a second proposal or vote.
#[tokio::test]
async fn a_repeated_start_of_a_gov_attempt_whose_tx_is_pending_does_not_broadcast_again() {
    let sim = Sim::start().await;
    let cx = context(offline_client(), &sim.url_template(), PlatformConfig::default());
    for task_type in GOV_TASKS {
        let node = format!("pending-{task_type}");
        sim.fault(json!({"kind": "tx-pending", "task": task_type, "node": format!("{NS}/{node}")}))
            .await;
        let t = task(task_type);
        let inv = sidecar_invocation(&node, task_type, valid_params(task_type));
        assert_eq!(t.start(&cx, &inv).await, Outcome::Accepted, "{task_type}");
        let e = failure(poll_until_settled(t.as_ref(), &cx, &inv).await);
        assert_eq!(e.class, ErrorClass::Transient, "{task_type}: {}", e.message);
        assert!(e.message.contains("pending"), "{task_type}: {}", e.message);

        // The operator restarts and delivers the same start again; whatever that did has settled once a poll
        // settles, and only then are the chain's txs counted.
        let again = t.start(&cx, &inv).await;
        poll_until_settled(t.as_ref(), &cx, &inv).await;
        assert_eq!(
            sim.txs_of(&node).await.len(),
            1,
            "{task_type}: a repeated start of the same attempt must not broadcast a second tx"
        );
        assert_eq!(sim.executions(NS, &node, inv.task.key).await, 1, "{task_type}");
        let again = failure(again);
        assert!(
            again.message.contains("pending"),
            "{task_type}: {}",
            again.message
        );
    }
}

#[tokio::test]
async fn a_new_attempt_of_a_proposal_adopts_a_committed_tx_and_never_resubmits_one_in_doubt() {
    let sim = Sim::start().await;
    let cx = context(offline_client(), &sim.url_template(), PlatformConfig::default());
    let plan = Uuid::new_v4();
    let kind = "gov-software-upgrade";

    // Attempt 1 committed, but the engine gave up on it first (its timeout): attempt 2 adopts its tx.
    let node = "val-committed";
    let t = task(kind);
    let first = attempt_invocation(node, kind, valid_params(kind), plan, 1);
    assert_eq!(t.start(&cx, &first).await, Outcome::Accepted);
    let committed = outputs(poll_until_settled(t.as_ref(), &cx, &first).await);
    let second = attempt_invocation(node, kind, valid_params(kind), plan, 2);
    let adopted = outputs(t.start(&cx, &second).await);
    assert_eq!(adopted["txHash"], committed["txHash"]);
    assert_eq!(adopted["proposalId"], committed["proposalId"]);
    assert_eq!(adopted["adoptedFromAttempt"], 1);
    assert_eq!(sim.txs_of(node).await.len(), 1, "attempt 2 broadcast nothing");
    assert_eq!(sim.executions(NS, node, second.task.key).await, 0);

    // Attempt 1's tx is pending (it did land): attempt 2 refuses to propose again, naming the tx.
    let node = "val-in-doubt";
    sim.fault(json!({"kind": "tx-pending", "task": kind, "node": format!("{NS}/{node}")}))
        .await;
    let first = attempt_invocation(node, kind, valid_params(kind), plan, 1);
    assert_eq!(t.start(&cx, &first).await, Outcome::Accepted);
    failure(poll_until_settled(t.as_ref(), &cx, &first).await);
    let tx = sim.txs_of(node).await[0]["txHash"].as_str().unwrap().to_owned();
    let third = attempt_invocation(node, kind, valid_params(kind), plan, 3);
    let e = failure(t.start(&cx, &third).await);
    assert_eq!(e.class, ErrorClass::Terminal, "{}", e.message);
    assert!(
        e.message.contains(&tx) && e.message.contains("attempt 1"),
        "{}",
        e.message
    );
    assert_eq!(sim.txs_of(node).await.len(), 1, "no second proposal");

    // Attempt 1 still running on the sidecar: attempt 2 waits (no observation) instead of proposing beside it.
    let node = "val-slow";
    sim.fault(json!({"kind": "duration", "task": kind, "node": format!("{NS}/{node}"), "delay": "30s"}))
        .await;
    let first = attempt_invocation(node, kind, valid_params(kind), plan, 1);
    assert_eq!(t.start(&cx, &first).await, Outcome::Accepted);
    let second = attempt_invocation(node, kind, valid_params(kind), plan, 2);
    assert!(matches!(t.start(&cx, &second).await, Outcome::Unavailable(_)));
    assert_eq!(sim.executions(NS, node, second.task.key).await, 0);

    // Attempt 1 failed before broadcasting (no tx): attempt 2 proposes, once.
    let node = "val-retry";
    sim.fault(json!({"kind": "fail", "task": kind, "node": format!("{NS}/{node}")}))
        .await;
    let first = attempt_invocation(node, kind, valid_params(kind), plan, 1);
    assert_eq!(t.start(&cx, &first).await, Outcome::Accepted);
    failure(poll_until_settled(t.as_ref(), &cx, &first).await);
    assert_eq!(sim.txs_of(node).await.len(), 0);
    let second = attempt_invocation(node, kind, valid_params(kind), plan, 2);
    assert_eq!(t.start(&cx, &second).await, Outcome::Accepted);
    assert_eq!(
        outputs(poll_until_settled(t.as_ref(), &cx, &second).await)["inclusionStatus"],
        "committed_ok"
    );
    assert_eq!(sim.txs_of(node).await.len(), 1);

    // A vote in doubt is cast again: a second identical vote only replaces the first.
    let node = "val-vote";
    run_once_started_twice(
        &sim,
        &cx,
        node,
        "gov-software-upgrade",
        valid_params("gov-software-upgrade"),
    )
    .await;
    sim.fault(json!({"kind": "tx-pending", "task": "gov-vote", "node": format!("{NS}/{node}")}))
        .await;
    let t = task("gov-vote");
    let first = attempt_invocation(node, "gov-vote", valid_params("gov-vote"), plan, 1);
    assert_eq!(t.start(&cx, &first).await, Outcome::Accepted);
    failure(poll_until_settled(t.as_ref(), &cx, &first).await);
    let second = attempt_invocation(node, "gov-vote", valid_params("gov-vote"), plan, 2);
    assert_eq!(t.start(&cx, &second).await, Outcome::Accepted);
    assert_eq!(
        outputs(poll_until_settled(t.as_ref(), &cx, &second).await)["inclusionStatus"],
        "committed_ok"
    );
}

#[tokio::test]
async fn snapshot_now_uploads_the_snapshot_at_the_node_height_once_and_fails_on_a_wiped_node() {
    let sim = Sim::start().await;
    let cx = context(offline_client(), &sim.url_template(), PlatformConfig::default());
    let node = "archive-0";
    sim.post("/admin/chain", json!({"height": 7777, "blockTime": "0s"}))
        .await;
    let out = run_once_started_twice(&sim, &cx, node, "snapshot-now", json!({"chainId": CHAIN})).await;
    let key = format!("{CHAIN}/state-sync/7777.tar.gz");
    assert_eq!(out["key"], key.as_str());
    assert_eq!(out["height"], 7777);
    assert!(!sim.bucket_file(&key).is_empty(), "the snapshot is in the bucket");
    let seen: Vec<Value> = sim.tasks().await;
    assert!(
        seen.iter().any(|t| t["type"] == "snapshot-upload-once"),
        "submitted under seictl's name"
    );

    run_once_started_twice(&sim, &cx, node, "stop-seid", json!({})).await;
    run_once_started_twice(&sim, &cx, node, "reset-data", json!({})).await;
    let t = task("snapshot-now");
    let inv = sidecar_invocation(node, "snapshot-now", json!({"chainId": CHAIN}));
    assert_eq!(t.start(&cx, &inv).await, Outcome::Accepted);
    let e = failure(poll_until_settled(t.as_ref(), &cx, &inv).await);
    assert!(
        e.message.contains("snapshot-now") && e.message.contains("no local snapshot"),
        "{}",
        e.message
    );
}

// ---------------------------------------------------------------------------------------------------------
// Kubernetes-side tasks

#[tokio::test]
async fn ensure_data_pvc_started_twice_creates_one_pvc_owned_by_the_node() {
    let Some((ns, cx)) = cluster("cat-pvc", &unreachable_template(), PlatformConfig::default()).await else {
        return;
    };
    let node = create_node(&ns, "rpc", full_node_spec("seid:v1")).await;
    let inv = node_invocation(&ns, &node, "ensure-data-pvc", json!({}));
    let t = task("ensure-data-pvc");
    assert_eq!(t.start(&cx, &inv).await, Outcome::done());
    let pvcs = ns.api::<PersistentVolumeClaim>();
    let first = pvcs.get("data-rpc").await.unwrap();
    assert_eq!(t.start(&cx, &inv).await, Outcome::done());
    assert_eq!(t.poll(&cx, &inv).await, Outcome::done());

    let all = pvcs.list(&ListParams::default()).await.unwrap();
    assert_eq!(all.items.len(), 1, "one PVC");
    let pvc = &all.items[0];
    // (Not the resourceVersion: the cluster's PVC controllers annotate a new claim.)
    assert_eq!(pvc.uid(), first.uid(), "the same PVC, never recreated");
    let owner = &pvc.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.controller), ("SeiNode", Some(true)));
    assert_eq!(Some(owner.uid.as_str()), node.metadata.uid.as_deref());
}

#[tokio::test]
async fn a_foreign_pvc_under_the_data_pvc_name_fails_terminally_and_says_how_to_adopt_it() {
    let Some((ns, cx)) = cluster(
        "cat-pvc-foreign",
        &unreachable_template(),
        PlatformConfig::default(),
    )
    .await
    else {
        return;
    };
    let foreign: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data-rpc"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }))
    .unwrap();
    let pvcs = ns.api::<PersistentVolumeClaim>();
    pvcs.create(&PostParams::default(), &foreign).await.unwrap();
    let node = create_node(&ns, "rpc", full_node_spec("seid:v1")).await;

    let e = failure(
        task("ensure-data-pvc")
            .start(&cx, &node_invocation(&ns, &node, "ensure-data-pvc", json!({})))
            .await,
    );
    assert_eq!(e.class, ErrorClass::Terminal);
    assert!(
        e.message.contains("spec.dataVolume.import.pvcName"),
        "{}",
        e.message
    );
    assert!(
        pvcs.get("data-rpc").await.unwrap().owner_references().is_empty(),
        "the foreign PVC is left alone"
    );
}

fn pv(name: &str, size: &str) -> PersistentVolume {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"sei.io/test": "true"}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": format!("/tmp/{name}")},
        },
    }))
    .unwrap()
}

fn bound_pvc(name: &str, volume: &str, size: &str) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "volumeName": volume,
            "resources": {"requests": {"storage": size}},
        },
    }))
    .unwrap()
}

#[tokio::test]
async fn an_imported_pvc_is_waited_for_then_validated_and_a_too_small_one_fails_as_invalid() {
    let Some((ns, cx)) = cluster("cat-import", &unreachable_template(), PlatformConfig::default()).await
    else {
        return;
    };
    let t = task("ensure-data-pvc");
    let mut spec = full_node_spec("seid:v1");
    spec["dataVolume"] = json!({"import": {"pvcName": "keep-me"}});
    let node = create_node(&ns, "rpc", spec.clone()).await;
    let inv = node_invocation(&ns, &node, "ensure-data-pvc", json!({}));

    let waiting = t.start(&cx, &inv).await;
    assert!(
        matches!(&waiting, Outcome::Unavailable(m) if m.contains("keep-me")),
        "{waiting:?}"
    );
    let c = condition(&inv.status.take(), conditions::IMPORT_PVC_READY);
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "PVCNotReady"));
    let pvcs = ns.api::<PersistentVolumeClaim>();
    assert!(
        pvcs.list(&ListParams::default()).await.unwrap().items.is_empty(),
        "an imported PVC is never created by the operator"
    );

    // The PVs are cluster-scoped: named after the namespace, deleted at the end.
    let (big, small) = (format!("{}-big", ns.name()), format!("{}-small", ns.name()));
    let volumes: Api<PersistentVolume> = Api::all(ns.client());
    volumes
        .create(&PostParams::default(), &pv(&big, "3000Gi"))
        .await
        .unwrap();
    volumes
        .create(&PostParams::default(), &pv(&small, "1Gi"))
        .await
        .unwrap();
    pvcs.create(&PostParams::default(), &bound_pvc("keep-me", &big, "3000Gi"))
        .await
        .unwrap();
    pvcs.create(&PostParams::default(), &bound_pvc("tiny", &small, "1Gi"))
        .await
        .unwrap();
    for name in ["keep-me", "tiny"] {
        let pvcs = pvcs.clone();
        wait_until(&format!("{name} is Bound"), move || {
            let pvcs = pvcs.clone();
            async move {
                pvcs.get(name)
                    .await
                    .ok()
                    .and_then(|p| p.status)
                    .and_then(|s| s.phase)
                    .as_deref()
                    == Some("Bound")
            }
        })
        .await;
    }

    assert_eq!(t.poll(&cx, &inv).await, Outcome::done());
    let c = condition(&inv.status.take(), conditions::IMPORT_PVC_READY);
    assert_eq!(c.status, "True", "{}", c.message);

    spec["dataVolume"] = json!({"import": {"pvcName": "tiny"}});
    let small_node = create_node(&ns, "small", spec).await;
    let inv = node_invocation(&ns, &small_node, "ensure-data-pvc", json!({}));
    let e = failure(t.start(&cx, &inv).await);
    assert_eq!(e.class, ErrorClass::Terminal);
    assert!(e.message.contains("needs at least 2000Gi"), "{}", e.message);
    let c = condition(&inv.status.take(), conditions::IMPORT_PVC_READY);
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "PVCInvalid"));

    for name in [big, small] {
        let _ = volumes.delete(&name, &DeleteParams::default()).await;
    }
}

fn recorded_statefulset(updates: &StatusUpdates) -> Value {
    updates
        .fields
        .get("statefulSet")
        .cloned()
        .unwrap_or_else(|| panic!("no statefulSet recorded in {updates:?}"))
}

#[tokio::test]
async fn apply_statefulset_started_twice_keeps_one_statefulset_and_records_its_uid() {
    let Some((ns, cx)) = cluster("cat-sts", &unreachable_template(), PlatformConfig::default()).await else {
        return;
    };
    let node = create_node(&ns, "rpc", full_node_spec("seid:v1")).await;
    let t = task("apply-statefulset");
    let inv = node_invocation(&ns, &node, "apply-statefulset", json!({}));
    assert_eq!(t.start(&cx, &inv).await, Outcome::done());
    let first = recorded_statefulset(&inv.status.take());
    assert_eq!(t.start(&cx, &inv).await, Outcome::done());
    let second = recorded_statefulset(&inv.status.take());

    let sts = ns.api::<StatefulSet>();
    let all = sts.list(&ListParams::default()).await.unwrap();
    assert_eq!(all.items.len(), 1);
    let uid = all.items[0].uid().unwrap();
    assert_eq!(first, json!({"name": "rpc", "uid": uid}));
    assert_eq!(second, first, "the same StatefulSet both times");
    // The applied template's digest, what node-reconfigure compares the spec's rendering against.
    t.start(&cx, &inv).await;
    let applied = condition(&inv.status.take(), conditions::STATEFULSET_APPLIED);
    let digest = sei_tasks::resources::statefulset_digest(&node, &PlatformConfig::default()).unwrap();
    assert_eq!(applied.message, format!("template {digest}"));
    let managers: Vec<String> = all.items[0]
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.contains(&"seinode-controller".to_owned()),
        "{managers:?}"
    );
    assert!(
        ns.api::<ConfigMap>()
            .get_opt("rpc-rbac-proxy-config")
            .await
            .unwrap()
            .is_none(),
        "no kube-rbac-proxy configured: no proxy ConfigMap"
    );
}

#[tokio::test]
async fn apply_statefulset_deletes_an_impostor_and_applies_a_fresh_one_at_the_next_poll() {
    let Some((ns, cx)) = cluster("cat-impostor", &unreachable_template(), PlatformConfig::default()).await
    else {
        return;
    };
    let node = create_node(&ns, "rpc", full_node_spec("seid:v1")).await;
    let t = task("apply-statefulset");
    let inv = node_invocation(&ns, &node, "apply-statefulset", json!({}));
    assert_eq!(t.start(&cx, &inv).await, Outcome::done());
    let impostor_uid = recorded_statefulset(&inv.status.take())["uid"].clone();

    // The node's status remembers another StatefulSet: the one under its name is an impostor.
    let mut remembering = serde_json::to_value(&node).unwrap();
    remembering["status"] =
        json!({"statefulSet": {"name": "rpc", "uid": "0b5e55ed-0000-4000-8000-000000000000"}});
    let inv = invocation(
        ns.name(),
        "SeiNode",
        "rpc",
        "apply-statefulset",
        json!({}),
        remembering,
    );
    let outcome = t.start(&cx, &inv).await;
    assert!(
        matches!(&outcome, Outcome::Unavailable(m) if m.contains("deleted")),
        "{outcome:?}"
    );
    assert_eq!(
        inv.status.take().fields["statefulSet"],
        Value::Null,
        "the record is cleared"
    );
    let sts = ns.api::<StatefulSet>();
    let left = sts.get_opt("rpc").await.unwrap();
    assert!(
        left.is_none_or(|s| s.metadata.deletion_timestamp.is_some()),
        "the impostor is deleted"
    );

    // The operator folded the cleared record into the status: the next poll applies a new StatefulSet.
    let inv = node_invocation(&ns, &node, "apply-statefulset", json!({}));
    let deadline = Instant::now() + WAIT;
    let fresh = loop {
        let outcome = t.poll(&cx, &inv).await;
        let updates = inv.status.take();
        if outcome == Outcome::done() {
            break recorded_statefulset(&updates);
        }
        assert!(Instant::now() < deadline, "never applied again: {outcome:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(fresh["uid"], impostor_uid);
    assert_eq!(json!(sts.get("rpc").await.unwrap().uid()), fresh["uid"]);
}

#[tokio::test]
async fn with_kube_rbac_proxy_configured_apply_statefulset_also_applies_the_proxy_config_map() {
    let mut platform = PlatformConfig::default();
    platform.images.kube_rbac_proxy = Some("quay.io/brancz/kube-rbac-proxy:v0.18.0".to_owned());
    let Some((ns, cx)) = cluster("cat-proxy", &unreachable_template(), platform).await else {
        return;
    };
    let node = create_node(&ns, "rpc", full_node_spec("seid:v1")).await;
    let t = task("apply-statefulset");
    let inv = node_invocation(&ns, &node, "apply-statefulset", json!({}));
    assert_eq!(t.start(&cx, &inv).await, Outcome::done());
    assert_eq!(t.start(&cx, &inv).await, Outcome::done());

    let cm = ns.api::<ConfigMap>().get("rpc-rbac-proxy-config").await.unwrap();
    let config = &cm.data.as_ref().unwrap()["config.yaml"];
    assert!(
        config.contains("name: rpc") && config.contains("seinodetasks"),
        "{config}"
    );
    assert_eq!(
        cm.owner_references()[0].uid,
        node.uid().unwrap(),
        "deleted with the node"
    );
    assert!(
        cm.managed_fields()
            .iter()
            .any(|m| m.manager.as_deref() == Some("seinode-controller")),
        "applied with the node controller's field manager"
    );
    let sts = ns.api::<StatefulSet>().get("rpc").await.unwrap();
    let mounted = serde_json::to_value(&sts.spec.unwrap().template).unwrap();
    assert!(
        mounted.to_string().contains("rpc-rbac-proxy-config"),
        "the pod mounts the ConfigMap that now exists"
    );
}

#[tokio::test]
async fn apply_service_started_twice_keeps_one_headless_service() {
    let Some((ns, cx)) = cluster("cat-svc", &unreachable_template(), PlatformConfig::default()).await else {
        return;
    };
    let node = create_node(&ns, "rpc", full_node_spec("seid:v1")).await;
    let t = task("apply-service");
    let inv = node_invocation(&ns, &node, "apply-service", json!({}));
    assert_eq!(t.start(&cx, &inv).await, Outcome::done());
    let services = ns.api::<Service>();
    let first = services.list(&ListParams::default()).await.unwrap();
    assert_eq!(t.start(&cx, &inv).await, Outcome::done());
    assert_eq!(t.poll(&cx, &inv).await, Outcome::done());
    let all = services.list(&ListParams::default()).await.unwrap();
    assert_eq!(all.items.len(), 1, "one Service");
    assert_eq!(all.items[0].uid(), first.items[0].uid());
    assert_eq!(
        all.items[0].resource_version(),
        first.items[0].resource_version(),
        "an unchanged apply writes nothing"
    );
    assert_eq!(
        all.items[0].spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some("None"),
        "headless"
    );
}

const PUB_KEY: &str =
    r#"{"type":"tendermint/PubKeyEd25519","value":"Jv2yTLKdTfOy0rYGZ6Dh1VvJTq0dPhOw2dHLtKcLxvQ="}"#;
const PRIV_KEY: &str = r#"{"type":"tendermint/PrivKeyEd25519","value":"8XzmpdPV3SFoNMZbF5fCd3Pkm0Ey0gfRzbCG5OQDxEkm/bJMsp1N87LStgZnoOHVW8lOrR0+E7DZ0cu0pwvG9A=="}"#;

/// Missing Secret, malformed Secret, valid Secret: Unavailable/NotReady, Terminal/Invalid, Done/True.
async fn key_validation(
    ns: &TestNamespace,
    cx: &Context,
    node: &SeiNode,
    task_type: &str,
    (secret_name, data_key, condition_type): (&str, &str, &str),
    (malformed, missing_field, valid): (&str, &str, &str),
) {
    let t = task(task_type);
    let inv = node_invocation(ns, node, task_type, json!({}));
    let outcome = t.start(cx, &inv).await;
    assert!(
        matches!(&outcome, Outcome::Unavailable(m) if m.contains(secret_name)),
        "{outcome:?}"
    );
    let c = condition(&inv.status.take(), condition_type);
    assert_eq!(
        (c.status, c.reason),
        (
            "False".to_owned(),
            conditions::reasons::validation(condition_type, "NotReady")
        )
    );

    put_secret(ns, &secret(secret_name, &[(data_key, malformed)])).await;
    let e = failure(t.poll(cx, &inv).await);
    assert_eq!(e.class, ErrorClass::Terminal, "{task_type}: {}", e.message);
    assert!(
        e.message.contains(secret_name) && e.message.contains(missing_field),
        "{}",
        e.message
    );
    let c = condition(&inv.status.take(), condition_type);
    assert_eq!(
        (c.status.clone(), c.reason.clone()),
        (
            "False".to_owned(),
            conditions::reasons::validation(condition_type, "Invalid")
        )
    );
    assert!(
        c.message.contains(missing_field),
        "the condition says what is wrong: {}",
        c.message
    );

    put_secret(ns, &secret(secret_name, &[(data_key, valid)])).await;
    assert_eq!(t.start(cx, &inv).await, Outcome::done());
    assert_eq!(
        t.start(cx, &inv).await,
        Outcome::done(),
        "{task_type} started twice"
    );
    let c = condition(&inv.status.take(), condition_type);
    assert_eq!(c.status, "True", "{}", c.message);
}

#[tokio::test]
async fn validate_signing_key_and_validate_node_key_wait_for_the_secret_and_judge_its_content() {
    let Some((ns, cx)) = cluster("cat-keys", &unreachable_template(), PlatformConfig::default()).await else {
        return;
    };
    let node = create_node(
        &ns,
        "val",
        json!({
            "chainId": "atlantic-2",
            "image": "seid:v1",
            "validator": {
                "signingKey": {"secret": {"secretName": "val-signing"}},
                "nodeKey": {"secret": {"secretName": "val-node-key"}},
            },
        }),
    )
    .await;
    let address = r#""address":"3C7FD1A1F8E6C6E2A1B0C0D0E0F0A1B2C3D4E5F6""#;
    key_validation(
        &ns,
        &cx,
        &node,
        "validate-signing-key",
        (
            "val-signing",
            sei_crds::SIGNING_KEY_DATA_KEY,
            conditions::SIGNING_KEY_READY,
        ),
        (
            &format!(r#"{{{address},"pub_key":{PUB_KEY}}}"#),
            "priv_key.type",
            &format!(r#"{{{address},"pub_key":{PUB_KEY},"priv_key":{PRIV_KEY}}}"#),
        ),
    )
    .await;
    key_validation(
        &ns,
        &cx,
        &node,
        "validate-node-key",
        (
            "val-node-key",
            sei_crds::NODE_KEY_DATA_KEY,
            conditions::NODE_KEY_READY,
        ),
        (
            "{not json",
            "not valid JSON",
            &format!(r#"{{"priv_key":{PRIV_KEY}}}"#),
        ),
    )
    .await;
}

#[tokio::test]
async fn validate_operator_keyring_waits_for_both_secrets_and_judges_their_content() {
    let Some((ns, cx)) = cluster("cat-keyring", &unreachable_template(), PlatformConfig::default()).await
    else {
        return;
    };
    let node = create_node(
        &ns,
        "val",
        json!({
            "chainId": "atlantic-2",
            "image": "seid:v1",
            "validator": {"operatorKeyring": {"secret": {
                "secretName": "kr",
                "keyName": "node_admin",
                "passphraseSecretRef": {"secretName": "kr-pass", "key": "passphrase"},
            }}},
        }),
    )
    .await;
    let t = task("validate-operator-keyring");
    let inv = node_invocation(&ns, &node, "validate-operator-keyring", json!({}));
    let ready = |updates: &StatusUpdates| {
        let c = condition(updates, conditions::OPERATOR_KEYRING_READY);
        (c.status, c.reason)
    };
    let not_ready = ("False".to_owned(), "OperatorKeyringNotReady".to_owned());
    let invalid = ("False".to_owned(), "OperatorKeyringInvalid".to_owned());

    let outcome = t.start(&cx, &inv).await;
    assert!(
        matches!(&outcome, Outcome::Unavailable(m) if m.contains("kr")),
        "{outcome:?}"
    );
    assert_eq!(ready(&inv.status.take()), not_ready);

    put_secret(&ns, &secret("kr", &[("other.info", "x"), ("abc.address", "y")])).await;
    let e = failure(t.poll(&cx, &inv).await);
    assert_eq!(e.class, ErrorClass::Terminal);
    assert!(
        e.message.contains("node_admin.info"),
        "the missing key is named: {}",
        e.message
    );
    assert_eq!(ready(&inv.status.take()), invalid);

    put_secret(
        &ns,
        &secret("kr", &[("node_admin.info", "x"), ("abc.address", "y")]),
    )
    .await;
    let outcome = t.poll(&cx, &inv).await;
    assert!(
        matches!(&outcome, Outcome::Unavailable(m) if m.contains("kr-pass")),
        "{outcome:?}"
    );
    assert_eq!(ready(&inv.status.take()), not_ready);

    put_secret(&ns, &secret("kr-pass", &[("passphrase", "")])).await;
    let e = failure(t.poll(&cx, &inv).await);
    assert!(
        e.message.contains("kr-pass") && e.message.contains("passphrase"),
        "{}",
        e.message
    );
    assert_eq!(ready(&inv.status.take()), invalid);

    put_secret(&ns, &secret("kr-pass", &[("passphrase", "hunter2")])).await;
    assert_eq!(t.start(&cx, &inv).await, Outcome::done());
    assert_eq!(t.start(&cx, &inv).await, Outcome::done());
    assert_eq!(ready(&inv.status.take()).0, "True");
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn the_pod(ns: &TestNamespace) -> Option<Pod> {
    ns.api::<Pod>()
        .get_opt("rpc-0")
        .await
        .unwrap()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
}

/// What `replace-pod` finishes with: the uids of the pods it deleted.
fn replaced(uids: &str) -> Outcome {
    Outcome::Done(Map::from_iter([("replaced".to_owned(), json!(uids))]))
}

async fn observe(cx: &Context, ns: &TestNamespace, node: &SeiNode, image: &str) -> (Outcome, StatusUpdates) {
    let inv = node_invocation(
        ns,
        node,
        "observe-image",
        json!({"image": image, "sidecarImage": cx.platform.images.sidecar}),
    );
    let outcome = task("observe-image").poll(cx, &inv).await;
    (outcome, inv.status.take())
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // one rollout, step by step
async fn a_rollout_is_observed_only_once_replace_pod_swapped_the_outdated_pod() {
    let Some((ns, cx)) = cluster("cat-rollout", &unreachable_template(), PlatformConfig::default()).await
    else {
        return;
    };
    let node = create_node(&ns, "rpc", full_node_spec("seid:v1")).await;
    let apply = |node: &SeiNode| {
        let inv = node_invocation(&ns, node, "apply-statefulset", json!({}));
        let cx = cx.clone();
        async move { task("apply-statefulset").start(&cx, &inv).await }
    };
    let replace = |node: &SeiNode| {
        let inv = node_invocation(&ns, node, "replace-pod", json!({}));
        let cx = cx.clone();
        async move { task("replace-pod").start(&cx, &inv).await }
    };
    // The pod only schedules (and runs) once its data PVC exists.
    let pvc = node_invocation(&ns, &node, "ensure-data-pvc", json!({}));
    assert_eq!(task("ensure-data-pvc").start(&cx, &pvc).await, Outcome::done());
    assert_eq!(apply(&node).await, Outcome::done());

    // observe-image: Running until the pod of the current revision runs, then Done recording the images.
    let deadline = Instant::now() + WAIT;
    let updates = loop {
        let (outcome, updates) = observe(&cx, &ns, &node, "seid:v1").await;
        match outcome {
            Outcome::Running => assert!(updates.fields.is_empty(), "nothing recorded while rolling"),
            Outcome::Done(out) => {
                assert_eq!(out["image"], "seid:v1");
                break updates;
            }
            other => panic!("observe-image: {other:?}"),
        }
        if Instant::now() >= deadline {
            let pod = ns.api::<Pod>().get_opt("rpc-0").await.unwrap();
            let why = catalog::kube::image_not_rolled(
                "rpc",
                pod.as_ref(),
                "seid:v1",
                &cx.platform.images.sidecar,
                "",
            );
            panic!("the first pod never appeared: {why:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(updates.fields["currentImage"], "seid:v1");
    assert_eq!(
        updates.fields["currentSidecarImage"],
        json!(cx.platform.images.sidecar)
    );
    wait_until("the pod exists", || async { the_pod(&ns).await.is_some() }).await;
    let first_pod = the_pod(&ns).await.unwrap().uid();

    // Nothing to replace: the pod runs the only revision.
    assert_eq!(replace(&node).await, replaced(""));
    assert_eq!(
        the_pod(&ns).await.unwrap().uid(),
        first_pod,
        "an up-to-date pod is kept"
    );

    // A new image: OnDelete keeps the old pod, so the rollout is not observed yet.
    let nodes = ns.api::<SeiNode>();
    let node = nodes
        .patch(
            "rpc",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"image": "seid:v2"}})),
        )
        .await
        .unwrap();
    assert_eq!(apply(&node).await, Outcome::done());
    let sts_api = ns.api::<StatefulSet>();
    wait_until("the StatefulSet controller sees the new revision", || async {
        let sts = sts_api.get("rpc").await.unwrap();
        let status = sts.status.unwrap_or_default();
        status.observed_generation >= sts.metadata.generation
            && status.update_revision.is_some()
            && status.update_revision != status.current_revision
    })
    .await;
    let (outcome, updates) = observe(&cx, &ns, &node, "seid:v2").await;
    assert_eq!(outcome, Outcome::Running, "the pod still runs seid:v1");
    assert!(updates.fields.is_empty());
    assert_eq!(
        the_pod(&ns).await.unwrap().uid(),
        first_pod,
        "OnDelete: nothing replaced it yet"
    );

    // replace-pod deletes the outdated pod; the controller recreates it at the update revision.
    assert_eq!(
        replace(&node).await,
        replaced(first_pod.as_deref().unwrap()),
        "replace-pod outputs the pod it deleted"
    );
    let update_revision = sts_api
        .get("rpc")
        .await
        .unwrap()
        .status
        .unwrap()
        .update_revision
        .unwrap();
    wait_until("a pod of the update revision replaced the old one", || async {
        the_pod(&ns).await.is_some_and(|p| {
            p.uid().unwrap() != first_pod.clone().unwrap()
                && p.labels().get("controller-revision-hash") == Some(&update_revision)
        })
    })
    .await;
    let second_pod = the_pod(&ns).await.unwrap().uid();

    // Again: the pod already runs the update revision (the current revision stays old under OnDelete), so
    // nothing is deleted.
    assert_eq!(replace(&node).await, replaced(""));
    assert_eq!(replace(&node).await, replaced(""));
    assert_eq!(
        the_pod(&ns).await.unwrap().uid(),
        second_pod,
        "an updated pod is kept"
    );

    let deadline = Instant::now() + WAIT;
    let updates = loop {
        let (outcome, updates) = observe(&cx, &ns, &node, "seid:v2").await;
        if outcome != Outcome::Running {
            assert_eq!(
                outcome,
                Outcome::Done(Map::from_iter([("image".to_owned(), json!("seid:v2"))]))
            );
            break updates;
        }
        assert!(Instant::now() < deadline, "the rollout was never observed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(updates.fields["currentImage"], "seid:v2");

    // The plan's image, not the live spec: an apply-statefulset of a plan compiled for seid:v3 renders
    // seid:v3 although the SeiNode still says seid:v2, and observe-image for seid:v3 waits until the pod, not
    // only the template, runs it.
    let inv = node_invocation(&ns, &node, "apply-statefulset", json!({"image": "seid:v3"}));
    assert_eq!(task("apply-statefulset").start(&cx, &inv).await, Outcome::done());
    let template = sts_api
        .get("rpc")
        .await
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let seid = template.containers.iter().find(|c| c.name == "seid").unwrap();
    assert_eq!(seid.image.as_deref(), Some("seid:v3"));
    wait_until("the StatefulSet controller sees the seid:v3 revision", || async {
        let sts = sts_api.get("rpc").await.unwrap();
        let status = sts.status.unwrap_or_default();
        status.observed_generation >= sts.metadata.generation
            && status.update_revision.is_some()
            && status.update_revision != Some(update_revision.clone())
    })
    .await;
    for _ in 0..5 {
        let (outcome, updates) = observe(&cx, &ns, &node, "seid:v3").await;
        assert_eq!(outcome, Outcome::Running, "the pod still runs seid:v2");
        assert!(updates.fields.is_empty());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A plan for seid:v2 still sees what is true: the pod runs seid:v2 (OnDelete keeps it until replaced), so
    // it records seid:v2 as the current image and the spec's seid:v3 is drift for node-update.
    let (outcome, _) = observe(&cx, &ns, &node, "seid:v2").await;
    assert_eq!(
        outcome,
        Outcome::Done(Map::from_iter([("image".to_owned(), json!("seid:v2"))])),
        "the pod runs seid:v2"
    );
}

// ---------------------------------------------------------------------------------------------------------
// Fleet tasks

#[tokio::test]
async fn record_genesis_hash_started_twice_records_the_same_hash_and_refuses_an_empty_one() {
    let cx = context(
        offline_client(),
        &unreachable_template(),
        PlatformConfig::default(),
    );
    let t = task("record-genesis-hash");
    let hash = "ab".repeat(32);
    let inv = invocation(
        "ns",
        "SeiNodeDeployment",
        "fleet",
        "record-genesis-hash",
        json!({"genesisHash": hash}),
        Value::Null,
    );
    let want = Outcome::Done(Map::from_iter([("genesisHash".to_owned(), json!(hash))]));
    assert_eq!(t.start(&cx, &inv).await, want);
    assert_eq!(t.start(&cx, &inv).await, want);
    assert_eq!(t.poll(&cx, &inv).await, want);
    assert_eq!(inv.status.take().fields["genesisHash"], json!(hash));

    let empty = invocation(
        "ns",
        "SeiNodeDeployment",
        "fleet",
        "record-genesis-hash",
        json!({"genesisHash": ""}),
        Value::Null,
    );
    assert_eq!(failure(t.start(&cx, &empty).await).class, ErrorClass::Terminal);
    assert_eq!(empty.status.take(), StatusUpdates::default(), "nothing recorded");
    let missing = invocation(
        "ns",
        "SeiNodeDeployment",
        "fleet",
        "record-genesis-hash",
        json!({}),
        Value::Null,
    );
    assert_eq!(failure(t.start(&cx, &missing).await).class, ErrorClass::Invalid);
}

async fn set_phase(ns: &TestNamespace, name: &str, status: Value) {
    ns.api::<SeiNode>()
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn await_nodes_running_is_running_until_every_node_runs_and_fails_when_one_failed() {
    let Some((ns, cx)) = cluster("cat-await", &unreachable_template(), PlatformConfig::default()).await
    else {
        return;
    };
    create_node(&ns, "a", full_node_spec("seid:v1")).await;
    create_node(&ns, "b", full_node_spec("seid:v1")).await;
    let t = task("await-nodes-running");
    let inv = invocation(
        ns.name(),
        "SeiNodeDeployment",
        "fleet",
        "await-nodes-running",
        json!({"nodes": ["a", "b"]}),
        Value::Null,
    );
    assert_eq!(t.start(&cx, &inv).await, Outcome::Running, "no node runs yet");
    set_phase(&ns, "a", json!({"phase": "Running"})).await;
    assert_eq!(t.poll(&cx, &inv).await, Outcome::Running, "b does not run yet");
    set_phase(&ns, "b", json!({"phase": "Running"})).await;
    let done = Outcome::Done(Map::from_iter([("running".to_owned(), json!(2))]));
    assert_eq!(t.poll(&cx, &inv).await, done);
    assert_eq!(t.start(&cx, &inv).await, done, "started again: same answer");

    let missing = invocation(
        ns.name(),
        "SeiNodeDeployment",
        "fleet",
        "await-nodes-running",
        json!({"nodes": ["a", "not-yet"]}),
        Value::Null,
    );
    assert_eq!(
        t.poll(&cx, &missing).await,
        Outcome::Running,
        "a node not created yet is waited for"
    );

    set_phase(&ns, "b", json!({"phase": "Failed"})).await;
    let e = failure(t.poll(&cx, &inv).await);
    assert_eq!(e.class, ErrorClass::Terminal);
    assert!(e.message.contains("SeiNode b is Failed"), "{}", e.message);
}

#[tokio::test]
async fn update_node_template_started_twice_updates_the_child_once_and_is_done_when_it_runs_the_new_image() {
    let Some((ns, cx)) = cluster("cat-template", &unreachable_template(), PlatformConfig::default()).await
    else {
        return;
    };
    let deployment: SeiNodeDeployment = serde_json::from_value(json!({
        "apiVersion": "sei.io/v1alpha1",
        "kind": "SeiNodeDeployment",
        "metadata": {"name": "fleet"},
        "spec": {
            "replicas": 1,
            "template": {"spec": {"chainId": "atlantic-2", "image": "seid:v1", "fullNode": {}}},
        },
    }))
    .unwrap();
    let deployment = ns
        .api::<SeiNodeDeployment>()
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let child = catalog::fleet::desired_child(&deployment, 0, None, None);
    let child = catalog::fleet::apply_child(&ns.client(), &child).await.unwrap();
    assert_eq!(child.spec.image, "seid:v1");

    let t = task("update-node-template");
    let mut inv = invocation(
        ns.name(),
        "SeiNodeDeployment",
        "fleet",
        "update-node-template",
        json!({"image": "seid:v2"}),
        serde_json::to_value(&deployment).unwrap(),
    );
    inv.task.target = Some("fleet-0".to_owned());
    assert_eq!(t.start(&cx, &inv).await, Outcome::Running);
    let nodes = ns.api::<SeiNode>();
    let updated = nodes.get("fleet-0").await.unwrap();
    assert_eq!(updated.spec.image, "seid:v2", "the child got the new image");
    assert_eq!(
        t.start(&cx, &inv).await,
        Outcome::Running,
        "the child has not rolled yet"
    );
    let again = nodes.get("fleet-0").await.unwrap();
    assert_eq!(
        again.resource_version(),
        updated.resource_version(),
        "started twice = one write"
    );

    let sidecar_image = cx.platform.images.sidecar.clone();
    set_phase(
        &ns,
        "fleet-0",
        json!({"phase": "Running", "currentImage": "seid:v2", "currentSidecarImage": sidecar_image}),
    )
    .await;
    let done = Outcome::Done(Map::from_iter([("image".to_owned(), json!("seid:v2"))]));
    assert_eq!(t.poll(&cx, &inv).await, done);

    set_phase(&ns, "fleet-0", json!({"phase": "Failed"})).await;
    let e = failure(t.poll(&cx, &inv).await);
    assert_eq!(e.class, ErrorClass::Terminal);
    assert!(e.message.contains("fleet-0"), "{}", e.message);

    nodes.delete("fleet-0", &DeleteParams::default()).await.unwrap();
    wait_until("the child is gone", || async {
        nodes.get_opt("fleet-0").await.unwrap().is_none()
    })
    .await;
    assert_eq!(
        t.poll(&cx, &inv).await,
        done,
        "a child that no longer exists counts as done"
    );
}

/// A bare pod standing for `node`'s pod (kwok makes it Running and Ready).
async fn fleet_pod(ns: &TestNamespace, node: &str) {
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": format!("{node}-0"), "labels": {"sei.io/nodedeployment": "fleet", "sei.io/node": node}},
        "spec": {"nodeName": "kwok-node-0", "containers": [{"name": "seid", "image": "seid:v1"}]},
    }))
    .unwrap();
    let pods = ns.api::<Pod>();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let name = format!("{node}-0");
    wait_until("the pod is Ready", || async {
        pods.get(&name)
            .await
            .unwrap()
            .status
            .and_then(|s| s.conditions)
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    })
    .await;
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // one degraded fleet, step by step
async fn update_node_template_counts_children_already_down_against_max_unavailable() {
    let Some((ns, cx)) = cluster("cat-budget", &unreachable_template(), PlatformConfig::default()).await
    else {
        return;
    };
    let deployment: SeiNodeDeployment = serde_json::from_value(json!({
        "apiVersion": "sei.io/v1alpha1",
        "kind": "SeiNodeDeployment",
        "metadata": {"name": "fleet"},
        "spec": {
            "replicas": 2,
            "template": {"spec": {"chainId": "atlantic-2", "image": "seid:v1", "fullNode": {}}},
        },
    }))
    .unwrap();
    let deployment = ns
        .api::<SeiNodeDeployment>()
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let sidecar_image = cx.platform.images.sidecar.clone();
    for ordinal in 0..2 {
        let child = catalog::fleet::desired_child(&deployment, ordinal, None, None);
        catalog::fleet::apply_child(&ns.client(), &child).await.unwrap();
        set_phase(
            &ns,
            &format!("fleet-{ordinal}"),
            json!({"phase": "Running", "currentImage": "seid:v1", "currentSidecarImage": sidecar_image}),
        )
        .await;
    }
    // fleet-0 serves (Running, pod Ready); fleet-1 is Running but has no Ready pod: the fleet is degraded.
    fleet_pod(&ns, "fleet-0").await;
    let t = task("update-node-template");
    let batch = |target: &str, max: u32| {
        let mut inv = invocation(
            ns.name(),
            "SeiNodeDeployment",
            "fleet",
            "update-node-template",
            json!({"image": "seid:v2", "maxUnavailable": max}),
            serde_json::to_value(&deployment).unwrap(),
        );
        inv.task.target = Some(target.to_owned());
        inv
    };
    let nodes = ns.api::<SeiNode>();
    let image = |name: &'static str| {
        let nodes = nodes.clone();
        async move { nodes.get(name).await.unwrap().spec.image }
    };

    // maxUnavailable 1, one child down already: the batch [fleet-0] must not start.
    assert_eq!(t.start(&cx, &batch("fleet-0", 1)).await, Outcome::Running);
    assert_eq!(t.poll(&cx, &batch("fleet-0", 1)).await, Outcome::Running);
    assert_eq!(image("fleet-0").await, "seid:v1", "held: fleet-1 is down already");
    // A child that is down already may always roll: it takes nothing more down.
    assert_eq!(t.start(&cx, &batch("fleet-1", 1)).await, Outcome::Running);
    assert_eq!(image("fleet-1").await, "seid:v2", "a child already down may roll");
    // fleet-1's pod is back, but fleet-1 has not finished its update (currentImage is still seid:v1): it still
    // counts, so fleet-0 waits.
    fleet_pod(&ns, "fleet-1").await;
    assert_eq!(t.poll(&cx, &batch("fleet-0", 1)).await, Outcome::Running);
    assert_eq!(
        image("fleet-0").await,
        "seid:v1",
        "held: fleet-1 is still updating"
    );
    // fleet-1 runs the new image: the budget is free again and fleet-0 starts.
    set_phase(&ns, "fleet-1", json!({"currentImage": "seid:v2"})).await;
    assert_eq!(t.poll(&cx, &batch("fleet-0", 1)).await, Outcome::Running);
    assert_eq!(image("fleet-0").await, "seid:v2", "started within the budget");
}

#[tokio::test]
async fn a_guarded_write_is_refused_when_the_object_changed_in_between() {
    let Some((ns, _cx)) = cluster("cat-guard", &unreachable_template(), PlatformConfig::default()).await
    else {
        return;
    };
    let node = create_node(&ns, "v-0", full_node_spec("seid:v1")).await;
    let api = ns.api::<SeiNode>();
    let read = node.resource_version().unwrap();
    // Someone else writes the node after we read it.
    api.patch(
        "v-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"user": "edit"}}})),
    )
    .await
    .unwrap();
    let manager = catalog::fleet::task_field_manager("collect-and-set-peers");
    let address = catalog::fleet::peer_address(&"ab".repeat(20), ns.name(), "v-1");
    let peers = json!({"spec": {"peers": [{"static": {"addresses": [address]}}]}});
    let e = catalog::fleet::patch_guarded(&api, "v-0", &read, &manager, false, peers.clone())
        .await
        .unwrap_err();
    assert!(catalog::fleet::is_conflict(&e), "{e:?}");
    let status = json!({"status": {"resolvedPeers": [address]}});
    let e = catalog::fleet::patch_guarded(&api, "v-0", &read, &manager, true, status.clone())
        .await
        .unwrap_err();
    assert!(
        catalog::fleet::is_conflict(&e),
        "the status write is guarded too: {e:?}"
    );
    let untouched = api.get("v-0").await.unwrap();
    assert!(untouched.spec.peers.is_none(), "nothing was written");
    // Read again: the write goes through, under the task's own field manager.
    let fresh = untouched.resource_version().unwrap();
    let written = catalog::fleet::patch_guarded(&api, "v-0", &fresh, &manager, false, peers)
        .await
        .unwrap();
    assert!(written.spec.peers.is_some());
    let managers: Vec<String> = written
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.contains(&manager), "{managers:?}");
}

#[tokio::test]
async fn collect_and_set_peers_gives_each_node_the_others_and_never_itself() {
    let sim = Sim::start().await;
    let Some((ns, cx)) = cluster("cat-peers", &sim.url_template(), PlatformConfig::default()).await else {
        return;
    };
    let names = ["v-0", "v-1", "v-2"];
    for name in names {
        create_node(&ns, name, full_node_spec("seid:v1")).await;
    }
    let t = task("collect-and-set-peers");
    let inv = invocation(
        ns.name(),
        "SeiNodeDeployment",
        "fleet",
        "collect-and-set-peers",
        json!({"nodes": names}),
        Value::Null,
    );
    let outcome = t.start(&cx, &inv).await;
    assert!(
        matches!(&outcome, Outcome::Unavailable(m) if m.contains("v-0")),
        "no node id before generate-identity: {outcome:?}"
    );

    let mut ids = Vec::new();
    for name in names {
        let gen_identity = invocation(
            ns.name(),
            "SeiNode",
            name,
            "generate-identity",
            json!({"chainId": CHAIN, "moniker": name}),
            Value::Null,
        );
        let g = task("generate-identity");
        assert_eq!(g.start(&cx, &gen_identity).await, Outcome::Accepted);
        let out = outputs(poll_until_settled(g.as_ref(), &cx, &gen_identity).await);
        ids.push(out["nodeId"].as_str().unwrap().to_owned());
    }

    let done = Outcome::Done(Map::from_iter([("peers".to_owned(), json!(3))]));
    assert_eq!(t.start(&cx, &inv).await, done);
    let nodes = ns.api::<SeiNode>();
    let mut versions = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let node = nodes.get(name).await.unwrap();
        let mut want: Vec<String> = names
            .iter()
            .zip(&ids)
            .filter(|(n, _)| *n != name)
            .map(|(n, id)| catalog::fleet::peer_address(id, ns.name(), n))
            .collect();
        want.sort();
        let peers = serde_json::to_value(node.spec.peers.as_ref().unwrap()).unwrap();
        assert_eq!(peers, json!([{"static": {"addresses": want}}]), "{name}");
        assert!(!peers.to_string().contains(&ids[i]), "{name} is not its own peer");
        assert_eq!(node.status.as_ref().unwrap().resolved_peers, want);
        versions.push(node.resource_version());
    }
    assert_eq!(t.start(&cx, &inv).await, done, "started twice");
    for (name, version) in names.iter().zip(versions) {
        assert_eq!(
            nodes.get(name).await.unwrap().resource_version(),
            version,
            "{name} not rewritten"
        );
    }
}

#[tokio::test]
async fn await_genesis_runs_until_the_ceremony_completes_then_records_hash_and_statefulset() {
    let Some((ns, cx)) = cluster("cat-genesis", &unreachable_template(), PlatformConfig::default()).await
    else {
        return;
    };
    let deployment: SeiNodeDeployment = serde_json::from_value(json!({
        "apiVersion": "sei.io/v1alpha1",
        "kind": "SeiNodeDeployment",
        "metadata": {"name": "fleet"},
        "spec": {
            "replicas": 1,
            "template": {"spec": {"chainId": CHAIN, "image": "seid:v1", "validator": {}}},
            "genesis": {"chainId": CHAIN},
        },
    }))
    .unwrap();
    let deployments = ns.api::<SeiNodeDeployment>();
    let deployment = deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let child = catalog::fleet::desired_child(&deployment, 0, None, None);
    let child = catalog::fleet::apply_child(&ns.client(), &child).await.unwrap();
    let t = task("await-genesis");
    let inv = node_invocation(&ns, &child, "await-genesis", json!({}));
    assert_eq!(
        t.start(&cx, &inv).await,
        Outcome::Running,
        "the ceremony has not finished"
    );

    let set_ceremony = |status: &str, reason: &str, hash: Option<&str>| {
        let deployments = deployments.clone();
        let patch = json!({"status": {
            "genesisHash": hash,
            "conditions": [{
                "type": conditions::GENESIS_CEREMONY_COMPLETE,
                "status": status,
                "reason": reason,
                "message": "validator fleet-0 never uploaded its gentx",
                "lastTransitionTime": "2025-01-01T00:00:00Z",
            }],
        }});
        async move {
            deployments
                .patch_status("fleet", &PatchParams::default(), &Patch::Merge(patch))
                .await
                .unwrap();
        }
    };
    let hash = "cd".repeat(32);
    set_ceremony("True", conditions::reasons::COMPLETE, Some(&hash)).await;
    let outcome = t.poll(&cx, &inv).await;
    assert!(
        matches!(&outcome, Outcome::Unavailable(m) if m.contains("StatefulSet")),
        "{outcome:?}"
    );

    let apply = node_invocation(&ns, &child, "apply-statefulset", json!({}));
    assert_eq!(
        task("apply-statefulset").start(&cx, &apply).await,
        Outcome::done()
    );
    let uid = ns
        .api::<StatefulSet>()
        .get("fleet-0")
        .await
        .unwrap()
        .uid()
        .unwrap();
    let _ = inv.status.take(); // forget what the earlier polls recorded
    let done = Outcome::Done(Map::from_iter([("genesisHash".to_owned(), json!(hash))]));
    assert_eq!(t.poll(&cx, &inv).await, done);
    assert_eq!(t.start(&cx, &inv).await, done, "started twice");
    let updates = inv.status.take();
    assert_eq!(updates.fields["genesisHash"], json!(hash));
    assert_eq!(
        updates.fields["statefulSet"],
        json!({"name": "fleet-0", "uid": uid})
    );

    set_ceremony("False", conditions::reasons::CEREMONY_FAILED, None).await;
    let e = failure(t.poll(&cx, &inv).await);
    assert_eq!(e.class, ErrorClass::Terminal);
    assert!(
        e.message.contains("never uploaded its gentx"),
        "the ceremony's reason is passed on: {}",
        e.message
    );
}
