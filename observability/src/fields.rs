//! Span names and attribute keys, shared so that dashboards and tests name them once.
//! OpenTelemetry semantic conventions where they exist, the `workflow.*` / `task.*` namespace otherwise.

/// Kubernetes namespace of the object being reconciled.
pub const K8S_NAMESPACE: &str = "k8s.namespace.name";
/// Name of the object being reconciled.
pub const K8S_RESOURCE_NAME: &str = "k8s.resource.name";
/// Kind of the object being reconciled.
pub const K8S_RESOURCE_KIND: &str = "k8s.resource.kind";
/// The plan's id.
pub const WORKFLOW_ID: &str = "workflow.id";
/// The workflow's name.
pub const WORKFLOW_NAME: &str = "workflow.name";
/// The workflow's version.
pub const WORKFLOW_VERSION: &str = "workflow.version";
/// The task's name within its plan.
pub const TASK_NAME: &str = "task.name";
/// The task's type (its kind in the registry).
pub const TASK_TYPE: &str = "task.type";
/// The attempt number, from 1.
pub const TASK_ATTEMPT: &str = "task.attempt";
/// The attempt's idempotency key.
pub const TASK_IDEMPOTENCY_KEY: &str = "task.idempotency_key";
/// The object a task acts on.
pub const TASK_TARGET: &str = "task.target";
/// How an attempt or plan ended.
pub const OUTCOME: &str = "outcome";
/// The class of an error (transient, terminal, ...).
pub const ERROR_CLASS: &str = "error.class";
