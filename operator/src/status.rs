//! The one status write of a reconcile, shared by the controllers: guarded by the resourceVersion the
//! reconcile read (409 = `Error::Conflict`, requeued at once), followed, once it succeeded, by what may
//! only happen after the journal is persisted (stale-copy bookkeeping, metrics, the journal's spans).

use std::fmt::Debug;

use kube::Resource;
use kube::api::{Api, PostParams};
use sei_engine::Plan;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::Context;
use crate::error::Error;

/// The plan journals around one write.
pub struct Journal<'a> {
    /// The active plan as read at the start of the reconcile.
    pub before: Option<&'a Plan>,
    /// The plan as this reconcile left it (also when it just finished), if it drove one.
    pub after: Option<&'a Plan>,
    /// The plan the written status holds (`None` once finished or when there is none).
    pub active: Option<&'a Plan>,
}

/// How soon a reconcile that wrote the status of an object with no active plan comes back: its write's own
/// watch event wakes nobody (`Superseded::is_own`), and the triggers must see what it wrote.
pub const AFTER_WRITE: std::time::Duration = std::time::Duration::from_millis(10);

/// How soon a reconcile that found a stale cached copy comes back (the watch usually delivers the write within
/// a few milliseconds; under load, within a few hundred).
const STALE_RETRY: std::time::Duration = std::time::Duration::from_millis(25);

/// `Some(requeue)` when `meta` is a cached copy older than this process's own last status write (see
/// `context::Superseded`): acting on its journal would repeat steps (re-submit a task that has failed since,
/// under the same id). The watch delivers the write soon, but its event does not wake the controller (it is
/// this process's own write, `Superseded::is_own`), so the reconcile comes back shortly to find it.
#[must_use]
pub fn skip_stale(ctx: &Context, meta: &kube::api::ObjectMeta) -> Option<kube::runtime::controller::Action> {
    let uid = meta.uid.as_deref().unwrap_or_default();
    let version = meta.resource_version.as_deref().unwrap_or_default();
    ctx.superseded.is_stale(uid, version).then(|| {
        tracing::debug!(resource_version = %version, "Skipping a stale cached copy");
        kube::runtime::controller::Action::requeue(STALE_RETRY)
    })
}

/// `obj` with `finalizer` added, in the same reconcile: kube's `finalizer` helper adds it and ends the
/// reconcile, so every new object would wait one more turn of the queue (seconds at 1,000 objects) before its
/// first plan. The patch is guarded by the resourceVersion read, like the status write that follows it.
pub async fn with_finalizer<K>(
    api: &Api<K>,
    obj: std::sync::Arc<K>,
    finalizer: &str,
) -> Result<std::sync::Arc<K>, Error>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
{
    let meta = obj.meta();
    if meta.deletion_timestamp.is_some() || meta.finalizers.iter().flatten().any(|f| f == finalizer) {
        return Ok(obj);
    }
    let mut finalizers = meta.finalizers.clone().unwrap_or_default();
    finalizers.push(finalizer.to_owned());
    let patch = serde_json::json!({
        "metadata": {"finalizers": finalizers, "resourceVersion": meta.resource_version},
    });
    let name = meta.name.clone().unwrap_or_default();
    let patched = api
        .patch(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .map_err(Error::Kube)?;
    Ok(std::sync::Arc::new(patched))
}

/// Writes `desired`'s status (the object as read, with its new status) and records what follows the write.
pub async fn write_once<K>(
    ctx: &Context,
    api: &Api<K>,
    desired: &K,
    kind: &str,
    journal: Journal<'_>,
) -> Result<(), Error>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
{
    let meta = desired.meta();
    let name = meta.name.clone().unwrap_or_default();
    let uid = meta.uid.clone().unwrap_or_default();
    let read_version = meta.resource_version.clone().unwrap_or_default();
    crate::failpoints::crash_point("status::before-write");
    ctx.metrics.status_write(kind);
    let written = match api.replace_status(&name, &PostParams::default(), desired).await {
        Ok(written) => written.meta().resource_version.clone().unwrap_or_default(),
        Err(kube::Error::Api(s)) if s.code == 409 => return Err(Error::Conflict),
        Err(e) => return Err(Error::Kube(e)),
    };
    crate::failpoints::crash_point("status::after-write");
    ctx.superseded.record(&uid, &read_version, &written);
    ctx.metrics
        .set_active(&uid, journal.active.map(|p| p.workflow.as_str()));
    if let Some(plan) = journal.active {
        ctx.metrics
            .journal_written(serde_json::to_vec(plan).map_or(0, |v| v.len()));
    }
    if let Some(after) = journal.after {
        crate::spans::record(ctx, journal.before, after).await;
        crate::failpoints::crash_point("status::after-spans");
    }
    Ok(())
}

/// An Event to publish once the status is written: type, reason, note.
pub type PendingEvent = (kube::runtime::events::EventType, &'static str, String);

/// What a reconcile changed in its object's status, for [`finish`].
pub struct Change<'a, K> {
    /// The object as read, with its new status.
    pub desired: K,
    /// The plan journals around the write.
    pub journal: Journal<'a>,
    /// The new phase, when it changed.
    pub new_phase: Option<String>,
}

/// The end of a reconcile, shared by the controllers: the one status write when something changed
/// ([`write_once`]); then, with no active plan, a requeue at once (the write's own watch event wakes nobody,
/// `Superseded::is_own`, and the triggers must see what was written: a probe that found the sidecar not ready
/// starts `mark-ready`); a `PhaseChanged` Event unless a plan Event of this reconcile already tells it (one
/// Event write per transition); then `events` and `after` (Events that never stand in for the phase's), and
/// the requeue.
pub async fn finish<K>(
    ctx: &Context,
    obj: &K,
    kind: &str,
    change: Option<Change<'_, K>>,
    mut events: Vec<PendingEvent>,
    after: Vec<PendingEvent>,
    mut requeue: std::time::Duration,
) -> Result<kube::runtime::controller::Action, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    if let Some(change) = change {
        let no_plan = change.journal.active.is_none();
        let namespace = obj.meta().namespace.clone().unwrap_or_default();
        let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
        write_once(ctx, &api, &change.desired, kind, change.journal).await?;
        if no_plan {
            requeue = requeue.min(AFTER_WRITE);
        }
        if let Some(phase) = change.new_phase
            && events.is_empty()
        {
            events.push((
                kube::runtime::events::EventType::Normal,
                "PhaseChanged",
                format!("phase is now {phase}"),
            ));
        }
    }
    for (type_, reason, note) in events.into_iter().chain(after) {
        ctx.event(obj, type_, reason, "Reconcile", Some(note));
    }
    Ok(kube::runtime::controller::Action::requeue(
        requeue.max(std::time::Duration::from_millis(10)),
    ))
}
