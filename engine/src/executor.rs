//! The pure executor: [`advance`] applies what the operator observed, then decides what to do
//! next, returning [`Effect`]s for the operator to perform.
//!
//! # Protocol
//! 1. The operator calls `advance(&mut plan, &observations, now)`; the first call on a new plan
//!    passes no observations.
//! 2. It performs the effects: `StartTask` (submit under the idempotency key), `PollTask` (ask
//!    for the status of that key), `CancelTask`; and for each it records an [`Observation`] of
//!    the same task name and attempt ([`Observation::of`]).
//! 3. It calls `advance` again with those observations, and repeats while the plan changes
//!    (compare the plan before and after, or stop when a round produced only `Running`
//!    observations); then it writes the plan to status once, and requeues at the `RequeueAt`
//!    effect, which an `Active` plan always returns.
//! 4. `PlanFinished` is returned once, on the call that finishes the plan; later calls on a
//!    finished plan return nothing.
//!
//! # Observations and the transition table
//! An observation applies only to the run's current attempt (a different `attempt` is stale
//! and ignored), then [`transition`] decides by the run's [`Lifecycle`] and the [`EventKind`].
//! Every pair of the table has a unit test (`tests::transitions`), and a table test fails when
//! one is missing.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use foldhash::fast::FixedState;
use petgraph::csr::Csr;
use petgraph::graph::IndexType;
use petgraph::visit::{DfsPostOrder, IntoNodeIdentifiers, VisitMap};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::plan::{
    ErrorClass, MAX_ERROR_MESSAGE_BYTES, MAX_OUTPUT_BYTES, MAX_PLAN_BYTES, Plan, PlanPhase, PlannedTask,
    Stop, StopCause, TaskError, TaskRun, TaskState, idempotency_key, split_run_name, truncate,
};
use crate::reference::{Ref, has_reference, lookup, rewrite};
use crate::time::{Duration, Timestamp};

/// What the operator saw when it performed an effect for one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// Run name: `task` or `task[item]` (as in [`TaskRef::task`]).
    pub task: String,
    /// The attempt the observation is about (as in [`TaskRef::attempt`]).
    pub attempt: u32,
    /// What was seen.
    pub event: Event,
}

impl Observation {
    /// An observation of `event` for run `task`, attempt `attempt`.
    pub fn new(task: impl Into<String>, attempt: u32, event: Event) -> Self {
        Self {
            task: task.into(),
            attempt,
            event,
        }
    }

    /// An observation of `event` about the run an effect referred to.
    pub fn of(task: &TaskRef, event: Event) -> Self {
        Self::new(task.task.clone(), task.attempt, event)
    }
}

/// What happened to a run, as seen by the operator.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The start was accepted (submitted, or a controller-side task began).
    StartAccepted,
    /// The start was refused; consumes the attempt.
    StartRejected(TaskError),
    /// The task is still running (poll result).
    Running,
    /// The task finished successfully with these outputs (may be empty).
    Completed(Map<String, Value>),
    /// The task failed; consumes the attempt.
    Failed(TaskError),
    /// The executor does not know the task (sidecar 404): for an issued start it was never
    /// received (start again under the same key); for a running task it was lost.
    NotFound,
    /// The task was cancelled by its executor.
    Cancelled,
}

impl Event {
    /// The kind of this event, for the transition table.
    pub fn kind(&self) -> EventKind {
        match self {
            Self::StartAccepted => EventKind::StartAccepted,
            Self::StartRejected(_) => EventKind::StartRejected,
            Self::Running => EventKind::Running,
            Self::Completed(_) => EventKind::Completed,
            Self::Failed(_) => EventKind::Failed,
            Self::NotFound => EventKind::NotFound,
            Self::Cancelled => EventKind::Cancelled,
        }
    }
}

/// [`Event`] without its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// [`Event::StartAccepted`].
    StartAccepted,
    /// [`Event::StartRejected`].
    StartRejected,
    /// [`Event::Running`].
    Running,
    /// [`Event::Completed`].
    Completed,
    /// [`Event::Failed`].
    Failed,
    /// [`Event::NotFound`].
    NotFound,
    /// [`Event::Cancelled`].
    Cancelled,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [Self; 7] = [
        Self::StartAccepted,
        Self::StartRejected,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::NotFound,
        Self::Cancelled,
    ];
}

/// Where a run is in its life, derived from the journal ([`TaskRun::lifecycle`]): the six
/// journal states, with `Pending` split into `Pending` (nothing in flight: never started, or
/// waiting for a retry) and `Starting` (a start was issued, `startedAt` is set, and it has not
/// been acknowledged yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lifecycle {
    /// Journal state Pending, nothing in flight (never started, or waiting for a retry).
    Pending,
    /// Journal state Pending with `startedAt`: a start was issued, not yet acknowledged.
    Starting,
    /// Journal state Running.
    Running,
    /// Journal state Succeeded.
    Succeeded,
    /// Journal state Failed.
    Failed,
    /// Journal state Skipped.
    Skipped,
    /// Journal state Cancelled.
    Cancelled,
}

impl Lifecycle {
    /// Every lifecycle stage.
    pub const ALL: [Self; 7] = [
        Self::Pending,
        Self::Starting,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Skipped,
        Self::Cancelled,
    ];

    /// Starting or Running: an attempt is in flight and counts against `maxParallel`.
    pub const fn in_flight(self) -> bool {
        matches!(self, Self::Starting | Self::Running)
    }
}

impl TaskRun {
    /// The run's [`Lifecycle`] stage.
    pub fn lifecycle(&self) -> Lifecycle {
        match self.state {
            TaskState::Pending if self.started_at.is_some() => Lifecycle::Starting,
            TaskState::Pending => Lifecycle::Pending,
            TaskState::Running => Lifecycle::Running,
            TaskState::Succeeded => Lifecycle::Succeeded,
            TaskState::Failed => Lifecycle::Failed,
            TaskState::Skipped => Lifecycle::Skipped,
            TaskState::Cancelled => Lifecycle::Cancelled,
        }
    }
}

/// What an observation does to a run of the current attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Nothing changes (duplicate, stale or contradictory news).
    Ignore,
    /// The start was acknowledged: Starting -> Running.
    Accept,
    /// -> Succeeded, keeping the outputs (if they fit in 4 KiB; else the attempt fails).
    Succeed,
    /// The attempt failed with the observed error: retry later (Pending with `nextAttemptAt`)
    /// or, when the budget, the error class, the deadline or a stop forbid it, -> Failed.
    FailAttempt,
    /// A running task vanished: the attempt fails with class `Transient`.
    Lost,
    /// The start never arrived: back to Pending, the same attempt starts again (same key).
    Reissue,
    /// -> Cancelled; a normal task cancelled by its executor stops the plan (ends Failed).
    Cancel,
}

/// The transition table: what `event` does to a run in stage `lifecycle` (same attempt).
pub const fn transition(lifecycle: Lifecycle, event: EventKind) -> Transition {
    use EventKind as E;
    use Lifecycle as L;
    match (lifecycle, event) {
        (L::Starting, E::StartAccepted | E::Running) => Transition::Accept,
        (L::Starting | L::Running, E::Completed) => Transition::Succeed,
        (L::Starting, E::StartRejected) | (L::Starting | L::Running, E::Failed) => Transition::FailAttempt,
        (L::Starting, E::NotFound) => Transition::Reissue,
        (L::Running, E::NotFound) => Transition::Lost,
        (L::Starting | L::Running, E::Cancelled) => Transition::Cancel,
        (L::Running, E::StartAccepted | E::StartRejected | E::Running)
        | (L::Pending | L::Succeeded | L::Failed | L::Skipped | L::Cancelled, _) => Transition::Ignore,
    }
}

/// Identifies one attempt of one run in an effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRef {
    /// Run name: `task` or `task[item]`.
    pub task: String,
    /// Task type (registry key).
    pub task_type: String,
    /// The object the task acts on, if any.
    pub target: Option<String>,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Idempotency key of this attempt: submit and poll under it.
    pub key: Uuid,
}

/// Something the operator must do, returned by [`advance`] in this order: cancels, starts,
/// polls, `PlanFinished`, `RequeueAt`.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Start (submit) an attempt. `params` are fully resolved (items and outputs substituted).
    /// It may be delivered again for the same key (after a crash or a lost status write), so
    /// the task looks the key up before submitting and adopts what it finds (see the crate's
    /// "Delivery contract"): the sidecar re-runs a *failed* id that is submitted again.
    StartTask {
        /// The attempt to start.
        task: TaskRef,
        /// Resolved params, as the task type's params struct expects them.
        params: Arc<Value>,
        /// The attempt's timeout, if any (the engine enforces it too).
        timeout: Option<Duration>,
    },
    /// Ask for the status of an attempt in flight and report it as an observation.
    PollTask(TaskRef),
    /// Best-effort cancel of an attempt (timeout or deadline); the journal already records the
    /// outcome, so no observation is needed.
    CancelTask(TaskRef),
    /// The plan just finished. `effect` is the definition's `onSuccess` (phase Succeeded) or
    /// `onFailure` (Failed or Cancelled), carried through untouched.
    PlanFinished {
        /// The terminal phase.
        phase: PlanPhase,
        /// Why the plan did not succeed (absent on success).
        message: Option<String>,
        /// The first run that failed, if any.
        failed_task: Option<String>,
        /// `onSuccess` or `onFailure` of the definition, untouched.
        effect: Option<Value>,
    },
    /// Call `advance` again no later than this (next poll, retry, timeout or deadline).
    RequeueAt(Timestamp),
}

const MAIN: usize = 0;
const FINALLY: usize = 1;

/// Derived lookup structures over a plan's task graph, cached in the plan (never serialised).
/// Comparison and debug output ignore it: it is a pure function of the plan's structure.
#[derive(Clone, Default)]
pub(crate) struct Index(Option<Arc<Graph>>);

impl PartialEq for Index {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl fmt::Debug for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Index")
    }
}

#[derive(Clone, Copy, Debug)]
struct Dep {
    task: usize,
    /// Both tasks expanded over the same list: run `i` waits for run `i` only.
    paired: bool,
}

/// The dependency graph of one section: an edge from each task to each task it depends on,
/// weighted `paired`. A compressed sparse row graph keeps a task's dependencies in one slice,
/// so the scheduling pass reads them as fast as a flat table.
#[derive(Debug, Default)]
struct DepTable(Csr<(), bool>);

impl DepTable {
    /// `edges` holds `(task, dependency, paired)` grouped by task in ascending order; a task's
    /// dependencies are sorted and deduplicated here, as the sparse row format requires.
    fn new(len: usize, mut edges: Vec<(u32, u32, bool)>, offsets: &[usize]) -> Self {
        for window in offsets.windows(2) {
            edges[window[0]..window[1]].sort_unstable_by_key(|&(_, dep, _)| dep);
        }
        edges.dedup_by_key(|&mut (task, dep, _)| (task, dep));
        let mut graph = Csr::from_sorted_edges(&edges).unwrap_or_else(|_| {
            // Unreachable: the edges were sorted and deduplicated just above.
            let mut graph = Csr::with_nodes(len);
            for &(task, dep, paired) in &edges {
                graph.add_edge(task, dep, paired);
            }
            graph
        });
        // Tasks after the last one with a dependency have no row yet.
        while graph.node_count() < len {
            graph.add_node(());
        }
        Self(graph)
    }

    fn of(&self, task: usize) -> impl Iterator<Item = Dep> + Clone + '_ {
        let node = u32::try_from(task).unwrap_or(u32::MAX);
        self.0
            .neighbors_slice(node)
            .iter()
            .zip(self.0.edges_slice(node))
            .map(|(&dep, &paired)| Dep {
                task: dep.index(),
                paired,
            })
    }
}

#[derive(Debug)]
struct Graph {
    shape: [usize; 2],
    deps: [DepTable; 2],
    /// Tasks of each section with every task after its dependencies (declaration order
    /// otherwise), so one pass sees the final state of a task's dependencies.
    order: [Vec<usize>; 2],
    /// Tasks of each section that have a timeout (the only ones the timeout check visits).
    timed: [Vec<usize>; 2],
    /// Per task of each section: whether its params hold run-time references to resolve.
    dynamic: [Vec<bool>; 2],
    /// Task name -> (section, task). Hashed with foldhash's fixed-seed hasher: faster than SipHash on short
    /// names and deterministic; the keys are a compiled plan's task names, not attacker-chosen input.
    names: HashMap<String, (usize, usize), FixedState>,
}

/// Depth-first post-order from each task in declaration order: dependencies first. Tolerates a
/// cycle in a corrupt journal (every task still appears once), which a topological sort would not.
fn topological_order(table: &DepTable) -> Vec<usize> {
    let graph = &table.0;
    let mut order = Vec::with_capacity(graph.node_count());
    let mut dfs = DfsPostOrder::empty(graph);
    for root in graph.node_identifiers() {
        if dfs.discovered.is_visited(&root) {
            continue;
        }
        dfs.move_to(root);
        while let Some(task) = dfs.next(graph) {
            order.push(task.index());
        }
    }
    order
}

impl Graph {
    fn build(plan: &Plan) -> Self {
        let mut names =
            HashMap::with_capacity_and_hasher(plan.tasks.len() + plan.finally.len(), FixedState::default());
        for (s, section) in [&plan.tasks, &plan.finally].into_iter().enumerate() {
            for (t, task) in section.iter().enumerate() {
                names.insert(task.name.clone(), (s, t));
            }
        }
        let deps_of = |section: &[PlannedTask], s: usize| -> DepTable {
            let mut edges = Vec::new();
            let mut offsets = Vec::with_capacity(section.len() + 1);
            offsets.push(0);
            for (t, task) in section.iter().enumerate() {
                for dep in &task.depends_on {
                    match names.get(dep) {
                        Some(&(ds, dt)) if ds == s => {
                            let other = &section[dt];
                            let paired = task.for_each.is_some()
                                && task.for_each == other.for_each
                                && task.runs.len() == other.runs.len();
                            edges.push((
                                t.try_into().unwrap_or(u32::MAX),
                                dt.try_into().unwrap_or(u32::MAX),
                                paired,
                            ));
                        }
                        _ => {
                            tracing::warn!(task = %task.name, dependency = %dep, "Ignoring unknown dependency in journal");
                        }
                    }
                }
                offsets.push(edges.len());
            }
            DepTable::new(section.len(), edges, &offsets)
        };
        let deps = [deps_of(&plan.tasks, MAIN), deps_of(&plan.finally, FINALLY)];
        let order = [topological_order(&deps[MAIN]), topological_order(&deps[FINALLY])];
        let timed_of = |tasks: &[PlannedTask]| -> Vec<usize> {
            tasks
                .iter()
                .enumerate()
                .filter(|(_, task)| task.timeout.is_some())
                .map(|(t, _)| t)
                .collect()
        };
        let timed = [timed_of(&plan.tasks), timed_of(&plan.finally)];
        let dynamic_of = |tasks: &[PlannedTask]| -> Vec<bool> {
            tasks.iter().map(|t| contains_reference(&t.params)).collect()
        };
        let dynamic = [dynamic_of(&plan.tasks), dynamic_of(&plan.finally)];
        Self {
            shape: [plan.tasks.len(), plan.finally.len()],
            deps,
            order,
            timed,
            dynamic,
            names,
        }
    }
}

fn graph(plan: &mut Plan) -> Arc<Graph> {
    let shape = [plan.tasks.len(), plan.finally.len()];
    match &plan.index.0 {
        Some(graph) if graph.shape == shape => Arc::clone(graph),
        _ => {
            let graph = Arc::new(Graph::build(plan));
            plan.index = Index(Some(Arc::clone(&graph)));
            graph
        }
    }
}

fn section(plan: &Plan, s: usize) -> &[PlannedTask] {
    if s == MAIN { &plan.tasks } else { &plan.finally }
}

fn section_mut(plan: &mut Plan, s: usize) -> &mut [PlannedTask] {
    if s == MAIN {
        &mut plan.tasks
    } else {
        &mut plan.finally
    }
}

/// A position of a run: (section, task, run).
type Pos = (usize, usize, usize);

#[derive(Default)]
struct Out {
    cancels: Vec<Effect>,
    starts: Vec<Effect>,
    polls: Vec<Pos>,
    wake: Option<Timestamp>,
    finished: Option<Effect>,
}

/// Advances `plan` at time `now`: applies `observations`, then starts, skips, retries, times
/// out, cancels and finishes what is due, and returns the effects to perform.
///
/// # Guarantees
/// - Pure: no clock, no I/O, no randomness; the result depends only on its arguments.
/// - Idempotent: calling it again with the same observations and `now` leaves the plan unchanged
///   (it may repeat `PollTask` and `RequeueAt` effects, never a `StartTask` for a new attempt).
/// - A run starts only when all its dependencies are Succeeded or Skipped, and never while
///   `maxParallel` runs are in flight.
/// - Normal tasks are all terminal after a call with `now >= deadline`.
/// - An `Active` plan always gets a `RequeueAt`; a finished one gets no effects at all.
/// - A paused plan ([`Plan::pause`]) gets no effects and does not change: observations passed
///   while it is paused are ignored (the runs in flight are polled again after the resume).
///   A paused plan that has a stop request ([`Plan::cancel`], [`Plan::supersede`]) is resumed
///   at `now` and advanced, so that it ends.
pub fn advance(plan: &mut Plan, observations: &[Observation], now: Timestamp) -> Vec<Effect> {
    plan.migrate();
    if plan.phase.is_terminal() {
        return Vec::new();
    }
    if plan.paused_at.is_some() {
        if plan.stop.is_none() {
            return Vec::new();
        }
        // A cancel (or supersede) of a paused plan lifts the pause, so that the plan ends.
        plan.resume(now);
    }
    let graph = graph(plan);
    let mut out = Out::default();
    for observation in observations {
        apply(plan, &graph, observation, now);
    }
    decide(plan, &graph, now, &mut out);
    effects(plan, now, out)
}

impl Plan {
    /// Keeps the journal under [`MAX_PLAN_BYTES`]; the operator calls it before each status
    /// write of an active plan (after deriving the spans of that reconcile).
    ///
    /// It first [compacts](Plan::compact) the plan. If the journal is still over the cap, the
    /// plan ends at once, `Failed`, with stop cause [`StopCause::JournalTooLarge`] and the message
    /// "journal is N bytes, over the 262144-byte cap": every run that is not terminal is
    /// `Cancelled` (finally tasks do not run: they would need a journal that can be written), and
    /// the compaction of the now finished plan drops every output. The returned effects are
    /// those of a finishing [`crate::advance`]: a `CancelTask` per attempt in flight, then
    /// `PlanFinished` (with `onFailure`); the operator records the summary and clears the plan,
    /// so the write that follows is small whatever the size of the journal. Returns no effects
    /// when the plan fits (or is already finished).
    pub fn enforce_size_cap(&mut self, now: Timestamp) -> Vec<Effect> {
        self.compact();
        if self.phase.is_terminal() {
            return Vec::new();
        }
        let size = self.json_size();
        if size <= MAX_PLAN_BYTES {
            return Vec::new();
        }
        let message = format!("journal is {size} bytes, over the {MAX_PLAN_BYTES}-byte cap");
        tracing::warn!(workflow = %self.workflow, plan.id = %self.id, size, "Plan journal over its size cap; failing the plan");
        self.stop = Some(Stop {
            cause: StopCause::JournalTooLarge,
            message: message.clone(),
        });
        self.paused_at = None;
        let mut out = Out::default();
        for s in [MAIN, FINALLY] {
            for t in 0..section(self, s).len() {
                for r in 0..section(self, s)[t].runs.len() {
                    let lifecycle = section(self, s)[t].runs[r].lifecycle();
                    if lifecycle.in_flight() {
                        out.cancels.push(Effect::CancelTask(task_ref(self, (s, t, r))));
                    }
                    let run = &mut section_mut(self, s)[t].runs[r];
                    if !run.state.is_terminal() {
                        run.state = TaskState::Cancelled;
                        run.finished_at = Some(now);
                        run.next_attempt_at = None;
                        run.reason = Some("not finished: the journal went over its size cap".into());
                    }
                }
            }
        }
        finish(self, now, &mut out);
        self.compact();
        effects(self, now, out)
    }
}

fn apply(plan: &mut Plan, graph: &Graph, observation: &Observation, now: Timestamp) {
    let (name, item) = split_run_name(&observation.task);
    let Some(&(s, t)) = graph.names.get(name) else {
        tracing::debug!(task = %observation.task, "Ignoring observation of an unknown task");
        return;
    };
    let Some(r) = section(plan, s)[t]
        .runs
        .iter()
        .position(|run| run.item.as_deref() == item)
    else {
        tracing::debug!(task = %observation.task, "Ignoring observation of an unknown item");
        return;
    };
    let run = &section(plan, s)[t].runs[r];
    if observation.attempt == 0 || run.attempt != observation.attempt {
        tracing::debug!(task = %observation.task, attempt = observation.attempt, "Ignoring stale observation");
        return;
    }
    match transition(run.lifecycle(), observation.event.kind()) {
        Transition::Ignore => {}
        Transition::Accept => section_mut(plan, s)[t].runs[r].state = TaskState::Running,
        Transition::Succeed => {
            let outputs = match &observation.event {
                Event::Completed(outputs) if !outputs.is_empty() => Some(outputs),
                _ => None,
            };
            let size = outputs.map_or(0, |o| serde_json::to_string(o).map_or(usize::MAX, |s| s.len()));
            if size > MAX_OUTPUT_BYTES {
                let message = format!(
                    "outputs are {size} bytes, more than the {MAX_OUTPUT_BYTES} allowed in the journal"
                );
                fail_attempt(
                    plan,
                    (s, t, r),
                    TaskError::new(ErrorClass::Terminal, message),
                    now,
                );
            } else {
                let run = &mut section_mut(plan, s)[t].runs[r];
                run.state = TaskState::Succeeded;
                run.finished_at = Some(now);
                run.outputs = outputs.map(|o| Value::Object(o.clone()));
                tracing::info!(task = %observation.task, attempt = observation.attempt, "Task succeeded");
            }
        }
        Transition::FailAttempt => {
            let error = match &observation.event {
                Event::Failed(error) | Event::StartRejected(error) => error.clone(),
                _ => TaskError::new(ErrorClass::Transient, "attempt failed"),
            };
            fail_attempt(plan, (s, t, r), error, now);
        }
        Transition::Lost => {
            let error = TaskError::new(
                ErrorClass::Transient,
                "the task's executor no longer knows it (lost)",
            );
            fail_attempt(plan, (s, t, r), error, now);
        }
        Transition::Reissue => {
            let run = &mut section_mut(plan, s)[t].runs[r];
            run.started_at = None;
            run.attempt -= 1;
        }
        Transition::Cancel => {
            let run = &mut section_mut(plan, s)[t].runs[r];
            run.state = TaskState::Cancelled;
            run.finished_at = Some(now);
            run.reason = Some("cancelled by its executor".into());
            if s == MAIN {
                let message = format!("task `{}` was cancelled by its executor", observation.task);
                request_stop(plan, StopCause::TaskFailed, message);
            }
            plan.failed_task.get_or_insert_with(|| observation.task.clone());
        }
    }
}

fn request_stop(plan: &mut Plan, cause: StopCause, message: String) {
    if plan.stop.is_none() {
        plan.stop = Some(Stop {
            cause,
            message: truncate(message, MAX_ERROR_MESSAGE_BYTES),
        });
    }
}

/// The attempt in flight at `pos` failed: schedule a retry or fail the run.
fn fail_attempt(plan: &mut Plan, (s, t, r): Pos, error: TaskError, now: Timestamp) {
    let task = &section(plan, s)[t];
    let name = task.run_name(r);
    let attempt = task.runs[r].attempt;
    let policy = task.retry_policy();
    let mut next = None;
    let mut error = error;
    if !(s == MAIN && plan.stop.is_some()) && policy.allows_retry(attempt, error.class) {
        let at = now.saturating_add(policy.delay(plan.id, &name, attempt));
        match plan.deadline {
            Some(deadline) if s == MAIN && at >= deadline => {
                let message = format!(
                    "{} (not retried: the next attempt would start after the plan deadline)",
                    error.message
                );
                error = TaskError::new(error.class, message);
            }
            _ => next = Some(at),
        }
    }
    let run = &mut section_mut(plan, s)[t].runs[r];
    run.started_at = None;
    if let Some(at) = next {
        tracing::info!(task = %name, attempt, error.class = %error.class, retry_at = %at, "Task attempt failed; will retry");
        run.state = TaskState::Pending;
        run.next_attempt_at = Some(at);
        run.error = Some(error);
        return;
    }
    tracing::info!(task = %name, attempt, error.class = %error.class, "Task failed");
    run.state = TaskState::Failed;
    run.finished_at = Some(now);
    run.next_attempt_at = None;
    let stop_message = format!("task `{name}` failed: {error}");
    run.error = Some(error);
    if s == MAIN {
        request_stop(plan, StopCause::TaskFailed, stop_message);
    }
    plan.failed_task.get_or_insert(name);
}

fn all_terminal(tasks: &[PlannedTask]) -> bool {
    tasks
        .iter()
        .all(|task| task.runs.iter().all(|run| run.state.is_terminal()))
}

fn task_ref(plan: &Plan, (s, t, r): Pos) -> TaskRef {
    let task = &section(plan, s)[t];
    let name = task.run_name(r);
    let attempt = task.runs[r].attempt;
    TaskRef {
        key: idempotency_key(plan.id, &name, attempt),
        task: name,
        task_type: task.task_type.clone(),
        target: task.run_target(r),
        attempt,
    }
}

fn decide(plan: &mut Plan, graph: &Graph, now: Timestamp, out: &mut Out) {
    if let Some(deadline) = plan.deadline
        && now >= deadline
        && !all_terminal(&plan.tasks)
    {
        request_stop(
            plan,
            StopCause::DeadlineExceeded,
            format!("plan deadline {deadline} exceeded"),
        );
        for t in 0..plan.tasks.len() {
            for r in 0..plan.tasks[t].runs.len() {
                let lifecycle = plan.tasks[t].runs[r].lifecycle();
                if lifecycle.in_flight() {
                    out.cancels.push(Effect::CancelTask(task_ref(plan, (MAIN, t, r))));
                }
                let run = &mut plan.tasks[t].runs[r];
                if !run.state.is_terminal() {
                    run.state = TaskState::Cancelled;
                    run.finished_at = Some(now);
                    run.next_attempt_at = None;
                    run.reason = Some("plan deadline exceeded".into());
                }
            }
        }
    }
    for s in [MAIN, FINALLY] {
        for &t in &graph.timed[s] {
            let Some(timeout) = section(plan, s)[t].timeout else {
                continue;
            };
            for r in 0..section(plan, s)[t].runs.len() {
                let run = &section(plan, s)[t].runs[r];
                let Some(started) = run.started_at.filter(|_| run.lifecycle().in_flight()) else {
                    continue;
                };
                if now >= started.saturating_add(timeout) {
                    out.cancels.push(Effect::CancelTask(task_ref(plan, (s, t, r))));
                    let message = format!("attempt {} exceeded its timeout of {timeout}", run.attempt);
                    fail_attempt(plan, (s, t, r), TaskError::new(ErrorClass::Timeout, message), now);
                }
            }
        }
    }
    loop {
        let pass = schedule(plan, graph, now, out);
        if pass.done {
            finish(plan, now, out);
            return;
        }
        if !pass.again {
            out.polls = pass.polls;
            out.wake = pass.wake;
            return;
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Deps {
    Ready,
    Waiting,
    Blocked(usize),
}

/// `summary[t]` = (all runs of task `t` satisfy dependents, some run is Failed or Cancelled).
fn deps_status(
    tasks: &[PlannedTask],
    summary: &[(bool, bool)],
    deps: impl Iterator<Item = Dep>,
    r: usize,
) -> Deps {
    let mut waiting = false;
    for dep in deps {
        if dep.paired {
            match tasks[dep.task].runs[r].state {
                TaskState::Succeeded | TaskState::Skipped => {}
                TaskState::Failed | TaskState::Cancelled => return Deps::Blocked(dep.task),
                TaskState::Pending | TaskState::Running => waiting = true,
            }
        } else {
            let (all, blocked) = summary[dep.task];
            if blocked {
                return Deps::Blocked(dep.task);
            }
            waiting |= !all;
        }
    }
    if waiting { Deps::Waiting } else { Deps::Ready }
}

/// The status of a whole task's dependencies, from their summaries alone.
fn task_deps_status(summary: &[(bool, bool)], deps: impl Iterator<Item = Dep>) -> Deps {
    let mut waiting = false;
    for dep in deps {
        let (all, blocked) = summary[dep.task];
        if blocked {
            return Deps::Blocked(dep.task);
        }
        waiting |= !all;
    }
    if waiting { Deps::Waiting } else { Deps::Ready }
}

/// The result of one scheduling pass.
#[derive(Default)]
struct Pass {
    /// A start failed at once (which may stop the plan or make the run ready again): run
    /// another pass. Skips and cancellations need none, as tasks are visited in topological
    /// order; plain starts never need one.
    again: bool,
    /// Every run of both stages is terminal: the plan is finished.
    done: bool,
    /// Runs in flight to poll (all but those whose start was issued at this very instant).
    polls: Vec<Pos>,
    /// Earliest poll, retry, timeout or deadline.
    wake: Option<Timestamp>,
}

impl Pass {
    fn wake_at(&mut self, at: Timestamp) {
        self.wake = Some(self.wake.map_or(at, |current| current.min(at)));
    }
}

/// One scheduling pass over both stages, in topological order: cancels runs that can no longer
/// start, skips and starts ready runs, and notes what to poll and when to wake up.
fn schedule(plan: &mut Plan, graph: &Graph, now: Timestamp, out: &mut Out) -> Pass {
    let cap = plan
        .max_parallel
        .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
    // Counting costs a scan, so it is only done when there is a limit to enforce.
    let mut in_flight = if cap == usize::MAX {
        0
    } else {
        plan.runs().filter(|v| v.run.lifecycle().in_flight()).count()
    };
    let mut pass = Pass::default();
    let main_done = scan(plan, graph, MAIN, &mut in_flight, cap, now, out, &mut pass);
    if !main_done {
        if let Some(deadline) = plan.deadline {
            pass.wake_at(deadline);
        }
        return pass;
    }
    let finally_done = scan(plan, graph, FINALLY, &mut in_flight, cap, now, out, &mut pass);
    pass.done = finally_done && !pass.again;
    pass
}

/// Schedules the runs of section `s`. Returns whether every run of the section is terminal.
#[allow(
    clippy::too_many_arguments,
    reason = "a private helper of `schedule`, sharing its state"
)]
fn scan(
    plan: &mut Plan,
    graph: &Graph,
    s: usize,
    in_flight: &mut usize,
    cap: usize,
    now: Timestamp,
    out: &mut Out,
    pass: &mut Pass,
) -> bool {
    let plan_poll = plan.poll_interval();
    let mut summary = vec![(true, false); section(plan, s).len()];
    let mut done = true;
    // Only a stopping plan cancels runs whose dependencies are not done (and never in finally).
    let cancels_waiting = s == MAIN && plan.stop.is_some();
    for &t in &graph.order[s] {
        let deps = graph.deps[s].of(t);
        // A dependency that is neither all satisfied nor blocked means this task never started:
        // runs start only once every dependency is satisfied, and satisfaction is permanent.
        // Its summary is known without reading its runs, which keeps `advance` on a large plan
        // from touching the runs of every task that is still waiting.
        if !cancels_waiting
            && deps
                .clone()
                .any(|d| !d.paired && summary[d.task] == (false, false))
        {
            summary[t] = (false, false);
            done = false;
            continue;
        }
        if section(plan, s)[t].runs.is_empty() {
            // A task with no runs (an empty `forEach` list) is satisfied once its dependencies
            // are, so the tasks after it still wait for the tasks before it.
            summary[t] = match task_deps_status(&summary, deps) {
                Deps::Ready => (true, false),
                Deps::Waiting => (false, false),
                Deps::Blocked(_) => (false, true),
            };
            done &= summary[t].0 || summary[t].1;
            continue;
        }
        let (mut all, mut blocked) = (true, false);
        for r in 0..section(plan, s)[t].runs.len() {
            if section(plan, s)[t].runs[r].lifecycle() == Lifecycle::Pending {
                schedule_run(plan, graph, (s, t, r), &summary, in_flight, cap, now, out, pass);
            }
            let task = &section(plan, s)[t];
            let run = &task.runs[r];
            match run.lifecycle() {
                lifecycle @ (Lifecycle::Starting | Lifecycle::Running) => {
                    pass.wake_at(now.saturating_add(task.poll_interval.unwrap_or(plan_poll)));
                    if let (Some(timeout), Some(started)) = (task.timeout, run.started_at) {
                        pass.wake_at(started.saturating_add(timeout));
                    }
                    if !(lifecycle == Lifecycle::Starting && run.started_at == Some(now)) {
                        pass.polls.push((s, t, r));
                    }
                }
                Lifecycle::Pending => {
                    if let Some(at) = run.next_attempt_at.filter(|at| *at > now) {
                        pass.wake_at(at);
                    }
                }
                _ => {}
            }
            all &= run.state.satisfies_dependents();
            blocked |= matches!(run.state, TaskState::Failed | TaskState::Cancelled);
            done &= run.state.is_terminal();
        }
        summary[t] = (all, blocked);
    }
    done
}

/// Cancels, skips or starts the Pending run at `pos` if its time has come.
#[allow(
    clippy::too_many_arguments,
    reason = "a private helper of `scan`, sharing its state"
)]
fn schedule_run(
    plan: &mut Plan,
    graph: &Graph,
    (s, t, r): Pos,
    summary: &[(bool, bool)],
    in_flight: &mut usize,
    cap: usize,
    now: Timestamp,
    out: &mut Out,
    pass: &mut Pass,
) {
    let deps = deps_status(section(plan, s), summary, graph.deps[s].of(t), r);
    let reason = match (&plan.stop, deps) {
        (Some(stop), _) if s == MAIN => Some(format!("not started: {}", stop.message)),
        (_, Deps::Blocked(dep)) => Some(format!(
            "not started: dependency `{}` did not succeed",
            section(plan, s)[dep].name
        )),
        _ => None,
    };
    let run = &mut section_mut(plan, s)[t].runs[r];
    if let Some(reason) = reason {
        run.state = TaskState::Cancelled;
        run.finished_at = Some(now);
        run.next_attempt_at = None;
        run.reason = Some(truncate(reason, MAX_ERROR_MESSAGE_BYTES));
        return;
    }
    if deps != Deps::Ready || run.next_attempt_at.is_some_and(|at| at > now) {
        return;
    }
    if run.skip {
        run.state = TaskState::Skipped;
        run.finished_at = Some(now);
        return;
    }
    if *in_flight >= cap {
        return;
    }
    if start(plan, graph, (s, t, r), now, out) {
        *in_flight += 1;
    } else {
        pass.again = true;
    }
}

/// Starts the next attempt of the run at `pos`. Returns whether it is now in flight (false when
/// its params could not be resolved, which fails the attempt with class `Invalid`).
fn start(plan: &mut Plan, graph: &Graph, pos: Pos, now: Timestamp, out: &mut Out) -> bool {
    let (s, t, r) = pos;
    {
        let run = &mut section_mut(plan, s)[t].runs[r];
        run.attempt += 1;
        run.started_at = Some(now);
        run.next_attempt_at = None;
    }
    match resolve_params(plan, graph, pos) {
        Ok(params) => {
            let task = task_ref(plan, pos);
            tracing::info!(task = %task.task, attempt = task.attempt, task.kind = %task.task_type, "Task started");
            out.starts.push(Effect::StartTask {
                task,
                params,
                timeout: section(plan, s)[t].timeout,
            });
            true
        }
        Err(message) => {
            fail_attempt(plan, pos, TaskError::new(ErrorClass::Invalid, message), now);
            false
        }
    }
}

/// The params of run `run` (`task` or `task[item]`) with `${ item }` and output references substituted, as
/// its `StartTask` effect carried them: for the operator's `PollTask` and `CancelTask` calls, which may need
/// them after a restart. `None` for an unknown run; `Some(Err)` when a reference cannot be resolved.
pub fn run_params(plan: &mut Plan, run: &str) -> Option<Result<Arc<Value>, String>> {
    let graph = graph(plan);
    let (name, item) = split_run_name(run);
    let &(s, t) = graph.names.get(name)?;
    let r = section(plan, s)[t]
        .runs
        .iter()
        .position(|x| x.item.as_deref() == item)?;
    Some(resolve_params(plan, &graph, (s, t, r)))
}

/// The run's params with `${ item }` and output references substituted.
fn resolve_params(plan: &Plan, graph: &Graph, (s, t, r): Pos) -> Result<Arc<Value>, String> {
    let tasks = section(plan, s);
    let task = &tasks[t];
    if !graph.dynamic[s][t] {
        return Ok(Arc::clone(&task.params));
    }
    let mut params = Value::clone(&task.params);
    let item = task.runs[r].item.as_deref();
    let mut resolve = |reference: &Ref<'_>| -> Result<Option<Value>, String> {
        match reference {
            Ref::Item => item
                .map(|i| Some(Value::String(i.to_owned())))
                .ok_or_else(|| "no item for `${ item }`".into()),
            Ref::Param { name, .. } => Err(format!(
                "workflow param `{name}` was not substituted at compile time"
            )),
            Ref::Output {
                task: upstream,
                all,
                key,
                path,
            } => {
                let Some(&(us, ut)) = graph.names.get(*upstream).filter(|(us, _)| *us == s) else {
                    return Err(format!("no task `{upstream}` in this stage"));
                };
                debug_assert_eq!(us, s);
                let up = &tasks[ut];
                let read = |run: &TaskRun| -> Result<Value, String> {
                    match run.state {
                        TaskState::Skipped => Ok(Value::Null),
                        TaskState::Succeeded => {
                            let outputs = run.outputs.as_ref().unwrap_or(&Value::Null);
                            outputs
                                .get(*key)
                                .and_then(|value| lookup(value, path))
                                .cloned()
                                .ok_or_else(|| format!("task `{upstream}` finished without output `{key}`"))
                        }
                        other => Err(format!("task `{upstream}` is {other:?}, not Succeeded")),
                    }
                };
                if *all {
                    return up
                        .runs
                        .iter()
                        .map(read)
                        .collect::<Result<Vec<_>, _>>()
                        .map(|v| Some(Value::Array(v)));
                }
                let index = if up.for_each.is_some() { r } else { 0 };
                let run = up
                    .runs
                    .get(index)
                    .ok_or_else(|| format!("task `{upstream}` has no run {index}"))?;
                read(run).map(Some)
            }
        }
    };
    rewrite(&mut params, &mut String::new(), &mut resolve)
        .map_err(|(pointer, message)| format!("cannot resolve params{pointer}: {message}"))?;
    Ok(Arc::new(params))
}

fn contains_reference(value: &Value) -> bool {
    match value {
        Value::String(s) => has_reference(s),
        Value::Array(items) => items.iter().any(contains_reference),
        Value::Object(map) => map.values().any(contains_reference),
        _ => false,
    }
}

fn finish(plan: &mut Plan, now: Timestamp, out: &mut Out) {
    let mut phase = plan
        .stop
        .as_ref()
        .map_or(PlanPhase::Succeeded, |stop| stop.cause.phase());
    let mut message = plan.stop.as_ref().map(|stop| stop.message.clone());
    let failed_finally = plan
        .runs()
        .find(|v| v.finally && matches!(v.run.state, TaskState::Failed | TaskState::Cancelled))
        .map(|view| view.name());
    if phase == PlanPhase::Succeeded
        && let Some(name) = failed_finally
    {
        message = Some(format!("finally task `{name}` did not succeed"));
        plan.failed_task.get_or_insert(name);
        phase = PlanPhase::Failed;
    }
    plan.phase = phase;
    plan.finished_at = Some(now);
    plan.message.clone_from(&message);
    tracing::info!(workflow = %plan.workflow, plan.id = %plan.id, phase = ?phase, "Plan finished");
    let effect = if phase == PlanPhase::Succeeded {
        plan.on_success.clone()
    } else {
        plan.on_failure.clone()
    };
    out.finished = Some(Effect::PlanFinished {
        phase,
        message,
        failed_task: plan.failed_task.clone(),
        effect,
    });
}

fn effects(plan: &Plan, now: Timestamp, mut out: Out) -> Vec<Effect> {
    let mut effects = std::mem::take(&mut out.cancels);
    effects.append(&mut out.starts);
    if let Some(finished) = out.finished {
        effects.push(finished);
        return effects;
    }
    effects.extend(out.polls.iter().map(|&pos| Effect::PollTask(task_ref(plan, pos))));
    let poll_at = now.saturating_add(plan.poll_interval());
    let at = out
        .wake
        .unwrap_or(poll_at)
        .max(now.saturating_add(Duration::from_millis(1)));
    effects.push(Effect::RequeueAt(at));
    effects
}

#[cfg(test)]
mod tests;
