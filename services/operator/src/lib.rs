//! The tenant operator: turns each `CognitionTenant` (`cognition.dev/v1`) into a tenant
//! namespace `cognition-tenant-<name>` with its quota and limits, network policies, RBAC, a copy
//! of the LLM Secret, the workspace PVC, the server (`cognition up` with the Kubernetes sandbox
//! backend in pod mode), its Service and Ingress; and deletes that namespace when the tenant
//! goes.
//!
//! * [`crd`]: the resource type and the generated CRD manifest.
//! * [`tenant`]: spec validation; [`quantity`], [`names`]: the syntax rules it uses.
//! * [`resources`]: pure builders of every tenant object.
//! * [`reconcile`]: one reconcile (server-side apply, finalizer, status).
//! * [`controller`]: the watch loop, [`run`].
//!
//! What stays out: the sandbox pods themselves (the tenant's server creates them through the
//! executor's pod mode) and the operator's own RBAC and CRD installation (the Helm chart).

pub mod config;
pub mod controller;
pub mod crd;
pub mod error;
pub mod names;
pub mod quantity;
pub mod reconcile;
pub mod resources;
pub mod status;
pub mod tenant;

pub use config::Config;
pub use controller::run;
pub use crd::{CognitionTenant, CognitionTenantSpec, CognitionTenantStatus};
pub use error::Error;
