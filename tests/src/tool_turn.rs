//! One agent turn with a tool call, driven over the gateway's HTTP API against a fake
//! OpenAI-compatible model: the model calls `execute` (`echo hi`, run in a sandbox by the
//! executor), then answers. Enough to move every service's metrics at once.

use std::time::Duration;

use cognition_fake_llm::{FakeLlm, Reply};
use serde_json::json;

/// Input tokens the scripted model calls report, in total (30 + 45).
pub const INPUT_TOKENS: u64 = 75;
/// Output tokens the scripted model calls report, in total (8 + 4).
pub const OUTPUT_TOKENS: u64 = 12;

/// Queues the model's two answers of the turn: the `execute` call, then the final text.
pub fn script(llm: &FakeLlm) {
    llm.push(Reply::tool_call("call_1", "execute", json!({"command": "echo hi"})).usage(30, 8));
    llm.push(Reply::tokens(["It ", "printed ", "hi."]).usage(45, 4));
}

/// The environment that points the session service (or `cognition up`) at `llm` as model
/// `fake-model` of the `openai_compatible` provider, without retries.
pub fn llm_env(llm: &FakeLlm) -> Vec<(&'static str, String)> {
    vec![
        ("COGNITION_LLM_PROVIDER", "openai_compatible".into()),
        ("COGNITION_LLM_MODEL", "fake-model".into()),
        ("COGNITION_LLM_BASE_URL", llm.openai_base_url()),
        ("COGNITION_LLM_MAX_RETRIES", "0".into()),
    ]
}

/// Waits (up to 30 s) until the gateway at `base` (`http://host:port`) answers `/ready` 200.
pub async fn wait_ready(base: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    cognition_harness::wait_until(Duration::from_secs(30), || {
        let request = http.get(format!("{base}/ready"));
        async move {
            request
                .send()
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false)
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{base}/ready never answered 200: {e}"))
}

/// Creates a session and runs the scripted turn (queue it with [`script`] first); checks that
/// the command ran and the turn finished. Returns the session id.
pub async fn run(base: &str) -> anyhow::Result<String> {
    let http = reqwest::Client::new();
    let created: serde_json::Value = http
        .post(format!("{base}/sessions"))
        .json(&json!({"title": "tool turn"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = created["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no session id in {created}"))?
        .to_owned();
    let turn = http
        .post(format!("{base}/sessions/{id}/messages"))
        .json(&json!({"content": "run echo hi"}))
        .send()
        .await?;
    anyhow::ensure!(turn.status() == 200, "the turn answered {}", turn.status());
    let stream = turn.text().await?;
    anyhow::ensure!(
        stream.contains("event: done") && stream.contains("\"exit_code\":0"),
        "the turn did not run `echo hi` to its end:\n{stream}"
    );
    Ok(id)
}
