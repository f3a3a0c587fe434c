//! `WorkflowTemplate` and `WorkflowRun`: lifecycle workflows as a Kubernetes API (DESIGN.md, "Workflows as an
//! API").
//!
//! A template's `spec` is the workflow definition format of `workflows/definitions/*.yaml`, plus `priority`,
//! `overrides` and `disabled`; the operator checks it without an object (the engine's static compile) at
//! admission, through its validating webhook, and reports the outcome on the `Valid` condition. A run asks for
//! one workflow to run against a SeiNode or SeiNodeDeployment (by name or label selector); it queues behind
//! the target's active plan and then runs as that target's plan, checkpointed in the target's `.status.plan`.

// The `KubeSchema` derive copies each annotated struct, `pub` included, into a function body to build its
// schema; those copies trip `unreachable_pub`. Every public type here is re-exported from the crate root.
#![allow(unreachable_pub)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use sei_engine::WorkflowSpec;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::conditions::Condition;

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_false(value: &bool) -> bool {
    !*value
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(value: &i32) -> bool {
    *value == 0
}

/// `Valid`: the template compiled without an object (`True`), or why not (`False`, the compiler's message).
pub const VALID: &str = "Valid";
/// Reason of `Valid=True`.
pub const REASON_COMPILED: &str = "Compiled";
/// Reason of `Valid=False`.
pub const REASON_INVALID: &str = "Invalid";

/// A lifecycle workflow: a DAG of tasks for SeiNodes or SeiNodeDeployments, triggered by drift (`trigger`) or
/// run on demand by a WorkflowRun.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sei.io",
    version = "v1alpha1",
    kind = "WorkflowTemplate",
    plural = "workflowtemplates",
    shortname = "swt",
    category = "sei",
    namespaced,
    status = "WorkflowTemplateStatus",
    derive = "PartialEq",
    doc = "A lifecycle workflow for SeiNodes or SeiNodeDeployments: a DAG of tasks, triggered by drift of its \
           target or run by a WorkflowRun.",
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".spec.target",
        description = "Target kind"
    ),
    printcolumn(
        name = "Valid",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Valid\")].status",
        description = "Whether the template compiles"
    ),
    printcolumn(name = "Tasks", type_ = "integer", json_path = ".status.taskCount"),
    printcolumn(
        name = "Priority",
        type_ = "integer",
        json_path = ".spec.priority",
        priority = 1
    ),
    printcolumn(
        name = "Overrides",
        type_ = "string",
        json_path = ".spec.overrides",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = Rule::new("!has(self.disabled) || !self.disabled || has(self.overrides)")
        .message("disabled needs overrides: the built-in workflow to disable in this namespace")
        .field_path(".disabled"),
    validation = Rule::new("(has(self.disabled) && self.disabled) || (has(self.tasks) && size(self.tasks) > 0)")
        .message("the workflow has no tasks")
        .field_path(".tasks")
)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowTemplateSpec {
    /// The workflow definition (the format of `workflows/definitions/*.yaml`).
    #[serde(flatten)]
    pub workflow: WorkflowSpec,
    /// Trigger priority: workflows with a higher priority are considered first; built-ins have 0 and come first
    /// among equals.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i32,
    /// The built-in workflow this template replaces in its namespace; without it, a template named like a
    /// built-in is rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100))]
    pub overrides: Option<String>,
    /// Disables the built-in named by `overrides` in this namespace (its own tasks are ignored).
    #[serde(default, skip_serializing_if = "is_false")]
    pub disabled: bool,
}

/// What the operator found when it checked the template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowTemplateStatus {
    /// The `metadata.generation` the status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Valid`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Digest of the compiled definition (`sha256:…`), the one its plans record in `status.plan.digest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Tasks in the definition (normal and finally).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_count: Option<u32>,
}

/// The workflow a run starts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowRef {
    /// Name of a WorkflowTemplate of the run's namespace, or of a built-in workflow.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Kinds a run may target.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RunTargetKind {
    /// A SeiNode.
    SeiNode,
    /// A SeiNodeDeployment.
    SeiNodeDeployment,
}

impl RunTargetKind {
    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SeiNode => "SeiNode",
            Self::SeiNodeDeployment => "SeiNodeDeployment",
        }
    }
}

/// The objects a run targets: one by name, or every match of a label selector in the run's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunTarget {
    /// Kind of the targets.
    pub kind: RunTargetKind,
    /// One target by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Every object of `kind` matching this selector (one plan each, at most `maxParallel` at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// An on-demand run of a workflow against SeiNodes or SeiNodeDeployments.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sei.io",
    version = "v1alpha1",
    kind = "WorkflowRun",
    plural = "workflowruns",
    shortname = "swr",
    category = "sei",
    namespaced,
    status = "WorkflowRunStatus",
    derive = "PartialEq",
    doc = "An on-demand run of a workflow against a SeiNode or SeiNodeDeployment (by name or selector): it \
           queues behind the target's active plan, then runs as the target's plan.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Workflow", type_ = "string", json_path = ".spec.workflowRef.name"),
    printcolumn(name = "Kind", type_ = "string", json_path = ".spec.target.kind"),
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.target.name"),
    printcolumn(name = "Plan", type_ = "string", json_path = ".status.planId", priority = 1),
    printcolumn(
        name = "Failed-task",
        type_ = "string",
        json_path = ".status.failedTask",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = Rule::new("has(self.target.name) != has(self.target.selector)")
        .message("set exactly one of target.name and target.selector")
        .field_path(".target"),
    validation = Rule::new("self == oldSelf").message("spec is immutable: create a new WorkflowRun")
)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowRunSpec {
    /// The workflow to run.
    pub workflow_ref: WorkflowRef,
    /// What it runs against.
    pub target: RunTarget,
    /// Values of the workflow's params (replacing their CEL expressions); a name the workflow does not declare
    /// fails the run.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schemars(schema_with = "crate::schema::json_value_map")]
    pub params: Map<String, Value>,
    /// Most targets running the workflow at once (a selector run); default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_parallel: Option<u32>,
    /// Seconds after the run finished when it is deleted; kept when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<u32>,
}

/// Phase of a run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RunPhase {
    /// Waiting for its targets (their active plans) or not started yet.
    Pending,
    /// At least one target runs the workflow.
    Running,
    /// Every target's plan succeeded.
    Succeeded,
    /// A target's plan failed or could not be built.
    Failed,
    /// The run was deleted, or a target's plan was cancelled.
    Cancelled,
}

impl RunPhase {
    /// Whether the run is over.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// The phase's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Cancelled => "Cancelled",
        }
    }
}

/// One target of a run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunTargetStatus {
    /// The target's name.
    pub name: String,
    /// Its phase in this run.
    pub phase: RunPhase,
    /// The plan id (chosen before the plan is written into the target's status, so a restart finds it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    /// The trace id of the plan (Jaeger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The run that failed first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_task: Option<String>,
    /// Why the plan failed, was cancelled, or is waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Progress of a run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowRunStatus {
    /// Overall phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RunPhase>,
    /// The plan id (the first target's, for a run by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    /// Its trace id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The first failed task (`target/task` for a selector run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_task: Option<String>,
    /// Why the run failed, or what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Every target, in name order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<RunTargetStatus>,
    /// When the run finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}
