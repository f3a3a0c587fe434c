//! End-to-end, nodes that join a network (issue 13): peer resolution into `status.resolvedPeers` from the
//! three sources (reference 3.3: `label` through the peers' sidecars, `static`, `ec2Tags` against a local EC2
//! endpoint, a `moto_server` this test starts), the peers reaching the node's config through workflows (the
//! init's `config-apply`, then `node-peers`), and the init config intent mode by mode (reference 2.4) as the
//! sidecar simulator recorded it. Each test runs in its own namespace against the local cluster.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kube::api::PostParams;
use sei_crds::SeiNode;
use serde_json::{Value, json};

use common::{Operator, Sim, in_phase, seinode, setup};

const WAIT: Duration = Duration::from_secs(120);
const STATIC_PEER: &str = "0123456789abcdef0123456789abcdef01234567@static-peer.example:26656";

fn resolved(node: &SeiNode) -> Vec<String> {
    node.status
        .as_ref()
        .map(|s| s.resolved_peers.clone())
        .unwrap_or_default()
}

/// The peers the `PeersConfigured` condition says are in the node's config.
fn configured(node: &SeiNode) -> Option<Vec<String>> {
    let c = node.status.as_ref()?.condition("PeersConfigured")?;
    let list = c.message.strip_prefix("persistent_peers = ")?;
    Some(if list.is_empty() {
        Vec::new()
    } else {
        list.split(',').map(str::to_owned).collect()
    })
}

/// [`common::wait_node`] with this file's timeout.
async fn wait_node(
    nodes: &kube::Api<SeiNode>,
    name: &str,
    what: &str,
    cond: impl Fn(&SeiNode) -> bool,
) -> SeiNode {
    common::wait_node(nodes, name, what, WAIT, cond).await
}

fn running(n: &SeiNode) -> bool {
    in_phase("Running")(Some(n))
}

fn in_cluster(id: &str, ns: &str, name: &str) -> String {
    format!("{id}@{name}-0.{name}.{ns}.svc.cluster.local:26656")
}

/// The simulator's record of the node's `config-apply` overrides.
async fn applied_overrides(sim: &Sim, ns: &str, name: &str) -> serde_json::Map<String, Value> {
    let view = sim.node(ns, name).await;
    view["config"]["overrides"]
        .as_object()
        .cloned()
        .unwrap_or_default()
}

/// Two full nodes selecting each other by label (one also with a static peer) see each other in
/// `status.resolvedPeers` (self excluded, sorted), and each node's config gets its list: the peer ids are known
/// only once the peer's sidecar has a node key, so `node-peers` patches `persistent-peers` on the Running node,
/// then records `status.configuredPeers`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_and_static_peers_resolve_and_reach_the_config() {
    let Some(ns) = setup("e2e-peers").await else {
        return;
    };
    let sim = Sim::start(Duration::from_millis(50), vec![]).await;
    let nodes = ns.api::<SeiNode>();
    let _op = Operator::start(ns.env(), ns.name(), &sim, &[]);
    let spec = |extra: Value| {
        let mut peers = vec![json!({"label": {"selector": {"sei.io/test-group": "g1"}}})];
        if !extra.is_null() {
            peers.push(extra);
        }
        json!({"chainId": "atlantic-2", "image": "seid:v1", "fullNode": {}, "peers": peers})
    };
    for (name, extra) in [
        ("alpha", json!({"static": {"addresses": [STATIC_PEER]}})),
        ("beta", Value::Null),
    ] {
        let mut node = seinode(name, &spec(extra));
        node.metadata.labels = Some([("sei.io/test-group".to_owned(), "g1".to_owned())].into());
        nodes.create(&PostParams::default(), &node).await.unwrap();
    }
    for name in ["alpha", "beta"] {
        wait_node(&nodes, name, "Running", running).await;
    }
    let id = |v: Value| v["nodeId"].as_str().unwrap().to_owned();
    let alpha_id = id(sim.node(ns.name(), "alpha").await);
    let beta_id = id(sim.node(ns.name(), "beta").await);
    let mut want_alpha = vec![in_cluster(&beta_id, ns.name(), "beta"), STATIC_PEER.to_owned()];
    want_alpha.sort();
    let want_beta = vec![in_cluster(&alpha_id, ns.name(), "alpha")];
    for (name, want) in [("alpha", &want_alpha), ("beta", &want_beta)] {
        let what = format!("resolvedPeers and PeersConfigured {want:?}");
        let node = wait_node(&nodes, name, &what, |n| {
            &resolved(n) == want && configured(n).as_ref() == Some(want)
        })
        .await;
        assert_eq!(node.status.as_ref().unwrap().phase.unwrap().as_str(), "Running");
    }
    // What each sidecar was told: init's config-apply had the list resolved then (maybe partial), and the
    // last patch of persistent-peers is the full list.
    for (name, want) in [("alpha", &want_alpha), ("beta", &want_beta)] {
        let overrides = applied_overrides(&sim, ns.name(), name).await;
        assert_eq!(overrides["logging.level"], "error", "{name}: {overrides:?}");
        assert!(
            overrides.contains_key("network.p2p.persistent_peers"),
            "{name}: {overrides:?}"
        );
        let view = sim.node(ns.name(), name).await;
        let init_peers = overrides["network.p2p.persistent_peers"]
            .as_str()
            .unwrap()
            .to_owned();
        let last_patch = view["configPatches"].as_array().and_then(|p| p.last()).map(|p| {
            p["config.toml"]["p2p"]["persistent-peers"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        });
        let in_config = last_patch.unwrap_or(init_peers);
        assert_eq!(
            in_config,
            want.join(","),
            "{name}: the config's persistent peers; sidecar view {view}"
        );
    }
}

/// The init config intent per mode (reference 2.4): common settings, then the mode's overrides, then
/// `spec.overrides` (which win, also over `logging.level`), as the simulator recorded `config-apply`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)] // one node per mode, each checked in turn
async fn init_config_carries_common_mode_and_user_overrides() {
    let Some(ns) = setup("e2e-initcfg").await else {
        return;
    };
    let sim = Sim::start(Duration::from_millis(50), vec![]).await;
    let nodes = ns.api::<SeiNode>();
    let _op = Operator::start(ns.env(), ns.name(), &sim, &[]);
    let specs = [
        (
            "full",
            json!({"chainId": "atlantic-2", "image": "seid:v1", "externalAddress": "full.example:26656",
                   "peers": [{"static": {"addresses": [STATIC_PEER]}}],
                   "overrides": {"logging.level": "debug"},
                   "fullNode": {"snapshotGeneration": {"tendermint": {"keepRecent": 5}}}}),
        ),
        (
            "archive",
            json!({"chainId": "atlantic-2", "image": "seid:v1",
                   "archive": {"snapshotGeneration": {"tendermint": {"keepRecent": 3}}}}),
        ),
        (
            "replayer",
            json!({"chainId": "atlantic-2", "image": "seid:v1",
                   "peers": [{"static": {"addresses": [STATIC_PEER]}}],
                   "replayer": {"snapshot": {"s3": {"targetHeight": 100},
                                             "rpcServers": ["rpc-a:26657", "rpc-b:26657"]}}}),
        ),
        (
            "plain",
            json!({"chainId": "atlantic-2", "image": "seid:v1", "fullNode": {}}),
        ),
    ];
    for (name, spec) in &specs {
        nodes
            .create(&PostParams::default(), &seinode(name, spec))
            .await
            .unwrap();
    }
    for (name, _) in &specs {
        wait_node(&nodes, name, "Running", running).await;
    }
    let s = |v: &str| json!(v);
    let got = |m: &serde_json::Map<String, Value>, k: &str| m.get(k).cloned().unwrap_or(Value::Null);

    let full = applied_overrides(&sim, ns.name(), "full").await;
    assert_eq!(sim.node(ns.name(), "full").await["config"]["mode"], "full");
    assert_eq!(
        got(&full, "logging.level"),
        s("debug"),
        "spec.overrides win: {full:?}"
    );
    assert_eq!(
        got(&full, "network.p2p.persistent_peers"),
        s(STATIC_PEER),
        "{full:?}"
    );
    assert_eq!(
        got(&full, "network.p2p.external_address"),
        s("full.example:26656"),
        "{full:?}"
    );
    for (k, v) in [
        ("storage.snapshot_interval", "2000"),
        ("storage.snapshot_keep_recent", "5"),
        ("storage.pruning_keep_recent", "50000"),
        ("storage.pruning_keep_every", "0"),
        ("chain.min_retain_blocks", "50000"),
        ("network.p2p.max_connections", "500"),
        ("network.p2p.send_rate", "20971520"),
        ("network.p2p.recv_rate", "20971520"),
    ] {
        assert_eq!(got(&full, k), s(v), "full node {k}: {full:?}");
    }

    let archive = applied_overrides(&sim, ns.name(), "archive").await;
    assert_eq!(sim.node(ns.name(), "archive").await["config"]["mode"], "archive");
    assert_eq!(got(&archive, "logging.level"), s("error"));
    assert_eq!(
        got(&archive, "storage.snapshot_interval"),
        s("2000"),
        "{archive:?}"
    );
    assert_eq!(
        got(&archive, "storage.snapshot_keep_recent"),
        s("3"),
        "{archive:?}"
    );
    assert!(
        !archive.contains_key("network.p2p.external_address"),
        "{archive:?}"
    );
    assert!(!archive.contains_key("chain.min_retain_blocks"), "{archive:?}");

    let replayer = applied_overrides(&sim, ns.name(), "replayer").await;
    assert_eq!(sim.node(ns.name(), "replayer").await["config"]["mode"], "full");
    assert_eq!(got(&replayer, "network.p2p.persistent_peers"), s(STATIC_PEER));
    for (k, v) in [
        ("storage.state_commit.async_commit_buffer", "100"),
        ("storage.state_commit.memiavl.snapshot_keep_recent", "2"),
        ("storage.state_commit.memiavl.snapshot_min_time_interval", "3600"),
    ] {
        assert_eq!(got(&replayer, k), s(v), "replayer {k}: {replayer:?}");
    }

    let plain = applied_overrides(&sim, ns.name(), "plain").await;
    assert_eq!(
        plain,
        serde_json::Map::from_iter([
            ("logging.level".to_owned(), s("error")),
            ("network.p2p.persistent_peers".to_owned(), s("")),
        ]),
        "a plain full node gets the common settings only"
    );
}

// ---- EC2 on a local moto server ----

/// A `moto_server` on a free 127.0.0.1 port, killed when dropped.
struct Moto {
    child: Child,
    url: String,
}

impl Moto {
    /// `None` (with a message) when `moto_server` is not installed, outside CI; in CI its absence fails.
    fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = match Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("SKIPPED: moto_server is not installed ({e}); pip install 'moto[server]'");
                return None;
            }
            Err(e) => panic!("moto_server is required in CI (pip install 'moto[server]'): {e}"),
        };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "moto_server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(Self { child, url })
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Runs one instance tagged `tags` (through moto's EC2 API, with python's boto3) and returns its private
    /// IP (moto gives no public address to an instance outside a default-VPC public subnet).
    fn run_instance(&self, tags: &[(&str, &str)]) -> String {
        let tag_list: Vec<Value> = tags.iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect();
        let script = format!(
            "import boto3, json\n\
             ec2 = boto3.client('ec2', region_name='us-east-2', endpoint_url='{}',\n\
                                aws_access_key_id='test', aws_secret_access_key='test')\n\
             r = ec2.run_instances(ImageId='ami-12c6146b', MinCount=1, MaxCount=1,\n\
                 TagSpecifications=[{{'ResourceType': 'instance', 'Tags': json.loads('{}')}}])\n\
             i = r['Instances'][0]\n\
             print(i.get('PublicDnsName') or i.get('PublicIpAddress') or i.get('PrivateDnsName') or i['PrivateIpAddress'])\n",
            self.url,
            Value::Array(tag_list)
        );
        let out = Command::new("python3").args(["-c", &script]).output().unwrap();
        assert!(
            out.status.success(),
            "boto3: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `ec2Tags` against a local EC2 endpoint: running instances carrying the tags (and a valid `sei.io/node-id`)
/// become peers, others do not; when the endpoint fails the prior list is kept, never shrunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec2_tag_peers_resolve_against_a_local_endpoint_and_survive_its_outage() {
    let Some(mut moto) = Moto::start() else {
        return;
    };
    let Some(ns) = setup("e2e-ec2peers").await else {
        return;
    };
    let id_a = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let id_b = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    let host_a = moto.run_instance(&[("sei.io/chain", "pacific-1"), ("sei.io/node-id", id_a)]);
    let host_b = moto.run_instance(&[
        ("sei.io/chain", "pacific-1"),
        ("sei.io/node-id", id_b),
        ("sei.io/p2p-port", "26666"),
    ]);
    // Other chain; and one without a node id: neither is a peer.
    moto.run_instance(&[
        ("sei.io/chain", "arctic-1"),
        ("sei.io/node-id", "cccccccccccccccccccccccccccccccccccccccc"),
    ]);
    moto.run_instance(&[("sei.io/chain", "pacific-1")]);

    let sim = Sim::start(Duration::from_millis(50), vec![]).await;
    let nodes = ns.api::<SeiNode>();
    let _op = Operator::start(
        ns.env(),
        ns.name(),
        &sim,
        &[
            ("SEI_EC2_ENDPOINT", &moto.url),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
    );
    let spec = json!({"chainId": "pacific-1", "image": "seid:v1", "fullNode": {},
                      "peers": [{"ec2Tags": {"region": "us-east-2", "tags": {"sei.io/chain": "pacific-1"}}}]});
    nodes
        .create(&PostParams::default(), &seinode("ec2", &spec))
        .await
        .unwrap();
    let mut want = vec![format!("{id_a}@{host_a}:26656"), format!("{id_b}@{host_b}:26666")];
    want.sort();
    let node = wait_node(
        &nodes,
        "ec2",
        &format!("Running with resolvedPeers {want:?}"),
        |n| resolved(n) == want && running(n),
    )
    .await;
    assert_eq!(
        configured(&node).as_ref(),
        Some(&want),
        "init configured the EC2 peers"
    );
    assert_eq!(
        applied_overrides(&sim, ns.name(), "ec2").await["network.p2p.persistent_peers"],
        json!(want.join(","))
    );

    // The endpoint goes away: the next resolutions fail, and the list stays as it was.
    moto.stop();
    // Longer than two peer retries (5s each) after the endpoint went.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let node = nodes.get("ec2").await.unwrap();
    assert_eq!(resolved(&node), want, "an EC2 outage keeps the prior peers");
    assert!(running(&node), "the node stays Running");
}
