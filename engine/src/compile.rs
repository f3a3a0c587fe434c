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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use petgraph::algo::{astar, has_path_connecting, tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::definition::{RetrySpec, TaskSpec, WorkflowDefinition};
use crate::plan::{
    DEFAULT_DEADLINE, DEFAULT_FINALLY_TIMEOUT, MAX_ERROR_MESSAGE_BYTES, MAX_PLAN_BYTES, Plan, PlanPhase,
    PlannedTask, SCHEMA_VERSION, TaskRun, split_run_name, truncate,
};
use crate::reference::{Ref, lookup, rewrite};
use crate::registry::TaskTypeRegistry;
use crate::retry::RetryPolicy;
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
    let spec = &definition.spec;
    if spec.tasks.is_empty() {
        return Err(Error::EmptyWorkflow {
            at: cx.at(None, "tasks"),
        });
    }
    for param in spec.params.keys() {
        if mode == Mode::Instance && !inputs.params.contains_key(param) {
            return Err(Error::MissingParam {
                at: cx.at(None, &format!("params.{param}")),
                param: param.clone(),
            });
        }
    }
    let deadline = cx.deadline()?;
    let poll_interval = cx.duration(None, "pollInterval", spec.poll_interval.as_deref())?;
    if spec.max_parallel == Some(0) {
        return Err(Error::InvalidValue {
            at: cx.at(None, "maxParallel"),
            message: "must be at least 1".into(),
        });
    }
    cx.check_names()?;
    cx.check_guards()?;
    let main = cx.stage(&spec.tasks, None, registry)?;
    let mut finally = cx.stage(&spec.finally, Some(&spec.tasks), registry)?;
    for task in &mut finally {
        task.timeout.get_or_insert(DEFAULT_FINALLY_TIMEOUT);
    }
    let plan = Plan {
        schema_version: SCHEMA_VERSION,
        id: inputs.plan_id,
        workflow: definition.name.clone(),
        version: spec.version.clone(),
        digest: definition.digest(),
        phase: PlanPhase::Active,
        started_at: inputs.now,
        finished_at: None,
        deadline: Some(inputs.now.saturating_add(deadline.unwrap_or(DEFAULT_DEADLINE))),
        traceparent: inputs.traceparent.clone(),
        max_parallel: spec.max_parallel,
        poll_interval: poll_interval.filter(|d| *d != crate::plan::DEFAULT_POLL_INTERVAL),
        on_drift: spec.on_drift,
        on_start: spec.on_start.clone(),
        on_success: spec.on_success.clone(),
        on_failure: spec.on_failure.clone(),
        stop: None,
        paused_at: None,
        failed_task: None,
        message: None,
        tasks: main,
        finally,
        index: crate::executor::Index::default(),
    };
    let bytes = plan.json_size();
    if bytes > MAX_PLAN_BYTES {
        return Err(Error::PlanTooLarge {
            at: cx.at(None, "tasks"),
            bytes,
        });
    }
    Ok(plan)
}

struct Cx<'a> {
    def: &'a WorkflowDefinition,
    inputs: &'a Inputs,
    mode: Mode,
    /// Params schemas compiled once per task type for this compile.
    schemas: schema::Schemas,
}

fn valid_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
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

    /// The plan deadline: a humantime duration, or `${ params.<name> }` naming a workflow param whose value is
    /// one (e.g. a ceremony's `spec.genesis.maxCeremonyDuration`), so the object decides it without the
    /// controller knowing the workflow.
    fn deadline(&self) -> Result<Option<Duration>> {
        let Some(text) = self.def.spec.deadline.as_deref() else {
            return Ok(None);
        };
        let Some(name) = text
            .trim()
            .strip_prefix("${")
            .and_then(|t| t.strip_suffix('}'))
            .and_then(|t| t.trim().strip_prefix("params."))
            .map(str::trim)
        else {
            return self.duration(None, "deadline", Some(text));
        };
        if !self.def.spec.params.contains_key(name) {
            return Err(Error::InvalidReference {
                at: self.at(None, "deadline"),
                message: format!("unknown workflow param `{name}`{}", self.declared_params()),
            });
        }
        if self.mode == Mode::Static {
            return Ok(None);
        }
        match self.inputs.params.get(name) {
            Some(Value::String(value)) => self.duration(None, "deadline", Some(value)),
            Some(other) => Err(Error::InvalidDuration {
                at: self.at(None, "deadline"),
                value: other.to_string(),
                message: format!("workflow param `{name}` must be a duration string"),
            }),
            None => Err(Error::MissingParam {
                at: self.at(None, "deadline"),
                param: name.to_owned(),
            }),
        }
    }

    /// Parses an optional humantime duration; zero is rejected.
    fn duration(&self, task: Option<&str>, field: &str, text: Option<&str>) -> Result<Option<Duration>> {
        let Some(text) = text else { return Ok(None) };
        let invalid = |message: String| Error::InvalidDuration {
            at: self.at(task, field),
            value: text.to_owned(),
            message,
        };
        let duration = Duration::parse(text).map_err(|e| invalid(e.to_string()))?;
        if duration.is_zero() {
            return Err(invalid("must be greater than zero".into()));
        }
        Ok(Some(duration))
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

    fn check_names(&self) -> Result<()> {
        let mut seen = HashSet::new();
        for task in self.def.spec.tasks.iter().chain(&self.def.spec.finally) {
            if !valid_name(&task.name) {
                return Err(Error::InvalidName {
                    at: self.at(Some(&task.name), "name"),
                    name: task.name.clone(),
                });
            }
            if !seen.insert(task.name.as_str()) {
                return Err(Error::DuplicateTask {
                    at: self.at(Some(&task.name), "name"),
                    name: task.name.clone(),
                });
            }
        }
        Ok(())
    }

    fn check_guards(&self) -> Result<()> {
        let spec = &self.def.spec;
        for key in self.inputs.when.keys() {
            let (name, _) = split_run_name(key);
            let guarded = spec
                .tasks
                .iter()
                .chain(&spec.finally)
                .any(|t| t.name == name && t.when.is_some());
            if !guarded {
                return Err(Error::UnexpectedGuard {
                    at: self.at(Some(key), "when"),
                });
            }
        }
        Ok(())
    }

    /// Compiles one stage (normal tasks, or finally tasks when `outer` holds the normal ones).
    fn stage(
        &self,
        tasks: &[TaskSpec],
        outer: Option<&[TaskSpec]>,
        registry: &(impl TaskTypeRegistry + ?Sized),
    ) -> Result<Vec<PlannedTask>> {
        let index: HashMap<&str, usize> = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        let mut deps = Vec::with_capacity(tasks.len());
        for task in tasks {
            let mut own = Vec::with_capacity(task.depends_on.len());
            for dep in &task.depends_on {
                match index.get(dep.as_str()) {
                    Some(&i) if !own.contains(&i) => own.push(i),
                    Some(_) => {}
                    None if outer.is_some_and(|o| o.iter().any(|t| &t.name == dep)) => {
                        return Err(Error::FinallyDependsOnTask {
                            at: self.at(Some(&task.name), "dependsOn"),
                            dependency: dep.clone(),
                        });
                    }
                    None => {
                        return Err(Error::UnknownDependency {
                            at: self.at(Some(&task.name), "dependsOn"),
                            dependency: dep.clone(),
                        });
                    }
                }
            }
            deps.push(own);
        }
        let mut dag = DiGraph::<(), ()>::with_capacity(tasks.len(), deps.iter().map(Vec::len).sum());
        for _ in tasks {
            dag.add_node(());
        }
        for (task, own) in deps.iter().enumerate() {
            for &dep in own {
                dag.add_edge(NodeIndex::new(task), NodeIndex::new(dep), ());
            }
        }
        if let Some(cycle) = find_cycle(&dag) {
            let names: Vec<String> = cycle.iter().map(|&i| tasks[i].name.clone()).collect();
            return Err(Error::Cycle {
                at: self.at(Some(&names[0]), "dependsOn"),
                cycle: names,
            });
        }
        let graph = Graph {
            tasks,
            index: &index,
            deps: &deps,
            dag: &dag,
        };
        tasks
            .iter()
            .enumerate()
            .map(|(i, task)| self.task(&graph, i, task, registry))
            .collect()
    }

    fn task(
        &self,
        graph: &Graph<'_>,
        position: usize,
        task: &TaskSpec,
        registry: &(impl TaskTypeRegistry + ?Sized),
    ) -> Result<PlannedTask> {
        let name = task.name.as_str();
        let schema = registry
            .params_schema(&task.task_type)
            .ok_or_else(|| Error::UnknownTaskType {
                at: self.at(Some(name), "type"),
                task_type: task.task_type.clone(),
            })?;
        let items = self.items(task)?;
        let timeout = self.duration(Some(name), "timeout", task.timeout.as_deref())?;
        let poll_interval = self.duration(Some(name), "pollInterval", task.poll_interval.as_deref())?;
        let retry = self.retry(name, task.retry.as_ref())?;

        let mut params = Value::Object(task.params.clone());
        let mut resolve = |reference: &Ref<'_>| self.resolve_compile_time(graph, position, task, reference);
        rewrite(&mut params, &mut String::new(), &mut resolve).map_err(|(pointer, message)| {
            Error::InvalidReference {
                at: self.at(Some(name), &format!("params{pointer}")),
                message,
            }
        })?;
        let target = match &task.target {
            Some(template) => {
                let mut value = Value::String(template.clone());
                let mut resolve = |reference: &Ref<'_>| match reference {
                    Ref::Output { .. } => Err("a target cannot use task outputs".to_owned()),
                    other => self.resolve_compile_time(graph, position, task, other),
                };
                rewrite(&mut value, &mut String::new(), &mut resolve).map_err(|(_, message)| {
                    Error::InvalidReference {
                        at: self.at(Some(name), "target"),
                        message,
                    }
                })?;
                match value {
                    Value::String(s) => Some(s),
                    other => Some(other.to_string()),
                }
            }
            None => None,
        };
        self.schemas
            .validate(&task.task_type, schema, &params)
            .map_err(|v| Error::InvalidParams {
                at: self.at(
                    Some(name),
                    &format!("params{}", if v.pointer == "/" { "" } else { &v.pointer }),
                ),
                task_type: task.task_type.clone(),
                pointer: v.pointer,
                message: v.message,
            })?;

        let runs = match items {
            Some(items) => items
                .into_iter()
                .map(|item| self.initial_run(task, Some(item)))
                .collect::<Result<Vec<_>>>()?,
            None => vec![self.initial_run(task, None)?],
        };
        Ok(PlannedTask {
            name: task.name.clone(),
            task_type: task.task_type.clone(),
            for_each: task.for_each.clone(),
            target,
            depends_on: graph.deps[position]
                .iter()
                .map(|&i| graph.tasks[i].name.clone())
                .collect(),
            params: std::sync::Arc::new(params),
            retry,
            timeout,
            poll_interval,
            settled: None,
            runs,
        })
    }

    /// The items of a `forEach` task, as strings.
    fn items(&self, task: &TaskSpec) -> Result<Option<Vec<String>>> {
        let Some(param) = &task.for_each else {
            return Ok(None);
        };
        let invalid = |message: String| Error::InvalidForEach {
            at: self.at(Some(&task.name), "forEach"),
            message,
        };
        if self.mode == Mode::Static {
            return if self.def.spec.params.contains_key(param) {
                Ok(Some(Vec::new()))
            } else {
                Err(invalid(format!(
                    "`{param}` is not a declared workflow param{}",
                    self.declared_params()
                )))
            };
        }
        let value = self
            .inputs
            .params
            .get(param)
            .ok_or_else(|| invalid(format!("workflow param `{param}` has no resolved value")))?;
        let list = value
            .as_array()
            .ok_or_else(|| invalid(format!("workflow param `{param}` is not a list")))?;
        let mut items = Vec::with_capacity(list.len());
        let mut seen = HashSet::with_capacity(list.len());
        for value in list {
            let item = match value {
                Value::String(s) => s.clone(),
                Value::Number(_) | Value::Bool(_) => value.to_string(),
                other => {
                    return Err(invalid(format!(
                        "item {other} of `{param}` is not a string, number or boolean"
                    )));
                }
            };
            if item.is_empty() || item.len() > 253 || item.contains(['[', ']']) || item.contains("${") {
                return Err(invalid(format!(
                    "item `{item}` of `{param}` is empty, too long or contains `[`, `]` or `${{`"
                )));
            }
            if !seen.insert(item.clone()) {
                return Err(invalid(format!("item `{item}` of `{param}` is repeated")));
            }
            items.push(item);
        }
        Ok(Some(items))
    }

    fn initial_run(&self, task: &TaskSpec, item: Option<String>) -> Result<TaskRun> {
        let mut run = TaskRun {
            item,
            ..TaskRun::default()
        };
        if task.when.is_some() {
            let run_name = match &run.item {
                Some(item) => format!("{}[{item}]", task.name),
                None => task.name.clone(),
            };
            let guard = self
                .inputs
                .when
                .get(&run_name)
                .or_else(|| self.inputs.when.get(&task.name))
                .or((self.mode == Mode::Static).then_some(&Guard::Run))
                .ok_or_else(|| Error::MissingGuard {
                    at: self.at(Some(&run_name), "when"),
                })?;
            if let Guard::Skip(reason) = guard {
                run.skip = true;
                run.reason = Some(truncate(format!("when: {reason}"), MAX_ERROR_MESSAGE_BYTES));
            }
        }
        Ok(run)
    }

    fn retry(&self, task: &str, spec: Option<&RetrySpec>) -> Result<Option<RetryPolicy>> {
        let Some(spec) = spec else { return Ok(None) };
        let invalid = |field: &str, message: &str| Error::InvalidValue {
            at: self.at(Some(task), field),
            message: message.into(),
        };
        let mut policy = RetryPolicy::default();
        if let Some(max_attempts) = spec.max_attempts {
            if max_attempts == 0 {
                return Err(invalid("retry.maxAttempts", "must be at least 1"));
            }
            policy.max_attempts = max_attempts;
        }
        if let Some(backoff) = &spec.backoff {
            if let Some(initial) =
                self.duration(Some(task), "retry.backoff.initial", backoff.initial.as_deref())?
            {
                policy.initial = initial;
            }
            if let Some(max) = self.duration(Some(task), "retry.backoff.max", backoff.max.as_deref())? {
                policy.max = max;
            }
            if let Some(factor) = backoff.factor {
                if !factor.is_finite() || factor < 1.0 {
                    return Err(invalid(
                        "retry.backoff.factor",
                        "must be a finite number of at least 1",
                    ));
                }
                policy.factor = factor;
            }
            if policy.initial > policy.max {
                return Err(invalid(
                    "retry.backoff.initial",
                    "is longer than retry.backoff.max",
                ));
            }
        }
        if let Some(jitter) = spec.jitter {
            if !(0.0..=1.0).contains(&jitter) {
                return Err(invalid("retry.jitter", "must be between 0 and 1"));
            }
            policy.jitter = jitter;
        }
        if let Some(classes) = &spec.retry_on {
            policy.retry_on.clear();
            for class in classes {
                if !policy.retry_on.contains(class) {
                    policy.retry_on.push(*class);
                }
            }
        }
        Ok((policy != RetryPolicy::default()).then_some(policy))
    }

    /// Resolves what can be resolved at compile time (workflow params) and checks the rest.
    fn resolve_compile_time(
        &self,
        graph: &Graph<'_>,
        position: usize,
        task: &TaskSpec,
        reference: &Ref<'_>,
    ) -> std::result::Result<Option<Value>, String> {
        match reference {
            Ref::Param { name, .. } if self.mode == Mode::Static => {
                if self.def.spec.params.contains_key(*name) {
                    Ok(None)
                } else {
                    Err(format!(
                        "unknown workflow param `{name}`{}",
                        self.declared_params()
                    ))
                }
            }
            Ref::Param { name, path } => {
                let root = self
                    .inputs
                    .params
                    .get(*name)
                    .ok_or_else(|| format!("unknown workflow param `{name}`"))?;
                let value = lookup(root, path)
                    .ok_or_else(|| format!("workflow param `{name}` has no field `{}`", path.join(".")))?;
                if contains_reference(value) {
                    return Err(format!(
                        "the value of workflow param `{name}` contains `${{`, which is reserved"
                    ));
                }
                Ok(Some(value.clone()))
            }
            Ref::Item if task.for_each.is_some() => Ok(None),
            Ref::Item => Err("`${ item }` is only available in a task with `forEach`".into()),
            Ref::Output {
                task: upstream,
                all,
                key,
                ..
            } => {
                let Some(&up) = graph.index.get(upstream) else {
                    return Err(format!(
                        "`tasks.{upstream}.outputs.{key}` names no task of this stage"
                    ));
                };
                if !graph.is_upstream(position, up) {
                    return Err(format!(
                        "task `{upstream}` is not a dependency (direct or indirect) of this task, so its outputs may not exist yet"
                    ));
                }
                match (&graph.tasks[up].for_each, *all) {
                    (None, true) => Err(format!(
                        "`tasks.{upstream}[*]` needs `{upstream}` to have `forEach`"
                    )),
                    (Some(list), false) if task.for_each.as_ref() != Some(list) => Err(format!(
                        "task `{upstream}` runs once per item of `{list}`: use `tasks.{upstream}[*].outputs.{key}` \
                         for the list of outputs, or give this task `forEach: {list}`"
                    )),
                    _ => Ok(None),
                }
            }
        }
    }
}

fn contains_reference(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains("${"),
        Value::Array(items) => items.iter().any(contains_reference),
        Value::Object(map) => map.values().any(contains_reference),
        _ => false,
    }
}

struct Graph<'a> {
    tasks: &'a [TaskSpec],
    index: &'a HashMap<&'a str, usize>,
    deps: &'a [Vec<usize>],
    /// The same dependencies as a graph (edges task -> dependency).
    dag: &'a DiGraph<(), ()>,
}

impl Graph<'_> {
    /// Whether `ancestor` is reachable from `task` through dependencies.
    fn is_upstream(&self, task: usize, ancestor: usize) -> bool {
        task != ancestor
            && has_path_connecting(self.dag, NodeIndex::new(task), NodeIndex::new(ancestor), None)
    }
}

/// A cycle in `dag` (edges task -> dependency), as task indices with the first repeated last:
/// it starts at the first task (in declaration order) that lies on a cycle and takes the
/// shortest way back to it, so the error is the same on every compile.
fn find_cycle(dag: &DiGraph<(), ()>) -> Option<Vec<usize>> {
    toposort(dag, None).err()?;
    let start = tarjan_scc(dag)
        .into_iter()
        .filter(|scc| scc.len() > 1 || dag.contains_edge(scc[0], scc[0]))
        .filter_map(|scc| scc.into_iter().min())
        .min()?;
    let back = dag
        .neighbors(start)
        .filter_map(|next| {
            if next == start {
                return Some((0, vec![start]));
            }
            astar(dag, next, |n| n == start, |_| 1usize, |_| 0)
        })
        .min()?;
    let mut cycle = vec![start.index()];
    cycle.extend(back.1.iter().map(|n| n.index()));
    Some(cycle)
}

#[cfg(test)]
mod tests;
