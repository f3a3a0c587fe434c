//! The harness for tests that need the local control plane (`cargo xtask cluster up`).
//!
//! - [`ClusterEnv`] reads the env file that `hack/cluster.sh up` writes (`.cluster/env` at the repository root,
//!   or the file named by `SEI_CLUSTER_ENV`). The ambient `KUBECONFIG` is deliberately ignored: a developer's
//!   kubeconfig may point at a real cluster, and these tests create and delete namespaces.
//! - [`test_namespace`] gives each test its own namespace, deleted when the returned guard drops (also when the
//!   test panics).
//! - When the cluster is missing, a test is skipped with a message on stderr, except when `CI` (or
//!   `SEI_REQUIRE_CLUSTER`) is set: then it fails. CI never passes by skipping.
//!
//! # Owns, and must not
//! Owns the test harness and the sidecar simulator (`sidecar-sim`). Must not be a dependency of any
//! production crate.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{Condition, await_condition};
use kube::{Client, Config, Resource};
use serde::de::DeserializeOwned;

/// The root of the repository (the workspace).
#[must_use]
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Where the local cluster's settings are: the env file written by `cargo xtask cluster up`.
#[derive(Clone, Debug)]
pub struct ClusterEnv {
    /// The env file this was read from.
    pub path: PathBuf,
    /// Path of the admin kubeconfig of the local cluster.
    pub kubeconfig: PathBuf,
    /// OTLP/gRPC endpoint of the local Jaeger (`http://127.0.0.1:4317`).
    pub otlp_endpoint: String,
    /// Jaeger's query API (`http://127.0.0.1:16686`).
    pub jaeger_query_url: String,
    /// Every variable of the env file, for tests that start binaries.
    pub vars: HashMap<String, String>,
}

impl ClusterEnv {
    /// The env file's path: `SEI_CLUSTER_ENV`, else `<repo>/.cluster/env`.
    #[must_use]
    pub fn default_path() -> PathBuf {
        std::env::var_os("SEI_CLUSTER_ENV")
            .map_or_else(|| workspace_root().join(".cluster").join("env"), PathBuf::from)
    }

    /// Reads the env file; `Ok(None)` when it does not exist (no cluster was started).
    pub fn load() -> anyhow::Result<Option<Self>> {
        let path = Self::default_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let vars: HashMap<String, String> = text
            .lines()
            .filter_map(|l| {
                l.trim()
                    .strip_prefix("export ")
                    .unwrap_or(l.trim())
                    .split_once('=')
            })
            .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
            .collect();
        let get = |k: &str| {
            vars.get(k)
                .cloned()
                .with_context(|| format!("{} does not set {k}", path.display()))
        };
        Ok(Some(Self {
            kubeconfig: PathBuf::from(get("KUBECONFIG")?),
            otlp_endpoint: get("OTEL_EXPORTER_OTLP_ENDPOINT")?,
            jaeger_query_url: get("JAEGER_QUERY_URL")?,
            path,
            vars,
        }))
    }

    /// A client for the local cluster, built from its kubeconfig only.
    pub async fn client(&self) -> anyhow::Result<Client> {
        self.client_in(None).await
    }

    /// A client for the local cluster whose default namespace is `namespace` (or `default`).
    pub async fn client_in(&self, namespace: Option<&str>) -> anyhow::Result<Client> {
        let kc = Kubeconfig::read_from(&self.kubeconfig)
            .with_context(|| format!("reading kubeconfig {}", self.kubeconfig.display()))?;
        let mut cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
        cfg.read_timeout = Some(Duration::from_secs(30));
        if let Some(ns) = namespace {
            ns.clone_into(&mut cfg.default_namespace);
        }
        Ok(Client::try_from(cfg)?)
    }
}

/// True when a missing cluster must fail the test rather than skip it.
#[must_use]
pub fn cluster_required() -> bool {
    ["CI", "SEI_REQUIRE_CLUSTER"]
        .iter()
        .any(|k| std::env::var(k).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false"))
}

/// Handles "no cluster": fails the calling test in CI, otherwise prints why it is skipped.
#[allow(clippy::panic)] // failing the test is the point: in CI a missing cluster must never look like a pass
fn no_cluster(why: &str) {
    assert!(
        !cluster_required(),
        "the local cluster is required (CI is set) but {why}; start it with `cargo xtask cluster up`"
    );
    eprintln!("SKIPPED: {why}; start the local cluster with `cargo xtask cluster up`");
}

/// The local cluster's env and a connected client, or `None` when the test should be skipped.
///
/// # Panics
/// When the cluster is missing or unreachable and CI is set.
pub async fn cluster() -> Option<(ClusterEnv, Client)> {
    let env = match ClusterEnv::load() {
        Ok(Some(env)) => env,
        Ok(None) => {
            no_cluster(&format!(
                "no cluster env file at {}",
                ClusterEnv::default_path().display()
            ));
            return None;
        }
        Err(e) => {
            no_cluster(&format!("the cluster env file is unreadable: {e:#}"));
            return None;
        }
    };
    let client = match env.client().await {
        Ok(c) => c,
        Err(e) => {
            no_cluster(&format!(
                "cannot build a client from {}: {e:#}",
                env.kubeconfig.display()
            ));
            return None;
        }
    };
    if let Err(e) = client.apiserver_version().await {
        no_cluster(&format!(
            "the apiserver in {} does not answer: {e}",
            env.kubeconfig.display()
        ));
        return None;
    }
    Some((env, client))
}

/// A namespace of one test's own, deleted when dropped.
pub struct TestNamespace {
    name: String,
    client: Client,
    env: ClusterEnv,
}

impl TestNamespace {
    /// The namespace's name (`<prefix>-<8 hex>`).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A client whose default namespace is this one.
    #[must_use]
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The cluster's settings.
    #[must_use]
    pub fn env(&self) -> &ClusterEnv {
        &self.env
    }

    /// A namespaced API for `K` in this namespace.
    #[must_use]
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var_os("SEI_KEEP_NAMESPACES").is_some() {
            eprintln!("keeping namespace {} (SEI_KEEP_NAMESPACES is set)", self.name);
            return;
        }
        // Drop cannot await, and the test's runtime may be shutting down: delete from a fresh runtime on a
        // thread of its own, with a fresh client, and wait for the requests (not for the namespace to vanish).
        // The test's operator is gone, so nothing would remove the sei.io finalizers: they are removed first,
        // or the namespace stays Terminating and its controller retries for ever (dozens of them kept the
        // apiserver busy for the rest of a `cargo test` run, slowing every later test and the bench).
        let name = self.name.clone();
        let env = self.env.clone();
        let deleted = std::thread::spawn(move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let client = env.client().await?;
                release_finalizers(&client, &name).await;
                Api::<Namespace>::all(client)
                    .delete(&name, &DeleteParams::background())
                    .await?;
                Ok(())
            })
        })
        .join();
        if let Ok(Err(e)) = deleted {
            eprintln!("warning: could not delete test namespace {}: {e:#}", self.name);
        }
    }
}

/// Removes the finalizers of the operator's objects in `namespace` (SeiNodeDeployments, SeiNodes, WorkflowRuns),
/// 32 patches at a time, once the operator is stopped; returns how many it released. Best effort: a kind whose
/// CRD is not installed is skipped, a failed patch is left.
pub async fn release_finalizers(client: &Client, namespace: &str) -> usize {
    release::<sei_crds::SeiNodeDeployment>(client, namespace).await
        + release::<sei_crds::SeiNode>(client, namespace).await
        + release::<sei_crds::WorkflowRun>(client, namespace).await
}

/// [`release_finalizers`] for one kind.
async fn release<K>(client: &Client, namespace: &str) -> usize
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    use futures::StreamExt as _;
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let Ok(list) = api.list_metadata(&kube::api::ListParams::default()).await else {
        return 0;
    };
    let patch = serde_json::json!({"metadata": {"finalizers": null}});
    let names: Vec<String> = list
        .items
        .into_iter()
        .filter(|o| o.metadata.finalizers.as_ref().is_some_and(|f| !f.is_empty()))
        .filter_map(|o| o.metadata.name)
        .collect();
    futures::stream::iter(&names)
        .map(|name| {
            let (api, patch) = (&api, &patch);
            async move {
                api.patch_metadata(name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .is_ok()
            }
        })
        .buffer_unordered(32)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await
}

/// Creates a namespace `<prefix>-<random>` for one test, or returns `None` when the test should be skipped.
///
/// # Panics
/// When the cluster is missing and CI is set, or when the namespace cannot be created.
pub async fn test_namespace(prefix: &str) -> Option<TestNamespace> {
    let (env, client) = cluster().await?;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("{prefix}-{}", &suffix[..8]);
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some([("sei.io/test".to_owned(), "true".to_owned())].into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    let created = Api::<Namespace>::all(client)
        .create(&PostParams::default(), &ns)
        .await;
    assert!(created.is_ok(), "creating test namespace {name}: {created:?}");
    let client = env.client_in(Some(&name)).await;
    assert!(
        client.is_ok(),
        "client for namespace {name}: {client:?}",
        client = client.as_ref().err()
    );
    let client = client.ok()?;
    Some(TestNamespace { name, client, env })
}

/// Server-side applies every CRD in `crds/generated/` and waits until each is Established.
pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let dir = workspace_root().join("crds").join("generated");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no CRD YAML in {}; run `cargo xtask crd`", dir.display());
    }
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let crd: CustomResourceDefinition = serde::Deserialize::deserialize(doc)
                .with_context(|| format!("parsing {}", file.display()))?;
            let name = crd.metadata.name.clone().context("CRD without a name")?;
            api.patch(
                &name,
                &PatchParams::apply("sei-tests").force(),
                &Patch::Apply(&crd),
            )
            .await
            .with_context(|| format!("applying {}", file.display()))?;
            wait_for(&api, &name, crd_established(), Duration::from_secs(30)).await?;
        }
    }
    Ok(())
}

/// True once a CRD's `Established` condition is True.
#[must_use]
pub fn crd_established() -> impl Condition<CustomResourceDefinition> {
    |crd: Option<&CustomResourceDefinition>| {
        crd.and_then(|c| c.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"))
    }
}

/// Waits until `cond` holds for the object `name`, failing with the object's last state after `timeout`.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    cond: impl Condition<K>,
    timeout: Duration,
) -> anyhow::Result<K>
where
    K: Resource + Clone + std::fmt::Debug + DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(Some(obj))) => Ok(obj),
        Ok(Ok(None)) => bail!("{name} was deleted while waiting"),
        Ok(Err(e)) => Err(e).with_context(|| format!("watching {name}")),
        Err(_) => {
            let last = api.get_opt(name).await.ok().flatten();
            bail!("condition on {name} not met after {timeout:?}; last state: {last:#?}")
        }
    }
}

pub mod sim;
