//! `cognition`: run the platform on its embedded default, and manage its database.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use cognition_cli::chat::{self, Chat, ChatOptions};
use cognition_cli::stack::{self, StackConfig};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "cognition",
    version,
    about = "Cognition: a backend for AI-agent platforms"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run gateway, session service and executor in one process (SQLite + local sandboxes by
    /// default; every COGNITION_* variable of the three services applies).
    Up,
    /// Chat with an agent through the gateway: one message (given as arguments) or an
    /// interactive session (no arguments). Ctrl-C aborts the running turn.
    Chat {
        /// Gateway URL.
        #[arg(long, env = "COGNITION_URL", default_value = "http://127.0.0.1:8000")]
        url: String,
        /// Continue this session (default: create one).
        #[arg(long)]
        session: Option<String>,
        /// Agent for a new session.
        #[arg(long)]
        agent: Option<String>,
        /// Scope header values, e.g. `--scope user=alice` (repeatable).
        #[arg(long = "scope", value_parser = parse_scope)]
        scopes: Vec<(String, String)>,
        /// The message; omit for an interactive session.
        message: Vec<String>,
    },
    /// Database schema commands (COGNITION_PERSISTENCE_BACKEND / COGNITION_PERSISTENCE_URI).
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
}

#[derive(Subcommand)]
enum DbCommand {
    /// Apply every pending migration (idempotent).
    Upgrade,
    /// Print the current schema version.
    Current,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry: cognition_telemetry::TelemetryConfig = cognition_config::from_env()?;
    let _guard = cognition_telemetry::init("cognition", &telemetry)?;
    match cli.command {
        Command::Up => up().await,
        Command::Db { command } => db(command).await,
        Command::Chat {
            url,
            session,
            agent,
            scopes,
            message,
        } => {
            let chat = Chat::open(ChatOptions {
                url,
                session,
                scopes,
                agent,
            })
            .await?;
            if message.is_empty() {
                chat::repl(&chat).await?;
            } else {
                chat.turn(&message.join(" "), &mut std::io::stdout())
                    .await?;
            }
            Ok(())
        }
    }
}

async fn up() -> anyhow::Result<()> {
    let config = load_stack_config()?;
    cognition_gateway::limits::raise_open_files_limit();
    let addr = SocketAddr::new(
        config
            .gateway
            .host
            .parse()
            .context("COGNITION_HOST must be an IP address")?,
        config.gateway.port,
    );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let data_dir = config.session.data_dir.clone();
    let shutdown = CancellationToken::new();
    let running = stack::start(config, listener, shutdown.clone()).await?;
    println!(
        "Cognition is up: http://{} (data in {})",
        running.gateway_addr,
        data_dir.display()
    );
    println!("  session service gRPC: http://{}", running.session_addr);
    println!("  executor gRPC:        http://{}", running.executor_addr);
    println!("Press Ctrl-C to stop.");
    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        eprintln!("stopping…");
        signals.cancel();
    });
    running.wait().await?;
    println!("Cognition stopped.");
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
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

fn load_stack_config() -> anyhow::Result<StackConfig> {
    let vars: Vec<(String, String)> = std::env::vars().collect();
    let mut problems = Vec::new();
    let gateway = cognition_config::load::<cognition_gateway::Config>(vars.clone())
        .map_err(|e| problems.extend(e.problems))
        .ok();
    let session = cognition_config::load::<cognition_session::Config>(vars.clone())
        .map_err(|e| problems.extend(e.problems))
        .ok();
    let executor = cognition_config::load::<cognition_executor::Config>(vars)
        .map_err(|e| problems.extend(e.problems))
        .ok();
    match (gateway, session, executor) {
        (Some(gateway), Some(session), Some(executor)) => Ok(StackConfig {
            gateway,
            session,
            executor,
        }),
        _ => {
            problems.sort();
            problems.dedup();
            Err(cognition_config::ConfigError { problems }.into())
        }
    }
}

async fn db(command: DbCommand) -> anyhow::Result<()> {
    let config: cognition_session::Config = cognition_config::from_env()?;
    match command {
        DbCommand::Upgrade => {
            let report = cognition_session::migrate(&config).await?;
            if report.applied.is_empty() {
                println!("{:?} schema is up to date", report.backend);
            }
            for m in &report.applied {
                println!("applied {} {}", m.version, m.description);
            }
            match report.current_version {
                Some(v) => println!("current version: {v}"),
                None => println!("no migrations"),
            }
        }
        DbCommand::Current => match cognition_session::current_version(&config).await? {
            Some(v) => println!("{v}"),
            None => println!("no migrations applied"),
        },
    }
    Ok(())
}

fn parse_scope(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got {raw:?}"))
}
