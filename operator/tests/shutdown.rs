//! SIGTERM mid-plan: the operator finishes its in-flight reconciles, releases its lease and exits 0; the
//! journal it leaves is consistent, and a new operator takes over at once and completes the plan.

#![allow(clippy::unwrap_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::PostParams;
use sei_crds::SeiNode;
use serde_json::json;

use common::{Operator, Sim, setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_plan_exits_cleanly_releases_the_lease_and_a_successor_finishes() {
    let Some(ns) = setup("shutdown").await else { return };
    let sim = Sim::start(Duration::from_millis(400), vec![]).await;
    let identity = [("SEI_IDENTITY", "op-a")];
    let mut op = Operator::start(ns.env(), ns.name(), &sim, &identity);
    let node: SeiNode = serde_json::from_value(json!({
        "apiVersion": "sei.io/v1alpha1", "kind": "SeiNode", "metadata": {"name": "rpc"},
        "spec": {"chainId": "atlantic-2", "image": "seid:v1", "fullNode": {}},
    }))
    .unwrap();
    let nodes = ns.api::<SeiNode>();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    // Wait until the plan is under way (some task started), then stop the operator.
    sei_tests::wait_for(
        &nodes,
        "rpc",
        |n: Option<&SeiNode>| {
            n.and_then(|n| n.status.as_ref())
                .and_then(|s| s.plan.as_ref())
                .is_some_and(|p| p.tasks.iter().any(|t| t.runs.iter().any(|r| r.attempt > 0)))
        },
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let t0 = std::time::Instant::now();
    let status = op.terminate(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "exits 0 on SIGTERM: {status:?}\n{}",
        op.log()
    );
    assert!(op.log().contains("Shutting down"), "{}", op.log());
    let lease = ns.api::<Lease>().get("sei-operator-leader").await.unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity,
        None,
        "the lease was released"
    );
    // The journal left behind is a valid, active plan.
    let left = nodes.get("rpc").await.unwrap();
    let plan = left.status.unwrap().plan;
    assert!(
        plan.is_some_and(|p| !p.phase.is_terminal()),
        "the plan is still active and parses"
    );

    // A successor (another identity) takes the released lease at once and finishes the plan.
    let _op_b = Operator::start(ns.env(), ns.name(), &sim, &[("SEI_IDENTITY", "op-b")]);
    let done = sei_tests::wait_for(
        &nodes,
        "rpc",
        |n: Option<&SeiNode>| {
            n.and_then(|n| n.status.as_ref())
                .and_then(|s| s.phase)
                .is_some_and(|p| p.as_str() == "Running")
        },
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "took over without waiting for the lease to expire"
    );
    let history = done.status.unwrap().plan_history;
    assert_eq!(
        history.len(),
        1,
        "the same plan finished, none was rebuilt: {history:?}"
    );
    // No sidecar task ran twice across the handover.
    let tasks = sim.tasks().await;
    let tasks = tasks.as_array().unwrap();
    assert!(
        tasks.len() >= 4,
        "the init's sidecar tasks reached the simulator: {tasks:#?}"
    );
    for task in tasks {
        assert_eq!(task["executions"].as_u64(), Some(1), "{task}");
    }
}
