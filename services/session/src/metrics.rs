//! The session service's metric names and the helpers that record them.
//!
//! * `cognition_llm_call_duration_seconds{provider,model}` (histogram): model calls that
//!   finished their answer, from the request (retries and fallbacks included) to the last event;
//!   recorded by the agent loop ([`crate::run`]).
//! * `cognition_llm_tokens_total{provider,model,kind}` (counter): tokens the model calls reported
//!   in their usage, `kind` = `input` or `output`.
//! * `cognition_llm_cost_microusd_total{provider,model}` (counter): the estimated cost of those
//!   calls ([`crate::llm::estimate_cost`]) in millionths of a US dollar, rounded per call (the
//!   `metrics` counters are integers; divide by 1e6 for USD). Unknown prices count 0.
//! * `cognition_tool_calls_total{tool,status}` (counter): tool calls of the agent loop; `status`
//!   is `ok` (exit code 0), `error` or `cancelled`; a name that is no built-in tool counts as
//!   `tool="unknown"` (a model's invented names must not grow the label set).
//! * `cognition_active_sessions` (gauge): sessions whose run is executing on this replica
//!   (a session runs one run at a time, so this is also the number of runs executing here).
//! * `cognition_runs_total{outcome}` (counter): runs ended by this replica's agent loop:
//!   `completed`, `failed`, `cancelled`, `interrupted` (their terminal state), `lease_lost`
//!   (another replica took the run over) or `halted` (the session was deleted or its log could
//!   not be written).
//! * `cognition_events_appended_total` (counter): events appended to session logs through this
//!   replica's [`crate::EventLog`].

use std::time::Duration;

use metrics::{counter, gauge, histogram};

use crate::llm::Usage;

pub const LLM_CALL_DURATION_SECONDS: &str = "cognition_llm_call_duration_seconds";
pub const LLM_TOKENS_TOTAL: &str = "cognition_llm_tokens_total";
pub const LLM_COST_MICROUSD_TOTAL: &str = "cognition_llm_cost_microusd_total";
pub const TOOL_CALLS_TOTAL: &str = "cognition_tool_calls_total";
pub const ACTIVE_SESSIONS: &str = "cognition_active_sessions";
pub const RUNS_TOTAL: &str = "cognition_runs_total";
pub const EVENTS_APPENDED_TOTAL: &str = "cognition_events_appended_total";

/// Registers the help texts (after the exporter is installed).
pub fn describe() {
    metrics::describe_histogram!(
        LLM_CALL_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Model calls that finished, from the request (retries included) to the last event."
    );
    metrics::describe_counter!(
        LLM_TOKENS_TOTAL,
        "Tokens reported by model calls, by kind (input, output)."
    );
    metrics::describe_counter!(
        LLM_COST_MICROUSD_TOTAL,
        "Estimated cost of model calls in millionths of a US dollar (list prices)."
    );
    metrics::describe_counter!(TOOL_CALLS_TOTAL, "Tool calls by tool and status.");
    metrics::describe_gauge!(
        ACTIVE_SESSIONS,
        "Sessions whose run is executing on this replica."
    );
    metrics::describe_counter!(RUNS_TOTAL, "Runs ended on this replica, by outcome.");
    metrics::describe_counter!(EVENTS_APPENDED_TOTAL, "Events appended to session logs.");
}

pub fn llm_call(provider: &str, model: &str, took: Duration) {
    histogram!(
        LLM_CALL_DURATION_SECONDS,
        "provider" => provider.to_owned(),
        "model" => model.to_owned(),
    )
    .record(took.as_secs_f64());
}

/// Counts the tokens and the estimated cost (`cost_usd`) of a finished model call.
pub fn llm_usage(provider: &str, model: &str, usage: Usage, cost_usd: f64) {
    let (provider, model) = (provider.to_owned(), model.to_owned());
    for (kind, tokens) in [
        ("input", usage.input_tokens),
        ("output", usage.output_tokens),
    ] {
        counter!(
            LLM_TOKENS_TOTAL,
            "provider" => provider.clone(),
            "model" => model.clone(),
            "kind" => kind,
        )
        .increment(tokens);
    }
    counter!(LLM_COST_MICROUSD_TOTAL, "provider" => provider, "model" => model)
        .increment((cost_usd * 1_000_000.0).round() as u64);
}

/// Counts a tool call; `name` is reported only when it is a built-in tool.
pub fn tool_call(name: &str, status: &'static str) {
    let tool = crate::tools::ALL
        .iter()
        .copied()
        .find(|known| *known == name)
        .unwrap_or("unknown");
    counter!(TOOL_CALLS_TOTAL, "tool" => tool, "status" => status).increment(1);
}

pub fn run_ended(outcome: &'static str) {
    counter!(RUNS_TOTAL, "outcome" => outcome).increment(1);
}

pub fn events_appended(count: usize) {
    counter!(EVENTS_APPENDED_TOTAL).increment(count as u64);
}

/// A session whose run executes here: counted in `cognition_active_sessions` until dropped.
#[derive(Debug)]
pub struct ActiveSession(());

impl ActiveSession {
    pub fn start() -> ActiveSession {
        gauge!(ACTIVE_SESSIONS).increment(1.0);
        ActiveSession(())
    }
}

impl Drop for ActiveSession {
    fn drop(&mut self) {
        gauge!(ACTIVE_SESSIONS).decrement(1.0);
    }
}
