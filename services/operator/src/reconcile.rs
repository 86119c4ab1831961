//! One reconcile of a CognitionTenant.
//!
//! Under the finalizer `cognition.dev/tenant-cleanup` (added first, so deletion always runs the
//! cleanup):
//! * apply: validate the spec (invalid → `Ready=False/InvalidSpec`, nothing created), read the
//!   referenced LLM Secret, then server-side apply every tenant object with field manager
//!   `cognition-operator` (forced), and report `Ready=True`. Applying the same spec twice
//!   changes nothing, and the status is written only when it changed.
//! * cleanup: delete the namespace `cognition-tenant-<name>` (cascading to everything in it),
//!   after which the helper removes the finalizer.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};

use crate::config::Config;
use crate::crd::CognitionTenant;
use crate::error::Error;
use crate::resources::{self, MANAGER, Manifest};
use crate::status::{self, Readiness};
use crate::tenant::{NAMESPACE_PREFIX, Tenant};

/// The finalizer guarding the tenant namespace's deletion.
pub const FINALIZER: &str = "cognition.dev/tenant-cleanup";

/// How often a ready tenant is re-applied (drift, rotated LLM keys).
pub const RESYNC: Duration = Duration::from_secs(300);
/// How soon a tenant waiting for its LLM Secret is retried.
pub const SECRET_RETRY: Duration = Duration::from_secs(30);

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub config: Config,
}

impl Context {
    pub fn new(client: Client, config: Config) -> Self {
        Self { client, config }
    }
}

/// Reconciles one CognitionTenant (the controller's reconciler).
pub async fn reconcile(tenant: Arc<CognitionTenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = tenant
        .namespace()
        .ok_or_else(|| Error::NoNamespace(tenant.name_any()))?;
    let api: Api<CognitionTenant> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, tenant, |event| async {
        match event {
            Event::Apply(tenant) => apply(&tenant, &api, &ctx).await,
            Event::Cleanup(tenant) => cleanup(&tenant, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

async fn apply(
    resource: &CognitionTenant,
    api: &Api<CognitionTenant>,
    ctx: &Context,
) -> Result<Action, Error> {
    let tenant = match Tenant::from_resource(resource) {
        Ok(tenant) => tenant,
        Err(invalid) => {
            let message = format!("invalid spec: {invalid}");
            warn!(tenant = %resource.name_any(), %message, "rejecting CognitionTenant");
            write_status(resource, api, Readiness::not_ready("InvalidSpec", message)).await?;
            return Ok(Action::await_change());
        }
    };
    let api_key = match read_api_key(&tenant, &ctx.client).await? {
        Ok(key) => key,
        Err(readiness) => {
            warn!(tenant = %tenant.name, message = %readiness.message, "waiting for the LLM Secret");
            write_status(resource, api, readiness).await?;
            return Ok(Action::requeue(SECRET_RETRY));
        }
    };
    let manifests = resources::desired(&tenant, &ctx.config, &api_key);
    for manifest in &manifests {
        if let Err(error) = apply_manifest(&ctx.client, manifest).await {
            let readiness = Readiness::not_ready("ApplyFailed", error.to_string());
            // The apply error is what matters; a failed status write is only logged.
            if let Err(status_error) = write_status(resource, api, readiness).await {
                warn!(tenant = %tenant.name, error = %status_error, "could not report the failure");
            }
            return Err(error);
        }
    }
    let message = format!(
        "{} resources applied in namespace {}",
        manifests.len(),
        tenant.namespace
    );
    write_status(resource, api, Readiness::ready("Provisioned", message)).await?;
    Ok(Action::requeue(RESYNC))
}

/// The API key from the referenced Secret, or why the tenant must wait for it.
async fn read_api_key(
    tenant: &Tenant,
    client: &Client,
) -> Result<Result<ByteString, Readiness>, Error> {
    let reference = &tenant.llm.api_key_secret_ref;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &tenant.home_namespace);
    let secret = secrets
        .get_opt(&reference.name)
        .await
        .map_err(Error::kube(format!(
            "reading Secret {}/{}",
            tenant.home_namespace, reference.name
        )))?;
    let Some(secret) = secret else {
        return Ok(Err(Readiness::not_ready(
            "SecretNotFound",
            format!(
                "Secret {}/{} (spec.llm.apiKeySecretRef) not found; create it with the key {:?}",
                tenant.home_namespace, reference.name, reference.key
            ),
        )));
    };
    let from_data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&reference.key))
        .cloned();
    let from_string_data = || {
        secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(&reference.key))
            .map(|s| ByteString(s.clone().into_bytes()))
    };
    match from_data.or_else(from_string_data) {
        Some(key) if !key.0.is_empty() => Ok(Ok(key)),
        _ => Ok(Err(Readiness::not_ready(
            "SecretKeyMissing",
            format!(
                "Secret {}/{} has no (or an empty) key {:?} (spec.llm.apiKeySecretRef.key)",
                tenant.home_namespace, reference.name, reference.key
            ),
        ))),
    }
}

/// Server-side applies one object (forced: the operator owns these fields).
async fn apply_manifest(client: &Client, manifest: &Manifest) -> Result<(), Error> {
    let api: Api<DynamicObject> = match &manifest.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &manifest.resource),
        None => Api::all_with(client.clone(), &manifest.resource),
    };
    api.patch(
        &manifest.name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&manifest.body),
    )
    .await
    .map_err(Error::kube(format!("applying {}", manifest.describe())))?;
    Ok(())
}

/// Writes the status when it differs from the stored one.
async fn write_status(
    resource: &CognitionTenant,
    api: &Api<CognitionTenant>,
    readiness: Readiness,
) -> Result<(), Error> {
    let next = status::desired(resource, &readiness, Time(Timestamp::now()));
    if resource.status.as_ref() == Some(&next) {
        return Ok(());
    }
    let name = resource.name_any();
    let params = PatchParams {
        field_manager: Some(MANAGER.into()),
        ..PatchParams::default()
    };
    let patch = serde_json::json!({ "status": next });
    api.patch_status(&name, &params, &Patch::Merge(&patch))
        .await
        .map_err(Error::kube(format!(
            "writing the status of CognitionTenant {name}"
        )))?;
    info!(tenant = %name, ready = readiness.ready, reason = readiness.reason, "status updated");
    Ok(())
}

/// Deletes the tenant namespace; an already-deleted namespace is fine.
async fn cleanup(resource: &CognitionTenant, ctx: &Context) -> Result<Action, Error> {
    let namespace = format!("{NAMESPACE_PREFIX}{}", resource.name_any());
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let deleted = namespaces
        .delete(&namespace, &DeleteParams::default())
        .await;
    match deleted {
        Ok(_) => info!(%namespace, "deleting the tenant namespace"),
        Err(kube::Error::Api(status)) if status.is_not_found() => {
            info!(%namespace, "tenant namespace already gone")
        }
        Err(error) => {
            return Err(Error::kube(format!("deleting Namespace {namespace}"))(
                error,
            ));
        }
    }
    Ok(Action::await_change())
}
