//! sei-engine (doc written below).

mod compile;
mod definition;
mod executor;
mod plan;
mod reference;
mod registry;
mod retry;
mod schema;
mod time;

pub use compile::{Error, Guard, Inputs, Location, Result, compile};
pub use definition::{BackoffSpec, RetrySpec, TaskSpec, WorkflowDefinition, WorkflowSpec};
pub use executor::{Effect, Event, EventKind, Lifecycle, Observation, TaskRef, Transition, advance, transition};
pub use plan::{
    DEFAULT_POLL_INTERVAL, DriftPolicy, ErrorClass, MAX_ERROR_MESSAGE_BYTES, MAX_OUTPUT_BYTES, Plan, PlanPhase,
    PlanSummary, PlannedTask, RunView, SCHEMA_VERSION, Stop, StopCause, TaskError, TaskRun, TaskState, idempotency_key,
    push_history,
};
pub use registry::{Registry, TaskTypeRegistry};
pub use retry::{DEFAULT_RETRY_ON, RetryPolicy};
pub use time::{Duration, TimeError, Timestamp};
