//! Every example manifest (`examples/*.yaml`, `examples/demo/`; `examples/workflows` has `workflow_examples`)
//! is accepted by the real API server (server-side apply with strict field validation, so a field the CRD
//! does not know is an error, not silently dropped) and runs against the sidecar simulator: every SeiNode
//! reaches Running and every SeiNodeDeployment Ready. Every field an example sets is one the operator uses:
//! [`FIELDS`] says where each is read, a pure test fails on an example field it does not list, and the cluster
//! test checks each SeiNode field's effect on what the sidecar was told, the StatefulSet or the status.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use sei_crds::{SeiNode, SeiNodeDeployment};
use serde_json::Value;

use common::{Operator, Sim, eventually, in_phase, node_key_secret, setup, validator_key_secrets, wait_node};

const WAIT: Duration = Duration::from_secs(240);

/// Every field path the examples set (`[]` for any list index), and where the operator uses it.
const FIELDS: &[(&str, &str)] = &[
    (
        "metadata.labels.sei.io/role",
        "label peer selectors of other SeiNodes (tasks::peers)",
    ),
    (
        "metadata.annotations.sei.io/dedicated-node",
        "pod label + anti-affinity (resources::statefulset)",
    ),
    ("spec.chainId", "configure-genesis chainId, labels, config"),
    ("spec.image", "the StatefulSet's seid image"),
    (
        "spec.externalAddress",
        "config-apply network.p2p.external_address; peers of others",
    ),
    (
        "spec.overrides.logging.level",
        "config-apply overrides (user layer)",
    ),
    ("spec.peers[].static.addresses[]", "status.resolvedPeers"),
    ("spec.peers[].label.selector.sei.io/chain", "status.resolvedPeers"),
    ("spec.peers[].label.selector.sei.io/role", "status.resolvedPeers"),
    (
        "spec.peers[].ec2Tags.region",
        "EC2 DescribeInstances (needs SEI_EC2_ENDPOINT or AWS; peers_e2e)",
    ),
    (
        "spec.peers[].ec2Tags.tags.sei.io/chain",
        "EC2 DescribeInstances filters (peers_e2e)",
    ),
    (
        "spec.sidecar.port",
        "sidecar listen port, Service port, sidecar URL",
    ),
    (
        "spec.sidecar.resources.requests.cpu",
        "the sidecar container's resources",
    ),
    (
        "spec.sidecar.resources.requests.memory",
        "the sidecar container's resources",
    ),
    ("spec.fullNode", "mode: full node (config mode full)"),
    (
        "spec.fullNode.snapshot.s3.targetHeight",
        "snapshot-restore targetHeight",
    ),
    (
        "spec.fullNode.snapshot.rpcServers[]",
        "StateSyncReady gate, configure-state-sync rpcServers",
    ),
    (
        "spec.fullNode.snapshotGeneration.tendermint.keepRecent",
        "config-apply storage.snapshot_keep_recent",
    ),
    (
        "spec.archive.snapshotGeneration.tendermint.keepRecent",
        "config-apply storage.snapshot_keep_recent",
    ),
    (
        "spec.archive.snapshotGeneration.tendermint.publish",
        "pod label sei.io/snapshot-publish",
    ),
    (
        "spec.replayer.snapshot.s3.targetHeight",
        "snapshot-restore targetHeight, the Job's --halt-height",
    ),
    (
        "spec.replayer.snapshot.bootstrapImage",
        "the bootstrap Job (node-init bootstrap-* steps)",
    ),
    (
        "spec.replayer.snapshot.rpcServers[]",
        "StateSyncReady gate, configure-state-sync rpcServers",
    ),
    (
        "spec.replayer.resultExport.shadowResult.canonicalRpc",
        "result-export canonicalRpc",
    ),
    (
        "spec.seed.nodeKey.secret.secretName",
        "validate-node-key, node key mount",
    ),
    (
        "spec.validator.snapshot.s3",
        "snapshot-restore (latest), configure-state-sync",
    ),
    (
        "spec.validator.snapshot.stateSync",
        "StateSyncReady gate, configure-state-sync",
    ),
    (
        "spec.validator.snapshot.trustPeriod",
        "configure-state-sync trustPeriod",
    ),
    (
        "spec.validator.snapshot.rpcServers[]",
        "StateSyncReady gate, configure-state-sync rpcServers",
    ),
    (
        "spec.validator.signingKey.secret.secretName",
        "validate-signing-key, key mount",
    ),
    (
        "spec.validator.nodeKey.secret.secretName",
        "validate-node-key, key mount",
    ),
    (
        "spec.validator.operatorKeyring.secret.secretName",
        "validate-operator-keyring, sidecar keyring mount",
    ),
    (
        "spec.validator.operatorKeyring.secret.keyName",
        "validate-operator-keyring <keyName>.info",
    ),
    (
        "spec.validator.operatorKeyring.secret.passphraseSecretRef.secretName",
        "validate-operator-keyring, SEI_KEYRING_PASSPHRASE",
    ),
    (
        "spec.validator.operatorKeyring.secret.passphraseSecretRef.key",
        "SEI_KEYRING_PASSPHRASE key",
    ),
    ("spec.replicas", "number of child SeiNodes"),
    ("spec.template.metadata.labels.team", "child SeiNode labels"),
    ("spec.template.spec.chainId", "child spec"),
    ("spec.template.spec.image", "child spec; fleet-rollout"),
    (
        "spec.template.spec.peers[].label.selector.sei.io/role",
        "child spec peers",
    ),
    ("spec.template.spec.fullNode.snapshot.stateSync", "child spec"),
    ("spec.template.spec.fullNode.snapshot.rpcServers[]", "child spec"),
    ("spec.template.spec.validator", "child mode (ceremony member)"),
    ("spec.updateStrategy.type", "fleet-rollout (deployment_e2e)"),
    (
        "spec.updateStrategy.maxUnavailable",
        "fleet-rollout batch size (deployment_e2e)",
    ),
    (
        "spec.deletionPolicy",
        "deletion: Delete cascades, Retain orphans (deployment_e2e)",
    ),
    ("spec.genesis.chainId", "ceremony chain id"),
    ("spec.genesis.stakingAmount", "generate-gentx stakingAmount"),
    (
        "spec.genesis.accountBalance",
        "generate-gentx / assemble accountBalance",
    ),
    (
        "spec.genesis.accounts[].address",
        "assemble-and-upload-genesis accounts",
    ),
    (
        "spec.genesis.accounts[].balance",
        "assemble-and-upload-genesis accounts",
    ),
    (
        "spec.genesis.accounts[].vesting.amount",
        "assemble-and-upload-genesis accounts",
    ),
    (
        "spec.genesis.accounts[].vesting.endTime",
        "assemble-and-upload-genesis accounts",
    ),
    (
        "spec.genesis.accounts[].vesting.delayed",
        "assemble-and-upload-genesis accounts",
    ),
    (
        "spec.genesis.overrides.gov.params.voting_period",
        "assemble-and-upload-genesis overrides",
    ),
    (
        "spec.genesis.overrides.staking.params.max_validators",
        "assemble-and-upload-genesis overrides",
    ),
    ("spec.genesis.maxCeremonyDuration", "the ceremony plan's deadline"),
];

/// Every example manifest: (file, object).
fn examples() -> Vec<(String, Value)> {
    let root = sei_tests::workspace_root().join("examples");
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .chain(std::fs::read_dir(root.join("demo")).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(doc).unwrap();
            out.push((path.display().to_string(), value));
        }
    }
    assert!(out.len() >= 9, "{out:?}");
    out
}

/// The leaf paths of `v` (objects' keys joined with `.`, list items as `[]`); an empty object is a leaf.
fn leaves(prefix: &str, v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&p, v, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                leaves(&format!("{prefix}[]"), item, out);
            }
        }
        _ => {
            out.insert(prefix.to_owned());
        }
    }
}

#[test]
fn every_example_field_is_one_the_operator_uses() {
    let known: BTreeSet<&str> = FIELDS.iter().map(|(p, _)| *p).collect();
    let mut used = BTreeSet::new();
    for (file, doc) in examples() {
        let mut paths = BTreeSet::new();
        leaves("", &doc, &mut paths);
        for p in paths {
            if ["apiVersion", "kind", "metadata.name", "metadata.namespace"].contains(&p.as_str()) {
                continue;
            }
            assert!(
                known.contains(p.as_str()),
                "{file}: field {p} is not in FIELDS (what does it do?)"
            );
            used.insert(p);
        }
    }
    for p in known {
        assert!(
            used.contains(p),
            "FIELDS lists {p}, which no example sets any more"
        );
    }
}

async fn apply(ns: &sei_tests::TestNamespace, doc: &Value) {
    let mut doc = doc.clone();
    doc["metadata"]["namespace"] = Value::from(ns.name());
    let kind = doc["kind"].as_str().unwrap().to_owned();
    let plural = if kind == "SeiNode" {
        "seinodes"
    } else {
        "seinodedeployments"
    };
    let ar = ApiResource {
        group: "sei.io".into(),
        version: "v1alpha1".into(),
        api_version: "sei.io/v1alpha1".into(),
        kind,
        plural: plural.into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(ns.client(), ns.name(), &ar);
    let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
    let params = PatchParams::apply("examples-e2e").validation_strict();
    if let Err(e) = api.patch(&name, &params, &Patch::Apply(&doc)).await {
        panic!("the API server refused example {name}: {e}");
    }
}

/// The tasks of type `t` the simulator recorded in a node's view.
fn view_tasks(view: &Value, t: &str) -> Vec<Value> {
    view["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["type"] == t)
        .cloned()
        .collect()
}

/// Checks the effects of a SeiNode example's fields on what the sidecar was told, its StatefulSet and status.
async fn check_node_effects(ns: &str, sim: &Sim, node: &SeiNode, sts: &StatefulSet, doc: &Value) {
    let name = node.metadata.name.clone().unwrap();
    let spec = &doc["spec"];
    let view = sim.node(ns, &name).await;
    let overrides = &view["config"]["overrides"];
    let tasks = |t: &str| view_tasks(&view, t);
    let status = node.status.clone().unwrap();
    let pod = sts.spec.as_ref().unwrap().template.clone();
    let pod_labels = pod.metadata.unwrap().labels.unwrap();
    let pod = pod.spec.unwrap();
    let seid = pod.containers.iter().find(|c| c.name == "seid").unwrap();
    assert_eq!(seid.image.as_deref(), spec["image"].as_str(), "{name}: image");
    let genesis = tasks("configure-genesis");
    assert!(
        genesis.iter().all(|g| g["params"]["chainId"] == spec["chainId"]),
        "{name}: {genesis:?}"
    );
    if let Some(o) = spec["overrides"].as_object() {
        for (k, v) in o {
            assert_eq!(&overrides[k], v, "{name}: override {k}");
        }
    }
    if let Some(a) = spec["externalAddress"].as_str() {
        assert_eq!(overrides["network.p2p.external_address"], a, "{name}");
    }
    for source in spec["peers"].as_array().into_iter().flatten() {
        for addr in source["static"]["addresses"].as_array().into_iter().flatten() {
            assert!(
                status.resolved_peers.contains(&addr.as_str().unwrap().to_owned()),
                "{name}: {addr}"
            );
        }
        if source["label"]["selector"]["sei.io/role"] == "seed" {
            let seed_addr = "@seed-0.example.net:26656";
            assert!(
                status.resolved_peers.iter().any(|p| p.ends_with(seed_addr)),
                "{name}: {:?}",
                status.resolved_peers
            );
        }
    }
    if let Some(res) = spec["sidecar"]["resources"]["requests"].as_object() {
        let sidecar = pod
            .init_containers
            .iter()
            .flatten()
            .find(|c| c.name == "sei-sidecar")
            .unwrap();
        let got = sidecar.resources.as_ref().unwrap().requests.as_ref().unwrap();
        for (k, v) in res {
            assert_eq!(got[k].0, v.as_str().unwrap(), "{name}: sidecar {k}");
        }
    }
    check_mode_effects(&name, doc, &view, &status, &pod_labels);
}

/// The effects of the mode's fields (`spec.<mode>`) and the node's annotations.
fn check_mode_effects(
    name: &str,
    doc: &Value,
    view: &Value,
    status: &sei_crds::SeiNodeStatus,
    pod_labels: &std::collections::BTreeMap<String, String>,
) {
    let spec = &doc["spec"];
    let overrides = &view["config"]["overrides"];
    let tasks = |t: &str| view_tasks(view, t);
    let mode = ["fullNode", "archive", "replayer", "validator", "seed"]
        .into_iter()
        .find(|m| spec.get(*m).is_some())
        .unwrap();
    let m = &spec[mode];
    if let Some(keep) = m["snapshotGeneration"]["tendermint"]["keepRecent"].as_i64() {
        assert_eq!(
            overrides["storage.snapshot_keep_recent"],
            keep.to_string(),
            "{name}"
        );
    }
    if m["snapshotGeneration"]["tendermint"].get("publish").is_some() {
        assert_eq!(
            pod_labels.get("sei.io/snapshot-publish").map(String::as_str),
            Some("true"),
            "{name}"
        );
    }
    if doc["metadata"]["annotations"]["sei.io/dedicated-node"] == "true" {
        assert_eq!(
            pod_labels.get("sei.io/dedicated-node").map(String::as_str),
            Some("true"),
            "{name}"
        );
    }
    let snapshot = &m["snapshot"];
    if let Some(h) = snapshot["s3"]["targetHeight"].as_i64() {
        assert_eq!(
            tasks("snapshot-restore")[0]["params"]["targetHeight"],
            h,
            "{name}"
        );
    }
    if let Some(servers) = snapshot["rpcServers"].as_array() {
        let mut want: Vec<_> = servers.clone();
        want.sort_by_key(|s| s.as_str().unwrap().to_owned());
        assert_eq!(
            tasks("configure-state-sync")[0]["params"]["rpcServers"],
            Value::from(want),
            "{name}"
        );
    }
    if snapshot.get("trustPeriod").is_some() {
        assert!(
            tasks("configure-state-sync")[0]["params"]["trustPeriod"].is_string(),
            "{name}"
        );
    }
    if snapshot.get("bootstrapImage").is_some() {
        assert_eq!(
            tasks("config-apply").len(),
            2,
            "{name}: configured in the Job's pod, then the node's"
        );
    }
    if let Some(rpc) = m["resultExport"]["shadowResult"]["canonicalRpc"].as_str() {
        assert_eq!(tasks("result-export")[0]["params"]["canonicalRpc"], rpc, "{name}");
    }
    for (field, condition) in [
        ("signingKey", "SigningKeyReady"),
        ("nodeKey", "NodeKeyReady"),
        ("operatorKeyring", "OperatorKeyringReady"),
    ] {
        if m.get(field).is_some() {
            let c = status.condition(condition).unwrap();
            assert_eq!(c.status, "True", "{name}: {c:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_is_admitted_and_runs_to_running() {
    let Some(ns) = setup("e2e-examples").await else {
        return;
    };
    let started = std::time::Instant::now();
    let sim = Sim::start(Duration::from_millis(50), vec![]).await;
    let secrets = ns.api::<Secret>();
    // The Secrets the examples name (their comments say to create them first).
    for s in validator_key_secrets("val-1")
        .into_iter()
        .chain([node_key_secret("seed-0-node-key")])
    {
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    let _op = Operator::start(ns.env(), ns.name(), &sim, &[]);
    let docs = examples();
    for (_, doc) in &docs {
        apply(&ns, doc).await;
    }
    let nodes = ns.api::<SeiNode>();
    let fleets = ns.api::<SeiNodeDeployment>();
    let stss = ns.api::<StatefulSet>();
    for (file, doc) in &docs {
        let name = doc["metadata"]["name"].as_str().unwrap();
        if doc["kind"] == "SeiNode" {
            // A pod that asks for a dedicated Kubernetes node cannot be placed on the one-node local cluster
            // beside the others: its init runs every sidecar step and then waits for the pod (observe-image).
            let dedicated = doc["metadata"]["annotations"]["sei.io/dedicated-node"] == "true";
            let node = if dedicated {
                wait_node(&nodes, name, "all but observe-image done", WAIT, |n| {
                    common::plan_task(n, "observe-image")
                        .is_some_and(|t| t.pointer("/runs/0/state") == Some(&Value::from("Running")))
                })
                .await
            } else {
                wait_node(&nodes, name, "Running", WAIT, |n| in_phase("Running")(Some(n))).await
            };
            let sts = stss.get(name).await.unwrap();
            check_node_effects(ns.name(), &sim, &node, &sts, doc).await;
        } else {
            let fleet = eventually(&format!("{file}: {name} Ready"), WAIT, || async {
                let f = fleets.get_opt(name).await.ok().flatten()?;
                let phase = serde_json::to_value(f.status.as_ref()?.phase.as_ref()?).ok()?;
                (phase == "Ready").then_some(f)
            })
            .await;
            let replicas = doc["spec"]["replicas"].as_i64().unwrap();
            let children: Vec<_> = nodes
                .list(&kube::api::ListParams::default().labels(&format!("sei.io/nodedeployment={name}")))
                .await
                .unwrap()
                .items;
            assert_eq!(i64::try_from(children.len()).unwrap(), replicas, "{name}");
            if let Some(labels) = doc["spec"]["template"]["metadata"]["labels"].as_object() {
                for c in &children {
                    for (k, v) in labels {
                        assert_eq!(
                            c.metadata.labels.as_ref().unwrap().get(k).map(String::as_str),
                            v.as_str(),
                            "{k}"
                        );
                    }
                }
            }
            if doc["spec"].get("genesis").is_some() {
                assert!(
                    fleet.status.as_ref().unwrap().genesis_hash.is_some(),
                    "{name}: no genesisHash"
                );
            }
        }
    }
    eprintln!("examples_e2e took {:?}", started.elapsed());
}
