//! The state-sync witness gate (reference 3.4), a reconcile reflex: for a node with a snapshot source, the
//! witnesses are `spec.snapshot.rpcServers` when it declares at least two, else the platform's
//! `stateSync.syncers[chainId]` (`SEI_STATE_SYNC_SYNCERS`); fewer than two block the init plan (condition
//! `StateSyncReady` False/`NoSyncersConfigured`, saying how to fix it). The resolved witnesses are the CEL fact
//! `node.stateSyncers`, present only when the gate is open: `node-init`'s trigger waits for it and snapshots it
//! into `configure-state-sync`.
//!
//! `SyncerSourceError` (the reference re-reads a mounted file on every reconcile) cannot happen here: the
//! platform configuration is read and validated once at startup, where a malformed syncer list stops the
//! process.

use sei_crds::SeiNode;
use sei_crds::conditions::{ConditionStatus, reasons};
use sei_tasks::platform::PlatformConfig;

/// What the gate says about one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gate {
    /// The witnesses (`host:port`, sorted, de-duplicated) when the gate is open.
    pub syncers: Option<Vec<String>>,
    /// `StateSyncReady`'s status.
    pub status: ConditionStatus,
    /// Its reason.
    pub reason: &'static str,
    /// Its message.
    pub message: String,
}

fn normalised<'a>(entries: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut out: Vec<String> = entries
        .into_iter()
        .flat_map(|e| e.split(|c: char| c == ',' || c.is_whitespace()))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The gate of `node` under `platform`.
#[must_use]
pub fn gate(node: &SeiNode, platform: &PlatformConfig) -> Gate {
    let Some(snapshot) = node.spec.snapshot_source() else {
        return Gate {
            syncers: None,
            status: ConditionStatus::False,
            reason: reasons::NOT_APPLICABLE,
            message: "the node has no snapshot source".to_owned(),
        };
    };
    let declared = normalised(snapshot.rpc_servers.iter().flatten());
    if declared.len() >= 2 {
        return Gate {
            message: format!(
                "{} rpc-servers declared on spec.snapshot.rpcServers",
                declared.len()
            ),
            syncers: Some(declared),
            status: ConditionStatus::True,
            reason: reasons::READY,
        };
    }
    let chain = &node.spec.chain_id;
    let platform_syncers = normalised(platform.state_sync_syncers.get(chain).into_iter().flatten());
    if platform_syncers.len() >= 2 {
        return Gate {
            message: format!(
                "{} syncers for chain {chain} from the platform configuration (stateSync.syncers)",
                platform_syncers.len()
            ),
            syncers: Some(platform_syncers),
            status: ConditionStatus::True,
            reason: reasons::READY,
        };
    }
    Gate {
        syncers: None,
        status: ConditionStatus::False,
        reason: reasons::NO_SYNCERS_CONFIGURED,
        message: format!(
            "state sync needs at least two RPC witnesses: spec.snapshot.rpcServers declares {} and the platform's \
             stateSync.syncers for chain {chain} has {}; declare two or more host:port entries in \
             spec.snapshot.rpcServers, or in SEI_STATE_SYNC_SYNCERS ({chain}=host:port,host:port); the init waits \
             until then",
            declared.len(),
            platform_syncers.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[allow(clippy::needless_pass_by_value)] // test helper taking json! literals
    fn node(snapshot: serde_json::Value) -> SeiNode {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "sei.io/v1alpha1", "kind": "SeiNode", "metadata": {"name": "n"},
            "spec": {"chainId": "pacific-1", "image": "seid:v1", "fullNode": {"snapshot": snapshot}},
        }))
        .unwrap()
    }

    #[test]
    fn spec_witnesses_win_then_the_platform_then_blocked() {
        let mut platform = PlatformConfig::default();
        let g = gate(
            &node(serde_json::json!({"stateSync": {}, "rpcServers": ["b:1", "a:1"]})),
            &platform,
        );
        assert_eq!((g.status, g.reason), (ConditionStatus::True, reasons::READY));
        assert_eq!(g.syncers.unwrap(), ["a:1", "b:1"]);

        let blocked = gate(&node(serde_json::json!({"stateSync": {}})), &platform);
        assert_eq!(blocked.reason, reasons::NO_SYNCERS_CONFIGURED);
        assert!(blocked.syncers.is_none());
        assert!(
            blocked.message.contains("SEI_STATE_SYNC_SYNCERS"),
            "{}",
            blocked.message
        );

        platform
            .state_sync_syncers
            .insert("pacific-1".into(), vec!["c:1, d:1".into(), "c:1".into()]);
        let g = gate(&node(serde_json::json!({"stateSync": {}})), &platform);
        assert_eq!(g.syncers.unwrap(), ["c:1", "d:1"]);
    }
}
