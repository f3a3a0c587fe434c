//! Durability under rewinds: the journal the operator persists lags the effects it performs.
//!
//! The operator performs effects (submits tasks to the sidecar) *before* the status write that
//! records them. A crash, or a write that loses (HTTP 409), rewinds the journal to the last
//! persisted version, and the next reconcile issues the same `StartTask` (same attempt, same
//! idempotency key) again. The real sidecar treats a re-submitted id by its state: running or
//! completed is a no-op, but a *failed* id is executed again. So the operator recovers by lookup:
//! before submitting an attempt it asks `GET /v0/tasks/{key}` and adopts what it finds.
//!
//! The simulation here models exactly that: a sidecar that re-executes a failed id and counts
//! executions per key; tasks that take virtual time, fail at random (some classes retry) and
//! sometimes hang; an operator that reads the persisted journal at the start of every
//! reconcile, performs effects, and at random points crashes or loses its write. The property:
//! with lookup-before-submit no key ever executes twice, every plan ends within a bounded
//! number of reconciles, and the end state agrees with the sidecar. The same simulation with a
//! blind re-submit must find a duplicate execution (so the property can fail).

// Simulation helpers panic on broken invariants on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, HashMap};

use common::{Rng, Scenario, requeue_at, scenario_sized, t0};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use sei_engine::{
    Duration, Effect, ErrorClass, Event, Observation, Plan, PlanPhase, StopCause, TaskError, TaskRef,
    TaskState, Timestamp, advance,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// Reconciles after which a plan that has not ended fails the property.
const MAX_RECONCILES: usize = 20_000;

fn config(cases: u32) -> ProptestConfig {
    // Failing cases are saved (as proptest seeds) to `engine/tests/proptest-regressions/` and
    // replayed first on every run; the path is relative to the package root, the working
    // directory of `cargo test`.
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/proptest-regressions/durability.txt",
        ))),
        ..ProptestConfig::with_cases(cases)
    }
}

#[derive(Clone, Debug, PartialEq)]
enum JobState {
    /// Running until `until`; then `outcome` (`None` = success). A hung job never ends.
    Running {
        until: Timestamp,
        outcome: Option<ErrorClass>,
        hang: bool,
    },
    Completed,
    Failed(TaskError),
}

/// The sidecar's task store, as the real one behaves: a submit of an unknown id executes it, of
/// a running or completed id is a no-op, and of a *failed* id executes it again.
struct Sidecar {
    seed: u64,
    jobs: HashMap<Uuid, JobState>,
    /// Executions per key.
    executions: HashMap<Uuid, u32>,
}

impl Sidecar {
    fn new(seed: u64) -> Self {
        Self {
            seed,
            jobs: HashMap::new(),
            executions: HashMap::new(),
        }
    }

    fn execute(&mut self, key: Uuid, now: Timestamp, can_hang: bool) {
        let count = self.executions.entry(key).or_default();
        *count += 1;
        let (hi, lo) = key.as_u64_pair();
        let mut rng = Rng::new(self.seed ^ hi ^ lo.rotate_left(17) ^ u64::from(*count));
        // A third finish at once (so a rewound reconcile can find them already failed).
        let millis = if rng.chance(33) { 0 } else { rng.below(30_000) };
        let outcome = match rng.below(100) {
            0..=79 => None,
            80..=93 => Some(ErrorClass::Transient),
            _ => Some(ErrorClass::Terminal),
        };
        let hang = can_hang && rng.chance(3);
        self.jobs.insert(
            key,
            JobState::Running {
                until: now.saturating_add(Duration::from_millis(millis)),
                outcome,
                hang,
            },
        );
    }

    /// The job's state at `now` (a running job whose time is up has finished).
    fn state(&mut self, key: Uuid, now: Timestamp) -> Option<&JobState> {
        let job = self.jobs.get_mut(&key)?;
        if let JobState::Running {
            until,
            outcome,
            hang: false,
        } = job
            && now >= *until
        {
            *job = match outcome {
                None => JobState::Completed,
                Some(class) => JobState::Failed(TaskError::new(*class, "the task failed")),
            };
        }
        Some(job)
    }

    /// `POST /v0/tasks` under `key`.
    fn submit(&mut self, key: Uuid, now: Timestamp, can_hang: bool) -> Event {
        match self.state(key, now) {
            None | Some(JobState::Failed(_)) => self.execute(key, now, can_hang),
            Some(_) => {}
        }
        Event::StartAccepted
    }

    /// `GET /v0/tasks/{key}`.
    fn lookup(&mut self, key: Uuid, now: Timestamp) -> Option<Event> {
        self.state(key, now).map(|job| match job {
            JobState::Running { .. } => Event::Running,
            JobState::Completed => Event::Completed(outputs()),
            JobState::Failed(error) => Event::Failed(error.clone()),
        })
    }

    fn cancel(&mut self, key: Uuid, now: Timestamp) {
        if let Some(JobState::Running { .. }) = self.state(key, now) {
            self.jobs.insert(
                key,
                JobState::Failed(TaskError::new(ErrorClass::Transient, "cancelled")),
            );
        }
    }
}

fn outputs() -> Map<String, Value> {
    json!({"k": 1}).as_object().cloned().unwrap()
}

/// How the simulated operator submits an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Submit {
    /// Look the key up first and adopt what the sidecar knows (the operator's rule).
    LookupFirst,
    /// Submit blindly (the hazard).
    Blind,
}

/// What a simulation saw, for the coverage test.
#[derive(Default, Debug)]
struct Seen {
    reconciles: usize,
    crashes: usize,
    lost_writes: usize,
    /// Lookups before a submit, by what they found.
    adopted: BTreeMap<&'static str, usize>,
}

struct Outcome {
    plan: Plan,
    sidecar: Sidecar,
    seen: Seen,
}

impl Outcome {
    fn duplicates(&self) -> Vec<(Uuid, u32)> {
        self.sidecar
            .executions
            .iter()
            .filter(|&(_, n)| *n > 1)
            .map(|(k, n)| (*k, *n))
            .collect()
    }
}

/// Whether attempts of `task` may hang: only where a timeout or a short deadline ends them, so
/// that every simulation stays short (the default deadline is a day of 5 s polls).
fn can_hang(plan: &Plan, task: &TaskRef) -> bool {
    let short_deadline = plan
        .deadline
        .is_some_and(|d| d.duration_since(plan.started_at) <= Duration::from_secs(3600));
    // Finally tasks are bound by their own timeouts only.
    plan.run(&task.task)
        .is_some_and(|v| v.task.timeout.is_some() || (short_deadline && !v.finally))
}

/// Runs `scenario` to the end. Every reconcile reads the persisted journal, advances and
/// performs effects while there is progress, then writes; with `rewinds`, it crashes after
/// performing a round of effects (5%) or loses its write (15%), so the next reconcile starts
/// from the last persisted journal and repeats effects already performed.
fn drive(scenario: &Scenario, submit: Submit, rewinds: bool) -> Outcome {
    let mut rng = Rng::new(scenario.seed ^ 0xd0_4ab1e);
    let mut sidecar = Sidecar::new(scenario.seed);
    let mut persisted = serde_json::to_string(&scenario.plan()).unwrap();
    let mut now = t0();
    let mut seen = Seen::default();
    loop {
        seen.reconciles += 1;
        let mut plan = Plan::from_json(&persisted).unwrap();
        assert!(
            seen.reconciles <= MAX_RECONCILES,
            "the plan did not end within {MAX_RECONCILES} reconciles: {plan:#?}"
        );
        if plan.is_finished() {
            return Outcome { plan, sidecar, seen };
        }
        // The user's cancel (or a newer spec) is in the object, so every reconcile sees it.
        match scenario.stop_at_call {
            Some((at, false)) if seen.reconciles >= at => {
                plan.cancel("cancelled by alice: wrong image");
            }
            Some((at, true)) if seen.reconciles >= at => {
                plan.supersede("superseded by a newer spec");
            }
            _ => {}
        }
        let mut observations: Vec<Observation> = Vec::new();
        let mut requeue = None;
        let mut crashed = false;
        for _round in 0..1_000 {
            let effects = advance(&mut plan, &observations, now);
            requeue = requeue_at(&effects);
            observations.clear();
            let mut progress = false;
            for effect in &effects {
                match effect {
                    Effect::StartTask { task, .. } => {
                        let hang = can_hang(&plan, task);
                        let event = match submit {
                            Submit::LookupFirst => match sidecar.lookup(task.key, now) {
                                None => {
                                    *seen.adopted.entry("nothing (submitted)").or_default() += 1;
                                    sidecar.submit(task.key, now, hang)
                                }
                                Some(Event::Running) => {
                                    *seen.adopted.entry("running").or_default() += 1;
                                    Event::StartAccepted
                                }
                                Some(found) => {
                                    *seen
                                        .adopted
                                        .entry(if matches!(found, Event::Completed(_)) {
                                            "completed"
                                        } else {
                                            "failed"
                                        })
                                        .or_default() += 1;
                                    found
                                }
                            },
                            Submit::Blind => sidecar.submit(task.key, now, hang),
                        };
                        progress = true;
                        observations.push(Observation::of(task, event));
                    }
                    Effect::PollTask(task) => {
                        let event = sidecar.lookup(task.key, now).unwrap_or(Event::NotFound);
                        progress |= event != Event::Running;
                        observations.push(Observation::of(task, event));
                    }
                    Effect::CancelTask(task) => sidecar.cancel(task.key, now),
                    Effect::PlanFinished { .. } | Effect::RequeueAt(_) => {}
                }
            }
            if rewinds && !effects.is_empty() && rng.chance(5) {
                crashed = true;
                break;
            }
            if !progress || plan.is_finished() {
                break;
            }
        }
        if crashed {
            // The operator restarts a few seconds later and reads the last persisted journal.
            seen.crashes += 1;
            now = now.saturating_add(Duration::from_millis(rng.below(10_000)));
            continue;
        }
        if rewinds && rng.chance(15) {
            // The write lost (409): requeued at once, the next reconcile reads the older journal.
            seen.lost_writes += 1;
            continue;
        }
        persisted = serde_json::to_string(&plan).unwrap();
        if let Some(at) = requeue {
            now = at;
        }
    }
}

/// The end state agrees with itself and with the sidecar.
fn assert_consistent(outcome: &Outcome) {
    let plan = &outcome.plan;
    let sidecar_state = |key: Uuid| outcome.sidecar.jobs.get(&key).cloned();
    assert!(plan.finished_at.is_some(), "a finished plan records when");
    let all_ok = plan.runs().all(|v| v.run.state.satisfies_dependents());
    for view in plan.runs() {
        let name = view.name();
        let run = view.run;
        assert!(
            run.state.is_terminal(),
            "{name} is {:?} in a finished plan",
            run.state
        );
        assert!(run.next_attempt_at.is_none(), "{name} still waits for a retry");
        let key = plan.idempotency_key(&name, run.attempt);
        match run.state {
            TaskState::Succeeded => assert_eq!(
                sidecar_state(key),
                Some(JobState::Completed),
                "{name} attempt {} Succeeded, the sidecar disagrees",
                run.attempt
            ),
            TaskState::Failed => {
                let class = run.error.as_ref().map(|e| e.class);
                if matches!(class, Some(ErrorClass::Transient | ErrorClass::Terminal)) {
                    assert!(
                        matches!(sidecar_state(key), Some(JobState::Failed(_))),
                        "{name} attempt {} Failed ({class:?}), the sidecar has {:?}",
                        run.attempt,
                        sidecar_state(key)
                    );
                }
            }
            _ => {}
        }
    }
    match plan.phase {
        PlanPhase::Succeeded => {
            assert!(
                plan.stop.is_none() && all_ok,
                "Succeeded with a stop or a failed run"
            );
        }
        PlanPhase::Failed => assert!(
            matches!(
                plan.stop.as_ref().map(|s| s.cause),
                Some(StopCause::TaskFailed | StopCause::DeadlineExceeded) | None
            ) && (plan.stop.is_some() || !all_ok),
            "Failed without a cause: {:?}",
            plan.stop
        ),
        PlanPhase::Cancelled => assert!(
            matches!(
                plan.stop.as_ref().map(|s| s.cause),
                Some(StopCause::Cancelled | StopCause::Superseded)
            ),
            "Cancelled without a cancel: {:?}",
            plan.stop
        ),
        PlanPhase::Active => panic!("the plan is still active"),
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// With lookup-before-submit, crashes and lost writes at random points between performing
    /// effects and persisting the journal never execute a key twice; every plan ends within
    /// [`MAX_RECONCILES`] reconciles, in a state the sidecar agrees with. Up to 200 tasks.
    #[test]
    fn rewinds_never_execute_a_key_twice(seed in any::<u64>(), size in 1u64..200) {
        let scenario = scenario_sized(seed, size);
        let outcome = drive(&scenario, Submit::LookupFirst, true);
        let duplicates = outcome.duplicates();
        prop_assert!(duplicates.is_empty(), "keys executed more than once: {:?}", duplicates);
        assert_consistent(&outcome);
    }
}

/// The property can fail: the same simulation with a blind re-submit (no lookup) executes some
/// key twice within the first 200 seeds.
#[test]
fn blind_resubmits_execute_a_failed_key_again() {
    let found = (0..200u64).find_map(|seed| {
        let outcome = drive(&scenario_sized(seed, 30), Submit::Blind, true);
        outcome.duplicates().first().map(|&(key, n)| (seed, key, n))
    });
    let (seed, key, n) =
        found.expect("no duplicate execution in 200 seeds: the simulation cannot see the hazard");
    eprintln!("blind re-submit: seed {seed} executed key {key} {n} times");
}

/// Without rewinds the blind operator is safe too: the hazard is the rewind, not the submit.
#[test]
fn without_rewinds_a_blind_resubmit_never_repeats_a_key() {
    for seed in 0..100u64 {
        let outcome = drive(&scenario_sized(seed, 30), Submit::Blind, false);
        assert!(outcome.duplicates().is_empty(), "seed {seed}");
        assert_consistent(&outcome);
    }
}

/// Guards the property against passing vacuously: the runs crash and lose writes, and lookups
/// find every state (nothing, running, completed, failed).
#[test]
fn the_rewind_simulation_exercises_every_recovery() {
    let mut total = Seen::default();
    let mut phases: BTreeMap<String, usize> = BTreeMap::new();
    for seed in 0..200u64 {
        let outcome = drive(&scenario_sized(seed, 60), Submit::LookupFirst, true);
        total.crashes += outcome.seen.crashes;
        total.lost_writes += outcome.seen.lost_writes;
        for (k, v) in &outcome.seen.adopted {
            *total.adopted.entry(k).or_default() += v;
        }
        *phases.entry(format!("{:?}", outcome.plan.phase)).or_default() += 1;
    }
    eprintln!("{total:?} {phases:?}");
    assert!(total.crashes > 0 && total.lost_writes > 0, "{total:?}");
    for kind in ["nothing (submitted)", "running", "completed", "failed"] {
        assert!(
            total.adopted.get(kind).copied().unwrap_or(0) > 0,
            "no lookup found {kind}: {total:?}"
        );
    }
    for phase in ["Succeeded", "Failed", "Cancelled"] {
        assert!(phases.contains_key(phase), "no plan ended {phase}: {phases:?}");
    }
}
