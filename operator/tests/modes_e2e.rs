//! End-to-end, every mode of a SeiNode on the local cluster (issue 13 item 7): a full node, an archive, a seed
//! and a validator with its keys, and a replayer that bootstraps through a Job (reference 4.5) and exports its
//! results, each reach Running, and the test asserts what each one's sidecar (the simulator) was told. The
//! state-sync node is `statesync_e2e`, two nodes peering by label `peers_e2e` (and the init config intent mode
//! by mode, `peers_e2e::init_config_carries_common_mode_and_user_overrides`). One namespace, one operator.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use sei_crds::SeiNode;
use serde_json::{Value, json};

use common::{
    Operator, Recorder, Sim, in_phase, node_key_secret, seinode, setup, validator_key_secrets, wait_node,
};

const WAIT: Duration = Duration::from_secs(180);
const STATIC_PEER: &str = "0123456789abcdef0123456789abcdef01234567@peer-0.example.net:26656";

fn specs() -> Vec<(&'static str, Value)> {
    let base = |mode: &str, settings: Value| {
        let mut spec = json!({"chainId": "atlantic-2", "image": "seid:v1"});
        spec[mode] = settings;
        spec
    };
    let mut full = base("fullNode", json!({}));
    full["externalAddress"] = json!("full.example.net:26656");
    let mut replay = base(
        "replayer",
        json!({
            "snapshot": {"s3": {"targetHeight": 100}, "bootstrapImage": "boot:v1",
                         "rpcServers": ["rpc-0.example.net:26657", "rpc-1.example.net:26657"]},
            "resultExport": {"shadowResult": {"canonicalRpc": "https://rpc.example.net"}},
        }),
    );
    replay["peers"] = json!([{"static": {"addresses": [STATIC_PEER]}}]);
    vec![
        ("full", full),
        (
            "archive",
            base(
                "archive",
                json!({"snapshotGeneration": {"tendermint": {"keepRecent": 3}}}),
            ),
        ),
        (
            "seed",
            base("seed", json!({"nodeKey": {"secret": {"secretName": "seed-key"}}})),
        ),
        (
            "val",
            base(
                "validator",
                json!({
                    "signingKey": {"secret": {"secretName": "val-signing"}},
                    "nodeKey": {"secret": {"secretName": "val-node-key"}},
                    "operatorKeyring": {"secret": {"secretName": "val-keyring",
                        "passphraseSecretRef": {"secretName": "val-keyring-pass", "key": "passphrase"}}},
                }),
            ),
        ),
        ("replay", replay),
    ]
}

fn condition(node: &SeiNode, t: &str) -> (String, String) {
    let c = node
        .status
        .as_ref()
        .unwrap()
        .condition(t)
        .unwrap_or_else(|| panic!("no {t}"));
    (c.status.clone(), c.reason.clone())
}

/// The replayer: a bootstrap Job ran the bootstrap image to the target height and was torn down before the
/// StatefulSet was created; the sidecar restored once (in the Job's pod), was configured twice (the Job's pod,
/// then the node's), and runs the result export.
async fn assert_replayer_bootstrapped_and_exports(ns: &sei_tests::TestNamespace, sim: &Sim, seen: &[Job]) {
    let job = seen
        .first()
        .unwrap_or_else(|| panic!("no bootstrap Job was created"));
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let seid = pod.containers.iter().find(|c| c.name == "seid").unwrap();
    assert_eq!(seid.image.as_deref(), Some("boot:v1"));
    assert!(
        seid.env
            .iter()
            .flatten()
            .any(|e| e.name == "HALT_HEIGHT" && e.value.as_deref() == Some("100"))
    );
    assert!(
        ns.api::<Job>()
            .get_opt("replay-bootstrap")
            .await
            .unwrap()
            .is_none(),
        "torn down"
    );
    let deleted_at = seen
        .iter()
        .find_map(|j| j.metadata.deletion_timestamp.clone())
        .unwrap();
    let sts = ns.api::<StatefulSet>().get("replay").await.unwrap();
    assert!(
        sts.metadata.creation_timestamp.unwrap().0 >= deleted_at.0,
        "the StatefulSet is created after the Job's teardown"
    );
    let of_type = |t: &'static str| {
        let ns = ns.name().to_owned();
        async move { sim.tasks_of_type(&ns, "replay", t).await }
    };
    let restores = of_type("snapshot-restore").await;
    assert_eq!(restores.len(), 1, "{restores:?}");
    assert_eq!(restores[0]["params"]["targetHeight"], 100);
    assert_eq!(of_type("configure-state-sync").await.len(), 1);
    assert_eq!(of_type("config-apply").await.len(), 2);
    assert_eq!(of_type("mark-ready").await.len(), 2);
    let export = of_type("result-export").await;
    assert_eq!(export.len(), 1, "{export:?}");
    assert_eq!(export[0]["params"]["canonicalRpc"], "https://rpc.example.net");
}

/// Keys: validated, with the reference's reasons.
fn assert_keys_validated(running: &std::collections::BTreeMap<&str, SeiNode>) {
    for t in ["SigningKeyReady", "NodeKeyReady", "OperatorKeyringReady"] {
        let want = format!("{}Validated", t.strip_suffix("Ready").unwrap());
        assert_eq!(
            condition(&running["val"], t),
            ("True".to_owned(), want),
            "val {t}"
        );
    }
    assert_eq!(
        condition(&running["seed"], "NodeKeyReady"),
        ("True".into(), "NodeKeyValidated".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_reaches_running_and_its_sidecar_is_told_its_config() {
    let Some(ns) = setup("e2e-modes").await else {
        return;
    };
    let started = std::time::Instant::now();
    let sim = Sim::start(Duration::from_millis(50), vec![]).await;
    let nodes = ns.api::<SeiNode>();
    let secrets = ns.api::<Secret>();
    for s in validator_key_secrets("val")
        .into_iter()
        .chain([node_key_secret("seed-key")])
    {
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    let jobs = Recorder::start(ns.api::<Job>(), "replay-bootstrap").await;
    let full_states = Recorder::start(nodes.clone(), "full").await;
    let _op = Operator::start(ns.env(), ns.name(), &sim, &[]);
    for (name, spec) in specs() {
        nodes
            .create(&PostParams::default(), &seinode(name, &spec))
            .await
            .unwrap();
    }
    let mut running = std::collections::BTreeMap::new();
    for (name, _) in specs() {
        let n = wait_node(&nodes, name, "Running", WAIT, |n| in_phase("Running")(Some(n))).await;
        running.insert(name, n);
    }
    eprintln!("every mode Running after {:?}", started.elapsed());

    // What each sidecar was told: config-apply's mode and the mode's overrides.
    let config = |name: &'static str| {
        let sim = &sim;
        let ns = ns.name().to_owned();
        async move { sim.node(&ns, name).await["config"].clone() }
    };
    for (name, mode) in [
        ("full", "full"),
        ("archive", "archive"),
        ("seed", "seed"),
        ("val", "validator"),
        ("replay", "full"),
    ] {
        assert_eq!(config(name).await["mode"], mode, "{name}");
    }
    assert_eq!(
        config("full").await["overrides"]["network.p2p.external_address"],
        "full.example.net:26656"
    );
    assert_eq!(
        config("archive").await["overrides"]["storage.snapshot_keep_recent"],
        "3"
    );
    let replay_config = config("replay").await;
    assert_eq!(
        replay_config["overrides"]["storage.state_commit.async_commit_buffer"],
        "100"
    );
    assert_eq!(
        replay_config["overrides"]["network.p2p.persistent_peers"],
        STATIC_PEER
    );

    // status.endpoint: full nodes and archives only, set in the write that made them Running.
    for name in ["full", "archive"] {
        let e = running[name]
            .status
            .as_ref()
            .unwrap()
            .endpoint
            .clone()
            .unwrap_or_else(|| panic!("{name}: no endpoint"));
        assert_eq!(
            e.evm_json_rpc.unwrap(),
            format!("http://{name}.{}.svc:8545", ns.name())
        );
        assert_eq!(
            e.tendermint_rpc.unwrap(),
            format!("http://{name}.{}.svc:26657", ns.name())
        );
    }
    for name in ["seed", "val", "replay"] {
        assert!(
            running[name].status.as_ref().unwrap().endpoint.is_none(),
            "{name}"
        );
    }
    let states = full_states.states();
    let first_running = states.iter().find(|n| in_phase("Running")(Some(n))).unwrap();
    assert!(
        first_running.status.as_ref().unwrap().endpoint.is_some(),
        "the endpoint is in the very status write that says Running: {first_running:?}"
    );

    assert_keys_validated(&running);
    assert_replayer_bootstrapped_and_exports(&ns, &sim, &jobs.states()).await;
    eprintln!("modes_e2e took {:?}", started.elapsed());
}
