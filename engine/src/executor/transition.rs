//! The run lifecycle and the transition table: what an [`Observation`] does to the run it is
//! about ([`transition`]), and applying it to the journal ([`apply`]): acknowledging a start,
//! recording a success, failing an attempt (a retry at `nextAttemptAt`, or the run fails and
//! the plan is asked to stop), re-issuing a start that never arrived.

use serde_json::Value;

use super::graph::Graph;
use super::{Event, EventKind, MAIN, Observation, Pos, section, section_mut};
use crate::plan::{
    ErrorClass, MAX_ERROR_MESSAGE_BYTES, MAX_OUTPUT_BYTES, Plan, Stop, StopCause, TaskError, TaskRun,
    TaskState, split_run_name, truncate,
};
use crate::time::Timestamp;

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

pub(super) fn apply(plan: &mut Plan, graph: &Graph, observation: &Observation, now: Timestamp) {
    let (name, item) = split_run_name(&observation.task);
    let Some((s, t)) = graph.find(plan, name) else {
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

pub(super) fn request_stop(plan: &mut Plan, cause: StopCause, message: String) {
    if plan.stop.is_none() {
        plan.stop = Some(Stop {
            cause,
            message: truncate(message, MAX_ERROR_MESSAGE_BYTES),
        });
    }
}

/// The attempt in flight at `pos` failed: schedule a retry or fail the run.
pub(super) fn fail_attempt(plan: &mut Plan, (s, t, r): Pos, error: TaskError, now: Timestamp) {
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
