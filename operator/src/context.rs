//! Shared handles of every reconcile, built once at startup.

use std::sync::Arc;

use crate::templates::Catalogs;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};
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

impl Context {
    /// Publishes a Kubernetes Event about `obj` (best effort), in the background: an Event is a write of its
    /// own, and the reconcile that warrants it does not hold its slot of the controller for it.
    pub fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: Option<String>,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note,
            action: action.to_owned(),
            secondary: None,
        };
        let (recorder, reference) = (self.recorder.clone(), obj.object_ref(&()));
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::debug!(error = &e as &dyn std::error::Error, "Publishing an event failed");
            }
        });
    }
}

/// This process's last successful status write of each object, by object UID: the resourceVersion it replaced
/// and the one it produced.
///
/// The controller's cache can hand a reconcile the object as it was *before* the previous reconcile's status
/// write, until the watch delivers that write. Such a reconcile sees an older journal and would start tasks
/// the journal has already moved past (a sidecar runs a re-submitted `failed` id again). The version a write
/// was based on is, by the write's optimistic-concurrency guard, exactly the one the write replaced, so a
/// reconcile holding that version is stale and must not act.
///
/// The version a write produced is the object exactly as that reconcile left it: its watch event brings
/// nothing the reconcile did not know, and the reconcile already asked to come back when its plan is next due
/// (`Action::requeue`), so the controllers do not let that event trigger another reconcile ([`Self::is_own`]).
/// Any change by someone else makes a new version and still does.
#[derive(Debug, Default)]
pub struct Superseded(std::sync::Mutex<std::collections::HashMap<String, (String, String)>>);

impl Superseded {
    /// Records that a status write based on `replaced` of object `uid` succeeded and produced `written`.
    pub fn record(&self, uid: &str, replaced: &str, written: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(uid.to_owned(), (replaced.to_owned(), written.to_owned()));
        }
    }

    /// True when `resource_version` of `uid` is one that this process's own write replaced.
    pub fn is_stale(&self, uid: &str, resource_version: &str) -> bool {
        self.0.lock().is_ok_and(|m| {
            m.get(uid)
                .is_some_and(|(replaced, _)| replaced == resource_version)
        })
    }

    /// True when `meta` is the version one of this process's own writes replaced or produced: a watch event of
    /// it needs no reconcile (see the type's documentation).
    pub fn is_own(&self, meta: &kube::api::ObjectMeta) -> bool {
        let (Some(uid), Some(version)) = (meta.uid.as_deref(), meta.resource_version.as_deref()) else {
            return false;
        };
        self.0.lock().is_ok_and(|m| {
            m.get(uid)
                .is_some_and(|(replaced, written)| replaced == version || written == version)
        })
    }

    /// Forgets a deleted object.
    pub fn forget(&self, uid: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;

    use super::Superseded;

    fn meta(uid: &str, version: &str) -> ObjectMeta {
        ObjectMeta {
            uid: Some(uid.into()),
            resource_version: Some(version.into()),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn only_the_versions_of_this_process_s_own_write_are_its_own() {
        let s = Superseded::default();
        s.record("a", "10", "11");
        assert!(s.is_stale("a", "10"));
        assert!(!s.is_stale("a", "11"));
        assert!(s.is_own(&meta("a", "10")), "the version the write replaced");
        assert!(s.is_own(&meta("a", "11")), "the version the write produced");
        assert!(
            !s.is_own(&meta("a", "12")),
            "someone else's change after the write"
        );
        assert!(!s.is_own(&meta("b", "11")), "another object");
        assert!(!s.is_own(&ObjectMeta::default()));
        s.record("a", "12", "13");
        assert!(!s.is_own(&meta("a", "11")), "only the last write counts");
        s.forget("a");
        assert!(!s.is_own(&meta("a", "13")));
    }
}
