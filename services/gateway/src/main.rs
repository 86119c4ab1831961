//! `cognition-gateway`: serves the REST/SSE API on `COGNITION_HOST:COGNITION_PORT`.

use anyhow::Context;
use cognition_gateway::Config;
use cognition_telemetry::TelemetryConfig;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry: TelemetryConfig = cognition_config::from_env()?;
    let _guard = cognition_telemetry::init("cognition-gateway", &telemetry)?;
    let config: Config = cognition_config::from_env()?;
    cognition_gateway::limits::raise_open_files_limit();
    let address = config.bind_address();
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .with_context(|| format!("binding {address}"))?;
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown_signal().await;
            shutdown.cancel();
        }
    });
    cognition_gateway::run(config, listener, shutdown).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
