//! End-to-end leader election: two operator processes share one Lease; only the holder reconciles, and when
//! it is SIGKILLed the standby takes over within 20 s (default lease duration 15 s, retry period 2 s) and runs
//! new nodes. Fencing: a leader paused (SIGSTOP) for longer than the lease writes nothing once resumed, and
//! exits, as the API server's audit log shows.

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

    common::create_full_node(&nodes, "first", "Running", WAIT).await;
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
        takeover <= Duration::from_secs(20),
        "the standby took over after {takeover:?}"
    );
}

/// Audit events of writes (not reads, not the Lease) sent by the operator whose identity is `identity`, with
/// their `requestReceivedTimestamp`.
fn writes_by(audit_log: &std::path::Path, identity: &str) -> Vec<(std::time::SystemTime, String)> {
    let text = std::fs::read_to_string(audit_log).unwrap_or_default();
    let agent = format!("({identity})");
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["userAgent"].as_str().is_some_and(|a| a.ends_with(&agent)))
        .filter(|e| !matches!(e["verb"].as_str(), Some("get" | "list" | "watch")))
        .filter(|e| e["objectRef"]["resource"] != "leases")
        .filter_map(|e| {
            let at = e["requestReceivedTimestamp"].as_str()?;
            let t = humantime::parse_rfc3339_weak(at.trim_end_matches('Z')).ok()?;
            Some((
                t,
                format!(
                    "{} {} {}/{} -> {}",
                    e["verb"].as_str().unwrap_or("?"),
                    e["objectRef"]["resource"].as_str().unwrap_or("?"),
                    e["objectRef"]["namespace"].as_str().unwrap_or(""),
                    e["objectRef"]["name"].as_str().unwrap_or(""),
                    e["responseStatus"]["code"]
                ),
            ))
        })
        .collect()
}

/// An operator electing on the test's Lease as `identity`, with short timings (lease 4 s, renew deadline 3 s,
/// retry 500 ms).
fn fenced_operator(ns: &sei_tests::TestNamespace, sim: &Sim, identity: &str) -> Operator {
    let env = [
        ("SEI_LEADER_ELECT", "true"),
        ("SEI_LEASE_DURATION", "4s"),
        ("SEI_LEASE_RENEW_DEADLINE", "3s"),
        ("SEI_LEASE_RETRY_PERIOD", "500ms"),
        ("SEI_IDENTITY", identity),
    ];
    Operator::start(ns.env(), ns.name(), sim, &env)
}

/// Sends `signal` (`-STOP`, `-CONT`) to the operator process.
fn signal(op: &Operator, signal: &str) {
    let pid = op.pid().to_string();
    let sent = std::process::Command::new("kill").args([signal, &pid]).status();
    assert!(sent.is_ok_and(|s| s.success()), "kill {signal} {pid}");
}

/// The operator's exit status, waiting up to `timeout` for it to exit by itself.
async fn wait_exit(op: &mut Operator, timeout: Duration) -> std::process::ExitStatus {
    let exit_by = Instant::now() + timeout;
    loop {
        if let Some(status) = op.exit_status() {
            return status;
        }
        assert!(
            Instant::now() < exit_by,
            "the operator did not exit:\n{}",
            op.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fencing (client-go semantics, lease 4 s, renew deadline 3 s, retry 500 ms): the leader is paused with
/// SIGSTOP while plans run, for longer than the lease; the standby takes over; on SIGCONT the old leader finds
/// its renew deadline passed and cancels its in-flight reconciles without one more write (audit log, by
/// User-Agent), then exits non-zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_lease_writes_nothing_after_the_takeover() {
    let Some(ns) = setup("e2e-fence").await else {
        return;
    };
    let audit_log = ns
        .env()
        .kubeconfig
        .parent()
        .unwrap()
        .join("logs")
        .join("audit.log");
    // Slow tasks and slow answers: plans are in flight, and reconciles wait on the sidecar, when the leader is
    // paused; once resumed they would go on to their status writes, but for the fence.
    let sim = Sim::start(Duration::from_millis(700), vec![]).await;
    sim.fault(serde_json::json!({"kind": "latency", "delay": "1500ms"}))
        .await;
    let nodes = ns.api::<SeiNode>();
    let leases = ns.api::<Lease>();
    let (id_a, id_b) = (format!("fence-a-{}", ns.name()), format!("fence-b-{}", ns.name()));
    let mut a = fenced_operator(&ns, &sim, &id_a);
    a.wait_log("Became the leader", WAIT).await;
    let b = fenced_operator(&ns, &sim, &id_b);
    b.wait_log("Waiting for leadership", WAIT).await;
    for i in 0..3 {
        nodes
            .create(
                &PostParams::default(),
                &seinode(&format!("f{i}"), &full_node_spec("seid:v1")),
            )
            .await
            .unwrap();
    }
    // Pause the leader while its plans run: created and persisted, and their reconciles waiting on the slow
    // sidecar.
    eventually("plans in flight", WAIT, || async {
        let n = nodes.get_opt("f2").await.unwrap()?;
        n.status.as_ref()?.plan.as_ref().map(|_| ())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    signal(&a, "-STOP");
    let stopped = Instant::now();
    eventually(
        "the standby to hold the lease",
        Duration::from_secs(30),
        || async { (holder(&leases).await.as_deref() == Some(id_b.as_str())).then_some(()) },
    )
    .await;
    let takeover = std::time::SystemTime::now();
    b.wait_log("Became the leader", WAIT).await;
    // Let the new leader act for a while, then wake the old one up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    signal(&a, "-CONT");
    let paused_for = stopped.elapsed();
    let exit = wait_exit(&mut a, Duration::from_secs(20)).await;
    assert!(
        !exit.success(),
        "the old leader exits non-zero after losing leadership: {exit}"
    );
    assert!(
        a.log().contains("Leadership lost"),
        "the old leader says why it stops:
{}",
        a.log()
    );
    // The sidecar answers at full speed again; the new leader finishes every plan.
    reqwest::Client::new()
        .delete(format!("{}/admin/faults", sim.url()))
        .send()
        .await
        .unwrap();
    for i in 0..3 {
        let name = format!("f{i}");
        eventually(&format!("{name} Running"), WAIT, || async {
            let n = nodes.get_opt(&name).await.ok()??;
            (common::phase(&n) == "Running").then_some(())
        })
        .await;
    }
    // The audit log is written asynchronously by the API server: give it a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes_a = writes_by(&audit_log, &id_a);
    assert!(
        !writes_a.is_empty(),
        "the audit log shows the first leader's writes before the pause ({}), so the check below can fail",
        audit_log.display()
    );
    let late: Vec<&String> = writes_a
        .iter()
        .filter(|(t, _)| *t >= takeover)
        .map(|(_, w)| w)
        .collect();
    eprintln!(
        "fence: leader paused {paused_for:?}; {} writes by it before the takeover, {} after",
        writes_a.len() - late.len(),
        late.len()
    );
    assert!(
        late.is_empty(),
        "the old leader wrote after the takeover: {late:#?}"
    );
    assert!(!writes_by(&audit_log, &id_b).is_empty(), "the new leader wrote");
}
