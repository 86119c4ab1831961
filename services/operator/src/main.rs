//! The `cognition-operator` binary: `run` (the default) reconciles CognitionTenants with the
//! configuration from `COGNITION_OPERATOR_*`; `crd` prints the CustomResourceDefinition.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use cognition_operator::{Config, crd, run};
use cognition_telemetry::TelemetryConfig;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "cognition-operator",
    version,
    about = "The Cognition tenant operator"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Reconcile CognitionTenants until SIGTERM or Ctrl-C (the default).
    Run,
    /// Print the CognitionTenant CRD as YAML (the content of deploy/crds/cognitiontenant.yaml).
    Crd,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if let Some(Command::Crd) = Cli::parse().command {
        print!("{}", crd::crd_yaml());
        return Ok(());
    }
    let config = Config::load(std::env::vars())?;
    let telemetry: TelemetryConfig = cognition_config::from_env()?;
    let _guard = cognition_telemetry::init("cognition-operator", &telemetry)?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes (in-cluster service account or KUBECONFIG)")?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
        stop.cancel();
    });
    run(config, client, shutdown).await;
    Ok(())
}
