//! Shared handles of every reconcile, built once at startup.

use std::sync::Arc;

use kube::runtime::events::Recorder;
use sei_tasks::platform::PlatformConfig;
use sei_tasks::task::{Context as TaskContext, Registry};
use sei_workflows::Catalog;

use crate::metrics::Metrics;

/// Everything a reconcile needs.
pub struct Context {
    /// The Kubernetes client.
    pub client: kube::Client,
    /// What tasks get (client, sidecar client, platform config).
    pub tasks: TaskContext,
    /// Every task type.
    pub registry: Registry,
    /// Every workflow, in trigger priority order.
    pub catalog: Catalog,
    /// Platform configuration.
    pub platform: Arc<PlatformConfig>,
    /// Kubernetes Events.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Exports spans replayed from plan journals (when an OTLP endpoint is configured).
    pub journal: Option<Arc<sei_observability::journal::JournalExporter>>,
}
