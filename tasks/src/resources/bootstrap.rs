//! The bootstrap Job and its Service (reference section 4.5), for a node whose snapshot source names a
//! `bootstrapImage`: the Job restores the snapshot and replays to `s3.targetHeight` on the node's data volume
//! before the StatefulSet exists, then exits.
//!
//! The Job's pod is the StatefulSet's pod with these differences: labels `{sei.io/node, sei.io/component:
//! bootstrap}`; `hostname: <node>-0` and `subdomain: <node>` (with the bootstrap Service `<node>`, the sidecar
//! answers at the StatefulSet pod's DNS name, so the same sidecar client reaches it); `restartPolicy: Never`,
//! grace 120 s; `seid-init` and `seid` run `bootstrapImage`, and seid runs to `--halt-height <targetHeight>`
//! (exit code 130, the halt, counts as success); no probes; only seid as a regular container (another one
//! would keep the Job from completing). **No key material**: the pod is rendered from the node without its
//! signing key, node key and operator keyring, and [`check_no_key_material`] refuses the Job if one of those
//! Secrets still reaches any volume, env var or container.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sei_crds::{SeiNode, labels};

use super::{
    PORT_NAME_API, PORT_NAME_SIDECAR, RenderError, Result, SEID, SEID_INIT, Target, owner_reference,
};
use crate::platform::PlatformConfig;

/// The bootstrap Job's name: `<node>-bootstrap`.
#[must_use]
pub fn bootstrap_job_name(node: &SeiNode) -> String {
    format!("{}-bootstrap", node.metadata.name.as_deref().unwrap_or_default())
}

/// `(bootstrapImage, targetHeight)` when the node bootstraps through a Job (reference 2.4 `NeedsBootstrap`:
/// a snapshot source with `bootstrapImage` and `s3.targetHeight > 0`).
#[must_use]
pub fn bootstrap_of(node: &SeiNode) -> Option<(&str, i64)> {
    let snapshot = node.spec.snapshot_source()?;
    let image = snapshot.bootstrap_image.as_deref().filter(|i| !i.is_empty())?;
    let height = snapshot.s3.as_ref()?.target_height.filter(|h| *h > 0)?;
    Some((image, height))
}

/// The labels of the bootstrap Job, its pod and the bootstrap Service's selector.
#[must_use]
pub fn bootstrap_labels(node: &SeiNode) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            labels::NODE.to_owned(),
            node.metadata.name.clone().unwrap_or_default(),
        ),
        (
            labels::COMPONENT.to_owned(),
            labels::COMPONENT_BOOTSTRAP.to_owned(),
        ),
    ])
}

/// seid's gate, then a run to the halt height (exit 130 is seid's way of stopping there).
const BOOTSTRAP_SEID_START: &str = r#"seid start --home "$SEI_HOME" --halt-height "$HALT_HEIGHT" || { code=$?; [ "$code" -eq 130 ] || exit "$code"; }"#;

fn metadata(t: &Target<'_>, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(t.namespace.to_owned()),
        labels: Some(bootstrap_labels(t.node)),
        owner_references: owner_reference(t.node).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

/// The node without its key material (the bootstrap pod never carries validator Secrets).
fn without_keys(node: &SeiNode) -> SeiNode {
    let mut bare = node.clone();
    if let Some(v) = bare.spec.validator.as_mut() {
        v.signing_key = None;
        v.node_key = None;
        v.operator_keyring = None;
    }
    bare
}

fn bootstrap_pod(node: &SeiNode, cfg: &PlatformConfig, image: &str, height: i64) -> Result<PodSpec> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let sts = super::statefulset(&without_keys(node), cfg)?;
    let mut pod = sts.spec.and_then(|s| s.template.spec).unwrap_or_default();
    pod.containers.retain(|c| c.name == SEID);
    for c in &mut pod.containers {
        c.image = Some(image.to_owned());
        c.args = Some(vec![super::statefulset::seid_script(BOOTSTRAP_SEID_START)]);
        c.startup_probe = None;
        c.readiness_probe = None;
        c.liveness_probe = None;
        c.env
            .get_or_insert_with(Vec::new)
            .push(k8s_openapi::api::core::v1::EnvVar {
                name: "HALT_HEIGHT".to_owned(),
                value: Some(height.to_string()),
                ..Default::default()
            });
    }
    for c in pod.init_containers.iter_mut().flatten() {
        if c.name == SEID_INIT {
            c.image = Some(image.to_owned());
        }
    }
    pod.hostname = Some(format!("{name}-0"));
    pod.subdomain = Some(name);
    pod.restart_policy = Some("Never".to_owned());
    pod.termination_grace_period_seconds = Some(120);
    Ok(pod)
}

/// Renders the bootstrap Job `<node>-bootstrap` (see the module docs). `Ok(None)` when the node does not
/// bootstrap through a Job.
///
/// # Errors
/// What rendering the StatefulSet's pod refuses, and [`RenderError::SecretLeak`] when key material would reach
/// the Job's pod.
pub fn bootstrap_job(node: &SeiNode, cfg: &PlatformConfig) -> Result<Option<Job>> {
    let Some((image, height)) = bootstrap_of(node) else {
        return Ok(None);
    };
    let t = Target::new(node)?;
    let pod = bootstrap_pod(node, cfg, image, height)?;
    check_no_key_material(node, &pod)?;
    let annotations = BTreeMap::from([(labels::KARPENTER_DO_NOT_DISRUPT.to_owned(), "true".to_owned())]);
    Ok(Some(Job {
        metadata: metadata(&t, &bootstrap_job_name(node)),
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            ttl_seconds_after_finished: Some(3600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(bootstrap_labels(node)),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        status: None,
    }))
}

/// Renders the bootstrap Service `<node>`: headless, selecting the bootstrap pod, `publishNotReadyAddresses`,
/// one port: the sidecar's (`api` 8443 behind kube-rbac-proxy, else `sidecar` on the node's sidecar port).
///
/// # Errors
/// When the node has no name, namespace or mode.
pub fn bootstrap_service(node: &SeiNode, cfg: &PlatformConfig) -> Result<Service> {
    let t = Target::new(node)?;
    let port = cfg.sidecar_port_for(node);
    let port_name = if cfg.renders_rbac_proxy() {
        PORT_NAME_API
    } else {
        PORT_NAME_SIDECAR
    };
    Ok(Service {
        metadata: metadata(&t, t.name),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            selector: Some(bootstrap_labels(node)),
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![ServicePort {
                name: Some(port_name.to_owned()),
                port: i32::from(port),
                target_port: Some(IntOrString::Int(i32::from(port))),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// Refuses a bootstrap pod that any of the node's key Secrets (signing key, node key, operator keyring, its
/// passphrase) reaches: as a volume, an env var (`secretKeyRef`) or `envFrom`, in any container (reference
/// section 10 item 37: bootstrap pods never carry validator secrets).
///
/// # Errors
/// [`RenderError::SecretLeak`] naming the first Secret found and where.
pub fn check_no_key_material(node: &SeiNode, pod: &PodSpec) -> Result<()> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let mut guarded: Vec<(&'static str, &str)> = Vec::new();
    if let Some(s) = node.spec.signing_key_secret() {
        guarded.push(("signing key", &s.secret_name));
    }
    if let Some(s) = node.spec.node_key_secret() {
        guarded.push(("node key", &s.secret_name));
    }
    if let Some(k) = node.spec.operator_keyring_secret() {
        guarded.push(("operator keyring", &k.secret_name));
        guarded.push((
            "operator keyring passphrase",
            &k.passphrase_secret_ref.secret_name,
        ));
    }
    let volumes = super::checks::volume_secrets(pod);
    let leak = |kind: &'static str, secret: &str, container: &str| RenderError::SecretLeak {
        node: name.clone(),
        kind,
        secret: secret.to_owned(),
        container: container.to_owned(),
    };
    for (volume, secrets) in &volumes {
        if let Some((kind, secret)) = guarded.iter().find(|(_, s)| secrets.contains(s)) {
            return Err(leak(
                kind,
                secret,
                &format!("volume {volume} of the bootstrap pod"),
            ));
        }
    }
    for container in pod.init_containers.iter().flatten().chain(&pod.containers) {
        let reached = super::checks::secrets_reached(container, &volumes);
        if let Some((kind, secret)) = guarded.iter().find(|(_, s)| reached.contains(s)) {
            return Err(leak(kind, secret, &container.name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector, SecretVolumeSource, Volume};

    use super::*;

    fn node(mode: &serde_json::Value) -> SeiNode {
        let mut spec = serde_json::json!({"chainId": "pacific-1", "image": "seid:v1"});
        spec.as_object_mut()
            .unwrap()
            .extend(mode.as_object().unwrap().clone());
        serde_json::from_value(serde_json::json!({
            "apiVersion": "sei.io/v1alpha1", "kind": "SeiNode",
            "metadata": {"name": "n", "namespace": "ns", "uid": "u"}, "spec": spec,
        }))
        .unwrap()
    }

    fn snapshot() -> serde_json::Value {
        serde_json::json!({"s3": {"targetHeight": 42}, "bootstrapImage": "boot:v1"})
    }

    #[test]
    fn the_job_runs_the_bootstrap_image_to_the_target_height_as_the_pod_s_hostname() {
        let n = node(&serde_json::json!({"fullNode": {"snapshot": snapshot()}}));
        let job = bootstrap_job(&n, &PlatformConfig::default()).unwrap().unwrap();
        assert_eq!(job.metadata.name.as_deref(), Some("n-bootstrap"));
        let spec = job.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        let pod = spec.template.spec.unwrap();
        assert_eq!(
            (pod.hostname.as_deref(), pod.subdomain.as_deref()),
            (Some("n-0"), Some("n"))
        );
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let names: Vec<_> = pod.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, [SEID]);
        let seid = &pod.containers[0];
        assert_eq!(seid.image.as_deref(), Some("boot:v1"));
        assert!(
            seid.env
                .iter()
                .flatten()
                .any(|e| e.name == "HALT_HEIGHT" && e.value.as_deref() == Some("42"))
        );
        assert!(seid.startup_probe.is_none() && seid.readiness_probe.is_none());
        assert_eq!(
            spec.template.metadata.unwrap().labels.unwrap(),
            bootstrap_labels(&n)
        );
        let no_job = node(&serde_json::json!({"fullNode": {"snapshot": {"s3": {"targetHeight": 42}}}}));
        assert!(
            bootstrap_job(&no_job, &PlatformConfig::default())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_validator_s_keys_never_reach_the_bootstrap_pod() {
        let keys = serde_json::json!({"validator": {
            "snapshot": snapshot(),
            "signingKey": {"secret": {"secretName": "sign"}},
            "nodeKey": {"secret": {"secretName": "nk"}},
            "operatorKeyring": {"secret": {"secretName": "ring",
                "passphraseSecretRef": {"secretName": "pass", "key": "p"}}},
        }});
        let n = node(&keys);
        let job = bootstrap_job(&n, &PlatformConfig::default()).unwrap().unwrap();
        let mut pod = job.spec.unwrap().template.spec.unwrap();
        check_no_key_material(&n, &pod).unwrap();
        // A signing-key volume (even unmounted) or a passphrase env var is refused.
        let mut with_volume = pod.clone();
        with_volume.volumes.get_or_insert_with(Vec::new).push(Volume {
            name: "k".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some("sign".into()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        let err = check_no_key_material(&n, &with_volume).unwrap_err().to_string();
        assert!(err.contains("signing key") && err.contains("sign"), "{err}");
        pod.containers[0].env.get_or_insert_with(Vec::new).push(EnvVar {
            name: "P".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: "pass".into(),
                    key: "p".into(),
                    optional: None,
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
        let err = check_no_key_material(&n, &pod).unwrap_err().to_string();
        assert!(err.contains("passphrase"), "{err}");
    }
}
