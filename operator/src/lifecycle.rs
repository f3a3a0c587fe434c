//! What a plan means for its object's status, for both controllers: one implementation of the plan lifecycle.
//!
//! - **While active**, the workflow's `onStart` effect (a `phase`, `conditions`) holds: it is applied at every
//!   reconcile ([`apply_effect`] is idempotent), so a plan started by a WorkflowRun shows the same as one
//!   started by a trigger. What a workflow means (`NodeUpdateInProgress`, `Upgrading`, a ceremony's
//!   `GenesisCeremonyComplete=False`) is declared in its YAML; no controller names a workflow.
//! - **Start** ([`start_triggered`]): the first workflow whose trigger holds, instantiated (persisted by the
//!   caller's status write before any task runs).
//! - **Drift** ([`drift`]): the engine's `onDrift` policy, for any workflow of either kind.
//! - **When it ends**, `onSuccess` / `onFailure` ([`apply_effect`]).
//! - **Task status updates** (conditions, top-level fields a task recorded): [`apply_updates`].

use kube::runtime::events::EventType;
use sei_crds::conditions::{self, Condition, ConditionStatus};
use sei_crds::{SeiNodeDeploymentStatus, SeiNodeStatus};
use sei_tasks::task::StatusUpdates;
use sei_workflows::{Bindings, Catalog};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::clock::now_time;
use crate::error::Error;

/// An Event to publish: type, reason, note.
pub type Event = (EventType, &'static str, String);

/// A status with conditions (both kinds').
pub trait Conditions {
    /// Inserts or updates a condition; `true` on change.
    fn set_condition(&mut self, condition: Condition) -> bool;
}

impl Conditions for SeiNodeStatus {
    fn set_condition(&mut self, condition: Condition) -> bool {
        SeiNodeStatus::set_condition(self, condition)
    }
}

impl Conditions for SeiNodeDeploymentStatus {
    fn set_condition(&mut self, condition: Condition) -> bool {
        SeiNodeDeploymentStatus::set_condition(self, condition)
    }
}

/// A condition stamped now (its transition time is kept by `set_condition` when the status is unchanged).
pub fn condition(
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    conditions::new_condition(type_, status, reason, message, generation, now_time())
}

/// Applies an effect's `conditions` to `status` (an absent `message` becomes `default_message`) and returns
/// its `phase`, typed as the caller's kind (`None` when absent or not a phase of that kind).
pub fn apply_effect<S: Conditions, P: DeserializeOwned>(
    status: &mut S,
    effect: Option<&Value>,
    generation: Option<i64>,
    default_message: &str,
) -> Option<P> {
    let effect = effect?;
    for c in effect
        .get("conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let field = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default();
        let message = c
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| default_message.to_owned(), str::to_owned);
        let cs = match field("status") {
            "True" => ConditionStatus::True,
            "False" => ConditionStatus::False,
            _ => ConditionStatus::Unknown,
        };
        status.set_condition(condition(field("type"), cs, field("reason"), message, generation));
    }
    effect
        .get("phase")
        .and_then(|p| serde_json::from_value(p.clone()).ok())
}

/// Applies what tasks recorded: every condition, and the top-level fields `allowed` names (all when `None`);
/// a `null` field is removed.
pub fn apply_updates<S: Conditions + Serialize + DeserializeOwned>(
    status: &mut S,
    updates: StatusUpdates,
    allowed: Option<&[&str]>,
) -> Result<(), Error> {
    for mut c in updates.conditions {
        c.last_transition_time = now_time();
        status.set_condition(c);
    }
    let fields: Vec<_> = updates
        .fields
        .into_iter()
        .filter(|(k, _)| allowed.is_none_or(|a| a.contains(&k.as_str())))
        .collect();
    if fields.is_empty() {
        return Ok(());
    }
    let mut json = serde_json::to_value(&*status).map_err(Error::Serialize)?;
    if let Value::Object(map) = &mut json {
        for (k, v) in fields {
            if v.is_null() {
                map.remove(&k);
            } else {
                map.insert(k, v);
            }
        }
    }
    *status = serde_json::from_value(json).map_err(Error::Serialize)?;
    Ok(())
}

/// The `onDrift` policy of an active plan: when the plan its workflow would build now differs from the one
/// running (another image during an update, a template changed during a rollout), `Supersede` stops new
/// starts and lets in-flight tasks finish (the plan then ends Cancelled and the trigger builds a fresh one),
/// `Reject` reports the drift in an Event and keeps going, `Queue` waits for the plan to end. Only the task
/// params are compared (not a `forEach` list's items, which move as the plan progresses), and only while the
/// workflow's definition is the one the plan was compiled from (an edited template never supersedes).
pub fn drift(
    catalog: &Catalog,
    bindings: &Bindings,
    registry: &(impl sei_engine::TaskTypeRegistry + ?Sized),
    plan: &mut sei_engine::Plan,
) -> Result<Option<Event>, Error> {
    if plan.on_drift == sei_engine::DriftPolicy::Queue || plan.stop.is_some() {
        return Ok(None);
    }
    let Some(workflow) = catalog.get(&plan.workflow) else {
        return Ok(None);
    };
    if workflow.digest() != plan.digest || !workflow.is_triggered(bindings).map_err(Error::Workflow)? {
        return Ok(None);
    }
    // Compile what would run now (same plan id, so only the inputs can differ) and compare the task params.
    let Ok(now_plan) = workflow.instantiate(bindings, plan.id, plan.started_at, None, registry) else {
        return Ok(None);
    };
    let same = now_plan.tasks.len() == plan.tasks.len()
        && now_plan
            .tasks
            .iter()
            .zip(&plan.tasks)
            .all(|(a, b)| a.name == b.name && a.params == b.params);
    if same {
        return Ok(None);
    }
    let why = format!("the {} plan's inputs changed while it ran", plan.workflow);
    Ok(match plan.on_drift {
        sei_engine::DriftPolicy::Supersede => plan.supersede(why.clone()).then(|| {
            let detail = format!("{why}: finishing in-flight tasks, then rebuilding");
            (EventType::Normal, "PlanSuperseded", detail)
        }),
        sei_engine::DriftPolicy::Reject => Some((
            EventType::Warning,
            "DriftRejected",
            format!("{why}: the running plan continues unchanged"),
        )),
        sei_engine::DriftPolicy::Queue => None,
    })
}

/// The message of an active plan's `onStart` conditions.
pub fn running_message(plan: &sei_engine::Plan) -> String {
    format!("plan {} ({}) is running", plan.id, plan.workflow)
}

/// A plan [`start_triggered`] instantiated, or why none could be: the Event to publish, when to come back.
pub struct Started {
    /// The new plan (`None`: the workflow could not be instantiated; the Event says why).
    pub plan: Option<sei_engine::Plan>,
    /// `PlanCreated`, or `PlanInvalid` with the error.
    pub event: (EventType, &'static str, String),
    /// At once after a new plan (the next reconcile runs its first tasks), later after an invalid one.
    pub requeue: std::time::Duration,
}

/// The first workflow of `kind` in `namespace`'s catalogue whose trigger holds for `bindings`, instantiated now
/// with a new plan id and its trace context. `None` when no trigger holds.
///
/// # Errors
/// A trigger that fails to evaluate.
pub fn start_triggered(
    ctx: &crate::context::Context,
    kind: &str,
    namespace: &str,
    bindings: &Bindings,
) -> Result<Option<Started>, Error> {
    let catalog = ctx.catalogs.get(namespace);
    let Some(workflow) = catalog.triggered(kind, bindings).map_err(Error::Workflow)? else {
        return Ok(None);
    };
    let plan_id = uuid::Uuid::new_v4();
    let traceparent = sei_observability::trace_context::TraceParent::for_plan(plan_id).to_string();
    Ok(Some(
        match workflow.instantiate(
            bindings,
            plan_id,
            crate::clock::now(),
            Some(traceparent),
            &ctx.registry,
        ) {
            Ok(plan) => {
                ctx.metrics.plan_created(workflow.name());
                Started {
                    plan: Some(plan),
                    event: (
                        EventType::Normal,
                        "PlanCreated",
                        format!("plan {plan_id} ({}) created", workflow.name()),
                    ),
                    requeue: std::time::Duration::from_millis(10),
                }
            }
            Err(e) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "Workflow could not be instantiated"
                );
                Started {
                    plan: None,
                    event: (EventType::Warning, "PlanInvalid", e.to_string()),
                    requeue: std::time::Duration::from_secs(30),
                }
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    /// `observe-image` polls at its type's 30 s in every built-in workflow, which no longer repeats it, while
    /// the other tasks keep their plan's round (node-init: 250 ms).
    #[test]
    fn observe_image_polls_at_its_type_default_in_every_builtin_workflow() {
        let registry = sei_tasks::catalog::registry();
        let catalog = sei_workflows::Catalog::builtin().unwrap();
        let mut seen = 0;
        for workflow in catalog.iter() {
            let plan = workflow.check(&registry).unwrap();
            for task in plan.tasks.iter().chain(&plan.finally) {
                let want = (task.task_type == "observe-image")
                    .then_some(sei_tasks::catalog::kube::OBSERVE_IMAGE_POLL);
                assert_eq!(task.poll_interval, want, "{}: {}", plan.workflow, task.name);
                seen += usize::from(want.is_some());
            }
        }
        assert!(
            seen >= 3,
            "node-init, node-update and node-reconfigure observe the image"
        );
        let init = catalog.iter().find(|w| w.name() == "node-init").unwrap();
        assert_eq!(
            init.check(&registry).unwrap().poll_interval(),
            sei_engine::Duration::from_millis(250)
        );
    }
}
