//! The SeiNodeDeployment (fleet) controller. One reconcile:
//!
//! 1. finalizer: on deletion with `deletionPolicy: Retain`, the ownerReferences to the deployment are removed
//!    from the children and the internal Service (so garbage collection keeps them), then the finalizer is
//!    released; with `Delete` the finalizer is released at once and garbage collection deletes the children
//!    (and, through them, their StatefulSets, Services and PVCs);
//! 2. children: every ordinal `0..replicas` gets its SeiNode `<deployment>-<i>` (created, or updated in place),
//!    written by server-side apply under the field manager
//!    [`FIELD_MANAGER`](sei_tasks::catalog::fleet::FIELD_MANAGER); children with a higher ordinal are deleted
//!    (scale down). What reaches an existing child, and what never does, is the table of
//!    [`sei_tasks::catalog::fleet`]: labels, annotations, `podLabels`, `overrides` and `paused` in place; the
//!    image and sidecar only through a rollout; peers and identity never;
//! 3. the internal ClusterIP Service `<deployment>-internal` selecting the children's pods;
//! 4. plans, as in the SeiNode controller: an active plan is driven (a `fleet-rollout` whose target moved is
//!    superseded first); a finished one applies its onSuccess/onFailure conditions and goes to `planHistory`;
//!    without one, the first triggered workflow (`genesis-ceremony`, `fleet-rollout`) becomes the plan;
//! 5. aggregate status (replicas, readyReplicas, upToDateReplicas, nodes, endpoints, conditions, phase) and
//!    exactly one status write, guarded by the resourceVersion, only when something changed.
//!
//! # Genesis ceremony: how the ceremony plan and the children's plans coordinate
//!
//! **The ceremony plan drives the children; each child's own plan only waits.** A deployment with
//! `spec.genesis` creates its children with the ceremony marker `spec.validator.genesisCeremony` (chain,
//! staking amount, balance, ordinal). A child carrying the marker does not run `node-init` (its trigger
//! excludes the marker); it runs `ceremony-member`, whose first task `await-genesis` waits, reading the
//! deployment, until the ceremony plan's run `mark-ready[<child>]` has Succeeded (or the ceremony is complete),
//! then records the genesis hash and StatefulSet on the child, `observe-image` records the images it runs, and
//! the child becomes Running. If the ceremony fails first, `await-genesis` fails and the child becomes Failed.
//!
//! The `genesis-ceremony` plan belongs to the deployment and is one trace. Its tasks target the children
//! (`forEach: nodes`, `target` = the child): each child's PVC, StatefulSet and headless Service, then per
//! validator in parallel `generate-identity` -> `generate-gentx` -> `upload-genesis-artifacts`; then
//! `assemble-and-upload-genesis` on the first child, whose `genesisHash` output goes to the deployment's
//! `status.genesisHash` (`record-genesis-hash`) and into every child's `configure-genesis` as
//! `expectedGenesisHash` (a mismatch is terminal); then per child `config-apply`, `set-genesis-peers`,
//! `config-validate`, `mark-ready`; then `collect-and-set-peers` (every child gets the others, never itself, in
//! `spec.peers` and `status.resolvedPeers`) and `await-nodes-running`. So between the children's creation and
//! their `mark-ready`, only the ceremony plan acts on a child's objects and sidecar; after it, only the child's
//! own plan does (the fleet tasks that follow only read node ids and write peers and status). No two plans
//! drive the same node at once.
//!
//! The plan's deadline is `spec.genesis.maxCeremonyDuration`: the controller sets `plan.deadline` right after
//! compiling (the workflow file's `deadline` is the 15-minute default); no engine change was needed. Each task
//! retries per the workflow's retry policies. A failed ceremony is not rebuilt automatically (a terminal hash
//! mismatch would only fail again): `GenesisCeremonyComplete` becomes False/`CeremonyFailed` with a message
//! naming the failing task and node, the phase becomes Failed, and the plan's summary stays in `planHistory`.
//!
//! # Rollouts
//!
//! When children's `spec.image` or `spec.sidecar` differ from the template, `fleet-rollout` runs with the
//! outdated children cut into batches of `updateStrategy.maxUnavailable` (facts `rolloutBatches`, in ordinal
//! order). The plan runs one batch at a time (`maxParallel: 1`); `update-node-template` sets the batch's image
//! and sidecar and waits until each of its nodes is Running the new images with no plan in flight (the child's
//! own `node-update` does the work). The phase is Upgrading and `RolloutInProgress` True meanwhile. When the
//! template's image or sidecar changes during a rollout, the plan is superseded: the batch in flight finishes
//! (the safe point), the plan ends Cancelled, and the next reconcile starts a rollout to the new template.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Resource, ResourceExt};
use sei_crds::conditions::{self, ConditionStatus, reasons};
use sei_crds::{
    DeletionPolicy, DeploymentEndpoints, InternalService, InternalServicePorts, NodeEvmEndpoints,
    NodeSummary, SeiNode, SeiNodeDeployment, SeiNodeDeploymentPhase, SeiNodeDeploymentStatus, SeiNodePhase,
    labels,
};
use sei_engine::{Plan, PlanPhase};
use sei_tasks::catalog::fleet::{self, FIELD_MANAGER};
use sei_tasks::task::StatusSink;
use sei_workflows::{Bindings, node_binding};
use serde_json::{Value, json};

use crate::clock::until;
use crate::context::Context;
use crate::drive::{Owner, drive};
use crate::error::Error;
use crate::lifecycle::{self, condition};

/// Kind name used for owners and CEL targets.
pub const KIND: &str = "SeiNodeDeployment";
/// Status fields tasks may set on a deployment (anything else a node task records is dropped).
const STATUS_FIELDS: &[&str] = &["genesisHash"];
/// Resync of a deployment with nothing due.
const RESYNC: Duration = Duration::from_secs(30);

/// Names of the facts in the deployment's `node` CEL binding.
pub mod facts {
    /// Names of the children with an ordinal below `replicas`, in ordinal order.
    pub const NODES: &str = "nodes";
    /// Outdated children (image or sidecar differ from the template) in batches of `maxUnavailable`, each
    /// batch the comma-separated names.
    pub const ROLLOUT_BATCHES: &str = "rolloutBatches";
    /// `spec.genesis` with its defaults filled in (absent without genesis).
    pub const GENESIS: &str = "genesis";
}

/// Entry point for the kube-runtime controller.
pub async fn reconcile(deployment: Arc<SeiNodeDeployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciled(KIND);
    let ns = deployment.namespace().unwrap_or_default();
    let api: Api<SeiNodeDeployment> = Api::namespaced(ctx.client.clone(), &ns);
    let deployment =
        crate::status::with_finalizer(&api, deployment, labels::SEINODEDEPLOYMENT_FINALIZER).await?;
    finalizer(
        &api,
        labels::SEINODEDEPLOYMENT_FINALIZER,
        deployment,
        |event| async {
            match event {
                FinalizerEvent::Apply(d) => apply(d, &ctx).await,
                FinalizerEvent::Cleanup(d) => cleanup(d, &ctx).await,
            }
        },
    )
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Policy for failed reconciles: conflicts retry at once, the rest back off.
#[allow(clippy::needless_pass_by_value)] // the signature kube-runtime's Controller::run expects
pub fn error_policy(_d: Arc<SeiNodeDeployment>, error: &Error, ctx: Arc<Context>) -> Action {
    crate::error::policy(KIND, error, &ctx.metrics)
}

/// The children of `deployment`: SeiNodes labelled with its name, by ordinal.
async fn list_children(
    ctx: &Context,
    deployment: &SeiNodeDeployment,
) -> Result<BTreeMap<i32, SeiNode>, Error> {
    let ns = deployment.namespace().unwrap_or_default();
    let api: Api<SeiNode> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = format!("{}={}", labels::DEPLOYMENT, deployment.name_any());
    let list = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::Kube)?;
    let uid = deployment.uid();
    Ok(list
        .into_iter()
        .filter(|n| {
            // Ours, or unowned (adopted: the next apply adds the ownerReference); never another owner's.
            let refs = n.owner_references();
            refs.is_empty() || refs.iter().any(|r| Some(&r.uid) == uid.as_ref())
        })
        .filter_map(|n| fleet::ordinal_of(&n).map(|o| (o, n)))
        .collect())
}

/// Removes this deployment's ownerReference from an object (merge patch of the remaining list).
async fn release<K>(api: &Api<K>, obj: &K, uid: &str) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let refs = obj.owner_references();
    if !refs.iter().any(|r| r.uid == uid) {
        return Ok(());
    }
    let keep: Vec<_> = refs.iter().filter(|r| r.uid != uid).cloned().collect();
    // Guarded: the patch carries the resourceVersion read, so a changed object is refused (409, requeue).
    let patch = json!({"metadata": {"ownerReferences": keep}});
    let rv = obj.resource_version().unwrap_or_default();
    match fleet::patch_guarded(api, &obj.name_any(), &rv, FIELD_MANAGER, false, patch).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Err(Error::Conflict),
        Err(e) => Err(Error::Kube(e)),
    }
}

async fn cleanup(deployment: Arc<SeiNodeDeployment>, ctx: &Context) -> Result<Action, Error> {
    if let Some(uid) = &deployment.metadata.uid {
        ctx.superseded.forget(uid);
    }
    let ns = deployment.namespace().unwrap_or_default();
    let name = deployment.name_any();
    let api: Api<SeiNodeDeployment> = Api::namespaced(ctx.client.clone(), &ns);
    if deployment.phase() != Some(SeiNodeDeploymentPhase::Terminating) {
        // Guarded like every status write: a stale copy is refused (and the phase is set by a later pass).
        let patch = json!({"status": {"phase": SeiNodeDeploymentPhase::Terminating.as_str()}});
        let rv = deployment.resource_version().unwrap_or_default();
        if let Err(e) = fleet::patch_guarded(&api, &name, &rv, FIELD_MANAGER, true, patch).await {
            tracing::debug!(
                error = &e as &dyn std::error::Error,
                "Recording phase Terminating failed"
            );
        }
    }
    let note = match deployment.spec.deletion_policy {
        DeletionPolicy::Retain => {
            let uid = deployment.uid().unwrap_or_default();
            let nodes: Api<SeiNode> = Api::namespaced(ctx.client.clone(), &ns);
            let children = list_children(ctx, &deployment).await?;
            for child in children.values() {
                release(&nodes, child, &uid).await?;
            }
            let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
            if let Some(svc) = services
                .get_opt(&deployment.internal_service_name())
                .await
                .map_err(Error::Kube)?
            {
                release(&services, &svc, &uid).await?;
            }
            (
                "RetainResources",
                format!(
                    "deletionPolicy Retain: kept {} SeiNodes and Service {}",
                    children.len(),
                    deployment.internal_service_name()
                ),
            )
        }
        DeletionPolicy::Delete => (
            "DeleteResources",
            "deletionPolicy Delete: the SeiNodes and the internal Service are garbage-collected".to_owned(),
        ),
    };
    ctx.event(&*deployment, EventType::Normal, note.0, "Delete", Some(note.1));
    Ok(Action::await_change())
}

/// The `node` binding of a deployment's workflows (see [`facts`]).
/// The CEL bindings of `deployment` (`self` and the facts derived from its children), as its controller
/// builds them.
pub(crate) async fn bindings(deployment: &SeiNodeDeployment, ctx: &Context) -> Result<Bindings, Error> {
    let children = list_children(ctx, deployment).await?;
    let object = serde_json::to_value(deployment).map_err(Error::Serialize)?;
    Bindings::new(&object, &bindings_facts(deployment, &children)).map_err(Error::Cel)
}

pub(crate) fn bindings_facts(deployment: &SeiNodeDeployment, children: &BTreeMap<i32, SeiNode>) -> Value {
    let replicas = deployment.spec.replicas;
    let current: Vec<&SeiNode> = children.range(0..replicas).map(|(_, n)| n).collect();
    let template = &deployment.spec.template.spec;
    let outdated: Vec<String> = current
        .iter()
        .filter(|n| n.spec.image != template.image || n.spec.sidecar != template.sidecar)
        .map(|n| n.name_any())
        .collect();
    let batch = usize::try_from(deployment.spec.update_strategy.max_unavailable.max(1)).unwrap_or(1);
    let batches: Vec<String> = outdated.chunks(batch).map(|c| c.join(",")).collect();
    let mut f = BTreeMap::from([
        (
            facts::NODES,
            json!(current.iter().map(|n| n.name_any()).collect::<Vec<_>>()),
        ),
        (facts::ROLLOUT_BATCHES, json!(batches)),
    ]);
    if let Some(genesis) = &deployment.spec.genesis {
        f.insert(
            facts::GENESIS,
            serde_json::to_value(genesis).unwrap_or(Value::Null),
        );
    }
    node_binding(f)
}

/// Why a plan did not succeed, naming the failing task and the node it ran on.
pub fn failure_message(plan: &Plan) -> String {
    let outcome = plan
        .message
        .clone()
        .unwrap_or_else(|| format!("plan {:?}", plan.phase));
    let Some(view) = plan.failed_task.as_deref().and_then(|t| plan.run(t)) else {
        return outcome;
    };
    let node = view
        .task
        .run_target(view.index)
        .map_or_else(String::new, |t| format!(" on node {t}"));
    let error = view
        .run
        .error
        .as_ref()
        .map_or_else(|| outcome.clone(), ToString::to_string);
    format!(
        "task {} ({}){node} failed after {} attempt(s): {error}",
        view.name(),
        view.task.task_type,
        view.run.attempt
    )
}

/// The internal ClusterIP Service in front of every child's pod.
fn internal_service(deployment: &SeiNodeDeployment) -> Service {
    let name = deployment.name_any();
    let port = |name: &str, port: u16| ServicePort {
        name: Some(name.to_owned()),
        port: i32::from(port),
        target_port: Some(IntOrString::Int(i32::from(port))),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    };
    Service {
        metadata: ObjectMeta {
            name: Some(deployment.internal_service_name()),
            namespace: deployment.namespace(),
            labels: Some(BTreeMap::from([(labels::DEPLOYMENT.to_owned(), name.clone())])),
            annotations: Some(BTreeMap::from([(
                labels::MANAGED_BY.to_owned(),
                labels::MANAGED_BY_DEPLOYMENT.to_owned(),
            )])),
            owner_references: deployment.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(BTreeMap::from([(labels::DEPLOYMENT.to_owned(), name)])),
            publish_not_ready_addresses: Some(false),
            ports: Some(vec![
                port("rpc", sei_crds::ports::RPC),
                port("evm-http", sei_crds::ports::EVM_RPC),
                port("rest", sei_crds::ports::REST),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// Applies the internal Service when it is missing or differs from what the deployment wants.
async fn reconcile_service(ctx: &Context, deployment: &SeiNodeDeployment) -> Result<(), Error> {
    let desired = internal_service(deployment);
    let ns = deployment.namespace().unwrap_or_default();
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let name = desired.name_any();
    let existing = api.get_opt(&name).await.map_err(Error::Kube)?;
    let current = existing.as_ref().is_some_and(|svc| {
        let (have, want) = (
            svc.spec.clone().unwrap_or_default(),
            desired.spec.clone().unwrap_or_default(),
        );
        have.selector == want.selector
            && have
                .ports
                .iter()
                .flatten()
                .map(|p| (&p.name, p.port))
                .collect::<Vec<_>>()
                == want
                    .ports
                    .iter()
                    .flatten()
                    .map(|p| (&p.name, p.port))
                    .collect::<Vec<_>>()
            && svc
                .owner_references()
                .iter()
                .any(|r| Some(&r.uid) == deployment.uid().as_ref())
    });
    if !current {
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await
        .map_err(Error::Kube)?;
    }
    Ok(())
}

/// The fleet phase (reference 1.2, plus Upgrading for rollouts), in order of precedence.
fn phase_of(
    deployment: &SeiNodeDeployment,
    status: &SeiNodeDeploymentStatus,
    ready: i32,
    failed: i32,
) -> SeiNodeDeploymentPhase {
    use SeiNodeDeploymentPhase as P;
    let replicas = deployment.spec.replicas;
    // The active plan's phase, as its workflow declares it (`onStart.phase`: Initializing for a ceremony,
    // Upgrading for a rollout).
    let started: Option<P> = status
        .plan
        .as_ref()
        .and_then(|p| p.on_start.as_ref())
        .and_then(|e| e.get("phase"))
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    let ceremony_failed = status
        .condition(conditions::GENESIS_CEREMONY_COMPLETE)
        .is_some_and(|c| c.reason == reasons::CEREMONY_FAILED);
    if deployment.spec.paused {
        P::Paused
    } else if let Some(phase) = started {
        phase
    } else if ceremony_failed {
        P::Failed
    } else if status.replicas == 0 {
        P::Pending
    } else if failed > 0 && failed == status.replicas {
        P::Failed
    } else if failed > 0 {
        P::Degraded
    } else if ready == replicas && status.up_to_date_replicas == replicas {
        P::Ready
    } else {
        P::Initializing
    }
}

/// Aggregates the children into the status: counts, node summaries, endpoints, conditions and phase.
fn aggregate(
    deployment: &SeiNodeDeployment,
    children: &BTreeMap<i32, SeiNode>,
    status: &mut SeiNodeDeploymentStatus,
) {
    let ns = deployment.namespace().unwrap_or_default();
    let generation = deployment.metadata.generation;
    let image = &deployment.spec.template.spec.image;
    let count = |f: &dyn Fn(&SeiNode) -> bool| {
        i32::try_from(children.values().filter(|n| f(n)).count()).unwrap_or(i32::MAX)
    };
    let ready = count(&|n| n.phase() == Some(SeiNodePhase::Running));
    let failed = count(&|n| n.phase() == Some(SeiNodePhase::Failed));
    status.observed_generation = generation;
    status.replicas = i32::try_from(children.len()).unwrap_or(i32::MAX);
    status.ready_replicas = ready;
    status.up_to_date_replicas =
        count(&|n| n.status.as_ref().and_then(|s| s.current_image.as_deref()) == Some(image.as_str()));
    status.nodes = children
        .values()
        .map(|n| NodeSummary {
            name: n.name_any(),
            phase: n.phase(),
            current_image: n.status.as_ref().and_then(|s| s.current_image.clone()),
        })
        .collect();
    let svc = deployment.internal_service_name();
    status.internal_service = Some(InternalService {
        name: svc.clone(),
        namespace: ns.clone(),
        ports: InternalServicePorts::default(),
    });
    status.endpoints = Some(DeploymentEndpoints {
        tendermint_rpc: Some(format!("http://{svc}.{ns}.svc:{}", sei_crds::ports::RPC)),
        tendermint_rest: Some(format!("http://{svc}.{ns}.svc:{}", sei_crds::ports::REST)),
        nodes: children
            .values()
            .map(|n| NodeEvmEndpoints {
                name: n.name_any(),
                evm_json_rpc: format!("http://{}.{ns}.svc:{}", n.name_any(), sei_crds::ports::EVM_RPC),
                evm_ws: format!("ws://{}.{ns}.svc:{}", n.name_any(), sei_crds::ports::EVM_WS),
            })
            .collect(),
    });

    set_conditions(deployment, status, ready, failed);
    status.phase = Some(phase_of(deployment, status, ready, failed));
}

/// The conditions derived each reconcile (the plans' effects set the rest): each known condition is present
/// from the first write (`False`, `NotStarted` until something happens), `PlanInProgress` follows the plan,
/// a running plan's `onStart` effect is applied again (a rollout's `RolloutInProgress`, a ceremony's
/// `GenesisCeremonyComplete`), `NodesReady` and `Paused` follow the children and the spec.
fn set_conditions(
    deployment: &SeiNodeDeployment,
    status: &mut SeiNodeDeploymentStatus,
    ready: i32,
    failed: i32,
) {
    let generation = deployment.metadata.generation;
    let set = |status: &mut SeiNodeDeploymentStatus, t: &str, s: ConditionStatus, r: &str, m: String| {
        status.set_condition(condition(t, s, r, m, generation));
    };
    let not_started = |status: &mut SeiNodeDeploymentStatus, t: &str, m: &str| {
        if status.condition(t).is_none() {
            set(
                status,
                t,
                ConditionStatus::False,
                reasons::NOT_STARTED,
                m.to_owned(),
            );
        }
    };
    if deployment.spec.genesis.is_some() {
        let m = "waiting for every validator SeiNode to exist";
        not_started(status, conditions::GENESIS_CEREMONY_COMPLETE, m);
    }
    if let Some(plan) = &status.plan {
        let m = format!("plan {} is running", plan.workflow);
        set(
            status,
            conditions::PLAN_IN_PROGRESS,
            ConditionStatus::True,
            reasons::PLAN_STARTED,
            m,
        );
    }
    not_started(status, conditions::PLAN_IN_PROGRESS, "");
    if let Some(plan) = &status.plan {
        let (effect, message) = (plan.on_start.clone(), lifecycle::running_message(plan));
        let _: Option<SeiNodeDeploymentPhase> =
            lifecycle::apply_effect(status, effect.as_ref(), generation, &message);
    }
    not_started(status, conditions::ROLLOUT_IN_PROGRESS, "");
    let (cs, reason, message) = nodes_ready(deployment.spec.replicas, status.replicas, ready, failed);
    set(status, conditions::NODES_READY, cs, reason, message);
    let (cs, reason, message) = if deployment.spec.paused {
        let m = "spec.paused is true: propagated to every SeiNode; no plan advances";
        (ConditionStatus::True, reasons::PAUSED, m.to_owned())
    } else {
        (ConditionStatus::False, reasons::NOT_PAUSED, String::new())
    };
    set(status, conditions::PAUSED, cs, reason, message);
}

/// `NodesReady` from the children: `replicas` wanted, `existing` children of which `ready` are Running and
/// `failed` Failed.
fn nodes_ready(
    replicas: i32,
    existing: i32,
    ready: i32,
    failed: i32,
) -> (ConditionStatus, &'static str, String) {
    let initializing = existing - ready - failed;
    let message = format!("{ready}/{replicas} nodes ready ({failed} failed, {initializing} initializing)");
    let (cs, reason) = if existing == 0 {
        (ConditionStatus::False, reasons::PENDING)
    } else if failed > 0 {
        (ConditionStatus::False, reasons::NODES_FAILED)
    } else if ready >= replicas {
        (ConditionStatus::True, reasons::ALL_NODES_READY)
    } else {
        (ConditionStatus::False, reasons::NODES_INITIALIZING)
    };
    (cs, reason, message)
}

/// Creates and updates the children `0..replicas`, deletes the ones above. Returns the children as they now
/// are, and events.
async fn reconcile_children(
    ctx: &Context,
    deployment: &SeiNodeDeployment,
    mut children: BTreeMap<i32, SeiNode>,
    events: &mut Vec<(EventType, &'static str, String)>,
) -> Result<BTreeMap<i32, SeiNode>, Error> {
    let replicas = deployment.spec.replicas;
    let mut created = Vec::new();
    for ordinal in 0..replicas {
        let existing = children.get(&ordinal);
        let desired = fleet::desired_child(deployment, ordinal, existing, None);
        if existing.is_some_and(|e| !fleet::needs_apply(e, &desired)) {
            continue;
        }
        let new = existing.is_none();
        let applied = fleet::apply_child(&ctx.client, &desired)
            .await
            .map_err(Error::Kube)?;
        if new {
            created.push(applied.name_any());
        }
        children.insert(ordinal, applied);
    }
    if !created.is_empty() {
        events.push((
            EventType::Normal,
            "SeiNodesCreated",
            format!("created {}", created.join(", ")),
        ));
    }
    let ns = deployment.namespace().unwrap_or_default();
    let api: Api<SeiNode> = Api::namespaced(ctx.client.clone(), &ns);
    let extra: Vec<i32> = children.range(replicas..).map(|(o, _)| *o).collect();
    let mut deleted = Vec::new();
    for ordinal in extra {
        if let Some(child) = children.remove(&ordinal) {
            if child.metadata.deletion_timestamp.is_some() {
                continue;
            }
            // Exactly the child that was read (its uid): one deleted and created again meanwhile is refused (409).
            // Not its resourceVersion: its ordinal alone decides, and its status changes all the time.
            let exactly = DeleteParams::background().preconditions(Preconditions {
                uid: child.metadata.uid.clone(),
                resource_version: None,
            });
            match api.delete(&child.name_any(), &exactly).await {
                Ok(_) => deleted.push(child.name_any()),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(kube::Error::Api(s)) if s.code == 409 => return Err(Error::Conflict),
                Err(e) => return Err(Error::Kube(e)),
            }
        }
    }
    if !deleted.is_empty() {
        events.push((
            EventType::Normal,
            "SeiNodesDeleted",
            format!("scaled down: deleted {}", deleted.join(", ")),
        ));
    }
    Ok(children)
}

async fn apply(deployment: Arc<SeiNodeDeployment>, ctx: &Context) -> Result<Action, Error> {
    if let Some(action) = crate::status::skip_stale(ctx, &deployment.metadata) {
        return Ok(action);
    }
    let mut turn = Turn::read(&deployment, ctx).await?;
    turn.plans().await?;
    turn.settle()?;
    turn.write().await
}

use crate::status::PendingEvent;

/// One reconcile of a deployment, as named steps over shared state ([`apply`]): read (children and the
/// internal Service made to match the spec), plans, settle (task updates, aggregate status), write (once,
/// then Events and the requeue).
struct Turn<'a> {
    deployment: &'a SeiNodeDeployment,
    ctx: &'a Context,
    owner: Owner,
    sink: StatusSink,
    children: BTreeMap<i32, SeiNode>,
    generation: Option<i64>,
    before: SeiNodeDeploymentStatus,
    status: SeiNodeDeploymentStatus,
    events: Vec<PendingEvent>,
    requeue: Duration,
    /// The journal as written by this reconcile, for the spans and metrics it completes (after the write).
    journal_after: Option<Plan>,
}

impl<'a> Turn<'a> {
    /// The children (created, updated, scaled down to the spec) and the internal Service.
    async fn read(deployment: &'a SeiNodeDeployment, ctx: &'a Context) -> Result<Self, Error> {
        let mut events = Vec::new();
        let children = list_children(ctx, deployment).await?;
        let children = reconcile_children(ctx, deployment, children, &mut events).await?;
        reconcile_service(ctx, deployment).await?;
        let before = deployment.status.clone().unwrap_or_default();
        Ok(Self {
            deployment,
            ctx,
            owner: Owner {
                kind: KIND,
                namespace: deployment.namespace().unwrap_or_default(),
                name: deployment.name_any(),
                object: Arc::new(serde_json::to_value(deployment).map_err(Error::Serialize)?),
            },
            sink: StatusSink::default(),
            children,
            generation: deployment.metadata.generation,
            status: before.clone(),
            before,
            events,
            requeue: RESYNC,
            journal_after: None,
        })
    }

    /// The CEL bindings of the deployment and its children, as read.
    fn bindings(&self) -> Result<Bindings, Error> {
        let facts = bindings_facts(self.deployment, &self.children);
        Bindings::new(&self.owner.object, &facts).map_err(Error::Cel)
    }

    /// The active plan (frozen while paused, summarised once finished, else driven), or else the first
    /// workflow whose trigger holds.
    async fn plans(&mut self) -> Result<(), Error> {
        let paused = self.deployment.spec.paused;
        match self.status.plan.take() {
            // Frozen: the journal stays untouched until the deployment is unpaused.
            Some(plan) if paused => self.status.plan = Some(plan),
            Some(plan) if plan.phase.is_terminal() => {
                sei_crds::plan::push_plan_history(&mut self.status.plan_history, plan.summary());
                self.requeue = Duration::from_millis(10);
            }
            Some(plan) => self.drive_plan(plan).await?,
            None if paused => {}
            None => {
                let bindings = self.bindings()?;
                let ns = self.owner.namespace.clone();
                if let Some(started) = lifecycle::start_triggered(self.ctx, KIND, &ns, &bindings)? {
                    self.status.plan = started.plan;
                    self.events.push(started.event);
                    self.requeue = started.requeue;
                }
            }
        }
        Ok(())
    }

    /// Cancel requests, drift, then the plan's tasks; a finished plan applies its effect, sets
    /// `PlanInProgress` and is summarised into `planHistory`.
    async fn drive_plan(&mut self, mut plan: Plan) -> Result<(), Error> {
        let ctx = self.ctx;
        if let Some(event) = crate::user::cancel_requested(&self.deployment.metadata, &mut plan) {
            self.events.push(event);
        }
        let bindings = self.bindings()?;
        let catalog = ctx.catalogs.get(&self.owner.namespace);
        if let Some(event) = lifecycle::drift(&catalog, &bindings, &ctx.registry, &mut plan)? {
            self.events.push(event);
        }
        let mut driven = drive(&ctx.tasks, &ctx.registry, &self.owner, &mut plan, &self.sink).await;
        self.journal_after = Some(plan.clone());
        // After the spans' copy: compaction drops the timestamps of settled runs.
        crate::drive::bound(&mut plan, &mut driven);
        let Some(finished) = &driven.finished else {
            if let Some(at) = driven.requeue_at {
                self.requeue = until(at);
            }
            self.status.plan = Some(plan);
            return Ok(());
        };
        let succeeded = finished.phase == PlanPhase::Succeeded;
        let message = if succeeded {
            String::new()
        } else {
            failure_message(&plan)
        };
        let generation = self.generation;
        let _: Option<SeiNodeDeploymentPhase> =
            lifecycle::apply_effect(&mut self.status, finished.effect.as_ref(), generation, &message);
        let reason = if succeeded {
            reasons::PLAN_COMPLETE
        } else {
            reasons::PLAN_FAILED
        };
        let note = format!(
            "plan {} ({}) {:?} {message}",
            plan.id, plan.workflow, finished.phase
        );
        self.status.set_condition(condition(
            conditions::PLAN_IN_PROGRESS,
            ConditionStatus::False,
            reason,
            note,
            generation,
        ));
        self.events.extend(crate::drive::events(&plan, &driven, &message));
        ctx.metrics.plan_finished(&plan);
        sei_crds::plan::push_plan_history(&mut self.status.plan_history, plan.summary());
        self.requeue = Duration::from_millis(10);
        Ok(())
    }

    /// The tasks' status updates, then the status aggregated from the children.
    fn settle(&mut self) -> Result<(), Error> {
        lifecycle::apply_updates(&mut self.status, self.sink.take(), Some(STATUS_FIELDS))?;
        aggregate(self.deployment, &self.children, &mut self.status);
        Ok(())
    }

    /// One status write, only when something changed, guarded by the resourceVersion read; then the Events and
    /// the requeue at the engine's next due time (`status::finish`).
    async fn write(self) -> Result<Action, Error> {
        let (deployment, ctx) = (self.deployment, self.ctx);
        let change = (self.status != self.before).then(|| {
            let mut desired = deployment.clone();
            desired.status = Some(self.status.clone());
            crate::status::Change {
                desired,
                journal: crate::status::Journal {
                    before: self.before.plan.as_ref(),
                    after: self.journal_after.as_ref(),
                    active: self.status.plan.as_ref(),
                },
                new_phase: self
                    .status
                    .phase
                    .filter(|p| self.before.phase != Some(*p))
                    .map(|p| p.to_string()),
            }
        });
        crate::status::finish(
            ctx,
            deployment,
            KIND,
            change,
            self.events,
            Vec::new(),
            self.requeue,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The built-in fleet workflows these tests compile (the controller itself names none).
    const CEREMONY_WORKFLOW: &str = fleet::CEREMONY_WORKFLOW;
    const ROLLOUT_WORKFLOW: &str = "fleet-rollout";

    #[test]
    fn nodes_ready_says_pending_failed_ready_or_initializing_in_that_order() {
        let reason = |replicas, existing, ready, failed| nodes_ready(replicas, existing, ready, failed).1;
        assert_eq!(reason(3, 0, 0, 0), reasons::PENDING);
        assert_eq!(reason(3, 3, 2, 1), reasons::NODES_FAILED);
        assert_eq!(reason(3, 3, 3, 0), reasons::ALL_NODES_READY);
        assert_eq!(reason(3, 3, 1, 0), reasons::NODES_INITIALIZING);
        let (status, _, message) = nodes_ready(3, 3, 1, 1);
        assert_eq!(status, ConditionStatus::False);
        assert_eq!(message, "1/3 nodes ready (1 failed, 1 initializing)");
    }

    fn deployment(replicas: i32, max_unavailable: i32) -> SeiNodeDeployment {
        serde_json::from_value(json!({
            "apiVersion": "sei.io/v1alpha1",
            "kind": "SeiNodeDeployment",
            "metadata": {"name": "f", "namespace": "ns", "uid": "u"},
            "spec": {
                "replicas": replicas,
                "updateStrategy": {"type": "RollingUpdate", "maxUnavailable": max_unavailable},
                "template": {"spec": {"chainId": "c-1", "image": "seid:v2", "fullNode": {}}},
            },
        }))
        .unwrap()
    }

    fn children(d: &SeiNodeDeployment, images: &[&str]) -> BTreeMap<i32, SeiNode> {
        images
            .iter()
            .enumerate()
            .map(|(i, image)| {
                let i = i32::try_from(i).unwrap();
                let mut n = fleet::desired_child(d, i, None, None);
                n.spec.image = (*image).to_owned();
                (i, n)
            })
            .collect()
    }

    #[test]
    fn outdated_children_are_cut_into_batches_of_max_unavailable_in_ordinal_order() {
        let d = deployment(5, 2);
        let c = children(&d, &["seid:v1", "seid:v2", "seid:v1", "seid:v1", "seid:v1"]);
        let f = bindings_facts(&d, &c);
        assert_eq!(f[facts::NODES], json!(["f-0", "f-1", "f-2", "f-3", "f-4"]));
        assert_eq!(f[facts::ROLLOUT_BATCHES], json!(["f-0,f-2", "f-3,f-4"]));
        // Children above `replicas` (being scaled away) are neither nodes nor rolled.
        let d = deployment(2, 1);
        let f = bindings_facts(&d, &c);
        assert_eq!(f[facts::NODES], json!(["f-0", "f-1"]));
        assert_eq!(f[facts::ROLLOUT_BATCHES], json!(["f-0"]));
    }

    #[test]
    fn the_builtin_fleet_workflows_compile_with_the_real_task_catalogue() {
        let catalog = crate::run::load_catalog(None).unwrap();
        let registry = sei_tasks::catalog::registry();
        let mut d = deployment(3, 1);
        d.spec.template.spec.full_node = None;
        d.spec.template.spec.validator = Some(sei_crds::ValidatorSpec::default());
        d.spec.genesis = Some(
            serde_json::from_value(
                json!({"chainId": "c-1", "accounts": [{"address": "sei1x", "balance": "1usei"}]}),
            )
            .unwrap(),
        );
        let c = children(&d, &["seid:v2", "seid:v2", "seid:v1"]);
        let object = serde_json::to_value(&d).unwrap();
        let b = Bindings::new(&object, &bindings_facts(&d, &c)).unwrap();
        let t = sei_engine::Timestamp::from_unix_millis(0);
        for name in [CEREMONY_WORKFLOW, ROLLOUT_WORKFLOW] {
            let plan = catalog
                .get(name)
                .unwrap()
                .instantiate(&b, uuid::Uuid::nil(), t, None, &registry)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!plan.tasks.is_empty());
        }
        let rollout = catalog
            .get(ROLLOUT_WORKFLOW)
            .unwrap()
            .instantiate(&b, uuid::Uuid::nil(), t, None, &registry)
            .unwrap();
        let update = &rollout.tasks[0];
        assert_eq!(update.params["image"], json!("seid:v2"));
        assert_eq!(update.params["sidecar"], Value::Null);
        assert_eq!(rollout.run("update[f-2]").map(|v| v.run.attempt), Some(0));
    }

    #[test]
    fn a_hundred_validator_ceremony_plan_is_compact() {
        let catalog = crate::run::load_catalog(None).unwrap();
        let mut d = deployment(100, 1);
        d.spec.template.spec.full_node = None;
        d.spec.template.spec.validator = Some(sei_crds::ValidatorSpec::default());
        d.spec.genesis = Some(serde_json::from_value(json!({"chainId": "c-1"})).unwrap());
        let c = children(&d, &["seid:v2"; 100]);
        let object = serde_json::to_value(&d).unwrap();
        let b = Bindings::new(&object, &bindings_facts(&d, &c)).unwrap();
        let plan = catalog
            .get(CEREMONY_WORKFLOW)
            .unwrap()
            .instantiate(
                &b,
                uuid::Uuid::nil(),
                sei_engine::Timestamp::from_unix_millis(0),
                None,
                &sei_tasks::catalog::registry(),
            )
            .unwrap();
        let bytes = serde_json::to_vec(&plan).unwrap().len();
        eprintln!("100-validator ceremony plan: {bytes} bytes as compiled");
        assert!(bytes < 64 * 1024, "{bytes} bytes");
    }

    #[test]
    fn the_phase_follows_plans_failures_and_readiness() {
        let d = deployment(3, 1);
        let mut s = SeiNodeDeploymentStatus {
            replicas: 3,
            up_to_date_replicas: 3,
            ..SeiNodeDeploymentStatus::default()
        };
        assert_eq!(phase_of(&d, &s, 3, 0), SeiNodeDeploymentPhase::Ready);
        assert_eq!(phase_of(&d, &s, 2, 1), SeiNodeDeploymentPhase::Degraded);
        assert_eq!(phase_of(&d, &s, 0, 3), SeiNodeDeploymentPhase::Failed);
        assert_eq!(phase_of(&d, &s, 1, 0), SeiNodeDeploymentPhase::Initializing);
        s.replicas = 0;
        assert_eq!(phase_of(&d, &s, 0, 0), SeiNodeDeploymentPhase::Pending);
    }
}
