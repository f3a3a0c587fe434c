//! End-to-end, the workflow examples of `examples/workflows/` (issue 12): each file is applied as a user would
//! apply it and run by a WorkflowRun on the local cluster, with no Rust change; the simulator shows what each
//! node's sidecar was asked to do, in order.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers: a failure fails the test

mod common;

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams, PostParams};
use sei_crds::{SeiNode, SeiNodeDeployment, WorkflowRun, WorkflowTemplate};
use serde_json::{Value, json};

use common::{Operator, Sim, eventually, genesis_fleet, setup};

const WAIT: Duration = Duration::from_secs(120);

/// Creates every WorkflowTemplate of `examples/workflows/<file>` and waits until each is Valid.
async fn apply_example(api: &Api<WorkflowTemplate>, file: &str) {
    let path = sei_tests::workspace_root().join("examples/workflows").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let t: WorkflowTemplate = serde::Deserialize::deserialize(doc).unwrap();
        let name = t.metadata.name.clone().unwrap();
        api.create(&PostParams::default(), &t).await.unwrap();
        eventually(&format!("{name} to be Valid"), WAIT, || async {
            let t = api.get(&name).await.ok()?;
            let c = t.status?.conditions.into_iter().find(|c| c.type_ == "Valid")?;
            assert_ne!(c.status, "False", "{file}: {}", c.message);
            (c.status == "True").then_some(())
        })
        .await;
    }
}

async fn start_run(runs: &Api<WorkflowRun>, name: &str, spec: Value) {
    let run: WorkflowRun = serde_json::from_value(json!({
        "apiVersion": "sei.io/v1alpha1", "kind": "WorkflowRun", "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap();
    runs.create(&PostParams::default(), &run).await.unwrap();
}

async fn phase_of(runs: &Api<WorkflowRun>, name: &str, want: &'static str) -> Value {
    eventually(&format!("run {name} to be {want}"), WAIT, || async {
        let status = serde_json::to_value(runs.get(name).await.ok()?.status?).unwrap();
        assert!(
            want == "Failed" || status["phase"] != "Failed",
            "run {name} failed: {status}"
        );
        (status["phase"] == want).then_some(status)
    })
    .await
}

/// Task types the simulator ran for `ns/name`, oldest first.
async fn task_types(sim: &Sim, ns: &str, name: &str) -> Vec<(String, Value)> {
    let mut tasks: Vec<Value> = sim
        .tasks()
        .await
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["namespace"] == ns && t["name"] == name)
        .cloned()
        .collect();
    tasks.sort_by_key(|t| t["submittedAt"].as_str().unwrap_or_default().to_owned());
    tasks
        .into_iter()
        .map(|t| (t["type"].as_str().unwrap().to_owned(), t["params"].clone()))
        .collect()
}

async fn chain(sim: &Sim) -> Value {
    reqwest::get(format!("{}/admin/chain", sim.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn position(types: &[(String, Value)], ty: &str) -> usize {
    types
        .iter()
        .rposition(|(t, _)| t == ty)
        .unwrap_or_else(|| panic!("no {ty} in {types:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_at_height_and_state_sync_rebootstrap_run_on_a_node() {
    let Some(ns) = setup("e2e-examples-node").await else {
        return;
    };
    let sim = Sim::start(Duration::from_millis(50), vec![]).await;
    let _op = Operator::start(ns.env(), ns.name(), &sim, &[]);
    let (templates, runs, nodes) = (
        ns.api::<WorkflowTemplate>(),
        ns.api::<WorkflowRun>(),
        ns.api::<SeiNode>(),
    );
    common::create_full_node(&nodes, "rpc", "Running", WAIT).await;
    apply_example(&templates, "upgrade-at-height.yaml").await;
    apply_example(&templates, "state-sync-rebootstrap.yaml").await;

    // Upgrade at a height a few blocks ahead; the spec names the new image while the run waits.
    let height = chain(&sim).await["height"].as_u64().unwrap() + 5;
    start_run(
        &runs,
        "upgrade",
        json!({"workflowRef": {"name": "upgrade-at-height"},
        "target": {"kind": "SeiNode", "name": "rpc"}, "params": {"height": height, "image": "seid:v2"}}),
    )
    .await;
    phase_of(&runs, "upgrade", "Running").await;
    nodes
        .patch(
            "rpc",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"image": "seid:v2"}})),
        )
        .await
        .unwrap();
    let done = phase_of(&runs, "upgrade", "Succeeded").await;
    let node = nodes.get("rpc").await.unwrap();
    let status = node.status.unwrap();
    assert_eq!(status.current_image.as_deref(), Some("seid:v2"));
    let types = task_types(&sim, ns.name(), "rpc").await;
    let (wait, stop, start) = (
        position(&types, "await-condition"),
        position(&types, "stop-seid"),
        position(&types, "restart-seid"),
    );
    assert!(
        types
            .iter()
            .any(|(t, p)| t == "await-condition" && p["targetHeight"] == height),
        "{types:?}"
    );
    assert!(
        stop < start && types[..stop].iter().any(|(t, _)| t == "await-condition"),
        "{types:?}"
    );
    assert!(
        wait > start,
        "the last await-condition (caught up) comes after the start: {types:?}"
    );
    assert!(
        !status.plan_history.iter().any(|p| p.workflow == "node-update"),
        "nothing left for node-update: {:?}",
        status.plan_history
    );
    assert!(
        done.get("message").is_none(),
        "a succeeded run carries no stale message: {done}"
    );
    println!("upgrade-at-height: {done}");

    // State-sync re-bootstrap with the run's witnesses.
    start_run(&runs, "resync", json!({"workflowRef": {"name": "state-sync-rebootstrap"},
        "target": {"kind": "SeiNode", "name": "rpc"},
        "params": {"rpcServers": ["rpc-1.example.net:26657", "rpc-2.example.net:26657"], "trustPeriod": "24h0m0s"}}))
    .await;
    phase_of(&runs, "resync", "Succeeded").await;
    let types = task_types(&sim, ns.name(), "rpc").await;
    let (reset, configure) = (
        position(&types, "reset-data"),
        position(&types, "configure-state-sync"),
    );
    assert!(
        position(&types, "stop-seid") < reset
            && reset < configure
            && configure < position(&types, "restart-seid"),
        "{types:?}"
    );
    assert_eq!(
        types[configure].1["rpcServers"],
        json!(["rpc-1.example.net:26657", "rpc-2.example.net:26657"])
    );
    assert_eq!(types[configure].1["trustPeriod"], "24h0m0s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_fleet_proposes_and_votes() {
    let Some(ns) = setup("e2e-examples-gov").await else {
        return;
    };
    let sim = Sim::start(Duration::from_millis(50), vec![]).await;
    let _op = Operator::start(ns.env(), ns.name(), &sim, &[]);
    let (templates, runs) = (ns.api::<WorkflowTemplate>(), ns.api::<WorkflowRun>());
    let fleets = ns.api::<SeiNodeDeployment>();
    fleets
        .create(&PostParams::default(), &genesis_fleet("validators", 3, "5m"))
        .await
        .unwrap();
    eventually("the fleet to be Ready", WAIT, || async {
        let f = fleets.get("validators").await.ok()?;
        let phase = serde_json::to_value(f.status?.phase?).unwrap();
        (phase == "Ready").then_some(())
    })
    .await;
    apply_example(&templates, "governance-vote.yaml").await;

    let upgrade_height = chain(&sim).await["height"].as_u64().unwrap() + 10_000;
    start_run(
        &runs,
        "propose",
        json!({"workflowRef": {"name": "gov-propose-upgrade"},
        "target": {"kind": "SeiNodeDeployment", "name": "validators"},
        "params": {"upgradeName": "v2", "upgradeHeight": upgrade_height}}),
    )
    .await;
    phase_of(&runs, "propose", "Succeeded").await;
    let proposals = chain(&sim).await["proposals"].as_array().unwrap().clone();
    assert_eq!(proposals.len(), 1, "{proposals:?}");
    let id = proposals[0]["proposalId"].as_u64().unwrap();
    assert_eq!(proposals[0]["title"], "v2");

    start_run(
        &runs,
        "vote",
        json!({"workflowRef": {"name": "gov-vote"},
        "target": {"kind": "SeiNodeDeployment", "name": "validators"},
        "params": {"proposalId": id, "option": "yes"}}),
    )
    .await;
    let done = phase_of(&runs, "vote", "Succeeded").await;
    let chain = chain(&sim).await;
    let votes = &chain["proposals"][0]["votes"];
    assert_eq!(
        votes.as_object().map(serde_json::Map::len),
        Some(3),
        "every validator voted: {votes}"
    );
    assert!(votes.as_object().unwrap().values().all(|v| v == "yes"), "{votes}");
    let broadcasts = chain["txs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["type"] == "gov-vote")
        .count();
    assert_eq!(broadcasts, 3, "one vote tx per validator");
    println!("gov-vote: {done}");
}
