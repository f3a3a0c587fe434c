//! End-to-end, things going wrong: sidecar task failures (retries with backoff, an exhausted budget failing the
//! init), the operator SIGKILLed at random moments of init plans, and validator key Secrets (valid and
//! malformed). Each test runs in its own namespace against the local cluster, with the operator binary and the
//! in-process sidecar simulator.

mod common;

use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{ListParams, PostParams};
use sei_crds::SeiNode;
use serde_json::{Value, json};

use common::{Operator, Recorder, Rng, Sim, full_node_spec, in_phase, phase, plan_task, seinode, setup};

const WAIT: Duration = Duration::from_secs(90);

/// Milliseconds since the Unix epoch of an RFC 3339 timestamp.
#[allow(clippy::unwrap_used, clippy::panic)] // test helper: a bad timestamp fails the test
fn millis(rfc3339: &str) -> i64 {
    let t = humantime::parse_rfc3339_weak(rfc3339.trim_end_matches('Z'))
        .unwrap_or_else(|e| panic!("timestamp {rfc3339:?}: {e}"));
    i64::try_from(t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

/// (c) config-apply fails twice on the sidecar, then succeeds: the workflow's retry policy (maxAttempts 3,
/// backoff 1s x2) retries it under new ids, each retry waits for the journal's `nextAttemptAt`, and the node
/// reaches Running with the journal and the simulator showing three attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_failing_twice_is_retried_with_backoff_and_the_node_runs() {
    let Some(ns) = setup("e2e-retry").await else {
        return;
    };
    let sim = Sim::start(Duration::from_millis(50), vec![]).await;
    sim.fault(json!({
        "kind": "fail", "task": "config-apply", "node": format!("{}/flaky", ns.name()),
        "count": 2, "error": "disk full (injected)",
    }))
    .await;
    let nodes = ns.api::<SeiNode>();
    let recorder = Recorder::start(nodes.clone(), "flaky").await;
    let _op = Operator::start(ns.env(), ns.name(), &sim, &[]);
    nodes
        .create(
            &PostParams::default(),
            &seinode("flaky", &full_node_spec("seid:v1")),
        )
        .await
        .unwrap();
    let node = sei_tests::wait_for(&nodes, "flaky", in_phase("Running"), WAIT)
        .await
        .unwrap();

    // The simulator: three config-apply submissions under three ids, each executed once.
    let attempts = sim.tasks_of_type(ns.name(), "flaky", "config-apply").await;
    let outcomes: Vec<&str> = attempts.iter().map(|t| t["status"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["failed", "failed", "completed"], "{attempts:#?}");
    assert!(attempts.iter().all(|t| t["executions"] == 1), "{attempts:#?}");
    assert!(
        attempts[0]["error"]
            .as_str()
            .unwrap()
            .contains("disk full (injected)"),
        "{attempts:#?}"
    );

    // The journal, as the watch saw it: attempts 1..3, the error of a failed attempt, and the backoff.
    let seen: Vec<Value> = recorder
        .states()
        .iter()
        .filter_map(|n| plan_task(n, "config-apply"))
        .collect();
    let max_attempt = seen
        .iter()
        .filter_map(|t| t.pointer("/runs/0/attempt").and_then(Value::as_u64))
        .max();
    assert_eq!(max_attempt, Some(3), "the journal recorded 3 attempts: {seen:#?}");
    assert!(
        seen.iter().any(|t| t
            .pointer("/runs/0/error/message")
            .and_then(Value::as_str)
            .is_some_and(|m| m.contains("disk full (injected)"))),
        "the journal recorded the failed attempt's error: {seen:#?}"
    );
    // Each persisted `nextAttemptAt` (a failed attempt waiting for its retry) is honoured: the next attempt
    // reached the sidecar no earlier.
    let mut backoffs = 0;
    for t in &seen {
        let run = &t["runs"][0];
        let (Some(at), Some(attempt)) = (run["nextAttemptAt"].as_str(), run["attempt"].as_u64()) else {
            continue;
        };
        let next = usize::try_from(attempt).unwrap(); // index of attempt + 1 in submission order
        let submitted = millis(attempts[next]["submittedAt"].as_str().unwrap());
        assert!(
            submitted >= millis(at),
            "attempt {} was submitted at {submitted} before its nextAttemptAt {at}",
            attempt + 1
        );
        backoffs += 1;
    }
    assert!(
        backoffs > 0,
        "no waiting retry was ever persisted (both jittered delays ~0?): {seen:#?}"
    );

    let status = node.status.unwrap();
    let last = status.plan_history.last().unwrap();
    assert_eq!(
        (last.workflow.as_str(), format!("{:?}", last.phase)),
        ("node-init", "Succeeded".to_owned())
    );
    // The retries were announced as Events (published in the background, so they may trail the status a moment).
    let events = ns.api::<Event>();
    let count_retried = || async {
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("TaskRetried"))
            // The event recorder folds repeats of one reason into a series.
            .map(|e| e.series.and_then(|s| s.count).or(e.count).unwrap_or(1))
            .sum::<i32>()
    };
    let settle = Instant::now() + Duration::from_secs(10);
    let mut retried = count_retried().await;
    while retried < 2 && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(200)).await;
        retried = count_retried().await;
    }
    assert_eq!(retried, 2, "TaskRetried events (attempts 2 and 3)");
    eprintln!("retry: {backoffs} persisted backoff(s) honoured, {retried} TaskRetried event(s)");
}

/// (c) config-apply fails 5 times: its budget of 3 attempts is exhausted, the init plan fails, the node ends
/// in phase Failed and the plan history names the task and its error. Nothing after config-apply ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_failing_past_its_budget_fails_the_init_and_the_node() {
    let Some(ns) = setup("e2e-budget").await else {
        return;
    };
    let sim = Sim::start(Duration::from_millis(50), vec![]).await;
    sim.fault(json!({
        "kind": "fail", "task": "config-apply", "node": format!("{}/doomed", ns.name()),
        "count": 5, "error": "config.toml is read-only (injected)",
    }))
    .await;
    let nodes = ns.api::<SeiNode>();
    let _op = Operator::start(ns.env(), ns.name(), &sim, &[]);
    nodes
        .create(
            &PostParams::default(),
            &seinode("doomed", &full_node_spec("seid:v1")),
        )
        .await
        .unwrap();
    let node = sei_tests::wait_for(&nodes, "doomed", in_phase("Failed"), WAIT)
        .await
        .unwrap();

    let status = node.status.clone().unwrap();
    assert!(status.plan.is_none(), "the failed plan is summarised and cleared");
    let last = status.plan_history.last().unwrap();
    assert_eq!(last.workflow, "node-init");
    assert_eq!(format!("{:?}", last.phase), "Failed");
    assert_eq!(last.failed_task.as_deref(), Some("config-apply"), "{last:?}");
    let error = serde_json::to_value(&last.error).unwrap();
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("config.toml is read-only (injected)")),
        "the summary carries the task's error: {last:?}"
    );

    let attempts = sim.tasks_of_type(ns.name(), "doomed", "config-apply").await;
    assert_eq!(attempts.len(), 3, "maxAttempts 3: {attempts:#?}");
    assert!(
        attempts
            .iter()
            .all(|t| t["status"] == "failed" && t["executions"] == 1),
        "three failed attempts, each executed once: {attempts:#?}"
    );
    assert!(
        sim.tasks_of_type(ns.name(), "doomed", "config-validate")
            .await
            .is_empty(),
        "nothing after config-apply ran"
    );
    // Failed is terminal for init: no new plan starts.
    assert_eq!(phase(&nodes.get("doomed").await.unwrap()), "Failed");
}

/// (d) The operator is SIGKILLed 20 times at deterministic pseudo-random moments (50-600 ms after it was
/// started) while init plans run, and restarted. Every node reaches Running, and no task id was executed twice
/// on the simulator (a restarted operator re-submits the journal's attempt under the same id, a no-op).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_of_init_never_executes_a_task_twice() {
    const KILLS: usize = 20;
    let Some(ns) = setup("e2e-crash").await else {
        return;
    };
    // Slow enough tasks that init plans span several operator lifetimes.
    let sim = Sim::start(Duration::from_millis(300), vec![]).await;
    let nodes = ns.api::<SeiNode>();
    // A stable identity: each restart renews its own lease at once instead of waiting for it to expire.
    let env = [("SEI_IDENTITY", "crash-test")];
    let mut rng = Rng::seeded(0x5e1_dead_beef);
    let mut created: Vec<String> = Vec::new();
    let mut kills_mid_plan = 0;
    let mut logs = Vec::new();
    let started = Instant::now();
    for i in 0..KILLS {
        // Keep init plans in flight: a new node every 4 kills, and whenever every node is already Running.
        let all_running = nodes
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .all(|n| phase(n) == "Running");
        if i % 4 == 0 || all_running {
            let name = format!("crash-{}", created.len());
            nodes
                .create(
                    &PostParams::default(),
                    &seinode(&name, &full_node_spec("seid:v1")),
                )
                .await
                .unwrap();
            created.push(name);
        }
        let mut op = Operator::start(ns.env(), ns.name(), &sim, &env);
        tokio::time::sleep(Duration::from_millis(rng.between(50, 600))).await;
        assert!(op.is_alive(), "the operator exited on its own:\n{}", op.log());
        op.kill();
        logs.push(op.log.clone());
        let active = nodes
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|n| n.status.as_ref().is_some_and(|s| s.plan.is_some()))
            .count();
        if active > 0 {
            kills_mid_plan += 1;
        }
    }
    let crash_phase = started.elapsed();
    // Progress made by the killed operators (so the kills interrupted real work, not only startups).
    let submitted_while_crashing = sim.tasks().await.as_array().map_or(0, Vec::len);
    assert!(
        submitted_while_crashing > 0,
        "the killed operators never reached the sidecar"
    );
    let op = Operator::start(ns.env(), ns.name(), &sim, &env);
    for name in &created {
        let node = sei_tests::wait_for(&nodes, name, in_phase("Running"), WAIT)
            .await
            .unwrap();
        assert_eq!(
            node.status.unwrap().plan_history.len(),
            1,
            "{name}: one init plan, run to completion"
        );
    }

    let mut executed = 0;
    for name in &created {
        let sim_node = sim.node(ns.name(), name).await;
        let executions = sim_node["executions"].as_object().unwrap();
        assert!(!executions.is_empty(), "{name}: no sidecar task ran: {sim_node}");
        for (id, n) in executions {
            assert_eq!(n, 1, "{name}: task id {id} executed {n} times: {sim_node:#}");
        }
        executed += executions.len();
        assert_eq!(sim_node["ready"], true, "{name}");
    }
    eprintln!(
        "crash: {KILLS} SIGKILLs in {crash_phase:?}, {kills_mid_plan} with an init plan active, \
         {submitted_while_crashing} sidecar tasks submitted meanwhile; {} nodes Running after {:?}; \
         {executed} sidecar task ids, each executed once",
        created.len(),
        started.elapsed()
    );
    assert!(
        kills_mid_plan >= KILLS / 2,
        "only {kills_mid_plan} of {KILLS} kills hit an active init plan"
    );
    drop(op);
    for log in logs {
        let _ = std::fs::remove_file(log);
    }
}

#[allow(clippy::unwrap_used)] // test helper
fn secret(name: &str, key: &str, value: &Value) -> Secret {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {key: value.to_string()},
    }))
    .unwrap()
}

fn validator_spec(signing: &str, node_key: &str) -> Value {
    json!({
        "chainId": "atlantic-2",
        "image": "seid:v1",
        "validator": {
            "signingKey": {"secret": {"secretName": signing}},
            "nodeKey": {"secret": {"secretName": node_key}},
        },
    })
}

/// (f) A validator whose signing-key and node-key Secrets are well formed reaches Running with
/// SigningKeyReady and NodeKeyReady True; one whose signing key lacks `priv_key` fails terminally at once (no
/// retry, no StatefulSet): SigningKeyReady False/SigningKeyInvalid naming the Secret and the missing field, phase Failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validator_key_secrets_are_validated_and_a_malformed_one_fails_terminally() {
    let Some(ns) = setup("e2e-keys").await else { return };
    let sim = Sim::start(Duration::from_millis(50), vec![]).await;
    let secrets = ns.api::<Secret>();
    let pub_key =
        json!({"type": "tendermint/PubKeyEd25519", "value": "Jv2yTLKdTfOy0rYGZ6Dh1VvJTq0dPhOw2dHLtKcLxvQ="});
    let priv_key = json!({
        "type": "tendermint/PrivKeyEd25519",
        "value": "8XzmpdPV3SFoNMZbF5fCd3Pkm0Ey0gfRzbCG5OQDxEkm/bJMsp1N87LStgZnoOHVW8lOrR0+E7DZ0cu0pwvG9A==",
    });
    let good_signing = json!({"address": "3C7FD1A1F8E6C6E2A1B0C0D0E0F0A1B2C3D4E5F6", "pub_key": pub_key, "priv_key": priv_key});
    let bad_signing = json!({"address": "3C7FD1A1F8E6C6E2A1B0C0D0E0F0A1B2C3D4E5F6", "pub_key": pub_key});
    let node_key = json!({"priv_key": priv_key});
    for s in [
        secret("good-signing", "priv_validator_key.json", &good_signing),
        secret("good-node-key", "node_key.json", &node_key),
        secret("bad-signing", "priv_validator_key.json", &bad_signing),
        secret("bad-node-key", "node_key.json", &node_key),
    ] {
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    let nodes = ns.api::<SeiNode>();
    let _op = Operator::start(ns.env(), ns.name(), &sim, &[]);
    nodes
        .create(
            &PostParams::default(),
            &seinode("val-good", &validator_spec("good-signing", "good-node-key")),
        )
        .await
        .unwrap();
    nodes
        .create(
            &PostParams::default(),
            &seinode("val-bad", &validator_spec("bad-signing", "bad-node-key")),
        )
        .await
        .unwrap();

    let good = sei_tests::wait_for(&nodes, "val-good", in_phase("Running"), WAIT)
        .await
        .unwrap();
    let status = good.status.unwrap();
    for t in ["SigningKeyReady", "NodeKeyReady"] {
        let c = status
            .condition(t)
            .unwrap_or_else(|| panic!("{t} missing: {status:?}"));
        assert_eq!(c.status, "True", "{t}: {c:?}");
        let want = format!("{}Validated", t.strip_suffix("Ready").unwrap());
        assert_eq!(c.reason, want, "the reference's reason: {c:?}");
    }
    assert!(
        status
            .condition("SigningKeyReady")
            .unwrap()
            .message
            .contains("good-signing"),
        "{:?}",
        status.condition("SigningKeyReady")
    );

    let bad = sei_tests::wait_for(&nodes, "val-bad", in_phase("Failed"), WAIT)
        .await
        .unwrap();
    let status = bad.status.unwrap();
    let c = status.condition("SigningKeyReady").unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "SigningKeyInvalid"),
        "{c:?}"
    );
    assert!(
        c.message.contains("bad-signing") && c.message.contains("priv_key"),
        "the condition names the Secret and what is missing: {:?}",
        c.message
    );
    let last = status.plan_history.last().unwrap();
    assert_eq!(
        last.failed_task.as_deref(),
        Some("validate-signing-key"),
        "{last:?}"
    );
    let run = serde_json::to_value(&last.error).unwrap();
    assert_eq!(run["class"], "Terminal", "{last:?}");
    assert!(
        ns.api::<StatefulSet>()
            .get_opt("val-bad")
            .await
            .unwrap()
            .is_none(),
        "no StatefulSet for a node whose keys are invalid"
    );
    assert!(
        sim.node_tasks(ns.name(), "val-bad").await.is_empty(),
        "no sidecar task ran for the invalid node"
    );
}
