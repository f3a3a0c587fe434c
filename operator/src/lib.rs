//! The Sei node operator. The binary's `run` command wires these together: a kube-runtime controller per
//! custom resource, each reconcile mapping drift to a workflow (`sei-workflows`), driving its plan with the
//! engine (`sei-engine`) and the task catalogue (`sei-tasks`), and writing status once.
//!
//! # Owns, and must not
//! Owns the controllers (SeiNode, SeiNodeDeployment, WorkflowRun), the WorkflowTemplate catalogues and
//! admission webhook, effect execution, the one status write per reconcile, leader fencing, metrics and the
//! CLI. Must not hold task logic (that is `sei-tasks`), advance a plan except through the engine, or name a
//! workflow: what a plan means for its object comes from the workflow's own `onStart`, `onSuccess` and
//! `onFailure` ([`lifecycle`]).

pub mod cli;
pub mod clock;
pub mod context;
pub mod deployment;
pub mod drive;
pub mod endpoint;
pub mod error;
pub mod failpoints;
pub mod http;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod node;
pub mod node_events;
pub mod peers;
pub mod preview;
pub mod run;
pub mod runs;
pub mod spans;
pub mod statesync;
pub mod status;
pub mod templates;
pub mod user;
pub mod viewer;
pub mod webhook;
