//! Property tests over random DAGs and random task outcomes (1,000 cases each).
//!
//! Each case compiles a random workflow (see `common::scenario`) and runs it to the end with a
//! simulated operator and backend on a virtual clock; a checker inspects every `advance` call.

// Checkers run inside simulation callbacks, outside `#[test]` functions, and panic on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, HashSet};

use common::{Step, dependencies_satisfied, requeue_at, scenario, simulate};
use proptest::prelude::*;
use sei_engine::{Effect, ErrorClass, Lifecycle, PlanPhase, StopCause, TaskState, advance};

fn config() -> ProptestConfig {
    // Cases are derived from one seed, which the failure message prints; a regression file
    // would need a `lib.rs` next to this integration test to be found.
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(1000)
    }
}

fn start_keys(effects: &[Effect]) -> Vec<uuid::Uuid> {
    effects
        .iter()
        .filter_map(|e| {
            if let Effect::StartTask { task, .. } = e {
                Some(task.key)
            } else {
                None
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(config())]

    /// Normal tasks are all terminal once `now >= deadline`; the operator is never asked to come
    /// back later than the deadline; without finally tasks the plan finishes by its deadline.
    #[test]
    fn a_plan_always_ends_by_its_deadline(seed in any::<u64>()) {
        let scenario = scenario(seed);
        let trace = simulate(&scenario, false, &mut |step: &Step<'_>| {
            let Some(deadline) = step.after.deadline else { return };
            let normal_done = step.after.tasks.iter().all(|t| t.runs.iter().all(|r| r.state.is_terminal()));
            if step.now >= deadline {
                assert!(normal_done, "normal tasks still active after the deadline");
            }
            if !normal_done {
                let requeue = requeue_at(step.effects).expect("active plans requeue");
                assert!(requeue <= deadline, "requeue {requeue} after deadline {deadline}");
            }
        });
        let plan = &trace.plan;
        prop_assert!(plan.is_finished());
        if let Some(deadline) = plan.deadline {
            for task in &plan.tasks {
                for run in &task.runs {
                    prop_assert!(run.finished_at.is_some_and(|f| f <= deadline));
                }
            }
            if plan.finally.is_empty() {
                prop_assert!(plan.finished_at.is_some_and(|f| f <= deadline));
            }
        }
    }

    /// A run starts (or is recorded Skipped) only when all its dependencies are Succeeded or
    /// Skipped.
    #[test]
    fn no_task_starts_before_its_dependencies(seed in any::<u64>()) {
        let scenario = scenario(seed);
        simulate(&scenario, false, &mut |step: &Step<'_>| {
            for effect in step.effects {
                if let Effect::StartTask { task, .. } = effect {
                    assert!(dependencies_satisfied(step.after, &task.task), "{} started early", task.task);
                }
            }
            for view in step.after.runs() {
                let name = view.name();
                let was = step.before.run(&name).map(|v| v.run.state);
                if view.run.state == TaskState::Skipped && was != Some(TaskState::Skipped) {
                    assert!(dependencies_satisfied(step.after, &name), "{name} skipped early");
                }
            }
        });
    }

    /// The number of runs in flight never exceeds `maxParallel`.
    #[test]
    fn max_parallel_is_never_exceeded(seed in any::<u64>()) {
        let scenario = scenario(seed);
        simulate(&scenario, false, &mut |step: &Step<'_>| {
            let Some(max) = step.after.max_parallel else { return };
            let in_flight = step.after.runs().filter(|v| v.run.lifecycle().in_flight()).count();
            assert!(in_flight <= max as usize, "{in_flight} runs in flight, maxParallel {max}");
        });
    }

    /// Calling `advance` again with the same observations and time changes nothing, and starts
    /// no attempt that the first call did not start.
    #[test]
    fn advance_is_idempotent(seed in any::<u64>()) {
        let scenario = scenario(seed);
        simulate(&scenario, false, &mut |step: &Step<'_>| {
            let mut again = step.after.clone();
            let effects = advance(&mut again, step.observations, step.now);
            assert_eq!(&again, step.after, "a second identical call changed the plan");
            let first: HashSet<_> = start_keys(step.effects).into_iter().collect();
            for key in start_keys(&effects) {
                assert!(first.contains(&key), "the second call started a new attempt");
            }
        });
    }

    /// Writing the journal to JSON and reading it back before every call ends in the same plan
    /// with the same effects as never crashing, and no idempotency key is ever started twice.
    #[test]
    fn crash_resume_reaches_the_same_end_state(seed in any::<u64>()) {
        let scenario = scenario(seed);
        let steady = simulate(&scenario, false, &mut |_| {});
        let crashing = simulate(&scenario, true, &mut |_| {});
        prop_assert_eq!(&steady.plan, &crashing.plan);
        prop_assert_eq!(&steady.effects, &crashing.effects);
        for trace in [&steady, &crashing] {
            prop_assert!(trace.backend.repeated_starts.is_empty(), "keys started twice: {:?}", trace.backend.repeated_starts);
            let keys: HashSet<_> = trace.backend.started_keys.iter().collect();
            prop_assert_eq!(keys.len(), trace.backend.started_keys.len());
        }
        for view in steady.plan.runs() {
            prop_assert!(view.run.lifecycle() != Lifecycle::Starting && view.run.lifecycle() != Lifecycle::Running);
        }
    }
}

/// Guards the properties above against passing vacuously: the random scenarios must reach every
/// outcome the executor has (phases, stop causes, retries, timeouts, skips, lost submissions,
/// resolved output references).
#[test]
fn the_simulation_exercises_every_outcome() {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut note = |key: String| *seen.entry(key).or_default() += 1;
    for seed in 0..500 {
        let trace = simulate(&scenario(seed), false, &mut |_| {});
        note(format!("phase {:?}", trace.plan.phase));
        if let Some(stop) = &trace.plan.stop {
            note(format!("stop {:?}", stop.cause));
        }
        if trace.backend.drops > 0 {
            note("dropped submission".into());
        }
        for view in trace.plan.runs() {
            note(format!("run {:?}", view.run.state));
            if view.run.attempt > 1 {
                note("retried".into());
            }
            if let Some(error) = &view.run.error {
                note(format!("error {:?}", error.class));
            }
            if view.run.state == TaskState::Succeeded && view.task.params.to_string().contains("${ tasks.") {
                note("resolved output reference".into());
            }
        }
    }
    let expected = [
        format!("phase {:?}", PlanPhase::Succeeded),
        format!("phase {:?}", PlanPhase::Failed),
        format!("phase {:?}", PlanPhase::Cancelled),
        format!("stop {:?}", StopCause::TaskFailed),
        format!("stop {:?}", StopCause::DeadlineExceeded),
        format!("stop {:?}", StopCause::Cancelled),
        format!("stop {:?}", StopCause::Superseded),
        format!("run {:?}", TaskState::Skipped),
        format!("run {:?}", TaskState::Cancelled),
        format!("error {:?}", ErrorClass::Timeout),
        format!("error {:?}", ErrorClass::Terminal),
        "retried".into(),
        "dropped submission".into(),
        "resolved output reference".into(),
    ];
    for key in expected {
        assert!(seen.contains_key(&key), "no scenario reached {key}: {seen:#?}");
    }
}
