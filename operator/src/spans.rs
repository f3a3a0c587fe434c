//! Which spans a reconcile adds to a plan's trace: the task attempts that ended between the journal as read
//! (`before`) and as written (`after`), and the plan's root span once it finished. Pure; the operator exports
//! the result only after the status write that persisted `after` succeeded, so an attempt's span is sent once
//! (a lost write is redone by the next reconcile, from the same `before`).

use sei_engine::{Plan, PlannedTask, TaskRun, TaskState, Timestamp};
use sei_observability::fields;
use sei_observability::journal::JournalSpan;
use sei_observability::trace_context::{TraceParent, derive_span_id};

fn outcome(run: &TaskRun, ended_attempt: u32) -> (String, Option<String>) {
    if run.attempt == ended_attempt {
        match run.state {
            TaskState::Succeeded => return ("succeeded".into(), None),
            TaskState::Cancelled => {
                return (
                    "cancelled".into(),
                    Some(run.reason.clone().unwrap_or_else(|| "cancelled".into())),
                );
            }
            _ => {}
        }
    }
    let error = run
        .error
        .as_ref()
        .map_or_else(|| "attempt failed".to_owned(), ToString::to_string);
    ("failed".into(), Some(error))
}

#[allow(clippy::too_many_arguments)] // one span's worth of journal facts
fn attempt_span(
    plan: &Plan,
    root: &TraceParent,
    task: &PlannedTask,
    index: usize,
    run: &TaskRun,
    attempt: u32,
    start: Timestamp,
    end: Timestamp,
) -> JournalSpan {
    let run_name = task.run_name(index);
    let run_name = run_name.as_str();
    let (outcome, error) = outcome(run, attempt);
    let mut attributes = vec![
        (fields::WORKFLOW_NAME, plan.workflow.clone()),
        (fields::WORKFLOW_ID, plan.id.to_string()),
        (fields::TASK_NAME, run_name.to_owned()),
        (fields::TASK_TYPE, task.task_type.clone()),
        (fields::TASK_ATTEMPT, attempt.to_string()),
        (
            fields::TASK_IDEMPOTENCY_KEY,
            sei_engine::idempotency_key(plan.id, run_name, attempt).to_string(),
        ),
        (fields::OUTCOME, outcome),
    ];
    if let Some(target) = task.run_target(index) {
        attributes.push((fields::TASK_TARGET, target));
    }
    if let Some(e) = run.error.as_ref().filter(|_| error.is_some()) {
        attributes.push((fields::ERROR_CLASS, e.class.as_str().to_owned()));
    }
    JournalSpan {
        trace_id: root.trace_id,
        span_id: derive_span_id(plan.id, run_name, attempt),
        parent: Some(root.span_id),
        name: format!("task {}", task.task_type),
        start_ms: start.unix_millis(),
        end_ms: end.unix_millis(),
        attributes,
        error,
    }
}

/// Each task of `after` with the same task in `before`. Tasks never move after compiling, so the task at the
/// same position is the one when its name matches (no search: a 1,000-task plan would compare names a million
/// times); a name search otherwise.
fn with_prior<'a>(
    before: Option<&'a Plan>,
    after: &'a Plan,
) -> impl Iterator<Item = (&'a PlannedTask, Option<&'a PlannedTask>)> {
    let sections = |p: &'a Plan| [p.tasks.as_slice(), p.finally.as_slice()];
    sections(after)
        .into_iter()
        .enumerate()
        .flat_map(move |(s, tasks)| {
            tasks.iter().enumerate().map(move |(t, task)| {
                let prior = before.and_then(|b| {
                    (sections(b)[s].get(t))
                        .filter(|p| p.name == task.name)
                        .or_else(|| b.tasks.iter().chain(&b.finally).find(|p| p.name == task.name))
                });
                (task, prior)
            })
        })
}

/// The attempts of one run that ended between `prior` (the run as read) and `run` (as written), with their
/// start and end; `now` stands in for a time the journal no longer holds.
fn ended_attempts(
    prior: Option<&TaskRun>,
    run: &TaskRun,
    now: Timestamp,
) -> Vec<(u32, Timestamp, Timestamp)> {
    let (b_attempt, b_start) = prior.map_or((0, None), |p| {
        (p.attempt, p.started_at.filter(|_| p.lifecycle().in_flight()))
    });
    // A skipped run had no attempt: it ends no span.
    let ended = |state: TaskState| {
        matches!(
            state,
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled
        )
    };
    let terminal_now = run.attempt > 0 && ended(run.state) && prior.is_none_or(|p| !ended(p.state));
    // Every attempt from the one in flight before (or the first new one) up to the last that ended.
    let first = if b_start.is_some() {
        b_attempt
    } else {
        b_attempt + 1
    };
    // The attempt counter moves on when the next attempt starts: a run waiting for its retry still carries
    // the number of the attempt that just failed.
    let in_flight_now = run.lifecycle().in_flight();
    let last = if terminal_now || (!in_flight_now && !run.state.is_terminal()) {
        run.attempt
    } else if in_flight_now {
        run.attempt.saturating_sub(1)
    } else {
        0
    };
    (first.max(1)..=last)
        .map(|attempt| {
            let start = match (attempt == b_attempt, b_start) {
                (true, Some(s)) => s,
                _ if attempt == run.attempt => run.started_at.unwrap_or(now),
                _ => now,
            };
            let end = if attempt == run.attempt {
                run.finished_at.unwrap_or(now)
            } else {
                now
            };
            (attempt, start, end)
        })
        .collect()
}

/// The plan's root span, once `after` finished and `before` had not.
fn plan_span(before: Option<&Plan>, after: &Plan, root: &TraceParent, now: Timestamp) -> Option<JournalSpan> {
    if !after.phase.is_terminal() || before.is_some_and(|b| b.phase.is_terminal()) {
        return None;
    }
    let error = (after.phase != sei_engine::PlanPhase::Succeeded).then(|| {
        after
            .message
            .clone()
            .unwrap_or_else(|| format!("{:?}", after.phase))
    });
    let mut attributes = vec![
        (fields::WORKFLOW_NAME, after.workflow.clone()),
        (fields::WORKFLOW_ID, after.id.to_string()),
        (fields::WORKFLOW_VERSION, after.version.clone()),
        (fields::OUTCOME, format!("{:?}", after.phase).to_ascii_lowercase()),
    ];
    if let Some(task) = &after.failed_task {
        attributes.push((fields::TASK_NAME, task.clone()));
    }
    Some(JournalSpan {
        trace_id: root.trace_id,
        span_id: root.span_id,
        parent: None,
        name: format!("plan {}", after.workflow),
        start_ms: after.started_at.unix_millis(),
        end_ms: after.finished_at.unwrap_or(now).unix_millis(),
        attributes,
        error,
    })
}

/// The spans that the change from `before` to `after` completes; `now` stands in for times the journal no
/// longer holds (the start of an attempt that started and failed within one reconcile).
#[must_use]
pub fn ended(before: Option<&Plan>, after: &Plan, now: Timestamp) -> Vec<JournalSpan> {
    let Some(root) = after.traceparent.as_deref().and_then(TraceParent::parse) else {
        return Vec::new();
    };
    let mut spans = Vec::new();
    for (task, prior) in with_prior(before, after) {
        for (r, run) in task.runs.iter().enumerate() {
            let prior_run = prior.and_then(|t| t.runs.get(r));
            for (attempt, start, end) in ended_attempts(prior_run, run, now) {
                spans.push(attempt_span(after, &root, task, r, run, attempt, start, end));
            }
        }
    }
    spans.extend(plan_span(before, after, &root, now));
    spans
}

/// After a successful status write: task duration metrics for the attempts that ended, and their spans (with
/// the plan's root span once it finished) exported when an OTLP endpoint is configured.
pub async fn record(ctx: &crate::context::Context, before: Option<&Plan>, after: &Plan) {
    for (task, prior) in with_prior(before, after) {
        for (r, run) in task.runs.iter().enumerate() {
            let from = prior.and_then(|t| t.runs.get(r)).map_or(0, |p| p.attempt);
            for attempt in from + 1..=run.attempt {
                ctx.metrics
                    .task_started(&after.workflow, &task.task_type, attempt);
            }
        }
    }
    let spans = ended(before, after, crate::clock::now());
    for span in spans.iter().filter(|s| s.parent.is_some()) {
        let attr = |key: &str| {
            span.attributes
                .iter()
                .find(|(k, _)| *k == key)
                .map_or("", |(_, v)| v.as_str())
        };
        ctx.metrics.task_finished(
            after,
            attr(fields::TASK_TYPE),
            attr(fields::OUTCOME),
            span.end_ms - span.start_ms,
        );
    }
    if let Some(exporter) = &ctx.journal {
        exporter.export(spans).await;
    }
}
