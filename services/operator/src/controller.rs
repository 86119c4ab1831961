//! The controller: watches CognitionTenants (one namespace or all), runs [`reconcile`] for each
//! change, retries failures with exponential backoff per tenant, and stops on shutdown.
//!
//! Tenant objects live in other namespaces than their CognitionTenant, so they cannot be
//! owned (`.owns`); drift is corrected by the periodic resync instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::crd::CognitionTenant;
use crate::error::Error;
use crate::reconcile::{self, Context};

/// The first retry delay after a failed reconcile; doubles per consecutive failure.
pub const RETRY_BASE: Duration = Duration::from_secs(5);
/// The longest retry delay.
pub const RETRY_MAX: Duration = Duration::from_secs(300);

/// Consecutive failures per tenant (`namespace/name`), for the backoff.
#[derive(Default)]
pub struct Failures(Mutex<HashMap<String, u32>>);

impl Failures {
    /// Counts a failure and returns the delay before the next attempt.
    pub fn record(&self, key: &str) -> Duration {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = map.entry(key.to_owned()).or_insert(0);
        let delay = RETRY_BASE
            .saturating_mul(2u32.saturating_pow(*count))
            .min(RETRY_MAX);
        *count = count.saturating_add(1);
        delay
    }

    /// Forgets a tenant's failures after a success.
    pub fn reset(&self, key: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

struct State {
    context: Arc<Context>,
    failures: Failures,
}

fn key(tenant: &CognitionTenant) -> String {
    format!(
        "{}/{}",
        tenant.namespace().unwrap_or_default(),
        tenant.name_any()
    )
}

async fn reconcile(tenant: Arc<CognitionTenant>, state: Arc<State>) -> Result<Action, Error> {
    let key = key(&tenant);
    let action = reconcile::reconcile(tenant, state.context.clone()).await?;
    state.failures.reset(&key);
    Ok(action)
}

fn error_policy(tenant: Arc<CognitionTenant>, _error: &Error, state: Arc<State>) -> Action {
    Action::requeue(state.failures.record(&key(&tenant)))
}

/// Runs the controller until `shutdown` is cancelled (in-flight reconciles finish first).
pub async fn run(config: Config, client: Client, shutdown: CancellationToken) {
    let api: Api<CognitionTenant> = if config.watch_namespace.is_empty() {
        Api::all(client.clone())
    } else {
        Api::namespaced(client.clone(), &config.watch_namespace)
    };
    info!(
        namespace = %if config.watch_namespace.is_empty() { "*" } else { &config.watch_namespace },
        server_image = %config.server_image,
        domain = %config.domain,
        "watching CognitionTenants"
    );
    let state = Arc::new(State {
        context: Arc::new(Context::new(client, config)),
        failures: Failures::default(),
    });
    Controller::new(api, watcher::Config::default())
        .graceful_shutdown_on(async move { shutdown.cancelled_owned().await })
        .run(reconcile, error_policy, state)
        .for_each(|result| async move {
            match result {
                Ok((tenant, _)) => debug!(tenant = %tenant, "reconciled"),
                Err(error) => warn!(error = %error_chain(&error), "reconcile failed"),
            }
        })
        .await;
    info!("controller stopped");
}

/// An error and its sources, joined with ": ".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_a_cap_and_reset_on_success() {
        let failures = Failures::default();
        let delays: Vec<u64> = (0..8).map(|_| failures.record("ns/a").as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(
            failures.record("ns/b").as_secs(),
            5,
            "tenants back off independently"
        );
        failures.reset("ns/a");
        assert_eq!(failures.record("ns/a").as_secs(), 5);
    }
}
