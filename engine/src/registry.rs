//! Task types known to the compiler: a name, the JSON schema of its params and, optionally, how
//! often a running attempt of the type is polled when the task does not say.
//!
//! The engine knows nothing about what a task does; the `tasks` crate owns the implementations
//! and hands the compiler a [`TaskTypeRegistry`] (its own registry, or the [`Registry`] below).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde_json::Value;

use crate::time::Duration;

/// Lookup of task types for the compiler.
pub trait TaskTypeRegistry {
    /// The JSON schema that params of `task_type` must satisfy, or `None` if the type is unknown.
    /// `Some(&Value::Bool(true))` accepts any params.
    fn params_schema(&self, task_type: &str) -> Option<&Value>;

    /// How often a running attempt of `task_type` is polled when the task declares no
    /// `pollInterval`; `None` = the plan's interval. A type that learns of its progress another way
    /// (a watch that wakes the object) declares a long one here instead of every workflow repeating
    /// it. The compiler writes it into the plan, so the journal does not depend on the registry.
    fn default_poll_interval(&self, _task_type: &str) -> Option<Duration> {
        None
    }
}

/// A map from task type name to the JSON schema of its params.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Registry {
    types: BTreeMap<String, Value>,
    poll_intervals: BTreeMap<String, Duration>,
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

    /// Sets the default poll interval of `task_type` (see
    /// [`TaskTypeRegistry::default_poll_interval`]).
    #[must_use]
    pub fn with_poll_interval(mut self, task_type: impl Into<String>, every: Duration) -> Self {
        self.poll_intervals.insert(task_type.into(), every);
        self
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

    fn default_poll_interval(&self, task_type: &str) -> Option<Duration> {
        self.poll_intervals.get(task_type).copied()
    }
}

impl<T: TaskTypeRegistry + ?Sized> TaskTypeRegistry for &T {
    fn params_schema(&self, task_type: &str) -> Option<&Value> {
        (**self).params_schema(task_type)
    }

    fn default_poll_interval(&self, task_type: &str) -> Option<Duration> {
        (**self).default_poll_interval(task_type)
    }
}
