//! The operator's `/metrics` after a node init: OpenMetrics text with plan and task duration histograms
//! carrying the plan's trace id as exemplar, attempt counters, the journal size histogram and status writes.

#![allow(clippy::unwrap_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use kube::api::PostParams;
use sei_crds::SeiNode;
use serde_json::json;

use common::{Operator, Sim, setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_describe_a_finished_init_with_trace_exemplars() {
    let Some(ns) = setup("metrics").await else { return };
    let sim = Sim::start(Duration::from_millis(50), vec![]).await;
    let op = Operator::start(ns.env(), ns.name(), &sim, &[]);
    let node: SeiNode = serde_json::from_value(json!({
        "apiVersion": "sei.io/v1alpha1", "kind": "SeiNode", "metadata": {"name": "rpc"},
        "spec": {"chainId": "atlantic-2", "image": "seid:v1", "fullNode": {}},
    }))
    .unwrap();
    ns.api::<SeiNode>()
        .create(&PostParams::default(), &node)
        .await
        .unwrap();
    let node = sei_tests::wait_for(
        &ns.api::<SeiNode>(),
        "rpc",
        |n: Option<&SeiNode>| {
            n.and_then(|n| n.status.as_ref())
                .is_some_and(|s| !s.plan_history.is_empty())
        },
        Duration::from_secs(90),
    )
    .await
    .unwrap();
    let trace = node.status.unwrap().plan_history[0].id.simple().to_string();
    // Task metrics are recorded right after the status write that the watch above saw: give them a moment.
    let mut text = String::new();
    for _ in 0..50 {
        text = op.metrics().await;
        if text.contains("task_type=\"observe-image\",outcome=\"succeeded\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    let plan_buckets: Vec<&str> = text
        .lines()
        // prometheus-client writes `le` first among a bucket's labels (`{le="5.0",workflow=…}`).
        .filter(|l| {
            l.starts_with("sei_plan_duration_seconds_bucket{")
                && l.contains("workflow=\"node-init\",phase=\"Succeeded\"")
        })
        .collect();
    assert!(!plan_buckets.is_empty(), "{text}");
    assert!(
        plan_buckets
            .iter()
            .any(|l| l.contains(&format!("# {{trace_id=\"{trace}\"}}"))),
        "the plan's trace id is an exemplar: {plan_buckets:#?}"
    );
    assert!(
        text.contains("sei_plan_duration_seconds_count{workflow=\"node-init\",phase=\"Succeeded\"} 1\n"),
        "{text}"
    );
    for task in [
        "ensure-data-pvc",
        "apply-statefulset",
        "config-apply",
        "mark-ready",
        "observe-image",
    ] {
        assert!(
            text.contains(&format!(
                "sei_task_attempts_total{{workflow=\"node-init\",task_type=\"{task}\"}} 1\n"
            )),
            "{task}: {text}"
        );
        assert!(
            text.contains(&format!(
                "sei_task_duration_seconds_count{{workflow=\"node-init\",task_type=\"{task}\",outcome=\"succeeded\"}} 1\n"
            )),
            "{task}: {text}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("sei_journal_bytes_count") && !l.ends_with(" 0")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("sei_status_writes_total{kind=\"SeiNode\"}")),
        "{text}"
    );
    assert!(
        !text.contains("sei_active_plans{workflow=\"node-init\"} 1"),
        "no plan is active any more: {text}"
    );
}
