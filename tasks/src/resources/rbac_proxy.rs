//! The kube-rbac-proxy configuration ConfigMap (reference section 4.4).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use sei_crds::SeiNode;

use super::{Result, Target};
use crate::platform::PlatformConfig;

/// The name of the node's kube-rbac-proxy ConfigMap: `<node>-rbac-proxy-config`.
pub fn rbac_proxy_config_map_name(node_name: &str) -> String {
    format!("{node_name}-rbac-proxy-config")
}

/// Renders the kube-rbac-proxy configuration, or `None` when the platform renders no proxy. Data key
/// `config.yaml` authorizes each request with a SubjectAccessReview on `seinodetasks.sei.io` named after the
/// node in its namespace (the verb follows the HTTP method: GET -> get, POST -> create, DELETE -> delete), as
/// upstream does, so `create seinodetasks` on a node is what lets a caller submit sidecar tasks to it.
pub fn rbac_proxy_config_map(node: &SeiNode, cfg: &PlatformConfig) -> Result<Option<ConfigMap>> {
    let t = Target::new(node)?;
    if !cfg.renders_rbac_proxy() {
        return Ok(None);
    }
    let config = format!(
        "authorization:\n  resourceAttributes:\n    apiGroup: sei.io\n    resource: seinodetasks\n    \
         namespace: {}\n    name: {}\n",
        t.namespace, t.name
    );
    Ok(Some(ConfigMap {
        metadata: t.metadata(&rbac_proxy_config_map_name(t.name)),
        data: Some(BTreeMap::from([("config.yaml".to_owned(), config)])),
        ..ConfigMap::default()
    }))
}
