//! The bootstrap Job's tasks (reference sections 2.4 "Bootstrap init plan", 2.9 and 4.5), for a node whose
//! snapshot source names a `bootstrapImage`. Like every Kubernetes-side task, start and poll are the same
//! idempotent check-and-act, so a repeated start only repeats harmless requests.
//!
//! | type | does | done when |
//! |---|---|---|
//! | `deploy-bootstrap-service` | creates the headless Service `<node>` selecting the bootstrap pod | it exists |
//! | `deploy-bootstrap-job` | renders (refusing any key material in the pod) and creates the Job `<node>-bootstrap` | it exists |
//! | `await-bootstrap-complete` | reads the Job | its `Complete` condition is True; `Failed` (or the Job gone) fails terminally |
//! | `teardown-bootstrap` | deletes the Job (foreground, so its pod goes first) and the bootstrap Service | both are gone |
//!
//! The names derive from the target node, so the tasks take no params.

use futures::future::BoxFuture;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams};
use sei_crds::{SeiNode, labels};
use serde_json::Value;

use super::kube::{api_error, boxed, create_params, idempotent_task, is_not_found, load_node};
use crate::catalog::sidecar::NoParams;
use crate::resources;
use crate::task::{Context, Invocation, Outcome, Task, schema_of};

async fn node_of(cx: &Context, inv: &Invocation) -> Result<SeiNode, Outcome> {
    let node = load_node(cx, inv).await?;
    if resources::bootstrap_of(&node).is_none() {
        return Err(Outcome::terminal(
            "the SeiNode has no snapshot.bootstrapImage with an s3.targetHeight: nothing to bootstrap",
        ));
    }
    Ok(node)
}

/// Creates `obj` unless an object of its name exists (then that one is adopted).
async fn create_if_absent<K>(api: &Api<K>, obj: &K, what: &str) -> Outcome
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    match api.create(&create_params(), obj).await {
        Ok(_) => Outcome::done(),
        Err(kube::Error::Api(s)) if s.code == 409 => Outcome::done(),
        Err(e) => api_error(&format!("creating the {what}"), &e),
    }
}

/// `deploy-bootstrap-service`.
pub struct DeployBootstrapService;
idempotent_task!(
    DeployBootstrapService,
    "deploy-bootstrap-service",
    NoParams,
    deploy_service
);

async fn deploy_service(cx: &Context, inv: &Invocation) -> Outcome {
    let node = match node_of(cx, inv).await {
        Ok(n) => n,
        Err(o) => return o,
    };
    let svc = match resources::bootstrap_service(&node, &cx.platform) {
        Ok(s) => s,
        Err(e) => return Outcome::terminal(e.to_string()),
    };
    let api: Api<Service> = Api::namespaced(cx.client.clone(), &inv.namespace);
    create_if_absent(&api, &svc, "bootstrap Service").await
}

/// `deploy-bootstrap-job`.
pub struct DeployBootstrapJob;
idempotent_task!(DeployBootstrapJob, "deploy-bootstrap-job", NoParams, deploy_job);

async fn deploy_job(cx: &Context, inv: &Invocation) -> Outcome {
    let node = match node_of(cx, inv).await {
        Ok(n) => n,
        Err(o) => return o,
    };
    // A pod that key material would reach is refused here, before anything is created.
    let job = match resources::bootstrap_job(&node, &cx.platform) {
        Ok(Some(j)) => j,
        Ok(None) => return Outcome::terminal("the SeiNode does not bootstrap through a Job"),
        Err(e) => return Outcome::terminal(e.to_string()),
    };
    let api: Api<Job> = Api::namespaced(cx.client.clone(), &inv.namespace);
    create_if_absent(&api, &job, "bootstrap Job").await
}

/// `await-bootstrap-complete`.
pub struct AwaitBootstrapComplete;
idempotent_task!(
    AwaitBootstrapComplete,
    "await-bootstrap-complete",
    NoParams,
    await_complete
);

async fn await_complete(cx: &Context, inv: &Invocation) -> Outcome {
    let node = match node_of(cx, inv).await {
        Ok(n) => n,
        Err(o) => return o,
    };
    let name = resources::bootstrap_job_name(&node);
    let api: Api<Job> = Api::namespaced(cx.client.clone(), &inv.namespace);
    let job = match api.get_opt(&name).await {
        Ok(Some(j)) => j,
        Ok(None) => return Outcome::terminal(format!("bootstrap Job {name} does not exist")),
        Err(e) => return api_error("reading the bootstrap Job", &e),
    };
    let conditions = job.status.and_then(|s| s.conditions).unwrap_or_default();
    let holds = |t: &str| conditions.iter().find(|c| c.type_ == t && c.status == "True");
    if holds("Complete").is_some() {
        return Outcome::done();
    }
    if let Some(failed) = holds("Failed") {
        return Outcome::terminal(format!(
            "bootstrap Job {name} failed: {} {}",
            failed.reason.as_deref().unwrap_or_default(),
            failed.message.as_deref().unwrap_or_default()
        ));
    }
    Outcome::Running
}

/// `teardown-bootstrap`.
pub struct TeardownBootstrap;
idempotent_task!(TeardownBootstrap, "teardown-bootstrap", NoParams, teardown);

async fn teardown(cx: &Context, inv: &Invocation) -> Outcome {
    let node = match node_of(cx, inv).await {
        Ok(n) => n,
        Err(o) => return o,
    };
    let jobs: Api<Job> = Api::namespaced(cx.client.clone(), &inv.namespace);
    let services: Api<Service> = Api::namespaced(cx.client.clone(), &inv.namespace);
    let mut left = Vec::new();
    let job_name = resources::bootstrap_job_name(&node);
    match jobs.delete(&job_name, &DeleteParams::foreground()).await {
        Ok(_) => left.push(format!("Job {job_name}")),
        Err(e) if is_not_found(&e) => {}
        Err(e) => return api_error("deleting the bootstrap Job", &e),
    }
    // The Service of the node's name is the bootstrap one only while it selects the bootstrap pod: the
    // node's own headless Service (same name) is never deleted here.
    let svc_name = node.metadata.name.clone().unwrap_or_default();
    let is_bootstrap = |s: &Service| {
        s.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::COMPONENT))
            .map(String::as_str)
            == Some(labels::COMPONENT_BOOTSTRAP)
    };
    match services.get_opt(&svc_name).await {
        Ok(Some(s)) if is_bootstrap(&s) => match services.delete(&svc_name, &DeleteParams::default()).await {
            Ok(_) => left.push(format!("Service {svc_name}")),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return api_error("deleting the bootstrap Service", &e),
        },
        Ok(_) => {}
        Err(e) => return api_error("reading the bootstrap Service", &e),
    }
    if left.is_empty() {
        Outcome::done()
    } else {
        tracing::debug!(objects = ?left, "Waiting for the bootstrap objects to be gone");
        Outcome::Running
    }
}

/// Every bootstrap task type.
pub(crate) fn register(r: crate::task::Registry) -> crate::task::Registry {
    r.with(DeployBootstrapService)
        .with(DeployBootstrapJob)
        .with(AwaitBootstrapComplete)
        .with(TeardownBootstrap)
}
