//! Pure resource generators: the Kubernetes objects of one SeiNode (reference section 4).
//!
//! Each generator is a pure function of the [`SeiNode`] and the
//! [`PlatformConfig`](crate::platform::PlatformConfig): no API calls, no clock, no environment. The apply tasks
//! server-side-apply what they return.
//!
//! | generator | object |
//! |---|---|
//! | [`statefulset`] | the single-replica StatefulSet (0 replicas when paused), see [`statefulset`] for its shape |
//! | [`headless_service`] | the headless Service `<node>` giving the pod its stable DNS name |
//! | [`data_pvc`] | the data volume `data-<node>` (not for an imported PVC, see [`data_pvc_name`]) |
//! | [`rbac_proxy_config_map`] | the kube-rbac-proxy authorization config, when the proxy is rendered |
//! | [`bootstrap_job`], [`bootstrap_service`] | the bootstrap Job `<node>-bootstrap` and its Service, for a `bootstrapImage` |
//!
//! Every object carries [`resource_labels`] and a controller ownerReference to the SeiNode. The reference needs
//! the node's `metadata.uid`; a node without one (only a node built in code, never one read from the API) gets no
//! ownerReference rather than one the apiserver would reject.
//!
//! Key material is contained: [`check_secret_containment`] runs on every rendered pod and refuses to render when
//! the signing key, node key, operator keyring or keyring passphrase would reach a container other than the ones
//! allowed (reference section 10 item 37); [`check_probe_contract`] refuses probes that would kill or gate seid
//! on its RPC (item 34).

mod bootstrap;
mod checks;
mod pvc;
pub(crate) mod quantity;
mod rbac_proxy;
mod service;
mod statefulset;
mod template;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use sei_crds::{Mode, SeiNode, labels};

pub use bootstrap::{
    bootstrap_job, bootstrap_job_name, bootstrap_labels, bootstrap_of, bootstrap_service,
    check_no_key_material,
};
pub use checks::{check_probe_contract, check_secret_containment};
pub use pvc::{data_pvc, data_pvc_name};
pub use rbac_proxy::{rbac_proxy_config_map, rbac_proxy_config_map_name};
pub use service::headless_service;
pub use statefulset::statefulset;
pub use template::statefulset_digest;

/// `$HOME` of every node container.
pub const HOME_DIR: &str = "/home/nonroot";
/// seid's home (`--home`, `SEI_HOME`) and the data volume's mount point; a child of [`HOME_DIR`].
pub const DATA_DIR: &str = "/home/nonroot/.sei";
/// UID and GID every container runs as, and the pod's `fsGroup`.
pub const NON_ROOT_ID: i64 = 65532;
/// Port of cosmos-exporter's metrics.
pub const COSMOS_EXPORTER_PORT: u16 = 9300;

/// Container name of seid.
pub const SEID: &str = "seid";
/// Init container name of `seid init`.
pub const SEID_INIT: &str = "seid-init";
/// Init container (native sidecar) name of `seictl serve`.
pub const SIDECAR: &str = "sei-sidecar";
/// Init container (native sidecar) name of kube-rbac-proxy.
pub const RBAC_PROXY: &str = "kube-rbac-proxy";
/// Container name of cosmos-exporter.
pub const COSMOS_EXPORTER: &str = "cosmos-exporter";

/// Port name of kube-rbac-proxy (and of the Service port in front of it).
pub const PORT_NAME_API: &str = "api";
/// Port name of the sidecar.
pub const PORT_NAME_SIDECAR: &str = "sidecar";

/// The seid ports in sei-config order: `(name, port)`.
pub const SEID_PORTS: [(&str, u16); 7] = [
    ("evm-rpc", sei_crds::ports::EVM_RPC),
    ("evm-ws", sei_crds::ports::EVM_WS),
    ("grpc", sei_crds::ports::GRPC),
    ("rest", sei_crds::ports::REST),
    ("p2p", sei_crds::ports::P2P),
    ("rpc", sei_crds::ports::RPC),
    ("metrics", sei_crds::ports::METRICS),
];

/// Result alias of this module.
pub type Result<T, E = RenderError> = std::result::Result<T, E>;

/// Why an object cannot be rendered. Every variant names the node and what is wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    /// The node has no `metadata.name`.
    #[error("the SeiNode has no metadata.name")]
    MissingName,
    /// The node has no `metadata.namespace`.
    #[error("SeiNode {node} has no metadata.namespace")]
    MissingNamespace {
        /// The node.
        node: String,
    },
    /// Not exactly one mode is set (admission prevents this; only specs built in code get here).
    #[error("SeiNode {node}: {source}")]
    Mode {
        /// The node.
        node: String,
        /// What is wrong with the modes.
        #[source]
        source: sei_crds::Error,
    },
    /// `spec.sidecar.port` is not a usable port.
    #[error("SeiNode {node}: sidecar port {port} is out of range 1..=65535")]
    InvalidSidecarPort {
        /// The node.
        node: String,
        /// The port in the spec.
        port: i32,
    },
    /// Two containers of the pod would listen on the same port.
    #[error("SeiNode {node}: port {port} of container {container} is already used by {other}")]
    PortConflict {
        /// The node.
        node: String,
        /// The port.
        port: u16,
        /// The container whose port collides.
        container: String,
        /// The container or port that already uses it.
        other: String,
    },
    /// A configured quantity cannot be used (the platform config checks them at startup; a config built in code
    /// can still hold a bad one).
    #[error("SeiNode {node}: {field}: {reason}")]
    InvalidQuantity {
        /// The node.
        node: String,
        /// The configuration field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Key material would reach a container that must not see it.
    #[error("SeiNode {node}: {kind} secret {secret} would be mounted into container {container}")]
    SecretLeak {
        /// The node.
        node: String,
        /// `signing key`, `node key`, `operator keyring` or `operator keyring passphrase`.
        kind: &'static str,
        /// The Secret name.
        secret: String,
        /// The container it would reach.
        container: String,
    },
    /// A probe that would restart seid or gate its start on the chain's RPC.
    #[error("SeiNode {node}: container {container}: {reason}")]
    ProbeContract {
        /// The node.
        node: String,
        /// The container.
        container: String,
        /// What is wrong.
        reason: String,
    },
    /// The node imports its data volume; the operator never creates (or owns) that PVC.
    #[error("SeiNode {node} imports PVC {pvc}; the operator does not create it")]
    ImportedDataVolume {
        /// The node.
        node: String,
        /// The imported PVC.
        pvc: String,
    },
}

/// The name, namespace and mode of a node, checked once per render.
pub(crate) struct Target<'a> {
    pub(crate) node: &'a SeiNode,
    pub(crate) name: &'a str,
    pub(crate) namespace: &'a str,
    pub(crate) mode: Mode,
}

impl<'a> Target<'a> {
    pub(crate) fn new(node: &'a SeiNode) -> Result<Self> {
        let name = node.metadata.name.as_deref().ok_or(RenderError::MissingName)?;
        let namespace = node
            .metadata
            .namespace
            .as_deref()
            .ok_or_else(|| RenderError::MissingNamespace {
                node: name.to_owned(),
            })?;
        let mode = node.mode().map_err(|source| RenderError::Mode {
            node: name.to_owned(),
            source,
        })?;
        Ok(Self {
            node,
            name,
            namespace,
            mode,
        })
    }

    /// Object metadata: name, namespace, [`resource_labels`] and the owner reference.
    pub(crate) fn metadata(&self, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(self.namespace.to_owned()),
            labels: Some(resource_labels(self.node)),
            owner_references: owner_reference(self.node).map(|r| vec![r]),
            ..ObjectMeta::default()
        }
    }
}

/// The labels of every object of a node and of its pod (reference section 4.1 "ResourceLabels"): the node's
/// `spec.podLabels`, then the system labels, which win: `sei.io/node`, `sei.io/chain` (when the chain id is
/// set), `sei.io/role` (when the mode is valid), `sei.io/dedicated-node: "true"` (when the node's annotation of
/// that name is `"true"`), `sei.io/snapshot-publish: "true"` (when snapshot publishing is on), and the node's own
/// `sei.io/nodedeployment` / `sei.io/nodedeployment-ordinal` labels when it belongs to a SeiNodeDeployment (the
/// deployment's internal Service selects pods by them).
pub fn resource_labels(node: &SeiNode) -> BTreeMap<String, String> {
    let mut out = node.spec.pod_labels.clone().unwrap_or_default();
    out.insert(
        labels::NODE.to_owned(),
        node.metadata.name.clone().unwrap_or_default(),
    );
    if !node.spec.chain_id.is_empty() {
        out.insert(labels::CHAIN.to_owned(), node.spec.chain_id.clone());
    }
    if let Ok(mode) = node.mode() {
        out.insert(labels::ROLE.to_owned(), mode.role().to_owned());
    }
    if is_dedicated(node) {
        out.insert(labels::DEDICATED_NODE.to_owned(), "true".to_owned());
    }
    let publish = node
        .spec
        .snapshot_generation()
        .and_then(|g| g.tendermint.as_ref())
        .is_some_and(|t| t.publish.is_some());
    if publish {
        out.insert(labels::SNAPSHOT_PUBLISH.to_owned(), "true".to_owned());
    }
    for key in [labels::DEPLOYMENT, labels::DEPLOYMENT_ORDINAL] {
        if let Some(value) = node.metadata.labels.as_ref().and_then(|l| l.get(key)) {
            out.insert(key.to_owned(), value.clone());
        }
    }
    out
}

/// The selector of the StatefulSet and the Service: only `sei.io/node` (it never changes).
pub fn selector_labels(node: &SeiNode) -> BTreeMap<String, String> {
    BTreeMap::from([(
        labels::NODE.to_owned(),
        node.metadata.name.clone().unwrap_or_default(),
    )])
}

/// The controller ownerReference to the node (`None` when the node has no uid yet, see the module docs).
pub fn owner_reference(node: &SeiNode) -> Option<OwnerReference> {
    node.controller_owner_ref(&())
}

/// Whether the node opted in to a dedicated Kubernetes node (annotation `sei.io/dedicated-node: "true"`).
pub(crate) fn is_dedicated(node: &SeiNode) -> bool {
    node.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::DEDICATED_NODE))
        .is_some_and(|v| v == "true")
}
