//! Starts gateway, session service and executor in one process, wired to each other over
//! loopback gRPC on ephemeral ports — the embedded default of `cognition up`, and the harness
//! of the end-to-end tests.
//!
//! With `COGNITION_METRICS_PORT` set, the three services share one `/metrics` endpoint: the
//! recorder is global to the process, so the first service to start binds it and the others
//! reuse it (see `cognition_metrics::install`).

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The three services' configurations. Inter-service URLs are overwritten by [`start`].
#[derive(Debug, Clone)]
pub struct StackConfig {
    pub gateway: cognition_gateway::Config,
    pub session: cognition_session::Config,
    pub executor: cognition_executor::Config,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{service} stopped: {message}")]
    Service {
        service: &'static str,
        message: String,
    },
}

/// A running stack. Dropping it does not stop it: call [`RunningStack::stop`] (or cancel the
/// token passed to [`start`]).
pub struct RunningStack {
    pub gateway_addr: SocketAddr,
    pub session_addr: SocketAddr,
    pub executor_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: JoinSet<Result<(), Error>>,
}

/// Binds the executor and session service on `127.0.0.1:0`, points the session service at the
/// executor and the gateway at the session service, and starts all three.
pub async fn start(
    mut config: StackConfig,
    gateway_listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<RunningStack, Error> {
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let bind = |what| async move {
        TcpListener::bind(loopback)
            .await
            .map_err(|source| Error::Bind {
                what,
                addr: loopback,
                source,
            })
    };
    let executor_listener = bind("executor").await?;
    let session_listener = bind("session service").await?;
    let local = |l: &TcpListener, what| {
        l.local_addr().map_err(|source| Error::Bind {
            what,
            addr: loopback,
            source,
        })
    };
    let executor_addr = local(&executor_listener, "executor")?;
    let session_addr = local(&session_listener, "session service")?;
    let gateway_addr = local(&gateway_listener, "gateway")?;

    config.session.executor_url = Some(format!("http://{executor_addr}"));
    config.gateway.session_url = format!("http://{session_addr}");

    let mut tasks = JoinSet::new();
    let token = shutdown.clone();
    tasks.spawn(async move {
        cognition_executor::run(config.executor, executor_listener, token)
            .await
            .map_err(|e| Error::Service {
                service: "executor",
                message: e.to_string(),
            })
    });
    let token = shutdown.clone();
    tasks.spawn(async move {
        cognition_session::run(config.session, session_listener, token)
            .await
            .map_err(|e| Error::Service {
                service: "session service",
                message: e.to_string(),
            })
    });
    let token = shutdown.clone();
    tasks.spawn(async move {
        cognition_gateway::run(config.gateway, gateway_listener, token)
            .await
            .map_err(|e| Error::Service {
                service: "gateway",
                message: e.to_string(),
            })
    });
    Ok(RunningStack {
        gateway_addr,
        session_addr,
        executor_addr,
        shutdown,
        tasks,
    })
}

impl RunningStack {
    /// Waits until the first service stops (an error, or the shutdown token), then stops the
    /// others and returns the first error.
    pub async fn wait(mut self) -> Result<(), Error> {
        let mut first = Ok(());
        if let Some(joined) = self.tasks.join_next().await {
            first = flatten(joined);
        }
        self.shutdown.cancel();
        while let Some(joined) = self.tasks.join_next().await {
            if let (Ok(()), Err(e)) = (&first, flatten(joined)) {
                first = Err(e);
            }
        }
        first
    }

    /// Stops every service and waits for them to finish.
    pub async fn stop(self) -> Result<(), Error> {
        self.shutdown.cancel();
        self.wait().await
    }
}

fn flatten(joined: Result<Result<(), Error>, tokio::task::JoinError>) -> Result<(), Error> {
    joined.unwrap_or_else(|e| {
        Err(Error::Service {
            service: "task",
            message: e.to_string(),
        })
    })
}
