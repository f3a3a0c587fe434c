//! Fleet tasks: what a SeiNodeDeployment's workflows (genesis ceremony, rollout) do to its child SeiNodes, and
//! the one task a ceremony child runs itself (`await-genesis`).
//!
//! The child SeiNode a deployment wants is computed by [`desired_child`] (shared by the controller and the
//! rollout task) and written with server-side apply under [`FIELD_MANAGER`]. Which template fields reach an
//! existing child, and when:
//!
//! | field | on creation | in place (every reconcile) | by a rollout (`update-node-template`) |
//! |---|---|---|---|
//! | labels, annotations (template keys only), `podLabels`, `overrides`, `paused` | yes | yes | yes |
//! | `image`, `sidecar` | yes | no | yes |
//! | `chainId`, mode (identity, keys, ceremony marker), `peers`, `dataVolume`, `externalAddress` | yes | never | never |
//!
//! Every apply carries every field (the sticky ones copied from the child), so the field manager keeps owning
//! them and a field only disappears when the template drops it. Other managers' fields (a user's annotations)
//! are left alone.

use std::collections::{BTreeMap, BTreeSet};

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use schemars::JsonSchema;
use sei_crds::conditions::{self, ConditionStatus};
use sei_crds::{GenesisCeremonyNodeConfig, SeiNode, SeiNodeDeployment, SeiNodePhase, SidecarConfig, labels};
use sei_engine::TaskState;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::kube::api_error;
use crate::task::{Context, Invocation, Outcome, Task, schema_of};

/// Field manager of every write the SeiNodeDeployment controller and its tasks make to child SeiNodes and to
/// the internal Service.
pub const FIELD_MANAGER: &str = "seinodedeployment-controller";
/// Name of the genesis-ceremony workflow (the plan `await-genesis` looks into).
pub const CEREMONY_WORKFLOW: &str = "genesis-ceremony";
/// Tendermint P2P port used in peer addresses.
const P2P_PORT: u16 = sei_crds::ports::P2P;

/// What a rollout sets on a child besides the in-place fields.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rolled {
    /// The seid image.
    pub image: String,
    /// The sidecar settings.
    pub sidecar: Option<SidecarConfig>,
}

/// The ordinal of a child, from its `sei.io/nodedeployment-ordinal` label.
pub fn ordinal_of(node: &SeiNode) -> Option<i32> {
    node.labels()
        .get(labels::DEPLOYMENT_ORDINAL)
        .and_then(|o| o.parse().ok())
}

/// The SeiNode `deployment` wants as its `ordinal`-th child: the template, the fleet labels, the controller
/// ownerReference and, with `spec.genesis`, the ceremony marker (`spec.validator.genesisCeremony`). For an
/// `existing` child, only the in-place fields come from the template (see the module table); `rolled` also
/// sets the image and sidecar.
pub fn desired_child(
    deployment: &SeiNodeDeployment,
    ordinal: i32,
    existing: Option<&SeiNode>,
    rolled: Option<&Rolled>,
) -> SeiNode {
    let template = &deployment.spec.template;
    let meta = template.metadata.clone().unwrap_or_default();
    let mut spec = template.spec.clone();
    spec.paused = deployment.spec.paused;
    if let (Some(genesis), Some(validator)) = (&deployment.spec.genesis, spec.validator.as_mut()) {
        validator.genesis_ceremony = Some(GenesisCeremonyNodeConfig {
            chain_id: genesis.chain_id.clone(),
            staking_amount: genesis.staking_amount.clone(),
            account_balance: genesis.account_balance.clone(),
            index: ordinal,
        });
    }
    if let Some(existing) = existing {
        let have = &existing.spec;
        spec.chain_id.clone_from(&have.chain_id);
        spec.image.clone_from(&have.image);
        spec.sidecar.clone_from(&have.sidecar);
        spec.peers.clone_from(&have.peers);
        spec.data_volume.clone_from(&have.data_volume);
        spec.external_address.clone_from(&have.external_address);
        spec.full_node.clone_from(&have.full_node);
        spec.archive.clone_from(&have.archive);
        spec.replayer.clone_from(&have.replayer);
        spec.validator.clone_from(&have.validator);
        spec.seed.clone_from(&have.seed);
    }
    if let Some(rolled) = rolled {
        spec.image.clone_from(&rolled.image);
        spec.sidecar.clone_from(&rolled.sidecar);
    }
    let mut node_labels = meta.labels.unwrap_or_default();
    node_labels.insert(labels::DEPLOYMENT.to_owned(), deployment.name_any());
    node_labels.insert(labels::DEPLOYMENT_ORDINAL.to_owned(), ordinal.to_string());
    if !spec.chain_id.is_empty() {
        node_labels.insert(labels::CHAIN.to_owned(), spec.chain_id.clone());
    }
    if let Ok(mode) = spec.mode() {
        node_labels.insert(labels::ROLE.to_owned(), mode.role().to_owned());
    }
    SeiNode {
        metadata: ObjectMeta {
            name: Some(deployment.node_name(ordinal)),
            namespace: deployment.namespace(),
            labels: Some(node_labels),
            annotations: meta.annotations.filter(|a| !a.is_empty()),
            owner_references: deployment.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}

/// Whether `existing` lacks something of `desired` (spec, template labels or annotations, the ownerReference).
pub fn needs_apply(existing: &SeiNode, desired: &SeiNode) -> bool {
    let subset = |want: Option<&BTreeMap<String, String>>, have: Option<&BTreeMap<String, String>>| {
        want.into_iter()
            .flatten()
            .all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v))
    };
    let owned = desired.owner_references().iter().all(|want| {
        existing
            .owner_references()
            .iter()
            .any(|have| have.uid == want.uid && have.controller == want.controller)
    });
    existing.spec != desired.spec
        || !subset(
            desired.metadata.labels.as_ref(),
            existing.metadata.labels.as_ref(),
        )
        || !subset(
            desired.metadata.annotations.as_ref(),
            existing.metadata.annotations.as_ref(),
        )
        || !owned
}

/// Server-side applies a child (force: the deployment owns these fields).
pub async fn apply_child(client: &kube::Client, child: &SeiNode) -> Result<SeiNode, kube::Error> {
    let ns = child.namespace().unwrap_or_default();
    let api: Api<SeiNode> = Api::namespaced(client.clone(), &ns);
    api.patch(
        &child.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(child),
    )
    .await
}

/// Field manager of a write a fleet task makes without server-side apply (`sei-operator/<task type>`).
#[must_use]
pub fn task_field_manager(task_type: &str) -> String {
    format!("sei-operator/{task_type}")
}

/// A merge patch of `name` (its status subresource with `status`) that only applies to the version
/// `resource_version` of the object: the patch carries `metadata.resourceVersion`, so the API server refuses it
/// with 409 Conflict when the object changed since it was read (DESIGN.md section 3: every write to another
/// object is guarded).
pub async fn patch_guarded<K>(
    api: &Api<K>,
    name: &str,
    resource_version: &str,
    field_manager: &str,
    status: bool,
    mut patch: Value,
) -> Result<K, kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if let Value::Object(map) = &mut patch {
        let meta = map.entry("metadata").or_insert_with(|| json!({}));
        if let Value::Object(meta) = meta {
            meta.insert(
                "resourceVersion".to_owned(),
                Value::String(resource_version.to_owned()),
            );
        }
    }
    let pp = PatchParams {
        field_manager: Some(field_manager.to_owned()),
        ..PatchParams::default()
    };
    if status {
        api.patch_status(name, &pp, &Patch::Merge(&patch)).await
    } else {
        api.patch(name, &pp, &Patch::Merge(&patch)).await
    }
}

/// Whether an API error is a 409 Conflict (a guarded write lost a race).
#[must_use]
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// The peer address of `name` in `namespace`, as the genesis assembler writes it.
pub fn peer_address(node_id: &str, namespace: &str, name: &str) -> String {
    format!("{node_id}@{name}-0.{name}.{namespace}.svc.cluster.local:{P2P_PORT}")
}

/// Why a child failed, from its last plan summary.
fn failure_of(node: &SeiNode) -> String {
    node.status
        .as_ref()
        .and_then(|s| s.plan_history.last())
        .map(|p| {
            let task = p.failed_task.as_deref().unwrap_or("?");
            let error = p.error.as_ref().map_or_else(String::new, ToString::to_string);
            format!("plan {} failed at {task}: {error}", p.workflow)
        })
        .unwrap_or_default()
}

macro_rules! same_start_and_poll {
    ($ty:ty, $name:literal, $params:ty, $run:ident) => {
        impl Task for $ty {
            fn task_type(&self) -> &'static str {
                $name
            }
            fn params_schema(&self) -> Value {
                schema_of::<$params>()
            }
            fn start<'a>(&'a self, cx: &'a Context, inv: &'a Invocation) -> BoxFuture<'a, Outcome> {
                Box::pin(async move { $run(cx, inv).await })
            }
            fn poll<'a>(&'a self, cx: &'a Context, inv: &'a Invocation) -> BoxFuture<'a, Outcome> {
                Box::pin(async move { $run(cx, inv).await })
            }
        }
    };
}

/// Params of `await-nodes-running` and `collect-and-set-peers`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodesParams {
    /// Names of the SeiNodes (in the owner's namespace).
    pub nodes: Vec<String>,
}

/// `await-nodes-running`: waits until every named SeiNode is in phase Running; fails (terminal) as soon as
/// one is Failed.
pub struct AwaitNodesRunning;
same_start_and_poll!(
    AwaitNodesRunning,
    "await-nodes-running",
    NodesParams,
    await_nodes_running
);

async fn await_nodes_running(cx: &Context, inv: &Invocation) -> Outcome {
    let params: NodesParams = match inv.params() {
        Ok(p) => p,
        Err(o) => return o,
    };
    let api: Api<SeiNode> = Api::namespaced(cx.client.clone(), &inv.namespace);
    let mut running = 0usize;
    for name in &params.nodes {
        match api.get_opt(name).await {
            Ok(Some(node)) => match node.phase() {
                Some(SeiNodePhase::Running) => running += 1,
                Some(SeiNodePhase::Failed) => {
                    return Outcome::terminal(format!("SeiNode {name} is Failed: {}", failure_of(&node)));
                }
                _ => {}
            },
            Ok(None) => {}
            Err(e) => return api_error("reading a SeiNode", &e),
        }
    }
    if running == params.nodes.len() {
        Outcome::Done(Map::from_iter([("running".to_owned(), json!(running))]))
    } else {
        Outcome::Running
    }
}

/// `collect-and-set-peers`: asks every named node's sidecar for its node id, then gives each node the others
/// as peers (never itself): `spec.peers` = one static source, and `status.resolvedPeers`, both sorted.
pub struct CollectAndSetPeers;
same_start_and_poll!(
    CollectAndSetPeers,
    "collect-and-set-peers",
    NodesParams,
    collect_and_set_peers
);

async fn collect_and_set_peers(cx: &Context, inv: &Invocation) -> Outcome {
    let params: NodesParams = match inv.params() {
        Ok(p) => p,
        Err(o) => return o,
    };
    let addresses = match peer_addresses(cx, inv, &params.nodes).await {
        Ok(a) => a,
        Err(o) => return o,
    };
    let api: Api<SeiNode> = Api::namespaced(cx.client.clone(), &inv.namespace);
    let manager = task_field_manager("collect-and-set-peers");
    for name in &params.nodes {
        let mut others: Vec<String> = (addresses.iter())
            .filter(|(n, _)| n != name)
            .map(|(_, a)| a.clone())
            .collect();
        others.sort();
        if let Err(o) = set_peers(&api, &manager, name, others).await {
            return o;
        }
    }
    Outcome::Done(Map::from_iter([("peers".to_owned(), json!(addresses.len()))]))
}

/// `(node, <nodeId>@<host>:<port>)` for each of `nodes`, the id asked of its sidecar.
async fn peer_addresses(
    cx: &Context,
    inv: &Invocation,
    nodes: &[String],
) -> Result<Vec<(String, String)>, Outcome> {
    let ns = &inv.namespace;
    let mut addresses = Vec::with_capacity(nodes.len());
    for name in nodes {
        let client = (cx.sidecar.node(ns, name)).with_traceparent(inv.traceparent.as_deref());
        match client.node_id().await {
            Ok(id) => addresses.push((name.clone(), peer_address(&id, ns, name))),
            Err(e) => return Err(Outcome::Unavailable(format!("node id of {name}: {e}"))),
        }
    }
    Ok(addresses)
}

/// Sets SeiNode `name`'s `spec.peers` to the static list `others` (when there are any) and its
/// `status.resolvedPeers` to `others`, each only when it differs.
async fn set_peers(
    api: &Api<SeiNode>,
    manager: &str,
    name: &str,
    others: Vec<String>,
) -> Result<(), Outcome> {
    let mut node = match api.get_opt(name).await {
        Ok(Some(n)) => n,
        Ok(None) => return Err(Outcome::Unavailable(format!("SeiNode {name} does not exist"))),
        Err(e) => return Err(api_error("reading a SeiNode", &e)),
    };
    // Both writes are guarded by the resourceVersion just read: a node that changed meanwhile (its own
    // controller's status write, a user's edit) makes the write fail with 409, and the next poll reads it
    // again and decides afresh.
    let write = |node: SeiNode, status: bool, patch: Value, field: &'static str| async move {
        let rv = node.resource_version().unwrap_or_default();
        match patch_guarded(api, name, &rv, manager, status, patch).await {
            Ok(n) => Ok(n),
            Err(e) if is_conflict(&e) => Err(Outcome::Unavailable(format!(
                "SeiNode {name} changed while setting {field}"
            ))),
            Err(e) => Err(api_error(&format!("setting {field}"), &e)),
        }
    };
    let want_spec = (!others.is_empty()).then(|| json!([{"static": {"addresses": others}}]));
    let have_spec = (node.spec.peers.as_ref()).and_then(|p| serde_json::to_value(p).ok());
    if want_spec.is_some() && want_spec != have_spec {
        node = write(node, false, json!({"spec": {"peers": want_spec}}), "spec.peers").await?;
    }
    let have_status = (node.status.as_ref())
        .map(|s| s.resolved_peers.clone())
        .unwrap_or_default();
    if have_status != others {
        write(
            node,
            true,
            json!({"status": {"resolvedPeers": others}}),
            "status.resolvedPeers",
        )
        .await?;
    }
    Ok(())
}

/// Params of `update-node-template`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateNodeTemplateParams {
    /// The seid image to roll to.
    pub image: String,
    /// The sidecar settings to roll to (absent: none in the template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<Value>,
    /// How many of the deployment's children may be unavailable at once, counting the ones already down
    /// (`updateStrategy.maxUnavailable`, a snapshot taken when the plan was built). Absent (plans compiled
    /// before it existed): the whole batch starts at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<u32>,
}

/// Which of a batch's `pending` nodes (not yet given the new template, in order) may start now, so that at
/// most `max_unavailable` of the fleet's children are down at once. `down` holds the children unavailable now
/// (not Running, pod not Ready, or started by this batch and not done yet); an admitted node is added to it.
/// A pending node that is already down costs nothing more and always starts; the others start while the
/// budget allows, in order (the first that does not fit stops the batch: the rest wait for the next poll).
pub fn admit(pending: &[String], down: &mut BTreeSet<String>, max_unavailable: usize) -> Vec<String> {
    let mut admitted = Vec::new();
    let mut blocked = false;
    for name in pending {
        if down.contains(name) {
            admitted.push(name.clone());
        } else if !blocked && down.len() < max_unavailable {
            down.insert(name.clone());
            admitted.push(name.clone());
        } else {
            blocked = true;
        }
    }
    admitted
}

/// Whether a pod is serving: Ready, and not being deleted.
#[must_use]
pub fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether a child counts as available: Running, its pod Ready, no plan in flight, and running the image its
/// spec asks for (a child given a new image is about to go down, whatever its pod says now).
#[must_use]
pub fn serving(node: &SeiNode, pod_ready: bool) -> bool {
    let status = node.status.clone().unwrap_or_default();
    pod_ready
        && status.phase == Some(SeiNodePhase::Running)
        && status.plan.is_none()
        && status.current_image.as_deref() == Some(node.spec.image.as_str())
}

/// The children of deployment `deployment` that are unavailable now (see [`serving`]).
async fn unavailable_children(
    cx: &Context,
    namespace: &str,
    deployment: &str,
) -> Result<BTreeSet<String>, kube::Error> {
    let selector = format!("{}={deployment}", labels::DEPLOYMENT);
    let lp = ListParams::default().labels(&selector);
    let nodes: Api<SeiNode> = Api::namespaced(cx.client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(cx.client.clone(), namespace);
    let ready_pods: BTreeSet<String> = pods
        .list(&lp)
        .await?
        .into_iter()
        .filter(pod_ready)
        .filter_map(|p| p.labels().get(labels::NODE).cloned())
        .collect();
    Ok(nodes
        .list(&lp)
        .await?
        .into_iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .filter(|n| !serving(n, ready_pods.contains(&n.name_any())))
        .map(|n| n.name_any())
        .collect())
}

/// `update-node-template`: propagates the template (in-place fields plus the plan's image and sidecar) to the
/// batch's children (the run's target: one or more comma-separated SeiNode names, e.g. a `forEach` item),
/// then waits until each one is Running the new images with no plan in flight (the child's
/// own `node-update` workflow does the per-node work). A child that no longer exists counts as done; a Failed
/// child fails the task.
///
/// With `maxUnavailable`, a child only gets the new template while the fleet can afford it: the deployment's
/// children that are down (not Running, pod not Ready, a plan in flight, or not yet on their spec's image; see
/// [`serving`]), plus the batch's children that were started and are not done yet, never exceed
/// `maxUnavailable` ([`admit`]); a child that is down already may always
/// start. The rest of the batch waits for the next poll, so a degraded fleet rolls one node at a time, or
/// waits until it recovers.
pub struct UpdateNodeTemplate;
same_start_and_poll!(
    UpdateNodeTemplate,
    "update-node-template",
    UpdateNodeTemplateParams,
    update_node_template
);

/// What a rollout batch rolls out: the plan's image and sidecar, and the sidecar image that follows from them.
struct Rollout {
    params: UpdateNodeTemplateParams,
    deployment: SeiNodeDeployment,
    rolled: Rolled,
    sidecar_image: String,
}

impl Rollout {
    fn read(cx: &Context, inv: &Invocation) -> Result<Self, Outcome> {
        let params: UpdateNodeTemplateParams = inv.params()?;
        let deployment: SeiNodeDeployment = serde_json::from_value((*inv.owner_object).clone())
            .map_err(|e| Outcome::terminal(format!("the owner is not a SeiNodeDeployment: {e}")))?;
        let sidecar = (params.sidecar.clone())
            .map(serde_json::from_value::<SidecarConfig>)
            .transpose()
            .map_err(|e| Outcome::terminal(format!("params.sidecar: {e}")))?;
        let rolled = Rolled {
            image: params.image.clone(),
            sidecar,
        };
        let sidecar_image = (rolled.sidecar.as_ref())
            .and_then(|s| s.image.clone())
            .unwrap_or_else(|| cx.platform.images.sidecar.clone());
        Ok(Self {
            params,
            deployment,
            rolled,
            sidecar_image,
        })
    }

    /// The batch's children by progress: not given the template yet (`pending`), given it and not done
    /// (`waiting`); done and deleted children are left out. A Failed child fails the task.
    async fn classify(&self, api: &Api<SeiNode>, target: &str) -> Result<Batch, Outcome> {
        let mut batch = Batch::default();
        for name in target.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let node = match api.get_opt(name).await {
                Ok(Some(n)) => n,
                Ok(None) => continue,
                Err(e) => return Err(api_error("reading a SeiNode", &e)),
            };
            if node.phase() == Some(SeiNodePhase::Failed) {
                return Err(Outcome::terminal(format!(
                    "SeiNode {name} is Failed: {}",
                    failure_of(&node)
                )));
            }
            if node.spec.image != self.rolled.image || node.spec.sidecar != self.rolled.sidecar {
                batch.pending.push((name.to_owned(), node));
                continue;
            }
            let status = node.status.clone().unwrap_or_default();
            let done = status.phase == Some(SeiNodePhase::Running)
                && status.current_image.as_deref() == Some(self.rolled.image.as_str())
                && status.current_sidecar_image.as_deref() == Some(self.sidecar_image.as_str())
                && status.plan.is_none();
            if !done {
                batch.waiting.push(name.to_owned());
            }
        }
        Ok(batch)
    }

    /// The pending children the fleet's availability budget admits now (all of them without
    /// `maxUnavailable`).
    async fn admitted(
        &self,
        cx: &Context,
        inv: &Invocation,
        batch: &Batch,
    ) -> Result<BTreeSet<String>, Outcome> {
        let names: Vec<String> = batch.pending.iter().map(|(n, _)| n.clone()).collect();
        let max = match self.params.max_unavailable {
            None => return Ok(names.into_iter().collect()),
            Some(_) if names.is_empty() => return Ok(BTreeSet::new()),
            Some(max) => usize::try_from(max.max(1)).unwrap_or(1),
        };
        let mut down = unavailable_children(cx, &inv.namespace, &inv.owner)
            .await
            .map_err(|e| api_error("reading the fleet's availability", &e))?;
        down.extend(batch.waiting.iter().cloned());
        let admitted = admit(&names, &mut down, max);
        if admitted.len() < names.len() {
            tracing::info!(
                ?down,
                max_unavailable = max,
                held = names.len() - admitted.len(),
                "Rollout batch waits: the fleet has no availability budget for the rest of it"
            );
        }
        Ok(admitted.into_iter().collect())
    }
}

/// A rollout batch's children by progress ([`Rollout::classify`]).
#[derive(Default)]
struct Batch {
    pending: Vec<(String, SeiNode)>,
    waiting: Vec<String>,
}

async fn update_node_template(cx: &Context, inv: &Invocation) -> Outcome {
    match roll_batch(cx, inv).await {
        Ok(outcome) | Err(outcome) => outcome,
    }
}

/// Classify the batch, admit what the budget allows, give the admitted children the template.
async fn roll_batch(cx: &Context, inv: &Invocation) -> Result<Outcome, Outcome> {
    let rollout = Rollout::read(cx, inv)?;
    let api: Api<SeiNode> = Api::namespaced(cx.client.clone(), &inv.namespace);
    let batch = rollout.classify(&api, inv.target()).await?;
    let admitted = rollout.admitted(cx, inv, &batch).await?;
    let Batch { pending, mut waiting } = batch;
    for (name, node) in pending {
        waiting.push(name.clone());
        if !admitted.contains(&name) {
            continue;
        }
        let Some(ordinal) = ordinal_of(&node) else {
            let label = labels::DEPLOYMENT_ORDINAL;
            return Err(Outcome::terminal(format!("SeiNode {name} has no {label} label")));
        };
        let desired = desired_child(&rollout.deployment, ordinal, Some(&node), Some(&rollout.rolled));
        if let Err(e) = apply_child(&cx.client, &desired).await {
            return Err(api_error("applying the SeiNode", &e));
        }
    }
    if waiting.is_empty() {
        Ok(Outcome::Done(Map::from_iter([(
            "image".to_owned(),
            json!(rollout.rolled.image),
        )])))
    } else {
        tracing::debug!(?waiting, image = %rollout.rolled.image, "Rollout batch not done yet");
        Ok(Outcome::Running)
    }
}

/// Params of `record-genesis-hash`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordGenesisHashParams {
    /// The hash the assembler reported.
    pub genesis_hash: String,
}

/// `record-genesis-hash`: records the assembled genesis file's hash in the owner's `status.genesisHash`.
pub struct RecordGenesisHash;
same_start_and_poll!(
    RecordGenesisHash,
    "record-genesis-hash",
    RecordGenesisHashParams,
    record_genesis_hash
);

#[allow(clippy::unused_async)] // shares the macro with the tasks that do I/O
async fn record_genesis_hash(_cx: &Context, inv: &Invocation) -> Outcome {
    let params: RecordGenesisHashParams = match inv.params() {
        Ok(p) => p,
        Err(o) => return o,
    };
    if params.genesis_hash.is_empty() {
        return Outcome::terminal("the assembler reported an empty genesis hash");
    }
    inv.status
        .set_field("genesisHash", Value::String(params.genesis_hash.clone()));
    Outcome::Done(Map::from_iter([(
        "genesisHash".to_owned(),
        Value::String(params.genesis_hash),
    )]))
}

/// Params of `await-genesis`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwaitGenesisParams {
    /// The ceremony task whose run for this node ends the ceremony's work on it (default `mark-ready`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// `await-genesis` (run by a ceremony child for itself): waits until its deployment's genesis ceremony has
/// finished with this node (the ceremony plan's `<after>[<node>]` run Succeeded, or the ceremony is complete),
/// then records the genesis hash and the StatefulSet on the node's status. Fails (terminal) when the ceremony
/// failed.
pub struct AwaitGenesis;
same_start_and_poll!(AwaitGenesis, "await-genesis", AwaitGenesisParams, await_genesis);

async fn await_genesis(cx: &Context, inv: &Invocation) -> Outcome {
    match wait_for_ceremony(cx, inv).await {
        Ok(outcome) | Err(outcome) => outcome,
    }
}

/// Reads the parent deployment's ceremony; once it is done for this node, records the genesis hash and the
/// node's StatefulSet in the node's status.
async fn wait_for_ceremony(cx: &Context, inv: &Invocation) -> Result<Outcome, Outcome> {
    let params: AwaitGenesisParams = inv.params()?;
    let after = params.after.as_deref().unwrap_or("mark-ready");
    let node: SeiNode = serde_json::from_value((*inv.owner_object).clone())
        .map_err(|e| Outcome::terminal(format!("the owner is not a SeiNode: {e}")))?;
    let name = node.name_any();
    let Some(parent) = node.labels().get(labels::DEPLOYMENT).cloned() else {
        let label = labels::DEPLOYMENT;
        let message = format!("SeiNode {name} has a genesis ceremony marker but no {label} label");
        return Err(Outcome::terminal(message));
    };
    let api: Api<SeiNodeDeployment> = Api::namespaced(cx.client.clone(), &inv.namespace);
    let deployment = match api.get_opt(&parent).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return Err(Outcome::terminal(format!(
                "SeiNodeDeployment {parent} does not exist"
            )));
        }
        Err(e) => return Err(api_error("reading the SeiNodeDeployment", &e)),
    };
    let status = deployment.status.unwrap_or_default();
    let Ceremony::Done { hash } = ceremony(&status, &parent, &format!("{after}[{name}]"))? else {
        return Ok(Outcome::Running);
    };
    let mut outputs = Map::new();
    if let Some(hash) = hash {
        inv.status.set_field("genesisHash", Value::String(hash.clone()));
        outputs.insert("genesisHash".to_owned(), Value::String(hash));
    }
    let sts: Api<StatefulSet> = Api::namespaced(cx.client.clone(), &inv.namespace);
    match sts.get_opt(&name).await {
        Ok(Some(s)) => {
            let uid = s.metadata.uid.unwrap_or_default();
            inv.status
                .set_field("statefulSet", json!({"name": name, "uid": uid}));
        }
        Ok(None) => {
            return Err(Outcome::Unavailable(format!(
                "StatefulSet {name} does not exist yet"
            )));
        }
        Err(e) => return Err(api_error("reading the StatefulSet", &e)),
    }
    Ok(Outcome::Done(outputs))
}

/// Where a deployment's genesis ceremony stands for one node.
enum Ceremony {
    Running,
    /// Complete, or this node's step succeeded in the ceremony plan; with the genesis hash when known.
    Done {
        hash: Option<String>,
    },
}

/// Where deployment `parent`'s ceremony stands for the node whose step is `run`; a ceremony that failed with no
/// plan left fails the task.
fn ceremony(
    status: &sei_crds::SeiNodeDeploymentStatus,
    parent: &str,
    run: &str,
) -> Result<Ceremony, Outcome> {
    let ceremony = status.condition(conditions::GENESIS_CEREMONY_COMPLETE);
    let complete = ceremony.is_some_and(|c| c.status == ConditionStatus::True.as_str());
    let plan = status.plan.as_ref().filter(|p| p.workflow == CEREMONY_WORKFLOW);
    let finished_here = (plan.and_then(|p| p.run(run))).is_some_and(|v| v.run.state == TaskState::Succeeded);
    if !(complete || finished_here) {
        if plan.is_none()
            && let Some(c) = ceremony.filter(|c| c.reason == conditions::reasons::CEREMONY_FAILED)
        {
            let message = format!(
                "the genesis ceremony of SeiNodeDeployment {parent} failed: {}",
                c.message
            );
            return Err(Outcome::terminal(message));
        }
        return Ok(Ceremony::Running);
    }
    let hash = status.genesis_hash.clone().or_else(|| {
        plan.and_then(|p| p.run("assemble"))
            .and_then(|v| v.run.outputs.as_ref())
            .and_then(|o| o.get("genesisHash"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    Ok(Ceremony::Done { hash })
}

/// Every fleet task.
pub(crate) fn register(r: crate::task::Registry) -> crate::task::Registry {
    r.with(AwaitNodesRunning)
        .with(CollectAndSetPeers)
        .with(UpdateNodeTemplate)
        .with(RecordGenesisHash)
        .with(AwaitGenesis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::sidecar::{SetGenesisPeersParams, compact_outputs};

    fn deployment(genesis: bool) -> SeiNodeDeployment {
        let mut value = json!({
            "apiVersion": "sei.io/v1alpha1",
            "kind": "SeiNodeDeployment",
            "metadata": {"name": "fleet", "namespace": "ns", "uid": "u-1"},
            "spec": {
                "replicas": 3,
                "template": {
                    "metadata": {"labels": {"team": "a"}, "annotations": {"note": "x"}},
                    "spec": {"chainId": "c-1", "image": "seid:v1", "validator": {}, "podLabels": {"p": "1"}},
                },
            },
        });
        if genesis {
            value["spec"]["genesis"] = json!({"chainId": "c-1"});
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_new_child_carries_the_template_the_fleet_labels_the_owner_and_the_ceremony_marker() {
        let d = deployment(true);
        let child = desired_child(&d, 2, None, None);
        assert_eq!(child.name_any(), "fleet-2");
        let l = child.labels();
        assert_eq!(l[labels::DEPLOYMENT], "fleet");
        assert_eq!(l[labels::DEPLOYMENT_ORDINAL], "2");
        assert_eq!(l[labels::ROLE], "validator");
        assert_eq!(l["team"], "a");
        assert_eq!(child.annotations()["note"], "x");
        assert_eq!(child.owner_references()[0].uid, "u-1");
        assert_eq!(child.spec.genesis_ceremony().unwrap().index, 2);
        assert_eq!(child.spec.image, "seid:v1");
        assert_eq!(ordinal_of(&child), Some(2));
    }

    #[test]
    fn in_place_updates_keep_image_peers_and_identity_and_a_rollout_sets_the_image() {
        let mut d = deployment(false);
        let mut existing = desired_child(&d, 0, None, None);
        existing.spec.peers = Some(vec![sei_crds::PeerSource::default()]);
        d.spec.template.spec.image = "seid:v2".into();
        d.spec.template.spec.pod_labels = Some(BTreeMap::from([("p".into(), "2".into())]));
        d.spec.paused = true;
        let in_place = desired_child(&d, 0, Some(&existing), None);
        assert_eq!(in_place.spec.image, "seid:v1");
        assert_eq!(in_place.spec.peers, existing.spec.peers);
        assert_eq!(in_place.spec.pod_labels.as_ref().unwrap()["p"], "2");
        assert!(in_place.spec.paused);
        assert!(needs_apply(&existing, &in_place));
        assert!(!needs_apply(&in_place, &in_place));
        let rolled = Rolled {
            image: "seid:v2".into(),
            sidecar: None,
        };
        assert_eq!(
            desired_child(&d, 0, Some(&existing), Some(&rolled)).spec.image,
            "seid:v2"
        );
    }

    #[test]
    fn user_annotations_and_labels_do_not_force_an_apply() {
        let d = deployment(false);
        let mut existing = desired_child(&d, 1, None, None);
        existing
            .annotations_mut()
            .insert("user/keep".into(), "yes".into());
        existing.labels_mut().insert("user".into(), "1".into());
        assert!(!needs_apply(
            &existing,
            &desired_child(&d, 1, Some(&existing), None)
        ));
    }

    #[test]
    fn peer_addresses_use_the_pod_dns_name() {
        assert_eq!(
            peer_address("ab", "ns", "v-0"),
            "ab@v-0-0.v-0.ns.svc.cluster.local:26656"
        );
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_healthy_fleet_starts_the_whole_batch_of_max_unavailable() {
        let mut down = BTreeSet::new();
        assert_eq!(
            admit(&names(&["f-0", "f-1"]), &mut down, 2),
            names(&["f-0", "f-1"])
        );
        assert_eq!(down.len(), 2);
    }

    #[test]
    fn nodes_already_down_use_up_the_budget_before_a_batch_starts() {
        // One node of the fleet is down (not in the batch): a batch of 2 with maxUnavailable 2 starts one node.
        let mut down = BTreeSet::from(["f-4".to_owned()]);
        assert_eq!(admit(&names(&["f-0", "f-1"]), &mut down, 2), names(&["f-0"]));
        // Two down: nothing starts, the batch waits.
        let mut down = BTreeSet::from(["f-3".to_owned(), "f-4".to_owned()]);
        assert!(admit(&names(&["f-0", "f-1"]), &mut down, 2).is_empty());
        // A started node of the batch still in flight counts too.
        let mut down = BTreeSet::from(["f-0".to_owned()]);
        assert!(admit(&names(&["f-1"]), &mut down, 1).is_empty());
    }

    #[test]
    fn a_batch_node_that_is_already_down_costs_nothing_more() {
        // maxUnavailable 1 and the outdated node itself is the one down: it may be rolled (it cannot get worse).
        let mut down = BTreeSet::from(["f-2".to_owned()]);
        assert_eq!(admit(&names(&["f-1", "f-2"]), &mut down, 1), names(&["f-2"]));
        assert_eq!(down.len(), 1, "the budget stays spent on f-2 alone");
    }

    #[test]
    fn set_genesis_peers_keeps_a_count_and_a_digest_of_the_peer_list_not_the_list() {
        let peers: Vec<String> = (0..99)
            .map(|i| peer_address(&format!("{i:040x}"), "ns", &format!("v-{i}")))
            .collect();
        let raw = Outcome::Done(Map::from_iter([
            ("peers".to_owned(), json!(peers)),
            ("note".to_owned(), json!("kept")),
        ]));
        let Outcome::Done(out) = compact_outputs(raw) else {
            panic!("still done")
        };
        assert_eq!(out["peerCount"], 99);
        assert_eq!(out["peersSha256"].as_str().map(str::len), Some(64));
        assert_eq!(out["note"], "kept");
        assert!(!out.contains_key("peers"));
        let bytes = serde_json::to_string(&out).unwrap().len();
        assert!(bytes < 200, "{bytes} bytes");
        // The digest does not depend on the order the sidecar listed the peers in.
        let mut reversed = peers.clone();
        reversed.reverse();
        let Outcome::Done(again) = compact_outputs(Outcome::Done(Map::from_iter([(
            "peers".to_owned(),
            json!(reversed),
        )]))) else {
            panic!()
        };
        assert_eq!(again["peersSha256"], out["peersSha256"]);
        // Other outcomes pass through.
        assert_eq!(compact_outputs(Outcome::Running), Outcome::Running);
    }

    #[test]
    fn set_genesis_peers_is_the_sidecar_task_with_its_params() {
        let registry = crate::catalog::registry();
        let task = registry.get("set-genesis-peers").unwrap();
        assert_eq!(task.task_type(), "set-genesis-peers");
        assert_eq!(
            task.params_schema(),
            schema_of::<SetGenesisPeersParams>(),
            "the same params as the sidecar task"
        );
    }
}
