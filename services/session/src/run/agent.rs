//! The agent loop (ReAct) of one run: call the model with the conversation, stream its text
//! as `token` events, save the assistant message with its tool calls, run each tool
//! (`tool_call` → `tool_result`, saved as tool messages), and repeat until the model answers
//! without tool calls or the recursion limit is reached. Every event goes through the event
//! log; the run ends with `done{assistant_data}` appended in the same transaction that makes
//! the run terminal.
//!
//! Endings: completed (`usage`, `status{idle}`, `done`); model failure (`error{LLM_UNAVAILABLE}`,
//! `done`); recursion limit (`error{INTERNAL_ERROR}` naming the limit, `done`); abort
//! (`error{ABORTED}`, `status{cancelled}`, `done`); shutdown (`error{STREAMING_ERROR}`,
//! `done`). In each, the partial reply is saved and every open tool call gets a result.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use cognition_errors::Code;
use cognition_proto::scope::Scope;
use cognition_telemetry::TraceParent;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;
use uuid::Uuid;

use super::Inner;
use super::context;
use super::local::{RunHandle, StopReason};
use super::profile::{self, Profile};
use crate::callback::Delivery;
use crate::domain::{Message, NewMessage, Role, ToolCall};
use crate::event::{EventKind, RunStatus};
use crate::llm::{ChatEvent, ChatRequest, LlmError, ModelId, Usage, estimate_cost};
use crate::metrics;
use crate::store::{self, Run, RunState};
use crate::tools::{self, Outcome, ToolContext};

/// Message of the `error` event when a replica shuts down during a turn.
pub const SHUTDOWN_MESSAGE: &str =
    "the session service running this turn stopped; the turn was interrupted";
/// Message of the `error` event of an aborted run.
pub const ABORTED_MESSAGE: &str = "the run was aborted";
/// Tool result of a call that an abort cut short or never started.
pub const TOOL_ABORTED: &str = "Error: aborted: the run was stopped before this tool call finished";

/// The session was deleted, or the log is unwritable: stop without further writes.
#[derive(Debug)]
pub(crate) struct Halt;

/// What the run's writer task does next.
enum Write {
    Event(EventKind),
    /// Answered once every event queued before it is written (`false`: writing failed).
    Flush(oneshot::Sender<bool>),
}

/// Writes the run's events, in order, through a writer task that appends whatever queued up
/// while its previous write was in flight in one transaction (group commit): a fast model
/// does not wait for one database round trip per token, and no event is delayed.
pub(crate) struct Emitter<'a> {
    pub(crate) inner: &'a Inner,
    pub(crate) session_id: Uuid,
    pub(crate) run_id: Uuid,
    queue: mpsc::UnboundedSender<Write>,
    failed: Arc<AtomicBool>,
}

impl<'a> Emitter<'a> {
    pub(crate) fn new(inner: &'a Inner, session_id: Uuid, run_id: Uuid) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let failed = Arc::new(AtomicBool::new(false));
        inner.tasks.spawn(writer(
            inner.events.clone(),
            session_id,
            run_id,
            rx,
            Arc::clone(&failed),
        ));
        Self {
            inner,
            session_id,
            run_id,
            queue,
            failed,
        }
    }

    /// Queues an event (written shortly, in order); fails once a write has failed.
    pub(crate) async fn emit(&self, kind: EventKind) -> Result<(), Halt> {
        if self.failed.load(Ordering::Acquire) || self.queue.send(Write::Event(kind)).is_err() {
            return Err(Halt);
        }
        Ok(())
    }

    /// Waits until every queued event is in the log (and published).
    pub(crate) async fn flush(&self) -> Result<(), Halt> {
        let (tx, rx) = oneshot::channel();
        if self.queue.send(Write::Flush(tx)).is_err() {
            return Err(Halt);
        }
        match rx.await {
            Ok(true) => Ok(()),
            _ => Err(Halt),
        }
    }

    pub(crate) async fn save(&self, message: NewMessage) -> Result<Message, Halt> {
        self.inner
            .store()
            .append_message(self.session_id, message)
            .await
            .map_err(|e| halt(self.run_id, e))
    }

    /// Ends the run: terminal `state` and the `done` event, atomically, after every queued
    /// event.
    pub(crate) async fn finish(
        &self,
        state: RunState,
        error: Option<&str>,
        assistant: Message,
    ) -> Result<bool, Halt> {
        self.flush().await?;
        match self
            .inner
            .events
            .finish_run(
                self.run_id,
                &self.inner.settings.replica_id,
                state,
                error,
                EventKind::Done {
                    assistant_data: assistant,
                },
            )
            .await
        {
            Ok(event) => Ok(event.is_some()),
            Err(e) => Err(halt(self.run_id, e)),
        }
    }
}

/// The writer task of one run: ends when its [`Emitter`] is dropped.
async fn writer(
    events: crate::event_log::EventLog,
    session_id: Uuid,
    run_id: Uuid,
    mut rx: mpsc::UnboundedReceiver<Write>,
    failed: Arc<AtomicBool>,
) {
    let mut batch = Vec::new();
    let mut flushes = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(write) = next.take() {
            match write {
                Write::Event(kind) => batch.push(kind),
                Write::Flush(done) => flushes.push(done),
            }
            if batch.len() < store::MAX_EVENT_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty()
            && !failed.load(Ordering::Acquire)
            && let Err(e) = events.append_batch(session_id, Some(run_id), &batch).await
        {
            halt(run_id, e);
            failed.store(true, Ordering::Release);
        }
        batch.clear();
        let ok = !failed.load(Ordering::Acquire);
        for done in flushes.drain(..) {
            let _ = done.send(ok);
        }
    }
}

fn halt(run_id: Uuid, e: store::Error) -> Halt {
    match e {
        store::Error::SessionNotFound(_) => {
            tracing::debug!(%run_id, "the session was deleted; the run stops")
        }
        other => {
            tracing::error!(%run_id, error = %other, "writing the run failed; its lease will \
                expire and recovery closes it")
        }
    }
    Halt
}

/// How the loop ended.
enum Ending {
    Completed,
    Llm(LlmError),
    RecursionLimit(u32),
    Stopped(StopReason),
}

/// State of the turn across steps.
struct Turn {
    /// Text of the current step not yet saved.
    pending: String,
    /// The run's last saved assistant message.
    last_assistant: Option<Message>,
    input_tokens: u64,
    output_tokens: u64,
    cost: f64,
    model: Option<ModelId>,
    /// Whether any model call reported usage (only real counts are reported).
    usage_seen: bool,
}

impl Turn {
    fn add_usage(&mut self, model: &ModelId, usage: Usage) {
        self.input_tokens += usage.input_tokens;
        self.output_tokens += usage.output_tokens;
        let cost = estimate_cost(model, usage);
        self.cost += cost;
        metrics::llm_usage(&model.provider, &model.model, usage, cost);
        self.usage_seen = true;
    }
}

/// Executes `run` to its end. Never panics on model, tool or store failures.
///
/// Its `turn` span is the trace child of `parent`: the `SendMessage` call that started the run
/// (the run itself is a detached task, see [`super::spawn`]).
pub(crate) async fn execute(
    inner: &Arc<Inner>,
    run: Run,
    user_message: Message,
    handle: RunHandle,
    parent: TraceParent,
) {
    let emitter = Emitter::new(inner, run.session_id, run.id);
    let span = tracing::info_span!(
        parent: None,
        "turn",
        run_id = %run.id,
        session_id = %run.session_id,
    );
    parent.adopt(&span);
    let _active = metrics::ActiveSession::start();
    // On `Halt` nothing more can be written; the lease expires and recovery closes the run.
    if drive(inner, &emitter, &run, user_message, &handle)
        .instrument(span)
        .await
        .is_err()
    {
        metrics::run_ended("halted");
    }
}

async fn drive(
    inner: &Arc<Inner>,
    emitter: &Emitter<'_>,
    run: &Run,
    user_message: Message,
    handle: &RunHandle,
) -> Result<(), Halt> {
    let store = inner.store();
    let session = match store.get_session(&Scope::default(), run.session_id).await {
        Ok(Some(session)) => session,
        Ok(None) => return Err(Halt),
        Err(e) => return Err(halt(run.id, e)),
    };
    let profile = profile::profile(&session.agent_name);
    let mut conversation = match store.conversation(run.session_id).await {
        Ok(messages) => messages,
        Err(e) => return Err(halt(run.id, e)),
    };
    if !conversation.iter().any(|m| m.id == user_message.id) {
        conversation.push(user_message);
    }
    let limit = session
        .config
        .recursion_limit
        .unwrap_or(inner.settings.recursion_limit)
        .max(1);
    let mut tool_ctx = ToolContext::new(run.session_id, session.scopes.clone());
    let mut turn = Turn {
        pending: String::new(),
        last_assistant: None,
        input_tokens: 0,
        output_tokens: 0,
        cost: 0.0,
        model: None,
        usage_seen: false,
    };
    emitter
        .emit(EventKind::Status {
            status: RunStatus::Thinking,
        })
        .await?;

    let ending = steps(
        inner,
        emitter,
        run,
        &session.config,
        &profile,
        limit,
        &mut conversation,
        &mut tool_ctx,
        &mut turn,
        handle,
    )
    .await?;
    if let Ending::Stopped(StopReason::LeaseLost) = ending {
        metrics::run_ended("lease_lost");
        return Ok(());
    }

    // The final assistant message: the unsaved partial reply (or an empty one when the run
    // saved none), else the last one saved.
    let assistant = match turn.last_assistant.take() {
        Some(last) if turn.pending.is_empty() => last,
        _ => {
            let model_used = turn.model.as_ref().map(|m| m.model.clone());
            emitter
                .save(NewMessage {
                    model_used,
                    ..NewMessage::text(Role::Assistant, std::mem::take(&mut turn.pending))
                })
                .await?
        }
    };
    if let Some(model) = turn.model.as_ref().filter(|_| turn.usage_seen) {
        emitter
            .emit(EventKind::Usage {
                input_tokens: turn.input_tokens,
                output_tokens: turn.output_tokens,
                estimated_cost: turn.cost,
                provider: model.provider.clone(),
                model: model.model.clone(),
            })
            .await?;
    }
    let (state, error) = match &ending {
        Ending::Completed => {
            emitter
                .emit(EventKind::Status {
                    status: RunStatus::Idle,
                })
                .await?;
            (RunState::Completed, None)
        }
        Ending::Llm(e) => {
            tracing::warn!(run_id = %run.id, error = %e, "the model failed");
            let message = format!("the language model is unavailable: {e}");
            emitter
                .emit(error_event(Code::LlmUnavailable, &message))
                .await?;
            emitter
                .emit(EventKind::Status {
                    status: RunStatus::Idle,
                })
                .await?;
            (RunState::Failed, Some(message))
        }
        Ending::RecursionLimit(limit) => {
            let message = format!(
                "the agent reached its recursion limit of {limit} model calls without a final \
                 answer; raise recursion_limit in the session config to allow more steps"
            );
            emitter
                .emit(error_event(Code::InternalError, &message))
                .await?;
            emitter
                .emit(EventKind::Status {
                    status: RunStatus::Idle,
                })
                .await?;
            (RunState::Failed, Some(message))
        }
        Ending::Stopped(StopReason::Shutdown) => {
            emitter
                .emit(error_event(Code::StreamingError, SHUTDOWN_MESSAGE))
                .await?;
            (RunState::Interrupted, Some(SHUTDOWN_MESSAGE.to_owned()))
        }
        Ending::Stopped(_) => {
            emitter
                .emit(error_event(Code::Aborted, ABORTED_MESSAGE))
                .await?;
            emitter
                .emit(EventKind::Status {
                    status: RunStatus::Cancelled,
                })
                .await?;
            (RunState::Cancelled, Some(ABORTED_MESSAGE.to_owned()))
        }
    };
    if emitter
        .finish(state, error.as_deref(), assistant.clone())
        .await?
    {
        tracing::debug!(run_id = %run.id, %state, "run finished");
        metrics::run_ended(state.as_str());
        send_callback(inner, run, state, assistant);
    } else {
        metrics::run_ended("lease_lost");
    }
    Ok(())
}

pub(crate) fn error_event(code: Code, message: &str) -> EventKind {
    EventKind::Error {
        message: message.to_owned(),
        code: code.as_str().to_owned(),
    }
}

/// Posts the run's final message to its callback URL, in the background.
pub(crate) fn send_callback(inner: &Arc<Inner>, run: &Run, state: RunState, message: Message) {
    let Some(url) = run.callback_url.clone() else {
        return;
    };
    let delivery = Delivery {
        url,
        session_id: run.session_id,
        run_id: run.id,
        status: state.as_str().to_owned(),
        message,
    };
    let callbacks = inner.callbacks.clone();
    inner.tasks.spawn(async move {
        match callbacks.deliver(&delivery).await {
            Ok(status) => tracing::debug!(run_id = %delivery.run_id, status, "callback delivered"),
            Err(e) => tracing::warn!(run_id = %delivery.run_id, error = %e, "callback failed"),
        }
    });
}

#[allow(clippy::too_many_arguments)]
async fn steps(
    inner: &Arc<Inner>,
    emitter: &Emitter<'_>,
    run: &Run,
    config: &crate::domain::SessionConfig,
    profile: &Profile,
    limit: u32,
    conversation: &mut Vec<Message>,
    tool_ctx: &mut ToolContext,
    turn: &mut Turn,
    handle: &RunHandle,
) -> Result<Ending, Halt> {
    let specs: Vec<_> = profile
        .tools
        .iter()
        .filter_map(|t| tools::spec(t))
        .collect();
    for step in 1..=limit {
        let request = ChatRequest {
            system: Some(profile.system_prompt.clone()),
            messages: context::chat_messages(conversation),
            tools: specs.clone(),
            model: run.model.clone().or_else(|| config.model.clone()),
            temperature: config.temperature,
            max_tokens: config.max_tokens,
        };
        let call_started = Instant::now();
        // Covers the request (retries and fallbacks included) to the answer's last event.
        let llm_span = tracing::info_span!(
            "llm.call",
            otel.kind = "client",
            step,
            provider = tracing::field::Empty,
            model = tracing::field::Empty,
            input_tokens = tracing::field::Empty,
            output_tokens = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        let opened = tokio::select! {
            _ = handle.token.cancelled() => return Ok(stopped(handle)),
            opened = inner.model.stream(request).instrument(llm_span.clone()) => opened,
        };
        let (model, mut stream) = match opened {
            Ok(opened) => opened,
            Err(e) => return Ok(Ending::Llm(llm_failed(&llm_span, e))),
        };
        llm_span.record("provider", model.provider.as_str());
        llm_span.record("model", model.model.as_str());
        turn.model = Some(model.clone());
        let mut calls: Vec<ToolCall> = Vec::new();
        let step_output;
        let mut lookahead = None;
        loop {
            let item = match lookahead.take() {
                Some(item) => item,
                None => tokio::select! {
                    _ = handle.token.cancelled() => return Ok(stopped(handle)),
                    item = stream.next().instrument(llm_span.clone()) => item,
                },
            };
            match item {
                Some(Ok(ChatEvent::TextDelta(mut text))) => {
                    // Deltas that already arrived go out as one `token` event: no delay is
                    // added, and a fast model costs one log write per batch, not per delta.
                    while let Some(next) = stream.next().now_or_never() {
                        match next {
                            Some(Ok(ChatEvent::TextDelta(more))) => text.push_str(&more),
                            other => {
                                lookahead = Some(other);
                                break;
                            }
                        }
                    }
                    if text.is_empty() {
                        continue;
                    }
                    turn.pending.push_str(&text);
                    emitter.emit(EventKind::Token { content: text }).await?;
                }
                Some(Ok(ChatEvent::ToolCall(call))) => calls.push(call),
                Some(Ok(ChatEvent::Finished { usage, .. })) => {
                    metrics::llm_call(&model.provider, &model.model, call_started.elapsed());
                    turn.add_usage(&model, usage);
                    llm_span.record("input_tokens", usage.input_tokens);
                    llm_span.record("output_tokens", usage.output_tokens);
                    step_output = usage.output_tokens;
                    break;
                }
                Some(Err(e)) => return Ok(Ending::Llm(llm_failed(&llm_span, e))),
                None => {
                    let broken = LlmError::Protocol {
                        provider: model.provider.clone(),
                        message: "the stream ended before the answer was complete".into(),
                    };
                    return Ok(Ending::Llm(llm_failed(&llm_span, broken)));
                }
            }
        }
        drop(stream);
        drop(llm_span);
        let saved = emitter
            .save(NewMessage {
                tool_calls: calls.clone(),
                token_count: Some(step_output),
                model_used: Some(model.model.clone()),
                ..NewMessage::text(Role::Assistant, std::mem::take(&mut turn.pending))
            })
            .await?;
        conversation.push(saved.clone());
        turn.last_assistant = Some(saved);
        if calls.is_empty() {
            return Ok(Ending::Completed);
        }
        if step == limit {
            // Keep the conversation valid: every call gets a result, none runs.
            for call in &calls {
                let saved = save_tool_result(
                    emitter,
                    call,
                    "Error: not run: the recursion limit was reached",
                )
                .await?;
                conversation.push(saved);
            }
            return Ok(Ending::RecursionLimit(limit));
        }
        for (i, call) in calls.iter().enumerate() {
            if handle.token.is_cancelled() {
                close_calls(emitter, conversation, &calls[i..], false).await?;
                return Ok(stopped(handle));
            }
            emitter
                .emit(EventKind::ToolCall {
                    name: call.name.clone(),
                    args: call.args.clone(),
                    id: call.id.clone(),
                })
                .await?;
            let exec_id = format!("{}-{}-{}", run.id.simple(), step, i);
            let tool_span = tracing::info_span!(
                "tool.call",
                tool = %call.name,
                tool_call_id = %call.id,
                exec_id = %exec_id,
                exit_code = tracing::field::Empty,
            );
            let outcome = inner
                .toolbox
                .call(tool_ctx, call, profile.tools, exec_id, &handle.token)
                .instrument(tool_span.clone())
                .await;
            if let Outcome::Finished(result) = &outcome {
                tool_span.record("exit_code", result.exit_code);
            }
            drop(tool_span);
            match outcome {
                Outcome::Finished(result) => {
                    let status = if result.exit_code == 0 { "ok" } else { "error" };
                    metrics::tool_call(&call.name, status);
                    for event in result.events {
                        emitter.emit(event).await?;
                    }
                    emitter
                        .emit(EventKind::ToolResult {
                            tool_call_id: call.id.clone(),
                            output: result.output.clone(),
                            exit_code: result.exit_code,
                        })
                        .await?;
                    let saved = save_tool_result(emitter, call, &result.output).await?;
                    conversation.push(saved);
                }
                Outcome::Cancelled => {
                    metrics::tool_call(&call.name, "cancelled");
                    if handle.stop_reason() == Some(StopReason::LeaseLost) {
                        return Ok(stopped(handle));
                    }
                    emitter
                        .emit(EventKind::ToolResult {
                            tool_call_id: call.id.clone(),
                            output: TOOL_ABORTED.to_owned(),
                            exit_code: tools::ABORTED_EXIT_CODE,
                        })
                        .await?;
                    let saved = save_tool_result(emitter, call, TOOL_ABORTED).await?;
                    conversation.push(saved);
                    close_calls(emitter, conversation, &calls[i + 1..], false).await?;
                    return Ok(stopped(handle));
                }
            }
        }
    }
    // The loop returns on the last step; reaching here means limit == 0, prevented above.
    Ok(Ending::RecursionLimit(limit))
}

/// Marks the `llm.call` span failed with `error`, and returns it.
fn llm_failed(span: &tracing::Span, error: LlmError) -> LlmError {
    span.record("otel.status_code", "ERROR");
    span.record("error", tracing::field::display(&error));
    error
}

fn stopped(handle: &RunHandle) -> Ending {
    Ending::Stopped(handle.stop_reason().unwrap_or(StopReason::Abort))
}

async fn save_tool_result(
    emitter: &Emitter<'_>,
    call: &ToolCall,
    output: &str,
) -> Result<Message, Halt> {
    emitter
        .save(NewMessage {
            tool_call_id: Some(call.id.clone()),
            ..NewMessage::text(Role::Tool, output)
        })
        .await
}

/// Gives each of `calls` (never started) an "aborted" result, saved; with `events`, also a
/// `tool_result` event.
pub(crate) async fn close_calls(
    emitter: &Emitter<'_>,
    conversation: &mut Vec<Message>,
    calls: &[ToolCall],
    events: bool,
) -> Result<(), Halt> {
    for call in calls {
        if events {
            emitter
                .emit(EventKind::ToolResult {
                    tool_call_id: call.id.clone(),
                    output: TOOL_ABORTED.to_owned(),
                    exit_code: tools::ABORTED_EXIT_CODE,
                })
                .await?;
        }
        let saved = save_tool_result(emitter, call, TOOL_ABORTED).await?;
        conversation.push(saved);
    }
    Ok(())
}
