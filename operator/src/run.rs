//! The `run` and `workflow` commands.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt as _;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Controller, WatchStreamExt as _, controller, watcher};
use sei_crds::{SeiNode, SeiNodeDeployment, WorkflowRun, WorkflowTemplate};
use sei_observability::{LogFormat, TelemetryConfig};
use sei_tasks::platform::PlatformConfig;
use sei_tasks::task::{Context as TaskContext, Registry};
use sei_workflows::{Catalog, Workflow};
use tokio::sync::watch;

use crate::cli::{PlanCommand, PlanTarget, RunArgs, WorkflowCommand};
use crate::context::Context;
use crate::http::Readiness;
use crate::leader::{Elector, Fence, Timings};
use crate::metrics::Metrics;
use crate::templates::Catalogs;

/// The built-in workflows, then every `*.yaml` of `dir` (sorted by name).
pub fn load_catalog(dir: Option<&Path>) -> anyhow::Result<Catalog> {
    let mut catalog = Catalog::builtin()?;
    if let Some(dir) = dir {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("reading workflow directory {}", dir.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        for file in files {
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            catalog.add(Workflow::from_yaml(&file.display().to_string(), &text)?)?;
        }
    }
    Ok(catalog)
}

/// Checks every workflow of `catalog` without an object ([`Workflow::check`]: the engine's static compile,
/// target kinds, CEL variables) and reports every invalid one at once.
pub fn validate_catalog(catalog: &Catalog, registry: &Registry) -> anyhow::Result<()> {
    let problems: Vec<String> = catalog
        .iter()
        .filter_map(|w| w.check(registry).err())
        .map(|e| e.to_string())
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("{}", problems.join("\n"))
    }
}

/// Checks one workflow file without an object: every YAML document in it, a flat definition or a
/// WorkflowTemplate manifest (then with `priority`, `overrides` and `disabled` against `base`). Returns one
/// line per document.
pub fn validate_file(path: &Path, base: &Catalog, registry: &Registry) -> anyhow::Result<Vec<String>> {
    use serde::Deserialize as _;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let source = path.display().to_string();
    let mut lines = Vec::new();
    let mut problems = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value = serde_yaml::Value::deserialize(document)
            .with_context(|| format!("{source}: document {}: not YAML", i + 1))?;
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(serde_yaml::Value::as_str);
        if let Some(other) = kind.filter(|k| *k != "WorkflowTemplate") {
            // e.g. the WorkflowRun next to its template in an example file
            lines.push(format!(
                "{source}: document {}: a {other}, not a workflow: skipped",
                i + 1
            ));
            continue;
        }
        let outcome = if kind == Some("WorkflowTemplate") {
            serde_yaml::from_value::<sei_crds::WorkflowTemplate>(value)
                .map_err(|e| format!("{source}: document {}: not a valid WorkflowTemplate: {e}", i + 1))
                .and_then(|mut t| {
                    let name = t.metadata.name.clone().unwrap_or_default();
                    t.metadata.namespace.get_or_insert_with(|| "default".into());
                    // A built-in's own file (same definition) is the built-in, not a clash with it.
                    let template = crate::templates::template(&t).map_err(|e| e.to_string())?;
                    if base
                        .get(&name)
                        .is_some_and(|b| b.digest() == template.workflow.digest())
                    {
                        return template
                            .workflow
                            .check(registry)
                            .map(|plan| summary(&name, Some(&plan)))
                            .map_err(|e| e.to_string());
                    }
                    crate::templates::check(&t, base, registry)
                        .map(|(_, plan)| summary(&name, plan.as_ref()))
                        .map_err(|e| {
                            e.to_string()
                                .replacen(&crate::templates::source_name(&t), &source, 1)
                        })
                })
        } else {
            serde_yaml::to_string(&value)
                .map_err(|e| e.to_string())
                .and_then(|text| Workflow::from_yaml(&source, &text).map_err(|e| e.to_string()))
                .and_then(|w| {
                    w.check(registry)
                        .map(|plan| summary(w.name(), Some(&plan)))
                        .map_err(|e| e.to_string())
                })
        };
        match outcome {
            Ok(line) => lines.push(format!("{source}: {line}")),
            Err(e) => problems.push(e),
        }
    }
    if problems.is_empty() {
        Ok(lines)
    } else {
        bail!("{}", problems.join("\n"))
    }
}

fn summary(name: &str, plan: Option<&sei_engine::Plan>) -> String {
    match plan {
        Some(p) => format!(
            "ok: workflow `{name}`, {} tasks, {} finally, digest {}",
            p.tasks.len(),
            p.finally.len(),
            p.digest
        ),
        None => format!("ok: `{name}` disables a built-in workflow"),
    }
}

/// `workflow list|validate`.
pub fn workflow(cmd: WorkflowCommand) -> anyhow::Result<()> {
    let registry = sei_tasks::catalog::registry();
    match cmd {
        WorkflowCommand::List { dir } => {
            let catalog = load_catalog(dir.as_deref())?;
            validate_catalog(&catalog, &registry)?;
            for w in catalog.iter() {
                let def = w.definition();
                println!(
                    "{:<20} target={:<18} tasks={:<3} trigger={}",
                    def.name,
                    def.spec.target,
                    def.spec.tasks.len() + def.spec.finally.len(),
                    def.spec
                        .trigger
                        .as_deref()
                        .unwrap_or("(none: run by name)")
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            }
            Ok(())
        }
        WorkflowCommand::Preview(args) => {
            let out = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(crate::preview::preview(args))?;
            print!("{out}");
            Ok(())
        }
        WorkflowCommand::Validate { files } => {
            let mut failed = false;
            let base = Catalog::builtin()?;
            for file in files {
                match validate_file(&file, &base, &registry) {
                    Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
                    Err(e) => {
                        failed = true;
                        eprintln!("{e:#}");
                    }
                }
            }
            if failed {
                bail!("some workflow files are invalid");
            }
            Ok(())
        }
    }
}

/// A client from `kubeconfig`, else the in-cluster configuration, else the default kubeconfig.
pub(crate) async fn client_for(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// The object named by a plan target, as JSON: from `--file`, else from the cluster. A WorkflowRun
/// (`workflowrun/<name>`, `swr/<name>`) names its (first) target: its plan is that object's.
pub(crate) async fn read_object(target: &PlanTarget) -> anyhow::Result<serde_json::Value> {
    if let Some(file) = &target.file {
        let text = if file.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())?
        } else {
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
        };
        return serde_yaml::from_str(&text).with_context(|| format!("parsing {}", file.display()));
    }
    let (kind, name) = target
        .object
        .split_once('/')
        .with_context(|| format!("expected <kind>/<name>, got {:?}", target.object))?;
    let client = client_for(target.kubeconfig.as_deref()).await?;
    let (kind, name) = match kind.to_ascii_lowercase().as_str() {
        "workflowrun" | "workflowruns" | "swr" => {
            let run = Api::<WorkflowRun>::namespaced(client.clone(), &target.namespace)
                .get(name)
                .await?;
            let target_name = run
                .status
                .as_ref()
                .and_then(|s| s.targets.first())
                .map(|t| t.name.clone())
                .or_else(|| run.spec.target.name.clone())
                .with_context(|| format!("WorkflowRun {name} has no target yet"))?;
            (run.spec.target.kind.as_str().to_ascii_lowercase(), target_name)
        }
        other => (other.to_owned(), name.to_owned()),
    };
    let value = match kind.as_str() {
        "seinode" | "seinodes" | "snode" | "sn" => serde_json::to_value(
            Api::<SeiNode>::namespaced(client, &target.namespace)
                .get(&name)
                .await?,
        )?,
        "seinodedeployment" | "seinodedeployments" | "snd" => serde_json::to_value(
            Api::<sei_crds::SeiNodeDeployment>::namespaced(client, &target.namespace)
                .get(&name)
                .await?,
        )?,
        other => bail!(
            "unknown kind {other:?}: use seinode/<name>, seinodedeployment/<name> or workflowrun/<name>"
        ),
    };
    Ok(value)
}

/// `plan show|graph`: the rendered text.
pub async fn plan(cmd: PlanCommand) -> anyhow::Result<String> {
    let (target, format) = match &cmd {
        PlanCommand::Show(t) => (t, None),
        PlanCommand::Graph { target, format } => (target, Some(format.as_str())),
    };
    let object = read_object(target).await?;
    let status = &object["status"];
    let plan: Option<sei_engine::Plan> = match status.get("plan") {
        Some(p) if !p.is_null() => {
            Some(serde_json::from_value(p.clone()).context("status.plan does not parse")?)
        }
        _ => None,
    };
    let history: Vec<sei_engine::PlanSummary> = match status.get("planHistory") {
        Some(h) if !h.is_null() => {
            serde_json::from_value(h.clone()).context("status.planHistory does not parse")?
        }
        _ => Vec::new(),
    };
    let name = object["metadata"]["name"].as_str().unwrap_or("?");
    Ok(match (format, plan) {
        (Some("mermaid"), Some(p)) => crate::viewer::render_mermaid(&p),
        (Some(_), Some(p)) => crate::viewer::render_dot(&p),
        (Some(_), None) => {
            bail!("{name} has no active plan (finished plans keep only their summary: `plan show`)")
        }
        (None, plan) => {
            let mut out = match plan {
                Some(p) => crate::viewer::render_plan(&p),
                None => format!("{name}: no active plan\n"),
            };
            if !history.is_empty() {
                out.push_str("\nhistory:\n");
                out.push_str(&crate::viewer::render_history(&history));
            }
            out
        }
    })
}

/// The API client: every request counted by verb and carrying `User-Agent: sei-operator/<version>
/// (<identity>)` (so the API server's audit log tells replicas apart); every write except the Lease's refused
/// while the leader `fence` is closed.
async fn client(
    args: &RunArgs,
    metrics: &Arc<Metrics>,
    identity: &str,
    fence: Fence,
) -> anyhow::Result<kube::Client> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::incluster().context("no --kubeconfig and not running in a cluster")?,
    };
    let counted = Arc::clone(metrics);
    let user_agent = http::HeaderValue::from_str(&format!(
        "sei-operator/{} ({identity})",
        env!("CARGO_PKG_VERSION")
    ))
    .context("--identity must be printable ASCII (it goes into the User-Agent header)")?;
    let layer = tower::util::MapRequestLayer::new(move |mut req: http::Request<kube::client::Body>| {
        counted.api_request(crate::metrics::verb(&req));
        req.headers_mut()
            .insert(http::header::USER_AGENT, user_agent.clone());
        req
    });
    let refused = Arc::clone(metrics);
    let fenced = tower::filter::FilterLayer::new(move |req: http::Request<kube::client::Body>| {
        let reads = matches!(*req.method(), http::Method::GET | http::Method::HEAD);
        let lease = req.uri().path().starts_with("/apis/coordination.k8s.io/");
        if reads || lease || fence.permits_write(&refused) {
            Ok(req)
        } else {
            Err(crate::error::Error::Fenced)
        }
    });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&fenced)
        .with_layer(&layer)
        .build())
}

async fn check_crds(client: &kube::Client, workflow_api: bool) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let workflow_crds: &[&str] = if workflow_api {
        &["workflowtemplates.sei.io", "workflowruns.sei.io"]
    } else {
        &[]
    };
    for name in ["seinodes.sei.io", "seinodedeployments.sei.io"]
        .iter()
        .chain(workflow_crds)
    {
        if api.get_opt(name).await.context("checking the CRDs")?.is_none() {
            bail!("CRD {name} is not installed: kubectl apply -f crds/generated/");
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
}

/// `run`: the controllers, behind leader election, until SIGTERM/SIGINT. Named steps: the process (logs, traces,
/// failpoints), what the controllers share ([`Parts`]), the HTTP endpoints and the shutdown signal, then the
/// controllers, behind the lease when leader election is on.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let _telemetry = init_process(&args)?;
    let parts = Parts::assemble(&args).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    serve_endpoints(&args, &parts, &stop_rx).await?;
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("Shutting down: finishing in-flight reconciles");
        let _ = stop_tx.send(true);
    });
    let lease_ns = args
        .lease_namespace
        .clone()
        .or_else(|| args.namespace.clone())
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "default".into());
    let elector = Elector::new(
        parts.client.clone(),
        &lease_ns,
        &args.lease_name,
        &parts.identity,
        parts.timings,
        parts.fence.clone(),
    );
    parts.ready.set(true);
    let controllers = controllers(
        &args,
        parts.client,
        parts.platform,
        parts.sidecar,
        parts.registry,
        parts.catalogs,
        parts.metrics,
        stopped(&stop_rx),
    );
    if !args.leader_elect {
        return controllers.await;
    }
    tracing::info!(identity = %elector.identity(), lease = %args.lease_name, namespace = %lease_ns, "Waiting for leadership");
    if !elector.acquire(stopped(&stop_rx)).await {
        return Ok(());
    }
    tracing::info!(identity = %elector.identity(), "Became the leader");
    lead(&elector, controllers).await
}

/// Logs and traces (the guard flushes them on drop), and the failpoints of `SEI_FAILPOINTS`.
fn init_process(args: &RunArgs) -> anyhow::Result<impl Drop> {
    let log_format = match args.log_format.as_str() {
        "json" => LogFormat::Json,
        "text" => LogFormat::Text,
        other => bail!("--log-format must be text or json, not {other:?}"),
    };
    let telemetry = sei_observability::init(&TelemetryConfig {
        service_name: "sei-operator".into(),
        otlp_endpoint: args.otlp_endpoint.clone(),
        log_format,
        filter: args.log.clone(),
    })?;
    if let Some(spec) = args.failpoints.as_deref() {
        let active = crate::failpoints::configure(spec).map_err(anyhow::Error::msg)?;
        if !active.is_empty() {
            tracing::warn!(failpoints = %active.join(";"), "Failpoints are active (SEI_FAILPOINTS): this process may crash on purpose");
        }
    }
    Ok(telemetry)
}

/// What the controllers share, checked before anything starts: a bad lease timing, platform configuration,
/// workflow or missing CRD stops the process with its error.
struct Parts {
    identity: String,
    timings: Timings,
    /// Open only while this replica holds the lease (always, without leader election): see `leader`.
    fence: Fence,
    platform: Arc<PlatformConfig>,
    registry: Registry,
    catalogs: Arc<Catalogs>,
    metrics: Arc<Metrics>,
    client: kube::Client,
    sidecar: sei_tasks::sidecar::Client,
    ready: Readiness,
}

impl Parts {
    async fn assemble(args: &RunArgs) -> anyhow::Result<Self> {
        let timings = Timings {
            duration: args.lease_duration,
            renew_deadline: args.lease_renew_deadline,
            retry: args.lease_retry_period,
        };
        if args.leader_elect {
            timings.validate().map_err(anyhow::Error::msg)?;
        }
        let identity = args.identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        });
        let fence = if args.leader_elect {
            Fence::closed()
        } else {
            Fence::always_open()
        };
        let platform = match PlatformConfig::from_env() {
            Ok(p) => Arc::new(p),
            Err(errors) => bail!("invalid platform configuration:\n{errors}"),
        };
        if let Err(errors) = platform.check_sidecar_authentication() {
            bail!("refusing to start:\n{errors}");
        }
        let registry = sei_tasks::catalog::registry();
        let catalog = load_catalog(args.workflows_dir.as_deref())?;
        validate_catalog(&catalog, &registry)?;
        let metrics = Arc::new(Metrics::default());
        let client = client(args, &metrics, &identity, fence.clone()).await?;
        check_crds(&client, args.workflow_api).await.context(
            "(or start with --workflow-api=false to run without WorkflowTemplates and WorkflowRuns)",
        )?;
        let sidecar = {
            let (fence, refused) = (fence.clone(), Arc::clone(&metrics));
            sei_tasks::sidecar::Client::new(platform.sidecar_client_config())?
                .with_write_gate(Arc::new(move || fence.permits_write(&refused)))
        };
        Ok(Self {
            identity,
            timings,
            fence,
            platform,
            registry,
            catalogs: Arc::new(Catalogs::new(catalog)),
            metrics,
            client,
            sidecar,
            ready: Readiness::default(),
        })
    }
}

/// Resolves once the shutdown signal has been received.
fn stopped(rx: &watch::Receiver<bool>) -> impl Future<Output = ()> + Send + Sync + 'static {
    let mut rx = rx.clone();
    async move {
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// The HTTP endpoints (metrics, health, the viewer) and, with `--webhook-addr`, the admission webhook.
async fn serve_endpoints(args: &RunArgs, parts: &Parts, stop: &watch::Receiver<bool>) -> anyhow::Result<()> {
    tokio::spawn(crate::http::serve(
        args.http_addr,
        Arc::clone(&parts.metrics),
        parts.ready.clone(),
        stopped(stop),
    ));
    if let Some(addr) = args.webhook_addr {
        let cert_dir = args
            .webhook_cert_dir
            .clone()
            .context("--webhook-addr needs --webhook-cert-dir")?;
        let checker = Arc::new(crate::webhook::Checker {
            catalogs: Arc::clone(&parts.catalogs),
            registry: sei_tasks::catalog::registry(),
        });
        tokio::spawn(crate::webhook::serve(addr, cert_dir, checker, stopped(stop)).await?);
    }
    Ok(())
}

/// The controllers while this replica leads; the lease is released after a graceful stop.
async fn lead(
    elector: &Elector,
    controllers: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    tokio::select! {
        // SIGTERM: in-flight reconciles finish (their writes are still fenced), then the lease is released.
        result = controllers => {
            elector.release().await;
            result
        }
        // The renew deadline passed: the fence is already closed; dropping the controllers cancels every
        // in-flight reconcile at its next await. Exit non-zero so that Kubernetes restarts this replica as a
        // standby (client-go's OnStoppedLeading does the same).
        why = elector.hold() => {
            elector.fence.close();
            tracing::error!(reason = %why, "Leadership lost: cancelled in-flight reconciles; exiting");
            bail!("leadership lost: {why}")
        }
    }
}

/// The WorkflowRun controller (nothing without --workflow-api).
async fn run_controller(
    args: &RunArgs,
    client: &kube::Client,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    if !args.workflow_api {
        return;
    }
    Controller::new(scoped::<WorkflowRun>(args, client), watcher::Config::default())
        .with_config(controller::Config::default().concurrency(args.concurrency))
        .graceful_shutdown_on(shutdown)
        .run(crate::runs::reconcile, crate::runs::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = &e as &dyn std::error::Error, "Reconcile error");
            }
        })
        .await;
}

/// Starts the WorkflowTemplate watch and waits for its first full list: plans start only once every template
/// is known, so a restart never runs a built-in that a template overrides or disables.
async fn load_templates(
    args: &RunArgs,
    client: &kube::Client,
    ctx: &Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
    let templates: Api<WorkflowTemplate> = match &args.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    tokio::spawn(crate::templates::watch(
        templates,
        Arc::clone(ctx),
        synced_tx,
        shutdown,
    ));
    let _ = synced_rx.await;
    tracing::info!("WorkflowTemplates loaded");
}

#[allow(clippy::too_many_arguments)] // the wiring of `run`
async fn controllers(
    args: &RunArgs,
    client: kube::Client,
    platform: Arc<PlatformConfig>,
    sidecar: sei_tasks::sidecar::Client,
    registry: Registry,
    catalogs: Arc<Catalogs>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let reporter = Reporter {
        controller: "sei-operator".into(),
        instance: args.identity.clone(),
    };
    let (pods, pod_writer) = reflector::store();
    let ctx = Arc::new(Context {
        client: client.clone(),
        tasks: TaskContext {
            client: client.clone(),
            sidecar,
            platform: Arc::clone(&platform),
            pods: Some(pods),
        },
        registry,
        catalogs,
        platform,
        recorder: Recorder::new(client.clone(), reporter),
        metrics,
        superseded: crate::context::Superseded::default(),
        ec2: sei_tasks::peers::Ec2Settings::from_env(|k| std::env::var(k).ok()),
        journal: match &args.otlp_endpoint {
            Some(endpoint) => Some(Arc::new(sei_observability::journal::JournalExporter::new(
                "sei-operator",
                endpoint,
            )?)),
            None => None,
        },
    });
    tracing::info!(
        namespace = args.namespace.as_deref().unwrap_or("(all)"),
        "Starting the SeiNode and SeiNodeDeployment controllers"
    );
    let shutdown = futures::FutureExt::shared(shutdown);
    if args.workflow_api {
        load_templates(args, &client, &ctx, shutdown.clone()).await;
    }
    let nodes = node_controller(args, &client, Arc::clone(&ctx), pod_writer, shutdown.clone());
    let fleets = fleet_controller(args, &client, Arc::clone(&ctx), shutdown.clone());
    let runs = run_controller(args, &client, ctx, shutdown);
    futures::join!(nodes, fleets, runs);
    tokio::time::sleep(Duration::from_millis(10)).await;
    tracing::info!("Controllers stopped");
    Ok(())
}

/// An `Api` over `args.namespace`, or over every namespace.
fn scoped<K>(args: &RunArgs, client: &kube::Client) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match &args.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A metadata-only watch of the objects a controller owns: nothing but the metadata is kept or decoded (the
/// reconcile reads what it needs through its tasks). With `every_change` any change wakes the owner (the fleet
/// controller aggregates its children's status); without, only what [`LifecycleFilter`] lets through.
fn owned_metadata<K>(
    args: &RunArgs,
    client: &kube::Client,
    every_change: bool,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let mut filter = LifecycleFilter {
        every_change,
        ..LifecycleFilter::default()
    };
    watcher(
        scoped::<PartialObjectMeta<K>>(args, client),
        watcher::Config::default(),
    )
    .default_backoff()
    .filter_map(move |event| std::future::ready(filter.wakes(event)))
}

/// Which watch events of owned objects wake their owner ([`owned_metadata`]): an object's creation, deletion,
/// a new generation, its deletion starting. Status-only updates (a claim bound, a StatefulSet's replica
/// counts) wake nobody: no task waits for them through the watch (`replace-pod` polls the StatefulSet's
/// revision; a pod's changes come through the pod watch). Hand-written rather than kube's `predicate_filter`,
/// which would also drop the deletion of an object whose generation did not change.
/// With `every_change`, every applied or deleted object wakes it (kube's `touched_objects`).
#[derive(Default)]
struct LifecycleFilter {
    every_change: bool,
    /// Per uid: the generation and whether deletion had started, as last seen.
    seen: std::collections::HashMap<String, (Option<i64>, bool)>,
    /// During a relist (`Init` to `InitDone`): the uids listed, so that the objects deleted while the watch was
    /// down (which get no `Delete` event) are forgotten, and `seen` does not grow for ever.
    relisted: Option<std::collections::HashSet<String>>,
}

impl LifecycleFilter {
    fn wakes<K>(
        &mut self,
        event: Result<watcher::Event<PartialObjectMeta<K>>, watcher::Error>,
    ) -> Option<Result<PartialObjectMeta<K>, watcher::Error>> {
        match event {
            Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) if self.every_change => {
                Some(Ok(obj))
            }
            Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                let key = obj.metadata.uid.clone().unwrap_or_default();
                if let Some(listed) = &mut self.relisted {
                    listed.insert(key.clone());
                }
                let now = (obj.metadata.generation, obj.metadata.deletion_timestamp.is_some());
                (self.seen.insert(key, now) != Some(now)).then_some(Ok(obj))
            }
            Ok(watcher::Event::Delete(obj)) => {
                self.seen.remove(obj.metadata.uid.as_deref().unwrap_or_default());
                Some(Ok(obj))
            }
            Ok(watcher::Event::Init) => {
                self.relisted = Some(std::collections::HashSet::new());
                None
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(listed) = self.relisted.take() {
                    self.seen.retain(|uid, _| listed.contains(uid));
                }
                None
            }
            Err(e) => Some(Err(e)),
        }
    }
}

/// The SeiNode controller, woken by changes of its SeiNodes other than its own status writes, by its
/// StatefulSet, Service and PVC (metadata only) and by its pod (label `sei.io/node`), whose full objects go
/// into the pod cache the tasks read (`observe-image`).
fn node_controller(
    args: &RunArgs,
    client: &kube::Client,
    ctx: Arc<Context>,
    pod_writer: reflector::store::Writer<Pod>,
    shutdown: impl Future<Output = ()> + Send + Sync + Clone + 'static,
) -> impl Future<Output = ()> {
    let pods = watcher(
        scoped::<Pod>(args, client),
        watcher::Config::default().labels(sei_crds::labels::NODE),
    )
    .default_backoff()
    .modify(|pod| pod.managed_fields_mut().clear());
    let pods = reflector::reflector(pod_writer, pods).touched_objects();
    let (triggers, nodes) = own_writes_filtered::<SeiNode>(args, client, &ctx);
    Controller::for_stream(triggers, nodes)
        .reconcile_all_on(ctx.catalogs.reloads())
        .owns_stream(owned_metadata::<StatefulSet>(args, client, false))
        .owns_stream(owned_metadata::<Service>(args, client, false))
        .owns_stream(owned_metadata::<PersistentVolumeClaim>(args, client, false))
        .watches_stream(pods, |pod| {
            let node = pod.labels().get(sei_crds::labels::NODE)?;
            Some(ObjectRef::new(node).within(&pod.namespace()?))
        })
        .with_config(controller::Config::default().concurrency(args.concurrency))
        .graceful_shutdown_on(shutdown)
        .run(crate::node::reconcile, crate::node::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = &e as &dyn std::error::Error, "Reconcile error");
            }
        })
}

/// The watch of a controller's own kind: every version goes into its cache, and those of this process's own
/// status writes wake nobody (`context::Superseded::is_own`: the reconcile that wrote asked to come back when
/// it is next due).
fn own_writes_filtered<K>(
    args: &RunArgs,
    client: &kube::Client,
    ctx: &Arc<Context>,
) -> (
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    reflector::Store<K>,
)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let own = Arc::clone(ctx);
    let triggers = reflector::reflector(
        writer,
        watcher(scoped::<K>(args, client), watcher::Config::default()).default_backoff(),
    )
    .touched_objects()
    .filter(move |obj| std::future::ready(!matches!(obj, Ok(o) if own.superseded.is_own(o.meta()))));
    (triggers, store)
}

/// The fleet controller: SeiNodeDeployments, woken by their children and internal Services (metadata only).
fn fleet_controller(
    args: &RunArgs,
    client: &kube::Client,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + Clone + 'static,
) -> impl Future<Output = ()> {
    let (triggers, deployments) = own_writes_filtered::<SeiNodeDeployment>(args, client, &ctx);
    Controller::for_stream(triggers, deployments)
        .reconcile_all_on(ctx.catalogs.reloads())
        .owns_stream(owned_metadata::<SeiNode>(args, client, true))
        .owns_stream(owned_metadata::<Service>(args, client, true))
        .with_config(controller::Config::default().concurrency(args.concurrency))
        .graceful_shutdown_on(shutdown)
        .run(crate::deployment::reconcile, crate::deployment::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = &e as &dyn std::error::Error, "Reconcile error");
            }
        })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::core::PartialObjectMeta;
    use kube::runtime::watcher::Event;

    use super::LifecycleFilter;

    fn sts(uid: &str, generation: i64, version: &str, deleting: bool) -> PartialObjectMeta<StatefulSet> {
        let mut obj = PartialObjectMeta::<StatefulSet>::default();
        obj.metadata.uid = Some(uid.into());
        obj.metadata.generation = Some(generation);
        obj.metadata.resource_version = Some(version.into());
        obj.metadata.deletion_timestamp = deleting
            .then(|| serde_json::from_value::<Time>(serde_json::json!("2026-11-30T00:00:00Z")).unwrap());
        obj
    }

    fn wakes(filter: &mut LifecycleFilter, event: Event<PartialObjectMeta<StatefulSet>>) -> bool {
        filter.wakes(Ok(event)).is_some()
    }

    #[test]
    fn an_owned_object_wakes_its_owner_on_creation_new_spec_and_deletion_not_on_status() {
        let mut f = LifecycleFilter::default();
        assert!(wakes(&mut f, Event::Apply(sts("a", 1, "10", false))), "created");
        assert!(
            !wakes(&mut f, Event::Apply(sts("a", 1, "11", false))),
            "status-only update"
        );
        assert!(
            !wakes(&mut f, Event::Apply(sts("a", 1, "12", false))),
            "another one"
        );
        assert!(wakes(&mut f, Event::Apply(sts("a", 2, "13", false))), "new spec");
        assert!(
            wakes(&mut f, Event::Apply(sts("b", 1, "14", false))),
            "another object"
        );
        assert!(
            wakes(&mut f, Event::Apply(sts("a", 2, "15", true))),
            "deletion started"
        );
        assert!(
            wakes(&mut f, Event::Delete(sts("a", 2, "16", true))),
            "deleted, nothing else changed"
        );
        assert!(
            wakes(&mut f, Event::Apply(sts("a", 2, "17", false))),
            "seen again after its deletion"
        );
        assert!(!wakes(&mut f, Event::Init));
        assert!(
            !wakes(&mut f, Event::InitApply(sts("b", 1, "18", false))),
            "a relist of an unchanged one"
        );
        assert!(
            wakes(&mut f, Event::InitApply(sts("c", 1, "19", false))),
            "a relist of a new one"
        );
        assert!(!wakes(&mut f, Event::InitDone));
        // "a" was not in that relist (deleted while the watch was down): forgotten, so it is new if it comes back.
        assert_eq!(f.seen.len(), 2, "only the relisted objects are remembered");
        assert!(
            wakes(&mut f, Event::Apply(sts("a", 2, "20", false))),
            "forgotten after a relist without it"
        );
        let mut every = LifecycleFilter {
            every_change: true,
            ..LifecycleFilter::default()
        };
        assert!(wakes(&mut every, Event::Apply(sts("a", 1, "10", false))));
        assert!(
            wakes(&mut every, Event::Apply(sts("a", 1, "11", false))),
            "status-only, every change"
        );
        assert!(wakes(&mut every, Event::Delete(sts("a", 1, "12", false))));
        assert!(!wakes(&mut every, Event::Init));
    }
}
