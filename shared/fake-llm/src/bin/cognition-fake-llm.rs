//! `cognition-fake-llm`: the scripted fake LLM as a process, for tests whose model client runs
//! somewhere a test's in-process [`FakeLlm`] cannot be reached from (a container of a compose
//! stack). Replies are scripted by the arguments, in order; each model request consumes the
//! next one, then the default text answers.
//!
//! ```text
//! cognition-fake-llm [--listen ADDR] [--tool-call NAME JSON_ARGS]... [--text TEXT]...
//!                    [--default-text TEXT]
//! ```
//!
//! `--listen` defaults to `127.0.0.1:8080` (a container passes `0.0.0.0:8080`). Tool calls get
//! the ids `call_1`, `call_2`, … in order. Every request is logged on stderr (path, message
//! count, the role of the last message). SIGTERM or Ctrl-C stops it. Test-only.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use cognition_fake_llm::{FakeLlm, Reply};

const USAGE: &str = "usage: cognition-fake-llm [--listen ADDR] [--tool-call NAME JSON_ARGS]... \
                     [--text TEXT]... [--default-text TEXT]";

/// What the arguments ask for.
#[derive(Debug)]
struct Script {
    listen: SocketAddr,
    replies: Vec<Reply>,
    default_text: Option<String>,
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<Script, String> {
    let mut script = Script {
        listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        replies: Vec::new(),
        default_text: None,
    };
    let mut args = args.into_iter();
    let mut tool_calls = 0;
    while let Some(arg) = args.next() {
        let mut value = |what: &str| {
            args.next()
                .ok_or_else(|| format!("{arg} needs {what}\n{USAGE}"))
        };
        match arg.as_str() {
            "--listen" => {
                let raw = value("an address (host:port)")?;
                script.listen = raw
                    .parse()
                    .map_err(|e| format!("--listen {raw:?}: not an ip:port address ({e})"))?;
            }
            "--tool-call" => {
                let name = value("a tool name and its JSON arguments")?;
                let raw = value("JSON arguments after the tool name")?;
                let arguments: serde_json::Value = serde_json::from_str(&raw).map_err(|e| {
                    format!("--tool-call {name} {raw:?}: arguments are not JSON ({e})")
                })?;
                if !arguments.is_object() {
                    return Err(format!(
                        "--tool-call {name} {raw:?}: arguments must be a JSON object"
                    ));
                }
                tool_calls += 1;
                let id = format!("call_{tool_calls}");
                script
                    .replies
                    .push(Reply::tool_call(&id, &name, arguments).usage(30, 8));
            }
            "--text" => {
                let text = value("the answer's text")?;
                script.replies.push(Reply::text(&text).usage(45, 4));
            }
            "--default-text" => script.default_text = Some(value("the default answer's text")?),
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(script)
}

/// One line per request, on stderr (what `docker logs` shows when a test fails).
async fn log_requests(llm: &FakeLlm) {
    let mut seen = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let requests = llm.requests();
        for request in requests.iter().skip(seen) {
            let messages = request.body["messages"].as_array();
            let last_role = messages
                .and_then(|m| m.last())
                .and_then(|m| m["role"].as_str())
                .unwrap_or("-");
            eprintln!(
                "cognition-fake-llm: {} {} ({} messages, last from {last_role}); {} scripted replies left",
                request.method,
                request.path,
                messages.map_or(0, Vec::len),
                llm.pending_replies()
            );
        }
        seen = requests.len();
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending().await,
            }
        } => {}
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let script = match parse(std::env::args().skip(1)) {
        Ok(script) => script,
        Err(message) => {
            eprintln!("cognition-fake-llm: {message}");
            return ExitCode::from(2);
        }
    };
    let llm = match FakeLlm::try_start_on(script.listen).await {
        Ok(llm) => llm,
        Err(e) => {
            eprintln!(
                "cognition-fake-llm: cannot listen on {}: {e}",
                script.listen
            );
            return ExitCode::FAILURE;
        }
    };
    let count = script.replies.len();
    llm.push_all(script.replies);
    if let Some(text) = &script.default_text {
        llm.set_default(Reply::text(text));
    }
    eprintln!(
        "cognition-fake-llm: listening on {} ({count} scripted replies)",
        llm.url()
    );
    tokio::select! {
        _ = log_requests(&llm) => {}
        _ = shutdown_signal() => {}
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn scripts_replies_in_order() {
        let script = parse(args(&[
            "--listen",
            "0.0.0.0:9000",
            "--tool-call",
            "execute",
            r#"{"command":"echo hi"}"#,
            "--text",
            "It printed hi.",
            "--default-text",
            "bye",
        ]))
        .unwrap();
        assert_eq!(script.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(script.replies.len(), 2);
        assert_eq!(script.default_text.as_deref(), Some("bye"));
    }

    #[test]
    fn bad_arguments_are_explained() {
        for (bad, expected) in [
            (vec!["--listen", "nowhere"], "not an ip:port"),
            (vec!["--tool-call", "execute", "{"], "not JSON"),
            (
                vec!["--tool-call", "execute", "[1]"],
                "must be a JSON object",
            ),
            (vec!["--tool-call", "execute"], "needs JSON arguments"),
            (vec!["--text"], "needs the answer's text"),
            (vec!["--verbose"], "unknown argument"),
        ] {
            let err = parse(args(&bad)).unwrap_err();
            assert!(err.contains(expected), "{bad:?}: {err}");
        }
    }
}
