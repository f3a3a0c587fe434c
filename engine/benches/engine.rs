//! Engine benchmarks (`cargo bench -p sei-engine`); medians are recorded in `BENCHMARKS.md`.
//!
//! - `compile/1000_tasks`: compile a 1,000-task DAG (each task depends on up to three earlier
//!   ones, params checked against a schemars schema). Goal: at most 5 ms.
//! - `advance/1000_tasks_20_ready`: one `advance` on a 1,000-task plan (20 chains of 50) that
//!   applies 20 completions and starts the 20 tasks they make ready. `warm` reuses the plan's
//!   cached graph index (a plan kept in memory between calls); `cold` is the first `advance` on
//!   a plan just read from its JSON journal (reading it is excluded, building the index is
//!   included), as in the first call of a reconcile. Goal: at most 20 µs, both.
//! - `json/round_trip_1000_tasks`: serialise and deserialise a finished 1,000-task plan (every
//!   run with state, attempt and timestamps). Goal: at most 2 ms.

// Benchmark setup panics on a broken fixture on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use schemars::JsonSchema;
use sei_engine::{
    Effect, Event, Inputs, Observation, Plan, Registry, TaskSpec, Timestamp, WorkflowDefinition,
    WorkflowSpec, advance, compile,
};
use serde::Deserialize;
use serde_json::{Map, json};
use uuid::Uuid;

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
struct Params {
    node: String,
    replicas: u32,
    files: Vec<String>,
}

fn t0() -> Timestamp {
    Timestamp::from_unix_millis(1_767_225_600_000)
}

fn registry() -> Registry {
    Registry::new()
        .with_params::<Params>("typed")
        .with_any_params("t")
}

fn task(name: String, depends_on: Vec<String>) -> TaskSpec {
    let params = json!({"node": format!("node-{name}"), "replicas": 1, "files": ["config.toml", "app.toml"]});
    TaskSpec {
        name,
        task_type: "typed".into(),
        depends_on,
        params: params.as_object().cloned().unwrap(),
        ..TaskSpec::default()
    }
}

/// 1,000 tasks; task `i` depends on up to three earlier tasks chosen by a fixed pattern.
fn dag_definition() -> WorkflowDefinition {
    let tasks = (0..1000usize)
        .map(|i| {
            let deps = [i / 2, i.saturating_sub(7), i.saturating_sub(31)]
                .into_iter()
                .filter(|&d| d < i)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(|d| format!("task-{d}"))
                .collect();
            task(format!("task-{i}"), deps)
        })
        .collect();
    WorkflowDefinition::new(
        "dag",
        WorkflowSpec {
            tasks,
            deadline: Some("1h".into()),
            ..WorkflowSpec::default()
        },
    )
}

/// 20 independent chains of 50 tasks: 20 tasks are ready at any time.
fn chains_plan() -> Plan {
    let tasks = (0..20)
        .flat_map(|c| {
            (0..50).map(move |i| {
                let deps = if i == 0 {
                    vec![]
                } else {
                    vec![format!("c{c}-{}", i - 1)]
                };
                task(format!("c{c}-{i}"), deps)
            })
        })
        .collect();
    let definition = WorkflowDefinition::new(
        "chains",
        WorkflowSpec {
            tasks,
            ..WorkflowSpec::default()
        },
    );
    compile(&definition, &Inputs::new(Uuid::from_u128(1), t0()), &registry()).unwrap()
}

fn completions(effects: &[Effect]) -> Vec<Observation> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::StartTask { task, .. } | Effect::PollTask(task) => {
                Some(Observation::of(task, Event::Completed(Map::new())))
            }
            _ => None,
        })
        .collect()
}

fn bench_compile(c: &mut Criterion) {
    let definition = dag_definition();
    let inputs = Inputs::new(Uuid::from_u128(2), t0());
    let registry = registry();
    c.bench_function("compile/1000_tasks", |b| {
        b.iter(|| compile(black_box(&definition), black_box(&inputs), &registry).unwrap());
    });
}

fn bench_advance(c: &mut Criterion) {
    let mut plan = chains_plan();
    let started = advance(&mut plan, &[], t0());
    let observations = completions(&started);
    assert_eq!(observations.len(), 20);
    let now = t0().saturating_add(sei_engine::Duration::from_secs(1));
    {
        let mut check = plan.clone();
        let effects = advance(&mut check, &observations, now);
        let starts = effects
            .iter()
            .filter(|e| matches!(e, Effect::StartTask { .. }))
            .count();
        assert_eq!(starts, 20, "20 tasks become ready");
    }
    let journal = serde_json::to_string(&plan).unwrap();
    c.bench_function("advance/1000_tasks_20_ready/warm", |b| {
        b.iter_batched(
            || plan.clone(),
            // Return the plan so that dropping it is not timed.
            |mut p| {
                let effects = advance(&mut p, black_box(&observations), now);
                (p, effects)
            },
            BatchSize::PerIteration,
        );
    });
    c.bench_function("advance/1000_tasks_20_ready/cold", |b| {
        b.iter_batched(
            // Read the plan from its JSON journal in the (untimed) setup, as a reconcile reads it
            // from status: the timed call is the first `advance` on it.
            || Plan::from_json(&journal).unwrap(),
            // Return the plan so that dropping it is not timed.
            |mut p| {
                let effects = advance(&mut p, black_box(&observations), now);
                (p, effects)
            },
            BatchSize::PerIteration,
        );
    });
}

fn bench_json(c: &mut Criterion) {
    let mut plan = chains_plan();
    let mut now = t0();
    let mut observations = Vec::new();
    while !plan.is_finished() {
        let effects = advance(&mut plan, &observations, now);
        observations = completions(&effects);
        now = now.saturating_add(sei_engine::Duration::from_secs(3));
    }
    let size = serde_json::to_string(&plan).unwrap().len();
    println!("finished 1,000-task plan: {size} bytes of JSON");
    c.bench_function("json/round_trip_1000_tasks", |b| {
        b.iter(|| {
            let text = serde_json::to_string(black_box(&plan)).unwrap();
            Plan::from_json(&text).unwrap()
        });
    });
}

criterion_group!(benches, bench_compile, bench_advance, bench_json);
criterion_main!(benches);
