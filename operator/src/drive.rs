//! Drives an active plan within one reconcile: `advance` (pure) -> perform the effects (I/O) -> feed the
//! observations back, while that makes immediate progress. Holds no task logic: every effect goes to the
//! task type named in it, through the registry.

use std::collections::HashSet;
use std::sync::Arc;

use futures::future::join_all;
use sei_engine::{Effect, Observation, Plan, PlanPhase, TaskError, TaskRef, Timestamp};
use sei_observability::trace_context::{TraceParent, derive_span_id};
use sei_tasks::task::{Context as TaskContext, Invocation, Outcome, Registry, StatusSink};
use serde_json::Value;

use crate::clock::now;

/// Rounds of advance -> perform within one reconcile, at most (a safety bound; progress normally stops
/// after a few rounds, when every in-flight task answered "still running").
const MAX_ROUNDS: usize = 64;

/// How long a reconcile waits, once per attempt it started, before polling that attempt again when its first
/// poll (right after the start) said "still running". Sidecar tasks run in the background of the call that
/// submits them, so an immediate poll almost never sees even a task of a few milliseconds done; one more poll
/// shortly after lets a fast task finish in the reconcile that started it, instead of costing a status write,
/// a watch event and a reconcile per task (measured at 1,000 nodes with instant tasks: 6.4 status writes per
/// node before, 3.0 after). A slow task costs this much more time in the reconcile's slot, once.
const FIRST_POLL_GRACE: std::time::Duration = std::time::Duration::from_millis(25);

/// The object a plan belongs to.
#[derive(Clone, Debug)]
pub struct Owner {
    /// Its kind (`SeiNode`, `SeiNodeDeployment`).
    pub kind: &'static str,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The object as read at the start of the reconcile.
    pub object: Arc<Value>,
}

/// What driving a plan gave.
#[derive(Debug, Default)]
pub struct Driven {
    /// When to call `advance` again (absent once the plan finished).
    pub requeue_at: Option<Timestamp>,
    /// Set on the reconcile that finished the plan: (phase, message, failed task, onSuccess/onFailure effect).
    pub finished: Option<Finished>,
    /// Task attempts started in this reconcile.
    pub started: Vec<TaskRef>,
}

/// How a plan ended.
#[derive(Clone, Debug)]
pub struct Finished {
    /// The final phase.
    pub phase: PlanPhase,
    /// Why, when not Succeeded.
    pub message: Option<String>,
    /// The run that failed first, if any.
    pub failed_task: Option<String>,
    /// The definition's onSuccess / onFailure effect.
    pub effect: Option<Value>,
}

/// The `traceparent` an attempt carries: the plan's trace, the attempt's deterministic span id.
fn attempt_traceparent(plan: &Plan, task: &TaskRef) -> Option<String> {
    let root = plan.traceparent.as_deref().and_then(TraceParent::parse)?;
    Some(
        root.with_span(derive_span_id(plan.id, &task.task, task.attempt))
            .to_string(),
    )
}

fn invocation(owner: &Owner, plan: &Plan, task: &TaskRef, params: Value, sink: &StatusSink) -> Invocation {
    Invocation {
        namespace: owner.namespace.clone(),
        owner_kind: owner.kind.to_owned(),
        owner: owner.name.clone(),
        traceparent: attempt_traceparent(plan, task),
        task: task.clone(),
        params,
        status: sink.clone(),
        owner_object: Arc::clone(&owner.object),
    }
}

enum Call {
    Start(TaskRef, Value),
    Poll(TaskRef, Value),
    Cancel(TaskRef, Value),
}

/// The params of the run an effect refers to, for polls and cancels, resolved as its start's were (run-time
/// references included, so a task that reads its params when polled sees the same values after a restart).
fn run_params(plan: &mut Plan, task: &TaskRef) -> Value {
    match sei_engine::run_params(plan, &task.task) {
        Some(Ok(params)) => Arc::unwrap_or_clone(params),
        Some(Err(reason)) => {
            tracing::debug!(task = %task.task, %reason, "Params of a polled run do not resolve");
            Value::Null
        }
        None => Value::Null,
    }
}

async fn perform(
    cx: &TaskContext,
    registry: &Registry,
    owner: &Owner,
    plan: &Plan,
    sink: &StatusSink,
    call: Call,
) -> Option<Observation> {
    let (task, params, poll) = match &call {
        Call::Start(t, p) => (t, p.clone(), false),
        Call::Poll(t, p) | Call::Cancel(t, p) => (t, p.clone(), true),
    };
    let Some(implementation) = registry.get(&task.task_type) else {
        // The compiler refuses unknown types; a journal from another operator version may still name one.
        let error = TaskError::new(
            sei_engine::ErrorClass::Invalid,
            format!("unknown task type {}", task.task_type),
        );
        let event = if poll {
            sei_engine::Event::Failed(error)
        } else {
            sei_engine::Event::StartRejected(error)
        };
        return Some(Observation::of(task, event));
    };
    let inv = invocation(owner, plan, task, params, sink);
    let outcome = match call {
        Call::Start(..) => {
            let outcome = implementation.start(cx, &inv).await;
            crate::failpoints::crash_point("drive::after-start");
            outcome
        }
        Call::Poll(..) => {
            let outcome = implementation.poll(cx, &inv).await;
            crate::failpoints::crash_point("drive::after-poll");
            outcome
        }
        Call::Cancel(..) => {
            implementation.cancel(cx, &inv).await;
            return None;
        }
    };
    if let Outcome::Unavailable(why) = &outcome {
        tracing::debug!(task = %task.task, attempt = task.attempt, reason = %why, "Task not reachable; will poll again");
    }
    outcome.into_event(poll).map(|event| Observation::of(task, event))
}

/// Advances `plan` as far as it goes now. The caller persists the plan (one status write) afterwards.
pub async fn drive(
    cx: &TaskContext,
    registry: &Registry,
    owner: &Owner,
    plan: &mut Plan,
    sink: &StatusSink,
) -> Driven {
    let mut driven = Driven::default();
    let mut observations: Vec<Observation> = Vec::new();
    let mut rounds = Rounds::default();
    for _ in 0..MAX_ROUNDS {
        let effects = sei_engine::advance(plan, &observations, now());
        observations.clear();
        let calls = rounds.calls(effects, plan, &mut driven);
        if calls.is_empty() {
            // Nothing more to do now but the second looks, if any.
            if !rounds.grant_second_looks() {
                break;
            }
            tokio::time::sleep(FIRST_POLL_GRACE).await;
            continue;
        }
        let polled: Vec<Option<Attempt>> = calls.iter().map(Call::polled).collect();
        let snapshot = plan.clone();
        let results = join_all(
            calls
                .into_iter()
                .map(|call| perform(cx, registry, owner, &snapshot, sink, call)),
        )
        .await;
        rounds.note_still_running(polled, &results);
        observations.extend(results.into_iter().flatten());
    }
    if !observations.is_empty() {
        // Record what the last round learned (its effects are due at the next requeue).
        for effect in sei_engine::advance(plan, &observations, now()) {
            driven.record(effect);
        }
    }
    driven
}

/// An attempt: run name and attempt number.
type Attempt = (String, u32);

impl Call {
    /// The attempt this call polls, if it is a poll.
    fn polled(&self) -> Option<Attempt> {
        match self {
            Self::Poll(t, _) => Some((t.task.clone(), t.attempt)),
            Self::Start(..) | Self::Cancel(..) => None,
        }
    }
}

/// What the rounds of one reconcile remember about the attempts they touched.
#[derive(Default)]
struct Rounds {
    /// Attempts already polled in this reconcile: polling them again right away learns nothing. An attempt
    /// started in this reconcile is polled once right after (a fast task then finishes within the same
    /// reconcile, saving a status write and a requeue per task).
    touched: HashSet<Attempt>,
    /// Attempts started in this reconcile.
    started: HashSet<Attempt>,
    /// Those of them already given their second look.
    graced: HashSet<Attempt>,
    /// Those of them whose first poll said "still running", waiting for their second look.
    second_look: Vec<Attempt>,
}

impl Rounds {
    /// The calls an `advance`'s effects ask for (the `RequeueAt` and `PlanFinished` ones go to `driven`).
    fn calls(&mut self, effects: Vec<Effect>, plan: &mut Plan, driven: &mut Driven) -> Vec<Call> {
        let mut calls = Vec::new();
        let effects: Vec<Effect> = effects.into_iter().filter_map(|e| driven.record(e)).collect();
        for effect in effects {
            match effect {
                Effect::StartTask { task, params, .. } => {
                    driven.started.push(task.clone());
                    self.started.insert((task.task.clone(), task.attempt));
                    calls.push(Call::Start(task, Arc::unwrap_or_clone(params)));
                }
                Effect::PollTask(task) => {
                    if self.touched.insert((task.task.clone(), task.attempt)) {
                        let params = run_params(plan, &task);
                        calls.push(Call::Poll(task, params));
                    }
                }
                Effect::CancelTask(task) => {
                    let params = run_params(plan, &task);
                    calls.push(Call::Cancel(task, params));
                }
                Effect::PlanFinished { .. } | Effect::RequeueAt(_) => {}
            }
        }
        calls
    }

    /// Notes the attempts started here whose first poll said "still running" (or did not answer).
    fn note_still_running(&mut self, polled: Vec<Option<Attempt>>, results: &[Option<Observation>]) {
        for (key, result) in polled.into_iter().zip(results) {
            let still_running = result
                .as_ref()
                .is_none_or(|o| matches!(o.event, sei_engine::Event::Running));
            if let Some(k) =
                key.filter(|k| still_running && self.started.contains(k) && !self.graced.contains(k))
            {
                self.second_look.push(k);
            }
        }
    }

    /// Makes the attempts waiting for their second look pollable again; false when there are none.
    fn grant_second_looks(&mut self) -> bool {
        if self.second_look.is_empty() {
            return false;
        }
        for key in self.second_look.drain(..) {
            self.touched.remove(&key);
            self.graced.insert(key);
        }
        true
    }
}

impl Driven {
    /// Records a `RequeueAt` or `PlanFinished` effect (a finished plan has no requeue); hands back the others,
    /// which are calls to perform.
    fn record(&mut self, effect: Effect) -> Option<Effect> {
        match effect {
            Effect::RequeueAt(at) => {
                if self.finished.is_none() {
                    self.requeue_at = Some(at);
                }
                None
            }
            Effect::PlanFinished {
                phase,
                message,
                failed_task,
                effect,
            } => {
                self.finished = Some(Finished {
                    phase,
                    message,
                    failed_task,
                    effect,
                });
                self.requeue_at = None;
                None
            }
            other => Some(other),
        }
    }
}

/// Keeps the journal under the engine's hard cap before the status write ([`Plan::enforce_size_cap`]): finished
/// runs are compacted, and a plan still over the cap ends `Failed` with the reason in its message (recorded in
/// `driven.finished` like any other end) instead of failing its status writes forever. Call it after copying
/// the journal for the spans (compaction drops the timestamps of settled runs). The cancels it asks for are
/// not sent: the runs in flight are abandoned, as at a deadline the sidecar would time them out anyway.
pub fn bound(plan: &mut Plan, driven: &mut Driven) {
    let was_finished = driven.finished.is_some();
    for effect in plan.enforce_size_cap(now()) {
        driven.record(effect);
    }
    if !was_finished && let Some(finished) = &driven.finished {
        tracing::warn!(plan = %plan.id, reason = finished.message.as_deref().unwrap_or_default(), "Journal over its size cap; the plan fails");
    }
}

/// The Kubernetes Events a drive warrants: one per retried attempt started, and one when the plan finished
/// (`message` says why it did not succeed). Both controllers publish them after their status write.
#[must_use]
pub fn events(
    plan: &Plan,
    driven: &Driven,
    message: &str,
) -> Vec<(kube::runtime::events::EventType, &'static str, String)> {
    use kube::runtime::events::EventType;
    let mut events: Vec<_> = driven
        .started
        .iter()
        .filter(|t| t.attempt > 1)
        .map(|t| {
            (
                EventType::Warning,
                "TaskRetried",
                format!("task {} attempt {} started", t.task, t.attempt),
            )
        })
        .collect();
    if let Some(finished) = &driven.finished {
        let (kind, reason) = match finished.phase {
            PlanPhase::Succeeded => (EventType::Normal, "PlanSucceeded"),
            _ => (EventType::Warning, "PlanFailed"),
        };
        let note = format!(
            "plan {} ({}) {:?} {message}",
            plan.id, plan.workflow, finished.phase
        );
        events.push((kind, reason, note.trim_end().to_owned()));
    }
    events
}
