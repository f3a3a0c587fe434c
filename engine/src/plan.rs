//! The plan journal: everything needed to keep a workflow running across reconciles and restarts,
//! shaped to live in a resource's `.status.plan` (serde camelCase + a structural JSON schema).
//!
//! A plan is self-sufficient: it keeps each task's type, dependencies, params, retry policy and
//! timeout, but never the definition it was compiled from (only its name, version and digest).
//!
//! To stay small (a 100-validator genesis plan must be well under 64 KiB), a task declared with
//! `forEach` is stored once as a [`PlannedTask`] holding one [`TaskRun`] per item, defaults are not
//! written, and idempotency keys are derived ([`idempotency_key`]) rather than stored.

use std::fmt;
use std::sync::Arc;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::ser::SerializeStruct as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::retry::RetryPolicy;
use crate::time::{Duration, Timestamp};

/// The journal format written by this version of the engine. Older journals are upgraded on read
/// by [`Plan::migrate`]; newer ones are refused by deserialisation (an older operator must never
/// advance a journal whose meaning it does not know).
pub const SCHEMA_VERSION: u32 = 3;
/// Bytes kept of an error message (longer ones are cut on a character boundary, ending in `…`).
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1024;
/// Bytes allowed for a task's outputs, measured as compact JSON. Larger outputs fail the attempt
/// with class [`ErrorClass::Terminal`]: outputs belong in ConfigMaps/Secrets, the journal keeps
/// references.
pub const MAX_OUTPUT_BYTES: usize = 4096;
/// How often in-flight tasks are polled when a definition does not say (`pollInterval`).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// The deadline of a plan whose definition declares none (`deadline`), so that every plan ends.
/// A day: the longest built-in workflow (`ceremony-member`) declares 24h, the others 6h or less.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(24 * 60 * 60);
/// The timeout of a `finally` task that declares none: the deadline does not bind finally tasks (they run
/// whatever the outcome), so without a timeout of their own one could keep a plan from ever ending.
pub const DEFAULT_FINALLY_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Hard cap on a plan's journal, in bytes of compact JSON. [`crate::compile`] refuses a plan over
/// it, and [`Plan::enforce_size_cap`] ends an active plan that grows over it (instead of letting
/// every status write fail). Kubernetes objects are limited to about 1.5 MiB; the cap leaves
/// room for the rest of the status and for the history of finished plans.
pub const MAX_PLAN_BYTES: usize = 256 * 1024;

/// Why a task attempt failed; decides whether the attempt is retried (`retryOn`).
///
/// - `Transient`: might work if tried again (connection refused, 5xx, a lost task).
/// - `Terminal`: will fail again the same way (4xx on submit, a genesis hash mismatch).
/// - `Timeout`: the attempt exceeded the task's `timeout`.
/// - `Conflict`: an optimistic-concurrency conflict (HTTP 409); retried only when listed.
/// - `Invalid`: the plan itself is wrong at run time (an output reference that a finished task
///   did not produce); raised by the engine, never retried by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[allow(
    missing_docs,
    reason = "doc comments on variants would make the CRD schema a `oneOf`; the type doc lists them"
)]
pub enum ErrorClass {
    Transient,
    Terminal,
    Timeout,
    Conflict,
    Invalid,
}

impl ErrorClass {
    /// Every class, in declaration order.
    pub const ALL: [Self; 5] = [
        Self::Transient,
        Self::Terminal,
        Self::Timeout,
        Self::Conflict,
        Self::Invalid,
    ];

    /// The class name as written in YAML and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "Transient",
            Self::Terminal => "Terminal",
            Self::Timeout => "Timeout",
            Self::Conflict => "Conflict",
            Self::Invalid => "Invalid",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The last error of a task: a class and a message of at most [`MAX_ERROR_MESSAGE_BYTES`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TaskError {
    /// What kind of failure this was.
    pub class: ErrorClass,
    /// Human-readable detail, cut to 1 KiB.
    pub message: String,
}

impl TaskError {
    /// An error whose message is cut to [`MAX_ERROR_MESSAGE_BYTES`].
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: truncate(message.into(), MAX_ERROR_MESSAGE_BYTES),
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class, self.message)
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut with `…`.
pub(crate) fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

/// The journal state of one task run.
///
/// `Succeeded` was called `Complete` in schema v1 journals (still accepted on read).
/// `Pending` covers three situations told apart by other fields (see [`crate::Lifecycle`]):
/// never started (`attempt == 0`), waiting for a retry (`nextAttemptAt` set), and start issued but
/// not yet acknowledged (`startedAt` set).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[allow(
    missing_docs,
    reason = "doc comments on variants would make the CRD schema a `oneOf`; the type doc lists them"
)]
pub enum TaskState {
    #[default]
    Pending,
    Running,
    // Schema v1 journals called this state `Complete`. (A plain comment: a doc comment on a
    // variant would turn the schema into a `oneOf`, which Kubernetes rejects.)
    #[serde(alias = "Complete")]
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
}

impl TaskState {
    /// Every state, in declaration order.
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Skipped,
        Self::Cancelled,
    ];

    /// Succeeded, Failed, Skipped or Cancelled: nothing will change this run any more.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Skipped | Self::Cancelled
        )
    }

    /// Succeeded or Skipped: dependents may run.
    pub const fn satisfies_dependents(self) -> bool {
        matches!(self, Self::Succeeded | Self::Skipped)
    }

    #[allow(
        clippy::trivially_copy_pass_by_ref,
        reason = "serde's skip_serializing_if passes a reference"
    )]
    fn is_pending(&self) -> bool {
        *self == Self::Pending
    }
}

/// The phase of a plan. `Active` until every task (finally tasks included) is terminal.
/// `Succeeded` was called `Complete` in schema v1 journals (still accepted on read).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[allow(
    missing_docs,
    reason = "doc comments on variants would make the CRD schema a `oneOf`; the type doc lists them"
)]
pub enum PlanPhase {
    #[default]
    Active,
    // Schema v1 journals called this phase `Complete` (see `TaskState::Succeeded`).
    #[serde(alias = "Complete")]
    Succeeded,
    Failed,
    Cancelled,
}

impl PlanPhase {
    /// Whether the plan has finished.
    pub const fn is_terminal(self) -> bool {
        !matches!(self, Self::Active)
    }
}

/// What the operator does when the workflow's trigger fires again while this plan is active:
/// `Queue` (default) lets the plan finish and re-evaluates the trigger afterwards; `Supersede`
/// calls [`Plan::supersede`] so the plan stops at its next safe point and a fresh plan is
/// compiled; `Reject` keeps the plan and reports the drift as rejected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[allow(
    missing_docs,
    reason = "doc comments on variants would make the CRD schema a `oneOf`; the type doc lists them"
)]
pub enum DriftPolicy {
    #[default]
    Queue,
    Supersede,
    Reject,
}

impl DriftPolicy {
    #[allow(
        clippy::trivially_copy_pass_by_ref,
        reason = "serde's skip_serializing_if passes a reference"
    )]
    fn is_default(&self) -> bool {
        *self == Self::Queue
    }
}

/// Why the normal tasks of a plan stopped early. `TaskFailed`, `DeadlineExceeded` and
/// `JournalTooLarge` end the plan `Failed`; `Cancelled` and `Superseded` end it `Cancelled`.
///
/// - `TaskFailed`: a normal run failed (or was cancelled by its executor).
/// - `DeadlineExceeded`: the plan deadline passed.
/// - `Cancelled`: a caller asked ([`Plan::cancel`]): a user's cancel, recorded with the user's
///   message (for example `"cancelled by alice: wrong image"`); nothing in the engine uses it.
/// - `Superseded`: a newer plan replaces this one ([`Plan::supersede`], `onDrift: Supersede`).
/// - `JournalTooLarge`: the journal grew over [`MAX_PLAN_BYTES`] ([`Plan::enforce_size_cap`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[allow(
    missing_docs,
    reason = "doc comments on variants would make the CRD schema a `oneOf`; the type doc lists them"
)]
pub enum StopCause {
    TaskFailed,
    DeadlineExceeded,
    Cancelled,
    Superseded,
    JournalTooLarge,
}

impl StopCause {
    /// The phase a plan stopped for this cause ends in.
    pub const fn phase(self) -> PlanPhase {
        match self {
            Self::TaskFailed | Self::DeadlineExceeded | Self::JournalTooLarge => PlanPhase::Failed,
            Self::Cancelled | Self::Superseded => PlanPhase::Cancelled,
        }
    }
}

/// A recorded stop: no new normal task starts once this is set; in-flight ones finish (or, for a
/// deadline, are cancelled) and `finally` tasks run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Stop {
    /// What stopped the plan.
    pub cause: StopCause,
    /// Human-readable reason, cut to 1 KiB.
    pub message: String,
}

/// One execution slot of a task: the task itself, or one item of a `forEach` task.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskRun {
    /// The `forEach` item this run is for; absent for a task without `forEach`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// Journal state; absent means `Pending`.
    #[serde(default, skip_serializing_if = "TaskState::is_pending")]
    pub state: TaskState,
    /// Number of the current (or last) attempt, from 1; 0 = never started.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
    /// Earliest time of the next attempt while waiting for a retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Timestamp>,
    /// When the start of the current attempt was issued (cleared when the attempt fails).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When the run reached a terminal state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// The error of the last failed attempt (kept after a later success, for diagnosis).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_task_error"
    )]
    pub error: Option<TaskError>,
    /// Outputs reported by the task when it succeeded (at most 4 KiB of JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub outputs: Option<Value>,
    /// Why the run was (or will be) Skipped (its `when` guard), or why it was Cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The run's `when` guard was false: once its dependencies are satisfied it is recorded
    /// Skipped instead of starting. Waiting for the dependencies keeps the order of the DAG: a
    /// task after a skipped one still runs after the skipped task's own dependencies.
    #[serde(default, skip_serializing_if = "is_false")]
    pub skip: bool,
    /// Deprecated, schema v1 only: attempts that had failed before the current one. Read by
    /// [`Plan::migrate`] and never written.
    #[serde(rename = "retries", default, skip_serializing)]
    pub(crate) legacy_retries: Option<u32>,
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_false(b: &bool) -> bool {
    !*b
}

fn de_task_error<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<TaskError>, D::Error> {
    /// Schema v1 stored the last error as a bare string.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Legacy(String),
        Current { class: ErrorClass, message: String },
    }
    Ok(Option::<Repr>::deserialize(deserializer)?.map(|repr| match repr {
        Repr::Legacy(message) => TaskError::new(ErrorClass::Terminal, message),
        Repr::Current { class, message } => TaskError::new(class, message),
    }))
}

/// A task of the plan: its definition-derived fields plus one [`TaskRun`] per execution slot.
///
/// Serialised by hand so that a settled task (see [`Settled`]) writes its runs as bare items;
/// reading accepts both forms.
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedTask {
    /// Task name, unique in the plan.
    pub name: String,
    /// Task type, a key of the task type registry.
    #[serde(rename = "type")]
    pub task_type: String,
    /// The workflow param whose list this task was expanded over; runs are named `name[item]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<String>,
    /// The object the task acts on; may contain `${ item }`. Absent on a `forEach` task means
    /// "the item itself".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Names of tasks of the same stage (normal or finally) this one waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Params with workflow params already substituted; `${ item }` and
    /// `${ tasks.<name>.outputs.<key> }` are resolved when a run starts. Shared, so that a start
    /// effect of a task without run-time references costs no deep copy.
    #[serde(default = "empty_object", skip_serializing_if = "is_empty_object")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub params: Arc<Value>,
    /// Retry policy; absent = [`RetryPolicy::default`] (a single attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Per-attempt timeout; absent = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// How often a running attempt is polled; absent = the plan's [`Plan::poll_interval`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<Duration>,
    /// Set by [`Plan::compact`] once every run succeeded and nothing still reads their outputs:
    /// the runs then keep only their item (and their attempt where it differs), and this records
    /// their common state and the task's first start and last finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled: Option<Settled>,
    /// One run per `forEach` item (or exactly one run). May be empty for an empty list.
    #[serde(default)]
    pub runs: Vec<TaskRun>,
}

/// The common end of every run of a compacted task ([`Plan::compact`]). In memory each run
/// still carries `state` and `attempt`; in the journal a settled task's runs are written as
/// `{item}` (plus `attempt` where it differs from this one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Settled {
    /// The state of every run (`Succeeded`).
    pub state: TaskState,
    /// The attempt of every run that does not record its own.
    pub attempt: u32,
    /// When the first of the runs' last attempts started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When the last run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
}

/// The journal form of [`PlannedTask`], read as written (see its `Deserialize`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PlannedTaskWire {
    name: String,
    #[serde(rename = "type")]
    task_type: String,
    #[serde(default)]
    for_each: Option<String>,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    depends_on: Vec<String>,
    #[serde(default = "empty_object")]
    params: Arc<Value>,
    #[serde(default)]
    retry: Option<RetryPolicy>,
    #[serde(default)]
    timeout: Option<Duration>,
    #[serde(default)]
    poll_interval: Option<Duration>,
    #[serde(default)]
    settled: Option<Settled>,
    #[serde(default)]
    runs: Vec<TaskRun>,
}

impl<'de> Deserialize<'de> for PlannedTask {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = PlannedTaskWire::deserialize(deserializer)?;
        let mut runs = wire.runs;
        if let Some(settled) = &wire.settled {
            for run in &mut runs {
                run.state = settled.state;
                if run.attempt == 0 {
                    run.attempt = settled.attempt;
                }
            }
        }
        Ok(Self {
            name: wire.name,
            task_type: wire.task_type,
            for_each: wire.for_each,
            target: wire.target,
            depends_on: wire.depends_on,
            params: wire.params,
            retry: wire.retry,
            timeout: wire.timeout,
            poll_interval: wire.poll_interval,
            settled: wire.settled,
            runs,
        })
    }
}

impl Serialize for PlannedTask {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("PlannedTask", 11)?;
        out.serialize_field("name", &self.name)?;
        out.serialize_field("type", &self.task_type)?;
        if let Some(for_each) = &self.for_each {
            out.serialize_field("forEach", for_each)?;
        }
        if let Some(target) = &self.target {
            out.serialize_field("target", target)?;
        }
        if !self.depends_on.is_empty() {
            out.serialize_field("dependsOn", &self.depends_on)?;
        }
        if !is_empty_object(&self.params) {
            out.serialize_field("params", &self.params)?;
        }
        if let Some(retry) = &self.retry {
            out.serialize_field("retry", retry)?;
        }
        if let Some(timeout) = &self.timeout {
            out.serialize_field("timeout", timeout)?;
        }
        if let Some(poll_interval) = &self.poll_interval {
            out.serialize_field("pollInterval", poll_interval)?;
        }
        match &self.settled {
            None => out.serialize_field("runs", &self.runs)?,
            Some(settled) => {
                out.serialize_field("settled", settled)?;
                out.serialize_field("runs", &SettledRuns(&self.runs, settled.attempt))?;
            }
        }
        out.end()
    }
}

/// The runs of a settled task as written: `{item}`, plus `attempt` where it differs.
struct SettledRuns<'a>(&'a [TaskRun], u32);

impl Serialize for SettledRuns<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Bare<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            item: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            attempt: Option<u32>,
        }
        serializer.collect_seq(self.0.iter().map(|run| Bare {
            item: run.item.as_deref(),
            attempt: (run.attempt != self.1).then_some(run.attempt),
        }))
    }
}

pub(crate) fn empty_object() -> Arc<Value> {
    Arc::new(Value::Object(Map::new()))
}

#[allow(clippy::ref_option, reason = "serde's skip_serializing_if passes a reference")]
fn is_empty_object(value: &Arc<Value>) -> bool {
    value.as_object().is_some_and(Map::is_empty)
}

impl PlannedTask {
    /// The name of run `index`: `name` or `name[item]`.
    pub fn run_name(&self, index: usize) -> String {
        match self.runs.get(index).and_then(|run| run.item.as_deref()) {
            Some(item) => format!("{}[{item}]", self.name),
            None => self.name.clone(),
        }
    }

    /// The target of run `index`: the `target` template with `${ item }` substituted, or the item.
    pub fn run_target(&self, index: usize) -> Option<String> {
        let item = self.runs.get(index).and_then(|run| run.item.as_deref());
        match (&self.target, item) {
            (Some(target), Some(item)) => Some(crate::reference::substitute_item(target, item)),
            (Some(target), None) => Some(target.clone()),
            (None, item) => item.map(str::to_owned),
        }
    }

    /// The retry policy in force (the stored one or the default).
    pub fn retry_policy(&self) -> std::borrow::Cow<'_, RetryPolicy> {
        match &self.retry {
            Some(policy) => std::borrow::Cow::Borrowed(policy),
            None => std::borrow::Cow::Owned(RetryPolicy::default()),
        }
    }
}

/// JSON schema of an opaque object: `type: object` + `x-kubernetes-preserve-unknown-fields`.
pub(crate) fn preserve_unknown_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
}

/// The idempotency key of `attempt` of run `task` in plan `plan_id`:
/// UUIDv5 in the namespace `plan_id` over the bytes of `"<task>/<attempt>"`.
///
/// It is the id a task is submitted under (the sidecar's task id), so a start that is issued
/// twice for the same attempt is deduplicated downstream, and a retry (a new attempt) is a new
/// submission. It is derived, never stored.
pub fn idempotency_key(plan_id: Uuid, task: &str, attempt: u32) -> Uuid {
    Uuid::new_v5(&plan_id, format!("{task}/{attempt}").as_bytes())
}

fn legacy_schema_version() -> u32 {
    1
}

fn de_schema_version<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let version = u32::deserialize(deserializer)?;
    if version > SCHEMA_VERSION {
        return Err(serde::de::Error::custom(format!(
            "plan journal schemaVersion {version} is newer than this engine supports ({SCHEMA_VERSION})"
        )));
    }
    Ok(version)
}

/// A compiled, checkpointed workflow run (the `.status.plan` journal).
///
/// Fields are public for reading (status rendering, the CLI, metrics). Mutate a plan only through
/// [`crate::advance`], [`Plan::cancel`], [`Plan::supersede`], [`Plan::pause`], [`Plan::resume`],
/// [`Plan::compact`] and [`Plan::enforce_size_cap`]: the executor caches a derived index of the
/// task graph, which assumes names and dependencies never change after compiling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Journal format version ([`SCHEMA_VERSION`]); absent in schema v1 journals.
    #[serde(default = "legacy_schema_version", deserialize_with = "de_schema_version")]
    pub schema_version: u32,
    /// Random plan id chosen by the caller at compile time; namespace of the idempotency keys.
    pub id: Uuid,
    /// Workflow (definition) name.
    pub workflow: String,
    /// Workflow version as declared; empty when the definition declares none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// `sha256:<hex>` of the definition's canonical JSON.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// Plan phase.
    #[serde(default)]
    pub phase: PlanPhase,
    /// When the plan was compiled (schema v1: `createdAt`).
    #[serde(alias = "createdAt")]
    pub started_at: Timestamp,
    /// When the plan reached a terminal phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// Normal tasks must finish by this instant. Always set from schema v3 on (the definition's
    /// `deadline`, else [`DEFAULT_DEADLINE`]); journals of earlier schemas get
    /// `startedAt + DEFAULT_DEADLINE` on read ([`Plan::migrate`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    /// W3C `traceparent` of the plan's root span (schema v1: `traceContext`).
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "traceContext")]
    pub traceparent: Option<String>,
    /// Most task runs in flight at once; absent = unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    /// Poll interval for in-flight tasks; absent = [`DEFAULT_POLL_INTERVAL`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<Duration>,
    /// Policy for a trigger firing while this plan is active.
    #[serde(default, skip_serializing_if = "DriftPolicy::is_default")]
    pub on_drift: DriftPolicy,
    /// Opaque effect the operator applies while the plan is active (the definition's `onStart`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub on_start: Option<Value>,
    /// Opaque effect handed back in [`crate::Effect::PlanFinished`] when the plan succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub on_success: Option<Value>,
    /// Opaque effect handed back when the plan fails or is cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub on_failure: Option<Value>,
    /// Set once normal tasks must stop starting; the first cause wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Set while the plan is paused ([`Plan::pause`]): when the pause began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<Timestamp>,
    /// Name of the first run that failed (`task` or `task[item]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_task: Option<String>,
    /// Outcome message of a finished plan that did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Normal tasks, in declaration order.
    pub tasks: Vec<PlannedTask>,
    /// Tasks that run after every normal task is terminal, whatever the outcome.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finally: Vec<PlannedTask>,
    #[serde(skip)]
    #[schemars(skip)]
    pub(crate) index: crate::executor::Index,
}

/// A read-only view of one run, as yielded by [`Plan::runs`].
#[derive(Clone, Copy, Debug)]
pub struct RunView<'a> {
    /// The task the run belongs to.
    pub task: &'a PlannedTask,
    /// The run.
    pub run: &'a TaskRun,
    /// Index of the run in `task.runs`.
    pub index: usize,
    /// Whether the task is a `finally` task.
    pub finally: bool,
}

impl RunView<'_> {
    /// `task` or `task[item]`.
    pub fn name(&self) -> String {
        self.task.run_name(self.index)
    }
}

impl Plan {
    /// Deserialises a JSON journal and upgrades it to [`SCHEMA_VERSION`].
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        let mut plan: Self = serde_json::from_str(text)?;
        plan.migrate();
        Ok(plan)
    }

    /// Upgrades an older journal in place to [`SCHEMA_VERSION`]; a no-op on a current one.
    /// [`crate::advance`] calls it first, so callers rarely need to.
    ///
    /// # Migrations
    /// - v1 → v2: v1 runs had no `attempt`, only `retries` (attempts that failed before the
    ///   current one, omitted when 0). It becomes `attempt` (number of the current or last
    ///   attempt): `retries + 1` once the current attempt has started, `retries` otherwise. The renames `createdAt` → `startedAt`,
    ///   `traceContext` → `traceparent`, `Complete` → `Succeeded` and a bare-string `error` are
    ///   handled by deserialisation.
    /// - v2 → v3: a plan without `deadline` gets `startedAt + DEFAULT_DEADLINE` (every plan
    ///   ends; one that already ran longer than that fails by deadline on its next advance).
    ///   v3 also added `pausedAt`, `settled` and the stop cause `JournalTooLarge`, which a v2
    ///   engine would misread: that is why the version changed (a v2 engine refuses v3).
    pub fn migrate(&mut self) {
        if self.schema_version >= SCHEMA_VERSION {
            return;
        }
        if self.schema_version <= 1 {
            for run in self
                .tasks
                .iter_mut()
                .chain(self.finally.iter_mut())
                .flat_map(|t| t.runs.iter_mut())
            {
                let retries = run.legacy_retries.take().unwrap_or(0);
                let started = run.started_at.is_some()
                    || matches!(
                        run.state,
                        TaskState::Running | TaskState::Succeeded | TaskState::Failed
                    );
                run.attempt = retries + u32::from(started);
            }
        }
        if self.schema_version <= 2 && self.deadline.is_none() {
            self.deadline = Some(self.started_at.saturating_add(DEFAULT_DEADLINE));
        }
        self.schema_version = SCHEMA_VERSION;
    }

    /// Whether the plan has finished (its phase is terminal).
    pub fn is_finished(&self) -> bool {
        self.phase.is_terminal()
    }

    /// The idempotency key of `attempt` of run `task` in this plan (see [`idempotency_key`]).
    pub fn idempotency_key(&self, task: &str, attempt: u32) -> Uuid {
        idempotency_key(self.id, task, attempt)
    }

    /// The poll interval in force.
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval.unwrap_or(DEFAULT_POLL_INTERVAL)
    }

    /// Every run, normal tasks first, in declaration and item order.
    pub fn runs(&self) -> impl Iterator<Item = RunView<'_>> {
        let normal = self.tasks.iter().map(|task| (task, false));
        let finally = self.finally.iter().map(|task| (task, true));
        normal.chain(finally).flat_map(|(task, finally)| {
            task.runs.iter().enumerate().map(move |(index, run)| RunView {
                task,
                run,
                index,
                finally,
            })
        })
    }

    /// The run named `name` (`task` or `task[item]`).
    pub fn run(&self, name: &str) -> Option<RunView<'_>> {
        let (task_name, item) = split_run_name(name);
        let (task, finally) = self
            .tasks
            .iter()
            .map(|t| (t, false))
            .chain(self.finally.iter().map(|t| (t, true)))
            .find(|(t, _)| t.name == task_name)?;
        let index = task.runs.iter().position(|run| run.item.as_deref() == item)?;
        Some(RunView {
            task,
            run: &task.runs[index],
            index,
            finally,
        })
    }

    /// Asks the plan to stop at its next safe point and end `Cancelled`: no new normal task
    /// starts, in-flight ones finish, `finally` tasks run. Returns whether the request was
    /// recorded (false if the plan already finished or is already stopping).
    pub fn cancel(&mut self, reason: impl Into<String>) -> bool {
        self.request_stop(StopCause::Cancelled, reason.into())
    }

    /// Like [`Plan::cancel`], recording that a newer plan replaces this one (`onDrift: Supersede`).
    pub fn supersede(&mut self, reason: impl Into<String>) -> bool {
        self.request_stop(StopCause::Superseded, reason.into())
    }

    /// Pauses the plan at `now`: until [`Plan::resume`], [`crate::advance`] returns no effects
    /// and changes nothing (no start, poll, retry, timeout or deadline; the operator does not
    /// requeue a paused plan and waits for the resume). A stop request lifts the pause (see
    /// [`crate::advance`]), so a paused plan can still be cancelled. Returns whether the pause was
    /// recorded (false if the plan is finished or already paused).
    pub fn pause(&mut self, now: Timestamp) -> bool {
        if self.phase.is_terminal() || self.paused_at.is_some() {
            return false;
        }
        self.paused_at = Some(now);
        true
    }

    /// Whether the plan is paused.
    pub fn is_paused(&self) -> bool {
        self.paused_at.is_some()
    }

    /// Resumes a paused plan at `now`. Every clock of the plan moves forward by the paused time,
    /// so a pause never makes a plan fail by deadline or timeout: the deadline, every
    /// `nextAttemptAt`, and the `startedAt` of in-flight attempts (the origin of their timeout).
    /// Returns whether the plan was paused.
    pub fn resume(&mut self, now: Timestamp) -> bool {
        let Some(since) = self.paused_at.take() else {
            return false;
        };
        let paused = now.duration_since(since);
        if paused.is_zero() {
            return true;
        }
        if let Some(deadline) = &mut self.deadline {
            *deadline = deadline.saturating_add(paused);
        }
        for run in self
            .tasks
            .iter_mut()
            .chain(self.finally.iter_mut())
            .flat_map(|t| t.runs.iter_mut())
        {
            if let Some(at) = &mut run.next_attempt_at {
                *at = at.saturating_add(paused);
            }
            if matches!(run.state, TaskState::Pending | TaskState::Running)
                && let Some(started) = &mut run.started_at
            {
                *started = started.saturating_add(paused);
            }
        }
        true
    }

    /// The size of the journal in bytes of compact JSON (as the operator writes it).
    pub fn json_size(&self) -> usize {
        struct Count(usize);
        impl std::io::Write for Count {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0 += buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut count = Count(0);
        match serde_json::to_writer(&mut count, self) {
            Ok(()) => count.0,
            Err(_) => usize::MAX,
        }
    }

    /// Drops what the plan no longer needs, to keep the journal small. Pure and idempotent; the
    /// operator calls it (through [`Plan::enforce_size_cap`]) before each status write, after
    /// deriving the spans of the runs that ended (it drops their timestamps).
    ///
    /// - Outputs of a run are dropped once no run that can still start (any run that is not
    ///   terminal, in either stage) references its task's outputs (`${ tasks.<task>.outputs.* }`).
    /// - The error of an earlier attempt is dropped from a `Succeeded` run.
    /// - A task with at least two runs, all `Succeeded` with nothing else left to keep, is
    ///   settled ([`Settled`]): the runs keep item, state and attempt, the task records the first
    ///   start and last finish, and the journal writes each run as its item alone.
    ///
    /// Returns whether anything changed.
    pub fn compact(&mut self) -> bool {
        let mut referenced: std::collections::HashSet<String> = std::collections::HashSet::new();
        for task in self.tasks.iter().chain(&self.finally) {
            if task.runs.iter().any(|run| !run.state.is_terminal()) {
                output_refs(&task.params, &mut referenced);
            }
        }
        let mut changed = false;
        for task in self.tasks.iter_mut().chain(self.finally.iter_mut()) {
            if task.settled.is_some() {
                continue;
            }
            let keep_outputs = referenced.contains(&task.name);
            for run in &mut task.runs {
                if !run.state.is_terminal() {
                    continue;
                }
                if !keep_outputs && run.outputs.is_some() {
                    run.outputs = None;
                    changed = true;
                }
                if run.state == TaskState::Succeeded && run.error.is_some() {
                    run.error = None;
                    changed = true;
                }
            }
            let settles = task.runs.len() >= 2
                && task.runs.iter().all(|run| {
                    run.state == TaskState::Succeeded
                        && run.outputs.is_none()
                        && run.error.is_none()
                        && run.reason.is_none()
                        && !run.skip
                        && run.next_attempt_at.is_none()
                });
            if settles {
                let mut attempts: std::collections::BTreeMap<u32, usize> = std::collections::BTreeMap::new();
                for run in &task.runs {
                    *attempts.entry(run.attempt).or_default() += 1;
                }
                let attempt = attempts
                    .iter()
                    .max_by_key(|&(attempt, count)| (*count, std::cmp::Reverse(*attempt)))
                    .map_or(1, |(attempt, _)| *attempt);
                task.settled = Some(Settled {
                    state: TaskState::Succeeded,
                    attempt,
                    started_at: task.runs.iter().filter_map(|run| run.started_at).min(),
                    finished_at: task.runs.iter().filter_map(|run| run.finished_at).max(),
                });
                for run in &mut task.runs {
                    run.started_at = None;
                    run.finished_at = None;
                }
                changed = true;
            }
        }
        changed
    }

    fn request_stop(&mut self, cause: StopCause, message: String) -> bool {
        if self.phase.is_terminal() || self.stop.is_some() {
            return false;
        }
        self.stop = Some(Stop {
            cause,
            message: truncate(message, MAX_ERROR_MESSAGE_BYTES),
        });
        true
    }

    /// A compact record of this plan for the bounded history kept in status.
    pub fn summary(&self) -> PlanSummary {
        let error = self
            .failed_task
            .as_deref()
            .and_then(|name| self.run(name))
            .and_then(|v| v.run.error.clone());
        PlanSummary {
            id: self.id,
            workflow: self.workflow.clone(),
            version: self.version.clone(),
            phase: self.phase,
            started_at: self.started_at,
            finished_at: self.finished_at,
            failed_task: self.failed_task.clone(),
            error,
            message: self.message.clone(),
        }
    }
}

/// Adds the names of the tasks whose outputs `value` references to `out`.
fn output_refs(value: &Value, out: &mut std::collections::HashSet<String>) {
    match value {
        Value::String(text) if crate::reference::has_reference(text) => {
            for piece in crate::reference::parse(text).unwrap_or_default() {
                if let crate::reference::Piece::Ref {
                    reference: crate::reference::Ref::Output { task, .. },
                    ..
                } = piece
                {
                    out.insert(task.to_owned());
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| output_refs(item, out)),
        Value::Object(map) => map.values().for_each(|item| output_refs(item, out)),
        _ => {}
    }
}

/// Splits `task[item]` into (`task`, `Some(item)`); a plain name gives (`name`, `None`).
pub(crate) fn split_run_name(name: &str) -> (&str, Option<&str>) {
    if let Some(stripped) = name.strip_suffix(']')
        && let Some(open) = stripped.find('[')
    {
        return (&stripped[..open], Some(&stripped[open + 1..]));
    }
    (name, None)
}

/// A finished plan, as kept in the bounded history in status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanSummary {
    /// Plan id.
    pub id: Uuid,
    /// Workflow name.
    pub workflow: String,
    /// Workflow version; empty when none was declared.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Phase at the time of summarising (terminal for a finished plan).
    pub phase: PlanPhase,
    /// When the plan was compiled.
    pub started_at: Timestamp,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// The first run that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_task: Option<String>,
    /// That run's last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
    /// Outcome message (why the plan failed or was cancelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Appends `summary` to `history`, newest last, keeping at most `limit` entries (oldest dropped).
///
/// # Guarantees
/// Idempotent: an entry with the same plan id is replaced, not duplicated, so a reconcile that is
/// retried after a failed status write does not grow the history.
pub fn push_history(history: &mut Vec<PlanSummary>, summary: PlanSummary, limit: usize) {
    history.retain(|entry| entry.id != summary.id);
    history.push(summary);
    if history.len() > limit {
        let excess = history.len() - limit;
        history.drain(..excess);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(id: u128) -> PlanSummary {
        PlanSummary {
            id: Uuid::from_u128(id),
            workflow: "w".into(),
            version: String::new(),
            phase: PlanPhase::Succeeded,
            started_at: Timestamp::from_unix_millis(0),
            finished_at: None,
            failed_task: None,
            error: None,
            message: None,
        }
    }

    #[test]
    fn history_is_bounded_newest_last_and_deduplicated() {
        let mut history = Vec::new();
        for id in 1..=5 {
            push_history(&mut history, summary(id), 3);
        }
        push_history(&mut history, summary(5), 3);
        let ids: Vec<u128> = history.iter().map(|s| s.id.as_u128()).collect();
        assert_eq!(ids, [3, 4, 5]);
        push_history(&mut history, summary(6), 0);
        assert!(history.is_empty());
    }

    #[test]
    fn error_messages_are_cut_to_one_kib_on_a_char_boundary() {
        let long = "é".repeat(2000);
        let error = TaskError::new(ErrorClass::Transient, long);
        assert!(error.message.len() <= MAX_ERROR_MESSAGE_BYTES);
        assert!(error.message.ends_with('…'));
        assert_eq!(TaskError::new(ErrorClass::Terminal, "short").message, "short");
    }

    #[test]
    fn idempotency_keys_are_uuid_v5_of_plan_task_and_attempt() {
        let plan = Uuid::from_u128(42);
        let key = idempotency_key(plan, "config", 1);
        assert_eq!(key.get_version_num(), 5);
        assert_eq!(key, Uuid::new_v5(&plan, b"config/1"));
        assert_ne!(key, idempotency_key(plan, "config", 2));
        assert_ne!(key, idempotency_key(Uuid::from_u128(43), "config", 1));
    }

    #[test]
    fn run_names_split_into_task_and_item() {
        assert_eq!(split_run_name("gentx[node-1]"), ("gentx", Some("node-1")));
        assert_eq!(split_run_name("config"), ("config", None));
    }

    #[test]
    fn newer_journals_are_refused() {
        let json = r#"{"schemaVersion": 99, "id": "00000000-0000-0000-0000-000000000001",
            "workflow": "w", "startedAt": "2026-01-01T00:00:00Z", "tasks": []}"#;
        let err = Plan::from_json(json).unwrap_err().to_string();
        assert!(err.contains("newer than this engine supports"), "{err}");
    }
}
