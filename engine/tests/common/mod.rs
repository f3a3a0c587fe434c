//! Test support: random workflow scenarios, a simulated task backend (idempotent by key, like
//! the sidecar) and a simulated operator loop on a virtual clock.

// Test support: panicking on a broken invariant is the point, and not every test binary uses
// every helper.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::missing_panics_doc,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::HashMap;

use sei_engine::{
    BackoffSpec, Effect, ErrorClass, Event, Guard, Inputs, Observation, Plan, Registry, RetrySpec, TaskError,
    TaskRef, TaskSpec, Timestamp, WorkflowDefinition, WorkflowSpec, advance, compile,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

pub fn t0() -> Timestamp {
    Timestamp::from_unix_millis(1_767_225_600_000)
}

pub fn registry() -> Registry {
    Registry::new().with_any_params("t")
}

/// A small deterministic generator (splitmix64).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A random workflow and its inputs, plus the seed of the backend's behaviour.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub definition: WorkflowDefinition,
    pub inputs: Inputs,
    pub seed: u64,
    /// Call number before which the operator cancels (`Some((n, false))`) or supersedes
    /// (`Some((n, true))`) the plan.
    pub stop_at_call: Option<(usize, bool)>,
}

impl Scenario {
    pub fn plan(&self) -> Plan {
        compile(&self.definition, &self.inputs, &registry()).unwrap()
    }
}

fn random_task(rng: &mut Rng, name: String, earlier: &[TaskSpec], inputs: &mut Inputs) -> TaskSpec {
    let mut task = TaskSpec {
        name: name.clone(),
        task_type: "t".into(),
        ..TaskSpec::default()
    };
    if earlier.len() <= 10 {
        for dep in earlier {
            if rng.chance(30) {
                task.depends_on.push(dep.name.clone());
            }
        }
    } else {
        // Large DAGs: up to three dependencies, mostly on recent tasks, so that the graph is
        // wide as well as deep.
        for _ in 0..rng.below(4) {
            let range = if rng.chance(70) { 10 } else { earlier.len() as u64 };
            let back = 1 + rng.below(range);
            let dep = &earlier[earlier.len() - usize::try_from(back).unwrap()];
            if !task.depends_on.contains(&dep.name) {
                task.depends_on.push(dep.name.clone());
            }
        }
    }
    if rng.chance(25) {
        task.for_each = Some("items".into());
    }
    if rng.chance(50) {
        task.retry = Some(RetrySpec {
            max_attempts: Some(1 + u32::try_from(rng.below(3)).unwrap()),
            backoff: Some(BackoffSpec {
                initial: Some(format!("{}s", 1 + rng.below(10))),
                factor: Some(2.0),
                max: Some("30s".into()),
            }),
            jitter: Some([0.0, 0.5, 1.0][usize::try_from(rng.below(3)).unwrap()]),
            retry_on: rng
                .chance(30)
                .then(|| vec![ErrorClass::Transient, ErrorClass::Terminal, ErrorClass::Timeout]),
        });
    }
    if rng.chance(30) {
        task.timeout = Some(format!("{}s", 10 + rng.below(50)));
    }
    if rng.chance(10) {
        task.when = Some("guard".into());
        inputs.when.insert(name, Guard::Skip("guard is false".into()));
    } else if rng.chance(5) {
        task.when = Some("guard".into());
        inputs.when.insert(name, Guard::Run);
    }
    if let Some(dep) = task
        .depends_on
        .first()
        .and_then(|d| earlier.iter().find(|t| &t.name == d))
        && rng.chance(30)
    {
        let all = if dep.for_each.is_some() && task.for_each.is_none() {
            "[*]"
        } else {
            ""
        };
        task.params.insert(
            "input".into(),
            json!(format!("${{ tasks.{}{all}.outputs.k }}", dep.name)),
        );
    }
    task
}

/// A random scenario: up to 10 normal and 2 finally tasks, random dependencies, retries,
/// timeouts, guards, `forEach`, output references, `maxParallel` and deadline.
pub fn scenario(seed: u64) -> Scenario {
    scenario_sized(seed, 10)
}

/// Like [`scenario`], with up to `max_tasks + 1` normal tasks (up to three dependencies each
/// beyond the first ten).
pub fn scenario_sized(seed: u64, max_tasks: u64) -> Scenario {
    let mut rng = Rng::new(seed);
    let mut inputs = Inputs::new(Uuid::from_u64_pair(seed, 0x5e1), t0());
    let items: Vec<Value> = ["x", "y", "z"][..usize::try_from(rng.below(4)).unwrap()]
        .iter()
        .map(|s| json!(s))
        .collect();
    inputs.params.insert("items".into(), Value::Array(items));
    let mut tasks: Vec<TaskSpec> = Vec::new();
    for i in 0..=rng.below(max_tasks) {
        let task = random_task(&mut rng, format!("task-{i}"), &tasks, &mut inputs);
        tasks.push(task);
    }
    let mut finally: Vec<TaskSpec> = Vec::new();
    for i in 0..rng.below(3) {
        let task = random_task(&mut rng, format!("final-{i}"), &finally, &mut inputs);
        finally.push(task);
    }
    let spec = WorkflowSpec {
        version: "1".into(),
        target: "SeiNode".into(),
        deadline: rng.chance(60).then(|| format!("{}s", 20 + rng.below(280))),
        max_parallel: rng.chance(50).then(|| 1 + u32::try_from(rng.below(4)).unwrap()),
        tasks,
        finally,
        on_success: Some(json!({"ok": true})),
        on_failure: Some(json!({"ok": false})),
        ..WorkflowSpec::default()
    };
    let stop_at_call = rng
        .chance(10)
        .then(|| (1 + usize::try_from(rng.below(8)).unwrap(), rng.chance(50)));
    Scenario {
        definition: WorkflowDefinition::new("random", spec),
        inputs,
        seed: rng.next(),
        stop_at_call,
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    Succeed,
    FailTransient,
    FailTerminal,
    Lose,
    Cancel,
    RejectStart,
}

#[derive(Clone, Debug)]
struct Job {
    outcome: Outcome,
    polls_left: u64,
    cancelled: bool,
    /// The first submission of this key is lost in transit: the backend never sees it and the
    /// operator gets no answer.
    dropped: bool,
}

/// A task backend that, like the sidecar, deduplicates submissions by key: a start under a key
/// it knows returns that job's status and never runs it again.
#[derive(Default)]
pub struct Backend {
    seed: u64,
    jobs: HashMap<Uuid, Job>,
    dropped: std::collections::HashSet<Uuid>,
    /// Submissions lost in transit.
    pub drops: usize,
    /// Starts received for a key the backend already knew.
    pub repeated_starts: Vec<String>,
    /// Every key the backend was asked to start, in order.
    pub started_keys: Vec<Uuid>,
}

impl Backend {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            ..Self::default()
        }
    }

    fn job_for(&self, key: Uuid) -> Job {
        let mut rng = Rng::new(self.seed ^ key.as_u64_pair().0 ^ key.as_u64_pair().1.rotate_left(17));
        let roll = rng.below(100);
        let outcome = match roll {
            0..=69 => Outcome::Succeed,
            70..=81 => Outcome::FailTransient,
            82..=85 => Outcome::FailTerminal,
            86..=89 => Outcome::Lose,
            90..=92 => Outcome::Cancel,
            _ => Outcome::RejectStart,
        };
        // Some jobs run long enough to hit their timeout or the plan deadline.
        let polls_left = if rng.chance(10) { 40 } else { rng.below(4) };
        let dropped = rng.chance(5);
        Job {
            outcome,
            polls_left,
            cancelled: false,
            dropped,
        }
    }

    fn status(job: &Job) -> Event {
        match job.outcome {
            Outcome::Succeed => Event::Completed(json!({"k": 1}).as_object().cloned().unwrap_or_default()),
            Outcome::FailTransient => Event::Failed(TaskError::new(ErrorClass::Transient, "503")),
            Outcome::FailTerminal => Event::Failed(TaskError::new(ErrorClass::Terminal, "400")),
            Outcome::Lose => Event::NotFound,
            Outcome::Cancel => Event::Cancelled,
            Outcome::RejectStart => Event::StartRejected(TaskError::new(ErrorClass::Transient, "refused")),
        }
    }

    /// Submits `task`; `None` when the submission was lost in transit.
    pub fn start(&mut self, task: &TaskRef) -> Option<Event> {
        if let Some(job) = self.jobs.get(&task.key) {
            self.repeated_starts
                .push(format!("{} attempt {}", task.task, task.attempt));
            return Some(if job.polls_left > 0 || job.cancelled {
                Event::StartAccepted
            } else {
                Self::status(job)
            });
        }
        let job = self.job_for(task.key);
        if job.dropped && self.dropped.insert(task.key) {
            self.drops += 1;
            return None;
        }
        self.started_keys.push(task.key);
        let event = match job.outcome {
            Outcome::RejectStart => Self::status(&job),
            Outcome::Succeed if job.polls_left == 0 => Self::status(&job),
            _ => Event::StartAccepted,
        };
        self.jobs.insert(task.key, job);
        Some(event)
    }

    pub fn poll(&mut self, task: &TaskRef) -> Event {
        let Some(job) = self.jobs.get_mut(&task.key) else {
            return Event::NotFound;
        };
        if job.cancelled {
            return Event::Cancelled;
        }
        if job.polls_left > 0 {
            job.polls_left -= 1;
            return Event::Running;
        }
        match job.outcome {
            Outcome::RejectStart => Event::NotFound,
            _ => Self::status(job),
        }
    }

    pub fn cancel(&mut self, task: &TaskRef) {
        if let Some(job) = self.jobs.get_mut(&task.key) {
            job.cancelled = true;
        }
    }
}

/// One call of `advance`, as seen by a checker.
pub struct Step<'a> {
    pub before: &'a Plan,
    pub observations: &'a [Observation],
    pub now: Timestamp,
    pub after: &'a Plan,
    pub effects: &'a [Effect],
}

/// The outcome of a simulation.
pub struct Trace {
    pub plan: Plan,
    pub effects: Vec<Vec<Effect>>,
    pub backend: Backend,
    pub calls: usize,
}

pub fn requeue_at(effects: &[Effect]) -> Option<Timestamp> {
    effects.iter().find_map(|e| {
        if let Effect::RequeueAt(t) = e {
            Some(*t)
        } else {
            None
        }
    })
}

/// Runs `scenario` to the end like the operator would: perform the effects, feed the
/// observations back at once while there is progress, otherwise move the virtual clock to the
/// requested requeue time. With `crash`, the plan is written to JSON and read back before every
/// call, as if the operator restarted between any two steps.
pub fn simulate(scenario: &Scenario, crash: bool, check: &mut dyn FnMut(&Step<'_>)) -> Trace {
    let mut plan = scenario.plan();
    let mut backend = Backend::new(scenario.seed);
    let mut now = t0();
    let mut observations: Vec<Observation> = Vec::new();
    let mut log = Vec::new();
    let mut calls = 0;
    loop {
        calls += 1;
        assert!(calls < 5_000, "the plan did not finish: {plan:#?}");
        match scenario.stop_at_call {
            Some((at, false)) if at == calls => {
                plan.cancel("cancelled by the simulation");
            }
            Some((at, true)) if at == calls => {
                plan.supersede("superseded by the simulation");
            }
            _ => {}
        }
        if crash {
            let json = serde_json::to_string(&plan).unwrap();
            plan = Plan::from_json(&json).unwrap();
        }
        let before = plan.clone();
        let effects = advance(&mut plan, &observations, now);
        check(&Step {
            before: &before,
            observations: &observations,
            now,
            after: &plan,
            effects: &effects,
        });
        log.push(effects.clone());
        if plan.is_finished() {
            break;
        }
        let mut progress = false;
        observations.clear();
        for effect in &effects {
            match effect {
                Effect::StartTask { task, .. } => {
                    if let Some(event) = backend.start(task) {
                        progress = true;
                        observations.push(Observation::of(task, event));
                    }
                }
                Effect::PollTask(task) => {
                    let event = backend.poll(task);
                    progress |= event != Event::Running;
                    observations.push(Observation::of(task, event));
                }
                Effect::CancelTask(task) => backend.cancel(task),
                Effect::PlanFinished { .. } | Effect::RequeueAt(_) => {}
            }
        }
        if !progress {
            now = requeue_at(&effects).expect("an active plan always requeues");
        }
    }
    Trace {
        plan,
        effects: log,
        backend,
        calls,
    }
}

/// Whether every dependency of run `name` is Succeeded or Skipped in `plan`, and so on up the
/// DAG (a task with no runs, from an empty `forEach` list, passes its dependencies through).
pub fn dependencies_satisfied(plan: &Plan, name: &str) -> bool {
    let view = plan.run(name).unwrap();
    let stage = if view.finally { &plan.finally } else { &plan.tasks };
    upstream_satisfied(stage, view.task, Some(view.index))
}

fn upstream_satisfied(
    stage: &[sei_engine::PlannedTask],
    task: &sei_engine::PlannedTask,
    index: Option<usize>,
) -> bool {
    task.depends_on.iter().all(|dep| {
        let dep = stage.iter().find(|t| &t.name == dep).unwrap();
        let paired = task.for_each.is_some() && task.for_each == dep.for_each;
        let runs_ok = match (paired, index) {
            (true, Some(i)) => dep.runs[i].state.satisfies_dependents(),
            _ => dep.runs.iter().all(|r| r.state.satisfies_dependents()),
        };
        runs_ok && upstream_satisfied(stage, dep, if paired { index } else { None })
    })
}

pub fn empty_outputs() -> Map<String, Value> {
    Map::new()
}
