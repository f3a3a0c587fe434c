//! The node's headless Service (reference section 4.2).

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sei_crds::SeiNode;

use super::{PORT_NAME_API, PORT_NAME_SIDECAR, Result, SEID_PORTS, Target, selector_labels};
use crate::platform::PlatformConfig;

/// Renders the headless Service `<node>` that gives the pod its DNS name
/// `<node>-0.<node>.<namespace>.svc.cluster.local`: `clusterIP: None`, selector `{sei.io/node: <node>}`,
/// `publishNotReadyAddresses` (the operator must reach the sidecar before seid is ready), the seven seid ports
/// (TCP, target = port; `grpc` with `appProtocol: kubernetes.io/h2c`) and the sidecar's port: `api` 8443 when
/// kube-rbac-proxy is rendered, else `sidecar` on the node's own sidecar port (see
/// [`PlatformConfig::sidecar_port_for`]).
pub fn headless_service(node: &SeiNode, cfg: &PlatformConfig) -> Result<Service> {
    let t = Target::new(node)?;
    let service_port = |name: &str, port: u16| ServicePort {
        name: Some(name.to_owned()),
        port: i32::from(port),
        target_port: Some(IntOrString::Int(i32::from(port))),
        protocol: Some("TCP".to_owned()),
        app_protocol: (name == "grpc").then(|| "kubernetes.io/h2c".to_owned()),
        ..ServicePort::default()
    };
    let mut ports: Vec<ServicePort> = SEID_PORTS
        .iter()
        .map(|(name, p)| service_port(name, *p))
        .collect();
    let sidecar_name = if cfg.renders_rbac_proxy() {
        PORT_NAME_API
    } else {
        PORT_NAME_SIDECAR
    };
    ports.push(service_port(sidecar_name, cfg.sidecar_port_for(node)));
    Ok(Service {
        metadata: t.metadata(t.name),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            selector: Some(selector_labels(node)),
            publish_not_ready_addresses: Some(true),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}
