//! The task catalogue: every task type the built-in workflows use, and the day-2 operations user workflows
//! use (`stop-seid`, `restart-seid`, `reset-data`, `await-condition`, `gov-vote`, `gov-software-upgrade`,
//! `gov-param-change`, `snapshot-now`; their params, outputs and idempotency are in [`sidecar`]), and the
//! bootstrap Job's tasks ([`bootstrap`]).

pub mod bootstrap;
pub mod fleet;
pub mod kube;
pub mod peers;
pub mod sidecar;

use crate::task::Registry;

/// A registry holding every task type of the catalogue.
#[must_use]
pub fn registry() -> Registry {
    let r = Registry::new();
    let r = bootstrap::register(sidecar::register(r));
    peers::register(fleet::register(kube::register(r)))
}
