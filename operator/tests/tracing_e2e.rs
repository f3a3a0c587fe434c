//! A plan is one trace in Jaeger: one root span, exactly one span per executed task attempt, each a child
//! of the root; also when the operator was killed and restarted mid-plan, and with a retried task.

#![allow(clippy::unwrap_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use kube::api::PostParams;
use sei_crds::SeiNode;
use serde_json::{Value, json};

use common::{Operator, Sim, setup};

const WAIT: Duration = Duration::from_secs(90);
/// Tasks node-init executes for a full node without a snapshot source or keys (record-peers included).
const FULL_NODE_INIT_TASKS: usize = 10;

fn full_node(name: &str) -> SeiNode {
    serde_json::from_value(json!({
        "apiVersion": "sei.io/v1alpha1", "kind": "SeiNode", "metadata": {"name": name},
        "spec": {"chainId": "atlantic-2", "image": "seid:v1", "fullNode": {}},
    }))
    .unwrap()
}

async fn running(ns: &sei_tests::TestNamespace, name: &str) -> SeiNode {
    sei_tests::wait_for(
        &ns.api::<SeiNode>(),
        name,
        |n: Option<&SeiNode>| {
            n.and_then(|n| n.status.as_ref())
                .and_then(|s| s.phase)
                .is_some_and(|p| p.as_str() == "Running")
        },
        WAIT,
    )
    .await
    .unwrap()
}

/// The spans of trace `trace_id`, once Jaeger holds at least `expected` of them (or after 20 s).
async fn trace(query: &str, trace_id: &str, expected: usize) -> Vec<Value> {
    let url = format!("{query}/api/traces/{trace_id}");
    let mut spans = Vec::new();
    for _ in 0..80 {
        if let Ok(resp) = reqwest::get(&url).await
            && resp.status().is_success()
        {
            let body: Value = resp.json().await.unwrap();
            spans = body["data"][0]["spans"].as_array().cloned().unwrap_or_default();
            if spans.len() >= expected {
                // A moment more, so that duplicates would show up too.
                tokio::time::sleep(Duration::from_millis(500)).await;
                let body: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
                return body["data"][0]["spans"].as_array().cloned().unwrap_or_default();
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    spans
}

fn tag<'a>(span: &'a Value, key: &str) -> Option<&'a str> {
    span["tags"].as_array()?.iter().find(|t| t["key"] == key)?["value"].as_str()
}

/// Checks the shape of a plan's trace and returns the attempts per task name.
fn check_trace(spans: &[Value]) -> BTreeMap<String, Vec<u32>> {
    let roots: Vec<_> = spans
        .iter()
        .filter(|s| s["references"].as_array().is_none_or(Vec::is_empty))
        .collect();
    assert_eq!(roots.len(), 1, "exactly one root span: {spans:#?}");
    let root = roots[0];
    assert_eq!(root["operationName"], "plan node-init");
    let ids: HashSet<&str> = spans.iter().map(|s| s["spanID"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), spans.len(), "no span is exported twice");
    let mut attempts: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for span in spans.iter().filter(|s| s["spanID"] != root["spanID"]) {
        assert_eq!(span["references"][0]["refType"], "CHILD_OF");
        assert_eq!(
            span["references"][0]["spanID"], root["spanID"],
            "every task span is a child of the plan"
        );
        let name = tag(span, "task.name").unwrap().to_owned();
        let attempt: u32 = tag(span, "task.attempt").unwrap().parse().unwrap();
        assert!(tag(span, "task.idempotency_key").is_some_and(|k| k.len() == 36));
        attempts.entry(name).or_default().push(attempt);
    }
    for a in attempts.values_mut() {
        a.sort_unstable();
    }
    attempts
}

fn trace_id(node: &SeiNode) -> String {
    node.status.as_ref().unwrap().plan_history[0]
        .id
        .simple()
        .to_string()
}

fn otel(env: &sei_tests::ClusterEnv) -> [(&'static str, String); 1] {
    [("OTEL_EXPORTER_OTLP_ENDPOINT", env.otlp_endpoint.clone())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_init_is_one_trace_with_one_span_per_task_attempt() {
    let Some(ns) = setup("trace-init").await else {
        return;
    };
    let sim = Sim::start(Duration::from_millis(50), vec![]).await;
    let [(k, v)] = otel(ns.env());
    let _op = Operator::start(ns.env(), ns.name(), &sim, &[(k, v.as_str())]);
    ns.api::<SeiNode>()
        .create(&PostParams::default(), &full_node("rpc"))
        .await
        .unwrap();
    let node = running(&ns, "rpc").await;
    let spans = trace(
        &ns.env().jaeger_query_url,
        &trace_id(&node),
        FULL_NODE_INIT_TASKS + 1,
    )
    .await;
    let attempts = check_trace(&spans);
    assert_eq!(
        attempts.len(),
        FULL_NODE_INIT_TASKS,
        "one span per executed task: {attempts:?}"
    );
    assert!(attempts.values().all(|a| a == &[1]), "{attempts:?}");
    assert!(
        !attempts.contains_key("snapshot-restore"),
        "skipped tasks have no span"
    );
    // Reconcile spans (live, from the tracing layer) link to the plan they advanced.
    let operation = format!("reconcile SeiNode {}/rpc", ns.name());
    let url = format!(
        "{}/api/traces?service=sei-operator&operation={}&lookback=1h&limit=100",
        ns.env().jaeger_query_url,
        operation.replace(' ', "%20").replace('/', "%2F")
    );
    let mut linked = false;
    for _ in 0..60 {
        let body: Value = reqwest::get(&url).await.unwrap().json().await.unwrap_or_default();
        linked = body["data"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|t| t["spans"].as_array().cloned().unwrap_or_default())
            .any(|s| {
                s["references"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["traceID"] == trace_id(&node).as_str()))
            });
        if linked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        linked,
        "a reconcile span links to the plan's trace {}",
        trace_id(&node)
    );
    // The sidecar received the attempt's traceparent, in the plan's trace.
    let sim_node = sim.node(ns.name(), "rpc").await;
    let tp = sim_node["lastTraceparent"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(tp.contains(&trace_id(&node)), "sidecar saw traceparent {tp:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_task_has_one_span_per_attempt() {
    let Some(ns) = setup("trace-retry").await else {
        return;
    };
    let sim = Sim::start(Duration::from_millis(50), vec![]).await;
    sim.fault(
        json!({"kind": "fail", "task": "config-apply", "node": format!("{}/rpc", ns.name()), "count": 2}),
    )
    .await;
    let [(k, v)] = otel(ns.env());
    let _op = Operator::start(ns.env(), ns.name(), &sim, &[(k, v.as_str())]);
    ns.api::<SeiNode>()
        .create(&PostParams::default(), &full_node("rpc"))
        .await
        .unwrap();
    let node = running(&ns, "rpc").await;
    let spans = trace(
        &ns.env().jaeger_query_url,
        &trace_id(&node),
        FULL_NODE_INIT_TASKS + 3,
    )
    .await;
    let attempts = check_trace(&spans);
    assert_eq!(attempts["config-apply"], [1, 2, 3], "{attempts:?}");
    let failed = spans
        .iter()
        .filter(|s| tag(s, "task.name") == Some("config-apply") && tag(s, "outcome") == Some("failed"));
    assert_eq!(failed.count(), 2, "the two failed attempts are marked failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_interrupted_by_operator_crashes_is_still_one_complete_trace() {
    let Some(ns) = setup("trace-crash").await else {
        return;
    };
    let sim = Sim::start(Duration::from_millis(300), vec![]).await;
    let [(k, v)] = otel(ns.env());
    let mut op = Operator::start(ns.env(), ns.name(), &sim, &[(k, v.as_str())]);
    ns.api::<SeiNode>()
        .create(&PostParams::default(), &full_node("rpc"))
        .await
        .unwrap();
    for delay in [700, 500, 400] {
        tokio::time::sleep(Duration::from_millis(delay)).await;
        op.kill();
        op = Operator::start(ns.env(), ns.name(), &sim, &[(k, v.as_str())]);
    }
    let node = running(&ns, "rpc").await;
    let spans = trace(
        &ns.env().jaeger_query_url,
        &trace_id(&node),
        FULL_NODE_INIT_TASKS + 1,
    )
    .await;
    let attempts = check_trace(&spans);
    assert_eq!(attempts.len(), FULL_NODE_INIT_TASKS, "{attempts:?}");
    assert!(
        attempts.values().all(|a| a == &[1]),
        "no attempt was repeated or lost: {attempts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_genesis_ceremony_is_one_trace_covering_every_validator() {
    use sei_crds::SeiNodeDeployment;
    let Some(ns) = setup("trace-genesis").await else {
        return;
    };
    let sim = Sim::start(Duration::from_millis(50), vec![]).await;
    let [(k, v)] = otel(ns.env());
    let _op = Operator::start(ns.env(), ns.name(), &sim, &[(k, v.as_str())]);
    let fleet: SeiNodeDeployment = serde_json::from_value(json!({
        "apiVersion": "sei.io/v1alpha1", "kind": "SeiNodeDeployment", "metadata": {"name": "net"},
        "spec": {
            "replicas": 3,
            "template": {"spec": {"chainId": "net-1", "image": "seid:v1", "validator": {}}},
            "genesis": {"chainId": "net-1"},
        },
    }))
    .unwrap();
    let api = ns.api::<SeiNodeDeployment>();
    api.create(&PostParams::default(), &fleet).await.unwrap();
    let snd = sei_tests::wait_for(
        &api,
        "net",
        |d: Option<&SeiNodeDeployment>| {
            d.and_then(|d| d.status.as_ref())
                .is_some_and(|s| s.plan_history.iter().any(|p| p.workflow == "genesis-ceremony"))
        },
        WAIT,
    )
    .await
    .unwrap();
    let plan = snd
        .status
        .unwrap()
        .plan_history
        .into_iter()
        .find(|p| p.workflow == "genesis-ceremony")
        .unwrap();
    let trace_id = plan.id.simple().to_string();
    let spans = trace(&ns.env().jaeger_query_url, &trace_id, 30).await;
    let roots: Vec<_> = spans
        .iter()
        .filter(|s| s["references"].as_array().is_none_or(Vec::is_empty))
        .collect();
    assert_eq!(roots.len(), 1, "one root: {spans:#?}");
    assert_eq!(roots[0]["operationName"], "plan genesis-ceremony");
    for task_type in [
        "generate-identity",
        "generate-gentx",
        "upload-genesis-artifacts",
        "configure-genesis",
        "mark-ready",
    ] {
        let targets: std::collections::BTreeSet<&str> = spans
            .iter()
            .filter(|s| tag(s, "task.type") == Some(task_type))
            .filter_map(|s| tag(s, "task.target"))
            .collect();
        assert_eq!(
            targets.len(),
            3,
            "{task_type} ran once per validator, in this trace: {targets:?}"
        );
    }
    let ids: HashSet<&str> = spans.iter().map(|s| s["spanID"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), spans.len(), "no duplicate spans");
}
