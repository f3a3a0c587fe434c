//! Kubernetes-side tasks: they act on the API server directly. Each `start` is idempotent (server-side
//! apply, create-if-absent, checks), and `poll` does the same work again, so a crash between any two steps
//! only repeats harmless requests. Reference sections 2.9 and 4.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Resource, ResourceExt};
use schemars::JsonSchema;
use sei_crds::SeiNode;
use sei_crds::conditions::{self, ConditionStatus, reasons};
use sei_engine::ErrorClass;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::catalog::sidecar::NoParams;
use crate::resources;
use crate::task::{Context, Invocation, Outcome, Task, schema_of};

/// Field manager of every server-side apply by the node controller.
pub const FIELD_MANAGER: &str = "seinode-controller";

/// What a failed API call means for the task: not found, transient (retry at the next poll without
/// consuming an attempt), or a terminal rejection.
pub(super) fn api_error(action: &str, e: &kube::Error) -> Outcome {
    match e {
        kube::Error::Api(status) if matches!(status.code, 400 | 403 | 422) => {
            Outcome::terminal(format!("{action}: {} ({})", status.message, status.code))
        }
        _ => Outcome::Unavailable(format!("{action}: {e}")),
    }
}

pub(super) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// A create under this controller's field manager (a create is guarded by nature: 409 when the name is taken).
pub(super) fn create_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    }
}

/// A delete of exactly the object that was read: the API server refuses it (409) when the object was
/// replaced (another uid) or, with `unchanged`, changed meanwhile, so a task never deletes what it did not look
/// at.
fn delete_exactly<K: Resource>(obj: &K, background: bool, unchanged: bool) -> DeleteParams {
    let base = if background {
        DeleteParams::background()
    } else {
        DeleteParams::default()
    };
    base.preconditions(Preconditions {
        uid: obj.meta().uid.clone(),
        resource_version: obj.meta().resource_version.clone().filter(|_| unchanged),
    })
}

/// The SeiNode the task acts on: the plan's owner when it is that node, else read from the API.
pub(super) async fn load_node(cx: &Context, inv: &Invocation) -> Result<SeiNode, Outcome> {
    if inv.owner_kind == "SeiNode" && inv.target() == inv.owner {
        return serde_json::from_value((*inv.owner_object).clone())
            .map_err(|e| Outcome::terminal(format!("the SeiNode does not deserialise: {e}")));
    }
    let api: Api<SeiNode> = Api::namespaced(cx.client.clone(), &inv.namespace);
    match api.get_opt(inv.target()).await {
        Ok(Some(node)) => Ok(node),
        Ok(None) => Err(Outcome::terminal(format!(
            "SeiNode {}/{} does not exist",
            inv.namespace,
            inv.target()
        ))),
        Err(e) => Err(api_error("reading the SeiNode", &e)),
    }
}

/// Records a condition on the owner when the task acts on its owner.
fn condition(
    inv: &Invocation,
    node: &SeiNode,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: String,
) {
    if inv.owner_kind == "SeiNode" && inv.target() == inv.owner {
        let now = conditions::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let generation = node.metadata.generation;
        inv.status.set_condition(conditions::new_condition(
            type_, status, reason, message, generation, now,
        ));
    }
}

macro_rules! boxed {
    ($body:expr) => {
        Box::pin(async move { $body })
    };
}

/// Implements `Task` for a type whose start and poll are the same idempotent check-and-act.
macro_rules! idempotent_task {
    ($ty:ty, $name:literal, $params:ty, $run:ident) => {
        idempotent_task!($ty, $name, $params, $run, None);
    };
    ($ty:ty, $name:literal, $params:ty, $run:ident, $poll_interval:expr) => {
        impl Task for $ty {
            fn task_type(&self) -> &'static str {
                $name
            }
            fn params_schema(&self) -> Value {
                schema_of::<$params>()
            }
            fn poll_interval(&self) -> Option<sei_engine::Duration> {
                $poll_interval
            }
            fn start<'a>(&'a self, cx: &'a Context, inv: &'a Invocation) -> BoxFuture<'a, Outcome> {
                boxed!($run(cx, inv).await)
            }
            fn poll<'a>(&'a self, cx: &'a Context, inv: &'a Invocation) -> BoxFuture<'a, Outcome> {
                boxed!($run(cx, inv).await)
            }
        }
    };
}
pub(super) use {boxed, idempotent_task};

/// `ensure-data-pvc`: create the node's data PVC, or validate an imported one (reference 4.3).
pub struct EnsureDataPvc;
idempotent_task!(EnsureDataPvc, "ensure-data-pvc", NoParams, ensure_data_pvc);

async fn ensure_data_pvc(cx: &Context, inv: &Invocation) -> Outcome {
    let node = match load_node(cx, inv).await {
        Ok(n) => n,
        Err(o) => return o,
    };
    let api: Api<PersistentVolumeClaim> = Api::namespaced(cx.client.clone(), &inv.namespace);
    if let Some(name) = node.spec.imported_pvc() {
        return validate_imported_pvc(cx, inv, &node, &api, name).await;
    }
    let desired = match resources::data_pvc(&node, &cx.platform) {
        Ok(p) => p,
        Err(e) => return Outcome::terminal(e.to_string()),
    };
    let name = desired.name_any();
    match api.get_opt(&name).await {
        Ok(Some(existing)) => owned_by(&existing, &node, &name),
        Ok(None) => match api.create(&create_params(), &desired).await {
            Ok(_) => Outcome::done(),
            // Created by a concurrent attempt: check ownership at the next poll.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                Outcome::Unavailable(format!("PVC {name} appeared meanwhile"))
            }
            Err(e) => api_error("creating the data PVC", &e),
        },
        Err(e) => api_error("reading the data PVC", &e),
    }
}

fn owned_by<K: Resource>(obj: &K, node: &SeiNode, name: &str) -> Outcome {
    let uid = node.metadata.uid.as_deref();
    if obj
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
    {
        Outcome::done()
    } else {
        Outcome::terminal(format!(
            "PVC {name} exists and is not owned by this SeiNode: set spec.dataVolume.import.pvcName to adopt it, or delete it"
        ))
    }
}

fn parse_quantity_bytes(q: &Quantity) -> Option<u128> {
    resources::quantity::parse(&q.0)
        .ok()
        .map(resources::quantity::Parsed::ceil)
}

/// Why what a validation task checks (an imported claim, a key Secret, a keyring) is not usable yet (`Waiting`:
/// the condition says `<Subject>NotReady`, the task polls again) or never will be (`Invalid`:
/// `<Subject>Invalid`, the task fails); `Unchecked`: an API error or a bad spec stopped the check, reported by
/// its outcome alone (the condition is left as it was).
enum Unusable {
    Waiting(String),
    Invalid(String),
    Unchecked(Outcome),
}

impl Unusable {
    /// An API error while `action`: the check could not be made ([`api_error`] decides the outcome).
    fn api(action: &str, e: &kube::Error) -> Self {
        Self::Unchecked(api_error(action, e))
    }
}

/// A validation task's verdict (`Ok`: what was found valid) as its condition `condition_type`, with the
/// reference's reasons (`<Subject>Validated`, `<Subject>NotReady`, `<Subject>Invalid`), and its outcome.
fn report(
    inv: &Invocation,
    node: &SeiNode,
    condition_type: &str,
    verdict: Result<String, Unusable>,
) -> Outcome {
    let set = |status: ConditionStatus, outcome: &str, message: String| {
        let reason = reasons::validation(condition_type, outcome);
        condition(inv, node, condition_type, status, &reason, message);
    };
    match verdict {
        Ok(message) => {
            set(ConditionStatus::True, reasons::VALIDATED, message);
            Outcome::done()
        }
        Err(Unusable::Waiting(message)) => {
            set(ConditionStatus::False, reasons::NOT_READY, message.clone());
            Outcome::Unavailable(message)
        }
        Err(Unusable::Invalid(message)) => {
            set(ConditionStatus::False, reasons::INVALID, message.clone());
            Outcome::terminal(message)
        }
        Err(Unusable::Unchecked(outcome)) => outcome,
    }
}

/// Secret `name` (called `label` in messages), waited for while it is absent or being deleted.
async fn live_secret(api: &Api<Secret>, label: &str, name: &str) -> Result<Secret, Unusable> {
    match api.get_opt(name).await {
        Ok(Some(s)) if s.metadata.deletion_timestamp.is_none() => Ok(s),
        Ok(_) => Err(Unusable::Waiting(format!(
            "{label} {name} does not exist (or is being deleted)"
        ))),
        Err(e) => Err(Unusable::api(&format!("reading the {label}"), &e)),
    }
}

/// What the imported claim must be (reference 3.1): Bound, not being deleted, ReadWriteOnce(Pod), with a
/// capacity of at least `minimum` and a volume name. Returns its capacity and volume.
fn check_claim(
    pvc: &PersistentVolumeClaim,
    name: &str,
    mode: impl std::fmt::Debug,
    minimum: &Quantity,
) -> Result<(Quantity, String), Unusable> {
    use Unusable::{Invalid, Waiting};
    if pvc.metadata.deletion_timestamp.is_some() {
        return Err(Waiting(format!("imported PVC {name} is being deleted")));
    }
    let (status, spec) = (pvc.status.as_ref(), pvc.spec.as_ref());
    match status.and_then(|s| s.phase.as_deref()) {
        Some("Bound") => {}
        Some("Lost") => return Err(Invalid(format!("imported PVC {name} is Lost"))),
        other => {
            return Err(Waiting(format!(
                "imported PVC {name} is {} (waiting for Bound)",
                other.unwrap_or("unbound")
            )));
        }
    }
    let modes = spec.and_then(|s| s.access_modes.clone()).unwrap_or_default();
    if !modes
        .iter()
        .any(|m| m == "ReadWriteOnce" || m == "ReadWriteOncePod")
    {
        return Err(Invalid(format!(
            "imported PVC {name} has access modes {modes:?}, needs ReadWriteOnce or ReadWriteOncePod"
        )));
    }
    let Some(capacity) = status.and_then(|s| s.capacity.as_ref()?.get("storage")).cloned() else {
        return Err(Waiting(format!("imported PVC {name} reports no capacity yet")));
    };
    let Some(volume) = spec.and_then(|s| s.volume_name.clone()).filter(|v| !v.is_empty()) else {
        return Err(Waiting(format!(
            "imported PVC {name} is Bound without a volume name yet"
        )));
    };
    if let (Some(have), Some(need)) = (parse_quantity_bytes(&capacity), parse_quantity_bytes(minimum))
        && have < need
    {
        return Err(Invalid(format!(
            "imported PVC {name} has {} but the {mode:?} mode needs at least {}",
            capacity.0, minimum.0
        )));
    }
    Ok((capacity, volume))
}

/// What the imported claim's volume must be: not Failed, and of the capacity the claim reports.
fn check_volume(
    pv: &PersistentVolume,
    name: &str,
    volume: &str,
    capacity: &Quantity,
) -> Result<(), Unusable> {
    if pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed") {
        return Err(Unusable::Invalid(format!(
            "volume {volume} of imported PVC {name} is Failed"
        )));
    }
    let pv_capacity = pv.spec.as_ref().and_then(|s| s.capacity.as_ref()?.get("storage"));
    if let Some(pv_capacity) = pv_capacity
        && parse_quantity_bytes(pv_capacity) != parse_quantity_bytes(capacity)
    {
        return Err(Unusable::Invalid(format!(
            "volume {volume} has capacity {} but imported PVC {name} reports {}",
            pv_capacity.0, capacity.0
        )));
    }
    Ok(())
}

/// Reads the imported claim and its volume and checks them ([`check_claim`], [`check_volume`]); the
/// `ImportPVCReady` condition says what was found with the reference's reasons (PVCValidated, PVCNotReady,
/// PVCInvalid).
async fn validate_imported_pvc(
    cx: &Context,
    inv: &Invocation,
    node: &SeiNode,
    api: &Api<PersistentVolumeClaim>,
    name: &str,
) -> Outcome {
    let verdict = async {
        let pvc = match api.get_opt(name).await {
            Ok(Some(pvc)) => pvc,
            Ok(None) => {
                return Err(Unusable::Waiting(format!(
                    "imported PVC {name} does not exist yet"
                )));
            }
            Err(e) => return Err(Unusable::api("reading the imported PVC", &e)),
        };
        let mode = node
            .spec
            .mode()
            .map_err(|e| Unusable::Unchecked(Outcome::terminal(e.to_string())))?;
        let (capacity, volume) = check_claim(&pvc, name, mode, cx.platform.storage.size_for(mode))?;
        let pvs: Api<PersistentVolume> = Api::all(cx.client.clone());
        match pvs.get_opt(&volume).await {
            Ok(Some(pv)) => check_volume(&pv, name, &volume, &capacity)?,
            Ok(None) => {
                let message = format!("volume {volume} of imported PVC {name} does not exist yet");
                return Err(Unusable::Waiting(message));
            }
            Err(e) => {
                return Err(Unusable::api("reading the imported PVC's volume", &e));
            }
        }
        Ok(format!("imported PVC {name} is Bound to {volume}"))
    };
    report(inv, node, conditions::IMPORT_PVC_READY, verdict.await)
}

/// Params of `apply-statefulset`: the images the plan was compiled with (a snapshot, so a plan applies the
/// images it was built for even when the SeiNode's spec moved on meanwhile, e.g. under `onDrift: Queue`).
/// Absent: the SeiNode's current spec.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplyStatefulSetParams {
    /// The SeiNode spec the plan was compiled with (a snapshot, so that `onDrift: Queue` holds for every field
    /// of the StatefulSet, not only the images); absent: the live spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    pub spec: Option<Value>,
    /// The seid image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The sidecar image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar_image: Option<String>,
}

/// The node as the plan wants it rendered: the params' spec snapshot (else the live spec), then the params'
/// images over it. A snapshot that is not a SeiNode spec is an error naming the field.
pub fn with_plan_images(
    mut node: SeiNode,
    params: &ApplyStatefulSetParams,
    default_sidecar_image: &str,
) -> Result<SeiNode, String> {
    node = with_plan_spec(node, params.spec.as_ref())?;
    if let Some(image) = params.image.as_ref().filter(|i| !i.is_empty()) {
        node.spec.image.clone_from(image);
    }
    if let Some(image) = params.sidecar_image.as_ref().filter(|i| !i.is_empty()) {
        let effective = node.spec.sidecar_image().unwrap_or(default_sidecar_image);
        if effective != image {
            node.spec.sidecar.get_or_insert_with(Default::default).image = Some(image.clone());
        }
    }
    Ok(node)
}

/// `apply-statefulset`: server-side apply of the node's StatefulSet, replacing an impostor (same name,
/// another UID than the one recorded in status) first. With kube-rbac-proxy configured, the proxy's
/// ConfigMap (`<node>-rbac-proxy-config`, which the pod mounts) is applied before the StatefulSet. The images
/// come from the params when the workflow passes them ([`ApplyStatefulSetParams`]).
pub struct ApplyStatefulSet;
idempotent_task!(
    ApplyStatefulSet,
    "apply-statefulset",
    ApplyStatefulSetParams,
    apply_statefulset
);

async fn apply_statefulset(cx: &Context, inv: &Invocation) -> Outcome {
    let params: ApplyStatefulSetParams = match inv.params() {
        Ok(p) => p,
        Err(o) => return o,
    };
    let node = match load_node(cx, inv).await {
        Ok(n) => match with_plan_images(n, &params, &cx.platform.images.sidecar) {
            Ok(n) => n,
            Err(e) => return Outcome::failed(ErrorClass::Invalid, e),
        },
        Err(o) => return o,
    };
    let desired = match resources::statefulset(&node, &cx.platform) {
        Ok(s) => s,
        Err(e) => return Outcome::terminal(e.to_string()),
    };
    let name = desired.name_any();
    let api: Api<StatefulSet> = Api::namespaced(cx.client.clone(), &inv.namespace);
    if let Some(tracked) = node.status.as_ref().and_then(|s| s.stateful_set.as_ref())
        && let Err(outcome) = remove_impostor(inv, &api, &name, &tracked.uid).await
    {
        return outcome;
    }
    // The pod mounts the kube-rbac-proxy ConfigMap when the proxy is rendered: apply it first, so the pod
    // never waits for a volume nothing creates.
    if let Err(outcome) = apply_rbac_proxy_config(cx, inv, &node).await {
        return outcome;
    }
    match api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await
    {
        Ok(applied) => {
            let uid = applied.metadata.uid.unwrap_or_default();
            inv.status
                .set_field("statefulSet", json!({"name": name, "uid": uid}));
            if let Some(digest) = resources::statefulset_digest(&node, &cx.platform) {
                inv.status.set_condition(applied_condition(&node, &digest));
            }
            Outcome::done()
        }
        Err(e) => api_error("applying the StatefulSet", &e),
    }
}

/// Deletes StatefulSet `name` when it is not the one the node recorded (`uid`: another object under the same name,
/// e.g. recreated by hand): `Err` says it was deleted and is applied again at the next poll.
async fn remove_impostor(
    inv: &Invocation,
    api: &Api<StatefulSet>,
    name: &str,
    uid: &str,
) -> Result<(), Outcome> {
    let existing = match api.get_opt(name).await {
        Ok(Some(existing)) if existing.metadata.uid.as_deref() != Some(uid) => existing,
        Ok(_) => return Ok(()),
        Err(e) => return Err(api_error("reading the StatefulSet", &e)),
    };
    if let Err(e) = api.delete(name, &delete_exactly(&existing, true, false)).await
        && !is_not_found(&e)
    {
        return Err(api_error("deleting an impostor StatefulSet", &e));
    }
    inv.status.set_field("statefulSet", Value::Null);
    Err(Outcome::Unavailable(format!(
        "StatefulSet {name} had UID {:?}, not the recorded {uid}: deleted, it is applied again at the next poll",
        existing.metadata.uid
    )))
}

/// Applies the kube-rbac-proxy ConfigMap when the node's pod renders the proxy.
async fn apply_rbac_proxy_config(cx: &Context, inv: &Invocation, node: &SeiNode) -> Result<(), Outcome> {
    let config_map = match resources::rbac_proxy_config_map(node, &cx.platform) {
        Ok(Some(config_map)) => config_map,
        Ok(None) => return Ok(()),
        Err(e) => return Err(Outcome::terminal(e.to_string())),
    };
    let config_maps: Api<ConfigMap> = Api::namespaced(cx.client.clone(), &inv.namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match config_maps
        .patch(&config_map.name_any(), &params, &Patch::Apply(&config_map))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => Err(api_error("applying the kube-rbac-proxy ConfigMap", &e)),
    }
}

/// `StatefulSetApplied` True with the digest of the applied template (the controller stamps the time).
fn applied_condition(node: &SeiNode, digest: &str) -> sei_crds::Condition {
    use sei_crds::conditions;
    conditions::new_condition(
        conditions::STATEFULSET_APPLIED,
        conditions::ConditionStatus::True,
        conditions::reasons::APPLIED,
        format!("{}{digest}", conditions::TEMPLATE_MESSAGE_PREFIX),
        node.metadata.generation,
        conditions::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

/// The node with the spec snapshot a plan was compiled with (`None`: the live spec unchanged); a snapshot that
/// is not a SeiNode spec is an error naming the field.
pub fn with_plan_spec(mut node: SeiNode, spec: Option<&Value>) -> Result<SeiNode, String> {
    if let Some(spec) = spec {
        node.spec = serde_json::from_value(spec.clone())
            .map_err(|e| format!("params.spec is not a SeiNode spec: {e}"))?;
    }
    Ok(node)
}

/// Params of `apply-service`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplyServiceParams {
    /// The SeiNode spec the plan was compiled with (a snapshot); absent: the live spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    pub spec: Option<Value>,
}

/// `apply-service`: server-side apply of the node's headless Service, rendered from the plan's spec snapshot
/// when the workflow passes one.
pub struct ApplyService;
idempotent_task!(ApplyService, "apply-service", ApplyServiceParams, apply_service);

async fn apply_service(cx: &Context, inv: &Invocation) -> Outcome {
    let params: ApplyServiceParams = match inv.params() {
        Ok(p) => p,
        Err(o) => return o,
    };
    let node = match load_node(cx, inv).await {
        Ok(n) => match with_plan_spec(n, params.spec.as_ref()) {
            Ok(n) => n,
            Err(e) => return Outcome::failed(ErrorClass::Invalid, e),
        },
        Err(o) => return o,
    };
    let desired = match resources::headless_service(&node, &cx.platform) {
        Ok(s) => s,
        Err(e) => return Outcome::terminal(e.to_string()),
    };
    let api: Api<Service> = Api::namespaced(cx.client.clone(), &inv.namespace);
    match api
        .patch(
            &desired.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await
    {
        Ok(_) => Outcome::done(),
        Err(e) => api_error("applying the Service", &e),
    }
}

/// `replace-pod`: delete the node's pod when it runs an older StatefulSet revision (OnDelete updates), and
/// output `replaced`: the uids of the pods it deleted, comma-separated (`observe-image` then waits for a pod
/// that is not one of them). The pod is `<target>-0` (the StatefulSet has one replica), read from the operator's
/// pod cache like `observe-image` reads it, not listed: a list per node cost the apiserver a scan of the
/// namespace's pods for every node. A node with no pod yet (a new node) needs nothing else, not even its
/// StatefulSet: the pod its controller creates comes from the current template.
/// Readiness-blind: the new pod's progress is observed by `observe-image`.
pub struct ReplacePod;
idempotent_task!(ReplacePod, "replace-pod", NoParams, replace_pod);

async fn replace_pod(cx: &Context, inv: &Invocation) -> Outcome {
    let replaced = |uids: Vec<String>| {
        Outcome::Done(serde_json::Map::from_iter([(
            "replaced".to_owned(),
            Value::String(uids.join(",")),
        )]))
    };
    let pod = match cx.pod(&inv.namespace, &format!("{}-0", inv.target())).await {
        Ok(Some(pod)) => pod,
        Ok(None) => return replaced(Vec::new()),
        Err(e) => return api_error("reading the node's pod", &e),
    };
    let sts_api: Api<StatefulSet> = Api::namespaced(cx.client.clone(), &inv.namespace);
    let sts = match sts_api.get_opt(inv.target()).await {
        Ok(Some(s)) => s,
        Ok(None) => return Outcome::Unavailable(format!("StatefulSet {} does not exist yet", inv.target())),
        Err(e) => return api_error("reading the StatefulSet", &e),
    };
    let spec = sts.spec.clone().unwrap_or_default();
    if spec.replicas.unwrap_or(1) > 1 || spec.selector.match_labels.as_ref().is_none_or(BTreeMap::is_empty) {
        return Outcome::terminal(
            "refusing to replace pods of a StatefulSet with several replicas or no selector",
        );
    }
    let sts_uid = sts.metadata.uid.clone().unwrap_or_default();
    let owned = pod
        .owner_references()
        .iter()
        .any(|o| o.kind == "StatefulSet" && o.uid == sts_uid);
    if !owned || pod.metadata.deletion_timestamp.is_some() {
        return replaced(Vec::new());
    }
    let status = sts.status.clone().unwrap_or_default();
    if status.observed_generation.unwrap_or(0) < sts.metadata.generation.unwrap_or(0) {
        return Outcome::Unavailable("the StatefulSet controller has not observed the new spec yet".into());
    }
    let Some(update) = status.update_revision.filter(|r| !r.is_empty()) else {
        return Outcome::Unavailable("the StatefulSet has no update revision yet".into());
    };
    let revision = pod
        .labels()
        .get("controller-revision-hash")
        .cloned()
        .unwrap_or_default();
    if status.current_revision.as_deref() == Some(update.as_str()) || revision == update {
        return replaced(Vec::new());
    }
    // Exactly this pod (its uid); not its resourceVersion, which a cached copy may trail (its status changes).
    let pods: Api<Pod> = Api::namespaced(cx.client.clone(), &inv.namespace);
    match pods
        .delete(&pod.name_any(), &delete_exactly(&*pod, false, false))
        .await
    {
        Ok(_) => replaced(vec![pod.metadata.uid.clone().unwrap_or_default()]),
        Err(e) if is_not_found(&e) => replaced(Vec::new()),
        Err(e) => api_error("deleting the outdated pod", &e),
    }
}

/// Params of `observe-image`: the images the plan rolled out (a snapshot taken when the plan was built).
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObserveImageParams {
    /// The seid image.
    pub image: String,
    /// The sidecar image.
    pub sidecar_image: String,
    /// Pods that must not count (comma-separated uids): the ones `replace-pod` deleted, which a cache may
    /// still show for a moment, with the right images when only other fields of the template changed.
    #[serde(default)]
    pub replaced: String,
}

/// Why the node does not run the plan's images yet, or `None` when it does: what a user means by a node
/// running an image is its pod doing so, so this looks at the pod `<target>-0` alone: it exists, belongs to
/// the StatefulSet `target`, is not being deleted and is none of the `replaced` pods (uids), carries `image`
/// (seid, seid-init) and `sidecar_image` in its own spec, and runs with its sidecar container started. The
/// StatefulSet's status is not consulted: waiting for its controller to publish a revision only added that
/// controller's queue to every node's init (issue 15's traces: `observe-image` waited a median 20.7 s at 100
/// nodes), and the pod's own spec already says which images it runs.
///
/// Readiness here is the sidecar's, not the pod's Ready condition: seid only starts once the sidecar's
/// `healthz` is approved by `mark-ready`, which runs after `observe-image`, so waiting for pod Ready would wait
/// forever on a real kubelet.
#[must_use]
pub fn image_not_rolled(
    target: &str,
    pod: Option<&Pod>,
    image: &str,
    sidecar_image: &str,
    replaced: &str,
) -> Option<String> {
    let pod_name = format!("{target}-0");
    let Some(pod) = pod else {
        return Some(format!("pod {pod_name} does not exist"));
    };
    if pod.metadata.deletion_timestamp.is_some() {
        return Some(format!("pod {pod_name} is being deleted"));
    }
    if !pod
        .owner_references()
        .iter()
        .any(|o| o.kind == "StatefulSet" && o.name == target)
    {
        return Some(format!("pod {pod_name} does not belong to the StatefulSet"));
    }
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    if !uid.is_empty() && replaced.split(',').any(|r| r == uid) {
        return Some(format!("pod {pod_name} is the replaced pod {uid}"));
    }
    if let Some(problem) = images_mismatch(pod.spec.as_ref(), image, sidecar_image) {
        return Some(format!("pod {pod_name} {problem}"));
    }
    let pod_status = pod.status.clone().unwrap_or_default();
    if pod_status.phase.as_deref() != Some("Running") {
        return Some(format!(
            "pod {pod_name} is {}",
            pod_status.phase.as_deref().unwrap_or("not scheduled yet")
        ));
    }
    let sidecar_started = pod_status
        .init_container_statuses
        .iter()
        .chain(pod_status.container_statuses.iter())
        .flatten()
        .find(|c| c.name == resources::SIDECAR)
        .is_none_or(|c| c.ready || c.started == Some(true));
    if !sidecar_started {
        return Some(format!("pod {pod_name}'s sidecar has not started"));
    }
    None
}

/// What differs between a pod spec's images and the wanted ones, if anything.
fn images_mismatch(
    spec: Option<&k8s_openapi::api::core::v1::PodSpec>,
    image: &str,
    sidecar_image: &str,
) -> Option<String> {
    let Some(spec) = spec else {
        return Some("has no spec".into());
    };
    let all = || {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
    };
    let image_of = |name: &str| all().find(|c| c.name == name).and_then(|c| c.image.clone());
    for (name, want) in [
        (resources::SEID, image),
        (resources::SEID_INIT, image),
        (resources::SIDECAR, sidecar_image),
    ] {
        match image_of(name) {
            Some(have) if have == want => {}
            None if name != resources::SEID => {}
            have => {
                return Some(format!(
                    "runs {} in {name}, not {want}",
                    have.as_deref().unwrap_or("no image")
                ));
            }
        }
    }
    None
}

/// `observe-image`: waits until the node's pod runs the plan's images ([`image_not_rolled`]; the pod is read
/// from the operator's pod cache, woken by its watch), then records `status.currentImage` and
/// `status.currentSidecarImage`. Polled every [`OBSERVE_IMAGE_POLL`] unless a workflow says otherwise: the pod's
/// watch wakes the node on every change of its pod, so a poll is only a fallback (a pod waiting minutes for its
/// volume would otherwise be polled at the plan's round, 250 ms in node-init).
pub struct ObserveImage;
idempotent_task!(
    ObserveImage,
    "observe-image",
    ObserveImageParams,
    observe_image,
    Some(OBSERVE_IMAGE_POLL)
);

/// `observe-image`'s default poll interval (a fallback to the pod watch; 1,000 instant nodes: 45 -> 19.7
/// reconciles per node when it went from 500 ms to 30 s, BENCHMARKS.md).
pub const OBSERVE_IMAGE_POLL: sei_engine::Duration = sei_engine::Duration::from_secs(30);

async fn observe_image(cx: &Context, inv: &Invocation) -> Outcome {
    let params: ObserveImageParams = match inv.params() {
        Ok(p) => p,
        Err(o) => return o,
    };
    let pod = match cx.pod(&inv.namespace, &format!("{}-0", inv.target())).await {
        Ok(p) => p,
        Err(e) => return api_error("reading the node's pod", &e),
    };
    if let Some(why) = image_not_rolled(
        inv.target(),
        pod.as_deref(),
        &params.image,
        &params.sidecar_image,
        &params.replaced,
    ) {
        tracing::debug!(node = inv.target(), %why, "Waiting for the node to run the plan's images");
        return Outcome::Running;
    }
    inv.status
        .set_field("currentImage", Value::String(params.image.clone()));
    inv.status
        .set_field("currentSidecarImage", Value::String(params.sidecar_image.clone()));
    Outcome::Done(serde_json::Map::from_iter([(
        "image".to_owned(),
        Value::String(params.image),
    )]))
}

/// Which key Secret a `validate-*` task checks.
#[derive(Clone, Copy)]
enum KeyKind {
    Signing,
    Node,
}

/// `validate-signing-key`: the signing-key Secret holds a well-formed `priv_validator_key.json`.
pub struct ValidateSigningKey;
/// `validate-node-key`: the node-key Secret holds a well-formed `node_key.json`.
pub struct ValidateNodeKey;
idempotent_task!(
    ValidateSigningKey,
    "validate-signing-key",
    NoParams,
    validate_signing_key
);
idempotent_task!(ValidateNodeKey, "validate-node-key", NoParams, validate_node_key);

async fn validate_signing_key(cx: &Context, inv: &Invocation) -> Outcome {
    validate_key(cx, inv, KeyKind::Signing).await
}

async fn validate_node_key(cx: &Context, inv: &Invocation) -> Outcome {
    validate_key(cx, inv, KeyKind::Node).await
}

/// Checks of a key file's JSON: `Err(what is wrong)`.
fn check_key_json(kind: KeyKind, data: &[u8]) -> Result<(), String> {
    let v: Value = serde_json::from_slice(data).map_err(|e| format!("is not valid JSON: {e}"))?;
    let present = |pointer: &str| {
        v.pointer(pointer)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    let required: &[&str] = match kind {
        KeyKind::Signing => &[
            "/address",
            "/pub_key/type",
            "/pub_key/value",
            "/priv_key/type",
            "/priv_key/value",
        ],
        KeyKind::Node => &["/priv_key/type", "/priv_key/value"],
    };
    match required.iter().find(|p| !present(p)) {
        Some(missing) => Err(format!(
            "lacks {}",
            missing.trim_start_matches('/').replace('/', ".")
        )),
        None => Ok(()),
    }
}

async fn validate_key(cx: &Context, inv: &Invocation, kind: KeyKind) -> Outcome {
    let node = match load_node(cx, inv).await {
        Ok(n) => n,
        Err(o) => return o,
    };
    let (secret_name, data_key, condition_type) = match kind {
        KeyKind::Signing => (
            node.spec.signing_key_secret(),
            sei_crds::SIGNING_KEY_DATA_KEY,
            conditions::SIGNING_KEY_READY,
        ),
        KeyKind::Node => (
            node.spec.node_key_secret(),
            sei_crds::NODE_KEY_DATA_KEY,
            conditions::NODE_KEY_READY,
        ),
    };
    let Some(secret_name) = secret_name.map(|s| s.secret_name.as_str()) else {
        return Outcome::terminal(format!("the SeiNode declares no Secret for {data_key}"));
    };
    let api: Api<Secret> = Api::namespaced(cx.client.clone(), &inv.namespace);
    let verdict = async {
        let secret = live_secret(&api, "Secret", secret_name).await?;
        let data = (secret.data.as_ref())
            .and_then(|d| d.get(data_key))
            .map(|b| b.0.as_slice())
            .unwrap_or_default();
        let checked = if data.is_empty() {
            Err(format!("has no {data_key}"))
        } else {
            check_key_json(kind, data).map_err(|e| format!("{data_key} {e}"))
        };
        checked.map_err(|problem| Unusable::Invalid(format!("Secret {secret_name} {problem}")))?;
        Ok(format!("Secret {secret_name} holds a valid {data_key}"))
    };
    report(inv, &node, condition_type, verdict.await)
}

/// What is wrong with a keyring Secret's data, if anything.
fn check_keyring(
    data: &BTreeMap<String, k8s_openapi::ByteString>,
    key_name: &str,
    secret_name: &str,
) -> Option<String> {
    let non_empty = |suffix: &str| data.iter().any(|(k, v)| k.ends_with(suffix) && !v.0.is_empty());
    if !non_empty(".info") {
        Some(format!(
            "keyring Secret {secret_name} has no non-empty *.info entry"
        ))
    } else if !non_empty(".address") {
        Some(format!(
            "keyring Secret {secret_name} has no non-empty *.address entry"
        ))
    } else if data
        .get(&format!("{key_name}.info"))
        .is_none_or(|v| v.0.is_empty())
    {
        Some(format!("keyring Secret {secret_name} has no {key_name}.info"))
    } else {
        None
    }
}

/// `validate-operator-keyring`: the keyring Secret has `*.info` and `*.address` entries (and the named
/// key), and the passphrase Secret has a non-empty passphrase. Never decrypts.
pub struct ValidateOperatorKeyring;
idempotent_task!(
    ValidateOperatorKeyring,
    "validate-operator-keyring",
    NoParams,
    validate_operator_keyring
);

async fn validate_operator_keyring(cx: &Context, inv: &Invocation) -> Outcome {
    let node = match load_node(cx, inv).await {
        Ok(n) => n,
        Err(o) => return o,
    };
    let Some(keyring) = node.spec.operator_keyring_secret() else {
        return Outcome::terminal("the SeiNode declares no operator keyring Secret");
    };
    let api: Api<Secret> = Api::namespaced(cx.client.clone(), &inv.namespace);
    let verdict = async {
        let secret = live_secret(&api, "keyring Secret", &keyring.secret_name).await?;
        let data = secret.data.unwrap_or_default();
        if let Some(problem) = check_keyring(&data, node.spec.operator_key_name(), &keyring.secret_name) {
            return Err(Unusable::Invalid(problem));
        }
        let pass = &keyring.passphrase_secret_ref;
        if !pass.secret_name.is_empty() {
            let secret = live_secret(&api, "passphrase Secret", &pass.secret_name).await?;
            if (secret.data.as_ref())
                .and_then(|d| d.get(&pass.key))
                .is_none_or(|v| v.0.is_empty())
            {
                let (name, key) = (&pass.secret_name, &pass.key);
                return Err(Unusable::Invalid(format!(
                    "passphrase Secret {name} has no non-empty {key}"
                )));
            }
        }
        Ok(format!("keyring Secret {} is well-formed", keyring.secret_name))
    };
    report(inv, &node, conditions::OPERATOR_KEYRING_READY, verdict.await)
}

/// Every Kubernetes-side node task.
pub(crate) fn register(r: crate::task::Registry) -> crate::task::Registry {
    r.with(EnsureDataPvc)
        .with(ApplyStatefulSet)
        .with(ApplyService)
        .with(ReplacePod)
        .with(ObserveImage)
        .with(ValidateSigningKey)
        .with(ValidateNodeKey)
        .with(ValidateOperatorKeyring)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(
        phase: &str,
        modes: &[&str],
        capacity: Option<&str>,
        volume: Option<&str>,
    ) -> PersistentVolumeClaim {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "data"},
            "spec": {"accessModes": modes, "volumeName": volume},
            "status": {"phase": phase, "capacity": capacity.map(|c| serde_json::json!({"storage": c}))},
        }))
        .unwrap()
    }

    fn verdict<T>(result: Result<T, Unusable>) -> (&'static str, String) {
        match result {
            Ok(_) => ("usable", String::new()),
            Err(Unusable::Waiting(m)) => ("waiting", m),
            Err(Unusable::Invalid(m)) => ("invalid", m),
            Err(Unusable::Unchecked(_)) => ("unchecked", String::new()),
        }
    }

    #[test]
    fn an_imported_claim_waits_until_bound_with_a_volume_and_is_refused_when_it_never_can_serve() {
        let min = Quantity("100Gi".into());
        let check = |c: &PersistentVolumeClaim| verdict(check_claim(c, "data", "FullNode", &min)).0;
        let rwo = &["ReadWriteOnce"][..];
        assert_eq!(check(&claim("Bound", rwo, Some("200Gi"), Some("pv-1"))), "usable");
        assert_eq!(check(&claim("Pending", rwo, None, None)), "waiting");
        assert_eq!(check(&claim("Bound", rwo, None, Some("pv-1"))), "waiting");
        assert_eq!(check(&claim("Bound", rwo, Some("200Gi"), None)), "waiting");
        assert_eq!(check(&claim("Lost", rwo, Some("200Gi"), Some("pv-1"))), "invalid");
        assert_eq!(
            check(&claim("Bound", &["ReadOnlyMany"], Some("200Gi"), Some("pv-1"))),
            "invalid"
        );
        let (outcome, message) = verdict(check_claim(
            &claim("Bound", rwo, Some("50Gi"), Some("pv-1")),
            "data",
            "FullNode",
            &min,
        ));
        assert_eq!(outcome, "invalid");
        assert!(message.contains("50Gi") && message.contains("100Gi"), "{message}");
        let capacity = Quantity("200Gi".into());
        let pv = |phase: &str, size: &str| -> PersistentVolume {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "pv-1"},
                "spec": {"capacity": {"storage": size}},
                "status": {"phase": phase},
            }))
            .unwrap()
        };
        assert_eq!(
            verdict(check_volume(&pv("Bound", "200Gi"), "data", "pv-1", &capacity)).0,
            "usable"
        );
        assert_eq!(
            verdict(check_volume(&pv("Failed", "200Gi"), "data", "pv-1", &capacity)).0,
            "invalid"
        );
        assert_eq!(
            verdict(check_volume(&pv("Bound", "100Gi"), "data", "pv-1", &capacity)).0,
            "invalid"
        );
    }

    #[test]
    fn signing_key_json_needs_address_and_both_keys() {
        let good =
            br#"{"address":"A","pub_key":{"type":"t","value":"v"},"priv_key":{"type":"t","value":"v"}}"#;
        assert_eq!(check_key_json(KeyKind::Signing, good), Ok(()));
        let no_priv = br#"{"address":"A","pub_key":{"type":"t","value":"v"}}"#;
        assert_eq!(
            check_key_json(KeyKind::Signing, no_priv),
            Err("lacks priv_key.type".into())
        );
        assert!(
            check_key_json(KeyKind::Signing, b"{not json")
                .unwrap_err()
                .contains("not valid JSON")
        );
    }

    #[test]
    fn node_key_json_needs_only_the_private_key() {
        assert_eq!(
            check_key_json(KeyKind::Node, br#"{"priv_key":{"type":"t","value":"v"}}"#),
            Ok(())
        );
        assert_eq!(
            check_key_json(KeyKind::Node, br#"{"priv_key":{"type":"t","value":""}}"#),
            Err("lacks priv_key.value".into())
        );
    }

    #[test]
    fn keyring_needs_info_address_and_the_named_key() {
        let data = |keys: &[&str]| -> BTreeMap<String, k8s_openapi::ByteString> {
            keys.iter()
                .map(|k| ((*k).to_owned(), k8s_openapi::ByteString(b"x".to_vec())))
                .collect()
        };
        assert_eq!(
            check_keyring(&data(&["node_admin.info", "abc.address"]), "node_admin", "kr"),
            None
        );
        assert!(
            check_keyring(&data(&["abc.address"]), "node_admin", "kr")
                .unwrap()
                .contains("*.info")
        );
        assert!(
            check_keyring(&data(&["x.info"]), "node_admin", "kr")
                .unwrap()
                .contains("*.address")
        );
        let other = check_keyring(&data(&["other.info", "abc.address"]), "node_admin", "kr").unwrap();
        assert!(other.contains("node_admin.info"), "{other}");
    }

    #[test]
    fn api_rejections_are_terminal_and_other_errors_transient() {
        let status = |code| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                message: "m".into(),
                ..kube::core::Status::default()
            }))
        };
        assert!(
            matches!(api_error("x", &status(422)), Outcome::Failed(e) if e.class == ErrorClass::Terminal)
        );
        assert!(matches!(api_error("x", &status(500)), Outcome::Unavailable(_)));
        assert!(matches!(api_error("x", &status(409)), Outcome::Unavailable(_)));
    }

    fn pod(image: &str, sidecar: &str, uid: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": "n-0",
                "uid": uid,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "n", "uid": "sts-uid"}],
            },
            "spec": {
                "initContainers": [
                    {"name": "seid-init", "image": image},
                    {"name": "sei-sidecar", "image": sidecar, "restartPolicy": "Always"},
                ],
                "containers": [{"name": "seid", "image": image}],
            },
            "status": {
                "phase": "Running",
                "initContainerStatuses": [
                    {"name": "sei-sidecar", "image": sidecar, "imageID": "", "ready": true, "restartCount": 0, "started": true},
                ],
            },
        }))
        .unwrap()
    }

    #[test]
    fn observe_image_waits_for_the_running_pod_to_carry_the_plans_images() {
        let rolled = |p: &Pod, image: &str, sidecar: &str, replaced: &str| {
            image_not_rolled("n", Some(p), image, sidecar, replaced)
        };
        assert_eq!(
            rolled(&pod("seid:v2", "sidecar:v1", "p2"), "seid:v2", "sidecar:v1", ""),
            None
        );
        // The pod still runs the old image (not replaced yet).
        let why = rolled(&pod("seid:v1", "sidecar:v1", "p1"), "seid:v2", "sidecar:v1", "");
        assert!(why.as_deref().is_some_and(|w| w.contains("seid:v1")), "{why:?}");
        // The pod replace-pod deleted, still in the cache, with the right images (a change of other fields).
        let why = rolled(
            &pod("seid:v2", "sidecar:v1", "p1"),
            "seid:v2",
            "sidecar:v1",
            "p0,p1",
        );
        assert!(why.as_deref().is_some_and(|w| w.contains("replaced")), "{why:?}");
        assert_eq!(
            rolled(&pod("seid:v2", "sidecar:v1", "p2"), "seid:v2", "sidecar:v1", "p1"),
            None
        );
        // The sidecar image is checked too.
        assert!(rolled(&pod("seid:v2", "sidecar:v1", "p2"), "seid:v2", "sidecar:v2", "").is_some());
        // No pod, a pod of another owner, a pod being deleted, a pod not running, a sidecar not started.
        assert!(image_not_rolled("n", None, "seid:v2", "sidecar:v1", "").is_some());
        assert!(
            image_not_rolled(
                "m",
                Some(&pod("seid:v2", "sidecar:v1", "p2")),
                "seid:v2",
                "sidecar:v1",
                ""
            )
            .is_some()
        );
        let mut p = pod("seid:v2", "sidecar:v1", "p2");
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        assert!(rolled(&p, "seid:v2", "sidecar:v1", "").is_some());
        let mut p = pod("seid:v2", "sidecar:v1", "p2");
        p.status.as_mut().unwrap().phase = Some("Pending".into());
        assert!(rolled(&p, "seid:v2", "sidecar:v1", "").is_some());
        let mut p = pod("seid:v2", "sidecar:v1", "p2");
        let c = &mut p
            .status
            .as_mut()
            .unwrap()
            .init_container_statuses
            .as_mut()
            .unwrap()[0];
        (c.ready, c.started) = (false, Some(false));
        assert!(rolled(&p, "seid:v2", "sidecar:v1", "").is_some());
    }

    #[test]
    fn apply_statefulset_renders_the_plans_images_over_the_live_spec() {
        let node: SeiNode = serde_json::from_value(json!({
            "apiVersion": "sei.io/v1alpha1", "kind": "SeiNode",
            "metadata": {"name": "n", "namespace": "ns"},
            "spec": {"chainId": "c", "image": "seid:v3", "fullNode": {}},
        }))
        .unwrap();
        let params = ApplyStatefulSetParams {
            spec: None,
            image: Some("seid:v2".into()),
            sidecar_image: Some("sidecar:default".into()),
        };
        let planned = with_plan_images(node.clone(), &params, "sidecar:default").unwrap();
        assert_eq!(planned.spec.image, "seid:v2");
        assert_eq!(
            planned.spec.sidecar, None,
            "the default sidecar image needs no sidecar block"
        );
        let params = ApplyStatefulSetParams {
            spec: None,
            image: None,
            sidecar_image: Some("sidecar:v9".into()),
        };
        let planned = with_plan_images(node.clone(), &params, "sidecar:default").unwrap();
        assert_eq!(planned.spec.image, "seid:v3", "no image param: the live spec");
        assert_eq!(planned.spec.sidecar_image(), Some("sidecar:v9"));
        assert_eq!(planned.spec.sidecar_port(), node.spec.sidecar_port());
        // The plan's spec snapshot wins over the live spec (a resources edit made while the plan runs waits).
        let params = ApplyStatefulSetParams {
            spec: Some(
                json!({"chainId": "c", "image": "seid:v1", "fullNode": {}, "podLabels": {"tier": "a"}}),
            ),
            image: None,
            sidecar_image: None,
        };
        let planned = with_plan_images(node.clone(), &params, "sidecar:default").unwrap();
        assert_eq!(planned.spec.image, "seid:v1");
        assert_eq!(planned.metadata.name.as_deref(), Some("n"), "metadata stays live");
        let bad = ApplyStatefulSetParams {
            spec: Some(json!({"image": 7})),
            image: None,
            sidecar_image: None,
        };
        let e = with_plan_images(node, &bad, "sidecar:default").unwrap_err();
        assert!(e.contains("params.spec"), "{e}");
    }
}
