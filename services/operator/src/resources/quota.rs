//! The tenant's ResourceQuota `tenant-quota` and LimitRange `tenant-limits`.
//!
//! The quota admits the server plus `maxSessions` sandboxes at their limits: pods =
//! maxSessions + 2 (server, sandboxes, one spare for a server rollout), cpu and memory (requests
//! and limits) = maxSessions × per-sandbox + the server's share, two PVCs, and `maxStorageGb` GiB
//! of storage requests. The LimitRange gives containers without limits the per-sandbox limits
//! and caps any container at the larger of a sandbox's and the server's share.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, ResourceQuota, ResourceQuotaSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::{meta, server};
use crate::quantity::{Bytes, Cpu};
use crate::tenant::Tenant;

/// The quota's name.
pub const QUOTA_NAME: &str = "tenant-quota";
/// The limit range's name.
pub const LIMIT_RANGE_NAME: &str = "tenant-limits";

fn quantities(pairs: &[(&str, String)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Quantity(v.clone())))
        .collect()
}

/// `tenant-quota`.
pub fn resource_quota(tenant: &Tenant) -> ResourceQuota {
    let sessions = u64::from(tenant.max_sessions);
    let cpu = Cpu(sessions * tenant.sandbox_cpu_millis + server::CPU_MILLIS).to_string();
    let memory = Bytes(sessions * tenant.sandbox_memory_bytes + server::MEMORY_BYTES).to_string();
    ResourceQuota {
        metadata: meta(tenant, QUOTA_NAME),
        spec: Some(ResourceQuotaSpec {
            hard: Some(quantities(&[
                ("pods", (sessions + 2).to_string()),
                ("requests.cpu", cpu.clone()),
                ("limits.cpu", cpu),
                ("requests.memory", memory.clone()),
                ("limits.memory", memory),
                ("persistentvolumeclaims", "2".to_owned()),
                ("requests.storage", format!("{}Gi", tenant.storage_gb)),
            ])),
            ..ResourceQuotaSpec::default()
        }),
        ..ResourceQuota::default()
    }
}

/// `tenant-limits`.
pub fn limit_range(tenant: &Tenant) -> LimitRange {
    let sandbox = quantities(&[
        ("cpu", Cpu(tenant.sandbox_cpu_millis).to_string()),
        ("memory", Bytes(tenant.sandbox_memory_bytes).to_string()),
    ]);
    let max = quantities(&[
        (
            "cpu",
            Cpu(tenant.sandbox_cpu_millis.max(server::CPU_MILLIS)).to_string(),
        ),
        (
            "memory",
            Bytes(tenant.sandbox_memory_bytes.max(server::MEMORY_BYTES)).to_string(),
        ),
    ]);
    LimitRange {
        metadata: meta(tenant, LIMIT_RANGE_NAME),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".into(),
                default: Some(sandbox.clone()),
                default_request: Some(sandbox),
                max: Some(max),
                ..LimitRangeItem::default()
            }],
        }),
    }
}
