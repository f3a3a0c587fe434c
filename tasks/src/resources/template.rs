//! The digest of a node's rendered StatefulSet, the spec drift the `node-reconfigure` workflow acts on: the
//! `apply-statefulset` task records the digest of what it applied (condition `StatefulSetApplied`), the
//! controller offers the digest of what the spec renders now (CEL fact `node.statefulSetDigest`), and the
//! workflow's trigger compares them. Replicas are left out (pausing is not drift).

use std::fmt::Write as _;

use sha2::{Digest as _, Sha256};

use crate::platform::PlatformConfig;

/// `sha256:<hex>` of the StatefulSet `node` renders to (replicas left out); `None` when it does not render.
#[must_use]
pub fn statefulset_digest(node: &sei_crds::SeiNode, cfg: &PlatformConfig) -> Option<String> {
    let mut sts = super::statefulset(node, cfg).ok()?;
    if let Some(spec) = sts.spec.as_mut() {
        spec.replicas = None;
    }
    let bytes = serde_json::to_vec(&sts).ok()?;
    let hex = Sha256::digest(&bytes)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
    Some(format!("sha256:{hex}"))
}
