//! `cognition-sandbox-agent [--socket PATH]`: serves the exec protocol on a Unix socket.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;

/// Where the executor mounts the agent's folder inside the sandbox.
const DEFAULT_SOCKET: &str = "/run/cognition/agent.sock";

fn main() -> ExitCode {
    let mut socket = PathBuf::from(DEFAULT_SOCKET);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--socket" => match args.next() {
                Some(p) => socket = PathBuf::from(p),
                None => return usage("--socket needs a path"),
            },
            "--version" => {
                println!("{}", cognition_sandbox_agent::protocol::VERSION);
                return ExitCode::SUCCESS;
            }
            "-h" | "--help" => {
                println!(
                    "usage: cognition-sandbox-agent [--socket PATH] (default {DEFAULT_SOCKET})"
                );
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument {other}")),
        }
    }
    match run(&socket) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cognition-sandbox-agent: {}: {e}", socket.display());
            ExitCode::FAILURE
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("cognition-sandbox-agent: {problem}\nusage: cognition-sandbox-agent [--socket PATH]");
    ExitCode::from(2)
}

fn run(socket: &std::path::Path) -> std::io::Result<()> {
    // A socket left by an earlier agent (a restarted container) would make bind fail.
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(socket)?;
    // The executor may run as another user than the sandbox; the folder is what guards access.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666))?;
    cognition_sandbox_agent::server::serve(listener)
}
