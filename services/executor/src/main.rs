//! The `cognition-executor` binary: configuration from `COGNITION_*`, telemetry, then [`run`].

use anyhow::Context;
use cognition_executor::{Config, run};
use cognition_telemetry::TelemetryConfig;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: Config = cognition_config::from_env()?;
    let telemetry: TelemetryConfig = cognition_config::from_env()?;
    let _guard = cognition_telemetry::init("cognition-executor", &telemetry)?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("binding COGNITION_EXECUTOR_ADDR={}", config.addr))?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        stop.cancel();
    });
    run(config, listener, shutdown).await?;
    Ok(())
}
