//! `SeiNodeDeployment`: a fleet of SeiNodes from a template, with an optional genesis ceremony (reference
//! sections 1.2 and 1.5, DESIGN.md section 5).

// The `KubeSchema` derive copies each annotated struct, `pub` included, into a function body to build its
// schema; those copies trip `unreachable_pub`. Every public type here is re-exported from the crate root.
#![allow(unreachable_pub)]

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema, core::Duration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::conditions::Condition;
use crate::node::{SeiNodePhase, SeiNodeSpec};
use crate::plan::{Plan, PlanSummary};
use crate::schema::{COIN, COINS, DNS1123_LABEL, SEI_ADDRESS};

/// Default `genesis.stakingAmount`.
pub const DEFAULT_STAKING_AMOUNT: &str = "10000000usei";
/// Default `genesis.accountBalance`.
pub const DEFAULT_ACCOUNT_BALANCE: &str =
    "1000000000000000000000usei,1000000000000000000000uusdc,1000000000000000000000uatom";
/// Default `genesis.maxCeremonyDuration` (the ceremony plan's deadline).
pub const DEFAULT_MAX_CEREMONY_DURATION: &str = "15m";
/// Largest `spec.replicas`.
pub const MAX_REPLICAS: i32 = 100;

fn default_replicas() -> i32 {
    1
}

fn default_staking_amount() -> String {
    DEFAULT_STAKING_AMOUNT.to_owned()
}

fn default_account_balance() -> String {
    DEFAULT_ACCOUNT_BALANCE.to_owned()
}

/// [`DEFAULT_MAX_CEREMONY_DURATION`] as a duration.
const DEFAULT_CEREMONY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(15 * 60);

fn default_max_unavailable() -> i32 {
    1
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_false(value: &bool) -> bool {
    !*value
}

/// Desired state of a fleet of SeiNodes: `replicas` copies of `template`, optionally bootstrapping a new chain
/// through a genesis ceremony.
// `printcolumn(...)` repeats `type_ = ...` by design of the derive, not by mistake.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sei.io",
    version = "v1alpha1",
    kind = "SeiNodeDeployment",
    plural = "seinodedeployments",
    shortname = "snd",
    category = "sei",
    namespaced,
    status = "SeiNodeDeploymentStatus",
    derive = "PartialEq",
    doc = "A fleet of SeiNodes created from a template, with rolling image updates, an internal Service, \
           aggregate status and an optional genesis ceremony for a new validator set.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Fleet phase"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "SeiNodes in phase Running"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Desired SeiNodes"
    ),
    printcolumn(
        name = "Up-to-date",
        type_ = "integer",
        json_path = ".status.upToDateReplicas",
        description = "SeiNodes running the template image"
    ),
    printcolumn(
        name = "Image",
        type_ = "string",
        json_path = ".spec.template.spec.image",
        description = "Template seid image"
    ),
    printcolumn(name = "Paused", type_ = "boolean", json_path = ".spec.paused", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = Rule::new("!has(self.genesis) || has(self.template.spec.validator)")
        .message("genesis requires template.spec.validator")
        .field_path(".genesis"),
    validation = Rule::new("!has(self.genesis) || self.genesis.chainId == self.template.spec.chainId")
        .message("genesis.chainId must equal template.spec.chainId")
        .field_path(".genesis"),
    validation = Rule::new(
        "!has(self.genesis) || !has(self.template.spec.validator) \
         || !has(self.template.spec.validator.signingKey)"
    ).message("template.spec.validator.signingKey must not be set with genesis (the ceremony creates the keys)")
        .field_path(".genesis"),
    validation = Rule::new(
        "!has(self.template.spec.validator) || !has(self.template.spec.validator.genesisCeremony)"
    ).message("template.spec.validator.genesisCeremony is set by the controller; use genesis instead")
        .field_path(".template"),
    validation = Rule::new(
        "!has(self.template.spec.validator) || !has(self.template.spec.validator.signingKey) \
         || self.replicas == 1"
    ).message("replicas must be 1 when template.spec.validator.signingKey is set")
        .field_path(".replicas"),
    validation = Rule::new(
        "!has(self.template.spec.dataVolume) || !has(self.template.spec.dataVolume.import) \
         || self.replicas == 1"
    ).message("replicas must be 1 when template.spec.dataVolume.import is set")
        .field_path(".replicas"),
    validation = Rule::new(
        "has(self.genesis) == has(oldSelf.genesis) && (!has(self.genesis) || self.genesis == oldSelf.genesis)"
    ).message("genesis is immutable"),
    validation = Rule::new("!has(self.genesis) || self.replicas == oldSelf.replicas")
        .message("replicas is immutable when genesis is set")
        .field_path(".replicas")
)]
#[serde(rename_all = "camelCase")]
pub struct SeiNodeDeploymentSpec {
    /// Number of SeiNodes (`<name>-0` ... `<name>-<replicas-1>`). Immutable when `genesis` is set.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: i32,

    /// Template of every SeiNode of the fleet.
    pub template: SeiNodeTemplate,

    /// Bootstrap a new chain: run a genesis ceremony across the fleet's validators. Requires a validator
    /// template; immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genesis: Option<GenesisCeremonyConfig>,

    /// How template changes roll out to existing SeiNodes.
    #[serde(default)]
    pub update_strategy: UpdateStrategy,

    /// What happens to the SeiNodes when the deployment is deleted.
    #[serde(default)]
    #[schemars(schema_with = "crate::schema::deletion_policy")]
    pub deletion_policy: DeletionPolicy,

    /// Freeze the fleet: propagated to every SeiNode; no plan advances.
    #[serde(default, skip_serializing_if = "is_false")]
    pub paused: bool,
}

/// Template of the SeiNodes of a deployment.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SeiNodeTemplate {
    /// Labels and annotations copied onto every SeiNode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,

    /// Spec of every SeiNode.
    pub spec: SeiNodeSpec,
}

/// Labels and annotations of templated SeiNodes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Labels of every SeiNode (the controller adds `sei.io/nodedeployment` and the ordinal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 64))]
    pub labels: Option<BTreeMap<String, String>>,

    /// Annotations of every SeiNode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 64))]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A genesis ceremony: every validator creates a gentx, one assembles `genesis.json`, all start from it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GenesisCeremonyConfig {
    /// Chain id of the new chain (must equal `template.spec.chainId`).
    #[schemars(length(min = 1, max = 64), regex(pattern = DNS1123_LABEL))]
    pub chain_id: String,

    /// Self-delegation of every validator's gentx (one coin).
    #[serde(default = "default_staking_amount")]
    #[schemars(length(min = 1, max = 256), regex(pattern = COIN))]
    pub staking_amount: String,

    /// Genesis balance of every validator account (comma-separated coins).
    #[serde(default = "default_account_balance")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = COINS))]
    pub account_balance: String,

    /// Extra genesis accounts (unique addresses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["address".to_owned()]))]
    pub accounts: Vec<GenesisAccount>,

    /// Genesis `app_state` overrides: dotted snake_case paths to arbitrary JSON values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::schema::json_value_map")]
    pub overrides: BTreeMap<String, serde_json::Value>,

    /// Deadline of the whole ceremony plan (Go duration, 1m to 24h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::ceremony_duration")]
    #[x_kube(
        // The pattern guard keeps a malformed value to the schema's own pattern error.
        validation = Rule::new(
            "!self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$') \
             || (duration(self) >= duration('1m') && duration(self) <= duration('24h'))"
        )
            .message("genesis.maxCeremonyDuration must be between 1m and 24h")
    )]
    pub max_ceremony_duration: Option<Duration>,
}

impl GenesisCeremonyConfig {
    /// `maxCeremonyDuration`, or its default of 15 minutes when unset (the apiserver fills the default in, so
    /// it is only unset in a spec built in code).
    pub fn max_ceremony_duration(&self) -> std::time::Duration {
        self.max_ceremony_duration
            .map_or(DEFAULT_CEREMONY_DEADLINE, std::time::Duration::from)
    }
}

/// An extra genesis account.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GenesisAccount {
    /// Bech32 account address (`sei1...`).
    #[schemars(length(min = 1, max = 128), regex(pattern = SEI_ADDRESS))]
    pub address: String,

    /// Genesis balance (comma-separated coins).
    #[schemars(length(min = 1, max = 1024), regex(pattern = COINS))]
    pub balance: String,

    /// Vesting schedule of (part of) the balance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vesting: Option<GenesisVesting>,
}

/// A vesting schedule.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GenesisVesting {
    /// Vesting amount (comma-separated coins).
    #[schemars(length(min = 1, max = 1024), regex(pattern = COINS))]
    pub amount: String,

    /// End of vesting, Unix seconds.
    #[schemars(range(min = 1))]
    pub end_time: i64,

    /// `true`: everything vests at `endTime` (delayed); `false`: linear (continuous) vesting.
    #[serde(default)]
    pub delayed: bool,
}

/// Rollout settings.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStrategy {
    /// Rollout kind (only `RollingUpdate`).
    #[serde(default, rename = "type")]
    #[schemars(schema_with = "crate::schema::update_strategy_type")]
    pub type_: UpdateStrategyType,

    /// Maximum number of SeiNodes being updated (not Running) at once.
    #[serde(default = "default_max_unavailable")]
    #[schemars(range(min = 1, max = 100))]
    pub max_unavailable: i32,
}

impl Default for UpdateStrategy {
    fn default() -> Self {
        Self {
            type_: UpdateStrategyType::default(),
            max_unavailable: default_max_unavailable(),
        }
    }
}

/// Rollout kind.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpdateStrategyType {
    /// Update SeiNodes in batches of `maxUnavailable`, waiting for each batch to be Running.
    #[default]
    RollingUpdate,
}

/// What deleting a SeiNodeDeployment does to its SeiNodes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Delete the SeiNodes (garbage collection through owner references).
    #[default]
    Delete,
    /// Keep the SeiNodes and the internal Service (owner references are removed).
    Retain,
}

/// Observed state of a SeiNodeDeployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SeiNodeDeploymentStatus {
    /// `metadata.generation` the status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Fleet phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SeiNodeDeploymentPhase>,

    /// Number of SeiNodes that exist.
    #[serde(default)]
    pub replicas: i32,

    /// Number of SeiNodes in phase Running.
    #[serde(default)]
    pub ready_replicas: i32,

    /// Number of SeiNodes whose `status.currentImage` equals the template image.
    #[serde(default)]
    pub up_to_date_replicas: i32,

    /// Per-SeiNode summary, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".to_owned()]))]
    pub nodes: Vec<NodeSummary>,

    /// The active plan (genesis ceremony, rollout); absent in the steady state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,

    /// Summaries of the last finished plans, newest last (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub plan_history: Vec<PlanSummary>,

    /// Hash of the genesis file the ceremony assembled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genesis_hash: Option<String>,

    /// The ClusterIP Service in front of all Running SeiNodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_service: Option<InternalService>,

    /// In-cluster URLs of the fleet and of each SeiNode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<DeploymentEndpoints>,

    /// Conditions, one per type (`GenesisCeremonyComplete`, `PlanInProgress`, `NodesReady`,
    /// `RolloutInProgress`, `Paused`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".to_owned()]))]
    pub conditions: Vec<Condition>,
}

impl SeiNodeDeploymentStatus {
    /// Inserts or updates a condition; see [`crate::conditions::set_condition`]. Returns `true` on change.
    pub fn set_condition(&mut self, condition: Condition) -> bool {
        crate::conditions::set_condition(&mut self.conditions, condition)
    }

    /// The condition of the given type.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        crate::conditions::find_condition(&self.conditions, type_)
    }
}

impl SeiNodeDeployment {
    /// Name of the `i`-th SeiNode: `<deployment>-<i>`.
    pub fn node_name(&self, ordinal: i32) -> String {
        format!("{}-{ordinal}", kube::ResourceExt::name_any(self))
    }

    /// Name of the internal Service: `<deployment>-internal`.
    pub fn internal_service_name(&self) -> String {
        format!("{}-internal", kube::ResourceExt::name_any(self))
    }

    /// The phase, if any.
    pub fn phase(&self) -> Option<SeiNodeDeploymentPhase> {
        self.status.as_ref().and_then(|s| s.phase)
    }

    /// The active plan, if any.
    pub fn plan(&self) -> Option<&Plan> {
        self.status.as_ref().and_then(|s| s.plan.as_ref())
    }
}

/// Phase of a SeiNodeDeployment.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SeiNodeDeploymentPhase {
    /// No SeiNode exists yet.
    Pending,
    /// SeiNodes are being created or initialised (or the genesis ceremony runs).
    Initializing,
    /// All SeiNodes are Running the template image.
    Ready,
    /// A rollout is replacing images.
    Upgrading,
    /// Some SeiNodes failed, others are Running.
    Degraded,
    /// All SeiNodes failed, or the genesis ceremony failed.
    Failed,
    /// `spec.paused` is set.
    Paused,
    /// The deployment is being deleted.
    Terminating,
}

impl SeiNodeDeploymentPhase {
    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Initializing => "Initializing",
            Self::Ready => "Ready",
            Self::Upgrading => "Upgrading",
            Self::Degraded => "Degraded",
            Self::Failed => "Failed",
            Self::Paused => "Paused",
            Self::Terminating => "Terminating",
        }
    }
}

impl std::fmt::Display for SeiNodeDeploymentPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Summary of one SeiNode of a deployment.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeSummary {
    /// SeiNode name.
    pub name: String,
    /// Its phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SeiNodePhase>,
    /// Its `status.currentImage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_image: Option<String>,
}

/// The deployment's internal Service.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct InternalService {
    /// Service name (`<deployment>-internal`).
    pub name: String,
    /// Service namespace.
    pub namespace: String,
    /// Ports it exposes.
    pub ports: InternalServicePorts,
}

/// Ports of the internal Service.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct InternalServicePorts {
    /// Tendermint RPC (26657).
    pub rpc: i32,
    /// EVM JSON-RPC over HTTP (8545).
    pub evm_http: i32,
    /// Cosmos REST (1317).
    pub rest: i32,
}

impl Default for InternalServicePorts {
    fn default() -> Self {
        Self {
            rpc: i32::from(crate::ports::RPC),
            evm_http: i32::from(crate::ports::EVM_RPC),
            rest: i32::from(crate::ports::REST),
        }
    }
}

/// In-cluster URLs of a deployment.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentEndpoints {
    /// Tendermint RPC through the internal Service, `http://<deployment>-internal.<ns>.svc:26657`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tendermint_rpc: Option<String>,
    /// Cosmos REST through the internal Service, `http://<deployment>-internal.<ns>.svc:1317`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tendermint_rest: Option<String>,
    /// Per-SeiNode EVM URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeEvmEndpoints>,
}

/// EVM URLs of one SeiNode.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeEvmEndpoints {
    /// SeiNode name.
    pub name: String,
    /// `http://<node>.<ns>.svc:8545`.
    pub evm_json_rpc: String,
    /// `ws://<node>.<ns>.svc:8546`.
    pub evm_ws: String,
}
