//! `cognition-sandbox-agent [--socket PATH | --listen ADDR] [--workdir DIR]`: serves the exec
//! protocol on a Unix socket (Docker: the folder guards access) or on TCP (a Kubernetes pod:
//! every connection must authenticate with the token in `COGNITION_AGENT_TOKEN`).

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;

use cognition_sandbox_agent::server::{Listener, Options};

/// Where the executor mounts the agent's folder inside the sandbox.
const DEFAULT_SOCKET: &str = "/run/cognition/agent.sock";
/// The variable holding the TCP token (read once, never passed to processes: their
/// environment is the one the executor sends).
const TOKEN_VAR: &str = "COGNITION_AGENT_TOKEN";
/// Shortest token accepted.
const MIN_TOKEN_LEN: usize = 16;
const USAGE: &str = "usage: cognition-sandbox-agent [--socket PATH | --listen ADDR:PORT] [--workdir DIR]\n\
    --socket PATH   Unix socket (default /run/cognition/agent.sock)\n\
    --listen ADDR   TCP address; requires COGNITION_AGENT_TOKEN (at least 16 characters)\n\
    --workdir DIR   base of relative working directories";

enum Bind {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

fn main() -> ExitCode {
    let mut bind = Bind::Unix(PathBuf::from(DEFAULT_SOCKET));
    let mut workdir = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--socket" => match args.next() {
                Some(p) => bind = Bind::Unix(PathBuf::from(p)),
                None => return usage("--socket needs a path"),
            },
            "--listen" => match args.next().map(|a| a.parse::<SocketAddr>()) {
                Some(Ok(addr)) => bind = Bind::Tcp(addr),
                Some(Err(e)) => return usage(&format!("--listen: {e} (expected ADDR:PORT)")),
                None => return usage("--listen needs ADDR:PORT"),
            },
            "--workdir" => match args.next() {
                Some(d) => workdir = Some(PathBuf::from(d)),
                None => return usage("--workdir needs a folder"),
            },
            "--version" => {
                println!("{}", cognition_sandbox_agent::protocol::VERSION);
                return ExitCode::SUCCESS;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument {other}")),
        }
    }
    // Relative program paths (`./run.sh`) resolve against the agent's own directory: make it
    // the workspace, as a container's working directory is under Docker.
    if let Some(dir) = &workdir
        && let Err(e) = std::env::set_current_dir(dir)
    {
        return fail(&format!("--workdir {}: {e}", dir.display()));
    }
    let token = std::env::var(TOKEN_VAR).ok().filter(|t| !t.is_empty());
    let (listener, token) = match bind {
        Bind::Unix(socket) => match unix(&socket) {
            Ok(l) => (Listener::Unix(l), None),
            Err(e) => return fail(&format!("{}: {e}", socket.display())),
        },
        Bind::Tcp(addr) => {
            let Some(token) = token else {
                return usage(&format!("--listen requires {TOKEN_VAR}"));
            };
            if token.len() < MIN_TOKEN_LEN {
                return usage(&format!(
                    "{TOKEN_VAR} must be at least {MIN_TOKEN_LEN} characters"
                ));
            }
            match std::net::TcpListener::bind(addr) {
                Ok(l) => (Listener::Tcp(l), Some(token.into_bytes())),
                Err(e) => return fail(&format!("{addr}: {e}")),
            }
        }
    };
    match cognition_sandbox_agent::server::serve(listener, Options { token, workdir }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("cognition-sandbox-agent: {problem}\n{USAGE}");
    ExitCode::from(2)
}

fn fail(problem: &str) -> ExitCode {
    eprintln!("cognition-sandbox-agent: {problem}");
    ExitCode::FAILURE
}

fn unix(socket: &std::path::Path) -> std::io::Result<UnixListener> {
    // A socket left by an earlier agent (a restarted container) would make bind fail.
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(socket)?;
    // The executor may run as another user than the sandbox; the folder is what guards access.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}
