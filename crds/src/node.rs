//! `SeiNode`: one Sei node (reference section 1.1).

// The `KubeSchema` derive copies each annotated struct, `pub` included, into a function body to build its
// schema; those copies trip `unreachable_pub`. Every public type here is re-exported from the crate root.
#![allow(unreachable_pub)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::{CustomResource, KubeSchema, core::Duration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::conditions::{Condition, Time};
use crate::plan::{Plan, PlanSummary};
use crate::schema::{
    COIN, COINS, DNS1123_LABEL, DNS1123_SUBDOMAIN, HOST_PORT, KEY_NAME, PEER_ADDRESS, SECRET_DATA_KEY,
};
use kube::core::Rule;

/// Default `spec.sidecar.port`.
pub const DEFAULT_SIDECAR_PORT: i32 = 7777;
/// Default `operatorKeyring.secret.keyName`.
pub const DEFAULT_OPERATOR_KEY_NAME: &str = "node_admin";
/// Key name used for the gentx of a genesis-ceremony validator without an operator keyring.
pub const GENTX_OPERATOR_KEY_NAME: &str = "validator";
/// Data key the signing-key Secret must hold.
pub const SIGNING_KEY_DATA_KEY: &str = "priv_validator_key.json";
/// Data key the node-key Secret must hold.
pub const NODE_KEY_DATA_KEY: &str = "node_key.json";

fn default_sidecar_port() -> i32 {
    DEFAULT_SIDECAR_PORT
}

fn default_key_name() -> String {
    DEFAULT_OPERATOR_KEY_NAME.to_owned()
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_false(value: &bool) -> bool {
    !*value
}

/// Desired state of a Sei node: exactly one mode (`fullNode`, `archive`, `replayer`, `validator` or `seed`)
/// plus chain, image, peers and sidecar settings.
// `printcolumn(...)` repeats `type_ = ...` by design of the derive, not by mistake.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "sei.io",
    version = "v1alpha1",
    kind = "SeiNode",
    plural = "seinodes",
    shortname = "snode",
    category = "sei",
    namespaced,
    status = "SeiNodeStatus",
    derive = "PartialEq",
    doc = "A single Sei blockchain node (full node, archive, replayer, validator or seed) with its data volume, \
           StatefulSet, headless Service and sidecar.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Lifecycle phase"
    ),
    printcolumn(
        name = "Image",
        type_ = "string",
        json_path = ".spec.image",
        description = "Desired seid image"
    ),
    printcolumn(
        name = "Chain",
        type_ = "string",
        json_path = ".spec.chainId",
        description = "Chain id"
    ),
    printcolumn(
        name = "StatefulSet",
        type_ = "string",
        json_path = ".status.statefulSet.name",
        priority = 1,
        description = "Owned StatefulSet"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = Rule::new(
        "(has(self.fullNode) ? 1 : 0) + (has(self.archive) ? 1 : 0) + (has(self.replayer) ? 1 : 0) \
         + (has(self.validator) ? 1 : 0) + (has(self.seed) ? 1 : 0) == 1"
    ).message("exactly one of fullNode, archive, replayer, validator or seed must be set"),
    validation = Rule::new("!has(self.replayer) || (has(self.peers) && size(self.peers) > 0)")
        .message("peers is required when replayer is set")
        .field_path(".peers")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new(
        "!has(oldSelf.dataVolume) || !has(oldSelf.dataVolume.import) \
         || (has(self.dataVolume) && has(self.dataVolume.import))"
    ).message("dataVolume.import cannot be unset once configured")
)]
#[serde(rename_all = "camelCase")]
pub struct SeiNodeSpec {
    /// Chain id (e.g. `pacific-1`); also the `seid init` moniker and `SEI_CHAIN_ID`. Lowercase DNS label,
    /// immutable.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS1123_LABEL))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("chainId is immutable"))]
    pub chain_id: String,

    /// Container image of seid.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,

    /// Where the node finds its peers (all modes). Each entry sets exactly one of `ec2Tags`, `static` or
    /// `label`; the resolved list is published in `status.resolvedPeers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub peers: Option<Vec<PeerSource>>,

    /// sei-config overrides: dotted snake_case keys (e.g. `storage.snapshot_interval`) to string values.
    /// Applied by `config-apply` at initialisation only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 256))]
    pub overrides: Option<BTreeMap<String, String>>,

    /// Sidecar (`seictl serve`) image, port and resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<SidecarConfig>,

    /// Extra pod labels, merged into the pod template before the system labels (system labels win).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 64))]
    pub pod_labels: Option<BTreeMap<String, String>>,

    /// Use a pre-existing PersistentVolumeClaim as the node's data volume instead of creating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_volume: Option<DataVolumeSpec>,

    /// Mode: a chain-following full node that also serves RPC. Starts from `snapshot` (S3 or state sync) or
    /// block-syncs from genesis; may produce snapshots (`snapshotGeneration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_node: Option<FullNodeSpec>,

    /// Mode: an archive node that keeps every block and state (no pruning) and block-syncs from genesis; may
    /// produce snapshots (`snapshotGeneration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveSpec>,

    /// Mode: an ephemeral node that restores `snapshot.s3.targetHeight` and replays blocks from it, optionally
    /// comparing results (`resultExport`). Requires `peers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayer: Option<ReplayerSpec>,

    /// Mode: a consensus validator. An existing validator brings `signingKey` and `nodeKey` together (plus an
    /// optional `operatorKeyring`), each in its own Secret; without them the node generates fresh keys (a
    /// SeiNodeDeployment genesis ceremony sets `genesisCeremony` instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validator: Option<ValidatorSpec>,

    /// Mode: a seed node that only serves P2P peer exchange (PEX), with a stable identity from `nodeKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<SeedSpec>,

    /// Address other nodes dial to reach this node (`host:port`); written to `p2p.external_address` and
    /// preferred by label-based peer resolution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 261))]
    pub external_address: Option<String>,

    /// Freeze the node: the StatefulSet is scaled to 0 and no plan advances. No effect on a Failed node.
    #[serde(default, skip_serializing_if = "is_false")]
    pub paused: bool,
}

/// The mode of a node: which of the five mode fields of [`SeiNodeSpec`] is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// `spec.fullNode`.
    FullNode,
    /// `spec.archive`.
    Archive,
    /// `spec.replayer`.
    Replayer,
    /// `spec.validator`.
    Validator,
    /// `spec.seed`.
    Seed,
}

impl Mode {
    /// All modes, in field order.
    pub const ALL: [Mode; 5] = [
        Mode::FullNode,
        Mode::Archive,
        Mode::Replayer,
        Mode::Validator,
        Mode::Seed,
    ];

    /// The spec field name (`fullNode`, `archive`, `replayer`, `validator`, `seed`).
    pub fn field_name(self) -> &'static str {
        match self {
            Self::FullNode => "fullNode",
            Self::Archive => "archive",
            Self::Replayer => "replayer",
            Self::Validator => "validator",
            Self::Seed => "seed",
        }
    }

    /// The value of the [`sei.io/role`](crate::labels::ROLE) label: `node` for a full node, else the mode name.
    pub fn role(self) -> &'static str {
        match self {
            Self::FullNode => "node",
            Self::Archive => "archive",
            Self::Replayer => "replayer",
            Self::Validator => "validator",
            Self::Seed => "seed",
        }
    }

    /// The sei-config mode (`full`, `archive`, `validator`, `seed`; a replayer runs as `full`).
    pub fn config_mode(self) -> &'static str {
        match self {
            Self::FullNode | Self::Replayer => "full",
            Self::Archive => "archive",
            Self::Validator => "validator",
            Self::Seed => "seed",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.field_name())
    }
}

impl SeiNodeSpec {
    /// The node's mode. Admission guarantees exactly one mode; this re-checks for specs built in code.
    pub fn mode(&self) -> Result<Mode, Error> {
        let set: Vec<Mode> = [
            (Mode::FullNode, self.full_node.is_some()),
            (Mode::Archive, self.archive.is_some()),
            (Mode::Replayer, self.replayer.is_some()),
            (Mode::Validator, self.validator.is_some()),
            (Mode::Seed, self.seed.is_some()),
        ]
        .into_iter()
        .filter_map(|(mode, present)| present.then_some(mode))
        .collect();
        match set.as_slice() {
            [mode] => Ok(*mode),
            [] => Err(Error::NoMode),
            _ => Err(Error::SeveralModes(set)),
        }
    }

    /// The snapshot to restore from: `fullNode.snapshot`, `validator.snapshot` or `replayer.snapshot`
    /// (archive and seed never restore a snapshot). `None` = block sync from genesis.
    pub fn snapshot_source(&self) -> Option<&SnapshotSource> {
        self.full_node
            .as_ref()
            .and_then(|m| m.snapshot.as_ref())
            .or_else(|| self.validator.as_ref().and_then(|m| m.snapshot.as_ref()))
            .or_else(|| self.replayer.as_ref().map(|m| &m.snapshot))
    }

    /// The snapshot-generation settings of a full node or archive.
    pub fn snapshot_generation(&self) -> Option<&SnapshotGenerationConfig> {
        self.full_node
            .as_ref()
            .and_then(|m| m.snapshot_generation.as_ref())
            .or_else(|| self.archive.as_ref().and_then(|m| m.snapshot_generation.as_ref()))
    }

    /// Secret holding `node_key.json`: `validator.nodeKey.secret` or `seed.nodeKey.secret`.
    pub fn node_key_secret(&self) -> Option<&SecretRef> {
        self.validator
            .as_ref()
            .and_then(|v| v.node_key.as_ref())
            .or_else(|| self.seed.as_ref().map(|s| &s.node_key))
            .and_then(|k| k.secret.as_ref())
    }

    /// Secret holding `priv_validator_key.json`: `validator.signingKey.secret`.
    pub fn signing_key_secret(&self) -> Option<&SecretRef> {
        self.validator
            .as_ref()
            .and_then(|v| v.signing_key.as_ref())
            .and_then(|k| k.secret.as_ref())
    }

    /// The operator keyring Secret of a validator.
    pub fn operator_keyring_secret(&self) -> Option<&OperatorKeyringSecret> {
        self.validator
            .as_ref()
            .and_then(|v| v.operator_keyring.as_ref())
            .and_then(|k| k.secret.as_ref())
    }

    /// Name of the operator key in the keyring: `operatorKeyring.secret.keyName` (default `node_admin`) when a
    /// keyring Secret is set, else `validator` (the key the genesis ceremony creates).
    pub fn operator_key_name(&self) -> &str {
        self.operator_keyring_secret()
            .map_or(GENTX_OPERATOR_KEY_NAME, |s| s.key_name.as_str())
    }

    /// The genesis-ceremony settings a SeiNodeDeployment put on this validator.
    pub fn genesis_ceremony(&self) -> Option<&GenesisCeremonyNodeConfig> {
        self.validator.as_ref().and_then(|v| v.genesis_ceremony.as_ref())
    }

    /// The sidecar port (`spec.sidecar.port`, default 7777).
    pub fn sidecar_port(&self) -> i32 {
        self.sidecar.as_ref().map_or(DEFAULT_SIDECAR_PORT, |s| s.port)
    }

    /// The sidecar image set in the spec (`None` = platform default).
    pub fn sidecar_image(&self) -> Option<&str> {
        self.sidecar.as_ref().and_then(|s| s.image.as_deref())
    }

    /// The name of the imported PVC (`spec.dataVolume.import.pvcName`).
    pub fn imported_pvc(&self) -> Option<&str> {
        self.data_volume
            .as_ref()
            .and_then(|d| d.import.as_ref())
            .map(|i| i.pvc_name.as_str())
    }
}

/// One source of peers. Exactly one of `ec2Tags`, `static` or `label` is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(
    validation = Rule::new(
        "(has(self.ec2Tags) ? 1 : 0) + (has(self.static) ? 1 : 0) + (has(self.label) ? 1 : 0) == 1"
    ).message("exactly one of ec2Tags, static or label must be set")
)]
#[serde(rename_all = "camelCase")]
pub struct PeerSource {
    /// Discover running EC2 instances by tags; the node id comes from the instance tag `sei.io/node-id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ec2_tags: Option<Ec2TagsPeerSource>,

    /// A fixed list of peers, used verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#static: Option<StaticPeerSource>,

    /// SeiNodes selected by labels (excluding this node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<LabelPeerSource>,
}

/// EC2 tag based peer discovery.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Ec2TagsPeerSource {
    /// AWS region to query (e.g. `us-east-2`).
    #[schemars(length(min = 1, max = 64))]
    pub region: String,

    /// Tags every instance must carry (at least one).
    #[schemars(extend("minProperties" = 1, "maxProperties" = 16))]
    pub tags: BTreeMap<String, String>,
}

/// A fixed peer list.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StaticPeerSource {
    /// Peers as `<node id>@<host>:<port>` (node id = 40 lowercase hex digits).
    #[schemars(length(min = 1, max = 128), inner(length(max = 512), regex(pattern = PEER_ADDRESS)))]
    pub addresses: Vec<String>,
}

/// Label based peer discovery among SeiNodes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LabelPeerSource {
    /// Labels the peer SeiNodes must carry (at least one).
    #[schemars(extend("minProperties" = 1, "maxProperties" = 16))]
    pub selector: BTreeMap<String, String>,

    /// Namespace to search (default: this node's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS1123_LABEL))]
    pub namespace: Option<String>,
}

/// Where a node's initial state comes from. Exactly one of `s3` or `stateSync` is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(
    validation = Rule::new("(has(self.s3) ? 1 : 0) + (has(self.stateSync) ? 1 : 0) == 1")
        .message("exactly one of snapshot.s3 or snapshot.stateSync must be set"),
    validation = Rule::new("!has(self.bootstrapImage) || (has(self.s3) && has(self.s3.targetHeight))")
        .message("snapshot.bootstrapImage requires snapshot.s3.targetHeight")
        .field_path(".bootstrapImage")
)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotSource {
    /// Restore a snapshot from the platform's S3 bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3SnapshotSource>,

    /// Use Tendermint state sync (needs at least two RPC witnesses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_sync: Option<StateSyncSource>,

    /// State-sync trust period as a Go duration (e.g. `9999h0m0s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::go_duration")]
    pub trust_period: Option<Duration>,

    /// State-sync RPC witnesses as bare `host:port` (at least two, no duplicates); overrides the platform's
    /// syncer registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 16), inner(length(max = 261), regex(pattern = HOST_PORT)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub rpc_servers: Option<Vec<String>>,

    /// Number of blocks to backfill after restoring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub backfill_blocks: Option<i64>,

    /// Image of a bootstrap Job that restores the snapshot before the node starts (requires
    /// `s3.targetHeight`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub bootstrap_image: Option<String>,
}

/// An S3 snapshot.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3SnapshotSource {
    /// Block height of the snapshot to restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_height: Option<i64>,
}

/// State sync (no settings of its own; see `trustPeriod` and `rpcServers`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StateSyncSource {}

/// Snapshot production by a full node or archive. `tendermint` is required.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(
    validation = Rule::new("has(self.tendermint)")
        .message("snapshotGeneration.tendermint is required")
        .field_path(".tendermint")
        .reason(Reason::FieldValueRequired)
)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotGenerationConfig {
    /// Tendermint state snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tendermint: Option<TendermintSnapshotGeneration>,
}

/// Tendermint snapshot settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(
    validation = Rule::new("!has(self.publish) || self.keepRecent >= 2")
        .message("snapshotGeneration.tendermint.keepRecent must be at least 2 when publish is set")
        .field_path(".keepRecent")
)]
#[serde(rename_all = "camelCase")]
pub struct TendermintSnapshotGeneration {
    /// Number of recent snapshots to keep on disk.
    #[schemars(range(min = 1))]
    pub keep_recent: i32,

    /// Upload snapshots to the platform bucket (labels the pod `sei.io/snapshot-publish=true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<SnapshotPublish>,
}

/// Snapshot publishing (no settings of its own).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct SnapshotPublish {}

/// Export of replay results. `shadowResult` is required.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(
    validation = Rule::new("has(self.shadowResult)")
        .message("resultExport.shadowResult is required")
        .field_path(".shadowResult")
        .reason(Reason::FieldValueRequired)
)]
#[serde(rename_all = "camelCase")]
pub struct ResultExportConfig {
    /// Compare replayed results against a canonical RPC endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_result: Option<ShadowResultConfig>,
}

/// Shadow-result comparison.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShadowResultConfig {
    /// URL of the canonical RPC endpoint.
    #[schemars(length(min = 1, max = 512))]
    pub canonical_rpc: String,
}

/// The sidecar container (`seictl serve`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SidecarConfig {
    /// Sidecar image (default: the platform's sidecar image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Port the sidecar listens on.
    #[serde(default = "default_sidecar_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Resources of the sidecar container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for SidecarConfig {
    fn default() -> Self {
        Self {
            image: None,
            port: DEFAULT_SIDECAR_PORT,
            resources: None,
        }
    }
}

/// The node's data volume. Once `import` is set it cannot be unset (checked on the spec, so that removing the
/// whole `dataVolume` is caught too).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeSpec {
    /// Import an existing PVC (never deleted by the operator) instead of creating `data-<node>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<DataVolumeImport>,
}

/// An imported PVC.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeImport {
    /// Name of the PVC in the node's namespace. Immutable.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS1123_SUBDOMAIN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("dataVolume.import.pvcName is immutable"))]
    pub pvc_name: String,
}

/// Full-node mode.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FullNodeSpec {
    /// Snapshot to start from (absent: block sync from genesis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotSource>,

    /// Produce snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_generation: Option<SnapshotGenerationConfig>,
}

/// Archive mode.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveSpec {
    /// Produce snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_generation: Option<SnapshotGenerationConfig>,
}

/// Replayer mode.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(
    validation = Rule::new("has(self.snapshot.s3) && has(self.snapshot.s3.targetHeight)")
        .message("replayer.snapshot.s3.targetHeight is required")
        .field_path(".snapshot")
        .reason(Reason::FieldValueRequired)
)]
#[serde(rename_all = "camelCase")]
pub struct ReplayerSpec {
    /// Snapshot to replay from; must be `s3` with a `targetHeight`.
    pub snapshot: SnapshotSource,

    /// Where to export replay results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_export: Option<ResultExportConfig>,
}

/// Seed mode.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SeedSpec {
    /// The seed's node key (its P2P identity).
    pub node_key: NodeKeySource,
}

/// Validator mode. `signingKey` and `nodeKey` are set together (an existing validator) or both left out (a
/// new key is generated, e.g. by a genesis ceremony); every referenced Secret must be a different Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(
    validation = Rule::new("has(self.signingKey) == has(self.nodeKey)")
        .message("validator.signingKey and validator.nodeKey must be set together"),
    validation = Rule::new("!(has(self.signingKey) && has(self.genesisCeremony))")
        .message("validator.signingKey and validator.genesisCeremony are mutually exclusive"),
    validation = distinct(SIGNING, NODE),
    validation = distinct(KEYRING, SIGNING),
    validation = distinct(KEYRING, NODE),
    validation = distinct(KEYRING, PASSPHRASE),
    validation = distinct(PASSPHRASE, SIGNING),
    validation = distinct(PASSPHRASE, NODE)
)]
#[serde(rename_all = "camelCase")]
pub struct ValidatorSpec {
    /// Snapshot to start from (absent: block sync from genesis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotSource>,

    /// Genesis-ceremony parameters; set by a SeiNodeDeployment with `spec.genesis`, not by users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genesis_ceremony: Option<GenesisCeremonyNodeConfig>,

    /// Existing consensus key (`priv_validator_key.json`), mounted into seid only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<SigningKeySource>,

    /// Existing P2P node key (`node_key.json`), mounted into seid only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_key: Option<NodeKeySource>,

    /// File keyring holding the operator account key, mounted into the sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_keyring: Option<OperatorKeyringSource>,
}

/// One Secret reference inside [`ValidatorSpec`], for the key-distinctness rules.
#[derive(Clone, Copy)]
struct KeySecret {
    /// CEL guard: the reference is present.
    present: &'static str,
    /// CEL path of the Secret name.
    name: &'static str,
    /// Field path used in messages.
    field: &'static str,
}

const SIGNING: KeySecret = KeySecret {
    present: "has(self.signingKey) && has(self.signingKey.secret)",
    name: "self.signingKey.secret.secretName",
    field: "signingKey.secret.secretName",
};
const NODE: KeySecret = KeySecret {
    present: "has(self.nodeKey) && has(self.nodeKey.secret)",
    name: "self.nodeKey.secret.secretName",
    field: "nodeKey.secret.secretName",
};
const KEYRING: KeySecret = KeySecret {
    present: "has(self.operatorKeyring) && has(self.operatorKeyring.secret)",
    name: "self.operatorKeyring.secret.secretName",
    field: "operatorKeyring.secret.secretName",
};
const PASSPHRASE: KeySecret = KeySecret {
    present: "has(self.operatorKeyring) && has(self.operatorKeyring.secret)",
    name: "self.operatorKeyring.secret.passphraseSecretRef.secretName",
    field: "operatorKeyring.secret.passphraseSecretRef.secretName",
};

/// "the Secrets named by `a` and `b` differ" (when both are set).
fn distinct(a: KeySecret, b: KeySecret) -> Rule {
    Rule::new(format!(
        "!({} && {}) || {} != {}",
        a.present, b.present, a.name, b.name
    ))
    .message(format!("validator.{} must differ from validator.{}", a.field, b.field).as_str())
}

/// A signing-key source. Exactly one source (currently only `secret`) is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(
    validation = Rule::new("has(self.secret)")
        .message("exactly one of signingKey.secret must be set")
        .field_path(".secret")
        .reason(Reason::FieldValueRequired)
)]
#[serde(rename_all = "camelCase")]
pub struct SigningKeySource {
    /// Secret with data key `priv_validator_key.json`. The Secret name is immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = Rule::new("self.secretName == oldSelf.secretName")
            .message("signingKey.secret.secretName is immutable")
    )]
    pub secret: Option<SecretRef>,
}

/// A node-key source. Exactly one source (currently only `secret`) is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(
    validation = Rule::new("has(self.secret)")
        .message("exactly one of nodeKey.secret must be set")
        .field_path(".secret")
        .reason(Reason::FieldValueRequired)
)]
#[serde(rename_all = "camelCase")]
pub struct NodeKeySource {
    /// Secret with data key `node_key.json`. The Secret name is immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = Rule::new("self.secretName == oldSelf.secretName")
            .message("nodeKey.secret.secretName is immutable")
    )]
    pub secret: Option<SecretRef>,
}

/// A Secret in the node's namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS1123_SUBDOMAIN))]
    pub secret_name: String,
}

/// An operator-keyring source. Exactly one source (currently only `secret`) is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(
    validation = Rule::new("has(self.secret)")
        .message("exactly one of operatorKeyring.secret must be set")
        .field_path(".secret")
        .reason(Reason::FieldValueRequired)
)]
#[serde(rename_all = "camelCase")]
pub struct OperatorKeyringSource {
    /// A file keyring stored in a Secret, unlocked by a passphrase from another Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<OperatorKeyringSecret>,
}

/// A file keyring in a Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OperatorKeyringSecret {
    /// Name of the Secret holding the keyring files. Immutable.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS1123_SUBDOMAIN))]
    #[x_kube(
        validation = Rule::new("self == oldSelf").message("operatorKeyring.secret.secretName is immutable")
    )]
    pub secret_name: String,

    /// Name of the operator key inside the keyring.
    #[serde(default = "default_key_name")]
    #[schemars(length(min = 1, max = 64), regex(pattern = KEY_NAME))]
    pub key_name: String,

    /// The Secret key holding the keyring passphrase. Its Secret name is immutable.
    #[x_kube(
        validation = Rule::new("self.secretName == oldSelf.secretName")
            .message("operatorKeyring.secret.passphraseSecretRef.secretName is immutable")
    )]
    pub passphrase_secret_ref: SecretKeyRef,

    /// Also mount the keyring into seid (default: sidecar only).
    #[serde(default, skip_serializing_if = "is_false")]
    pub seid_mount: bool,
}

impl Default for OperatorKeyringSecret {
    fn default() -> Self {
        Self {
            secret_name: String::new(),
            key_name: default_key_name(),
            passphrase_secret_ref: SecretKeyRef::default(),
            seid_mount: false,
        }
    }
}

/// One key of a Secret in the node's namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS1123_SUBDOMAIN))]
    pub secret_name: String,

    /// Data key inside the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_DATA_KEY))]
    pub key: String,
}

/// Per-validator genesis-ceremony parameters (written by the SeiNodeDeployment controller).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GenesisCeremonyNodeConfig {
    /// Chain id of the new chain.
    #[schemars(length(min = 1, max = 64), regex(pattern = DNS1123_LABEL))]
    pub chain_id: String,

    /// Self-delegation of this validator's gentx (one coin, e.g. `10000000usei`).
    #[schemars(length(min = 1, max = 256), regex(pattern = COIN))]
    pub staking_amount: String,

    /// Genesis balance of this validator's account (coins, comma-separated).
    #[schemars(length(min = 1, max = 1024), regex(pattern = COINS))]
    pub account_balance: String,

    /// This validator's ordinal in the ceremony.
    #[schemars(range(min = 0, max = 99))]
    pub index: i32,
}

/// Observed state of a SeiNode.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SeiNodeStatus {
    /// `metadata.generation` of the spec the controller last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Lifecycle phase (absent until the first plan is built).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SeiNodePhase>,

    /// When `phase` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_transition_time: Option<Time>,

    /// seid image the running pod was observed with (written once a rollout completed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_image: Option<String>,

    /// Sidecar image the running pod was observed with (absent = not yet observed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_sidecar_image: Option<String>,

    /// Conditions, one per type (see the `Paused`, `SidecarReady`, `NodeUpdateInProgress`, ... types).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".to_owned()]))]
    pub conditions: Vec<Condition>,

    /// The active plan (workflow journal); absent in the steady state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,

    /// Summaries of the last finished plans, newest last (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub plan_history: Vec<PlanSummary>,

    /// Resolved peers as `<node id>@<host>:<port>`, sorted and de-duplicated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolved_peers: Vec<String>,

    /// Identity of the owned StatefulSet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stateful_set: Option<StatefulSetRef>,

    /// In-cluster endpoints (full nodes and archives, once Running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<NodeEndpoint>,

    /// Hash of the genesis file, when a genesis ceremony produced this node's chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genesis_hash: Option<String>,

    /// The last value of the `sei.io/retry` annotation the controller handled (a new value retries a
    /// `Failed` node once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_retry: Option<String>,
}

impl SeiNodeStatus {
    /// Inserts or updates a condition; see [`crate::conditions::set_condition`]. Returns `true` on change.
    pub fn set_condition(&mut self, condition: Condition) -> bool {
        crate::conditions::set_condition(&mut self.conditions, condition)
    }

    /// The condition of the given type.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        crate::conditions::find_condition(&self.conditions, type_)
    }
}

impl SeiNode {
    /// The node's mode (see [`SeiNodeSpec::mode`]).
    pub fn mode(&self) -> Result<Mode, Error> {
        self.spec.mode()
    }

    /// The phase, if any.
    pub fn phase(&self) -> Option<SeiNodePhase> {
        self.status.as_ref().and_then(|s| s.phase)
    }

    /// The active plan, if any.
    pub fn plan(&self) -> Option<&Plan> {
        self.status.as_ref().and_then(|s| s.plan.as_ref())
    }
}

/// Lifecycle phase of a SeiNode.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SeiNodePhase {
    /// Accepted, nothing started.
    Pending,
    /// The init plan is running.
    Initializing,
    /// The node is initialised and running.
    Running,
    /// The init plan failed (terminal).
    Failed,
    /// The node is being deleted.
    Terminating,
}

impl SeiNodePhase {
    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Initializing => "Initializing",
            Self::Running => "Running",
            Self::Failed => "Failed",
            Self::Terminating => "Terminating",
        }
    }
}

impl std::fmt::Display for SeiNodePhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identity of the StatefulSet a SeiNode owns (detects an impostor with the same name).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSetRef {
    /// StatefulSet name.
    pub name: String,
    /// StatefulSet UID.
    pub uid: String,
}

/// In-cluster URLs of a node.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeEndpoint {
    /// EVM JSON-RPC, `http://<name>.<ns>.svc:8545`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evm_json_rpc: Option<String>,
    /// EVM WebSocket, `ws://<name>.<ns>.svc:8546`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evm_ws: Option<String>,
    /// Tendermint RPC, `http://<name>.<ns>.svc:26657`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tendermint_rpc: Option<String>,
    /// Cosmos REST, `http://<name>.<ns>.svc:1317`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tendermint_rest: Option<String>,
}
