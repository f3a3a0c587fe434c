//! The node's data PersistentVolumeClaim (reference section 4.3).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use sei_crds::SeiNode;

use super::{RenderError, Result, Target};
use crate::platform::PlatformConfig;

/// The name of the node's data PVC: the imported `spec.dataVolume.import.pvcName`, else `data-<node>`.
pub fn data_pvc_name(node: &SeiNode) -> String {
    node.spec.imported_pvc().map_or_else(
        || format!("data-{}", node.metadata.name.as_deref().unwrap_or_default()),
        str::to_owned,
    )
}

/// Renders the data PVC `data-<node>` the `ensure-data-pvc` task creates: `ReadWriteOnce`, the storage class
/// of the node's mode (omitted when unset: the cluster's default class) and its size (see
/// [`crate::platform::Storage`]).
///
/// A node that imports its PVC gets [`RenderError::ImportedDataVolume`]: that PVC exists already, is validated
/// rather than created, and is never owned or deleted by the operator.
pub fn data_pvc(node: &SeiNode, cfg: &PlatformConfig) -> Result<PersistentVolumeClaim> {
    let t = Target::new(node)?;
    if let Some(pvc) = node.spec.imported_pvc() {
        return Err(RenderError::ImportedDataVolume {
            node: t.name.to_owned(),
            pvc: pvc.to_owned(),
        });
    }
    Ok(PersistentVolumeClaim {
        metadata: t.metadata(&data_pvc_name(node)),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: cfg.storage.class_for(t.mode).map(str::to_owned),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    cfg.storage.size_for(t.mode).clone(),
                )])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    })
}
