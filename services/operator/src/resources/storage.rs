//! The tenant's workspace volume: PVC `tenant-workspace` of `maxStorageGb` GiB, which sandbox
//! pods mount at /workspace with one subPath per session (`COGNITION_K8S_WORKSPACE_PVC`).
//!
//! A PVC can grow but not shrink, and its class cannot change: lowering `maxStorageGb` or
//! changing `COGNITION_OPERATOR_STORAGE_CLASS` makes the apply fail (reported in `Ready`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::meta;
use crate::config::Config;
use crate::tenant::Tenant;

/// The PVC's name.
pub const WORKSPACE_PVC: &str = "tenant-workspace";

/// `tenant-workspace`; ReadWriteOnce, of the configured StorageClass or the cluster default.
pub fn workspace(tenant: &Tenant, config: &Config) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: meta(tenant, WORKSPACE_PVC),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(format!("{}Gi", tenant.storage_gb)),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            storage_class_name: (!config.storage_class.is_empty())
                .then(|| config.storage_class.clone()),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}
