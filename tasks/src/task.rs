//! The task contract: what the operator calls when the engine says `StartTask` or `PollTask`.
//!
//! A task type implements [`Task`]: `start` is an idempotent command (it may run again after a crash, under
//! the same idempotency key), `poll` a query of the attempt in flight. Both answer an [`Outcome`], which the
//! operator turns into the engine's observation with [`Outcome::into_event`]:
//!
//! | outcome | start | poll |
//! |---|---|---|
//! | `Accepted` | `StartAccepted` | `Running` |
//! | `Running` | `StartAccepted` | `Running` |
//! | `Done(outputs)` | `Completed` | `Completed` |
//! | `Failed(error)` | `StartRejected` (consumes the attempt) | `Failed` (consumes the attempt) |
//! | `NotFound` | — (no observation) | `NotFound` (never received: start again; lost: attempt fails) |
//! | `Unavailable` | — (no observation) | — (no observation) |
//!
//! `Unavailable` is for "could not learn anything now" (the sidecar is not reachable yet, a transient API
//! error): it consumes no attempt, the run stays in flight and is polled again at the next requeue, bounded
//! by the task's timeout and the plan's deadline. This is how a sidecar task waits for its pod without
//! burning its retry budget, while a sidecar `failed` does consume one (DESIGN.md section 5, item 3).
//!
//! Tasks never decide which workflow runs; they may record what they learned on the owner's status through
//! [`StatusUpdates`] (conditions, `currentImage`, ...), which the operator folds into its single status write.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use sei_engine::{ErrorClass, Event, TaskError, TaskRef, TaskTypeRegistry};
use serde_json::{Map, Value};

use crate::platform::PlatformConfig;
use crate::sidecar;

/// What a start or a poll found out.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The start was accepted; the work goes on.
    Accepted,
    /// Still working.
    Running,
    /// Finished successfully, with outputs (small: at most 4 KiB in the journal).
    Done(Map<String, Value>),
    /// The attempt failed.
    Failed(TaskError),
    /// The executor does not know this attempt (sidecar 404).
    NotFound,
    /// Nothing could be learned now (transient); no observation, try again at the next poll.
    Unavailable(String),
}

impl Outcome {
    /// A finished outcome without outputs.
    #[must_use]
    pub fn done() -> Self {
        Self::Done(Map::new())
    }

    /// A failed attempt of class `class`.
    #[must_use]
    pub fn failed(class: ErrorClass, message: impl Into<String>) -> Self {
        Self::Failed(TaskError::new(class, message))
    }

    /// A terminal failure (retrying will not help).
    #[must_use]
    pub fn terminal(message: impl Into<String>) -> Self {
        Self::failed(ErrorClass::Terminal, message)
    }

    /// The engine observation for this outcome of a start (`poll == false`) or a poll; `None` when there is
    /// nothing to report (see the module table).
    #[must_use]
    pub fn into_event(self, poll: bool) -> Option<Event> {
        match (self, poll) {
            (Self::Accepted | Self::Running, false) => Some(Event::StartAccepted),
            (Self::Accepted | Self::Running, true) => Some(Event::Running),
            (Self::Done(outputs), _) => Some(Event::Completed(outputs)),
            (Self::Failed(e), false) => Some(Event::StartRejected(e)),
            (Self::Failed(e), true) => Some(Event::Failed(e)),
            (Self::NotFound, true) => Some(Event::NotFound),
            (Self::NotFound | Self::Unavailable(_), _) => None,
        }
    }
}

/// Changes a task makes to the status of the plan's owner, applied by the operator in its one status write.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatusUpdates {
    /// Conditions to set (by type).
    pub conditions: Vec<Condition>,
    /// Top-level status fields to set (camelCase JSON name -> value), e.g. `currentImage`.
    pub fields: BTreeMap<String, Value>,
}

/// A shared, thread-safe sink for [`StatusUpdates`]: tasks of one reconcile run concurrently.
#[derive(Clone, Debug, Default)]
pub struct StatusSink(Arc<Mutex<StatusUpdates>>);

impl StatusSink {
    /// Sets a condition (replacing one of the same type recorded earlier in this reconcile).
    pub fn set_condition(&self, condition: Condition) {
        if let Ok(mut u) = self.0.lock() {
            u.conditions.retain(|c| c.type_ != condition.type_);
            u.conditions.push(condition);
        }
    }

    /// Sets a top-level status field.
    pub fn set_field(&self, name: &str, value: Value) {
        if let Ok(mut u) = self.0.lock() {
            u.fields.insert(name.to_owned(), value);
        }
    }

    /// Everything recorded so far, leaving the sink empty.
    #[must_use]
    pub fn take(&self) -> StatusUpdates {
        self.0
            .lock()
            .map(|mut u| std::mem::take(&mut *u))
            .unwrap_or_default()
    }
}

/// Shared handles every task may use, built once by the operator.
#[derive(Clone)]
pub struct Context {
    /// The Kubernetes client.
    pub client: kube::Client,
    /// The sidecar client (URL template, token, timeout).
    pub sidecar: sidecar::Client,
    /// Platform configuration.
    pub platform: Arc<PlatformConfig>,
    /// The operator's cache of node pods (label `sei.io/node`), filled by the watch that also wakes the
    /// node controller; tasks that wait on a pod read it here instead of polling the apiserver. `None`
    /// (tests, tools): they read the pod from the apiserver.
    pub pods: Option<kube::runtime::reflector::Store<k8s_openapi::api::core::v1::Pod>>,
}

impl Context {
    /// The pod `name` in `namespace`: from the operator's cache when it has one (and has listed once), else
    /// from the apiserver.
    ///
    /// # Errors
    /// The apiserver's error when the pod is read from it.
    pub async fn pod(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<k8s_openapi::api::core::v1::Pod>>, kube::Error> {
        let ready = |s: &&kube::runtime::reflector::Store<_>| {
            futures::FutureExt::now_or_never(s.wait_until_ready()).is_some_and(|r| r.is_ok())
        };
        if let Some(store) = self.pods.as_ref().filter(ready) {
            return Ok(store.get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace)));
        }
        let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(self.client.clone(), namespace);
        Ok(api.get_opt(name).await?.map(Arc::new))
    }
}

/// One attempt to start or poll.
#[derive(Clone, Debug)]
pub struct Invocation {
    /// Namespace of the plan's owner (and of every object the task acts on).
    pub namespace: String,
    /// Kind of the plan's owner (`SeiNode`, `SeiNodeDeployment`).
    pub owner_kind: String,
    /// Name of the plan's owner.
    pub owner: String,
    /// The run and attempt (its idempotency key is `task.key`).
    pub task: TaskRef,
    /// Resolved params.
    pub params: Value,
    /// `traceparent` to pass on (the attempt's span).
    pub traceparent: Option<String>,
    /// Where to record status changes of the owner.
    pub status: StatusSink,
    /// The owner object as JSON (read-only snapshot of this reconcile).
    pub owner_object: Arc<Value>,
}

impl Invocation {
    /// The name of the object the task acts on: its `target`, else the owner.
    #[must_use]
    pub fn target(&self) -> &str {
        self.task.target.as_deref().unwrap_or(&self.owner)
    }

    /// The params deserialised into `P`, or a terminal failure naming the task type.
    pub fn params<P: serde::de::DeserializeOwned>(&self) -> Result<P, Outcome> {
        serde_json::from_value(self.params.clone()).map_err(|e| {
            Outcome::failed(
                ErrorClass::Invalid,
                format!("invalid params for {}: {e}", self.task.task_type),
            )
        })
    }
}

/// A task type.
pub trait Task: Send + Sync + 'static {
    /// The kebab-case type name used in workflow YAML and in the journal.
    fn task_type(&self) -> &'static str;
    /// JSON schema of the params (checked by the compiler).
    fn params_schema(&self) -> Value;
    /// How often a running attempt is polled when the workflow's task declares no `pollInterval`; `None` = the
    /// plan's interval. A task woken another way (a watch on what it waits for) polls rarely, as a fallback.
    fn poll_interval(&self) -> Option<sei_engine::Duration> {
        None
    }
    /// Starts the attempt `inv.task.key`; must be idempotent.
    fn start<'a>(&'a self, cx: &'a Context, inv: &'a Invocation) -> BoxFuture<'a, Outcome>;
    /// Reports on the attempt in flight.
    fn poll<'a>(&'a self, cx: &'a Context, inv: &'a Invocation) -> BoxFuture<'a, Outcome>;
    /// Best-effort cancel (timeouts, deadlines); the journal already records the outcome.
    fn cancel<'a>(&'a self, _cx: &'a Context, _inv: &'a Invocation) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// The schema of params type `P`, as the compiler wants it.
#[must_use]
pub fn schema_of<P: schemars::JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(P)).unwrap_or(Value::Bool(true))
}

/// Every task type the operator can run, by type name.
#[derive(Clone, Default)]
pub struct Registry {
    tasks: BTreeMap<&'static str, (Arc<dyn Task>, Value)>,
}

impl Registry {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a task type.
    #[must_use]
    pub fn with(mut self, task: impl Task) -> Self {
        let schema = task.params_schema();
        self.tasks.insert(task.task_type(), (Arc::new(task), schema));
        self
    }

    /// The task type named `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Task>> {
        self.tasks.get(name).map(|(t, _)| t)
    }

    /// Registered type names, sorted.
    pub fn task_types(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.tasks.keys().copied()
    }
}

impl TaskTypeRegistry for Registry {
    fn params_schema(&self, task_type: &str) -> Option<&Value> {
        self.tasks.get(task_type).map(|(_, s)| s)
    }

    fn default_poll_interval(&self, task_type: &str) -> Option<sei_engine::Duration> {
        self.tasks.get(task_type).and_then(|(t, _)| t.poll_interval())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_map_to_the_engine_observations_of_the_contract_table() {
        let err = TaskError::new(ErrorClass::Terminal, "no");
        assert_eq!(Outcome::Accepted.into_event(false), Some(Event::StartAccepted));
        assert_eq!(Outcome::Running.into_event(true), Some(Event::Running));
        assert_eq!(
            Outcome::done().into_event(false),
            Some(Event::Completed(Map::new()))
        );
        assert_eq!(
            Outcome::Failed(err.clone()).into_event(false),
            Some(Event::StartRejected(err.clone()))
        );
        assert_eq!(
            Outcome::Failed(err.clone()).into_event(true),
            Some(Event::Failed(err))
        );
        assert_eq!(Outcome::NotFound.into_event(true), Some(Event::NotFound));
        assert_eq!(Outcome::NotFound.into_event(false), None);
        assert_eq!(Outcome::Unavailable("down".into()).into_event(true), None);
        assert_eq!(Outcome::Unavailable("down".into()).into_event(false), None);
    }

    #[test]
    fn status_sink_keeps_the_last_condition_of_each_type() {
        let sink = StatusSink::default();
        let cond = |status: &str| Condition {
            type_: "SigningKeyReady".into(),
            status: status.into(),
            reason: "Test".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
        };
        sink.set_condition(cond("False"));
        sink.set_condition(cond("True"));
        sink.set_field("currentImage", Value::from("v2"));
        let u = sink.take();
        assert_eq!(u.conditions.len(), 1);
        assert_eq!(u.conditions[0].status, "True");
        assert_eq!(u.fields["currentImage"], "v2");
        assert_eq!(sink.take(), StatusUpdates::default(), "take empties the sink");
    }
}
