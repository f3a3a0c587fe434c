//! The compiler: a definition, its resolved inputs and a task type registry become a [`Plan`].
//!
//! Everything that can be checked before a task runs is checked here, so a definition that
//! compiles yields a plan that can run to the end: names, dependencies (unknown, cycles, finally
//! tasks reaching into normal ones), task types, params against their schema, references,
//! `forEach` lists, durations, retry settings and `when` decisions. Every error names the
//! workflow, its source, the task and the field.
//!
//! # `forEach`
//! A task with `forEach: <param>` runs once per item of that workflow param (a list of strings,
//! numbers or booleans, items unique), as runs named `task[item]`; its target defaults to the
//! item. Dependencies between two tasks expanded over the **same** param pair up item by item
//! (`b[x]` waits for `a[x]` only), which is how a genesis ceremony runs one independent branch per
//! validator. Any other dependency on a `forEach` task waits for all of its runs (fan-in).
//!
//! # Modules
//! [`compile`] and [`check`] run one pipeline (`compile_in`): check the workflow's own fields,
//! read its plan-level settings, compile the normal stage then the `finally` stage, assemble the
//! plan and check its size.
//! - `settings`: checks that need no graph (workflow shape, names, `when` decisions, durations,
//!   retry settings).
//! - `graph`: a stage's dependencies resolved, checked for cycles, and queried for upstream tasks.
//! - `task`: a stage's tasks compiled into planned tasks (type, `forEach` runs, `when`).
//! - `params`: params and targets with workflow params substituted, references checked, params
//!   validated against the task type's schema.

mod graph;
mod params;
mod settings;
mod task;

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::definition::WorkflowDefinition;
use crate::plan::{
    DEFAULT_DEADLINE, DEFAULT_FINALLY_TIMEOUT, DEFAULT_POLL_INTERVAL, MAX_PLAN_BYTES, Plan, PlanPhase,
    PlannedTask, SCHEMA_VERSION,
};
use crate::registry::TaskTypeRegistry;
use crate::schema;
use crate::time::{Duration, Timestamp};

/// Where a compile error was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// Workflow name (empty if it could not be read).
    pub workflow: String,
    /// Source of the definition (file name), possibly empty.
    pub source: String,
    /// Task name (`task` or `task[item]`), if the error concerns a task.
    pub task: Option<String>,
    /// The field, dotted from the task or workflow root (`retry.backoff.initial`), with a JSON
    /// pointer appended for params (`params/peers/0`).
    pub field: String,
}

impl Location {
    pub(crate) fn workflow(workflow: &str, source: &str, field: &str) -> Self {
        Self {
            workflow: workflow.to_owned(),
            source: source.to_owned(),
            task: None,
            field: field.to_owned(),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "workflow `{}`", self.workflow)?;
        if !self.source.is_empty() {
            write!(f, " ({})", self.source)?;
        }
        if let Some(task) = &self.task {
            write!(f, ", task `{task}`")?;
        }
        if !self.field.is_empty() {
            write!(f, ", field `{}`", self.field)?;
        }
        Ok(())
    }
}

/// Why a definition could not be parsed or compiled. Every variant carries `at`, the
/// [`Location`] (workflow, source, task, field), and the offending value or a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[allow(
    missing_docs,
    reason = "fields are `at` plus the offending value, described on each variant"
)]
pub enum Error {
    /// The YAML is malformed or does not match the definition model.
    #[error("{at}: failed to parse workflow definition: {message}")]
    Parse { at: Box<Location>, message: String },
    /// The definition has no normal tasks.
    #[error("{at}: the workflow has no tasks")]
    EmptyWorkflow { at: Box<Location> },
    /// A task name is empty, too long or uses characters reserved for run names.
    #[error("{at}: invalid task name `{name}`: use 1 to 100 letters, digits, `-`, `_` or `.`")]
    InvalidName { at: Box<Location>, name: String },
    /// Two tasks (normal or finally) share a name.
    #[error("{at}: duplicate task name `{name}`")]
    DuplicateTask { at: Box<Location>, name: String },
    /// `dependsOn` names no task of the same stage.
    #[error("{at}: unknown dependency `{dependency}`")]
    UnknownDependency { at: Box<Location>, dependency: String },
    /// A finally task depends on a normal task.
    #[error(
        "{at}: finally task depends on normal task `{dependency}`; finally tasks may only depend on finally tasks"
    )]
    FinallyDependsOnTask { at: Box<Location>, dependency: String },
    /// The dependencies form a cycle; `cycle` lists it, each task depending on the next.
    #[error("{at}: dependency cycle {}", cycle.join(" -> "))]
    Cycle { at: Box<Location>, cycle: Vec<String> },
    /// The task type is not in the registry.
    #[error("{at}: unknown task type `{task_type}`")]
    UnknownTaskType { at: Box<Location>, task_type: String },
    /// Params fail the task type's schema at `pointer`.
    #[error("{at}: params do not match the schema of `{task_type}` at `{pointer}`: {message}")]
    InvalidParams {
        at: Box<Location>,
        task_type: String,
        pointer: String,
        message: String,
    },
    /// A `${ … }` reference is malformed, unknown or not allowed where it is used.
    #[error("{at}: {message}")]
    InvalidReference { at: Box<Location>, message: String },
    /// A duration is not humantime text, or is zero where that makes no sense.
    #[error("{at}: invalid duration `{value}`: {message}")]
    InvalidDuration {
        at: Box<Location>,
        value: String,
        message: String,
    },
    /// A number is out of range (`maxParallel`, retry settings).
    #[error("{at}: {message}")]
    InvalidValue { at: Box<Location>, message: String },
    /// A declared workflow param has no resolved value in the inputs.
    #[error("{at}: workflow param `{param}` has no resolved value")]
    MissingParam { at: Box<Location>, param: String },
    /// `forEach` names a missing param, or one that is not a list of unique scalar items.
    #[error("{at}: {message}")]
    InvalidForEach { at: Box<Location>, message: String },
    /// A task declares `when` but the inputs carry no decision for it.
    #[error("{at}: the task has a `when` guard but no evaluated decision was supplied")]
    MissingGuard { at: Box<Location> },
    /// The compiled plan is over [`MAX_PLAN_BYTES`] of JSON (`bytes`): large data belongs in
    /// ConfigMaps or Secrets, passed by reference.
    #[error(
        "{at}: the compiled plan is {bytes} bytes of JSON, over the {MAX_PLAN_BYTES}-byte journal cap; pass large data by reference"
    )]
    PlanTooLarge { at: Box<Location>, bytes: usize },
    /// The inputs carry a `when` decision for a task that has no `when` guard.
    #[error("{at}: a `when` decision was supplied for a task without a `when` guard")]
    UnexpectedGuard { at: Box<Location> },
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The evaluated `when` guard of a task (evaluated by the `workflows` crate, CEL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Guard {
    /// The guard is true: the task runs.
    Run,
    /// The guard is false: the task is recorded as Skipped with this reason.
    Skip(String),
}

/// Everything besides the definition that a plan is compiled from.
#[derive(Clone, Debug, PartialEq)]
pub struct Inputs {
    /// The new plan's id, chosen by the caller (a random UUIDv4) so the engine stays
    /// deterministic. Idempotency keys and retry jitter derive from it.
    pub plan_id: Uuid,
    /// The current time: the plan's `startedAt`, and the origin of its deadline.
    pub now: Timestamp,
    /// Resolved workflow params (the definition's CEL `params`, evaluated), by name. Params not
    /// declared by the definition may be supplied too (e.g. lists for `forEach`).
    pub params: Map<String, Value>,
    /// Evaluated `when` guards, by task name, or by run name (`task[item]`) to decide per item.
    pub when: BTreeMap<String, Guard>,
    /// W3C `traceparent` of the plan's root span, stored in the plan.
    pub traceparent: Option<String>,
}

impl Inputs {
    /// Inputs with no params, guards or trace context.
    pub fn new(plan_id: Uuid, now: Timestamp) -> Self {
        Self {
            plan_id,
            now,
            params: Map::new(),
            when: BTreeMap::new(),
            traceparent: None,
        }
    }

    /// Adds a resolved workflow param.
    #[must_use]
    pub fn with_param(mut self, name: impl Into<String>, value: Value) -> Self {
        self.params.insert(name.into(), value);
        self
    }

    /// Adds an evaluated `when` decision for a task (or a run `task[item]`).
    #[must_use]
    pub fn with_guard(mut self, task: impl Into<String>, guard: Guard) -> Self {
        self.when.insert(task.into(), guard);
        self
    }

    /// Sets the root span's `traceparent`.
    #[must_use]
    pub fn with_traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }
}

/// Compiles `definition` with `inputs` into a new, `Active` plan.
///
/// # Errors
/// Any [`Error`] variant except [`Error::Parse`]; the first problem found is reported.
///
/// # Guarantees
/// Pure and deterministic: the same definition, inputs and registry give the same plan.
pub fn compile(
    definition: &WorkflowDefinition,
    inputs: &Inputs,
    registry: &(impl TaskTypeRegistry + ?Sized),
) -> Result<Plan> {
    compile_in(definition, inputs, registry, Mode::Instance)
}

/// Checks `definition` without an object: every check of [`compile`] that does not need evaluated
/// params or `when` decisions (names, duplicates, dependencies, cycles, task types, params against their
/// schemas, references to declared params and upstream outputs, `forEach` params, durations, retry
/// settings, `maxParallel`). This is what `workflow validate`, the operator's startup and its admission
/// webhook run, so a definition that passes fails later only on its evaluated values.
///
/// Returns the plan skeleton (nil id, epoch start): `${ params.… }` references stay unresolved, every
/// guarded task is planned to run, a `forEach` task has no runs yet. Its `digest` and task list describe the
/// definition; it is not meant to be executed.
///
/// # Errors
/// The first problem found, naming workflow, source, task and field.
pub fn check(definition: &WorkflowDefinition, registry: &(impl TaskTypeRegistry + ?Sized)) -> Result<Plan> {
    let inputs = Inputs::new(Uuid::nil(), Timestamp::from_unix_millis(0));
    compile_in(definition, &inputs, registry, Mode::Static)
}

/// Whether params and guards are evaluated ([`compile`]) or absent ([`check`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Instance,
    Static,
}

fn compile_in(
    definition: &WorkflowDefinition,
    inputs: &Inputs,
    registry: &(impl TaskTypeRegistry + ?Sized),
    mode: Mode,
) -> Result<Plan> {
    let cx = Cx {
        def: definition,
        inputs,
        mode,
        schemas: schema::Schemas::default(),
    };
    cx.check_workflow()?;
    let settings = cx.settings()?;
    let tasks = cx.stage(&definition.spec.tasks, None, registry)?;
    let finally = cx.finally(registry)?;
    let plan = cx.plan(settings, tasks, finally);
    cx.check_size(plan)
}

struct Cx<'a> {
    def: &'a WorkflowDefinition,
    inputs: &'a Inputs,
    mode: Mode,
    /// Params schemas compiled once per task type for this compile.
    schemas: schema::Schemas,
}

/// The plan-level settings read from the definition.
#[derive(Clone, Copy)]
struct Settings {
    /// The plan's deadline, as a duration from its start (`None`: [`DEFAULT_DEADLINE`]).
    deadline: Option<Duration>,
    /// The poll interval (`None`: [`DEFAULT_POLL_INTERVAL`]).
    poll_interval: Option<Duration>,
}

impl Cx<'_> {
    #[allow(
        clippy::unnecessary_box_returns,
        reason = "every error variant boxes its location to stay small"
    )]
    fn at(&self, task: Option<&str>, field: &str) -> Box<Location> {
        Box::new(Location {
            workflow: self.def.name.clone(),
            source: self.def.source.clone(),
            task: task.map(str::to_owned),
            field: field.to_owned(),
        })
    }

    /// `" (declared: a, b)"`, or `" (the workflow declares no params)"`, for messages.
    fn declared_params(&self) -> String {
        let params = &self.def.spec.params;
        if params.is_empty() {
            " (the workflow declares no params)".to_owned()
        } else {
            format!(
                " (declared: {})",
                params.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
            )
        }
    }

    fn settings(&self) -> Result<Settings> {
        Ok(Settings {
            deadline: self.deadline()?,
            poll_interval: self.duration(None, "pollInterval", self.def.spec.poll_interval.as_deref())?,
        })
    }

    /// The `finally` stage; each of its tasks has a timeout ([`DEFAULT_FINALLY_TIMEOUT`] unless it
    /// declares one), so a plan always ends.
    fn finally(&self, registry: &(impl TaskTypeRegistry + ?Sized)) -> Result<Vec<PlannedTask>> {
        let spec = &self.def.spec;
        let mut finally = self.stage(&spec.finally, Some(&spec.tasks), registry)?;
        for task in &mut finally {
            task.timeout.get_or_insert(DEFAULT_FINALLY_TIMEOUT);
        }
        Ok(finally)
    }

    /// A new, `Active` plan of the compiled stages.
    fn plan(&self, settings: Settings, tasks: Vec<PlannedTask>, finally: Vec<PlannedTask>) -> Plan {
        let (definition, inputs, spec) = (self.def, self.inputs, &self.def.spec);
        Plan {
            schema_version: SCHEMA_VERSION,
            id: inputs.plan_id,
            workflow: definition.name.clone(),
            version: spec.version.clone(),
            digest: definition.digest(),
            phase: PlanPhase::Active,
            started_at: inputs.now,
            finished_at: None,
            deadline: Some(
                inputs
                    .now
                    .saturating_add(settings.deadline.unwrap_or(DEFAULT_DEADLINE)),
            ),
            traceparent: inputs.traceparent.clone(),
            max_parallel: spec.max_parallel,
            poll_interval: settings.poll_interval.filter(|d| *d != DEFAULT_POLL_INTERVAL),
            on_drift: spec.on_drift,
            on_start: spec.on_start.clone(),
            on_success: spec.on_success.clone(),
            on_failure: spec.on_failure.clone(),
            stop: None,
            paused_at: None,
            failed_task: None,
            message: None,
            tasks,
            finally,
            index: crate::executor::Index::default(),
        }
    }

    /// The plan, if its journal fits [`MAX_PLAN_BYTES`].
    fn check_size(&self, plan: Plan) -> Result<Plan> {
        let bytes = plan.json_size();
        if bytes > MAX_PLAN_BYTES {
            return Err(Error::PlanTooLarge {
                at: self.at(None, "tasks"),
                bytes,
            });
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests;
