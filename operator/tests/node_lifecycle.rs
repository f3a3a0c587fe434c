//! End-to-end, a node's life around its plans: `spec.paused` (frozen, then resumed), deletion (the data PVC goes,
//! an imported one stays), and the status-write budget (one write per reconcile that changed something, none
//! when nothing did). Each test runs in its own namespace against the local cluster.

mod common;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use sei_crds::SeiNode;
use serde_json::json;

use common::{
    Operator, Recorder, Sim, eventually, full_node_spec, in_phase, phase, plan_task, seinode, setup,
    status_json, wait_gone,
};

const WAIT: Duration = Duration::from_secs(90);

fn replicas(sts: Option<&StatefulSet>) -> Option<i32> {
    sts.and_then(|s| s.spec.as_ref()).and_then(|s| s.replicas)
}

fn condition_is(node: &SeiNode, type_: &str, want: &str) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.condition(type_))
        .is_some_and(|c| c.status == want)
}

/// (e) A node paused at creation gets a StatefulSet with 0 replicas and no plan; a node paused in the middle of
/// its init keeps its journal as it was (a sidecar task that finished meanwhile is not even polled) even across
/// later reconciles; once unpaused, both resume and reach Running with 1 replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
async fn a_paused_node_stays_frozen_and_resumes_when_unpaused() {
    let Some(ns) = setup("e2e-pause").await else {
        return;
    };
    let sim = Sim::start(Duration::from_millis(50), vec![]).await;
    // The mid-init node's config-apply runs long enough to pause the node while it runs.
    sim.fault(json!({
        "kind": "duration", "task": "config-apply", "node": format!("{}/later", ns.name()), "delay": "3s",
    }))
    .await;
    let nodes = ns.api::<SeiNode>();
    let sets = ns.api::<StatefulSet>();
    let _op = Operator::start(ns.env(), ns.name(), &sim, &[]);
    let mut frozen = full_node_spec("seid:v1");
    frozen["paused"] = json!(true);
    nodes
        .create(&PostParams::default(), &seinode("frozen", &frozen))
        .await
        .unwrap();
    nodes
        .create(
            &PostParams::default(),
            &seinode("later", &full_node_spec("seid:v1")),
        )
        .await
        .unwrap();

    // Paused at creation: Paused True, replicas 0, no plan.
    let node = sei_tests::wait_for(
        &nodes,
        "frozen",
        |n: Option<&SeiNode>| n.is_some_and(|n| condition_is(n, "Paused", "True")),
        WAIT,
    )
    .await
    .unwrap();
    sei_tests::wait_for(
        &sets,
        "frozen",
        |s: Option<&StatefulSet>| replicas(s) == Some(0),
        WAIT,
    )
    .await
    .unwrap();
    assert!(
        node.status.as_ref().unwrap().plan.is_none(),
        "no plan starts while paused"
    );
    assert_eq!(phase(&node), "");

    // Paused mid-init: wait until config-apply runs, then pause.
    sei_tests::wait_for(
        &nodes,
        "later",
        |n: Option<&SeiNode>| {
            n.and_then(|n| plan_task(n, "config-apply"))
                .is_some_and(|t| t.pointer("/runs/0/state") == Some(&json!("Running")))
        },
        WAIT,
    )
    .await
    .unwrap();
    let paused = nodes
        .patch(
            "later",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await
        .unwrap();
    let generation = paused.metadata.generation;
    let node = sei_tests::wait_for(
        &nodes,
        "later",
        |n: Option<&SeiNode>| {
            n.is_some_and(|n| {
                n.status.as_ref().and_then(|s| s.observed_generation) == generation
                    && condition_is(n, "Paused", "True")
            })
        },
        WAIT,
    )
    .await
    .unwrap();
    let journal = status_json(&node)["plan"].clone();
    assert_eq!(
        plan_task(&node, "config-apply").unwrap()["runs"][0]["state"],
        "Running"
    );
    sei_tests::wait_for(
        &sets,
        "later",
        |s: Option<&StatefulSet>| replicas(s) == Some(0),
        WAIT,
    )
    .await
    .unwrap();
    // The sidecar finishes config-apply meanwhile...
    eventually("config-apply to complete on the sidecar", WAIT, || async {
        let tasks = sim.tasks_of_type(ns.name(), "later", "config-apply").await;
        (tasks.len() == 1 && tasks[0]["status"] == "completed").then_some(())
    })
    .await;
    // ...and a later reconcile (woken by a spec change, so observedGeneration tells when it ran) still leaves
    // the journal exactly as it was.
    let poked = nodes
        .patch(
            "later",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"podLabels": {"poked": "1"}}})),
        )
        .await
        .unwrap();
    let generation = poked.metadata.generation;
    let node = sei_tests::wait_for(
        &nodes,
        "later",
        |n: Option<&SeiNode>| {
            n.is_some_and(|n| n.status.as_ref().and_then(|s| s.observed_generation) == generation)
        },
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(
        status_json(&node)["plan"],
        journal,
        "a paused node's journal does not advance"
    );
    assert_eq!(phase(&node), "Initializing");
    assert!(
        sim.tasks_of_type(ns.name(), "later", "config-validate")
            .await
            .is_empty()
    );
    assert_eq!(replicas(sets.get_opt("later").await.unwrap().as_ref()), Some(0));

    // Unpause both: they resume and reach Running with one replica.
    for name in ["frozen", "later"] {
        nodes
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"paused": false}})),
            )
            .await
            .unwrap();
    }
    for name in ["frozen", "later"] {
        let node = sei_tests::wait_for(&nodes, name, in_phase("Running"), WAIT)
            .await
            .unwrap();
        assert!(condition_is(&node, "Paused", "False"), "{name}");
        sei_tests::wait_for(
            &sets,
            name,
            |s: Option<&StatefulSet>| replicas(s) == Some(1),
            WAIT,
        )
        .await
        .unwrap();
    }
    // The resumed plan is the one that was frozen, not a new one.
    let later = nodes.get("later").await.unwrap().status.unwrap();
    assert_eq!(later.plan_history.len(), 1);
    assert_eq!(json!(later.plan_history[0].id), journal["id"]);
}

/// (e) Deleting a node deletes its data PVC; a node whose data volume was imported leaves that PVC alone.
/// The imported PVC is created and Bound before the node; the node reports ImportPVCReady True and mounts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_node_removes_its_pvc_unless_imported() {
    let Some(ns) = setup("e2e-delete").await else {
        return;
    };
    let sim = Sim::start(Duration::from_millis(50), vec![]).await;
    let pvcs = ns.api::<PersistentVolumeClaim>();
    let imported: PersistentVolumeClaim = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "keep-me"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "standard",
            "resources": {"requests": {"storage": "2000Gi"}},
        },
    }))
    .unwrap();
    pvcs.create(&PostParams::default(), &imported).await.unwrap();
    sei_tests::wait_for(
        &pvcs,
        "keep-me",
        |p: Option<&PersistentVolumeClaim>| {
            p.and_then(|p| p.status.as_ref())
                .is_some_and(|s| s.phase.as_deref() == Some("Bound"))
        },
        WAIT,
    )
    .await
    .unwrap();

    let nodes = ns.api::<SeiNode>();
    let _op = Operator::start(ns.env(), ns.name(), &sim, &[]);
    nodes
        .create(
            &PostParams::default(),
            &seinode("owned", &full_node_spec("seid:v1")),
        )
        .await
        .unwrap();
    let mut spec = full_node_spec("seid:v1");
    spec["dataVolume"] = json!({"import": {"pvcName": "keep-me"}});
    nodes
        .create(&PostParams::default(), &seinode("adopter", &spec))
        .await
        .unwrap();
    for name in ["owned", "adopter"] {
        sei_tests::wait_for(&nodes, name, in_phase("Running"), WAIT)
            .await
            .unwrap();
    }
    let adopter = nodes.get("adopter").await.unwrap();
    let ready = adopter
        .status
        .as_ref()
        .unwrap()
        .condition("ImportPVCReady")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "PVCValidated"),
        "{ready:?}"
    );
    assert!(ready.message.contains("keep-me"), "{ready:?}");
    assert!(pvcs.get_opt("data-owned").await.unwrap().is_some());
    assert!(
        pvcs.get_opt("data-adopter").await.unwrap().is_none(),
        "no PVC is created for an imported volume"
    );
    let sts = ns.api::<StatefulSet>().get("adopter").await.unwrap();
    let claims: Vec<String> = sts
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.volumes.unwrap_or_default())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| v.persistent_volume_claim.map(|c| c.claim_name))
        .collect();
    assert_eq!(claims, ["keep-me"], "the StatefulSet mounts the imported PVC");

    for name in ["owned", "adopter"] {
        nodes.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for name in ["owned", "adopter"] {
        wait_gone(&nodes, name, WAIT).await;
    }
    // The node is gone, so its finalizer's cleanup has run.
    eventually("data-owned to be deleted", WAIT, || async {
        let pvc = pvcs.get_opt("data-owned").await.unwrap();
        pvc.is_none_or(|p| p.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;
    let kept = pvcs.get("keep-me").await.unwrap();
    assert!(
        kept.metadata.deletion_timestamp.is_none(),
        "the imported PVC survives its node: {:?}",
        kept.metadata
    );
    assert_eq!(kept.status.and_then(|s| s.phase).as_deref(), Some("Bound"));
}

/// (h) Fast sidecar tasks finish in the reconcile that started them: with an instant simulator the whole
/// sidecar progression (configure-genesis, config-apply, config-validate, mark-ready) is one reconcile and one
/// status write, because a task whose first poll, right after its submit, still says "running" gets one more
/// poll shortly after (`drive::FIRST_POLL_GRACE`). Without that second look each task cost a status write of
/// its own: 6 writes for the init instead of at most 3 (plan created, progression, Running).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_sidecar_tasks_finish_in_the_reconcile_that_started_them() {
    let Some(ns) = setup("e2e-fast").await else {
        return;
    };
    let sim = Sim::start(Duration::ZERO, vec![]).await;
    let nodes = ns.api::<SeiNode>();
    let op = Operator::start(ns.env(), ns.name(), &sim, &[("SEI_LEADER_ELECT", "false")]);
    common::create_full_node(&nodes, "fast", "Running", WAIT).await;
    let writes = op.node_status_writes().await;
    assert!(
        writes <= 3,
        "an init with instant sidecar tasks took {writes} status writes (plan created, progression, Running)"
    );
}

/// (g) Status writes: every write the operator sends changes the object (the metric equals the status
/// changes a watch sees, plus lost 409 races), a full init takes few of them, and a Running node whose sidecar
/// answers the same way every time gets none: for 10 s, reconciles are provoked (annotations) and each probes
/// the sidecar, and neither the metric nor the object's status moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_status_write_per_change_and_none_when_nothing_changed() {
    let Some(ns) = setup("e2e-writes").await else {
        return;
    };
    let sim = Sim::start(Duration::from_millis(50), vec![]).await;
    let nodes = ns.api::<SeiNode>();
    let recorder = Recorder::start(nodes.clone(), "quiet").await;
    // Without leader election, every API write the operator counts is the node's (no Lease renewals).
    let op = Operator::start(ns.env(), ns.name(), &sim, &[("SEI_LEADER_ELECT", "false")]);
    let created = Instant::now();
    common::create_full_node(&nodes, "quiet", "Running", WAIT).await;
    let to_running = created.elapsed();
    let init_writes = op.node_status_writes().await;
    let init_api_writes = api_writes(&op).await;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // a small counter
    let init_reconciles = op.metric("sei_reconciles_total", "kind=\"SeiNode\"").await as u64;
    // Settled: the first probe of the Running node recorded SidecarReady True.
    sei_tests::wait_for(
        &nodes,
        "quiet",
        |n: Option<&SeiNode>| n.is_some_and(|n| condition_is(n, "SidecarReady", "True")),
        WAIT,
    )
    .await
    .unwrap();
    // Let the watch catch up with the object as read.
    let settled = nodes.get("quiet").await.unwrap();
    eventually("the recorder to see the settled object", WAIT, || async {
        recorder
            .states()
            .last()
            .is_some_and(|n| n.metadata.resource_version == settled.metadata.resource_version)
            .then_some(())
    })
    .await;
    let writes = op.node_status_writes().await;
    let conflicts = op
        .metric("sei_reconcile_errors_total", "class=\"conflict\"")
        .await;
    let status_changes = count_status_changes(&recorder.states());
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let conflicts = conflicts as usize;
    assert_eq!(
        usize::try_from(writes).unwrap(),
        status_changes + conflicts,
        "every status write changed the status (writes {writes}, changes seen {status_changes}, 409s {conflicts})"
    );
    assert!(init_writes <= 15, "a full init took {init_writes} status writes");
    // A guard against reconcile storms, not the proof of the trigger filters (their unit tests in `run`):
    // 7-9 reconciles per init measured with them, 9-13 with the own-write filter broken on purpose.
    assert!(
        init_reconciles <= 16,
        "a full init took {init_reconciles} reconciles ({init_writes} status writes)"
    );

    // The quiet period: nothing changes, but reconciles happen (each annotation wakes one, and every reconcile
    // of a Running node probes the sidecar).
    let seen_before = recorder.states().len();
    let probes_before = sim.node(ns.name(), "quiet").await["requests"].as_u64().unwrap();
    let quiet = Instant::now();
    for i in 0..5 {
        nodes
            .patch(
                "quiet",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"test/poke": i.to_string()}}})),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let probes = sim.node(ns.name(), "quiet").await["requests"].as_u64().unwrap() - probes_before;
    assert!(
        probes >= 3,
        "the pokes woke reconciles that probed the sidecar ({probes} probes)"
    );
    assert_eq!(
        op.node_status_writes().await,
        writes,
        "no status write while nothing changed ({:?}, {probes} reconciles)",
        quiet.elapsed()
    );
    let during: Vec<SeiNode> = recorder.states().split_off(seen_before.saturating_sub(1));
    assert_eq!(
        count_status_changes(&during),
        0,
        "the status did not change during the quiet period"
    );
    eprintln!(
        "writes: Running after {to_running:?} with {init_writes} status writes ({init_api_writes} API writes \
         in all, {init_reconciles} reconciles); {writes} status writes once settled (SidecarReady), {conflicts} conflicts; 0 writes in {:?} of \
         quiet with {probes} probing reconciles",
        quiet.elapsed()
    );
}

/// API writes the operator sent (`sei_kube_requests_total` for create, update, patch and delete).
async fn api_writes(op: &Operator) -> u64 {
    let mut n = 0.0;
    for verb in ["create", "update", "patch", "delete"] {
        n += op
            .metric("sei_kube_requests_total", &format!("verb=\"{verb}\""))
            .await;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // a small counter
    let n = n as u64;
    n
}

/// How many times the status differs from the previous state seen (the first state is the baseline).
fn count_status_changes(states: &[SeiNode]) -> usize {
    states
        .windows(2)
        .filter(|w| status_json(&w[0]) != status_json(&w[1]))
        .count()
}
