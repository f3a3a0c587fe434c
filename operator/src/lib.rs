//! The Sei node operator. The binary's `run` command wires these together: a kube-runtime controller per
//! custom resource, each reconcile mapping drift to a workflow (`sei-workflows`), driving its plan with the
//! engine (`sei-engine`) and the task catalogue (`sei-tasks`), and writing status once.

pub mod cli;
pub mod clock;
pub mod context;
pub mod deployment;
pub mod drive;
pub mod error;
pub mod failpoints;
pub mod http;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod node;
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
