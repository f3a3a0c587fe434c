//! Task types known to the compiler: a name and the JSON schema of its params.
//!
//! The engine knows nothing about what a task does; the `tasks` crate owns the implementations
//! and hands the compiler a [`TaskTypeRegistry`] (its own registry, or the [`Registry`] below).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde_json::Value;

/// Lookup of task types for the compiler.
pub trait TaskTypeRegistry {
    /// The JSON schema that params of `task_type` must satisfy, or `None` if the type is unknown.
    /// `Some(&Value::Bool(true))` accepts any params.
    fn params_schema(&self, task_type: &str) -> Option<&Value>;
}

/// A map from task type name to the JSON schema of its params.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Registry {
    types: BTreeMap<String, Value>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `task_type` with an explicit JSON schema (replacing an earlier registration).
    #[must_use]
    pub fn with_schema(mut self, task_type: impl Into<String>, schema: Value) -> Self {
        self.types.insert(task_type.into(), schema);
        self
    }

    /// Registers `task_type` whose params deserialise into `P`, using `schemars::schema_for!(P)`.
    #[must_use]
    pub fn with_params<P: JsonSchema>(self, task_type: impl Into<String>) -> Self {
        let schema = serde_json::to_value(schemars::schema_for!(P)).unwrap_or(Value::Bool(true));
        self.with_schema(task_type, schema)
    }

    /// Registers `task_type` accepting any params.
    #[must_use]
    pub fn with_any_params(self, task_type: impl Into<String>) -> Self {
        self.with_schema(task_type, Value::Bool(true))
    }

    /// Registered type names, sorted.
    pub fn task_types(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(String::as_str)
    }
}

impl TaskTypeRegistry for Registry {
    fn params_schema(&self, task_type: &str) -> Option<&Value> {
        self.types.get(task_type)
    }
}

impl<T: TaskTypeRegistry + ?Sized> TaskTypeRegistry for &T {
    fn params_schema(&self, task_type: &str) -> Option<&Value> {
        (**self).params_schema(task_type)
    }
}
