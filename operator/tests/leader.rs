//! End-to-end leader election: two operator processes share one Lease; only the holder reconciles, and when
//! it is SIGKILLed the standby takes over within 15 s (default lease duration 10 s) and runs new nodes.

mod common;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::PostParams;
use sei_crds::SeiNode;

use common::{Operator, Sim, eventually, full_node_spec, in_phase, seinode, setup};

const WAIT: Duration = Duration::from_secs(90);
const LEASE: &str = "sei-operator-leader";

#[allow(clippy::unwrap_used)] // test helper
async fn holder(leases: &kube::Api<Lease>) -> Option<String> {
    leases
        .get_opt(LEASE)
        .await
        .unwrap()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_reconciles_and_the_standby_takes_over_after_a_sigkill() {
    let Some(ns) = setup("e2e-leader").await else {
        return;
    };
    let sim = Sim::start(Duration::from_millis(50), vec![]).await;
    let nodes = ns.api::<SeiNode>();
    let leases = ns.api::<Lease>();
    let mut a = Operator::start(
        ns.env(),
        ns.name(),
        &sim,
        &[("SEI_LEADER_ELECT", "true"), ("SEI_IDENTITY", "op-a")],
    );
    a.wait_log("Became the leader", WAIT).await;
    let b = Operator::start(
        ns.env(),
        ns.name(),
        &sim,
        &[("SEI_LEADER_ELECT", "true"), ("SEI_IDENTITY", "op-b")],
    );
    b.wait_log("Waiting for leadership", WAIT).await;
    assert_eq!(holder(&leases).await.as_deref(), Some("op-a"));

    nodes
        .create(
            &PostParams::default(),
            &seinode("first", &full_node_spec("seid:v1")),
        )
        .await
        .unwrap();
    sei_tests::wait_for(&nodes, "first", in_phase("Running"), WAIT)
        .await
        .unwrap();
    assert!(a.node_status_writes().await > 0, "the leader reconciled");
    assert_eq!(b.node_status_writes().await, 0, "the standby wrote nothing");
    assert!(
        !b.log().contains("Became the leader") && !b.log().contains("Starting the SeiNode controller"),
        "the standby did not start its controller:\n{}",
        b.log()
    );

    // SIGKILL the leader: no release of the lease; the standby must wait for it to expire.
    a.kill();
    let killed = Instant::now();
    nodes
        .create(
            &PostParams::default(),
            &seinode("second", &full_node_spec("seid:v1")),
        )
        .await
        .unwrap();
    eventually("op-b to hold the lease", Duration::from_secs(30), || async {
        (holder(&leases).await.as_deref() == Some("op-b")).then_some(())
    })
    .await;
    let takeover = killed.elapsed();
    b.wait_log("Became the leader", WAIT).await;
    sei_tests::wait_for(&nodes, "second", in_phase("Running"), WAIT)
        .await
        .unwrap();
    let running = killed.elapsed();
    assert!(b.node_status_writes().await > 0, "the new leader reconciled");
    eprintln!(
        "leader: op-b took the lease {takeover:?} after op-a's SIGKILL; a node created then was Running after {running:?}"
    );
    assert!(
        takeover <= Duration::from_secs(15),
        "the standby took over after {takeover:?}"
    );
}
