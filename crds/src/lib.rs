//! Custom resources of the Sei operator, group `sei.io`, version `v1alpha1`.
//!
//! - [`SeiNode`] (`snode`): one node in one of five modes, see [`SeiNodeSpec`] and [`Mode`].
//! - [`SeiNodeDeployment`] (`snd`): a fleet of SeiNodes from a template with an optional genesis ceremony, see
//!   [`SeiNodeDeploymentSpec`].
//! - [`WorkflowTemplate`] (`swt`) and [`WorkflowRun`] (`swr`): lifecycle workflows as an API, see
//!   [`WorkflowTemplateSpec`] and [`WorkflowRunSpec`].
//!
//! Validation lives in the schema: OpenAPI constraints (lengths, patterns, ranges, enums, defaults) and CEL
//! rules (`x-kubernetes-validations`) that the apiserver evaluates at admission, so a controller only ever
//! sees specs that passed them. The CRD manifests are generated from these types ([`generated_files`]) and
//! committed under `crds/generated/`; a test fails when they drift.
//!
//! Also here: well-known label/annotation/finalizer keys ([`labels`]), container ports ([`ports`]),
//! condition types, reasons and helpers ([`conditions`]) and the plan-history bound ([`plan`]).
//!
//! # Owns, and must not
//! Owns the resource types, their admission rules, the generated manifests and the names of conditions,
//! reasons, labels and finalizers. Must not contain controller logic or do I/O.

pub mod conditions;
mod deployment;
pub mod labels;
mod node;
pub mod plan;
pub mod ports;
mod schema;
mod workflow;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

pub use conditions::{Condition, ConditionStatus, Time};
pub use deployment::{
    DEFAULT_ACCOUNT_BALANCE, DEFAULT_MAX_CEREMONY_DURATION, DEFAULT_STAKING_AMOUNT, DeletionPolicy,
    DeploymentEndpoints, GenesisAccount, GenesisCeremonyConfig, GenesisVesting, InternalService,
    InternalServicePorts, MAX_REPLICAS, NodeEvmEndpoints, NodeSummary, SeiNodeDeployment,
    SeiNodeDeploymentPhase, SeiNodeDeploymentSpec, SeiNodeDeploymentStatus, SeiNodeTemplate,
    TemplateMetadata, UpdateStrategy, UpdateStrategyType,
};
pub use node::{
    ArchiveSpec, DEFAULT_OPERATOR_KEY_NAME, DEFAULT_SIDECAR_PORT, DataVolumeImport, DataVolumeSpec,
    Ec2TagsPeerSource, FullNodeSpec, GENTX_OPERATOR_KEY_NAME, GenesisCeremonyNodeConfig, LabelPeerSource,
    Mode, NODE_KEY_DATA_KEY, NodeEndpoint, NodeKeySource, OperatorKeyringSecret, OperatorKeyringSource,
    PeerSource, ReplayerSpec, ResultExportConfig, S3SnapshotSource, SIGNING_KEY_DATA_KEY, SecretKeyRef,
    SecretRef, SeedSpec, SeiNode, SeiNodePhase, SeiNodeSpec, SeiNodeStatus, ShadowResultConfig,
    SidecarConfig, SigningKeySource, SnapshotGenerationConfig, SnapshotPublish, SnapshotSource,
    StateSyncSource, StatefulSetRef, StaticPeerSource, TendermintSnapshotGeneration, ValidatorSpec,
};
pub use plan::{PLAN_HISTORY_LIMIT, Plan, PlanSummary};
pub use workflow::{
    REASON_COMPILED, REASON_INVALID, RunPhase, RunTarget, RunTargetKind, RunTargetStatus, VALID, WorkflowRef,
    WorkflowRun, WorkflowRunSpec, WorkflowRunStatus, WorkflowTemplate, WorkflowTemplateSpec,
    WorkflowTemplateStatus,
};

/// API group of every resource here.
pub const GROUP: &str = "sei.io";
/// API version of every resource here.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of every resource here.
pub const API_VERSION: &str = "sei.io/v1alpha1";

/// Errors of the helpers in this crate.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// No mode field is set (admission rejects this; only a spec built in code can get here).
    #[error("no mode is set: exactly one of fullNode, archive, replayer, validator or seed is required")]
    NoMode,
    /// More than one mode field is set (admission rejects this; only a spec built in code can get here).
    #[error(
        "several modes are set ({0:?}): exactly one of fullNode, archive, replayer, validator or seed is allowed"
    )]
    SeveralModes(Vec<Mode>),
}

/// Every CRD of this crate, in a stable order: what `crds/generated/` holds and what an installer should apply.
///
/// Prefer this over `SeiNode::crd()`: it also unwraps the line breaks that doc comments put into field
/// descriptions (so `kubectl explain` reflows them) and drops formats the apiserver does not know.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        SeiNode::crd(),
        SeiNodeDeployment::crd(),
        WorkflowTemplate::crd(),
        WorkflowRun::crd(),
    ];
    for crd in &mut crds {
        for version in &mut crd.spec.versions {
            if let Some(schema) = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                tidy_schema(schema);
            }
        }
    }
    crds
}

/// Joins the lines of each paragraph of every description (doc comments are wrapped at 110 columns) and drops
/// the `uint*` formats schemars emits for unsigned integers (the apiserver warns about unknown formats; the
/// `minimum: 0` next to them stays).
fn tidy_schema(schema: &mut JSONSchemaProps) {
    if schema.format.as_deref().is_some_and(|f| f.starts_with("uint")) {
        schema.format = None;
    }
    if let Some(text) = schema.description.as_mut() {
        *text = text
            .split("\n\n")
            .map(|p| p.split('\n').map(str::trim).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("\n\n");
    }
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        tidy_schema(child);
    }
    match schema.items.as_mut() {
        Some(JSONSchemaPropsOrArray::Schema(item)) => tidy_schema(item),
        Some(JSONSchemaPropsOrArray::Schemas(items)) => items.iter_mut().for_each(tidy_schema),
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(extra)) = schema.additional_properties.as_mut() {
        tidy_schema(extra);
    }
}

/// The CRD manifests to commit under `crds/generated/`: `(file name, YAML text)`, one file per CRD, named
/// `<plural>.<group>.yaml`.
pub fn generated_files() -> Vec<(&'static str, String)> {
    [
        "seinodes.sei.io.yaml",
        "seinodedeployments.sei.io.yaml",
        "workflowtemplates.sei.io.yaml",
        "workflowruns.sei.io.yaml",
    ]
    .into_iter()
    .zip(crds())
    .map(|(name, crd)| (name, format!("{GENERATED_HEADER}{}", to_yaml(&crd))))
    .collect()
}

/// First line of every generated file.
pub const GENERATED_HEADER: &str = "# Generated from the sei-crds types by `cargo xtask crd`; do not edit.\n";

#[allow(clippy::expect_used)] // a CRD has only string keys and finite numbers: serializing it cannot fail
fn to_yaml(crd: &CustomResourceDefinition) -> String {
    serde_yaml::to_string(crd).expect("a CustomResourceDefinition serializes to YAML")
}
