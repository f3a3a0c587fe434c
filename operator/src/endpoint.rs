//! `status.endpoint` (reference 1.1.3 and 3.1 step 12): the in-cluster URLs of a full node or archive, set in
//! the reconcile that sees it Running, so it rides on that reconcile's one status write (no write of its own).
//! Never cleared once set.

use sei_crds::{Mode, NodeEndpoint, SeiNode, SeiNodePhase, SeiNodeStatus, ports};

/// The endpoint of node `name` in namespace `ns`: `http://<name>.<ns>.svc:8545`, `ws://…:8546`,
/// `http://…:26657`, `http://…:1317`.
#[must_use]
pub fn endpoint(name: &str, ns: &str) -> NodeEndpoint {
    let host = format!("{name}.{ns}.svc");
    NodeEndpoint {
        evm_json_rpc: Some(format!("http://{host}:{}", ports::EVM_RPC)),
        evm_ws: Some(format!("ws://{host}:{}", ports::EVM_WS)),
        tendermint_rpc: Some(format!("http://{host}:{}", ports::RPC)),
        tendermint_rest: Some(format!("http://{host}:{}", ports::REST)),
    }
}

/// Sets `status.endpoint` when the node is a full node or archive, is Running, and has none yet.
pub fn publish(node: &SeiNode, status: &mut SeiNodeStatus) {
    let serves = matches!(node.spec.mode(), Ok(Mode::FullNode | Mode::Archive));
    if serves && status.phase == Some(SeiNodePhase::Running) && status.endpoint.is_none() {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let ns = node.metadata.namespace.as_deref().unwrap_or_default();
        status.endpoint = Some(endpoint(name, ns));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn node(mode: &str) -> SeiNode {
        let settings = match mode {
            "seed" => serde_json::json!({"nodeKey": {"secret": {"secretName": "k"}}}),
            "replayer" => serde_json::json!({"snapshot": {"s3": {"targetHeight": 1}}}),
            _ => serde_json::json!({}),
        };
        serde_json::from_value(serde_json::json!({
            "apiVersion": "sei.io/v1alpha1", "kind": "SeiNode", "metadata": {"name": "n", "namespace": "ns"},
            "spec": {"chainId": "c", "image": "i", mode: settings},
        }))
        .unwrap()
    }

    #[test]
    fn full_nodes_and_archives_get_an_endpoint_once_running_and_keep_it() {
        let mut status = SeiNodeStatus {
            phase: Some(SeiNodePhase::Initializing),
            ..SeiNodeStatus::default()
        };
        publish(&node("fullNode"), &mut status);
        assert!(status.endpoint.is_none());
        status.phase = Some(SeiNodePhase::Running);
        publish(&node("archive"), &mut status);
        let e = status.endpoint.clone().unwrap();
        assert_eq!(e.evm_json_rpc.as_deref(), Some("http://n.ns.svc:8545"));
        assert_eq!(e.evm_ws.as_deref(), Some("ws://n.ns.svc:8546"));
        assert_eq!(e.tendermint_rpc.as_deref(), Some("http://n.ns.svc:26657"));
        assert_eq!(e.tendermint_rest.as_deref(), Some("http://n.ns.svc:1317"));
        status.phase = Some(SeiNodePhase::Failed);
        publish(&node("fullNode"), &mut status);
        assert_eq!(status.endpoint, Some(e), "never cleared");
        for mode in ["seed", "replayer"] {
            let mut s = SeiNodeStatus {
                phase: Some(SeiNodePhase::Running),
                ..SeiNodeStatus::default()
            };
            publish(&node(mode), &mut s);
            assert!(s.endpoint.is_none(), "{mode}");
        }
    }
}
