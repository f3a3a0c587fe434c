//! End-to-end, what a user asks of a plan (issue 11, "every plan ends"): `sei.io/retry` brings a Failed node
//! back (a Failed node is never a dead end), `sei.io/cancel-plan: <plan id>` cancels an active plan, and
//! `spec.paused` freezes a plan's clock (deadline and timers shift by the pause on resume).

mod common;

use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use sei_crds::SeiNode;
use serde_json::json;

use common::{Operator, Sim, eventually, full_node_spec, in_phase, seinode, setup};

const WAIT: Duration = Duration::from_secs(90);

/// The Event reasons of object `name` once every one of `wanted` is among them (Events are published in the
/// background after the status write that tells the same, so they may trail it by a moment).
async fn reasons(ns: &sei_tests::TestNamespace, name: &str, wanted: &[&str]) -> Vec<String> {
    let events = ns.api::<Event>();
    let fields = format!("involvedObject.name={name}");
    eventually(
        &format!("Events {wanted:?} for {name}"),
        Duration::from_secs(20),
        || async {
            let reasons: Vec<String> = events
                .list(&ListParams::default().fields(&fields))
                .await
                .ok()?
                .items
                .into_iter()
                .filter_map(|e| e.reason)
                .collect();
            wanted
                .iter()
                .all(|w| reasons.iter().any(|r| r == w))
                .then_some(reasons)
        },
    )
    .await
}

fn annotate(key: &str, value: &str) -> Patch<serde_json::Value> {
    Patch::Merge(json!({"metadata": {"annotations": {key: value}}}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_node_is_retried_by_annotation_once_per_new_value() {
    let Some(ns) = setup("e2e-retry-ann").await else {
        return;
    };
    let sim = Sim::start(Duration::from_millis(50), vec![]).await;
    // config-apply fails past its budget (3 attempts) once; the retry's attempts succeed.
    sim.fault(json!({
        "kind": "fail", "task": "config-apply", "node": format!("{}/phoenix", ns.name()),
        "count": 3, "error": "disk full (injected)",
    }))
    .await;
    let nodes = ns.api::<SeiNode>();
    let _op = Operator::start(ns.env(), ns.name(), &sim, &[]);
    common::create_full_node(&nodes, "phoenix", "Failed", WAIT).await;
    nodes
        .patch(
            "phoenix",
            &PatchParams::default(),
            &annotate(sei_crds::labels::RETRY, "1"),
        )
        .await
        .unwrap();
    let node = sei_tests::wait_for(&nodes, "phoenix", in_phase("Running"), WAIT)
        .await
        .unwrap();
    let status = node.status.unwrap();
    assert_eq!(status.observed_retry.as_deref(), Some("1"));
    let history: Vec<String> = status
        .plan_history
        .iter()
        .map(|p| format!("{}:{:?}", p.workflow, p.phase))
        .collect();
    assert_eq!(
        history,
        ["node-init:Failed", "node-init:Succeeded"],
        "{history:?}"
    );
    reasons(&ns, "phoenix", &["RetryRequested"]).await;
    // The same value again does nothing: the node stays Running with the same history.
    nodes
        .patch(
            "phoenix",
            &PatchParams::default(),
            &annotate(sei_crds::labels::RETRY, "1"),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = nodes.get("phoenix").await.unwrap().status.unwrap();
    assert_eq!(again.plan_history.len(), 2);
    assert_eq!(common::phase(&nodes.get("phoenix").await.unwrap()), "Running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_plan_is_cancelled_by_annotation_naming_its_id() {
    let Some(ns) = setup("e2e-cancel").await else {
        return;
    };
    // Slow sidecar tasks: the plan is still running when the user cancels it.
    let sim = Sim::start(Duration::from_secs(3), vec![]).await;
    let nodes = ns.api::<SeiNode>();
    let _op = Operator::start(ns.env(), ns.name(), &sim, &[]);
    nodes
        .create(
            &PostParams::default(),
            &seinode("stopme", &full_node_spec("seid:v1")),
        )
        .await
        .unwrap();
    let plan_id = eventually("a node-init plan", WAIT, || async {
        let n = nodes.get_opt("stopme").await.unwrap()?;
        n.status?.plan.map(|p| p.id.to_string())
    })
    .await;
    // Another id is ignored.
    nodes
        .patch(
            "stopme",
            &PatchParams::default(),
            &annotate(
                sei_crds::labels::CANCEL_PLAN,
                "00000000-0000-0000-0000-000000000000",
            ),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let n = nodes.get("stopme").await.unwrap();
    assert_eq!(
        n.status
            .as_ref()
            .and_then(|s| s.plan.as_ref())
            .map(|p| p.id.to_string()),
        Some(plan_id.clone()),
        "a cancel naming another plan changes nothing"
    );
    nodes
        .patch(
            "stopme",
            &PatchParams::default(),
            &annotate(sei_crds::labels::CANCEL_PLAN, &plan_id),
        )
        .await
        .unwrap();
    let summary = eventually("the plan to end Cancelled", WAIT, || async {
        let n = nodes.get_opt("stopme").await.unwrap()?;
        n.status?
            .plan_history
            .into_iter()
            .find(|s| s.id.to_string() == plan_id)
    })
    .await;
    assert_eq!(format!("{:?}", summary.phase), "Cancelled", "{summary:?}");
    let message = serde_json::to_value(&summary).unwrap().to_string();
    assert!(message.contains("cancelled by the user"), "{message}");
    reasons(&ns, "stopme", &["PlanCancelled"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_plan_records_when_and_its_deadline_moves_by_the_pause() {
    let Some(ns) = setup("e2e-pause-clock").await else {
        return;
    };
    let sim = Sim::start(Duration::from_secs(2), vec![]).await;
    let nodes = ns.api::<SeiNode>();
    let _op = Operator::start(ns.env(), ns.name(), &sim, &[]);
    nodes
        .create(
            &PostParams::default(),
            &seinode("frozen", &full_node_spec("seid:v1")),
        )
        .await
        .unwrap();
    let deadline = eventually("a node-init plan", WAIT, || async {
        let n = nodes.get_opt("frozen").await.unwrap()?;
        n.status?.plan?.deadline
    })
    .await;
    nodes
        .patch(
            "frozen",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await
        .unwrap();
    eventually("pausedAt in the journal", WAIT, || async {
        let n = nodes.get_opt("frozen").await.unwrap()?;
        n.status?.plan?.paused_at.map(|_| ())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    nodes
        .patch(
            "frozen",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": false}})),
        )
        .await
        .unwrap();
    let moved = eventually("the plan resumed with its deadline moved", WAIT, || async {
        let n = nodes.get_opt("frozen").await.unwrap()?;
        let plan = n.status?.plan?;
        (plan.paused_at.is_none()).then_some(plan.deadline?)
    })
    .await;
    let shift = moved.unix_millis() - deadline.unix_millis();
    assert!(
        shift >= 3_000,
        "the deadline moved by the pause (>= 3 s), not {shift} ms"
    );
    sei_tests::wait_for(&nodes, "frozen", in_phase("Running"), WAIT)
        .await
        .unwrap();
    reasons(&ns, "frozen", &["PlanPaused", "PlanResumed"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_plan_is_cancelled_by_annotation_naming_its_id() {
    let Some(ns) = setup("e2e-cancel-fleet").await else {
        return;
    };
    let sim = Sim::start(Duration::from_secs(3), vec![]).await;
    let fleets = ns.api::<sei_crds::SeiNodeDeployment>();
    let _op = Operator::start(ns.env(), ns.name(), &sim, &[]);
    fleets
        .create(&PostParams::default(), &common::genesis_fleet("halt", 2, "5m"))
        .await
        .unwrap();
    let plan_id = eventually("a genesis-ceremony plan", WAIT, || async {
        let d = fleets.get_opt("halt").await.unwrap()?;
        d.status?.plan.map(|p| p.id.to_string())
    })
    .await;
    fleets
        .patch(
            "halt",
            &PatchParams::default(),
            &annotate(sei_crds::labels::CANCEL_PLAN, &plan_id),
        )
        .await
        .unwrap();
    let summary = eventually("the ceremony plan to end Cancelled", WAIT, || async {
        let d = fleets.get_opt("halt").await.unwrap()?;
        d.status?
            .plan_history
            .into_iter()
            .find(|s| s.id.to_string() == plan_id)
    })
    .await;
    assert_eq!(format!("{:?}", summary.phase), "Cancelled", "{summary:?}");
    reasons(&ns, "halt", &["PlanCancelled"]).await;
}
