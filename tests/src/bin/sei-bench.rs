//! Helpers of the scale benchmark (`hack/bench-nodes.sh`), each a minimal kube client:
//!
//! - `wait`: watches the SeiNodes of a namespace and prints when (Unix ms) the first and the last of `--count`
//!   nodes reached phase `Running` (a watch, started before the nodes are created, not a polling loop, so the
//!   measuring does not load the 2-core machine it measures);
//! - `create`: creates `--count` full-node SeiNodes `bench-<i>`, `--concurrency` requests at a time (what a
//!   `kubectl apply` of many objects would do if it did not send them one by one);
//! - `cluster`: the cluster alone, with no operator: `--count` PersistentVolumeClaims and StatefulSets of one pod
//!   mounting its claim (the objects a node init creates, minus the operator), created at once; prints when the
//!   first and the last pod ran (phase `Running`), the floor under the operator's time to all Running;
//! - `status-writes`: the apiserver's own throughput for the same kind of writes the operator makes: `--count`
//!   status replacements (PUT `/status` of whole SeiNodes, each changing one condition) spread round-robin over
//!   the namespace's nodes, `--concurrency` at a time, with no client-side rate limit. Printed as the time taken
//!   and writes per second: the ceiling the operator's status writes are compared with;
//! - `release`: removes the finalizers of a namespace's SeiNodeDeployments, SeiNodes and WorkflowRuns once the
//!   operator is stopped (`sei_tests::release_finalizers`), so the namespace can be deleted: left `Terminating`,
//!   its controller retries for ever, which kept the apiserver busy (0.7 of a core at idle after a few runs) and
//!   slowed every run after the first.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use futures::{StreamExt as _, TryStreamExt as _};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "Helpers of hack/bench-nodes.sh (a minimal kube client; KUBECONFIG as usual)")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print when the first and the last of `count` SeiNodes reached Running.
    Wait {
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        count: usize,
        /// Give up after this long.
        #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Create `count` full-node SeiNodes named `bench-<i>`.
    Create {
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value = "seid:v1")]
        image: String,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// The cluster alone: `count` claims and one-pod StatefulSets created at once, until every pod runs.
    Cluster {
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value = "600s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Remove the finalizers of the operator's objects in the namespace (the operator is stopped).
    Release {
        #[arg(long)]
        namespace: String,
    },
    /// Measure the apiserver's throughput for `count` SeiNode status replacements.
    StatusWrites {
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
}

fn seinodes(client: kube::Client, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("sei.io", "v1alpha1", "SeiNode"),
        "seinodes",
    );
    Api::namespaced_with(client, namespace, &resource)
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

async fn wait(api: Api<DynamicObject>, count: usize, timeout: Duration) -> anyhow::Result<()> {
    let mut running: BTreeMap<String, u128> = BTreeMap::new();
    let mut first = None;
    let stream = watcher(api, watcher::Config::default()).applied_objects();
    eprintln!("watching");
    let mut stream = std::pin::pin!(stream);
    let deadline = tokio::time::Instant::now() + timeout;
    while running.len() < count {
        let next = tokio::time::timeout_at(deadline, stream.try_next()).await;
        let Ok(next) = next else {
            bail!("timeout: {} of {count} Running after {timeout:?}", running.len());
        };
        let Some(node) = next? else {
            bail!("the watch ended")
        };
        let phase = node.data.pointer("/status/phase").and_then(Value::as_str);
        if phase == Some("Running") {
            let at = unix_ms();
            let name = node.metadata.name.clone().unwrap_or_default();
            running.entry(name).or_insert(at);
            first.get_or_insert(at);
        }
    }
    let all = running.values().copied().max().unwrap_or_default();
    println!("first_running_unix_ms={}", first.unwrap_or_default());
    println!("all_running_unix_ms={all}");
    Ok(())
}

async fn status_writes(api: Api<DynamicObject>, count: usize, concurrency: usize) -> anyhow::Result<()> {
    let nodes = api.list(&ListParams::default()).await?.items;
    if nodes.is_empty() {
        bail!("no SeiNodes to write to");
    }
    let concurrency = concurrency.clamp(1, nodes.len());
    // One worker per slice of the nodes, each writing its nodes in turn (one object is never written by two
    // workers at once, as the operator's controller never reconciles one object twice at once).
    let nodes = Arc::new(nodes);
    let started = Instant::now();
    let workers = (0..concurrency).map(|w| {
        let (api, nodes) = (api.clone(), Arc::clone(&nodes));
        async move {
            let mine: Vec<usize> = (w..nodes.len()).step_by(concurrency).collect();
            let share = count / concurrency + usize::from(w < count % concurrency);
            let mut objects: Vec<DynamicObject> = mine.iter().map(|&i| nodes[i].clone()).collect();
            for n in 0..share {
                let object = &mut objects[n % mine.len()];
                let name = object.metadata.name.clone().unwrap_or_default();
                set_condition(&mut object.data, n);
                let written = api
                    .replace_status(&name, &PostParams::default(), &*object)
                    .await
                    .with_context(|| format!("writing the status of {name}"))?;
                *object = written;
            }
            anyhow::Ok(share)
        }
    });
    let written: usize = futures::stream::iter(workers)
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await?
        .into_iter()
        .sum();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "apiserver baseline: {written} status writes, {concurrency} at a time, in {:.0} ms: {:.0} writes/s",
        secs * 1000.0,
        f64::from(u32::try_from(written).unwrap_or(u32::MAX)) / secs
    );
    Ok(())
}

async fn create(
    api: Api<DynamicObject>,
    count: usize,
    image: &str,
    concurrency: usize,
) -> anyhow::Result<()> {
    let started = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            let object: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "sei.io/v1alpha1", "kind": "SeiNode",
                "metadata": {"name": format!("bench-{i}")},
                "spec": {"chainId": "atlantic-2", "image": image, "fullNode": {}},
            }))?;
            anyhow::Ok(async move {
                api.create(&PostParams::default(), &object)
                    .await
                    .with_context(|| format!("creating bench-{i}"))
            })
        })
        .try_buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<_>>()
        .await?;
    println!("created {count} SeiNodes in {} ms", started.elapsed().as_millis());
    Ok(())
}

async fn cluster(
    client: kube::Client,
    namespace: &str,
    count: usize,
    concurrency: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let started = Instant::now();
    let watch = tokio::spawn(async move {
        let mut running: BTreeMap<String, Duration> = BTreeMap::new();
        let stream = watcher(pods, watcher::Config::default().labels("app=cluster-bench")).applied_objects();
        let mut stream = std::pin::pin!(stream);
        while running.len() < count {
            let Some(pod) = stream.try_next().await? else {
                bail!("the watch ended")
            };
            if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                running
                    .entry(pod.metadata.name.clone().unwrap_or_default())
                    .or_insert_with(|| started.elapsed());
            }
        }
        anyhow::Ok(running)
    });
    futures::stream::iter(0..count)
        .map(|i| {
            let (claims, sets) = (claims.clone(), sets.clone());
            async move {
                let claim: PersistentVolumeClaim = serde_json::from_value(json!({
                    "metadata": {"name": format!("data-c{i}")},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                }))?;
                claims.create(&PostParams::default(), &claim).await?;
                let set: StatefulSet = serde_json::from_value(json!({
                    "metadata": {"name": format!("c{i}")},
                    "spec": {
                        "replicas": 1, "serviceName": format!("c{i}"),
                        "updateStrategy": {"type": "OnDelete"},
                        "selector": {"matchLabels": {"app": "cluster-bench", "i": format!("{i}")}},
                        "template": {
                            "metadata": {"labels": {"app": "cluster-bench", "i": format!("{i}")}},
                            "spec": {
                                "containers": [{"name": "seid", "image": "seid:v1",
                                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": format!("data-c{i}")}}],
                            },
                        },
                    },
                }))?;
                sets.create(&PostParams::default(), &set).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<_>>()
        .await?;
    let created = started.elapsed();
    let running = tokio::time::timeout(timeout, watch)
        .await
        .context("timeout")???;
    let first = running.values().min().copied().unwrap_or_default();
    let all = running.values().max().copied().unwrap_or_default();
    println!(
        "cluster alone: {count} claims + StatefulSets created in {} ms; first pod Running after {} ms, all after {} ms",
        created.as_millis(),
        first.as_millis(),
        all.as_millis()
    );
    Ok(())
}

/// Sets condition `BenchWrite` to a message that changes with `n` (an unchanged object would not be written).
fn set_condition(data: &mut Value, n: usize) {
    let condition = json!({
        "type": "BenchWrite", "status": "True", "reason": "Bench", "message": format!("write {n}"),
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    });
    let Some(status) = data.get_mut("status").and_then(Value::as_object_mut) else {
        return;
    };
    let conditions = status.entry("conditions").or_insert_with(|| json!([]));
    if let Some(list) = conditions.as_array_mut() {
        list.retain(|c| c.get("type").and_then(Value::as_str) != Some("BenchWrite"));
        list.push(condition);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = kube::Client::try_default().await?;
    match args.command {
        Command::Wait {
            namespace,
            count,
            timeout,
        } => wait(seinodes(client, &namespace), count, timeout).await,
        Command::Create {
            namespace,
            count,
            image,
            concurrency,
        } => create(seinodes(client, &namespace), count, &image, concurrency).await,
        Command::Cluster {
            namespace,
            count,
            concurrency,
            timeout,
        } => cluster(client, &namespace, count, concurrency, timeout).await,
        Command::Release { namespace } => {
            let started = Instant::now();
            let released = sei_tests::release_finalizers(&client, &namespace).await;
            eprintln!(
                "released {released} objects in {} ms",
                started.elapsed().as_millis()
            );
            Ok(())
        }
        Command::StatusWrites {
            namespace,
            count,
            concurrency,
        } => status_writes(seinodes(client, &namespace), count, concurrency).await,
    }
}
