//! The sidecar client (`sei-tasks`) against the sidecar simulator (`sidecar-sim`, started as a child process):
//! every endpoint, every error class, the faults, and the genesis exchange. No Kubernetes cluster is needed.

// The helpers below are test code too: a setup step that fails must fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use sei_tasks::sidecar::{Client, Config, Error, ErrorClass, NodeClient, SubmitTask, TaskResult, TaskStatus};
use sei_tests::sim::SimProcess;

const NS: &str = "contract";
/// Generous: a task takes 200 ms in the simulator; only a hung simulator reaches this.
const WAIT: Duration = Duration::from_secs(30);

/// A temp directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("sidecar-contract-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Harness {
    sim: SimProcess,
    /// Holds the bucket directory until the test ends.
    _dir: TempDir,
    http: reqwest::Client,
}

impl Harness {
    fn start(args: &[&str]) -> Self {
        let dir = TempDir::new();
        let sim = SimProcess::start(
            Path::new(env!("CARGO_BIN_EXE_sidecar-sim")),
            &dir.0.join("bucket"),
            args,
        )
        .expect("start sidecar-sim");
        Self {
            sim,
            _dir: dir,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    fn client_with(&self, timeout: Duration, token_path: Option<PathBuf>) -> Client {
        Client::new(Config {
            url_template: self.sim.url_template(),
            port: 0,
            token_path,
            timeout,
        })
        .unwrap()
    }

    fn node(&self, name: &str) -> NodeClient {
        self.client_with(Duration::from_secs(10), None).node(NS, name)
    }

    async fn admin(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.sim.url()))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    async fn add_fault(&self, fault: Value) {
        let r = self
            .http
            .post(format!("{}/admin/faults", self.sim.url()))
            .json(&fault)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }

    async fn raw_submit(&self, name: &str, body: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/{NS}/{name}/v0/tasks", self.sim.url()))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

fn task(task_type: &str, params: Value) -> SubmitTask {
    SubmitTask::new(Uuid::new_v4(), task_type, params)
}

/// Submits and polls until the task finished.
async fn run(node: &NodeClient, t: &SubmitTask) -> TaskResult {
    assert_eq!(node.submit(t).await.unwrap(), t.id);
    wait(node, t.id).await
}

async fn wait(node: &NodeClient, id: Uuid) -> TaskResult {
    tokio::time::timeout(WAIT, async {
        loop {
            let r = node.task(id).await.unwrap();
            if r.is_finished() {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("task {id} did not finish within {WAIT:?}"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[tokio::test]
async fn a_submitted_task_runs_completes_and_is_listed() {
    let h = Harness::start(&[]);
    let node = h.node("full-0");
    let t = task(
        "config-apply",
        json!({"mode": "full", "overrides": {"p2p.max_num_inbound_peers": "40"}}),
    );
    let done = run(&node, &t).await;
    assert_eq!(done.id, t.id);
    assert_eq!(done.task_type, "config-apply");
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.run, 1);
    assert_eq!(done.params, Some(t.params.clone()));
    assert_eq!(done.error, None);
    assert!(done.completed_at.is_some() && !done.submitted_at.is_empty());
    let listed = node.tasks().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0], done);
}

#[tokio::test]
async fn a_running_task_can_be_cancelled_and_is_then_unknown() {
    let h = Harness::start(&["--duration", "snapshot-restore=1h"]);
    let node = h.node("full-0");
    let t = task("snapshot-restore", json!({"targetHeight": 100}));
    node.submit(&t).await.unwrap();
    let running = node.task(t.id).await.unwrap();
    assert_eq!(running.status, TaskStatus::Running);
    assert_eq!(running.completed_at, None);
    node.cancel(t.id).await.unwrap();
    assert_eq!(node.task(t.id).await.unwrap_err().class(), ErrorClass::NotFound);
    assert_eq!(node.cancel(t.id).await.unwrap_err().class(), ErrorClass::NotFound);
}

#[tokio::test]
async fn resubmitting_a_running_or_completed_id_runs_nothing_again() {
    let h = Harness::start(&[]);
    let node = h.node("full-0");
    let t = task("config-validate", Value::Null);
    node.submit(&t).await.unwrap();
    node.submit(&t).await.unwrap();
    let done = wait(&node, t.id).await;
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(node.submit(&t).await.unwrap(), t.id);
    let again = node.task(t.id).await.unwrap();
    assert_eq!((again.status, again.run), (TaskStatus::Completed, 1));
    let admin = h.admin(&format!("/admin/nodes/{NS}/full-0")).await;
    assert_eq!(admin["executions"][t.id.to_string()], 1);
}

#[tokio::test]
async fn a_failed_task_runs_again_when_resubmitted() {
    let h = Harness::start(&["--fail", "config-apply:1"]);
    let node = h.node("full-0");
    let t = task("config-apply", json!({"mode": "full"}));
    let failed = run(&node, &t).await;
    assert_eq!(failed.status, TaskStatus::Failed);
    assert!(
        failed.error.as_deref().unwrap().contains("injected failure"),
        "{failed:?}"
    );
    let retried = run(&node, &t).await;
    assert_eq!((retried.status, retried.run), (TaskStatus::Completed, 2));
    assert_eq!(retried.error, None);
    let tasks = h.admin("/admin/tasks").await;
    assert_eq!(tasks[0]["id"], t.id.to_string());
    assert_eq!(tasks[0]["executions"], 2);
}

#[tokio::test]
async fn an_unknown_task_type_is_a_terminal_rejection_carrying_the_sidecars_message() {
    let h = Harness::start(&[]);
    let err = h
        .node("full-0")
        .submit(&task("launch-rockets", Value::Null))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Terminal);
    assert!(
        matches!(&err, Error::Rejected { message, .. } if message == "unknown task type: launch-rockets")
    );
    // The other 400s of the contract, as the sidecar answers them.
    for (body, want) in [
        ("{not json", "invalid JSON"),
        (r#"{"params": {}}"#, "missing task type"),
        (r#"{"id": "42", "type": "mark-ready"}"#, "not a UUID"),
    ] {
        let (status, reply) = h.raw_submit("full-0", body).await;
        assert_eq!(status, 400, "{body}");
        assert!(reply["error"].as_str().unwrap().contains(want), "{body}: {reply}");
    }
    // Without an id the sidecar picks one.
    let (status, reply) = h.raw_submit("full-0", r#"{"type": "mark-ready"}"#).await;
    assert_eq!(status, 201);
    assert!(Uuid::parse_str(reply["id"].as_str().unwrap()).is_ok());
}

#[tokio::test]
async fn polling_an_unknown_task_is_not_found() {
    let h = Harness::start(&[]);
    let err = h.node("full-0").task(Uuid::new_v4()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::NotFound);
    assert!(matches!(err, Error::TaskNotFound { .. }));
}

#[tokio::test]
async fn healthz_is_503_until_mark_ready_completes_and_after_mark_not_ready() {
    let h = Harness::start(&[]);
    let node = h.node("full-0");
    assert!(!node.healthz().await.unwrap());
    assert_eq!(
        run(&node, &task("mark-ready", Value::Null)).await.status,
        TaskStatus::Completed
    );
    assert!(node.healthz().await.unwrap());
    assert!(
        !h.node("full-1").healthz().await.unwrap(),
        "readiness is per node"
    );
    assert_eq!(
        run(&node, &task("mark-not-ready", Value::Null)).await.status,
        TaskStatus::Completed
    );
    assert!(!node.healthz().await.unwrap());
}

#[tokio::test]
async fn node_id_appears_once_generate_identity_ran() {
    let h = Harness::start(&[]);
    let node = h.node("val-0");
    let err = node.node_id().await.unwrap_err();
    assert_eq!((err.class(), err.status()), (ErrorClass::Transient, Some(500)));
    let done = run(
        &node,
        &task("generate-identity", json!({"chainId": "c", "moniker": "val-0"})),
    )
    .await;
    let id = node.node_id().await.unwrap();
    assert_eq!(id.len(), 40);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(done.result.unwrap()["nodeId"], id);
    run(
        &h.node("val-1"),
        &task("generate-identity", json!({"chainId": "c"})),
    )
    .await;
    assert_ne!(h.node("val-1").node_id().await.unwrap(), id);
}

#[tokio::test]
async fn traceparent_is_sent_and_recorded_per_node_and_task() {
    let h = Harness::start(&[]);
    let tp1 = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let tp2 = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01";
    let t = task("mark-ready", Value::Null);
    h.node("full-0")
        .with_traceparent(Some(tp1))
        .submit(&t)
        .await
        .unwrap();
    let tasks = h.admin("/admin/tasks").await;
    assert_eq!(tasks[0]["lastTraceparent"], tp1);
    let traced = h.node("full-0").with_traceparent(Some(tp2));
    wait(&traced, t.id).await;
    // A call without the header leaves the recorded one alone.
    h.node("full-0").healthz().await.unwrap();
    let node = h.admin(&format!("/admin/nodes/{NS}/full-0")).await;
    assert_eq!(node["lastTraceparent"], tp2);
    assert_eq!(node["tasks"][0]["lastTraceparent"], tp2);
}

#[tokio::test]
async fn a_closed_port_is_a_transient_connect_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = Client::new(Config {
        url_template: "http://127.0.0.1:{port}/{namespace}/{name}".to_owned(),
        port,
        token_path: None,
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let err = client.node(NS, "gone").healthz().await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);
}

#[tokio::test]
async fn a_slow_sidecar_times_out_as_transient() {
    let h = Harness::start(&["--latency", &format!("@{NS}/slow=10s")]);
    let client = h.client_with(Duration::from_millis(300), None);
    let err = client
        .node(NS, "slow")
        .submit(&task("mark-ready", Value::Null))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);
    assert!(
        !h.node("fast").healthz().await.unwrap(),
        "the latency fault is for one node only"
    );
}

#[tokio::test]
async fn server_errors_are_transient_and_pass() {
    let h = Harness::start(&[]);
    h.add_fault(json!({"kind": "status", "node": format!("{NS}/flaky"), "code": 503, "count": 2}))
        .await;
    h.add_fault(json!({"kind": "status", "node": format!("{NS}/broken"), "code": 500}))
        .await;
    let flaky = h.node("flaky");
    let t = task("mark-ready", Value::Null);
    for _ in 0..2 {
        let err = flaky.submit(&t).await.unwrap_err();
        assert_eq!(
            (err.class(), err.status()),
            (ErrorClass::Transient, Some(503)),
            "{err}"
        );
    }
    run(&flaky, &t).await;
    let err = h.node("broken").task(t.id).await.unwrap_err();
    assert_eq!((err.class(), err.status()), (ErrorClass::Transient, Some(500)));
}

#[tokio::test]
async fn the_bearer_token_is_sent_and_reread_after_a_401() {
    let dir = TempDir::new();
    let server_token = dir.0.join("server-token");
    let client_token = dir.0.join("client-token");
    std::fs::write(&server_token, "one\n").unwrap();
    std::fs::write(&client_token, "one\n").unwrap();
    let h = Harness::start(&["--require-token", server_token.to_str().unwrap()]);
    let node = h
        .client_with(Duration::from_secs(10), Some(client_token.clone()))
        .node(NS, "val-0");
    let admin = format!("/admin/nodes/{NS}/val-0");

    run(&node, &task("mark-ready", Value::Null)).await;
    assert_eq!(h.admin(&admin).await["unauthorized"], 0);

    // The token rotates: the cached one is refused once, the file is re-read, the call goes through.
    std::fs::write(&server_token, "two").unwrap();
    std::fs::write(&client_token, "two").unwrap();
    run(&node, &task("config-validate", Value::Null)).await;
    assert_eq!(h.admin(&admin).await["unauthorized"], 1);

    // A token the sidecar keeps refusing is terminal after one re-read.
    std::fs::write(&server_token, "three").unwrap();
    let err = node.tasks().await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Terminal);
    assert_eq!(h.admin(&admin).await["unauthorized"], 3);

    // No token file: no Authorization header at all, which this sidecar refuses.
    let anonymous = h
        .client_with(Duration::from_secs(10), Some(dir.0.join("missing")))
        .node(NS, "val-0");
    assert_eq!(anonymous.tasks().await.unwrap_err().class(), ErrorClass::Terminal);
    // The probes need no token.
    assert!(anonymous.healthz().await.unwrap());
}

/// Runs generate-identity, generate-gentx and upload-genesis-artifacts on one validator.
async fn prepare_validator(h: &Harness, chain: &str, name: &str) {
    let node = h.node(name);
    let steps = [
        task("generate-identity", json!({"chainId": chain, "moniker": name})),
        task(
            "generate-gentx",
            json!({"chainId": chain, "stakingAmount": "10sei", "accountBalance": "100sei"}),
        ),
        task("upload-genesis-artifacts", json!({"nodeName": name})),
    ];
    for t in &steps {
        let r = run(&node, t).await;
        assert_eq!(r.status, TaskStatus::Completed, "{r:?}");
    }
}

#[tokio::test]
async fn a_three_validator_genesis_ceremony_exchanges_artifacts_and_verifies_the_hash() {
    let h = Harness::start(&[]);
    let chain = "sim-chain-1";
    let names = ["val-0", "val-1", "val-2"];
    let assembler = h.node("val-0");
    let assemble = task(
        "assemble-and-upload-genesis",
        json!({"chainId": chain, "namespace": NS, "nodes": names.map(|n| json!({"name": n})),
               "overrides": {"staking.params.unbonding_time": "60s"}}),
    );
    prepare_validator(&h, chain, "val-0").await;
    prepare_validator(&h, chain, "val-1").await;
    assembler.submit(&assemble).await.unwrap();
    // One validator's artifacts are missing: the assembler waits, and nobody can configure genesis yet.
    let early = run(&h.node("val-1"), &task("configure-genesis", Value::Null)).await;
    assert_eq!(early.status, TaskStatus::Failed);
    assert!(early.error.unwrap().contains("genesis.json not found"));
    assert_eq!(
        assembler.task(assemble.id).await.unwrap().status,
        TaskStatus::Running
    );

    prepare_validator(&h, chain, "val-2").await;
    let genesis_task = wait(&assembler, assemble.id).await;
    assert_eq!(genesis_task.status, TaskStatus::Completed, "{genesis_task:?}");
    let hash = genesis_task.result.unwrap()["genesisHash"]
        .as_str()
        .unwrap()
        .to_owned();
    let bucket = &h.sim.bucket_dir;
    let genesis_bytes = std::fs::read(bucket.join(chain).join("genesis.json")).unwrap();
    assert_eq!(hash, sha256_hex(&genesis_bytes));
    let genesis: Value = serde_json::from_slice(&genesis_bytes).unwrap();
    assert_eq!(genesis["chain_id"], chain);
    assert_eq!(genesis["validators"].as_array().unwrap().len(), 3);
    assert_eq!(
        genesis["app_state"]["genutil"]["gen_txs"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(genesis["app_state"]["staking"]["params"]["unbonding_time"], "60s");

    let mut ids = Vec::new();
    for name in names {
        ids.push(h.node(name).node_id().await.unwrap());
        assert!(bucket.join(chain).join(name).join("gentx.json").is_file());
    }
    let peers: Vec<String> =
        serde_json::from_slice(&std::fs::read(bucket.join(chain).join("peers.json")).unwrap()).unwrap();
    let want: Vec<String> = names
        .iter()
        .zip(&ids)
        .map(|(n, id)| format!("{id}@{n}-0.{n}.{NS}.svc.cluster.local:26656"))
        .collect();
    assert_eq!(peers, want);

    for name in names {
        let node = h.node(name);
        let configured = run(
            &node,
            &task("configure-genesis", json!({"expectedGenesisHash": hash})),
        )
        .await;
        assert_eq!(configured.status, TaskStatus::Completed, "{configured:?}");
        assert_eq!(configured.result.unwrap()["genesisHash"], hash.as_str());
    }
    let set = run(&h.node("val-1"), &task("set-genesis-peers", Value::Null)).await;
    assert_eq!(set.status, TaskStatus::Completed, "{set:?}");
    assert_eq!(
        set.result.unwrap()["peers"],
        json!([want[0], want[2]]),
        "peers exclude the node itself"
    );
}

#[tokio::test]
async fn configure_genesis_fails_on_a_hash_mismatch_naming_both_hashes() {
    let h = Harness::start(&[]);
    let chain = "sim-chain-2";
    prepare_validator(&h, chain, "solo").await;
    let node = h.node("solo");
    let assembled = run(
        &node,
        &task(
            "assemble-and-upload-genesis",
            json!({"chainId": chain, "nodes": ["solo"]}),
        ),
    )
    .await;
    let actual = assembled.result.unwrap()["genesisHash"]
        .as_str()
        .unwrap()
        .to_owned();
    let wrong = "0".repeat(64);
    let r = run(
        &node,
        &task("configure-genesis", json!({"expectedGenesisHash": wrong})),
    )
    .await;
    assert_eq!(r.status, TaskStatus::Failed);
    let error = r.error.unwrap();
    assert!(error.contains(&wrong) && error.contains(&actual), "{error}");
}

#[tokio::test]
async fn a_failing_config_validate_carries_its_diagnostics() {
    let h = Harness::start(&[]);
    h.add_fault(json!({"kind": "fail", "task": "config-validate", "node": format!("{NS}/bad")}))
        .await;
    let r = run(&h.node("bad"), &task("config-validate", Value::Null)).await;
    assert_eq!(r.status, TaskStatus::Failed);
    assert!(r.error.unwrap().contains("config validation failed"));
    let diagnostics = &r.result.unwrap()["diagnostics"];
    assert_eq!(diagnostics[0]["severity"], "error", "{diagnostics}");
    // The fault fired once, on that node only.
    assert_eq!(
        run(&h.node("good"), &task("config-validate", Value::Null))
            .await
            .status,
        TaskStatus::Completed
    );
    assert_eq!(
        run(&h.node("bad"), &task("config-validate", Value::Null))
            .await
            .status,
        TaskStatus::Completed
    );
}

#[tokio::test]
async fn a_restart_forgets_the_ready_flag_and_running_tasks() {
    let h = Harness::start(&["--duration", "stop-seid=1h"]);
    let node = h.node("full-0");
    let ready = task("mark-ready", Value::Null);
    run(&node, &ready).await;
    let stuck = task("stop-seid", Value::Null);
    node.submit(&stuck).await.unwrap();
    assert!(node.healthz().await.unwrap());

    let r = h
        .http
        .post(format!("{}/admin/nodes/{NS}/full-0/restart", h.sim.url()))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert!(!node.healthz().await.unwrap());
    assert_eq!(
        node.task(stuck.id).await.unwrap_err().class(),
        ErrorClass::NotFound
    );
    // Finished tasks are in the sidecar's durable store: still there.
    assert_eq!(node.task(ready.id).await.unwrap().status, TaskStatus::Completed);
    assert_eq!(h.admin(&format!("/admin/nodes/{NS}/full-0")).await["restarts"], 1);
    // A new mark-ready (new id: the old one completed) approves the node again.
    run(&node, &task("mark-ready", Value::Null)).await;
    assert!(node.healthz().await.unwrap());
}

#[test]
fn the_simulator_documents_itself_and_binds_only_loopback() {
    let bin = env!("CARGO_BIN_EXE_sidecar-sim");
    let help = std::process::Command::new(bin).arg("--help").output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    for needle in [
        "--require-token",
        "--fail",
        "--latency",
        "/admin/faults",
        "/admin/nodes/NS/NAME/restart",
        "EXAMPLES",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
    let dir = TempDir::new();
    let out = std::process::Command::new(bin)
        .args(["--listen", "0.0.0.0:0", "--bucket-dir"])
        .arg(&dir.0)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only binds 127.0.0.1"));
}
