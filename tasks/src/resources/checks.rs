//! Render-time guards on a finished pod spec: key material containment and the probe contract. They run on
//! every StatefulSet [`super::statefulset`] renders and are public so a test (or a future generator) can run
//! them on any pod spec.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sei_crds::{Mode, SeiNode};

use super::{RenderError, Result, SEID, SIDECAR};

/// Refuses a pod in which key material reaches a container that must not see it (reference section 10 item
/// 37):
/// - the signing key (`priv_validator_key.json`) and the node key (`node_key.json`) reach `seid` only;
/// - the operator keyring and its passphrase reach `sei-sidecar` only, plus `seid` when
///   `operatorKeyring.secret.seidMount` is set.
///
/// "Reach" means a volume mount of a volume backed by the Secret (directly or projected), an env var taken from
/// it (`secretKeyRef`) or an `envFrom` of it, in any init or regular container. The check goes by Secret name, so
/// a spec whose Secrets are not distinct (for example the keyring Secret also being the signing-key Secret) is
/// caught as well.
pub fn check_secret_containment(node: &SeiNode, pod: &PodSpec) -> Result<()> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let seid_mount = node.spec.operator_keyring_secret().is_some_and(|k| k.seid_mount);
    let keyring_allowed: &[&str] = if seid_mount { &[SIDECAR, SEID] } else { &[SIDECAR] };

    let mut guarded: Vec<(&'static str, &str, &[&str])> = Vec::new();
    if let Some(secret) = node.spec.signing_key_secret() {
        guarded.push(("signing key", &secret.secret_name, &[SEID]));
    }
    if let Some(secret) = node.spec.node_key_secret() {
        guarded.push(("node key", &secret.secret_name, &[SEID]));
    }
    if let Some(keyring) = node.spec.operator_keyring_secret() {
        guarded.push(("operator keyring", &keyring.secret_name, keyring_allowed));
        guarded.push((
            "operator keyring passphrase",
            &keyring.passphrase_secret_ref.secret_name,
            keyring_allowed,
        ));
    }
    if guarded.is_empty() {
        return Ok(());
    }

    let volume_secrets = volume_secrets(pod);
    let containers = pod.init_containers.iter().flatten().chain(&pod.containers);
    for container in containers {
        let reached = secrets_reached(container, &volume_secrets);
        for (kind, secret, allowed) in &guarded {
            if reached.iter().any(|s| s == secret) && !allowed.contains(&container.name.as_str()) {
                return Err(RenderError::SecretLeak {
                    node: name,
                    kind,
                    secret: (*secret).to_owned(),
                    container: container.name.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Volume name -> the Secrets behind it.
pub(super) fn volume_secrets(pod: &PodSpec) -> BTreeMap<&str, Vec<&str>> {
    let mut out = BTreeMap::new();
    for volume in pod.volumes.iter().flatten() {
        let mut secrets = Vec::new();
        if let Some(name) = volume.secret.as_ref().and_then(|s| s.secret_name.as_deref()) {
            secrets.push(name);
        }
        let projected = volume.projected.as_ref().and_then(|p| p.sources.as_ref());
        for source in projected.into_iter().flatten() {
            if let Some(secret) = &source.secret {
                secrets.push(secret.name.as_str());
            }
        }
        out.insert(volume.name.as_str(), secrets);
    }
    out
}

/// The Secrets a container reaches through mounts, `secretKeyRef` env and `envFrom`.
pub(super) fn secrets_reached<'a>(
    container: &'a Container,
    volumes: &BTreeMap<&str, Vec<&'a str>>,
) -> Vec<&'a str> {
    let mut out = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        if let Some(secrets) = volumes.get(mount.name.as_str()) {
            out.extend(secrets.iter().copied());
        }
    }
    for env in container.env.iter().flatten() {
        if let Some(r) = env.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()) {
            out.push(r.name.as_str());
        }
    }
    for from in container.env_from.iter().flatten() {
        if let Some(r) = &from.secret_ref {
            out.push(r.name.as_str());
        }
    }
    out
}

/// Refuses probes that break the seid start gate (reference section 10 item 34): `seid` must have no liveness
/// probe (a restart would park it behind the sidecar gate again and, for a validator, risks double signing
/// windows) and no startup probe on the RPC (26657) or gRPC (9090) ports (seid waits for the sidecar first, for
/// as long as the init plan takes); a seed serves neither port, so no seed probe of any kind may target them.
pub fn check_probe_contract(node: &SeiNode, pod: &PodSpec) -> Result<()> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let mode = node.mode().map_err(|source| RenderError::Mode {
        node: name.clone(),
        source,
    })?;
    let violation = |reason: String| RenderError::ProbeContract {
        node: name.clone(),
        container: SEID.to_owned(),
        reason,
    };
    let Some(seid) = pod.containers.iter().find(|c| c.name == SEID) else {
        return Err(violation("the pod has no seid container".to_owned()));
    };
    if seid.liveness_probe.is_some() {
        return Err(violation("seid must not have a liveness probe".to_owned()));
    }
    let rpc_ports = [sei_crds::ports::RPC, sei_crds::ports::GRPC];
    if let Some(port) = probe_port(seid, seid.startup_probe.as_ref()).filter(|p| rpc_ports.contains(p)) {
        return Err(violation(format!(
            "seid's startup probe must not target port {port}: seid waits for the sidecar first"
        )));
    }
    if mode == Mode::Seed {
        let probes = [
            ("readiness", seid.readiness_probe.as_ref()),
            ("startup", seid.startup_probe.as_ref()),
        ];
        for (kind, probe) in probes {
            if let Some(port) = probe_port(seid, probe).filter(|p| rpc_ports.contains(p)) {
                return Err(violation(format!(
                    "a seed serves no RPC: its {kind} probe must not target port {port}"
                )));
            }
        }
    }
    Ok(())
}

/// The port a probe targets, resolving a named port against the container's ports.
fn probe_port(container: &Container, probe: Option<&Probe>) -> Option<u16> {
    let probe = probe?;
    let port = probe
        .http_get
        .as_ref()
        .map(|h| &h.port)
        .or_else(|| probe.tcp_socket.as_ref().map(|t| &t.port));
    if let Some(grpc) = &probe.grpc {
        return u16::try_from(grpc.port).ok();
    }
    match port? {
        IntOrString::Int(p) => u16::try_from(*p).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}
