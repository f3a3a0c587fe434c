//! The workflow catalogue: built-in workflow definitions (YAML files embedded in the binary), loading
//! user-supplied ones, and the CEL evaluation of their `trigger`, `params` and `when` expressions.
//!
//! # Bindings visible to CEL
//! - `self`: the target object as JSON (its `status` is always present, `{}` when the object has none);
//! - `node`: facts the operator derives from the object with typed code, so that every workflow does not
//!   re-implement them (for a SeiNode: `mode`, `configMode`, `sidecarImage`, and `snapshot` when the node has
//!   a snapshot source); an empty map for other kinds;
//! - extra functions: `list.join(separator)`.
//!
//! # From definition to plan
//! [`Catalog::triggered`] picks the first workflow of a target kind, in priority order (the order of
//! [`BUILTIN`], then user workflows in the order given), whose trigger is true; [`Workflow::instantiate`]
//! evaluates its params once (the plan is a snapshot), evaluates every `when` guard into a
//! [`Guard`] and compiles the plan with the engine.
//!
//! # Errors
//! Every error names the source file, the workflow, and the task and field when there is one.
//!
//! # Owns, and must not
//! Owns the built-in definitions, a namespace's catalogue (priority, `overrides`, `disabled`) and every CEL
//! evaluation. Must not touch Kubernetes, run or implement tasks (it knows them through the engine's
//! `TaskTypeRegistry` only), or decide anything from a workflow's name.

use std::collections::BTreeMap;
use std::sync::Arc;

use cel::extractors::This;
use cel::{Context, Program};
use sei_engine::{Guard, Inputs, Plan, TaskTypeRegistry, Timestamp, WorkflowDefinition};
use serde_json::{Map, Value};
use uuid::Uuid;

/// The built-in workflows, in trigger priority order: (file name, YAML).
pub const BUILTIN: &[(&str, &str)] = &[
    ("node-init.yaml", include_str!("../definitions/node-init.yaml")),
    (
        "node-update.yaml",
        include_str!("../definitions/node-update.yaml"),
    ),
    ("mark-ready.yaml", include_str!("../definitions/mark-ready.yaml")),
    ("node-peers.yaml", include_str!("../definitions/node-peers.yaml")),
    (
        "node-reconfigure.yaml",
        include_str!("../definitions/node-reconfigure.yaml"),
    ),
    (
        "ceremony-member.yaml",
        include_str!("../definitions/ceremony-member.yaml"),
    ),
    (
        "genesis-ceremony.yaml",
        include_str!("../definitions/genesis-ceremony.yaml"),
    ),
    (
        "fleet-rollout.yaml",
        include_str!("../definitions/fleet-rollout.yaml"),
    ),
];

/// Errors of loading, evaluating and instantiating workflows.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The definition does not parse or does not compile (the engine's error names file, task and field).
    #[error(transparent)]
    Definition(#[from] sei_engine::Error),
    /// A CEL expression does not parse.
    #[error("{source_name}: workflow `{workflow}`: {field}: invalid CEL expression: {message}")]
    CelSyntax {
        /// File the definition came from.
        source_name: String,
        /// Workflow name.
        workflow: String,
        /// Field path, e.g. `tasks[validate-node-key].when`.
        field: String,
        /// Parser message.
        message: String,
    },
    /// A CEL expression failed at evaluation or gave a value of the wrong type.
    #[error("{source_name}: workflow `{workflow}`: {field}: {message}")]
    CelEval {
        /// File the definition came from.
        source_name: String,
        /// Workflow name.
        workflow: String,
        /// Field path.
        field: String,
        /// What went wrong.
        message: String,
    },
    /// Two workflows share a name.
    #[error("{source_name}: workflow `{workflow}` is already defined")]
    Duplicate {
        /// File of the second definition.
        source_name: String,
        /// The name.
        workflow: String,
    },
    /// A check that needs no object failed (unknown target kind, unknown CEL variable, a run param the
    /// workflow does not declare, an override of a workflow that does not exist).
    #[error("{source_name}: workflow `{workflow}`: {field}: {message}")]
    Invalid {
        /// File or object the definition came from.
        source_name: String,
        /// Workflow name.
        workflow: String,
        /// Field path.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// Kinds a workflow may target: the resources this operator reconciles.
pub const TARGET_KINDS: &[&str] = &["SeiNode", "SeiNodeDeployment"];

/// Variables a workflow's CEL expressions may use (see the crate docs).
pub const CEL_VARIABLES: &[&str] = &["self", "node"];

/// CEL macros that bind a variable of their own (`list.exists(c, c.x)`).
const BINDING_MACROS: &[&str] = &["all", "exists", "exists_one", "map", "filter"];

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A loaded workflow: the definition with its CEL expressions parsed.
#[derive(Clone)]
pub struct Workflow {
    definition: WorkflowDefinition,
    trigger: Option<Arc<Program>>,
    params: Vec<(String, Arc<Program>)>,
    guards: Vec<(String, Arc<Program>)>,
}

impl std::fmt::Debug for Workflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workflow")
            .field("name", &self.definition.name)
            .finish_non_exhaustive()
    }
}

fn compile_cel(def: &WorkflowDefinition, field: &str, src: &str) -> Result<Arc<Program>> {
    Program::compile(src).map(Arc::new).map_err(|e| Error::CelSyntax {
        source_name: def.source.clone(),
        workflow: def.name.clone(),
        field: field.to_owned(),
        message: e.to_string().lines().next().unwrap_or_default().to_owned(),
    })
}

/// The CEL evaluation context of one object.
pub struct Bindings {
    context: Context<'static, 'static>,
}

impl Bindings {
    /// Bindings for `object` (`self`) and derived facts `node`.
    pub fn new(object: &Value, node: &Value) -> Result<Self, String> {
        let mut object = object.clone();
        if let Value::Object(map) = &mut object {
            map.entry("status").or_insert_with(|| Value::Object(Map::new()));
        }
        let mut context = Context::default();
        context.add_variable("self", object).map_err(|e| e.to_string())?;
        context
            .add_variable("node", node.clone())
            .map_err(|e| e.to_string())?;
        context
            .add_function(
                "join",
                |This(list): This<Arc<Vec<cel::Value>>>, sep: Arc<String>| -> String {
                    list.iter()
                        .map(|v| match v {
                            cel::Value::String(s) => s.to_string(),
                            other => other.json().map(|j| j.to_string()).unwrap_or_default(),
                        })
                        .collect::<Vec<_>>()
                        .join(sep.as_str())
                },
            )
            .map_err(|e| e.to_string())?;
        Ok(Self { context })
    }

    fn eval(&self, program: &Program) -> Result<Value, String> {
        let value = program.execute(&self.context).map_err(|e| e.to_string())?;
        value
            .json()
            .map_err(|e| format!("the value cannot be written as JSON: {e}"))
    }
}

/// The variables of `program` that are neither bindings nor a macro's own variable.
///
/// Hand-written filter: the cel crate's `references()` also lists a comprehension's iteration variable
/// (`c` in `list.exists(c, ...)`), so names bound by a macro in `src` are dropped here.
fn unknown_variables(program: &Program, src: &str) -> Vec<String> {
    let compact: String = src.chars().filter(|c| !c.is_whitespace()).collect();
    let mut unknown: Vec<String> = program
        .references()
        .variables()
        .into_iter()
        .filter(|v| !CEL_VARIABLES.contains(v))
        .filter(|v| {
            !BINDING_MACROS
                .iter()
                .any(|m| compact.contains(&format!(".{m}({v},")))
        })
        .map(str::to_owned)
        .collect();
    unknown.sort();
    unknown
}

impl Workflow {
    /// Parses a definition from YAML and compiles its CEL expressions.
    pub fn from_yaml(source_name: &str, text: &str) -> Result<Self> {
        Self::from_definition(WorkflowDefinition::from_yaml(source_name, text)?)
    }

    /// Compiles the CEL expressions of a parsed definition (e.g. the spec of a WorkflowTemplate object).
    pub fn from_definition(definition: WorkflowDefinition) -> Result<Self> {
        let spec = &definition.spec;
        let trigger = spec
            .trigger
            .as_deref()
            .map(|t| compile_cel(&definition, "trigger", t))
            .transpose()?;
        let params = spec
            .params
            .iter()
            .map(|(name, src)| {
                Ok((
                    name.clone(),
                    compile_cel(&definition, &format!("params.{name}"), src)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let guards = spec
            .tasks
            .iter()
            .chain(&spec.finally)
            .filter_map(|t| t.when.as_deref().map(|w| (t, w)))
            .map(|(t, w)| {
                Ok((
                    t.name.clone(),
                    compile_cel(&definition, &format!("tasks[{}].when", t.name), w)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            definition,
            trigger,
            params,
            guards,
        })
    }

    /// Every check that needs no object: the target kind, the variables of every CEL expression, and the
    /// engine's static compile ([`sei_engine::check`]: names, dependencies, cycles, task types, params
    /// against their schemas, references, durations, retry settings). Returns the plan skeleton.
    pub fn check(&self, registry: &(impl TaskTypeRegistry + ?Sized)) -> Result<Plan> {
        let def = &self.definition;
        if !TARGET_KINDS.contains(&def.spec.target.as_str()) {
            let message = if def.spec.target.is_empty() {
                format!("is missing: one of {}", TARGET_KINDS.join(", "))
            } else {
                format!(
                    "unknown target kind `{}`: one of {}",
                    def.spec.target,
                    TARGET_KINDS.join(", ")
                )
            };
            return Err(self.invalid("target", message));
        }
        let spec = &def.spec;
        let expressions = spec
            .trigger
            .iter()
            .zip(self.trigger.iter())
            .map(|(src, p)| ("trigger".to_owned(), src.as_str(), p))
            .chain(
                self.params
                    .iter()
                    .map(|(name, p)| (format!("params.{name}"), spec.params[name].as_str(), p)),
            )
            .chain(self.guards.iter().map(|(task, p)| {
                let src = spec
                    .tasks
                    .iter()
                    .chain(&spec.finally)
                    .find(|t| &t.name == task)
                    .and_then(|t| t.when.as_deref())
                    .unwrap_or_default();
                (format!("tasks[{task}].when"), src, p)
            }));
        for (field, src, program) in expressions {
            let unknown = unknown_variables(program, src);
            if !unknown.is_empty() {
                return Err(self.invalid(
                    &field,
                    format!(
                        "unknown CEL variable `{}` (available: {})",
                        unknown.join("`, `"),
                        CEL_VARIABLES.join(", ")
                    ),
                ));
            }
        }
        Ok(sei_engine::check(def, registry)?)
    }

    fn invalid(&self, field: &str, message: String) -> Error {
        Error::Invalid {
            source_name: self.definition.source.clone(),
            workflow: self.definition.name.clone(),
            field: field.to_owned(),
            message,
        }
    }

    /// The definition's digest (`sha256:…`), the one a plan of it records.
    #[must_use]
    pub fn digest(&self) -> String {
        self.definition.digest()
    }

    /// The definition.
    #[must_use]
    pub fn definition(&self) -> &WorkflowDefinition {
        &self.definition
    }

    /// The workflow's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.definition.name
    }

    fn eval_error(&self, field: &str, message: String) -> Error {
        Error::CelEval {
            source_name: self.definition.source.clone(),
            workflow: self.definition.name.clone(),
            field: field.to_owned(),
            message,
        }
    }

    fn eval_bool(&self, bindings: &Bindings, field: &str, program: &Program) -> Result<bool> {
        match bindings.eval(program) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(self.eval_error(field, format!("must give a bool, gave {other}"))),
            Err(message) => Err(self.eval_error(field, message)),
        }
    }

    /// Whether the trigger holds for the object (false when the workflow has no trigger: it only runs when
    /// asked for by name).
    pub fn is_triggered(&self, bindings: &Bindings) -> Result<bool> {
        match &self.trigger {
            Some(program) => self.eval_bool(bindings, "trigger", program),
            None => Ok(false),
        }
    }

    /// Evaluates params and guards for the object and compiles a new plan.
    pub fn instantiate(
        &self,
        bindings: &Bindings,
        plan_id: Uuid,
        now: Timestamp,
        traceparent: Option<String>,
        registry: &(impl TaskTypeRegistry + ?Sized),
    ) -> Result<Plan> {
        self.instantiate_with(bindings, &Map::new(), plan_id, now, traceparent, registry)
    }

    /// The workflow's params for the object: the `given` values, the others evaluated from their CEL.
    pub fn resolve_params(
        &self,
        bindings: &Bindings,
        given: &Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        let mut out = Map::new();
        for (name, program) in &self.params {
            let value = match given.get(name) {
                Some(value) => value.clone(),
                None => bindings
                    .eval(program)
                    .map_err(|m| self.eval_error(&format!("params.{name}"), m))?,
            };
            out.insert(name.clone(), value);
        }
        Ok(out)
    }

    /// [`Workflow::instantiate`] with some params given as values (a WorkflowRun's `spec.params`): those
    /// replace the definition's CEL expression of the same name; a given param the definition does not
    /// declare is an error.
    pub fn instantiate_with(
        &self,
        bindings: &Bindings,
        given: &Map<String, Value>,
        plan_id: Uuid,
        now: Timestamp,
        traceparent: Option<String>,
        registry: &(impl TaskTypeRegistry + ?Sized),
    ) -> Result<Plan> {
        if let Some(name) = given
            .keys()
            .find(|k| !self.definition.spec.params.contains_key(*k))
        {
            let declared: Vec<&str> = self.definition.spec.params.keys().map(String::as_str).collect();
            return Err(self.invalid(
                &format!("params.{name}"),
                format!(
                    "is not a param of this workflow (declared: {})",
                    if declared.is_empty() {
                        "none".to_owned()
                    } else {
                        declared.join(", ")
                    }
                ),
            ));
        }
        let mut inputs = Inputs::new(plan_id, now);
        for (name, value) in self.resolve_params(bindings, given)? {
            inputs = inputs.with_param(name, value);
        }
        for (task, program) in &self.guards {
            let field = format!("tasks[{task}].when");
            let guard = if self.eval_bool(bindings, &field, program)? {
                Guard::Run
            } else {
                let src = self
                    .definition
                    .spec
                    .tasks
                    .iter()
                    .chain(&self.definition.spec.finally);
                let expr = src
                    .filter(|t| &t.name == task)
                    .find_map(|t| t.when.clone())
                    .unwrap_or_default();
                Guard::Skip(format!(
                    "`{}` is false",
                    expr.split_whitespace().collect::<Vec<_>>().join(" ")
                ))
            };
            inputs = inputs.with_guard(task.clone(), guard);
        }
        if let Some(tp) = traceparent {
            inputs = inputs.with_traceparent(tp);
        }
        Ok(sei_engine::compile(&self.definition, &inputs, registry)?)
    }
}

/// Every workflow the operator knows, in trigger priority order.
#[derive(Debug, Default)]
pub struct Catalog {
    workflows: Vec<Workflow>,
}

impl Catalog {
    /// The built-in workflows.
    pub fn builtin() -> Result<Self> {
        Self::from_sources(BUILTIN.iter().copied())
    }

    /// Workflows from (source name, YAML) pairs, in priority order.
    pub fn from_sources<'a>(sources: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let mut catalog = Self::default();
        for (name, text) in sources {
            catalog.add(Workflow::from_yaml(name, text)?)?;
        }
        Ok(catalog)
    }

    /// Adds a workflow after the existing ones.
    pub fn add(&mut self, workflow: Workflow) -> Result<()> {
        if self.get(workflow.name()).is_some() {
            return Err(Error::Duplicate {
                source_name: workflow.definition.source.clone(),
                workflow: workflow.name().to_owned(),
            });
        }
        self.workflows.push(workflow);
        Ok(())
    }

    /// The workflow named `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Workflow> {
        self.workflows.iter().find(|w| w.name() == name)
    }

    /// All workflows, in priority order.
    pub fn iter(&self) -> impl Iterator<Item = &Workflow> {
        self.workflows.iter()
    }

    /// The first workflow for `kind` whose trigger holds.
    pub fn triggered(&self, kind: &str, bindings: &Bindings) -> Result<Option<&Workflow>> {
        for w in self.workflows.iter().filter(|w| w.definition.spec.target == kind) {
            if w.is_triggered(bindings)? {
                return Ok(Some(w));
            }
        }
        Ok(None)
    }

    /// Names of the workflows for `kind` whose trigger holds (all of them, for diagnostics and tests).
    pub fn all_triggered(&self, kind: &str, bindings: &Bindings) -> Result<Vec<&str>> {
        let mut names = Vec::new();
        for w in self.workflows.iter().filter(|w| w.definition.spec.target == kind) {
            if w.is_triggered(bindings)? {
                names.push(w.name());
            }
        }
        Ok(names)
    }
}

/// A user workflow (a WorkflowTemplate's spec) and its place in its namespace's catalogue.
#[derive(Clone, Debug)]
pub struct Template {
    /// The workflow.
    pub workflow: Workflow,
    /// Trigger priority: higher is considered first; built-ins have 0 and come first among equals.
    pub priority: i32,
    /// The built-in this template replaces in its namespace.
    pub overrides: Option<String>,
    /// Disables the built-in named by `overrides` in the namespace (the template's own tasks are ignored).
    pub disabled: bool,
}

impl Template {
    /// Every check that needs no object ([`Workflow::check`]) plus the template's place: a name that is a
    /// built-in's needs `overrides`, `overrides` must name a built-in, `disabled` needs `overrides`.
    /// Returns the plan skeleton (`None` for a disabling template).
    pub fn check(
        &self,
        builtin: &Catalog,
        registry: &(impl TaskTypeRegistry + ?Sized),
    ) -> Result<Option<Plan>> {
        let name = self.workflow.name();
        match &self.overrides {
            Some(target) if builtin.get(target).is_none() => {
                let names: Vec<&str> = builtin.iter().map(Workflow::name).collect();
                return Err(self.workflow.invalid(
                    "overrides",
                    format!(
                        "`{target}` is not a built-in workflow (built-ins: {})",
                        names.join(", ")
                    ),
                ));
            }
            None if builtin.get(name).is_some() => {
                return Err(self.workflow.invalid(
                    "metadata.name",
                    format!(
                        "`{name}` is the name of a built-in workflow: set `overrides: {name}` to replace it in this namespace, or choose another name"
                    ),
                ));
            }
            None if self.disabled => {
                return Err(self.workflow.invalid(
                    "disabled",
                    "needs overrides: the built-in workflow to disable in this namespace".to_owned(),
                ));
            }
            _ => {}
        }
        if self.disabled {
            return Ok(None);
        }
        self.workflow.check(registry).map(Some)
    }
}

impl Catalog {
    /// A namespace's catalogue: `builtin`, then `templates` (already checked with [`Template::check`]) in
    /// trigger priority order (priority descending; among equals built-ins first in their own order, an
    /// override in the place of the built-in it replaces, other templates by name). An override removes its
    /// built-in; a disabling template removes it and adds nothing.
    #[must_use]
    pub fn compose(builtin: &Self, templates: &[Template]) -> Self {
        let replaced: Vec<&str> = templates.iter().filter_map(|t| t.overrides.as_deref()).collect();
        let rank_of = |name: &str| builtin.workflows.iter().position(|w| w.name() == name);
        let mut entries: Vec<(i32, usize, &str, &Workflow)> = builtin
            .workflows
            .iter()
            .enumerate()
            .filter(|(_, w)| !replaced.contains(&w.name()))
            .map(|(rank, w)| (0, rank, w.name(), w))
            .collect();
        for t in templates.iter().filter(|t| !t.disabled) {
            let rank = t
                .overrides
                .as_deref()
                .and_then(rank_of)
                .unwrap_or(builtin.workflows.len());
            entries.push((t.priority, rank, t.workflow.name(), &t.workflow));
        }
        entries.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(b.2)));
        Self {
            workflows: entries.into_iter().map(|(_, _, _, w)| w.clone()).collect(),
        }
    }
}

/// Field names of the derived `node` binding (see the crate docs), for the operator to fill.
pub mod node_facts {
    /// The mode's field name (`fullNode`, `validator`, ...).
    pub const MODE: &str = "mode";
    /// The sei-config mode (`full`, `archive`, `validator`, `seed`).
    pub const CONFIG_MODE: &str = "configMode";
    /// The sidecar image the node should run (its own, else the platform default).
    pub const SIDECAR_IMAGE: &str = "sidecarImage";
    /// The snapshot source object, when the node has one.
    pub const SNAPSHOT: &str = "snapshot";
    /// The state-sync witnesses (`host:port`), present only when the state-sync gate is open.
    pub const STATE_SYNCERS: &str = "stateSyncers";
    /// `sha256:<hex>` of the StatefulSet the spec renders to now (replicas left out), when it renders.
    pub const STATEFULSET_DIGEST: &str = "statefulSetDigest";
}

/// A `node` binding from its facts.
#[must_use]
pub fn node_binding(facts: BTreeMap<&str, Value>) -> Value {
    Value::Object(facts.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

#[cfg(test)]
mod tests;
