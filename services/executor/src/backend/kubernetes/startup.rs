//! Startup checks of the Kubernetes backend, run before the executor serves: in agent-sandbox
//! mode the agent-sandbox CRDs must exist (fatal, naming the install step) and so must the
//! SandboxTemplate; an unreachable sandbox-router is only a warning (the executor talks to the
//! agents directly). In pod mode the executor must be allowed to list pods in its namespace.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};

use super::Settings;
use super::claim::{self, INSTALL_HINT, REQUIRED_CRDS};
use crate::config::K8sMode;
use crate::error::Error;

/// How long the router health check waits.
const ROUTER_TIMEOUT: Duration = Duration::from_secs(3);

/// Checks the cluster; returns the warnings it logged.
pub async fn check(client: &kube::Client, settings: &Settings) -> Result<Vec<String>, Error> {
    let mut warnings = Vec::new();
    match settings.mode {
        K8sMode::AgentSandbox => {
            let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
            for name in REQUIRED_CRDS {
                match crds.get_opt(name).await {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        return Err(Error::Unavailable(format!(
                            "kubernetes: the CustomResourceDefinition {name} is missing: {INSTALL_HINT}"
                        )));
                    }
                    Err(e) => return Err(super::api_error(format!("reading CRD {name}"), e)),
                }
            }
            let templates: Api<DynamicObject> = Api::namespaced_with(
                client.clone(),
                &settings.namespace,
                &ApiResource::from_gvk_with_plural(
                    &GroupVersionKind::gvk(claim::CLAIM_GROUP, claim::VERSION, "SandboxTemplate"),
                    "sandboxtemplates",
                ),
            );
            match templates.get_opt(&settings.template).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(Error::Unavailable(format!(
                        "kubernetes: SandboxTemplate {}/{} not found (COGNITION_K8S_SANDBOX_TEMPLATE); \
                         create it, e.g. from deploy/examples/cognition-sandbox-template.yaml",
                        settings.namespace, settings.template
                    )));
                }
                Err(e) => {
                    return Err(super::api_error(
                        format!(
                            "reading SandboxTemplate {}/{}",
                            settings.namespace, settings.template
                        ),
                        e,
                    ));
                }
            }
            if let Err(why) = router_health(&settings.router_url).await {
                let warning = format!(
                    "the sandbox-router at {} is not reachable ({why}); the executor does not \
                     need it for commands (it talks to each sandbox's agent), but other clients may",
                    settings.router_url
                );
                tracing::warn!("{warning}");
                warnings.push(warning);
            }
        }
        K8sMode::Pod => {
            let pods: Api<Pod> = Api::namespaced(client.clone(), &settings.namespace);
            pods.list(&ListParams::default().limit(1))
                .await
                .map_err(|e| {
                    super::api_error(format!("listing pods in {}", settings.namespace), e)
                })?;
        }
    }
    Ok(warnings)
}

/// `GET <router>/healthz`, answered with a 2xx in time.
async fn router_health(router: &str) -> Result<(), String> {
    let url = format!("{}/healthz", router.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(ROUTER_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    match client.get(&url).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("{url} answered {}", r.status())),
        Err(e) => Err(e.to_string()),
    }
}
