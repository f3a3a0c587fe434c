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
//!
//! # Modules
//! - `transition`: the run lifecycle and the transition table, and applying an observation to
//!   the journal (success, a failed attempt and its retry, a stop request).
//! - `graph`: the derived index of a plan's task graph (dependencies, topological order, name
//!   lookup), built on the first `advance` after the plan is read and cached in the plan.
//! - `schedule`: deciding what is due (deadline, timeouts), the scheduling pass that cancels,
//!   skips and starts runs, and finishing the plan.
//! - `params`: resolving a run's params (`${ item }`, upstream outputs) when it starts.
//!
//! This module holds the protocol types ([`Observation`], [`Event`], [`Effect`]) and
//! [`advance`] itself, which ties them together.

mod graph;
mod params;
mod schedule;
mod transition;

use std::sync::Arc;

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::plan::{
    MAX_PLAN_BYTES, Plan, PlanPhase, PlannedTask, Stop, StopCause, TaskError, TaskState, idempotency_key,
};
use crate::time::{Duration, Timestamp};

pub(crate) use graph::Index;
use graph::graph;
pub use params::run_params;
use schedule::{decide, finish};
use transition::apply;
pub use transition::{Lifecycle, Transition, transition};

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

pub(super) const MAIN: usize = 0;
pub(super) const FINALLY: usize = 1;

pub(super) fn section(plan: &Plan, s: usize) -> &[PlannedTask] {
    if s == MAIN { &plan.tasks } else { &plan.finally }
}

pub(super) fn section_mut(plan: &mut Plan, s: usize) -> &mut [PlannedTask] {
    if s == MAIN {
        &mut plan.tasks
    } else {
        &mut plan.finally
    }
}

/// A position of a run: (section, task, run).
pub(super) type Pos = (usize, usize, usize);

#[derive(Default)]
pub(super) struct Out {
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

pub(super) fn task_ref(plan: &Plan, (s, t, r): Pos) -> TaskRef {
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
