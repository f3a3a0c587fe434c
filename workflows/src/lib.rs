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
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A loaded workflow: the definition with its CEL expressions parsed.
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

impl Workflow {
    /// Parses a definition from YAML and compiles its CEL expressions.
    pub fn from_yaml(source_name: &str, text: &str) -> Result<Self> {
        let definition = WorkflowDefinition::from_yaml(source_name, text)?;
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
        let mut inputs = Inputs::new(plan_id, now);
        for (name, program) in &self.params {
            let value = bindings
                .eval(program)
                .map_err(|m| self.eval_error(&format!("params.{name}"), m))?;
            inputs = inputs.with_param(name.clone(), value);
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
}

/// A `node` binding from its facts.
#[must_use]
pub fn node_binding(facts: BTreeMap<&str, Value>) -> Value {
    Value::Object(facts.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

#[cfg(test)]
mod tests;
