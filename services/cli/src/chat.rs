//! `cognition chat`: send messages to a session through the gateway and render its event
//! stream live in the terminal. Ctrl-C while a turn runs aborts it (the stream then ends with
//! the run's `ABORTED` error and `done`); Ctrl-C at the prompt, or end of input, quits.

use std::io::{BufRead as _, Write as _};

use futures::StreamExt as _;
use serde_json::Value;

/// Where and as whom to chat.
#[derive(Debug, Clone)]
pub struct ChatOptions {
    /// Gateway base URL, e.g. `http://127.0.0.1:8000`.
    pub url: String,
    /// Continue this session instead of creating one.
    pub session: Option<String>,
    /// Scope headers, e.g. `[("user", "alice")]`.
    pub scopes: Vec<(String, String)>,
    /// Agent of a newly created session.
    pub agent: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("gateway at {url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("{status}: {body}")]
    Api {
        status: reqwest::StatusCode,
        body: String,
    },
    #[error("reading input: {0}")]
    Input(#[from] std::io::Error),
}

/// A chat client bound to one session.
pub struct Chat {
    http: reqwest::Client,
    options: ChatOptions,
    session: String,
}

impl Chat {
    /// Connects to the gateway and creates (or checks) the session.
    pub async fn open(options: ChatOptions) -> Result<Chat, Error> {
        let http = reqwest::Client::new();
        let mut chat = Chat {
            http,
            options,
            session: String::new(),
        };
        chat.session = match chat.options.session.clone() {
            Some(id) => {
                chat.send(chat.http.get(chat.url(&format!("/sessions/{id}"))))
                    .await?;
                id
            }
            None => {
                let mut body = serde_json::json!({"title": "cognition chat"});
                if let Some(agent) = &chat.options.agent {
                    body["agent_name"] = Value::String(agent.clone());
                }
                let created = chat
                    .send(chat.http.post(chat.url("/sessions")).json(&body))
                    .await?;
                let created: Value = created.json().await.map_err(|e| chat.http_error(e))?;
                created["id"].as_str().unwrap_or_default().to_owned()
            }
        };
        Ok(chat)
    }

    pub fn session_id(&self) -> &str {
        &self.session
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.options.url.trim_end_matches('/'))
    }

    fn http_error(&self, source: reqwest::Error) -> Error {
        Error::Http {
            url: self.options.url.clone(),
            source,
        }
    }

    async fn send(&self, mut req: reqwest::RequestBuilder) -> Result<reqwest::Response, Error> {
        for (k, v) in &self.options.scopes {
            req = req.header(cognition_proto::scope::metadata_key(k), v);
        }
        let resp = req.send().await.map_err(|e| self.http_error(e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        Err(Error::Api { status, body })
    }

    /// Sends one message and renders the run's events until `done`. Returns the final
    /// assistant text.
    pub async fn turn(
        &self,
        content: &str,
        out: &mut impl std::io::Write,
    ) -> Result<String, Error> {
        // One SIGINT stream for the whole turn: it buffers a signal that arrives while an event
        // is being rendered (a fresh `ctrl_c()` future per loop iteration would miss it, and the
        // installed handler would keep the process from dying).
        let mut interrupts =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let req = self
            .http
            .post(self.url(&format!("/sessions/{}/messages", self.session)))
            .header("accept", "text/event-stream")
            .json(&serde_json::json!({"content": content}));
        let resp = self.send(req).await?;
        let mut events = eventsource_stream::EventStream::new(resp.bytes_stream());
        let mut answer = String::new();
        let mut aborting = false;
        loop {
            tokio::select! {
                next = events.next() => {
                    let Some(event) = next else { break };
                    let Ok(event) = event else { break };
                    let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
                    if render(&event.event, &data, out, &mut answer) {
                        break;
                    }
                }
                _ = interrupts.recv(), if !aborting => {
                    aborting = true;
                    let _ = writeln!(out, "\n^C — aborting the run…");
                    let abort = self.http.post(self.url(&format!("/sessions/{}/abort", self.session)));
                    if let Err(e) = self.send(abort).await {
                        let _ = writeln!(out, "abort failed: {e}");
                        break;
                    }
                }
            }
        }
        let _ = out.flush();
        Ok(answer)
    }
}

/// Writes one event; returns true after `done`.
pub fn render(
    event: &str,
    data: &Value,
    out: &mut impl std::io::Write,
    answer: &mut String,
) -> bool {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let _ = match event {
        "token" => {
            let t = s(&data["content"]);
            answer.push_str(&t);
            write!(out, "{t}")
        }
        "tool_call" => writeln!(out, "\n⚙ {}({})", s(&data["name"]), data["args"]),
        "tool_result" => {
            let output = s(&data["output"]);
            let mut lines: Vec<&str> = output.lines().take(20).collect();
            if output.lines().count() > 20 {
                lines.push("…");
            }
            writeln!(
                out,
                "  ↳ exit {} \n  {}",
                data["exit_code"],
                lines.join("\n  ")
            )
        }
        "planning" => {
            let todos: Vec<String> = data["todos"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| format!("  ☐ {}", s(t)))
                .collect();
            writeln!(out, "\nplan:\n{}", todos.join("\n"))
        }
        "step_complete" => writeln!(
            out,
            "  ☑ {} ({}/{})",
            s(&data["description"]),
            data["step_number"],
            data["total_steps"]
        ),
        "delegation" => writeln!(
            out,
            "\n→ {} delegates to {}: {}",
            s(&data["from_agent"]),
            s(&data["to_agent"]),
            s(&data["task"])
        ),
        "interrupt" => writeln!(
            out,
            "\n⏸ waiting for approval of {}({})",
            s(&data["tool_name"]),
            data["args"]
        ),
        "usage" => writeln!(
            out,
            "\n[{} in / {} out tokens, ${:.4}, {} {}]",
            data["input_tokens"],
            data["output_tokens"],
            data["estimated_cost"].as_f64().unwrap_or(0.0),
            s(&data["provider"]),
            s(&data["model"])
        ),
        "error" => writeln!(
            out,
            "\nerror ({}): {}",
            s(&data["code"]),
            s(&data["message"])
        ),
        "done" => {
            let _ = writeln!(out);
            return true;
        }
        _ => Ok(()),
    };
    let _ = out.flush();
    false
}

/// The interactive loop: one message per line until end of input.
pub async fn repl(chat: &Chat) -> Result<(), Error> {
    let mut stdout = std::io::stdout();
    writeln!(
        stdout,
        "session {} — type a message, Ctrl-D to quit",
        chat.session_id()
    )?;
    loop {
        write!(stdout, "> ")?;
        stdout.flush()?;
        let line = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map(|n| (n, line))
        })
        .await
        .map_err(|e| Error::Input(std::io::Error::other(e)))??;
        if line.0 == 0 {
            return Ok(());
        }
        let text = line.1.trim();
        if text.is_empty() {
            continue;
        }
        if let Err(e) = chat.turn(text, &mut stdout).await {
            writeln!(stdout, "\n{e}")?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_turn() {
        let mut out = Vec::new();
        let mut answer = String::new();
        assert!(!render(
            "token",
            &serde_json::json!({"content": "Hel"}),
            &mut out,
            &mut answer
        ));
        assert!(!render(
            "token",
            &serde_json::json!({"content": "lo"}),
            &mut out,
            &mut answer
        ));
        assert!(!render(
            "tool_call",
            &serde_json::json!({"name": "execute", "args": {"command": "echo hi"}, "id": "c1"}),
            &mut out,
            &mut answer
        ));
        assert!(!render(
            "error",
            &serde_json::json!({"message": "stopped", "code": "ABORTED"}),
            &mut out,
            &mut answer
        ));
        assert!(render(
            "done",
            &serde_json::json!({}),
            &mut out,
            &mut answer
        ));
        let text = String::from_utf8(out).unwrap();
        assert_eq!(answer, "Hello");
        assert!(text.contains("Hello"));
        assert!(
            text.contains("⚙ execute({\"command\":\"echo hi\"})"),
            "{text}"
        );
        assert!(text.contains("error (ABORTED): stopped"));
    }
}
