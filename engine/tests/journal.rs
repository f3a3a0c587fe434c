//! The journal as stored in status: golden files from earlier versions keep loading and
//! advancing, the size budget holds, JSON round trips are exact and the schema is structural.

// Helpers outside `#[test]` functions panic on broken invariants on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::path::PathBuf;

use sei_engine::{
    Duration, Effect, ErrorClass, Event, Inputs, Observation, Plan, PlanPhase, Registry, RetryPolicy,
    SCHEMA_VERSION, TaskRef, TaskState, Timestamp, WorkflowDefinition, advance, compile,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn fixture(name: &str) -> Plan {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "fixtures", name]
        .iter()
        .collect();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut plan: Plan =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{name} no longer loads: {e}"));
    plan.migrate();
    plan
}

fn starts(effects: &[Effect]) -> Vec<(&TaskRef, &Value)> {
    effects
        .iter()
        .filter_map(|e| {
            if let Effect::StartTask { task, params, .. } = e {
                Some((task, &**params))
            } else {
                None
            }
        })
        .collect()
}

fn outputs(value: &Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap()
}

/// Completes every started or polled task with `output(task)` until the plan finishes; returns
/// the last effects.
fn run_to_end(
    plan: &mut Plan,
    mut now: Timestamp,
    output: impl Fn(&TaskRef) -> Map<String, Value>,
) -> Vec<Effect> {
    let mut observations = Vec::new();
    for _ in 0..100 {
        let effects = advance(plan, &observations, now);
        if plan.is_finished() {
            return effects;
        }
        observations = effects
            .iter()
            .filter_map(|e| match e {
                Effect::StartTask { task, .. } | Effect::PollTask(task) => {
                    Some(Observation::of(task, Event::Completed(output(task))))
                }
                _ => None,
            })
            .collect();
        now = now.saturating_add(Duration::from_secs(1));
    }
    panic!("plan did not finish: {plan:#?}");
}

#[test]
fn v1_journals_are_migrated_on_read_and_keep_advancing() {
    let mut plan = fixture("v1-node-update-running.yaml");
    assert_eq!(plan.schema_version, SCHEMA_VERSION);
    assert_eq!(plan.started_at, at("2026-01-01T00:00:00Z"));
    assert_eq!(
        plan.traceparent.as_deref(),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    let sts = plan.run("statefulset").unwrap().run;
    assert_eq!((sts.state, sts.attempt), (TaskState::Succeeded, 1));
    let pod = plan.run("replace-pod").unwrap().run.clone();
    assert_eq!((pod.state, pod.attempt), (TaskState::Running, 2));
    assert_eq!(
        pod.error.map(|e| (e.class, e.message)),
        Some((ErrorClass::Terminal, "pod sei-0 still terminating".into()))
    );

    let key = Uuid::parse_str("48615412-b256-5796-a181-65e642102290").unwrap();
    let effects = advance(&mut plan, &[], at("2026-01-01T00:00:20Z"));
    assert!(
        matches!(&effects[0], Effect::PollTask(t) if t.task == "replace-pod" && t.attempt == 2 && t.key == key)
    );
    let done = Observation::new("replace-pod", 2, Event::Completed(Map::new()));
    let effects = advance(&mut plan, &[done], at("2026-01-01T00:00:21Z"));
    assert_eq!(starts(&effects)[0].0.task, "observe");
    let last = run_to_end(&mut plan, at("2026-01-01T00:00:22Z"), |_| Map::new());
    assert!(
        matches!(&last[0], Effect::PlanFinished { phase: PlanPhase::Succeeded, effect: Some(e), .. }
        if e["conditions"][0]["reason"] == "UpdateComplete")
    );

    let written = serde_json::to_string(&plan).unwrap();
    for legacy in ["createdAt", "traceContext", "retries", "\"Complete\""] {
        assert!(!written.contains(legacy), "{legacy} is written back");
    }
    assert!(written.contains(&format!("\"schemaVersion\":{SCHEMA_VERSION}")));
}

#[test]
fn v2_node_update_fixture_retries_on_time_under_the_next_key() {
    let mut plan = fixture("v2-node-update-retrying.yaml");
    let effects = advance(&mut plan, &[], at("2026-01-01T00:00:12Z"));
    assert!(starts(&effects).is_empty());
    assert_eq!(effects, [Effect::RequeueAt(at("2026-01-01T00:00:16Z"))]);
    let effects = advance(&mut plan, &[], at("2026-01-01T00:00:16Z"));
    let (task, params) = starts(&effects)[0];
    assert_eq!((task.task.as_str(), task.attempt), ("replace-pod", 2));
    assert_eq!(
        task.key,
        Uuid::parse_str("a5439546-9d5e-51c0-82c6-83e91a980542").unwrap()
    );
    assert_eq!(params, &json!({}));
    let last = run_to_end(&mut plan, at("2026-01-01T00:00:17Z"), |_| Map::new());
    assert!(matches!(
        &last[0],
        Effect::PlanFinished {
            phase: PlanPhase::Succeeded,
            ..
        }
    ));
    assert_eq!(plan.summary().phase, PlanPhase::Succeeded);
}

#[test]
fn v2_genesis_fixture_resumes_for_each_runs_and_resolves_outputs() {
    let mut plan = fixture("v2-genesis-midflight.yaml");
    // The retry time in the fixture pins the jitter algorithm (1,460 ms after the 00:00:05 failure).
    let policy = plan.tasks[1].retry.clone().unwrap();
    assert_eq!(
        policy.delay(plan.id, "gentx[val-2]", 1),
        Duration::from_millis(1460)
    );
    let val1 = Observation::new(
        "gentx[val-1]",
        1,
        Event::Completed(outputs(&json!({"file": "gentx/val-1.json"}))),
    );
    let effects = advance(&mut plan, &[val1], at("2026-01-01T00:00:07Z"));
    let (retry, params) = starts(&effects)[0];
    assert_eq!((retry.task.as_str(), retry.attempt), ("gentx[val-2]", 2));
    assert_eq!(
        retry.key,
        Uuid::parse_str("d6558298-8f0a-59a5-a742-18a3d2f7df43").unwrap()
    );
    assert_eq!(params, &json!({"chainId": "sei-test-1", "nodeId": "id-val-2"}));
    let done = Observation::of(
        retry,
        Event::Completed(outputs(&json!({"file": "gentx/val-2.json"}))),
    );
    let effects = advance(&mut plan, &[done], at("2026-01-01T00:00:08Z"));
    let (assemble, params) = starts(&effects)[0];
    assert_eq!(assemble.target.as_deref(), Some("val-0"));
    assert_eq!(
        params,
        &json!({"gentxs": ["gentx/val-0.json", "gentx/val-1.json", "gentx/val-2.json"]})
    );
    let done = Observation::of(assemble, Event::Completed(outputs(&json!({"hash": "abc123"}))));
    let effects = advance(&mut plan, &[done], at("2026-01-01T00:00:09Z"));
    let configure: Vec<_> = starts(&effects)
        .into_iter()
        .map(|(t, p)| (t.task.clone(), p.clone()))
        .collect();
    assert_eq!(configure.len(), 3);
    assert!(configure.iter().all(|(_, p)| p == &json!({"hash": "abc123"})));
    let last = run_to_end(&mut plan, at("2026-01-01T00:00:10Z"), |_| Map::new());
    assert!(matches!(
        &last[0],
        Effect::PlanFinished {
            phase: PlanPhase::Succeeded,
            ..
        }
    ));
    assert_eq!(plan.finally[0].runs[0].state, TaskState::Succeeded);
}

#[test]
fn v3_paused_fixture_with_a_settled_task_resumes_with_its_clocks_shifted() {
    let mut plan = fixture("v3-rollout-paused-settled.yaml");
    let pull: Vec<_> = plan.tasks[0].runs.iter().map(|r| (r.state, r.attempt)).collect();
    assert_eq!(
        pull,
        [
            (TaskState::Succeeded, 1),
            (TaskState::Succeeded, 1),
            (TaskState::Succeeded, 2)
        ]
    );
    assert!(plan.is_paused());
    assert!(advance(&mut plan, &[], at("2026-01-01T02:00:00Z")).is_empty());
    // Resumed after two hours: the deadline and the running restart's timeout moved with it.
    assert!(plan.resume(at("2026-01-01T03:01:00Z")));
    assert_eq!(plan.deadline, Some(at("2026-01-01T03:05:00Z")));
    let effects = advance(&mut plan, &[], at("2026-01-01T03:01:01Z"));
    assert!(matches!(&effects[0], Effect::PollTask(t) if t.task == "restart[node-0]"));
    let last = run_to_end(&mut plan, at("2026-01-01T03:01:02Z"), |_| Map::new());
    assert!(matches!(
        &last[0],
        Effect::PlanFinished {
            phase: PlanPhase::Succeeded,
            ..
        }
    ));
    // Written back, the settled task keeps its compact form.
    let written = serde_json::to_value(&plan).unwrap();
    assert_eq!(
        written["tasks"][0]["runs"],
        json!([{"item": "node-0"}, {"item": "node-1"}, {"item": "node-2", "attempt": 2}])
    );
}

#[test]
fn v2_journals_without_a_deadline_get_the_default_one_on_read() {
    let json = r#"{"schemaVersion": 2, "id": "00000000-0000-0000-0000-000000000001",
        "workflow": "w", "startedAt": "2026-01-01T00:00:00Z", "tasks": [{"name": "a", "type": "t", "runs": [{}]}]}"#;
    let plan = Plan::from_json(json).unwrap();
    assert_eq!(
        plan.deadline,
        Some(at("2026-01-01T00:00:00Z").saturating_add(sei_engine::DEFAULT_DEADLINE))
    );
    assert_eq!(plan.schema_version, SCHEMA_VERSION);
}

const GENESIS_STEPS: [&str; 10] = [
    "generate-identity",
    "generate-gentx",
    "upload-gentx",
    "await-genesis",
    "configure-genesis",
    "configure-peers",
    "apply-statefulset",
    "replace-pod",
    "observe-image",
    "mark-ready",
];

/// A genesis-shaped plan: 100 validators, each a branch of 10 chained `forEach` tasks.
fn genesis_plan() -> Plan {
    genesis_plan_with(false)
}

/// [`genesis_plan`]; with `references`, `generate-gentx` reads the node id of its validator's
/// identity and `configure-genesis` the hash `await-genesis` reported, as the real ceremony does.
fn genesis_plan_with(references: bool) -> Plan {
    let mut yaml = String::from(
        "name: genesis-ceremony\nversion: \"1\"\ntarget: SeiNodeDeployment\ndeadline: 15m\nmaxParallel: 50\n\
         params: {chainId: self.spec.genesis.chainId, validators: self.status.nodes}\ntasks:\n",
    );
    let mut registry = Registry::new();
    for (i, step) in GENESIS_STEPS.iter().enumerate() {
        registry = registry.with_any_params(*step);
        write!(
            yaml,
            "  - name: {step}\n    type: {step}\n    forEach: validators\n"
        )
        .unwrap();
        if i > 0 {
            writeln!(yaml, "    dependsOn: [{}]", GENESIS_STEPS[i - 1]).unwrap();
        }
        if references && i == 1 {
            yaml.push_str("    params: {chainId: \"${ params.chainId }\", nodeId: \"${ tasks.generate-identity.outputs.nodeId }\"}\n");
        } else if i < 2 {
            yaml.push_str("    params: {chainId: \"${ params.chainId }\", moniker: \"${ item }\"}\n");
        }
        if references && i == 4 {
            yaml.push_str(
                "    params: {expectedGenesisHash: \"${ tasks.await-genesis.outputs.genesisHash }\"}\n",
            );
        }
        if i == 4 {
            yaml.push_str(
                "    retry: {maxAttempts: 180, backoff: {initial: 5s, max: 30s}}\n    timeout: 10m\n",
            );
        }
    }
    let validators: Vec<String> = (0..100).map(|i| format!("sei-genesis-validator-{i}")).collect();
    let inputs = Inputs::new(Uuid::from_u128(0x6e6e), at("2026-01-01T00:00:00Z"))
        .with_param("chainId", json!("sei-genesis-test-1"))
        .with_param("validators", json!(validators));
    let definition = WorkflowDefinition::from_yaml("genesis.yaml", &yaml).unwrap();
    compile(&definition, &inputs, &registry).unwrap()
}

#[test]
fn a_100_validator_genesis_plan_fits_the_journal_budget() {
    let mut plan = genesis_plan();
    assert_eq!(plan.runs().count(), 1000);
    let compiled = serde_json::to_string(&plan).unwrap().len();
    assert!(compiled < 64 * 1024, "compiled genesis plan is {compiled} bytes");
    // A small node id per identity run, like the real task reports.
    let last = run_to_end(&mut plan, at("2026-01-01T00:00:00Z"), |task| {
        if task.task_type == "generate-identity" {
            outputs(&json!({"nodeId": "6f1c2a3b4d5e4f608a7b9c0d1e2f3a4b5c6d7e8f"}))
        } else {
            Map::new()
        }
    });
    assert!(matches!(
        &last[0],
        Effect::PlanFinished {
            phase: PlanPhase::Succeeded,
            ..
        }
    ));
    let finished = serde_json::to_string(&plan).unwrap().len();
    eprintln!("genesis plan JSON: compiled {compiled} bytes, finished {finished} bytes");
    // Every run finished carries state, attempt and two timestamps; STYLE.md rule 13's budget.
    assert!(finished < 256 * 1024, "finished genesis plan is {finished} bytes");
}

/// Realistic outputs of the genesis tasks: node ids, artifact references and the genesis hash.
fn genesis_outputs(task: &TaskRef) -> Map<String, Value> {
    let item = task.target.clone().unwrap_or_default();
    match task.task_type.as_str() {
        "generate-identity" => outputs(&json!({"nodeId": "6f1c2a3b4d5e4f608a7b9c0d1e2f3a4b5c6d7e8f"})),
        "generate-gentx" => {
            outputs(&json!({"gentx": format!("configmap/genesis-artifacts/{item}-gentx.json")}))
        }
        "upload-gentx" => outputs(
            &json!({"uploaded": true, "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}),
        ),
        "await-genesis" => outputs(
            &json!({"genesisHash": "a665a45920422f9d417e4867efdc4fb8a04a1f3fff1fa07e998e86f7f7a27ae3"}),
        ),
        _ => Map::new(),
    }
}

/// Drives the 100-validator genesis plan to the end with realistic outputs, one status write
/// per round; with `compact`, calling [`Plan::enforce_size_cap`] before each write as the
/// operator does. Returns the largest journal written and the finished one, in bytes.
fn genesis_journal_sizes(compact: bool) -> (usize, usize) {
    let mut plan = genesis_plan_with(true);
    let mut now = at("2026-01-01T00:00:00Z");
    let mut observations = Vec::new();
    let mut largest = 0;
    for _ in 0..100 {
        let effects = advance(&mut plan, &observations, now);
        if compact {
            assert!(
                plan.enforce_size_cap(now).is_empty(),
                "the genesis plan hit the cap"
            );
        }
        largest = largest.max(plan.json_size());
        let back = Plan::from_json(&serde_json::to_string(&plan).unwrap()).unwrap();
        assert_eq!(back, plan, "a compacted journal round-trips exactly");
        if plan.is_finished() {
            assert!(matches!(
                &effects[0],
                Effect::PlanFinished {
                    phase: PlanPhase::Succeeded,
                    ..
                }
            ));
            return (largest, plan.json_size());
        }
        observations = effects
            .iter()
            .filter_map(|e| match e {
                Effect::StartTask { task, .. } | Effect::PollTask(task) => {
                    Some(Observation::of(task, Event::Completed(genesis_outputs(task))))
                }
                _ => None,
            })
            .collect();
        now = now.saturating_add(Duration::from_secs(1));
    }
    panic!("plan did not finish: {plan:#?}");
}

/// The 64 KiB budget holds to the end once finished runs are compacted.
#[test]
fn a_finished_100_validator_genesis_journal_compacts_under_64_kib() {
    let (largest_raw, finished_raw) = genesis_journal_sizes(false);
    let (largest, finished) = genesis_journal_sizes(true);
    println!(
        "genesis journal, 100 validators: without compaction largest {largest_raw} B, finished {finished_raw} B; \
         with compaction largest {largest} B, finished {finished} B"
    );
    assert!(
        finished <= 64 * 1024,
        "finished genesis journal is {finished} bytes"
    );
    assert!(largest <= sei_engine::MAX_PLAN_BYTES, "{largest}");
}

#[test]
fn json_round_trips_are_exact_at_every_step() {
    let mut plan = genesis_plan();
    let mut now = at("2026-01-01T00:00:00Z");
    let mut observations = Vec::new();
    while !plan.is_finished() {
        let back = Plan::from_json(&serde_json::to_string(&plan).unwrap()).unwrap();
        assert_eq!(back, plan);
        let effects = advance(&mut plan, &observations, now);
        observations = effects
            .iter()
            .filter_map(|e| match e {
                Effect::StartTask { task, .. } => Some(Observation::of(task, Event::StartAccepted)),
                Effect::PollTask(task) if task.attempt == 1 && task.task.ends_with("7]") => {
                    Some(Observation::of(
                        task,
                        Event::Failed(sei_engine::TaskError::new(ErrorClass::Transient, "x")),
                    ))
                }
                Effect::PollTask(task) => Some(Observation::of(task, Event::Completed(Map::new()))),
                _ => None,
            })
            .collect();
        now = now.saturating_add(Duration::from_secs(7));
    }
    let back = Plan::from_json(&serde_json::to_string(&plan).unwrap()).unwrap();
    assert_eq!(back, plan);
    assert_eq!(
        plan.phase,
        PlanPhase::Failed,
        "generate-identity[…7] has a single attempt"
    );
}

/// Kubernetes requires structural schemas: every node typed (or preserve-unknown), no
/// `anyOf`/`oneOf`/`allOf`/`$ref` left once kube inlines the subschemas.
fn assert_structural(schema: &Value, path: &str) {
    let Value::Object(node) = schema else { return };
    for key in ["anyOf", "oneOf", "allOf", "$ref"] {
        assert!(!node.contains_key(key), "{path} uses {key}: {schema}");
    }
    let preserve = node.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    assert!(
        node.contains_key("type") || preserve,
        "{path} has no type: {schema}"
    );
    if let Some(Value::Object(properties)) = node.get("properties") {
        for (name, property) in properties {
            assert_structural(property, &format!("{path}.{name}"));
        }
    }
    if let Some(items) = node.get("items") {
        assert_structural(items, &format!("{path}[]"));
    }
    if let Some(extra @ Value::Object(_)) = node.get("additionalProperties") {
        assert_structural(extra, &format!("{path}{{}}"));
    }
}

#[test]
fn the_plan_schema_is_structural_with_opaque_params_and_outputs() {
    let settings = schemars::generate::SchemaSettings::openapi3().with(|s| s.inline_subschemas = true);
    for (name, schema) in [
        (
            "Plan",
            settings.clone().into_generator().into_root_schema_for::<Plan>(),
        ),
        (
            "PlanSummary",
            settings
                .clone()
                .into_generator()
                .into_root_schema_for::<sei_engine::PlanSummary>(),
        ),
        (
            "WorkflowSpec",
            settings
                .clone()
                .into_generator()
                .into_root_schema_for::<sei_engine::WorkflowSpec>(),
        ),
    ] {
        let mut value = serde_json::to_value(schema).unwrap();
        if let Value::Object(map) = &mut value {
            map.remove("$schema");
            map.remove("definitions");
            map.remove("components");
        }
        assert_structural(&value, name);
    }
    let plan = serde_json::to_value(schemars::schema_for!(Plan)).unwrap();
    for field in [
        &plan["$defs"]["PlannedTask"]["properties"]["params"],
        &plan["$defs"]["TaskRun"]["properties"]["outputs"],
    ] {
        assert_eq!(field["type"], "object");
        assert_eq!(field["x-kubernetes-preserve-unknown-fields"], true);
    }
    assert_eq!(plan["properties"]["startedAt"]["format"], "date-time");
    assert_eq!(plan["properties"]["pausedAt"]["format"], "date-time");
    assert!(plan["$defs"]["PlannedTask"]["properties"]["settled"].is_object());
    assert!(plan["$defs"]["StopCause"].to_string().contains("JournalTooLarge"));
}

#[test]
fn retry_policies_store_only_what_differs_from_the_default() {
    let policy = RetryPolicy {
        max_attempts: 3,
        ..RetryPolicy::default()
    };
    assert_eq!(serde_json::to_value(&policy).unwrap(), json!({"maxAttempts": 3}));
    assert_eq!(
        serde_json::from_value::<RetryPolicy>(json!({"maxAttempts": 3})).unwrap(),
        policy
    );
}
