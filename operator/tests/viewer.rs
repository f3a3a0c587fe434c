//! The built-in workflows compile against the real task registry, and the plan viewer's output is pinned by
//! golden files (regenerate with `SEI_UPDATE_GOLDEN=1 cargo test -p sei-operator --test viewer`).

#![allow(clippy::unwrap_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::PathBuf;

use sei_engine::{Effect, ErrorClass, Event, Observation, Plan, TaskError, Timestamp};
use sei_workflows::{Bindings, Catalog, node_binding, node_facts};
use serde_json::{Map, json};
use uuid::Uuid;

const T0: i64 = 1_764_000_000_000;

fn node_object(validator: bool) -> serde_json::Value {
    let mode = if validator {
        json!({"validator": {"signingKey": {"secret": {"secretName": "val-key"}}, "nodeKey": {"secret": {"secretName": "val-node-key"}}}})
    } else {
        json!({"fullNode": {}})
    };
    let mut spec = json!({"chainId": "atlantic-2", "image": "seid:v1"});
    spec.as_object_mut()
        .unwrap()
        .extend(mode.as_object().unwrap().clone());
    json!({"apiVersion": "sei.io/v1alpha1", "kind": "SeiNode", "metadata": {"name": "rpc", "namespace": "ns"}, "spec": spec})
}

fn bindings(validator: bool) -> Bindings {
    let facts = node_binding(BTreeMap::from([
        (
            node_facts::MODE,
            json!(if validator { "validator" } else { "fullNode" }),
        ),
        (
            node_facts::CONFIG_MODE,
            json!(if validator { "validator" } else { "full" }),
        ),
        (node_facts::SIDECAR_IMAGE, json!("seictl:v1")),
    ]));
    Bindings::new(&node_object(validator), &facts).unwrap()
}

fn instantiate(workflow: &str, validator: bool) -> Plan {
    let catalog = Catalog::builtin().unwrap();
    let registry = sei_tasks::catalog::registry();
    catalog
        .get(workflow)
        .unwrap()
        .instantiate(
            &bindings(validator),
            Uuid::from_u128(0x5e1),
            Timestamp::from_unix_millis(T0),
            None,
            &registry,
        )
        .unwrap()
}

/// Runs a plan to its end on a virtual clock: each started attempt completes 100 ms later, except those the
/// `fail` predicate names, which fail.
fn run(plan: &mut Plan, fail: impl Fn(&str, u32) -> bool) {
    let mut now = T0;
    let mut observations = Vec::new();
    for _ in 0..500 {
        let effects = sei_engine::advance(plan, &observations, Timestamp::from_unix_millis(now));
        observations.clear();
        let mut next = now + 100;
        for effect in effects {
            match effect {
                Effect::StartTask { task, .. } => {
                    observations.push(Observation::of(&task, Event::StartAccepted));
                }
                Effect::PollTask(task) => {
                    let event = if fail(&task.task, task.attempt) {
                        Event::Failed(TaskError::new(
                            ErrorClass::Transient,
                            "config-apply failed on the sidecar: disk full",
                        ))
                    } else if task.task_type == "replace-pod" {
                        // What replace-pod outputs (observe-image reads it): no pod replaced.
                        Event::Completed(Map::from_iter([("replaced".to_owned(), "".into())]))
                    } else {
                        Event::Completed(Map::new())
                    };
                    observations.push(Observation::of(&task, event));
                }
                Effect::RequeueAt(at) => next = next.max(at.unix_millis()).min(now + 60_000),
                Effect::PlanFinished { .. } => return,
                Effect::CancelTask(_) => {}
            }
        }
        now = next;
    }
    panic!("the plan did not finish: {plan:#?}");
}

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("SEI_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        actual,
        expected,
        "{} differs; if the change is intended: SEI_UPDATE_GOLDEN=1 cargo test -p sei-operator --test viewer",
        path.display()
    );
}

#[test]
fn every_builtin_workflow_compiles_against_the_real_registry() {
    let catalog = Catalog::builtin().unwrap();
    let registry = sei_tasks::catalog::registry();
    sei_operator::run::validate_catalog(&catalog, &registry).unwrap();
    for validator in [false, true] {
        for w in catalog.iter().filter(|w| w.definition().spec.target == "SeiNode") {
            let plan = w.instantiate(
                &bindings(validator),
                Uuid::from_u128(1),
                Timestamp::from_unix_millis(T0),
                None,
                &registry,
            );
            assert!(
                plan.is_ok(),
                "{} (validator={validator}): {}",
                w.name(),
                plan.unwrap_err()
            );
        }
    }
}

#[test]
fn a_finished_init_plan_renders_as_a_tree() {
    let mut plan = instantiate("node-init", true);
    run(&mut plan, |_, _| false);
    golden(
        "plan-init-succeeded.txt",
        &sei_operator::viewer::render_plan(&plan),
    );
    let history = vec![plan.summary()];
    golden(
        "history-init.txt",
        &sei_operator::viewer::render_history(&history),
    );
}

#[test]
fn a_failed_plan_names_the_failed_task_and_its_error() {
    let mut plan = instantiate("node-init", false);
    run(&mut plan, |task, _| task == "config-apply");
    let text = sei_operator::viewer::render_plan(&plan);
    assert!(
        text.contains("config-apply") && text.contains("disk full") && text.contains("attempt 3"),
        "{text}"
    );
    golden("plan-init-failed.txt", &text);
    golden(
        "history-failed.txt",
        &sei_operator::viewer::render_history(&[plan.summary()]),
    );
}

#[test]
fn the_graph_renders_as_dot_and_mermaid() {
    let plan = instantiate("node-update", false);
    golden("node-update.dot", &sei_operator::viewer::render_dot(&plan));
    golden("node-update.mmd", &sei_operator::viewer::render_mermaid(&plan));
}
