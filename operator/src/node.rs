//! The SeiNode controller. One reconcile (DESIGN.md section 3):
//!
//! 1. finalizer: on deletion, delete the data PVC unless it was imported, then release the object;
//! 2. reflexes that are not workflows: `spec.paused` (the StatefulSet is applied with 0 replicas through the
//!    `apply-statefulset` task and no plan advances), the sidecar health probe on Running nodes
//!    (`SidecarReady`), the always-present conditions;
//! 3. with an active plan: drive it (`drive`); when it finishes, apply its onSuccess/onFailure effect
//!    (phase, conditions), summarise it into `planHistory` and clear it;
//!    without one: the first workflow whose trigger holds is instantiated and persisted; no task runs on
//!    the reconcile that created the plan;
//! 4. exactly one status write, guarded by the resourceVersion read at the start (409: requeue at once), and
//!    none when nothing changed;
//! 5. requeue at the engine's next due time, else a steady-state resync.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use sei_crds::conditions::{self, ConditionStatus, reasons};
use sei_crds::{SeiNode, SeiNodePhase, SeiNodeStatus};
use sei_engine::TaskRef;
use sei_tasks::task::{Invocation, Outcome, StatusSink};
use sei_workflows::{Bindings, node_binding, node_facts};
use serde_json::{Value, json};
use tracing::Instrument as _;

use crate::clock::{now_time, until};
use crate::context::Context;
use crate::drive::{Owner, drive};
use crate::error::Error;
use crate::lifecycle::{self, condition};

/// Kind name used for owners and CEL targets.
pub const KIND: &str = "SeiNode";
/// Resync of a node with nothing due (sidecar health probe, drift that no watch reports).
const RESYNC: Duration = Duration::from_secs(30);
/// How long the sidecar health probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Entry point for the kube-runtime controller.
pub async fn reconcile(node: Arc<SeiNode>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciled(KIND);
    let ns = node.namespace().unwrap_or_default();
    let api: Api<SeiNode> = Api::namespaced(ctx.client.clone(), &ns);
    let span = tracing::info_span!(
        "reconcile",
        otel.name = %format!("reconcile {KIND} {ns}/{}", node.name_any()),
        k8s.namespace.name = %ns,
        k8s.resource.name = %node.name_any(),
        k8s.resource.kind = KIND,
        workflow.id = tracing::field::Empty,
    );
    if let Some(plan) = node.status.as_ref().and_then(|s| s.plan.as_ref()) {
        span.record("workflow.id", tracing::field::display(plan.id));
        if let Some(tp) = plan.traceparent.as_deref() {
            sei_observability::trace_context::link_span(&span, tp);
        }
    }
    let node = crate::status::with_finalizer(&api, node, sei_crds::labels::SEINODE_FINALIZER)
        .instrument(span.clone())
        .await?;
    finalizer(&api, sei_crds::labels::SEINODE_FINALIZER, node, |event| async {
        match event {
            FinalizerEvent::Apply(node) => apply(node, &ctx).await,
            FinalizerEvent::Cleanup(node) => cleanup(node, &ctx).await,
        }
    })
    .instrument(span)
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Policy for failed reconciles: conflicts retry at once, the rest back off.
#[allow(clippy::needless_pass_by_value)] // the signature kube-runtime's Controller::run expects
pub fn error_policy(_node: Arc<SeiNode>, error: &Error, ctx: Arc<Context>) -> Action {
    crate::error::policy(KIND, error, &ctx.metrics)
}

async fn cleanup(node: Arc<SeiNode>, ctx: &Context) -> Result<Action, Error> {
    let ns = node.namespace().unwrap_or_default();
    if node.spec.imported_pvc().is_none() {
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
        let name = sei_tasks::resources::data_pvc_name(&node);
        match pvcs.delete(&name, &DeleteParams::background()).await {
            Ok(_) => tracing::info!(pvc = %name, "Deleted the data PVC"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::Kube(e)),
        }
    }
    if let Some(uid) = &node.metadata.uid {
        ctx.superseded.forget(uid);
    }
    ctx.event(
        &*node,
        EventType::Normal,
        "Deleted",
        "Delete",
        Some("Released the SeiNode".into()),
    );
    Ok(Action::await_change())
}

/// The CEL bindings of `node` (`self` and the derived `node` facts), as its controller builds them.
pub(crate) fn bindings(node: &SeiNode, ctx: &Context) -> Result<Bindings, Error> {
    let object = serde_json::to_value(node).map_err(Error::Serialize)?;
    Bindings::new(&object, &facts(node, ctx)).map_err(Error::Cel)
}

/// Derived facts for CEL (`node`): mode, config mode, effective sidecar image, snapshot source.
fn facts(node: &SeiNode, ctx: &Context) -> Value {
    let mut f = facts_with(node, &ctx.platform.images.sidecar);
    // The state-sync witnesses when the gate is open (reference 3.4; node-init waits for them).
    if let (Some(map), Some(syncers)) = (
        f.as_object_mut(),
        crate::statesync::gate(node, &ctx.platform).syncers,
    ) {
        map.insert(node_facts::STATE_SYNCERS.to_owned(), json!(syncers));
    }
    // What the spec renders to now, for node-reconfigure's trigger (see sei_tasks::resources::statefulset_digest).
    if let (Some(map), Some(digest)) = (
        f.as_object_mut(),
        sei_tasks::resources::statefulset_digest(node, &ctx.platform),
    ) {
        map.insert(node_facts::STATEFULSET_DIGEST.to_owned(), json!(digest));
    }
    f
}

/// [`facts`] with the platform's default sidecar image given (the `workflow preview` command has no context).
pub(crate) fn facts_with(node: &SeiNode, default_sidecar_image: &str) -> Value {
    let mut f = BTreeMap::new();
    if let Ok(mode) = node.spec.mode() {
        f.insert(node_facts::MODE, json!(mode.field_name()));
        f.insert(node_facts::CONFIG_MODE, json!(mode.config_mode()));
    }
    let sidecar = node
        .spec
        .sidecar_image()
        .map_or_else(|| default_sidecar_image.to_owned(), str::to_owned);
    f.insert(node_facts::SIDECAR_IMAGE, json!(sidecar));
    if let Some(snapshot) = node.spec.snapshot_source() {
        f.insert(
            node_facts::SNAPSHOT,
            serde_json::to_value(snapshot).unwrap_or(Value::Null),
        );
    }
    node_binding(f)
}

fn set_phase(status: &mut SeiNodeStatus, phase: SeiNodePhase) {
    if status.phase != Some(phase) {
        status.phase = Some(phase);
        status.phase_transition_time = Some(now_time());
    }
}

/// Conditions that are always present (reference 1.1.4, the subset that applies).
fn default_conditions(status: &mut SeiNodeStatus, node: &SeiNode, generation: Option<i64>) {
    let has = |s: &SeiNodeStatus, t: &str| s.condition(t).is_some();
    if !has(status, conditions::NODE_UPDATE_IN_PROGRESS) {
        status.set_condition(condition(
            conditions::NODE_UPDATE_IN_PROGRESS,
            ConditionStatus::False,
            reasons::NOT_STARTED,
            "no update has run",
            generation,
        ));
    }
    if !has(status, conditions::SIDECAR_READY) {
        status.set_condition(condition(
            conditions::SIDECAR_READY,
            ConditionStatus::Unknown,
            "NotProbed",
            "the sidecar is probed once the node is Running",
            generation,
        ));
    }
    let paused = node.spec.paused;
    status.set_condition(condition(
        conditions::PAUSED,
        ConditionStatus::from(paused),
        if paused {
            reasons::PAUSED
        } else {
            reasons::NOT_PAUSED
        },
        if paused {
            "spec.paused is true: the StatefulSet has 0 replicas and no plan advances"
        } else {
            ""
        },
        generation,
    ));
}

async fn probe_sidecar(node: &SeiNode, ctx: &Context, status: &mut SeiNodeStatus, generation: Option<i64>) {
    let ns = node.namespace().unwrap_or_default();
    let client = ctx.tasks.sidecar.node(&ns, &node.name_any());
    let (cs, reason, message) = match tokio::time::timeout(PROBE_TIMEOUT, client.healthz()).await {
        Ok(Ok(true)) => (
            ConditionStatus::True,
            reasons::READY,
            "the sidecar's healthz answers 200".to_owned(),
        ),
        Ok(Ok(false)) => (
            ConditionStatus::False,
            reasons::NOT_READY,
            "the sidecar's healthz answers 503".to_owned(),
        ),
        Ok(Err(e)) => (
            ConditionStatus::Unknown,
            reasons::UNREACHABLE,
            format!("the sidecar is unreachable: {e}"),
        ),
        Err(_) => (
            ConditionStatus::Unknown,
            reasons::UNREACHABLE,
            "the sidecar's healthz did not answer within 2s".to_owned(),
        ),
    };
    status.set_condition(condition(
        conditions::SIDECAR_READY,
        cs,
        reason,
        message,
        generation,
    ));
}

/// `spec.paused` and its reversal: apply the StatefulSet (0 or 1 replicas) through the task catalogue.
async fn apply_pause_state(
    node: &SeiNode,
    ctx: &Context,
    owner: &Owner,
    sink: &StatusSink,
) -> Option<String> {
    let task = ctx.registry.get("apply-statefulset")?;
    let inv = Invocation {
        namespace: owner.namespace.clone(),
        owner_kind: KIND.to_owned(),
        owner: owner.name.clone(),
        task: TaskRef {
            task: "pause".into(),
            task_type: "apply-statefulset".into(),
            target: None,
            attempt: 1,
            key: uuid::Uuid::nil(),
        },
        params: json!({}),
        traceparent: None,
        status: sink.clone(),
        owner_object: Arc::clone(&owner.object),
    };
    match task.start(&ctx.tasks, &inv).await {
        Outcome::Done(_) => None,
        other => Some(format!(
            "applying the StatefulSet for spec.paused={}: {other:?}",
            node.spec.paused
        )),
    }
}

/// `sei.io/retry` with a new value on a node without a plan: a Failed node goes back to Pending (its init
/// workflow runs again); the value is recorded in `status.observedRetry` either way. The Event to publish.
fn retry(node: &SeiNode, status: &mut SeiNodeStatus) -> Option<(EventType, &'static str, String)> {
    let token = crate::user::retry_requested(&node.metadata, status.observed_retry.as_deref())?;
    status.observed_retry = Some(token.to_owned());
    let key = sei_crds::labels::RETRY;
    Some(if status.phase == Some(SeiNodePhase::Failed) {
        set_phase(status, SeiNodePhase::Pending);
        let why = format!("{key}: the Failed node goes back to Pending; its init workflow runs again");
        (EventType::Normal, "RetryRequested", why)
    } else {
        let why = format!("{key}: the node is not Failed; nothing to retry");
        (EventType::Normal, "RetryIgnored", why)
    })
}

#[allow(clippy::too_many_lines)] // one reconcile, read top to bottom; each step is commented
async fn apply(node: Arc<SeiNode>, ctx: &Context) -> Result<Action, Error> {
    if let Some(action) = crate::status::skip_stale(ctx, &node.metadata) {
        return Ok(action);
    }
    let mut turn = Turn::read(&node, ctx).await?;
    turn.reflexes().await;
    turn.plans().await?;
    turn.settle().await?;
    turn.write().await
}

use crate::status::PendingEvent;

/// One reconcile of a node, as named steps over shared state ([`apply`]): read (peers), reflexes, plans, settle
/// (what the plan and tasks mean for status), write (once, then Events and the requeue).
struct Turn<'a> {
    node: &'a SeiNode,
    ctx: &'a Context,
    owner: Owner,
    sink: StatusSink,
    generation: Option<i64>,
    before: SeiNodeStatus,
    status: SeiNodeStatus,
    events: Vec<PendingEvent>,
    requeue: Duration,
    /// When the peers step wants to come back (a transient resolution error).
    peers_retry: Option<Duration>,
    /// The journal as written by this reconcile, for the spans it completes (exported after the write).
    journal_after: Option<sei_engine::Plan>,
}

impl<'a> Turn<'a> {
    /// Reads the node and resolves its peers first (reference 3.3): a plan built in this reconcile snapshots the
    /// list resolved now (the init's config-apply).
    async fn read(node: &'a SeiNode, ctx: &'a Context) -> Result<Self, Error> {
        let before = node.status.clone().unwrap_or_default();
        let mut status = before.clone();
        let peers_retry = if node.spec.paused {
            None
        } else {
            crate::peers::reconcile(node, ctx, &mut status).await
        };
        let object = Arc::new(crate::peers::with_resolved_peers(node, &status)?);
        Ok(Self {
            node,
            ctx,
            owner: Owner {
                kind: KIND,
                namespace: node.namespace().unwrap_or_default(),
                name: node.name_any(),
                object,
            },
            sink: StatusSink::default(),
            generation: node.metadata.generation,
            before,
            status,
            events: Vec::new(),
            requeue: RESYNC,
            peers_retry,
            journal_after: None,
        })
    }

    /// Reflexes that are not workflows: the always-present conditions, the state-sync gate (reference 3.4, an
    /// Event when it starts blocking) and `spec.paused`.
    async fn reflexes(&mut self) {
        let (node, generation) = (self.node, self.generation);
        self.status.observed_generation = generation;
        default_conditions(&mut self.status, node, generation);
        let gate = crate::statesync::gate(node, &self.ctx.platform);
        let was_blocking = self
            .before
            .condition(conditions::STATE_SYNC_READY)
            .is_some_and(|c| {
                c.reason == reasons::NO_SYNCERS_CONFIGURED || c.reason == reasons::SYNCER_SOURCE_ERROR
            });
        if gate.reason == reasons::NO_SYNCERS_CONFIGURED
            && !was_blocking
            && !matches!(
                self.status.phase,
                Some(SeiNodePhase::Running | SeiNodePhase::Failed)
            )
        {
            self.events
                .push((EventType::Warning, "StateSyncBlocked", gate.message.clone()));
        }
        self.status.set_condition(condition(
            conditions::STATE_SYNC_READY,
            gate.status,
            gate.reason,
            gate.message,
            generation,
        ));
        let was_paused = self
            .before
            .condition(conditions::PAUSED)
            .is_some_and(|c| c.status == "True");
        if node.spec.paused || was_paused {
            if let Some(problem) = apply_pause_state(node, self.ctx, &self.owner, &self.sink).await {
                tracing::warn!(%problem, "Pause state not applied yet");
                self.requeue = Duration::from_secs(2);
            } else if node.spec.paused != was_paused {
                let what = if node.spec.paused { "Paused" } else { "Resumed" };
                self.events.push((
                    EventType::Normal,
                    what,
                    format!(
                        "StatefulSet {} scaled for spec.paused={}",
                        self.owner.name, node.spec.paused
                    ),
                ));
            }
        }
    }

    /// Plans: a retry of a Failed node, then the active plan (frozen, summarised, or driven), or else the first
    /// workflow whose trigger holds (persisted; no task runs on the reconcile that created it).
    async fn plans(&mut self) -> Result<(), Error> {
        let paused = self.node.spec.paused;
        let retried = self.status.plan.is_none() && !paused && {
            let event = retry(self.node, &mut self.status);
            let retried = event.is_some();
            self.events.extend(event);
            retried
        };
        if retried {
            self.requeue = Duration::from_millis(10);
        }
        match self.status.plan.take() {
            // Frozen: the plan records when it was paused; its deadline and timers resume where they stopped.
            Some(mut plan) if paused => {
                self.events.extend(crate::user::pause(&mut plan));
                self.status.plan = Some(plan);
            }
            // A finished plan left by an older operator version: keep its summary.
            Some(plan) if plan.phase.is_terminal() => {
                sei_crds::plan::push_plan_history(&mut self.status.plan_history, plan.summary());
                self.requeue = Duration::from_millis(10);
            }
            Some(plan) => self.drive_plan(plan).await?,
            // A retry of a Failed node was handled above; the trigger sees the new phase at the next reconcile.
            None if paused || retried => {}
            None => self.start_plan()?,
        }
        Ok(())
    }

    /// User requests (resume, cancel), drift, then the plan's tasks; a finished plan applies its effect and is
    /// summarised into `planHistory`.
    async fn drive_plan(&mut self, mut plan: sei_engine::Plan) -> Result<(), Error> {
        let (node, ctx) = (self.node, self.ctx);
        self.events.extend(crate::user::resume(&mut plan));
        if let Some(event) = crate::user::cancel_requested(&node.metadata, &mut plan) {
            self.events.push(event);
        }
        let bindings = Bindings::new(&self.owner.object, &facts(node, ctx)).map_err(Error::Cel)?;
        let catalog = ctx.catalogs.get(&self.owner.namespace);
        if let Some(event) = lifecycle::drift(&catalog, &bindings, &ctx.registry, &mut plan)? {
            self.events.push(event);
        }
        let mut driven = drive(&ctx.tasks, &ctx.registry, &self.owner, &mut plan, &self.sink).await;
        self.journal_after = Some(plan.clone());
        // After the spans' copy: compaction drops the timestamps of settled runs.
        crate::drive::bound(&mut plan, &mut driven);
        let failure = driven
            .finished
            .as_ref()
            .and_then(|f| f.message.clone())
            .unwrap_or_default();
        self.events.extend(crate::drive::events(&plan, &driven, &failure));
        if let Some(finished) = driven.finished {
            if let Some(phase) = lifecycle::apply_effect(
                &mut self.status,
                finished.effect.as_ref(),
                self.generation,
                finished.message.as_deref().unwrap_or_default(),
            ) {
                set_phase(&mut self.status, phase);
            }
            ctx.metrics.plan_finished(&plan);
            sei_crds::plan::push_plan_history(&mut self.status.plan_history, plan.summary());
            self.requeue = Duration::from_millis(10);
        } else {
            if let Some(at) = driven.requeue_at {
                self.requeue = until(at);
            }
            self.status.plan = Some(plan);
        }
        Ok(())
    }

    /// The first workflow whose trigger holds, instantiated and persisted by this reconcile's write; the next
    /// reconcile (woken by that write) runs its first tasks.
    fn start_plan(&mut self) -> Result<(), Error> {
        let bindings = Bindings::new(&self.owner.object, &facts(self.node, self.ctx)).map_err(Error::Cel)?;
        let Some(started) = lifecycle::start_triggered(self.ctx, KIND, &self.owner.namespace, &bindings)?
        else {
            return Ok(());
        };
        if started.plan.is_some() && matches!(self.status.phase, None | Some(SeiNodePhase::Pending)) {
            set_phase(&mut self.status, SeiNodePhase::Initializing);
        }
        self.status.plan = started.plan;
        self.events.push(started.event);
        self.requeue = started.requeue;
        Ok(())
    }

    /// What the active plan means for the node (its workflow's onStart, whoever started it), the tasks' status
    /// updates, the sidecar probe of a Running node (after the plans: the reconcile whose plan made the node
    /// Running probes it in the same write) and `status.endpoint`.
    async fn settle(&mut self) -> Result<(), Error> {
        let generation = self.generation;
        if let Some(plan) = &self.status.plan {
            let (effect, message) = (plan.on_start.clone(), lifecycle::running_message(plan));
            if let Some(phase) =
                lifecycle::apply_effect(&mut self.status, effect.as_ref(), generation, &message)
            {
                set_phase(&mut self.status, phase);
            }
        }
        lifecycle::apply_updates(&mut self.status, self.sink.take(), None)?;
        if self.status.phase == Some(SeiNodePhase::Running) && !self.node.spec.paused {
            probe_sidecar(self.node, self.ctx, &mut self.status, generation).await;
        }
        crate::endpoint::publish(self.node, &mut self.status);
        if let Some(soon) = self.peers_retry {
            self.requeue = self.requeue.min(soon);
        }
        Ok(())
    }

    /// One status write, only when something changed, guarded by the resourceVersion read; then the Events and
    /// the requeue at the engine's next due time (`status::finish`).
    async fn write(self) -> Result<Action, Error> {
        let (node, ctx) = (self.node, self.ctx);
        let change = (self.status != self.before).then(|| {
            let mut desired = node.clone();
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
                    .map(|p| p.as_str().to_owned()),
            }
        });
        let transitions = crate::node_events::transitions(&self.before, &self.status);
        crate::status::finish(ctx, node, KIND, change, self.events, transitions, self.requeue).await
    }
}
