//! sei-tasks: the task catalogue of the operator (see DESIGN.md section 2).
//!
//! # Owns, and must not
//! Owns every task type (params schemas, start/poll/cancel, recovery by lookup), the Kubernetes objects they
//! render, the sidecar client and the platform configuration. Must not decide which workflow runs, write an
//! owner's status itself (a task records [`task::StatusUpdates`]; the operator writes once), or keep plan
//! state of its own.

pub mod catalog;
pub mod peers;
pub mod platform;
pub mod resources;
pub mod sidecar;
pub mod task;
