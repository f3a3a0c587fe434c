//! WorkflowRuns: workflows run on demand against SeiNodes or SeiNodeDeployments (the upstream SeiNodeTask's
//! successor).
//!
//! A run does not execute anything itself: for each target it waits until the target has no active plan,
//! then compiles the workflow against the target (its params from `spec.params`, the rest from their CEL) and
//! writes the plan into the **target's** `status.plan`, guarded by the target's resourceVersion, so the
//! target's own controller drives it (checkpointed there, one trace) exactly as a drift-triggered plan.
//! The run mirrors the outcome from the target's status (the active plan, then `planHistory`).
//!
//! Durability: the plan id is recorded in the run's status *before* the plan is written into the target; a
//! restart between the two writes finds the id, sees that the target does not know it, and writes the plan
//! again with the same id (so at most one plan per target and run). Deleting a run that is still going
//! cancels its plans (`sei.io/cancel-plan` on each target; in-flight tasks finish) before its finalizer is
//! released. A finished run is deleted `ttlSecondsAfterFinished` after `completionTime`.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource as _, ResourceExt};
use sei_crds::labels::CANCEL_PLAN;
use sei_crds::{
    RunPhase, RunTargetKind, RunTargetStatus, SeiNode, SeiNodeDeployment, WorkflowRun, WorkflowRunStatus,
};
use sei_engine::{Plan, PlanPhase, PlanSummary};
use sei_workflows::Bindings;
use serde_json::json;

use crate::context::Context;
use crate::error::Error;

/// Finalizer of WorkflowRuns: a deleted run cancels its plans first.
pub const FINALIZER: &str = "workflowruns.sei.io";
/// How often a run that waits or runs looks at its targets again (their status changes do not wake it).
const POLL: Duration = Duration::from_secs(1);

/// A run's target as read now.
enum Target {
    Node(SeiNode),
    Fleet(SeiNodeDeployment),
}

impl Target {
    fn resource_version(&self) -> Option<String> {
        match self {
            Self::Node(n) => n.resource_version(),
            Self::Fleet(d) => d.resource_version(),
        }
    }

    fn plan(&self) -> Option<&Plan> {
        match self {
            Self::Node(n) => n.status.as_ref().and_then(|s| s.plan.as_ref()),
            Self::Fleet(d) => d.status.as_ref().and_then(|s| s.plan.as_ref()),
        }
    }

    fn history(&self) -> &[PlanSummary] {
        match self {
            Self::Node(n) => n.status.as_ref().map_or(&[], |s| &s.plan_history),
            Self::Fleet(d) => d.status.as_ref().map_or(&[], |s| &s.plan_history),
        }
    }

    async fn bindings(&self, ctx: &Context) -> Result<Bindings, Error> {
        match self {
            Self::Node(n) => crate::node::bindings(n, ctx),
            Self::Fleet(d) => crate::deployment::bindings(d, ctx).await,
        }
    }
}

async fn read_target(
    ctx: &Context,
    kind: RunTargetKind,
    ns: &str,
    name: &str,
) -> Result<Option<Target>, Error> {
    Ok(match kind {
        RunTargetKind::SeiNode => Api::<SeiNode>::namespaced(ctx.client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(Error::Kube)?
            .map(Target::Node),
        RunTargetKind::SeiNodeDeployment => Api::<SeiNodeDeployment>::namespaced(ctx.client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(Error::Kube)?
            .map(Target::Fleet),
    })
}

/// A merge patch of a run's target (of its status subresource when `status`), whatever its kind.
async fn patch_target(
    ctx: &Context,
    kind: RunTargetKind,
    ns: &str,
    name: &str,
    patch: &serde_json::Value,
    status: bool,
) -> Result<(), kube::Error> {
    let resource = match kind {
        RunTargetKind::SeiNode => kube::core::ApiResource::erase::<SeiNode>(&()),
        RunTargetKind::SeiNodeDeployment => kube::core::ApiResource::erase::<SeiNodeDeployment>(&()),
    };
    let api: Api<kube::core::DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &resource);
    let (pp, patch) = (PatchParams::default(), Patch::Merge(patch));
    if status {
        api.patch_status(name, &pp, &patch).await.map(|_| ())
    } else {
        api.patch(name, &pp, &patch).await.map(|_| ())
    }
}

/// The names a run targets, sorted: its `target.name`, or every object matching `target.selector`.
async fn resolve_targets(ctx: &Context, run: &WorkflowRun, ns: &str) -> Result<Vec<String>, Error> {
    let target = &run.spec.target;
    if let Some(name) = &target.name {
        return Ok(vec![name.clone()]);
    }
    let selector = target
        .selector
        .clone()
        .unwrap_or_default()
        .try_into()
        .map(|s: kube::core::Selector| s.to_string())
        .map_err(|e| Error::Cel(format!("spec.target.selector: {e}")))?;
    let lp = ListParams::default().labels(&selector);
    let mut names: Vec<String> = match target.kind {
        RunTargetKind::SeiNode => Api::<SeiNode>::namespaced(ctx.client.clone(), ns)
            .list_metadata(&lp)
            .await
            .map_err(Error::Kube)?
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect(),
        RunTargetKind::SeiNodeDeployment => Api::<SeiNodeDeployment>::namespaced(ctx.client.clone(), ns)
            .list_metadata(&lp)
            .await
            .map_err(Error::Kube)?
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect(),
    };
    names.sort();
    Ok(names)
}

fn trace_id(plan: &Plan) -> Option<String> {
    let tp = sei_observability::trace_context::TraceParent::parse(plan.traceparent.as_deref()?)?;
    Some(format!("{:032x}", u128::from_be_bytes(tp.trace_id)))
}

fn finished(entry: &mut RunTargetStatus, summary: &PlanSummary) {
    entry.phase = match summary.phase {
        PlanPhase::Succeeded => RunPhase::Succeeded,
        PlanPhase::Cancelled => RunPhase::Cancelled,
        _ => RunPhase::Failed,
    };
    entry.failed_task.clone_from(&summary.failed_task);
    entry.message = summary
        .error
        .as_ref()
        .map(|e| e.message.clone())
        .or_else(|| summary.message.clone());
}

/// One step of one target: mirror its plan, or start ours when the target is free and a slot is.
async fn step_target(
    ctx: &Context,
    run: &WorkflowRun,
    ns: &str,
    entry: &mut RunTargetStatus,
    slot_free: bool,
) -> Result<(), Error> {
    let Some(target) = read_target(ctx, run.spec.target.kind, ns, &entry.name).await? else {
        entry.phase = RunPhase::Failed;
        entry.message = Some(format!(
            "{} {} does not exist",
            run.spec.target.kind.as_str(),
            entry.name
        ));
        return Ok(());
    };
    if let Some(id) = entry.plan_id.clone() {
        if let Some(plan) = target.plan().filter(|p| p.id.to_string() == id) {
            entry.phase = RunPhase::Running;
            entry.trace_id = trace_id(plan);
            entry.message = None;
            return Ok(());
        }
        if let Some(summary) = target.history().iter().find(|s| s.id.to_string() == id) {
            finished(entry, summary);
            return Ok(());
        }
        if entry.phase == RunPhase::Running {
            // It ran, and its summary has left the bounded history: the outcome is unknown.
            entry.phase = RunPhase::Failed;
            entry.message = Some(format!("plan {id} is no longer in the target's planHistory"));
            return Ok(());
        }
    }
    if let Some(active) = target.plan() {
        entry.message = Some(format!(
            "waiting for the target's active plan {} ({})",
            active.id, active.workflow
        ));
        return Ok(());
    }
    if entry.plan_id.is_none() && !slot_free {
        entry.message = Some("waiting for a slot (spec.maxParallel)".into());
        return Ok(());
    }
    start(ctx, run, ns, entry, &target).await
}

/// The workflow compiled against the target with the run's params and plan id, or why the run fails (an
/// unknown workflow, another target kind, a param the workflow does not declare, a compile error).
async fn compile_for(
    ctx: &Context,
    run: &WorkflowRun,
    ns: &str,
    plan_id: uuid::Uuid,
    target: &Target,
) -> Result<Result<Plan, String>, Error> {
    let catalog = ctx.catalogs.get(ns);
    let workflow_name = &run.spec.workflow_ref.name;
    let Some(workflow) = catalog.get(workflow_name) else {
        return Ok(Err(format!(
            "workflow `{workflow_name}` is not in this namespace's catalogue (a valid WorkflowTemplate or a built-in)"
        )));
    };
    if workflow.definition().spec.target != run.spec.target.kind.as_str() {
        return Ok(Err(format!(
            "workflow `{workflow_name}` targets {}, not {}",
            workflow.definition().spec.target,
            run.spec.target.kind.as_str()
        )));
    }
    let bindings = target.bindings(ctx).await?;
    let traceparent = sei_observability::trace_context::TraceParent::for_plan(plan_id).to_string();
    Ok(workflow
        .instantiate_with(
            &bindings,
            &run.spec.params,
            plan_id,
            crate::clock::now(),
            Some(traceparent),
            &ctx.registry,
        )
        .map_err(|e| e.to_string()))
}

/// Compiles the workflow against the target and writes it as the target's plan. The plan id is chosen (and
/// returned through `entry`) first; the caller persists it before this runs again.
async fn start(
    ctx: &Context,
    run: &WorkflowRun,
    ns: &str,
    entry: &mut RunTargetStatus,
    target: &Target,
) -> Result<(), Error> {
    let Some(id) = entry.plan_id.clone() else {
        // Persist the id first (the caller writes the run's status and comes back).
        entry.plan_id = Some(uuid::Uuid::new_v4().to_string());
        entry.message = Some("starting".into());
        return Ok(());
    };
    let plan_id = uuid::Uuid::parse_str(&id).map_err(|e| Error::Cel(format!("status.planId: {e}")))?;
    let plan = match compile_for(ctx, run, ns, plan_id, target).await? {
        Ok(plan) => plan,
        Err(why) => {
            entry.phase = RunPhase::Failed;
            entry.message = Some(why);
            return Ok(());
        }
    };
    let patch = json!({
        "metadata": { "resourceVersion": target.resource_version() },
        "status": { "plan": plan },
    });
    let written = patch_target(ctx, run.spec.target.kind, ns, &entry.name, &patch, true).await;
    match written {
        Ok(()) => {
            crate::failpoints::crash_point(crate::failpoints::RUN_CRASH_POINT);
            ctx.metrics.plan_created(&plan.workflow);
            entry.phase = RunPhase::Running;
            entry.trace_id = trace_id(&plan);
            entry.message = None;
            Ok(())
        }
        // The target changed under us (its controller started a plan, say): look again at the next step.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(Error::Kube(e)),
    }
}

/// The overall phase from the targets'.
fn overall(status: &mut WorkflowRunStatus) {
    let phases: Vec<RunPhase> = status.targets.iter().map(|t| t.phase).collect();
    let phase = if phases.is_empty() {
        RunPhase::Failed
    } else if phases.iter().all(|p| p.is_finished()) {
        if phases.contains(&RunPhase::Failed) {
            RunPhase::Failed
        } else if phases.contains(&RunPhase::Cancelled) {
            RunPhase::Cancelled
        } else {
            RunPhase::Succeeded
        }
    } else if phases.contains(&RunPhase::Running) {
        RunPhase::Running
    } else {
        RunPhase::Pending
    };
    let single = status.targets.len() == 1;
    let first = status.targets.first();
    status.plan_id = first.and_then(|t| t.plan_id.clone());
    status.trace_id = first.and_then(|t| t.trace_id.clone());
    let failed = status.targets.iter().find(|t| t.phase == RunPhase::Failed);
    status.failed_task = failed.and_then(|t| {
        t.failed_task.as_ref().map(|task| {
            if single {
                task.clone()
            } else {
                format!("{}/{task}", t.name)
            }
        })
    });
    status.message = if status.targets.is_empty() {
        Some("the selector matches no object".into())
    } else if let Some(t) = failed {
        t.message.as_ref().map(|m| {
            if single {
                m.clone()
            } else {
                format!("{}: {m}", t.name)
            }
        })
    } else {
        status.targets.iter().find_map(|t| t.message.clone())
    };
    status.phase = Some(phase);
}

/// Reconciles one WorkflowRun.
pub async fn reconcile(run: Arc<WorkflowRun>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciled("WorkflowRun");
    let ns = run.namespace().unwrap_or_default();
    let api: Api<WorkflowRun> = Api::namespaced(ctx.client.clone(), &ns);
    let status = run.status.clone().unwrap_or_default();
    let done = status.phase.is_some_and(RunPhase::is_finished);

    if run.meta().deletion_timestamp.is_some() {
        if !done {
            cancel_plans(&ctx, &run, &ns, &status).await?;
        }
        return remove_finalizer(&api, &run).await;
    }
    if done {
        return ttl(&api, &run, &status).await;
    }
    // Added, and the run goes on in the same reconcile (so that a deleted run cancels its plans first).
    let run = crate::status::with_finalizer(&api, run, FINALIZER).await?;

    let mut next = status.clone();
    step_targets(&ctx, &run, &ns, &mut next).await?;
    if next != status {
        write_status(&ctx, &api, &run, &status, next).await?;
        return Ok(Action::requeue(Duration::from_millis(10)));
    }
    Ok(Action::requeue(POLL))
}

/// One step of every unfinished target (resolved once, at the first step), starting at most `maxParallel`.
async fn step_targets(
    ctx: &Context,
    run: &WorkflowRun,
    ns: &str,
    next: &mut WorkflowRunStatus,
) -> Result<(), Error> {
    if next.targets.is_empty() {
        // Resolved once: a selector run keeps the targets it started with.
        next.targets = resolve_targets(ctx, run, ns)
            .await?
            .into_iter()
            .map(|name| RunTargetStatus {
                name,
                phase: RunPhase::Pending,
                plan_id: None,
                trace_id: None,
                failed_task: None,
                message: None,
            })
            .collect();
    }
    let max_parallel = usize::try_from(run.spec.max_parallel.unwrap_or(1).max(1)).unwrap_or(1);
    let mut running = next
        .targets
        .iter()
        .filter(|t| t.plan_id.is_some() && !t.phase.is_finished())
        .count();
    for entry in &mut next.targets {
        if entry.phase.is_finished() {
            continue;
        }
        let had_id = entry.plan_id.is_some();
        step_target(ctx, run, ns, entry, running < max_parallel).await?;
        if !had_id && entry.plan_id.is_some() {
            running += 1;
        }
    }
    overall(next);
    if next.phase.is_some_and(RunPhase::is_finished) {
        next.completion_time = Some(crate::clock::now_time());
    }
    Ok(())
}

/// Writes the run's new status (and an Event when its phase changed).
async fn write_status(
    ctx: &Context,
    api: &Api<WorkflowRun>,
    run: &WorkflowRun,
    before: &WorkflowRunStatus,
    next: WorkflowRunStatus,
) -> Result<(), Error> {
    // A replace (not a merge patch): cleared fields must go, and the resourceVersion guards the write.
    let mut desired = (*run).clone();
    desired.status = Some(next.clone());
    api.replace_status(&run.name_any(), &kube::api::PostParams::default(), &desired)
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 409 => Error::Conflict,
            e => Error::Kube(e),
        })?;
    if next.phase != before.phase {
        let phase = next.phase.map_or("", RunPhase::as_str);
        ctx.event(
            run,
            kube::runtime::events::EventType::Normal,
            phase,
            "Run",
            next.message.clone(),
        );
    }
    Ok(())
}

async fn cancel_plans(
    ctx: &Context,
    run: &WorkflowRun,
    ns: &str,
    status: &WorkflowRunStatus,
) -> Result<(), Error> {
    for entry in status.targets.iter().filter(|t| !t.phase.is_finished()) {
        let Some(id) = &entry.plan_id else { continue };
        let patch = json!({ "metadata": { "annotations": { CANCEL_PLAN: id } } });
        match patch_target(ctx, run.spec.target.kind, ns, &entry.name, &patch, false).await {
            Ok(()) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(Error::Kube(e)),
        }
        tracing::info!(run = %run.name_any(), target = %entry.name, plan = %id, "Deleted run: cancelling its plan");
    }
    Ok(())
}

async fn remove_finalizer(api: &Api<WorkflowRun>, run: &WorkflowRun) -> Result<Action, Error> {
    if run.finalizers().iter().any(|f| f == FINALIZER) {
        let rest: Vec<&String> = run.finalizers().iter().filter(|f| *f != FINALIZER).collect();
        let patch = json!({ "metadata": { "finalizers": rest, "resourceVersion": run.resource_version() } });
        match api
            .patch(&run.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::Kube(e)),
        }
    }
    Ok(Action::await_change())
}

/// Deletes a finished run `ttlSecondsAfterFinished` after its completion (and releases its finalizer).
async fn ttl(api: &Api<WorkflowRun>, run: &WorkflowRun, status: &WorkflowRunStatus) -> Result<Action, Error> {
    if run.finalizers().iter().any(|f| f == FINALIZER) {
        return remove_finalizer(api, run)
            .await
            .map(|_| Action::requeue(Duration::from_millis(10)));
    }
    let (Some(ttl), Some(done)) = (run.spec.ttl_seconds_after_finished, &status.completion_time) else {
        return Ok(Action::await_change());
    };
    let age = k8s_openapi::jiff::Timestamp::now().duration_since(done.0);
    let left = Duration::from_secs(u64::from(ttl)).saturating_sub(age.try_into().unwrap_or_default());
    if !left.is_zero() {
        return Ok(Action::requeue(left));
    }
    match api
        .delete(&run.name_any(), &kube::api::DeleteParams::default())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(Error::Kube(e)),
    }
    Ok(Action::await_change())
}

/// Requeue policy of the run controller.
#[allow(clippy::needless_pass_by_value)] // the signature kube-runtime's Controller::run expects
pub fn error_policy(_run: Arc<WorkflowRun>, error: &Error, ctx: Arc<Context>) -> Action {
    crate::error::policy("WorkflowRun", error, &ctx.metrics)
}
