//! Resource generator rules (reference section 4 and section 10 items 33-39) and golden snapshots.
//!
//! Goldens live in `tests/golden/<case>.yaml` (StatefulSet, Service, PVC and, with kube-rbac-proxy, its
//! ConfigMap). Regenerate after an intended change with
//! `SEI_UPDATE_GOLDEN=1 cargo test -p sei-tasks --test resources` and review the diff.

// Fixture helpers outside #[test] functions unwrap too: a broken fixture should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVar, EnvVarSource, PodSpec, Probe, SecretEnvSource, SecretKeySelector,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sei_crds::{Mode, SeiNode, labels};
use sei_tasks::platform::PlatformConfig;
use sei_tasks::resources::{
    self, COSMOS_EXPORTER, DATA_DIR, RBAC_PROXY, RenderError, SEID, SEID_INIT, SIDECAR, data_pvc,
    headless_service, rbac_proxy_config_map, resource_labels, statefulset,
};

// ---------------------------------------------------------------------------------------------------------
// fixtures

const NS: &str = "sei";
const UID: &str = "6f1c7a52-0d4e-4b7e-9a1f-3c2b1a0e9d11";

/// A platform like production: every optional setting set (node pools, toleration, service account, storage
/// classes, buckets, kube-rbac-proxy and cosmos-exporter), read through the YAML file path.
fn full_config() -> PlatformConfig {
    let file = r"
scheduling:
  nodepoolName: sei-node
  nodepoolArchive: sei-archive
  nodepoolValidator: sei-validator
  nodepoolSeed: sei-seed
  tolerationKey: sei.io/workload
  serviceAccount: seid-node
storage:
  classPerf: gp3-10k-750
  classDefault: gp3
  classArchive: gp3-archive
snapshot: {bucket: sei-snapshots, region: us-east-2}
genesis: {bucket: sei-genesis, region: us-east-2}
images:
  sidecar: ghcr.io/sei-protocol/seictl:v0.0.68
  kubeRBACProxy: quay.io/brancz/kube-rbac-proxy:v0.18.2
  cosmosExporter: ghcr.io/sei-protocol/sei-cosmos-exporter:v0.3.0
";
    PlatformConfig::from_sources(|_| None, Some(file)).expect("the test platform config is valid")
}

/// The local test cluster: nothing configured.
fn local_config() -> PlatformConfig {
    PlatformConfig::default()
}

/// A SeiNode from YAML, placed in namespace `sei` with a uid.
fn node(yaml: &str) -> SeiNode {
    let mut node: SeiNode = serde_yaml::from_str(yaml).expect("fixture parses");
    node.metadata.namespace.get_or_insert_with(|| NS.to_owned());
    node.metadata.uid.get_or_insert_with(|| UID.to_owned());
    node
}

const FULL_NODE: &str = r"
apiVersion: sei.io/v1alpha1
kind: SeiNode
metadata: {name: rpc-0}
spec:
  chainId: atlantic-2
  image: ghcr.io/sei-protocol/sei:v6.1.0
  podLabels: {team: rpc, sei.io/node: not-this}
  sidecar:
    port: 7777
    resources:
      requests: {cpu: 100m, memory: 128Mi}
  fullNode:
    snapshot:
      s3: {targetHeight: 150000000}
    snapshotGeneration:
      tendermint: {keepRecent: 2}
";

const ARCHIVE: &str = r"
apiVersion: sei.io/v1alpha1
kind: SeiNode
metadata: {name: archive-0}
spec:
  chainId: atlantic-2
  image: ghcr.io/sei-protocol/sei:v6.1.0
  archive:
    snapshotGeneration:
      tendermint:
        keepRecent: 3
        publish: {}
";

const REPLAYER: &str = r"
apiVersion: sei.io/v1alpha1
kind: SeiNode
metadata: {name: replayer-0}
spec:
  chainId: pacific-1
  image: ghcr.io/sei-protocol/sei:v6.1.0
  peers:
    - static: {addresses: [89abcdef0123456789abcdef0123456789abcdef@seed-0.example.net:26656]}
  replayer:
    snapshot:
      s3: {targetHeight: 150000000}
";

const VALIDATOR: &str = r"
apiVersion: sei.io/v1alpha1
kind: SeiNode
metadata: {name: validator-0}
spec:
  chainId: atlantic-2
  image: ghcr.io/sei-protocol/sei:v6.1.0
  validator:
    snapshot:
      stateSync: {}
      rpcServers: [rpc-0.example.net:26657, rpc-1.example.net:26657]
";

const VALIDATOR_KEYS: &str = r#"
apiVersion: sei.io/v1alpha1
kind: SeiNode
metadata:
  name: validator-1
  annotations: {sei.io/dedicated-node: "true"}
spec:
  chainId: atlantic-2
  image: ghcr.io/sei-protocol/sei:v6.1.0
  validator:
    signingKey: {secret: {secretName: val-1-signing}}
    nodeKey: {secret: {secretName: val-1-node-key}}
    operatorKeyring:
      secret:
        secretName: val-1-keyring
        keyName: node_admin
        passphraseSecretRef: {secretName: val-1-keyring-pass, key: passphrase}
"#;

const SEED: &str = r"
apiVersion: sei.io/v1alpha1
kind: SeiNode
metadata: {name: seed-0}
spec:
  chainId: atlantic-2
  image: ghcr.io/sei-protocol/sei:v6.1.0
  externalAddress: seed-0.example.net:26656
  seed:
    nodeKey: {secret: {secretName: seed-0-node-key}}
";

fn paused(yaml: &str) -> SeiNode {
    let mut n = node(yaml);
    n.spec.paused = true;
    n
}

fn sts(node: &SeiNode, cfg: &PlatformConfig) -> StatefulSet {
    statefulset(node, cfg).expect("renders")
}

fn pod(sts: &StatefulSet) -> &PodSpec {
    sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

fn pod_mut(sts: &mut StatefulSet) -> &mut PodSpec {
    sts.spec.as_mut().unwrap().template.spec.as_mut().unwrap()
}

fn all_containers(pod: &PodSpec) -> Vec<&Container> {
    pod.init_containers
        .iter()
        .flatten()
        .chain(&pod.containers)
        .collect()
}

fn container<'a>(pod: &'a PodSpec, name: &str) -> &'a Container {
    all_containers(pod)
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn names(containers: &[Container]) -> Vec<&str> {
    containers.iter().map(|c| c.name.as_str()).collect()
}

fn env_value<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_deref())
}

fn mount<'a>(c: &'a Container, volume: &str) -> Option<&'a VolumeMount> {
    c.volume_mounts.iter().flatten().find(|m| m.name == volume)
}

fn probe_port(p: &Probe) -> i32 {
    match p
        .http_get
        .as_ref()
        .map(|h| &h.port)
        .or(p.tcp_socket.as_ref().map(|t| &t.port))
    {
        Some(IntOrString::Int(n)) => *n,
        other => panic!("unexpected probe port {other:?}"),
    }
}

fn q(s: &str) -> Quantity {
    Quantity(s.to_owned())
}

// ---------------------------------------------------------------------------------------------------------
// golden snapshots

fn golden(case: &str, node: &SeiNode, cfg: &PlatformConfig) {
    let mut docs = vec![
        serde_yaml::to_string(&sts(node, cfg)).unwrap(),
        serde_yaml::to_string(&headless_service(node, cfg).unwrap()).unwrap(),
    ];
    if node.spec.imported_pvc().is_none() {
        docs.push(serde_yaml::to_string(&data_pvc(node, cfg).unwrap()).unwrap());
    }
    if let Some(cm) = rbac_proxy_config_map(node, cfg).unwrap() {
        docs.push(serde_yaml::to_string(&cm).unwrap());
    }
    let actual = format!(
        "# Golden output of the sei-tasks resource generators; regenerate with SEI_UPDATE_GOLDEN=1.\n{}",
        docs.join("---\n")
    );
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{case}.yaml"));
    if std::env::var_os("SEI_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let hint = "run `SEI_UPDATE_GOLDEN=1 cargo test -p sei-tasks --test resources` and review the diff";
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("golden {} unreadable ({e}); {hint}", path.display()));
    if expected != actual {
        let want: Vec<&str> = expected.lines().collect();
        let got: Vec<&str> = actual.lines().collect();
        let line = (0..want.len().max(got.len()))
            .find(|i| want.get(*i) != got.get(*i))
            .unwrap_or_default();
        let want = want.get(line).copied().unwrap_or("<end of file>");
        let got = got.get(line).copied().unwrap_or("<end of output>");
        panic!(
            "golden {} differs at line {}:\n  expected: {want}\n  actual:   {got}\n{hint}",
            path.display(),
            line + 1
        );
    }
}

#[test]
fn golden_full_node() {
    golden("fullnode", &node(FULL_NODE), &full_config());
}

#[test]
fn golden_archive() {
    golden("archive", &node(ARCHIVE), &full_config());
}

#[test]
fn golden_replayer() {
    golden("replayer", &node(REPLAYER), &full_config());
}

#[test]
fn golden_validator() {
    golden("validator", &node(VALIDATOR), &full_config());
}

#[test]
fn golden_validator_with_keys() {
    golden("validator-keys", &node(VALIDATOR_KEYS), &full_config());
}

#[test]
fn golden_seed() {
    golden("seed", &node(SEED), &full_config());
}

#[test]
fn golden_paused_full_node() {
    golden("paused", &paused(FULL_NODE), &full_config());
}

#[test]
fn golden_full_node_on_the_local_cluster() {
    golden("fullnode-local", &node(FULL_NODE), &local_config());
}

#[test]
fn golden_validator_with_keys_on_the_local_cluster() {
    golden("validator-keys-local", &node(VALIDATOR_KEYS), &local_config());
}

// ---------------------------------------------------------------------------------------------------------
// StatefulSet shape (item 33)

#[test]
fn statefulset_has_one_replica_and_none_when_paused() {
    let cfg = full_config();
    assert_eq!(sts(&node(FULL_NODE), &cfg).spec.unwrap().replicas, Some(1));
    assert_eq!(sts(&paused(FULL_NODE), &cfg).spec.unwrap().replicas, Some(0));
}

#[test]
fn statefulset_is_on_delete_selects_only_the_node_label_and_has_no_claim_templates() {
    let s = sts(&node(FULL_NODE), &full_config());
    let spec = s.spec.as_ref().unwrap();
    assert_eq!(
        spec.update_strategy.as_ref().unwrap().type_.as_deref(),
        Some("OnDelete")
    );
    assert_eq!(spec.service_name.as_deref(), Some("rpc-0"));
    assert_eq!(
        spec.selector.match_labels,
        Some(BTreeMap::from([(labels::NODE.to_owned(), "rpc-0".to_owned())]))
    );
    assert!(spec.volume_claim_templates.is_none());
    let meta = spec.template.metadata.as_ref().unwrap();
    assert_eq!(
        meta.annotations.as_ref().unwrap()[labels::KARPENTER_DO_NOT_DISRUPT],
        "true"
    );
    assert_eq!(meta.labels, Some(resource_labels(&node(FULL_NODE))));
    assert_eq!(s.metadata.namespace.as_deref(), Some(NS));
}

#[test]
fn containers_come_in_the_reference_order_with_native_sidecars() {
    let s = sts(&node(FULL_NODE), &full_config());
    let pod = pod(&s);
    let init = pod.init_containers.as_ref().unwrap();
    assert_eq!(names(init), [SEID_INIT, SIDECAR, RBAC_PROXY]);
    assert_eq!(init[0].restart_policy, None);
    assert_eq!(init[1].restart_policy.as_deref(), Some("Always"));
    assert_eq!(init[2].restart_policy.as_deref(), Some("Always"));
    assert_eq!(names(&pod.containers), [SEID, COSMOS_EXPORTER]);
    assert_eq!(
        init[1].command,
        Some(vec!["seictl".to_owned(), "serve".to_owned()])
    );
}

#[test]
fn seeds_never_get_cosmos_exporter_and_unconfigured_images_render_nothing() {
    let s = sts(&node(SEED), &full_config());
    assert_eq!(names(&pod(&s).containers), [SEID]);
    let s = sts(&node(FULL_NODE), &local_config());
    assert_eq!(
        names(pod(&s).init_containers.as_ref().unwrap()),
        [SEID_INIT, SIDECAR]
    );
    assert_eq!(names(&pod(&s).containers), [SEID]);
    let volumes: Vec<_> = pod(&s)
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(volumes, ["data", "home", "sidecar-tmp"]);
}

#[test]
fn sidecar_image_comes_from_the_spec_or_the_platform() {
    let cfg = full_config();
    let s = sts(&node(FULL_NODE), &cfg);
    assert_eq!(
        container(pod(&s), SIDECAR).image.as_deref(),
        Some("ghcr.io/sei-protocol/seictl:v0.0.68")
    );
    let mut n = node(FULL_NODE);
    n.spec.sidecar.as_mut().unwrap().image = Some("example.com/seictl:dev".to_owned());
    let s = sts(&n, &cfg);
    assert_eq!(
        container(pod(&s), SIDECAR).image.as_deref(),
        Some("example.com/seictl:dev")
    );
    assert_eq!(
        container(pod(&s), SEID).image.as_deref(),
        Some("ghcr.io/sei-protocol/sei:v6.1.0")
    );
    assert_eq!(
        container(pod(&s), SEID_INIT).image.as_deref(),
        Some("ghcr.io/sei-protocol/sei:v6.1.0")
    );
}

#[test]
fn sidecar_env_carries_the_contract_and_configured_buckets_only() {
    let s = sts(&node(FULL_NODE), &full_config());
    let c = container(pod(&s), SIDECAR);
    for (name, value) in [
        ("SEI_CHAIN_ID", "atlantic-2"),
        ("SEI_SIDECAR_PORT", "7777"),
        ("SEI_HOME", DATA_DIR),
        ("HOME", "/home/nonroot"),
        ("SEI_GENESIS_BUCKET", "sei-genesis"),
        ("SEI_GENESIS_REGION", "us-east-2"),
        ("SEI_SNAPSHOT_BUCKET", "sei-snapshots"),
        ("SEI_SNAPSHOT_REGION", "us-east-2"),
        ("SEI_SIDECAR_AUTHN_MODE", "trusted-header"),
    ] {
        assert_eq!(env_value(c, name), Some(value), "{name}");
    }
    assert_eq!(
        env_value(c, "SEI_KEYRING_BACKEND"),
        None,
        "keyring env is for validators only"
    );

    let s = sts(&node(FULL_NODE), &local_config());
    let c = container(pod(&s), SIDECAR);
    assert_eq!(env_value(c, "SEI_GENESIS_BUCKET"), None);
    assert_eq!(env_value(c, "SEI_SNAPSHOT_REGION"), None);
    assert_eq!(
        env_value(c, "SEI_SIDECAR_AUTHN_MODE"),
        Some("unauthenticated"),
        "without the proxy the sidecar must listen on the pod IP"
    );
}

#[test]
fn sidecar_gets_the_spec_resources_and_its_own_port() {
    let mut n = node(FULL_NODE);
    n.spec.sidecar.as_mut().unwrap().port = 7788;
    let s = sts(&n, &full_config());
    let c = container(pod(&s), SIDECAR);
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 7788);
    assert_eq!(env_value(c, "SEI_SIDECAR_PORT"), Some("7788"));
    assert_eq!(
        c.resources.as_ref().unwrap().requests.as_ref().unwrap()["memory"],
        q("128Mi")
    );
    let proxy = container(pod(&s), RBAC_PROXY);
    assert!(
        proxy
            .args
            .iter()
            .flatten()
            .any(|a| a == "--upstream=http://127.0.0.1:7788/")
    );
    assert_eq!(env_value(container(pod(&s), SEID), "SIDECAR_PORT"), Some("7788"));
}

// ---------------------------------------------------------------------------------------------------------
// seid gate and probes (item 34)

#[test]
fn seid_waits_for_the_sidecar_healthz_then_execs_seid_start() {
    let s = sts(&node(FULL_NODE), &full_config());
    let seid = container(pod(&s), SEID);
    assert_eq!(seid.command, Some(vec!["/bin/bash".to_owned(), "-c".to_owned()]));
    let script = &seid.args.as_ref().unwrap()[0];
    assert!(script.contains("/dev/tcp/127.0.0.1/$SIDECAR_PORT"));
    assert!(script.contains("GET /v0/healthz HTTP/1.0"));
    assert!(script.contains("sleep 5"));
    assert!(
        script
            .trim_end()
            .ends_with("exec seid start --home \"$SEI_HOME\"")
    );
    assert_eq!(env_value(seid, "SEI_HOME"), Some(DATA_DIR));
    assert_eq!(env_value(seid, "TMPDIR"), Some("/home/nonroot/.sei/tmp"));
    let ports: Vec<i32> = seid.ports.iter().flatten().map(|p| p.container_port).collect();
    assert_eq!(ports, [8545, 8546, 9090, 1317, 26656, 26657, 26660]);
}

#[test]
fn seid_probes_gate_on_healthz_and_read_lag_status_without_liveness() {
    let s = sts(&node(FULL_NODE), &full_config());
    let seid = container(pod(&s), SEID);
    let startup = seid.startup_probe.as_ref().unwrap();
    assert_eq!(
        startup.http_get.as_ref().unwrap().path.as_deref(),
        Some("/v0/healthz")
    );
    assert_eq!(probe_port(startup), 8443);
    assert_eq!(startup.failure_threshold, Some(86_400));
    assert_eq!(startup.period_seconds, Some(5));
    let readiness = seid.readiness_probe.as_ref().unwrap();
    assert_eq!(
        readiness.http_get.as_ref().unwrap().path.as_deref(),
        Some("/lag_status")
    );
    assert_eq!(probe_port(readiness), 26657);
    assert_eq!(
        (
            readiness.initial_delay_seconds,
            readiness.period_seconds,
            readiness.failure_threshold,
            readiness.timeout_seconds
        ),
        (Some(30), Some(10), Some(3), Some(5))
    );
    assert!(seid.liveness_probe.is_none());
}

#[test]
fn without_the_proxy_seid_gates_on_the_sidecar_port() {
    let s = sts(&node(FULL_NODE), &local_config());
    assert_eq!(
        probe_port(container(pod(&s), SEID).startup_probe.as_ref().unwrap()),
        7777
    );
}

#[test]
fn seed_readiness_is_tcp_on_p2p() {
    let s = sts(&node(SEED), &full_config());
    let readiness = container(pod(&s), SEID).readiness_probe.clone().unwrap();
    assert!(readiness.http_get.is_none());
    assert_eq!(probe_port(&readiness), 26656);
}

#[test]
fn probe_contract_refuses_liveness_and_rpc_startup_probes() {
    let n = node(FULL_NODE);
    let mut s = sts(&n, &full_config());
    let seid = pod_mut(&mut s)
        .containers
        .iter_mut()
        .find(|c| c.name == SEID)
        .unwrap();
    seid.liveness_probe = seid.readiness_probe.clone();
    let err = resources::check_probe_contract(&n, pod(&s)).unwrap_err();
    assert!(
        err.to_string().contains("must not have a liveness probe"),
        "{err}"
    );

    let mut s = sts(&n, &full_config());
    let seid = pod_mut(&mut s)
        .containers
        .iter_mut()
        .find(|c| c.name == SEID)
        .unwrap();
    seid.startup_probe = seid.readiness_probe.clone();
    let err = resources::check_probe_contract(&n, pod(&s)).unwrap_err();
    assert!(matches!(err, RenderError::ProbeContract { .. }));
    assert!(err.to_string().contains("port 26657"), "{err}");

    let seed_node = node(SEED);
    let mut s = sts(&seed_node, &full_config());
    let seid = pod_mut(&mut s)
        .containers
        .iter_mut()
        .find(|c| c.name == SEID)
        .unwrap();
    seid.readiness_probe = Some(Probe {
        tcp_socket: Some(k8s_openapi::api::core::v1::TCPSocketAction {
            port: IntOrString::String("grpc".to_owned()),
            host: None,
        }),
        ..Probe::default()
    });
    let err = resources::check_probe_contract(&seed_node, pod(&s)).unwrap_err();
    assert!(err.to_string().contains("a seed serves no RPC"), "{err}");
    assert!(err.to_string().contains("9090"), "named ports resolve: {err}");
}

#[test]
fn proxy_and_exporter_probes_follow_the_reference() {
    let s = sts(&node(FULL_NODE), &full_config());
    let proxy = container(pod(&s), RBAC_PROXY);
    assert_eq!(probe_port(proxy.startup_probe.as_ref().unwrap()), 8443);
    assert_eq!(proxy.startup_probe.as_ref().unwrap().failure_threshold, Some(60));
    assert_eq!(
        proxy
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/v0/livez")
    );
    assert_eq!(
        proxy
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/v0/healthz")
    );
    let exporter = container(pod(&s), COSMOS_EXPORTER);
    assert_eq!(probe_port(exporter.readiness_probe.as_ref().unwrap()), 9300);
    assert_eq!(
        exporter.liveness_probe.as_ref().unwrap().initial_delay_seconds,
        Some(600)
    );
}

// ---------------------------------------------------------------------------------------------------------
// scheduling (item 35)

#[test]
fn each_mode_is_pinned_to_its_node_pool_and_tolerates_its_taint() {
    let cfg = full_config();
    for (yaml, pool) in [
        (FULL_NODE, "sei-node"),
        (REPLAYER, "sei-node"),
        (ARCHIVE, "sei-archive"),
        (VALIDATOR, "sei-validator"),
        (SEED, "sei-seed"),
    ] {
        let s = sts(&node(yaml), &cfg);
        let pod = pod(&s);
        let terms = &pod
            .affinity
            .as_ref()
            .unwrap()
            .node_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .node_selector_terms;
        let expr = &terms[0].match_expressions.as_ref().unwrap()[0];
        assert_eq!(
            (expr.key.as_str(), expr.operator.as_str(), expr.values.clone()),
            ("karpenter.sh/nodepool", "In", Some(vec![pool.to_owned()]))
        );
        let toleration = &pod.tolerations.as_ref().unwrap()[0];
        assert_eq!(toleration.key.as_deref(), Some("sei.io/workload"));
        assert_eq!(toleration.value.as_deref(), Some(pool));
        assert_eq!(toleration.effect.as_deref(), Some("NoSchedule"));
        assert_eq!(pod.service_account_name.as_deref(), Some("seid-node"));
    }
}

#[test]
fn an_unset_node_pool_renders_no_affinity_or_toleration_and_no_error() {
    let mut cfg = full_config();
    cfg.scheduling.nodepool_seed = None;
    let s = sts(&node(SEED), &cfg);
    assert!(pod(&s).affinity.as_ref().unwrap().node_affinity.is_none());
    assert!(pod(&s).tolerations.is_none());

    let s = sts(&node(FULL_NODE), &local_config());
    assert!(pod(&s).affinity.as_ref().unwrap().node_affinity.is_none());
    assert!(pod(&s).tolerations.is_none());
    assert!(
        pod(&s).service_account_name.is_none(),
        "namespace default service account"
    );
}

#[test]
fn a_pool_without_toleration_key_gets_affinity_only() {
    let mut cfg = full_config();
    cfg.scheduling.toleration_key = None;
    let s = sts(&node(VALIDATOR), &cfg);
    assert!(pod(&s).affinity.as_ref().unwrap().node_affinity.is_some());
    assert!(pod(&s).tolerations.is_none());
}

#[test]
fn anti_affinity_avoids_dedicated_pods_and_dedicated_nodes_avoid_every_node_pod() {
    let terms = |n: &SeiNode| {
        let s = sts(n, &local_config());
        pod(&s)
            .affinity
            .clone()
            .unwrap()
            .pod_anti_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap()
    };
    let plain = terms(&node(FULL_NODE));
    assert_eq!(plain.len(), 1);
    let expr = &plain[0]
        .label_selector
        .as_ref()
        .unwrap()
        .match_expressions
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        (expr.key.as_str(), expr.operator.as_str()),
        (labels::DEDICATED_NODE, "In")
    );
    assert_eq!(plain[0].topology_key, "kubernetes.io/hostname");
    assert_eq!(
        plain[0].namespace_selector,
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector::default()),
        "all namespaces"
    );

    let dedicated = terms(&node(VALIDATOR_KEYS));
    assert_eq!(dedicated.len(), 2);
    let expr = &dedicated[1]
        .label_selector
        .as_ref()
        .unwrap()
        .match_expressions
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        (expr.key.as_str(), expr.operator.as_str()),
        (labels::NODE, "Exists")
    );
}

// ---------------------------------------------------------------------------------------------------------
// resources (item 36)

#[test]
fn seid_resources_follow_the_role_with_memory_request_equal_to_limit_and_no_cpu_limit() {
    let cfg = full_config();
    for (yaml, cpu, memory) in [
        (VALIDATOR, "16", "128Gi"),
        (FULL_NODE, "32", "256Gi"),
        (REPLAYER, "32", "256Gi"),
        (ARCHIVE, "64", "512Gi"),
        (SEED, "1", "2Gi"),
    ] {
        let s = sts(&node(yaml), &cfg);
        let r = container(pod(&s), SEID).resources.clone().unwrap();
        let requests = r.requests.unwrap();
        let limits = r.limits.unwrap();
        assert_eq!(
            (&requests["cpu"], &requests["memory"]),
            (&q(cpu), &q(memory)),
            "{yaml}"
        );
        assert_eq!(limits.get("memory"), Some(&q(memory)));
        assert!(!limits.contains_key("cpu"));
    }
}

#[test]
fn role_resources_can_be_overridden_and_seeds_get_gomemlimit() {
    let mut cfg = full_config();
    cfg.resources.seed.memory = q("4Gi");
    cfg.resources.archive.cpu_request = q("8");
    let s = sts(&node(ARCHIVE), &cfg);
    let requests = container(pod(&s), SEID)
        .resources
        .clone()
        .unwrap()
        .requests
        .unwrap();
    assert_eq!(requests["cpu"], q("8"));
    assert_eq!(env_value(container(pod(&s), SEID), "GOMEMLIMIT"), None);

    let s = sts(&node(SEED), &cfg);
    // floor(4 GiB * 87 / 100) = floor(3736621547.52)
    assert_eq!(
        env_value(container(pod(&s), SEID), "GOMEMLIMIT"),
        Some("3736621547B")
    );
    let s = sts(&node(SEED), &full_config());
    // floor(2 GiB * 87 / 100) = floor(1868310773.76)
    assert_eq!(
        env_value(container(pod(&s), SEID), "GOMEMLIMIT"),
        Some("1868310773B")
    );

    cfg.resources.seed.memory = q("lots");
    assert!(matches!(
        statefulset(&node(SEED), &cfg),
        Err(RenderError::InvalidQuantity { .. })
    ));
}

// ---------------------------------------------------------------------------------------------------------
// secrets and leak checks (item 37)

#[test]
fn signing_and_node_keys_reach_seid_only_read_only_by_sub_path() {
    let s = sts(&node(VALIDATOR_KEYS), &full_config());
    let pod = pod(&s);
    let seid = container(pod, SEID);
    for (volume, file) in [
        ("signing-key", "priv_validator_key.json"),
        ("node-key", "node_key.json"),
    ] {
        let m = mount(seid, volume).unwrap();
        assert_eq!(m.mount_path, format!("{DATA_DIR}/config/{file}"));
        assert_eq!(m.sub_path.as_deref(), Some(file));
        assert_eq!(m.read_only, Some(true));
        let v = pod.volumes.iter().flatten().find(|v| v.name == volume).unwrap();
        let secret = v.secret.as_ref().unwrap();
        assert_eq!(secret.default_mode, Some(0o400));
        assert_eq!(secret.items.as_ref().unwrap()[0].key, file);
        for other in all_containers(pod).into_iter().filter(|c| c.name != SEID) {
            assert!(mount(other, volume).is_none(), "{volume} in {}", other.name);
        }
    }
}

#[test]
fn operator_keyring_reaches_the_sidecar_only_unless_seid_mount_is_set() {
    let n = node(VALIDATOR_KEYS);
    let s = sts(&n, &full_config());
    let sidecar = container(pod(&s), SIDECAR);
    let m = mount(sidecar, "operator-keyring").unwrap();
    assert_eq!(
        (m.mount_path.as_str(), m.read_only),
        ("/home/nonroot/.sei/keyring-file", Some(true))
    );
    assert_eq!(env_value(sidecar, "SEI_KEYRING_BACKEND"), Some("file"));
    assert_eq!(env_value(sidecar, "SEI_KEYRING_DIR"), Some(DATA_DIR));
    let pass = sidecar
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "SEI_KEYRING_PASSPHRASE")
        .unwrap();
    let r = pass.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
    assert_eq!(
        (r.name.as_str(), r.key.as_str()),
        ("val-1-keyring-pass", "passphrase")
    );
    let seid = container(pod(&s), SEID);
    assert!(mount(seid, "operator-keyring").is_none());
    assert_eq!(env_value(seid, "SEI_KEYRING_BACKEND"), None);

    let mut n = n;
    n.spec
        .validator
        .as_mut()
        .unwrap()
        .operator_keyring
        .as_mut()
        .unwrap()
        .secret
        .as_mut()
        .unwrap()
        .seid_mount = true;
    let s = sts(&n, &full_config());
    let seid = container(pod(&s), SEID);
    assert!(mount(seid, "operator-keyring").is_some());
    assert!(
        seid.env
            .iter()
            .flatten()
            .any(|e| e.name == "SEI_KEYRING_PASSPHRASE")
    );
    for name in [SEID_INIT, RBAC_PROXY, COSMOS_EXPORTER] {
        assert!(mount(container(pod(&s), name), "operator-keyring").is_none());
    }
}

#[test]
fn validators_without_a_keyring_use_the_test_backend() {
    let s = sts(&node(VALIDATOR), &full_config());
    let sidecar = container(pod(&s), SIDECAR);
    assert_eq!(env_value(sidecar, "SEI_KEYRING_BACKEND"), Some("test"));
    assert!(
        !sidecar
            .env
            .iter()
            .flatten()
            .any(|e| e.name == "SEI_KEYRING_PASSPHRASE")
    );
    let init = container(pod(&s), SEID_INIT);
    assert_eq!(env_value(init, "KEYRING_BACKEND"), Some("test"));
    assert!(init.args.as_ref().unwrap()[0].contains("keyring-backend"));
    let s = sts(&node(FULL_NODE), &full_config());
    assert!(!container(pod(&s), SEID_INIT).args.as_ref().unwrap()[0].contains("keyring-backend"));
}

#[test]
fn keyring_mounted_into_cosmos_exporter_is_refused_with_a_named_error() {
    let n = node(VALIDATOR_KEYS);
    let mut s = sts(&n, &full_config());
    let exporter = pod_mut(&mut s)
        .containers
        .iter_mut()
        .find(|c| c.name == COSMOS_EXPORTER)
        .unwrap();
    exporter
        .volume_mounts
        .get_or_insert_with(Vec::new)
        .push(VolumeMount {
            name: "operator-keyring".to_owned(),
            mount_path: "/keys".to_owned(),
            ..VolumeMount::default()
        });
    let err = resources::check_secret_containment(&n, pod(&s)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "SeiNode validator-1: operator keyring secret val-1-keyring would be mounted into container cosmos-exporter"
    );
}

#[test]
fn passphrase_env_from_and_signing_key_env_outside_their_containers_are_refused() {
    let n = node(VALIDATOR_KEYS);
    let mut s = sts(&n, &full_config());
    let proxy = pod_mut(&mut s)
        .init_containers
        .as_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c.name == RBAC_PROXY)
        .unwrap();
    proxy.env_from = Some(vec![EnvFromSource {
        secret_ref: Some(SecretEnvSource {
            name: "val-1-keyring-pass".to_owned(),
            optional: None,
        }),
        ..EnvFromSource::default()
    }]);
    let err = resources::check_secret_containment(&n, pod(&s)).unwrap_err();
    assert!(
        matches!(&err, RenderError::SecretLeak { kind: "operator keyring passphrase", container, .. } if container == RBAC_PROXY),
        "{err}"
    );

    let mut s = sts(&n, &full_config());
    let sidecar = pod_mut(&mut s)
        .init_containers
        .as_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c.name == SIDECAR)
        .unwrap();
    sidecar.env.get_or_insert_with(Vec::new).push(EnvVar {
        name: "KEY".to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: "val-1-signing".to_owned(),
                key: "priv_validator_key.json".to_owned(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
    });
    let err = resources::check_secret_containment(&n, pod(&s)).unwrap_err();
    assert!(
        matches!(&err, RenderError::SecretLeak { kind: "signing key", container, .. } if container == SIDECAR),
        "{err}"
    );
}

#[test]
fn a_spec_whose_keyring_is_also_the_signing_key_secret_does_not_render() {
    // Admission forbids this (CEL distinctness); a spec built in code is still caught at render time.
    let mut n = node(VALIDATOR_KEYS);
    let keyring = n
        .spec
        .validator
        .as_mut()
        .unwrap()
        .operator_keyring
        .as_mut()
        .unwrap()
        .secret
        .as_mut()
        .unwrap();
    keyring.secret_name = "val-1-signing".to_owned();
    let err = statefulset(&n, &full_config()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "SeiNode validator-1: signing key secret val-1-signing would be mounted into container sei-sidecar"
    );

    let mut n = node(VALIDATOR_KEYS);
    n.spec
        .validator
        .as_mut()
        .unwrap()
        .operator_keyring
        .as_mut()
        .unwrap()
        .secret
        .as_mut()
        .unwrap()
        .passphrase_secret_ref
        .secret_name = "val-1-node-key".to_owned();
    assert!(matches!(
        statefulset(&n, &full_config()),
        Err(RenderError::SecretLeak { kind: "node key", .. })
    ));
}

#[test]
fn nodes_without_key_material_carry_no_secret_volumes() {
    for yaml in [FULL_NODE, ARCHIVE, REPLAYER, VALIDATOR] {
        let s = sts(&node(yaml), &full_config());
        assert!(
            pod(&s).volumes.iter().flatten().all(|v| v.secret.is_none()),
            "{yaml}"
        );
    }
    // A seed mounts its node key into seid only.
    let s = sts(&node(SEED), &full_config());
    assert!(mount(container(pod(&s), SEID), "node-key").is_some());
    assert!(mount(container(pod(&s), SIDECAR), "node-key").is_none());
}

// ---------------------------------------------------------------------------------------------------------
// security contexts (item 38)

#[test]
fn security_contexts_are_non_root_and_read_only_except_seid() {
    let s = sts(&node(VALIDATOR_KEYS), &full_config());
    let pod = pod(&s);
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(psc.fs_group, Some(65532));
    assert_eq!(psc.fs_group_change_policy.as_deref(), Some("OnRootMismatch"));
    assert_eq!(pod.share_process_namespace, Some(true));
    assert_eq!(pod.automount_service_account_token, Some(true));
    for c in all_containers(pod) {
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true), "{}", c.name);
        assert_eq!(sc.run_as_user, Some(65532), "{}", c.name);
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop,
            Some(vec!["ALL".to_owned()])
        );
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        let read_only = matches!(c.name.as_str(), SIDECAR | RBAC_PROXY | COSMOS_EXPORTER);
        assert_eq!(
            sc.read_only_root_filesystem.unwrap_or(false),
            read_only,
            "{}",
            c.name
        );
    }
}

// ---------------------------------------------------------------------------------------------------------
// render errors

#[test]
fn bad_sidecar_ports_and_port_conflicts_are_refused() {
    let cfg = full_config();
    for port in [0, -1, 70_000] {
        let mut n = node(FULL_NODE);
        n.spec.sidecar.as_mut().unwrap().port = port;
        assert_eq!(
            statefulset(&n, &cfg).unwrap_err(),
            RenderError::InvalidSidecarPort {
                node: "rpc-0".to_owned(),
                port
            }
        );
    }
    for port in [26657, 8443, 9300] {
        let mut n = node(FULL_NODE);
        n.spec.sidecar.as_mut().unwrap().port = port;
        let err = statefulset(&n, &cfg).unwrap_err();
        assert!(matches!(err, RenderError::PortConflict { .. }), "{port}: {err}");
    }
    // Without the proxy and the exporter, 8443 and 9300 are free.
    let mut n = node(FULL_NODE);
    n.spec.sidecar.as_mut().unwrap().port = 8443;
    assert!(statefulset(&n, &local_config()).is_ok());
}

#[test]
fn nodes_without_name_namespace_or_exactly_one_mode_are_refused() {
    let cfg = local_config();
    let mut n = node(FULL_NODE);
    n.metadata.namespace = None;
    assert_eq!(
        statefulset(&n, &cfg).unwrap_err(),
        RenderError::MissingNamespace {
            node: "rpc-0".to_owned()
        }
    );
    assert!(headless_service(&n, &cfg).is_err());
    assert!(data_pvc(&n, &cfg).is_err());
    let mut n = node(FULL_NODE);
    n.metadata.name = None;
    assert_eq!(statefulset(&n, &cfg).unwrap_err(), RenderError::MissingName);
    let mut n = node(FULL_NODE);
    n.spec.archive = Some(sei_crds::ArchiveSpec::default());
    let err = statefulset(&n, &cfg).unwrap_err();
    assert!(matches!(err, RenderError::Mode { .. }));
    assert!(
        err.to_string()
            .starts_with("SeiNode rpc-0: several modes are set"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------------------
// labels and owner references

#[test]
fn labels_merge_pod_labels_under_the_system_labels() {
    let l = resource_labels(&node(FULL_NODE));
    assert_eq!(l["team"], "rpc");
    assert_eq!(l[labels::NODE], "rpc-0", "system labels win");
    assert_eq!(l[labels::CHAIN], "atlantic-2");
    assert_eq!(l[labels::ROLE], "node");
    assert!(
        !l.contains_key(labels::SNAPSHOT_PUBLISH),
        "keepRecent without publish"
    );
    assert!(!l.contains_key(labels::DEDICATED_NODE));

    let l = resource_labels(&node(ARCHIVE));
    assert_eq!(l[labels::SNAPSHOT_PUBLISH], "true");
    assert_eq!(
        resource_labels(&node(VALIDATOR_KEYS))[labels::DEDICATED_NODE],
        "true"
    );

    let mut n = node(VALIDATOR);
    n.metadata.labels = Some(BTreeMap::from([
        (labels::DEPLOYMENT.to_owned(), "val".to_owned()),
        (labels::DEPLOYMENT_ORDINAL.to_owned(), "0".to_owned()),
        ("unrelated".to_owned(), "x".to_owned()),
    ]));
    n.spec.chain_id = String::new();
    let l = resource_labels(&n);
    assert_eq!(l[labels::DEPLOYMENT], "val");
    assert_eq!(l[labels::DEPLOYMENT_ORDINAL], "0");
    assert!(!l.contains_key("unrelated"));
    assert!(!l.contains_key(labels::CHAIN));
}

#[test]
fn roles_follow_the_mode() {
    for (yaml, mode) in [
        (FULL_NODE, Mode::FullNode),
        (ARCHIVE, Mode::Archive),
        (REPLAYER, Mode::Replayer),
        (VALIDATOR, Mode::Validator),
        (SEED, Mode::Seed),
    ] {
        assert_eq!(resource_labels(&node(yaml))[labels::ROLE], mode.role());
    }
}

#[test]
fn every_object_is_controlled_by_the_node_when_it_has_a_uid() {
    let n = node(FULL_NODE);
    let cfg = full_config();
    let metas = [
        sts(&n, &cfg).metadata,
        headless_service(&n, &cfg).unwrap().metadata,
        data_pvc(&n, &cfg).unwrap().metadata,
        rbac_proxy_config_map(&n, &cfg).unwrap().unwrap().metadata,
    ];
    for meta in metas {
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                owner.api_version.as_str(),
                owner.kind.as_str(),
                owner.name.as_str(),
                owner.uid.as_str()
            ),
            ("sei.io/v1alpha1", "SeiNode", "rpc-0", UID)
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(meta.labels, Some(resource_labels(&n)));
        assert_eq!(meta.namespace.as_deref(), Some(NS));
    }
    let mut n = n;
    n.metadata.uid = None;
    assert!(sts(&n, &cfg).metadata.owner_references.is_none());
}

#[test]
fn rendering_is_deterministic() {
    let cfg = full_config();
    for yaml in [FULL_NODE, ARCHIVE, REPLAYER, VALIDATOR, VALIDATOR_KEYS, SEED] {
        let n = node(yaml);
        assert_eq!(sts(&n, &cfg), sts(&n, &cfg));
        assert_eq!(headless_service(&n, &cfg), headless_service(&n, &cfg));
    }
}

// ---------------------------------------------------------------------------------------------------------
// Service (4.2), PVC (4.3), ConfigMap (4.4)

#[test]
fn headless_service_exposes_seid_ports_and_the_proxy_or_the_sidecar() {
    let n = node(FULL_NODE);
    let svc = headless_service(&n, &full_config()).unwrap();
    let spec = svc.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.publish_not_ready_addresses, Some(true));
    assert_eq!(
        spec.selector,
        Some(BTreeMap::from([(labels::NODE.to_owned(), "rpc-0".to_owned())]))
    );
    let ports = spec.ports.unwrap();
    let summary: Vec<(String, i32)> = ports.iter().map(|p| (p.name.clone().unwrap(), p.port)).collect();
    let expected: Vec<(String, i32)> = [
        ("evm-rpc", 8545),
        ("evm-ws", 8546),
        ("grpc", 9090),
        ("rest", 1317),
        ("p2p", 26656),
        ("rpc", 26657),
        ("metrics", 26660),
        ("api", 8443),
    ]
    .into_iter()
    .map(|(n, p)| (n.to_owned(), p))
    .collect();
    assert_eq!(summary, expected);
    for p in &ports {
        assert_eq!(p.target_port, Some(IntOrString::Int(p.port)));
        let h2c = p.name.as_deref() == Some("grpc");
        assert_eq!(p.app_protocol.is_some(), h2c);
    }
    assert_eq!(ports[2].app_protocol.as_deref(), Some("kubernetes.io/h2c"));

    let mut n = n;
    n.spec.sidecar.as_mut().unwrap().port = 7788;
    let ports = headless_service(&n, &local_config())
        .unwrap()
        .spec
        .unwrap()
        .ports
        .unwrap();
    let last = ports.last().unwrap();
    assert_eq!((last.name.as_deref(), last.port), (Some("sidecar"), 7788));
}

#[test]
fn data_pvc_uses_the_class_and_size_of_the_mode() {
    let cfg = full_config();
    for (yaml, name, class, size) in [
        (FULL_NODE, "data-rpc-0", "gp3-10k-750", "2000Gi"),
        (REPLAYER, "data-replayer-0", "gp3-10k-750", "2000Gi"),
        (VALIDATOR, "data-validator-0", "gp3-10k-750", "2000Gi"),
        (ARCHIVE, "data-archive-0", "gp3-archive", "40Ti"),
        (SEED, "data-seed-0", "gp3", "20Gi"),
    ] {
        let pvc = data_pvc(&node(yaml), &cfg).unwrap();
        assert_eq!(pvc.metadata.name.as_deref(), Some(name));
        let spec = pvc.spec.unwrap();
        assert_eq!(spec.access_modes, Some(vec!["ReadWriteOnce".to_owned()]));
        assert_eq!(spec.storage_class_name.as_deref(), Some(class));
        assert_eq!(spec.resources.unwrap().requests.unwrap()["storage"], q(size));
    }
    let spec = data_pvc(&node(ARCHIVE), &local_config()).unwrap().spec.unwrap();
    assert_eq!(spec.storage_class_name, None, "cluster default class");
    assert_eq!(spec.resources.unwrap().requests.unwrap()["storage"], q("40Ti"));
}

#[test]
fn an_imported_pvc_is_mounted_but_never_rendered() {
    let mut n = node(FULL_NODE);
    n.spec.data_volume = Some(sei_crds::DataVolumeSpec {
        import: Some(sei_crds::DataVolumeImport {
            pvc_name: "restored-data".to_owned(),
        }),
    });
    assert_eq!(resources::data_pvc_name(&n), "restored-data");
    assert_eq!(
        data_pvc(&n, &full_config()).unwrap_err().to_string(),
        "SeiNode rpc-0 imports PVC restored-data; the operator does not create it"
    );
    let s = sts(&n, &full_config());
    let data = pod(&s)
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "data")
        .unwrap();
    assert_eq!(
        data.persistent_volume_claim.as_ref().unwrap().claim_name,
        "restored-data"
    );
}

#[test]
fn rbac_proxy_config_map_exists_only_with_the_proxy() {
    let n = node(FULL_NODE);
    assert_eq!(rbac_proxy_config_map(&n, &local_config()).unwrap(), None);
    let cm = rbac_proxy_config_map(&n, &full_config()).unwrap().unwrap();
    assert_eq!(cm.metadata.name.as_deref(), Some("rpc-0-rbac-proxy-config"));
    let config = &cm.data.unwrap()["config.yaml"];
    let parsed: serde_yaml::Value = serde_yaml::from_str(config).unwrap();
    let attrs = &parsed["authorization"]["resourceAttributes"];
    assert_eq!(attrs["apiGroup"], "sei.io");
    assert_eq!(attrs["resource"], "seinodetasks");
    assert_eq!(attrs["namespace"], NS);
    assert_eq!(attrs["name"], "rpc-0");
    let s = sts(&n, &full_config());
    let v = pod(&s)
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "rbac-proxy-config")
        .unwrap();
    assert_eq!(v.config_map.as_ref().unwrap().name, "rpc-0-rbac-proxy-config");
}
