//! Shared handles of every reconcile, built once at startup.

use std::sync::Arc;

use crate::templates::Catalogs;
use kube::runtime::events::Recorder;
use sei_tasks::platform::PlatformConfig;
use sei_tasks::task::{Context as TaskContext, Registry};

use crate::metrics::Metrics;

/// Everything a reconcile needs.
pub struct Context {
    /// The Kubernetes client.
    pub client: kube::Client,
    /// What tasks get (client, sidecar client, platform config).
    pub tasks: TaskContext,
    /// Every task type.
    pub registry: Registry,
    /// Every namespace's workflows (built-ins, files, WorkflowTemplates), in trigger priority order.
    pub catalogs: Arc<Catalogs>,
    /// Platform configuration.
    pub platform: Arc<PlatformConfig>,
    /// Kubernetes Events.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Exports spans replayed from plan journals (when an OTLP endpoint is configured).
    pub journal: Option<Arc<sei_observability::journal::JournalExporter>>,
    /// Versions this process's own status writes superseded (see [`Superseded`]).
    pub superseded: Superseded,
    /// Where the `ec2Tags` peer source asks (`SEI_EC2_ENDPOINT`, `AWS_*`).
    pub ec2: sei_tasks::peers::Ec2Settings,
}

/// The resourceVersion each object had when this process last wrote its status successfully, by object UID.
///
/// The controller's cache can hand a reconcile the object as it was *before* the previous reconcile's status
/// write, until the watch delivers that write. Such a reconcile sees an older journal and would start tasks
/// the journal has already moved past (a sidecar runs a re-submitted `failed` id again). The version a write
/// was based on is, by the write's optimistic-concurrency guard, exactly the one the write replaced, so a
/// reconcile holding that version is stale and must not act.
#[derive(Debug, Default)]
pub struct Superseded(std::sync::Mutex<std::collections::HashMap<String, String>>);

impl Superseded {
    /// Records that a status write based on `resource_version` of object `uid` succeeded.
    pub fn record(&self, uid: &str, resource_version: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(uid.to_owned(), resource_version.to_owned());
        }
    }

    /// True when `resource_version` of `uid` is one that this process's own write replaced.
    pub fn is_stale(&self, uid: &str, resource_version: &str) -> bool {
        self.0
            .lock()
            .is_ok_and(|m| m.get(uid).is_some_and(|rv| rv == resource_version))
    }

    /// Forgets a deleted object.
    pub fn forget(&self, uid: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(uid);
        }
    }
}
