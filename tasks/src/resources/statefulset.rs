//! The node's StatefulSet (reference section 4.1).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, NodeAffinity, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, PersistentVolumeClaimVolumeSource, PodAffinityTerm, PodAntiAffinity,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretKeySelector, SecretVolumeSource, SecurityContext, TCPSocketAction, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sei_crds::{Mode, NODE_KEY_DATA_KEY, SIGNING_KEY_DATA_KEY, labels};

use super::{
    COSMOS_EXPORTER, COSMOS_EXPORTER_PORT, DATA_DIR, HOME_DIR, NON_ROOT_ID, PORT_NAME_API, PORT_NAME_SIDECAR,
    RBAC_PROXY, RenderError, Result, SEID, SEID_INIT, SEID_PORTS, SIDECAR, Target, check_probe_contract,
    check_secret_containment, data_pvc_name, is_dedicated, quantity, rbac_proxy_config_map_name,
    resource_labels, selector_labels,
};
use crate::platform::{PlatformConfig, RBAC_PROXY_PORT};

/// Node label Karpenter puts on the nodes of a node pool.
pub(crate) const NODEPOOL_LABEL: &str = "karpenter.sh/nodepool";
/// Topology of the pod anti-affinity terms.
const HOSTNAME_TOPOLOGY: &str = "kubernetes.io/hostname";
/// Mount point of the kube-rbac-proxy configuration.
const RBAC_PROXY_CONFIG_DIR: &str = "/etc/kube-rbac-proxy";
/// Sidecar paths kube-rbac-proxy lets through without authentication (probes and metrics).
const RBAC_PROXY_IGNORE_PATHS: &str = "/v0/healthz,/v0/startupz,/v0/livez,/v0/metrics";
/// How long seid may wait behind the sidecar gate: 86400 startup probes 5 s apart, i.e. five days.
const SEID_STARTUP_FAILURE_THRESHOLD: i32 = 86_400;

// Volume names.
const VOL_DATA: &str = "data";
const VOL_HOME: &str = "home";
const VOL_SIDECAR_TMP: &str = "sidecar-tmp";
const VOL_EXPORTER_TMP: &str = "exporter-tmp";
const VOL_RBAC_PROXY_CONFIG: &str = "rbac-proxy-config";
const VOL_SIGNING_KEY: &str = "signing-key";
const VOL_NODE_KEY: &str = "node-key";
const VOL_OPERATOR_KEYRING: &str = "operator-keyring";

/// Renders the node's StatefulSet. Its shape (reference section 4.1, with this project's decisions):
///
/// - `replicas: 1`, **0 when `spec.paused`**; `serviceName: <node>`; selector `{sei.io/node: <node>}` only;
///   `updateStrategy: OnDelete` (pods are replaced by the `replace-pod` task, never by the controller); no
///   volumeClaimTemplates (the data PVC is created by `ensure-data-pvc`); pod template labels =
///   [`resource_labels`](super::resource_labels) and annotation `karpenter.sh/do-not-disrupt: "true"`.
/// - Init containers, in order: `seid-init` (`seid init` once, then `mkdir <data>/tmp`; validators also pin
///   `keyring-backend` in `client.toml` on every boot), `sei-sidecar` (`seictl serve`, a native sidecar with
///   `restartPolicy: Always`), and `kube-rbac-proxy` (native sidecar, only when its image is configured).
/// - Containers: `seid`, which polls the sidecar's `/v0/healthz` every 5 s and only then `exec`s
///   `seid start --home /home/nonroot/.sei`, and `cosmos-exporter` (not for seeds; only when its image is
///   configured).
/// - Probes: seid startup = `GET /v0/healthz` through the proxy (8443) or, without it, on the sidecar port,
///   failureThreshold 86400; readiness = `GET /lag_status` on 26657 (seed: TCP 26656); no liveness probe
///   (enforced by [`check_probe_contract`]).
/// - Scheduling: required node affinity `karpenter.sh/nodepool In [<pool of the mode>]` and toleration
///   `<tolerationKey>=<pool>:NoSchedule`, each only when configured; required pod anti-affinity (any namespace,
///   per hostname) against pods labelled `sei.io/dedicated-node=true`, and against every `sei.io/node` pod when
///   the node itself opts in (annotation `sei.io/dedicated-node: "true"`); the service account when configured.
/// - Security: pod `fsGroup` 65532 (`OnRootMismatch`), `shareProcessNamespace` (the sidecar signals seid),
///   `automountServiceAccountToken`; sidecar, proxy and exporter run as 65532 with a read-only root filesystem,
///   no privilege escalation, all capabilities dropped and the RuntimeDefault seccomp profile; seid and
///   seid-init the same but with a writable root filesystem.
/// - Resources: seid's per-role CPU request and memory (request = limit, no CPU limit); seeds also get
///   `GOMEMLIMIT` = 87 % of the memory limit; the sidecar gets `spec.sidecar.resources`.
/// - Key material: the signing and node keys are mounted read-only (mode 0400, subPath) at
///   `<data>/config/{priv_validator_key,node_key}.json` in seid only; the operator keyring at
///   `<data>/keyring-file` in the sidecar (and seid with `seidMount`), with `SEI_KEYRING_*` env; enforced by
///   [`check_secret_containment`].
///
/// Without kube-rbac-proxy the sidecar runs with `SEI_SIDECAR_AUTHN_MODE=unauthenticated` (it then binds every
/// interface, so the operator can reach it through the Service); with the proxy it runs `trusted-header` and
/// binds loopback only.
pub fn statefulset(node: &sei_crds::SeiNode, cfg: &PlatformConfig) -> Result<StatefulSet> {
    let t = Target::new(node)?;
    let sidecar_port = checked_sidecar_port(&t)?;
    let pod = pod_spec(&t, cfg, sidecar_port)?;
    check_port_conflicts(&t, &pod)?;
    check_probe_contract(node, &pod)?;
    check_secret_containment(node, &pod)?;

    let template_annotations =
        BTreeMap::from([(labels::KARPENTER_DO_NOT_DISRUPT.to_owned(), "true".to_owned())]);
    Ok(StatefulSet {
        metadata: t.metadata(t.name),
        spec: Some(StatefulSetSpec {
            // One replica; none while paused.
            replicas: Some(i32::from(!node.spec.paused)),
            service_name: Some(t.name.to_owned()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(node)),
                ..LabelSelector::default()
            },
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_owned()),
                ..StatefulSetUpdateStrategy::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(resource_labels(node)),
                    annotations: Some(template_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..StatefulSetSpec::default()
        }),
        status: None,
    })
}

fn checked_sidecar_port(t: &Target<'_>) -> Result<u16> {
    let port = t.node.spec.sidecar_port();
    u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| RenderError::InvalidSidecarPort {
            node: t.name.to_owned(),
            port,
        })
}

fn pod_spec(t: &Target<'_>, cfg: &PlatformConfig, sidecar_port: u16) -> Result<PodSpec> {
    let mut init_containers = vec![seid_init(t), sidecar(t, cfg, sidecar_port)];
    if let Some(image) = &cfg.images.kube_rbac_proxy {
        init_containers.push(rbac_proxy(image, sidecar_port));
    }
    let mut containers = vec![seid(t, cfg, sidecar_port)?];
    if t.mode != Mode::Seed
        && let Some(image) = &cfg.images.cosmos_exporter
    {
        containers.push(cosmos_exporter(image));
    }
    let pool = cfg.scheduling.nodepool_for(t.mode);
    let tolerations = match (pool, cfg.scheduling.toleration_key.as_deref()) {
        (Some(pool), Some(key)) => Some(vec![Toleration {
            key: Some(key.to_owned()),
            operator: Some("Equal".to_owned()),
            value: Some(pool.to_owned()),
            effect: Some("NoSchedule".to_owned()),
            ..Toleration::default()
        }]),
        _ => None,
    };
    Ok(PodSpec {
        automount_service_account_token: Some(true),
        service_account_name: cfg.scheduling.service_account.clone(),
        share_process_namespace: Some(true),
        security_context: Some(PodSecurityContext {
            fs_group: Some(NON_ROOT_ID),
            fs_group_change_policy: Some("OnRootMismatch".to_owned()),
            ..PodSecurityContext::default()
        }),
        affinity: Some(affinity(t, pool)),
        tolerations,
        volumes: Some(volumes(t, cfg)),
        init_containers: Some(init_containers),
        containers,
        ..PodSpec::default()
    })
}

fn affinity(t: &Target<'_>, pool: Option<&str>) -> Affinity {
    let node_affinity = pool.map(|pool| NodeAffinity {
        required_during_scheduling_ignored_during_execution: Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: NODEPOOL_LABEL.to_owned(),
                    operator: "In".to_owned(),
                    values: Some(vec![pool.to_owned()]),
                }]),
                ..NodeSelectorTerm::default()
            }],
        }),
        ..NodeAffinity::default()
    });
    let term = |requirement: LabelSelectorRequirement| PodAffinityTerm {
        label_selector: Some(LabelSelector {
            match_expressions: Some(vec![requirement]),
            ..LabelSelector::default()
        }),
        // An empty selector means every namespace: a dedicated Kubernetes node is dedicated cluster-wide.
        namespace_selector: Some(LabelSelector::default()),
        topology_key: HOSTNAME_TOPOLOGY.to_owned(),
        ..PodAffinityTerm::default()
    };
    let mut terms = vec![term(LabelSelectorRequirement {
        key: labels::DEDICATED_NODE.to_owned(),
        operator: "In".to_owned(),
        values: Some(vec!["true".to_owned()]),
    })];
    if is_dedicated(t.node) {
        terms.push(term(LabelSelectorRequirement {
            key: labels::NODE.to_owned(),
            operator: "Exists".to_owned(),
            values: None,
        }));
    }
    Affinity {
        node_affinity,
        pod_anti_affinity: Some(PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(terms),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

fn volumes(t: &Target<'_>, cfg: &PlatformConfig) -> Vec<Volume> {
    let empty_dir = |name: &str| Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    };
    let secret_item = |name: &str, secret: &str, key: &str| Volume {
        name: name.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            items: Some(vec![KeyToPath {
                key: key.to_owned(),
                path: key.to_owned(),
                mode: None,
            }]),
            default_mode: Some(0o400),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    let mut out = vec![
        Volume {
            name: VOL_DATA.to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: data_pvc_name(t.node),
                read_only: None,
            }),
            ..Volume::default()
        },
        empty_dir(VOL_HOME),
        empty_dir(VOL_SIDECAR_TMP),
    ];
    if cfg.images.cosmos_exporter.is_some() && t.mode != Mode::Seed {
        out.push(empty_dir(VOL_EXPORTER_TMP));
    }
    if cfg.renders_rbac_proxy() {
        out.push(Volume {
            name: VOL_RBAC_PROXY_CONFIG.to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: rbac_proxy_config_map_name(t.name),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    if let Some(secret) = t.node.spec.signing_key_secret() {
        out.push(secret_item(
            VOL_SIGNING_KEY,
            &secret.secret_name,
            SIGNING_KEY_DATA_KEY,
        ));
    }
    if let Some(secret) = t.node.spec.node_key_secret() {
        out.push(secret_item(VOL_NODE_KEY, &secret.secret_name, NODE_KEY_DATA_KEY));
    }
    if let Some(keyring) = t.node.spec.operator_keyring_secret() {
        out.push(Volume {
            name: VOL_OPERATOR_KEYRING.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(keyring.secret_name.clone()),
                default_mode: Some(0o400),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    out
}

/// A volume mount. Containers list `home` before `data`: the data volume is mounted inside home, and a runtime
/// that mounts in list order must not shadow it.
fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        ..VolumeMount::default()
    }
}

fn read_only(mut m: VolumeMount) -> VolumeMount {
    m.read_only = Some(true);
    m
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(port),
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

fn http_probe(path: &str, port: u16) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(i32::from(port)),
            ..HTTPGetAction::default()
        }),
        ..Probe::default()
    }
}

fn tcp_probe(port: u16) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(i32::from(port)),
            host: None,
        }),
        ..Probe::default()
    }
}

fn timings(mut probe: Probe, delay: i32, period: i32, failures: i32) -> Probe {
    probe.initial_delay_seconds = Some(delay).filter(|d| *d != 0);
    probe.period_seconds = Some(period);
    probe.failure_threshold = Some(failures);
    probe
}

/// seid and seid-init: non-root, no privilege escalation, no capabilities, writable root filesystem.
fn seid_security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(NON_ROOT_ID),
        run_as_group: Some(NON_ROOT_ID),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

/// Sidecar, proxy and exporter: as seid plus a read-only root filesystem.
fn sidecar_security_context() -> SecurityContext {
    SecurityContext {
        read_only_root_filesystem: Some(true),
        ..seid_security_context()
    }
}

/// `seid init` once (the genesis file marks an initialised home), then the scratch dir seid's `TMPDIR` points
/// at. The chain id comes from the env, never spliced into the script.
const SEID_INIT_SCRIPT: &str = r#"set -eu
if [ ! -f "$SEI_HOME/config/genesis.json" ]; then
  seid init "$SEI_CHAIN_ID" --chain-id "$SEI_CHAIN_ID" --home "$SEI_HOME" --overwrite
fi
mkdir -p "$SEI_HOME/tmp"
"#;

/// Validators: pin the client keyring backend on every boot (idempotent).
const SEID_INIT_KEYRING_SCRIPT: &str = r#"client="$SEI_HOME/config/client.toml"
if [ -f "$client" ] && grep -q '^keyring-backend' "$client"; then
  sed -i "s/^keyring-backend.*/keyring-backend = \"$KEYRING_BACKEND\"/" "$client"
else
  echo "keyring-backend = \"$KEYRING_BACKEND\"" >> "$client"
fi
"#;

fn keyring_backend(t: &Target<'_>) -> &'static str {
    if t.node.spec.operator_keyring_secret().is_some() {
        "file"
    } else {
        "test"
    }
}

fn seid_init(t: &Target<'_>) -> Container {
    let mut script = SEID_INIT_SCRIPT.to_owned();
    let mut env_vars = vec![
        env("HOME", HOME_DIR),
        env("SEI_HOME", DATA_DIR),
        env("SEI_CHAIN_ID", &t.node.spec.chain_id),
    ];
    if t.mode == Mode::Validator {
        script.push_str(SEID_INIT_KEYRING_SCRIPT);
        env_vars.push(env("KEYRING_BACKEND", keyring_backend(t)));
    }
    Container {
        name: SEID_INIT.to_owned(),
        image: Some(t.node.spec.image.clone()),
        command: Some(vec!["/bin/sh".to_owned(), "-c".to_owned()]),
        args: Some(vec![script]),
        env: Some(env_vars),
        volume_mounts: Some(vec![mount(VOL_HOME, HOME_DIR), mount(VOL_DATA, DATA_DIR)]),
        security_context: Some(seid_security_context()),
        ..Container::default()
    }
}

/// `SEI_KEYRING_*` for validators: the backend, the keyring dir and (file backend) the passphrase.
fn keyring_env(t: &Target<'_>) -> Vec<EnvVar> {
    if t.mode != Mode::Validator {
        return Vec::new();
    }
    let mut out = vec![
        env("SEI_KEYRING_BACKEND", keyring_backend(t)),
        env("SEI_KEYRING_DIR", DATA_DIR),
    ];
    if let Some(keyring) = t.node.spec.operator_keyring_secret() {
        out.push(EnvVar {
            name: "SEI_KEYRING_PASSPHRASE".to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: keyring.passphrase_secret_ref.secret_name.clone(),
                    key: keyring.passphrase_secret_ref.key.clone(),
                    optional: None,
                }),
                ..EnvVarSource::default()
            }),
        });
    }
    out
}

fn keyring_mount() -> VolumeMount {
    read_only(mount(VOL_OPERATOR_KEYRING, &format!("{DATA_DIR}/keyring-file")))
}

fn sidecar(t: &Target<'_>, cfg: &PlatformConfig, sidecar_port: u16) -> Container {
    let authn = if cfg.renders_rbac_proxy() {
        "trusted-header"
    } else {
        "unauthenticated"
    };
    let mut env_vars = vec![
        env("SEI_CHAIN_ID", &t.node.spec.chain_id),
        env("SEI_SIDECAR_PORT", sidecar_port.to_string()),
        env("SEI_HOME", DATA_DIR),
        env("HOME", HOME_DIR),
    ];
    let stores = [("GENESIS", &cfg.genesis), ("SNAPSHOT", &cfg.snapshot)];
    for (upper, store) in stores {
        if let Some(bucket) = &store.bucket {
            env_vars.push(env(&format!("SEI_{upper}_BUCKET"), bucket));
        }
        if let Some(region) = &store.region {
            env_vars.push(env(&format!("SEI_{upper}_REGION"), region));
        }
    }
    env_vars.push(env("SEI_SIDECAR_AUTHN_MODE", authn));
    env_vars.extend(keyring_env(t));

    let mut mounts = vec![
        mount(VOL_HOME, HOME_DIR),
        mount(VOL_DATA, DATA_DIR),
        mount(VOL_SIDECAR_TMP, "/tmp"),
    ];
    if t.node.spec.operator_keyring_secret().is_some() {
        mounts.push(keyring_mount());
    }
    Container {
        name: SIDECAR.to_owned(),
        image: Some(
            t.node
                .spec
                .sidecar_image()
                .unwrap_or(&cfg.images.sidecar)
                .to_owned(),
        ),
        restart_policy: Some("Always".to_owned()),
        command: Some(vec!["seictl".to_owned(), "serve".to_owned()]),
        env: Some(env_vars),
        ports: Some(vec![port(PORT_NAME_SIDECAR, sidecar_port)]),
        volume_mounts: Some(mounts),
        resources: t.node.spec.sidecar.as_ref().and_then(|s| s.resources.clone()),
        security_context: Some(sidecar_security_context()),
        ..Container::default()
    }
}

fn rbac_proxy(image: &str, sidecar_port: u16) -> Container {
    Container {
        name: RBAC_PROXY.to_owned(),
        image: Some(image.to_owned()),
        restart_policy: Some("Always".to_owned()),
        args: Some(vec![
            format!("--insecure-listen-address=0.0.0.0:{RBAC_PROXY_PORT}"),
            format!("--upstream=http://127.0.0.1:{sidecar_port}/"),
            format!("--config-file={RBAC_PROXY_CONFIG_DIR}/config.yaml"),
            format!("--ignore-paths={RBAC_PROXY_IGNORE_PATHS}"),
            "--auth-header-fields-enabled=true".to_owned(),
            "--v=0".to_owned(),
        ]),
        ports: Some(vec![port(PORT_NAME_API, RBAC_PROXY_PORT)]),
        volume_mounts: Some(vec![read_only(mount(
            VOL_RBAC_PROXY_CONFIG,
            RBAC_PROXY_CONFIG_DIR,
        ))]),
        startup_probe: Some(timings(tcp_probe(RBAC_PROXY_PORT), 5, 5, 60)),
        liveness_probe: Some(timings(http_probe("/v0/livez", RBAC_PROXY_PORT), 5, 10, 3)),
        readiness_probe: Some(timings(http_probe("/v0/healthz", RBAC_PROXY_PORT), 2, 5, 6)),
        security_context: Some(sidecar_security_context()),
        ..Container::default()
    }
}

/// seid's gate: a raw HTTP/1.0 `GET /v0/healthz` to the sidecar on loopback through bash's `/dev/tcp`, every
/// 5 s, until the status line says 200 (the sidecar answers 200 only after a `mark-ready` task). Followed by
/// the command that starts seid ([`seid_script`]; the bootstrap Job's halts at a height).
const SEID_GATE: &str = r#"healthy() {
  exec 3<>"/dev/tcp/127.0.0.1/$SIDECAR_PORT" || return 1
  printf 'GET /v0/healthz HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
  IFS= read -r status <&3 || return 1
  case "$status" in
    HTTP/*" 200"*) return 0 ;;
    *) return 1 ;;
  esac
}
until (healthy) 2>/dev/null; do
  echo "waiting for the sidecar on port $SIDECAR_PORT to report healthy"
  sleep 5
done
"#;

/// The gate, then `start` (one shell line): the script seid's container runs.
pub(super) fn seid_script(start: &str) -> String {
    format!("{SEID_GATE}{start}\n")
}

fn seid(t: &Target<'_>, cfg: &PlatformConfig, sidecar_port: u16) -> Result<Container> {
    let res = cfg.resources.for_mode(t.mode);
    let keyring_in_seid = t
        .node
        .spec
        .operator_keyring_secret()
        .is_some_and(|k| k.seid_mount);

    let mut env_vars = vec![
        env("HOME", HOME_DIR),
        env("SEI_HOME", DATA_DIR),
        env("TMPDIR", format!("{DATA_DIR}/tmp")),
        env("SIDECAR_PORT", sidecar_port.to_string()),
    ];
    if t.mode == Mode::Seed {
        env_vars.push(env("GOMEMLIMIT", go_mem_limit(t, &res.memory)?));
    }
    if keyring_in_seid {
        env_vars.extend(keyring_env(t));
    }

    let mut mounts = vec![mount(VOL_HOME, HOME_DIR), mount(VOL_DATA, DATA_DIR)];
    let key_file = |volume: &str, key: &str| VolumeMount {
        sub_path: Some(key.to_owned()),
        ..read_only(mount(volume, &format!("{DATA_DIR}/config/{key}")))
    };
    if t.node.spec.signing_key_secret().is_some() {
        mounts.push(key_file(VOL_SIGNING_KEY, SIGNING_KEY_DATA_KEY));
    }
    if t.node.spec.node_key_secret().is_some() {
        mounts.push(key_file(VOL_NODE_KEY, NODE_KEY_DATA_KEY));
    }
    if keyring_in_seid {
        mounts.push(keyring_mount());
    }

    let gate_port = if cfg.renders_rbac_proxy() {
        RBAC_PROXY_PORT
    } else {
        sidecar_port
    };
    let readiness = if t.mode == Mode::Seed {
        timings(tcp_probe(sei_crds::ports::P2P), 30, 10, 3)
    } else {
        timings(http_probe("/lag_status", sei_crds::ports::RPC), 30, 10, 3)
    };
    Ok(Container {
        name: SEID.to_owned(),
        image: Some(t.node.spec.image.clone()),
        command: Some(vec!["/bin/bash".to_owned(), "-c".to_owned()]),
        args: Some(vec![seid_script(r#"exec seid start --home "$SEI_HOME""#)]),
        env: Some(env_vars),
        ports: Some(SEID_PORTS.iter().map(|(name, p)| port(name, *p)).collect()),
        volume_mounts: Some(mounts),
        startup_probe: Some(timings(
            http_probe("/v0/healthz", gate_port),
            5,
            5,
            SEID_STARTUP_FAILURE_THRESHOLD,
        )),
        readiness_probe: Some(Probe {
            timeout_seconds: Some(5),
            ..readiness
        }),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), res.cpu_request.clone()),
                ("memory".to_owned(), res.memory.clone()),
            ])),
            limits: Some(BTreeMap::from([("memory".to_owned(), res.memory.clone())])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(seid_security_context()),
        ..Container::default()
    })
}

/// `GOMEMLIMIT` of a seed: 87 % of the memory limit in bytes, rounded down, as `<n>B`.
fn go_mem_limit(t: &Target<'_>, memory: &Quantity) -> Result<String> {
    let bytes = quantity::parse(&memory.0)
        .map_err(|reason| RenderError::InvalidQuantity {
            node: t.name.to_owned(),
            field: "resources.seed.memory",
            reason,
        })?
        .ceil();
    Ok(format!("{}B", bytes / 100 * 87 + bytes % 100 * 87 / 100))
}

fn cosmos_exporter(image: &str) -> Container {
    let script = format!(
        "until (exec 3<>/dev/tcp/127.0.0.1/{grpc}) 2>/dev/null; do sleep 5; done\n\
         exec /usr/local/bin/sei-cosmos-exporter --denom usei --denom-coefficient 1000000 \
         --bech-prefix sei --listen-address :{COSMOS_EXPORTER_PORT}\n",
        grpc = sei_crds::ports::GRPC,
    );
    Container {
        name: COSMOS_EXPORTER.to_owned(),
        image: Some(image.to_owned()),
        command: Some(vec!["/bin/bash".to_owned(), "-c".to_owned()]),
        args: Some(vec![script]),
        ports: Some(vec![port("cosmos-metrics", COSMOS_EXPORTER_PORT)]),
        readiness_probe: Some(timings(tcp_probe(COSMOS_EXPORTER_PORT), 0, 10, 6)),
        liveness_probe: Some(timings(tcp_probe(COSMOS_EXPORTER_PORT), 600, 10, 3)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("50m".to_owned())),
                ("memory".to_owned(), Quantity("64Mi".to_owned())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity("384Mi".to_owned()),
            )])),
            ..ResourceRequirements::default()
        }),
        volume_mounts: Some(vec![mount(VOL_EXPORTER_TMP, "/tmp")]),
        security_context: Some(sidecar_security_context()),
        ..Container::default()
    }
}

/// Refuses a pod in which two containers (they share one network namespace) declare the same port, e.g. a
/// `spec.sidecar.port` of 26657 or 8443.
fn check_port_conflicts(t: &Target<'_>, pod: &PodSpec) -> Result<()> {
    let mut seen: BTreeMap<i32, String> = BTreeMap::new();
    for container in pod.init_containers.iter().flatten().chain(&pod.containers) {
        for p in container.ports.iter().flatten() {
            let label = format!("{} port {}", container.name, p.name.as_deref().unwrap_or("?"));
            if let Some(other) = seen.insert(p.container_port, label) {
                return Err(RenderError::PortConflict {
                    node: t.name.to_owned(),
                    port: u16::try_from(p.container_port).unwrap_or_default(),
                    container: container.name.clone(),
                    other,
                });
            }
        }
    }
    Ok(())
}
