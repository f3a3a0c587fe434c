//! End-to-end: SeiNodes on the local cluster, driven by the operator binary and the sidecar simulator.

#![allow(clippy::unwrap_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use sei_crds::SeiNode;
use serde_json::json;

use common::{Operator, Sim, setup};

const WAIT: Duration = Duration::from_secs(90);

fn full_node(name: &str, image: &str) -> SeiNode {
    serde_json::from_value(json!({
        "apiVersion": "sei.io/v1alpha1",
        "kind": "SeiNode",
        "metadata": {"name": name},
        "spec": {"chainId": "atlantic-2", "image": image, "fullNode": {}},
    }))
    .unwrap()
}

fn phase_is(phase: &'static str) -> impl Fn(Option<&SeiNode>) -> bool {
    move |n: Option<&SeiNode>| {
        n.and_then(|n| n.status.as_ref())
            .and_then(|s| s.phase)
            .is_some_and(|p| p.as_str() == phase)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_goes_from_created_to_running_with_a_ready_pod() {
    let Some(ns) = setup("e2e-init").await else { return };
    let sim = Sim::start(Duration::from_millis(50), vec![]).await;
    let _op = Operator::start(ns.env(), ns.name(), &sim, &[]);
    let nodes = ns.api::<SeiNode>();
    nodes
        .create(&PostParams::default(), &full_node("rpc", "seid:v1"))
        .await
        .unwrap();

    let node = sei_tests::wait_for(&nodes, "rpc", phase_is("Running"), WAIT)
        .await
        .unwrap();
    let status = node.status.unwrap();
    assert_eq!(status.current_image.as_deref(), Some("seid:v1"));
    assert!(status.current_sidecar_image.is_some());
    assert!(
        status.plan.is_none(),
        "a finished plan is cleared: {:?}",
        status.plan
    );
    let history = &status.plan_history;
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].workflow, "node-init");
    assert!(status.stateful_set.is_some(), "the StatefulSet is recorded");

    let pod = sei_tests::wait_for(
        &ns.api::<Pod>(),
        "rpc-0",
        |p: Option<&Pod>| {
            p.and_then(|p| p.status.as_ref()).is_some_and(|s| {
                s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        },
        WAIT,
    )
    .await;
    assert!(pod.is_ok(), "the node's pod is Ready: {pod:?}");
    let pvc = ns.api::<PersistentVolumeClaim>().get("data-rpc").await.unwrap();
    assert!(
        pvc.metadata
            .owner_references
            .unwrap_or_default()
            .iter()
            .any(|o| o.kind == "SeiNode")
    );
    // Every sidecar task of the init ran exactly once.
    let sim_node = sim.node(ns.name(), "rpc").await;
    assert_eq!(
        sim_node["ready"], true,
        "mark-ready reached the sidecar: {sim_node}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_change_runs_node_update_and_records_the_new_image() {
    let Some(ns) = setup("e2e-update").await else {
        return;
    };
    let sim = Sim::start(Duration::from_millis(50), vec![]).await;
    let _op = Operator::start(ns.env(), ns.name(), &sim, &[]);
    let nodes = ns.api::<SeiNode>();
    nodes
        .create(&PostParams::default(), &full_node("rpc", "seid:v1"))
        .await
        .unwrap();
    sei_tests::wait_for(&nodes, "rpc", phase_is("Running"), WAIT)
        .await
        .unwrap();

    let seen = common::Recorder::start(nodes.clone(), "rpc").await;
    nodes
        .patch(
            "rpc",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"image": "seid:v2"}})),
        )
        .await
        .unwrap();
    let node = sei_tests::wait_for(
        &nodes,
        "rpc",
        |n: Option<&SeiNode>| {
            n.and_then(|n| n.status.as_ref()).is_some_and(|s| {
                s.current_image.as_deref() == Some("seid:v2")
                    && s.plan.is_none()
                    && s.phase.is_some_and(|p| p.as_str() == "Running")
            })
        },
        WAIT,
    )
    .await
    .unwrap();
    let status = node.status.unwrap();
    let update = status.condition("NodeUpdateInProgress").unwrap();
    assert_eq!(
        (update.status.as_str(), update.reason.as_str()),
        ("False", "UpdateComplete")
    );
    assert_eq!(status.plan_history.last().unwrap().workflow, "node-update");
    // While it ran, the workflow's onStart said so (no controller code names node-update).
    assert!(
        seen.states().iter().any(|n| n.status.as_ref().is_some_and(|s| {
            s.plan.is_some()
                && s.condition("NodeUpdateInProgress")
                    .is_some_and(|c| c.status == "True" && c.reason == "UpdateStarted")
        })),
        "NodeUpdateInProgress=True while the plan ran"
    );
    let sts = ns.api::<StatefulSet>().get("rpc").await.unwrap();
    let image = sts
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers
        .iter()
        .find(|c| c.name == "seid")
        .and_then(|c| c.image.clone());
    assert_eq!(image.as_deref(), Some("seid:v2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_changed_again_during_an_update_supersedes_it() {
    let Some(ns) = setup("e2e-supersede").await else {
        return;
    };
    let sim = Sim::start(Duration::from_millis(400), vec![]).await;
    let _op = Operator::start(ns.env(), ns.name(), &sim, &[]);
    let nodes = ns.api::<SeiNode>();
    nodes
        .create(&PostParams::default(), &full_node("rpc", "seid:v1"))
        .await
        .unwrap();
    sei_tests::wait_for(&nodes, "rpc", phase_is("Running"), WAIT)
        .await
        .unwrap();
    let image = |tag: &str| Patch::Merge(json!({"spec": {"image": tag}}));
    nodes
        .patch("rpc", &PatchParams::default(), &image("seid:v2"))
        .await
        .unwrap();
    sei_tests::wait_for(
        &nodes,
        "rpc",
        |n: Option<&SeiNode>| {
            n.and_then(|n| n.status.as_ref())
                .and_then(|s| s.plan.as_ref())
                .is_some_and(|p| p.workflow == "node-update")
        },
        WAIT,
    )
    .await
    .unwrap();
    nodes
        .patch("rpc", &PatchParams::default(), &image("seid:v3"))
        .await
        .unwrap();
    let node = sei_tests::wait_for(
        &nodes,
        "rpc",
        |n: Option<&SeiNode>| {
            n.and_then(|n| n.status.as_ref())
                .is_some_and(|s| s.current_image.as_deref() == Some("seid:v3") && s.plan.is_none())
        },
        WAIT,
    )
    .await
    .unwrap();
    let history = node.status.unwrap().plan_history;
    let updates: Vec<String> = history
        .iter()
        .filter(|h| h.workflow == "node-update")
        .map(|h| format!("{:?}", h.phase))
        .collect();
    assert_eq!(
        updates,
        ["Cancelled", "Succeeded"],
        "the v2 update was superseded, then v3 rolled: {history:?}"
    );
    let sts = ns.api::<StatefulSet>().get("rpc").await.unwrap();
    let image = sts
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers
        .into_iter()
        .find(|c| c.name == "seid")
        .and_then(|c| c.image);
    assert_eq!(image.as_deref(), Some("seid:v3"));
}
