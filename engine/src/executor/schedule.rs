//! Scheduling: what is due at `now` ([`decide`]: the plan deadline, attempt timeouts), then
//! scheduling passes in topological order that cancel runs that can no longer start, skip
//! guarded runs and start ready ones up to `maxParallel`, and collect what to poll and when to
//! wake up; and finishing the plan once every run is terminal ([`finish`]).

use super::graph::{Dep, Graph};
use super::params::resolve_params;
use super::transition::{Lifecycle, fail_attempt, request_stop};
use super::{Effect, FINALLY, MAIN, Out, Pos, section, section_mut, task_ref};
use crate::plan::{
    ErrorClass, MAX_ERROR_MESSAGE_BYTES, Plan, PlanPhase, PlannedTask, StopCause, TaskError, TaskState,
    truncate,
};
use crate::time::Timestamp;

fn all_terminal(tasks: &[PlannedTask]) -> bool {
    tasks
        .iter()
        .all(|task| task.runs.iter().all(|run| run.state.is_terminal()))
}

pub(super) fn decide(plan: &mut Plan, graph: &Graph, now: Timestamp, out: &mut Out) {
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

pub(super) fn finish(plan: &mut Plan, now: Timestamp, out: &mut Out) {
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
