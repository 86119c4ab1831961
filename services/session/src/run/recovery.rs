//! Closing a run whose replica stopped (its lease expired): the sweep of any replica takes the
//! run over and ends it like its owner would have: the partial reply (rebuilt from the run's
//! `token` events) is saved, every open tool call gets a result, then `error` (ABORTED when an
//! abort was pending, else STREAMING_ERROR "the session service running this turn stopped")
//! and `done`. The user message was saved when the run started, so nothing is lost, and no
//! watcher waits forever.

use std::sync::Arc;

use cognition_errors::Code;

use super::Inner;
use super::agent::{self, Emitter, Halt};
use super::context;
use crate::domain::{NewMessage, Role};
use crate::event::{EventKind, RunStatus, StoredEvent};
use crate::event_log::REPLAY_PAGE;
use crate::store::{Run, RunState};

/// Message of the `error` event of a run closed by recovery.
pub const RECOVERED_MESSAGE: &str =
    "the session service running this turn stopped; the turn was interrupted";

/// Ends `run`, which this replica just took over. Errors are logged; the lease then expires
/// again and another sweep retries.
pub(crate) async fn close(inner: &Arc<Inner>, run: Run) {
    if let Err(Halt) = close_inner(inner, &run).await {
        tracing::warn!(run_id = %run.id, "recovering the run failed; a later sweep retries");
    }
}

async fn close_inner(inner: &Arc<Inner>, run: &Run) -> Result<(), Halt> {
    let store = inner.store();
    let emitter = Emitter::new(inner, run.session_id, run.id);
    let events = run_events(inner, run).await.map_err(|_| Halt)?;
    let conversation = store.conversation(run.session_id).await.map_err(|_| Halt)?;
    let mut mine = run
        .user_message_id
        .and_then(|id| context::run_messages(&conversation, id))
        .map(<[_]>::to_vec)
        .unwrap_or_default();
    let partial = context::unsaved_text(&events, &mine);
    let open = context::open_tool_calls(&mine);
    agent::close_calls(&emitter, &mut mine, &open, true).await?;
    let last_assistant = mine
        .iter()
        .rev()
        .find(|m| m.role == Role::Assistant)
        .cloned();
    let assistant = match last_assistant {
        Some(last) if partial.is_empty() => last,
        _ => {
            emitter
                .save(NewMessage::text(Role::Assistant, partial))
                .await?
        }
    };
    let (state, message) = if run.cancel_requested {
        emitter
            .emit(agent::error_event(Code::Aborted, agent::ABORTED_MESSAGE))
            .await?;
        emitter
            .emit(EventKind::Status {
                status: RunStatus::Cancelled,
            })
            .await?;
        (RunState::Cancelled, agent::ABORTED_MESSAGE)
    } else {
        emitter
            .emit(agent::error_event(Code::StreamingError, RECOVERED_MESSAGE))
            .await?;
        (RunState::Interrupted, RECOVERED_MESSAGE)
    };
    if emitter
        .finish(state, Some(message), assistant.clone())
        .await?
    {
        tracing::info!(run_id = %run.id, %state, "run closed by recovery");
        agent::send_callback(inner, run, state, assistant);
    }
    Ok(())
}

/// The run's events so far (read from the log, page by page).
async fn run_events(inner: &Inner, run: &Run) -> Result<Vec<StoredEvent>, crate::store::Error> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = inner
            .store()
            .events_after(run.session_id, after, REPLAY_PAGE)
            .await?;
        let full = page.len() == REPLAY_PAGE as usize;
        for event in page {
            after = event.seq;
            if event.run_id == Some(run.id) {
                out.push(event);
            }
        }
        if !full {
            return Ok(out);
        }
    }
}
