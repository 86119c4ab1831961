//! `cognition-session`: the session service as its own process.

use anyhow::Context as _;
use cognition_session::Config;
use cognition_telemetry::TelemetryConfig;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: Config = cognition_config::from_env()?;
    let telemetry: TelemetryConfig = cognition_config::from_env()?;
    let _guard = cognition_telemetry::init("cognition-session", &telemetry)?;

    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("binding COGNITION_SESSION_ADDR={}", config.addr))?;
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown_signal().await;
            shutdown.cancel();
        }
    });
    cognition_session::run(config, listener, shutdown).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
