//! Peer resolution as a reconcile reflex (reference 3.3, step 10): resolves `spec.peers` through
//! [`sei_tasks::peers::resolve`] into `status.resolvedPeers`. Only the list changes here: the peers reach the
//! node's config through workflows (the init's `config-apply`, then `node-peers` when the list moves), which
//! the workflow triggers decide.

use std::time::Duration;

use sei_crds::{SeiNode, SeiNodeStatus};

use crate::context::Context;
use crate::error::Error;

/// How soon to look again when a source could not be resolved completely.
pub const RETRY: Duration = Duration::from_secs(5);

/// The node as JSON, as the workflow bindings see it: with the `status.resolvedPeers` of this reconcile.
pub fn with_resolved_peers(node: &SeiNode, status: &SeiNodeStatus) -> Result<serde_json::Value, Error> {
    let mut object = serde_json::to_value(node).map_err(Error::Serialize)?;
    if let Some(map) = object.as_object_mut() {
        let node_status = map
            .entry("status")
            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
        if let Some(s) = node_status.as_object_mut() {
            if status.resolved_peers.is_empty() {
                s.remove("resolvedPeers");
            } else {
                s.insert(
                    "resolvedPeers".to_owned(),
                    serde_json::json!(status.resolved_peers),
                );
            }
        }
    }
    Ok(object)
}

/// Updates `status.resolved_peers` (the caller writes it only when something changed). `Some(RETRY)` when a
/// source was not resolved completely (the prior entries were kept), so the controller looks again soon.
pub async fn reconcile(node: &SeiNode, ctx: &Context, status: &mut SeiNodeStatus) -> Option<Duration> {
    let prior = status.resolved_peers.clone();
    match sei_tasks::peers::resolve(&ctx.client, &ctx.tasks.sidecar, &ctx.ec2, node, &prior).await {
        Ok(resolution) => {
            for problem in &resolution.problems {
                tracing::info!(%problem, "Peer not resolved this time");
            }
            if resolution.peers != prior {
                tracing::info!(peers = resolution.peers.len(), "Resolved peers changed");
            }
            status.resolved_peers = resolution.peers;
            (!resolution.problems.is_empty()).then_some(RETRY)
        }
        Err(e) => {
            // The reference fails the reconcile on a List error; here the prior list stays and the rest of the
            // reconcile (plans, probes) goes on.
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "Listing label-selected peers failed; keeping the prior list"
            );
            Some(RETRY)
        }
    }
}
