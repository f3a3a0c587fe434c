//! Platform configuration: defaults, env over file, and every problem reported at once.

// Fixture helpers outside #[test] functions unwrap too: a broken fixture should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use sei_crds::{Mode, SeiNode};
use sei_tasks::platform::{ConfigErrors, DEFAULT_SIDECAR_IMAGE, PlatformConfig};

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name: &str| map.get(name).cloned()
}

fn errors(pairs: &[(&str, &str)], file: Option<&str>) -> ConfigErrors {
    PlatformConfig::from_sources(env(pairs), file).expect_err("the configuration should be refused")
}

fn q(s: &str) -> Quantity {
    Quantity(s.to_owned())
}

fn node(yaml: &str) -> SeiNode {
    serde_yaml::from_str(yaml).unwrap()
}

const NODE: &str = "
metadata: {name: rpc-0, namespace: sei}
spec: {chainId: atlantic-2, image: sei:v1, fullNode: {}}
";

#[test]
fn an_empty_environment_gives_the_documented_defaults() {
    let cfg = PlatformConfig::from_sources(env(&[]), None).unwrap();
    assert_eq!(cfg, PlatformConfig::default());
    assert_eq!(cfg.images.sidecar, DEFAULT_SIDECAR_IMAGE);
    assert_eq!(cfg.images.sidecar, "ghcr.io/sei-protocol/seictl:v0.0.68");
    assert_eq!(cfg.images.kube_rbac_proxy, None);
    assert_eq!(cfg.images.cosmos_exporter, None);
    assert_eq!(
        cfg.sidecar.url_template,
        "http://{name}-0.{name}.{namespace}.svc.cluster.local:{port}"
    );
    assert_eq!(cfg.sidecar.timeout, Duration::from_secs(10));
    assert_eq!(
        cfg.sidecar.token_path,
        PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/token")
    );
    assert_eq!(cfg.storage.size_for(Mode::FullNode), &q("2000Gi"));
    assert_eq!(cfg.storage.size_for(Mode::Validator), &q("2000Gi"));
    assert_eq!(cfg.storage.size_for(Mode::Archive), &q("40Ti"));
    assert_eq!(cfg.storage.size_for(Mode::Seed), &q("20Gi"));
    for mode in Mode::ALL {
        assert_eq!(cfg.storage.class_for(mode), None);
        assert_eq!(cfg.scheduling.nodepool_for(mode), None);
    }
    assert_eq!(cfg.resources.for_mode(Mode::FullNode).cpu_request, q("32"));
    assert_eq!(cfg.resources.for_mode(Mode::Seed).memory, q("2Gi"));
    assert!(cfg.state_sync_syncers.is_empty());
}

#[test]
fn every_variable_is_read() {
    let cfg = PlatformConfig::from_sources(
        env(&[
            ("SEI_NODEPOOL_NAME", "sei-node"),
            ("SEI_NODEPOOL_ARCHIVE", "sei-archive"),
            ("SEI_NODEPOOL_VALIDATOR", "sei-validator"),
            ("SEI_NODEPOOL_SEED", "sei-seed"),
            ("SEI_TOLERATION_KEY", "sei.io/workload"),
            ("SEI_SERVICE_ACCOUNT", "seid-node"),
            ("SEI_STORAGE_CLASS_PERF", "gp3-10k-750"),
            ("SEI_STORAGE_CLASS_DEFAULT", "gp3"),
            ("SEI_STORAGE_CLASS_ARCHIVE", "gp3-archive"),
            ("SEI_STORAGE_SIZE_DEFAULT", "1Ti"),
            ("SEI_STORAGE_SIZE_ARCHIVE", "50Ti"),
            ("SEI_STORAGE_SIZE_SEED", "10Gi"),
            ("SEI_RESOURCE_CPU_VALIDATOR", "8"),
            ("SEI_RESOURCE_MEM_VALIDATOR", "64Gi"),
            ("SEI_RESOURCE_CPU_NODE", "500m"),
            ("SEI_RESOURCE_MEM_NODE", "1Gi"),
            ("SEI_RESOURCE_CPU_REPLAYER", "2"),
            ("SEI_RESOURCE_MEM_REPLAYER", "2Gi"),
            ("SEI_RESOURCE_CPU_ARCHIVE", "3"),
            ("SEI_RESOURCE_MEM_ARCHIVE", "3Gi"),
            ("SEI_RESOURCE_CPU_SEED", "100m"),
            ("SEI_RESOURCE_MEM_SEED", "512Mi"),
            ("SEI_SNAPSHOT_BUCKET", "snaps"),
            ("SEI_SNAPSHOT_REGION", "us-east-2"),
            ("SEI_GENESIS_BUCKET", "gen"),
            ("SEI_GENESIS_REGION", "eu-west-1"),
            ("SEI_SIDECAR_IMAGE", "example.com/seictl:dev"),
            ("SEI_KUBE_RBAC_PROXY_IMAGE", "example.com/kube-rbac-proxy:v1"),
            ("SEI_COSMOS_EXPORTER_IMAGE", "example.com/exporter:v1"),
            (
                "SEI_SIDECAR_URL_TEMPLATE",
                "http://127.0.0.1:{port}/{namespace}/{name}",
            ),
            ("SEI_SIDECAR_TIMEOUT", "1m 30s"),
            ("SEI_SIDECAR_TOKEN_PATH", "/tmp/token"),
            (
                "SEI_STATE_SYNC_SYNCERS",
                "atlantic-2=a:26657,b:26657; pacific-1=c:443",
            ),
        ]),
        None,
    )
    .unwrap();
    let s = &cfg.scheduling;
    assert_eq!(s.nodepool_for(Mode::FullNode), Some("sei-node"));
    assert_eq!(s.nodepool_for(Mode::Replayer), Some("sei-node"));
    assert_eq!(s.nodepool_for(Mode::Archive), Some("sei-archive"));
    assert_eq!(s.nodepool_for(Mode::Validator), Some("sei-validator"));
    assert_eq!(s.nodepool_for(Mode::Seed), Some("sei-seed"));
    assert_eq!(s.toleration_key.as_deref(), Some("sei.io/workload"));
    assert_eq!(s.service_account.as_deref(), Some("seid-node"));
    assert_eq!(cfg.storage.class_for(Mode::Replayer), Some("gp3-10k-750"));
    assert_eq!(cfg.storage.class_for(Mode::Seed), Some("gp3"));
    assert_eq!(cfg.storage.class_for(Mode::Archive), Some("gp3-archive"));
    assert_eq!(cfg.storage.size_for(Mode::Validator), &q("1Ti"));
    assert_eq!(cfg.storage.size_for(Mode::Archive), &q("50Ti"));
    assert_eq!(cfg.storage.size_for(Mode::Seed), &q("10Gi"));
    let r = &cfg.resources;
    assert_eq!(
        (&r.validator.cpu_request, &r.validator.memory),
        (&q("8"), &q("64Gi"))
    );
    assert_eq!((&r.node.cpu_request, &r.node.memory), (&q("500m"), &q("1Gi")));
    assert_eq!(
        (&r.replayer.cpu_request, &r.replayer.memory),
        (&q("2"), &q("2Gi"))
    );
    assert_eq!((&r.archive.cpu_request, &r.archive.memory), (&q("3"), &q("3Gi")));
    assert_eq!((&r.seed.cpu_request, &r.seed.memory), (&q("100m"), &q("512Mi")));
    assert_eq!(cfg.snapshot.bucket.as_deref(), Some("snaps"));
    assert_eq!(cfg.genesis.region.as_deref(), Some("eu-west-1"));
    assert_eq!(cfg.images.sidecar, "example.com/seictl:dev");
    assert!(cfg.renders_rbac_proxy());
    assert_eq!(
        cfg.images.cosmos_exporter.as_deref(),
        Some("example.com/exporter:v1")
    );
    assert_eq!(cfg.sidecar.timeout, Duration::from_secs(90));
    assert_eq!(cfg.sidecar.token_path, PathBuf::from("/tmp/token"));
    assert_eq!(
        cfg.state_sync_syncers,
        BTreeMap::from([
            (
                "atlantic-2".to_owned(),
                vec!["a:26657".to_owned(), "b:26657".to_owned()]
            ),
            ("pacific-1".to_owned(), vec!["c:443".to_owned()]),
        ])
    );
}

const FILE: &str = r#"
scheduling:
  nodepoolName: file-pool
  serviceAccount: file-sa
storage:
  sizeDefault: 500Gi
  sizeSeed: 30Gi
resources:
  seed: {cpuRequest: "2", memory: 4Gi}
genesis: {bucket: gen, region: us-east-2}
images:
  kubeRBACProxy: quay.io/brancz/kube-rbac-proxy:v0.18.2
sidecar:
  timeout: 5s
stateSync:
  syncers:
    atlantic-2: [a:26657, b:26657]
resultExport: {bucket: unused, region: unused, prefix: unused}
"#;

#[test]
fn the_file_is_read_and_variables_win_over_it() {
    let cfg = PlatformConfig::from_sources(env(&[]), Some(FILE)).unwrap();
    assert_eq!(cfg.scheduling.nodepool_name.as_deref(), Some("file-pool"));
    assert_eq!(cfg.scheduling.service_account.as_deref(), Some("file-sa"));
    assert_eq!(cfg.storage.size_default, q("500Gi"));
    assert_eq!(cfg.storage.size_seed, q("30Gi"));
    assert_eq!(
        cfg.storage.size_archive,
        q("40Ti"),
        "unset keys keep their default"
    );
    assert_eq!(cfg.resources.seed.cpu_request, q("2"));
    assert_eq!(cfg.resources.seed.memory, q("4Gi"));
    assert_eq!(cfg.resources.node.memory, q("256Gi"));
    assert_eq!(cfg.genesis.bucket.as_deref(), Some("gen"));
    assert!(cfg.renders_rbac_proxy());
    assert_eq!(cfg.sidecar.timeout, Duration::from_secs(5));
    assert_eq!(cfg.state_sync_syncers["atlantic-2"].len(), 2);

    let cfg = PlatformConfig::from_sources(
        env(&[
            ("SEI_NODEPOOL_NAME", "env-pool"),
            ("SEI_STORAGE_SIZE_SEED", "40Gi"),
            ("SEI_SIDECAR_TIMEOUT", "2s"),
            ("SEI_SERVICE_ACCOUNT", ""),
        ]),
        Some(FILE),
    )
    .unwrap();
    assert_eq!(cfg.scheduling.nodepool_name.as_deref(), Some("env-pool"));
    assert_eq!(cfg.storage.size_seed, q("40Gi"));
    assert_eq!(cfg.sidecar.timeout, Duration::from_secs(2));
    assert_eq!(
        cfg.scheduling.service_account.as_deref(),
        Some("file-sa"),
        "an empty variable counts as unset"
    );
}

#[test]
fn every_problem_is_reported_at_once_one_per_line_naming_the_variable() {
    let err = errors(
        &[
            ("SEI_STORAGE_SIZE_DEFAULT", "lots"),
            ("SEI_RESOURCE_MEM_SEED", "0"),
            ("SEI_SIDECAR_TIMEOUT", "soon"),
            ("SEI_SIDECAR_URL_TEMPLATE", "http://{node}.svc:{port}"),
            ("SEI_NODEPOOL_SEED", "Not A Pool!"),
            ("SEI_SERVICE_ACCOUNT", "Bad_SA"),
            ("SEI_SIDECAR_TOKEN_PATH", "relative/token"),
            ("SEI_SNAPSHOT_BUCKET", "snaps"),
        ],
        None,
    );
    let text = err.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 8, "{text}");
    for variable in [
        "SEI_NODEPOOL_SEED",
        "SEI_SERVICE_ACCOUNT",
        "SEI_STORAGE_SIZE_DEFAULT",
        "SEI_RESOURCE_MEM_SEED",
        "SEI_SNAPSHOT_REGION",
        "SEI_SIDECAR_URL_TEMPLATE",
        "SEI_SIDECAR_TIMEOUT",
        "SEI_SIDECAR_TOKEN_PATH",
    ] {
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.starts_with(&format!("{variable}: ")))
                .count(),
            1,
            "{variable} in:\n{text}"
        );
    }
    assert!(
        text.contains("SEI_STORAGE_SIZE_DEFAULT: invalid quantity \"lots\""),
        "{text}"
    );
    assert!(
        text.contains("SEI_SNAPSHOT_REGION: required when SEI_SNAPSHOT_BUCKET is set"),
        "{text}"
    );
    assert!(text.contains("unknown placeholder {node}"), "{text}");
    assert_eq!(err.errors().len(), 8);
}

#[test]
fn file_problems_name_the_variable_and_the_file_key() {
    let file = "
storage:
  sizeArchive: huge
  sizeDefualt: 1Ti
resources:
  seed: {memory: [1, 2]}
images:
  sidecar: 'has space'
gateway: {name: x}
stateSync:
  syncers:
    atlantic-2: [not-a-host-port]
";
    let err = errors(&[], Some(file));
    let text = err.to_string();
    assert!(
        text.contains(
            "SEI_STORAGE_SIZE_ARCHIVE: invalid quantity \"huge\": expected a number such as 500m, 2Gi or 1.5 \
             (from storage.sizeArchive in the SEI_CONTROLLER_CONFIG file)"
        ),
        "{text}"
    );
    assert!(
        text.contains("SEI_CONTROLLER_CONFIG: unknown key storage.sizeDefualt"),
        "{text}"
    );
    assert!(
        text.contains("SEI_CONTROLLER_CONFIG: unknown key gateway"),
        "{text}"
    );
    assert!(
        text.contains("SEI_RESOURCE_MEM_SEED: expected a string (from resources.seed.memory"),
        "{text}"
    );
    assert!(text.contains("SEI_SIDECAR_IMAGE: image \"has space\""), "{text}");
    assert!(
        text.contains(
            "SEI_STATE_SYNC_SYNCERS: chain atlantic-2: \"not-a-host-port\" is not a bare host:port"
        ),
        "{text}"
    );
    assert_eq!(text.lines().count(), 6, "{text}");
}

#[test]
fn a_variable_fixes_a_bad_file_value() {
    let file = "storage: {sizeArchive: huge}";
    let cfg = PlatformConfig::from_sources(env(&[("SEI_STORAGE_SIZE_ARCHIVE", "10Ti")]), Some(file)).unwrap();
    assert_eq!(cfg.storage.size_archive, q("10Ti"));
}

#[test]
fn malformed_yaml_is_reported_under_the_file_variable() {
    let err = errors(&[], Some("scheduling: [unclosed"));
    assert_eq!(err.errors().len(), 1);
    assert_eq!(err.errors()[0].variable, "SEI_CONTROLLER_CONFIG");
    assert!(err.to_string().contains("not valid YAML"));
    let err = errors(&[], Some("- a list"));
    assert!(err.to_string().contains("must hold a YAML mapping"));
    assert!(
        PlatformConfig::from_sources(env(&[]), Some("")).is_ok(),
        "an empty file is an empty config"
    );
}

#[test]
fn region_without_bucket_and_bad_syncers_are_refused() {
    let text = errors(
        &[
            ("SEI_GENESIS_REGION", "us-east-2"),
            ("SEI_STATE_SYNC_SYNCERS", "atlantic-2=a:0;broken"),
        ],
        None,
    )
    .to_string();
    assert!(
        text.contains("SEI_GENESIS_BUCKET: required when SEI_GENESIS_REGION is set"),
        "{text}"
    );
    assert!(text.contains("\"a:0\" is not a bare host:port"), "{text}");
    assert!(text.contains("entry \"broken\""), "{text}");
}

#[test]
fn the_url_template_must_be_an_http_base_url() {
    for bad in [
        "ftp://{name}:{port}",
        "http://{name}:{port}/?x=1",
        "not a url {name}",
        "http://{name}.{ns}:{port}",
    ] {
        let err = errors(&[("SEI_SIDECAR_URL_TEMPLATE", bad)], None);
        assert!(
            err.to_string().starts_with("SEI_SIDECAR_URL_TEMPLATE: "),
            "{bad}: {err}"
        );
    }
    let cfg = PlatformConfig::from_sources(
        env(&[(
            "SEI_SIDECAR_URL_TEMPLATE",
            "https://sidecars.example.net/{namespace}/{name}",
        )]),
        None,
    );
    assert!(cfg.is_ok());
}

#[test]
fn the_sidecar_port_is_the_proxy_port_with_the_proxy_and_the_node_port_without() {
    let mut n = node(NODE);
    let local = PlatformConfig::default();
    assert_eq!(local.sidecar_port_for(&n), 7777);
    assert_eq!(
        local.sidecar_url_for(&n),
        "http://rpc-0-0.rpc-0.sei.svc.cluster.local:7777"
    );
    n.spec.sidecar = Some(sei_crds::SidecarConfig {
        port: 7788,
        ..Default::default()
    });
    assert_eq!(local.sidecar_port_for(&n), 7788);

    let proxied = PlatformConfig::from_sources(
        env(&[(
            "SEI_KUBE_RBAC_PROXY_IMAGE",
            "quay.io/brancz/kube-rbac-proxy:v0.18.2",
        )]),
        None,
    )
    .unwrap();
    assert_eq!(proxied.sidecar_port_for(&n), 8443);
    assert_eq!(
        proxied.sidecar_url_for(&n),
        "http://rpc-0-0.rpc-0.sei.svc.cluster.local:8443"
    );
    let client = proxied.sidecar_client_config();
    assert_eq!(client.port, 8443);
    assert_eq!(client.timeout, Duration::from_secs(10));
    assert_eq!(local.sidecar_client_config().port, 7777);
}

#[test]
fn sidecars_are_reached_unauthenticated_only_when_that_is_chosen() {
    let refusal = PlatformConfig::default()
        .check_sidecar_authentication()
        .expect_err("no proxy and no explicit choice: refused")
        .to_string();
    assert!(
        refusal.starts_with("SEI_KUBE_RBAC_PROXY_IMAGE: ")
            && refusal.contains("SEI_SIDECAR_ALLOW_UNAUTHENTICATED=true")
            && refusal.contains("sidecar.allowUnauthenticated"),
        "{refusal}"
    );
    let proxied = PlatformConfig::from_sources(
        env(&[("SEI_KUBE_RBAC_PROXY_IMAGE", "example.com/kube-rbac-proxy:v1")]),
        None,
    )
    .unwrap();
    assert!(proxied.check_sidecar_authentication().is_ok());
    let allowed =
        PlatformConfig::from_sources(env(&[("SEI_SIDECAR_ALLOW_UNAUTHENTICATED", "true")]), None).unwrap();
    assert!(allowed.sidecar.allow_unauthenticated);
    assert!(allowed.check_sidecar_authentication().is_ok());
    let from_file =
        PlatformConfig::from_sources(env(&[]), Some("sidecar: {allowUnauthenticated: true}\n")).unwrap();
    assert!(from_file.check_sidecar_authentication().is_ok());
    let err = errors(&[("SEI_SIDECAR_ALLOW_UNAUTHENTICATED", "yes")], None).to_string();
    assert!(err.starts_with("SEI_SIDECAR_ALLOW_UNAUTHENTICATED: "), "{err}");
}

#[test]
fn two_bad_values_are_both_reported_each_with_its_source() {
    use sei_tasks::platform::ConfigError;
    let file = "storage: {sizeArchive: huge, sizeSeed: 30Gi}\nsidecar: {timeout: 5s}\n";
    let err = errors(
        &[("SEI_STORAGE_SIZE_SEED", "lots"), ("SEI_SIDECAR_TIMEOUT", "")],
        Some(file),
    );
    assert_eq!(
        err.errors(),
        [
            ConfigError {
                variable: "SEI_STORAGE_SIZE_ARCHIVE".to_owned(),
                file_key: Some("storage.sizeArchive".to_owned()),
                message: "invalid quantity \"huge\": expected a number such as 500m, 2Gi or 1.5".to_owned(),
            },
            ConfigError {
                variable: "SEI_STORAGE_SIZE_SEED".to_owned(),
                file_key: None,
                message: "invalid quantity \"lots\": expected a number such as 500m, 2Gi or 1.5".to_owned(),
            },
        ],
        "the variable's bad value is reported under the variable although the file has a good one"
    );
}

#[test]
fn unknown_keys_are_reported_at_every_level_of_the_file() {
    let file = "resources:\n  seed: {cpuRequest: '1', memroy: 2Gi}\n  gpu: {}\nsidecar: 5\n";
    let text = errors(&[], Some(file)).to_string();
    for expected in [
        "SEI_CONTROLLER_CONFIG: unknown key resources.gpu",
        "SEI_CONTROLLER_CONFIG: unknown key resources.seed.memroy",
        "SEI_CONTROLLER_CONFIG: sidecar must be a mapping",
    ] {
        assert!(text.contains(expected), "{expected} in:\n{text}");
    }
    assert_eq!(text.lines().count(), 3, "{text}");
}
