//! Turns a streamed HTTP response into a [`ChatStream`]: `eventsource-stream` parses the SSE
//! framing, a provider's [`Decoder`] turns each event into [`ChatEvent`]s. The stream ends after
//! [`ChatEvent::Finished`] or after the first error.

use std::collections::VecDeque;
use std::pin::Pin;

use cognition_config::Secret;
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::{Stream, StreamExt};

use super::{ChatEvent, ChatStream, LlmError};

/// A provider's wire format, event by event.
pub trait Decoder: Send + 'static {
    /// Handles one SSE event, pushing the chat events it completes. Returns `true` when the
    /// answer is complete ([`ChatEvent::Finished`] pushed).
    fn event(&mut self, event: &Event, out: &mut VecDeque<ChatEvent>) -> Result<bool, LlmError>;

    /// The body ended before the answer was complete: push what can still be completed, or
    /// fail.
    fn end_of_body(&mut self, out: &mut VecDeque<ChatEvent>) -> Result<(), LlmError>;
}

type Events = Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

struct State<D> {
    events: Events,
    decoder: D,
    queue: VecDeque<ChatEvent>,
    done: bool,
    /// Delivered after the events decoded before it.
    error: Option<LlmError>,
    provider: String,
    key: Option<Secret>,
}

/// Decodes `response` (a `text/event-stream`) with `decoder`.
pub fn decode<D: Decoder>(
    provider: &str,
    response: reqwest::Response,
    decoder: D,
    key: Option<Secret>,
) -> ChatStream {
    let state = State {
        events: Box::pin(response.bytes_stream().eventsource()),
        decoder,
        queue: VecDeque::new(),
        done: false,
        error: None,
        provider: provider.to_owned(),
        key,
    };
    Box::pin(futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(event) = s.queue.pop_front() {
                return Some((Ok(event), s));
            }
            if let Some(e) = s.error.take() {
                return Some((Err(e), s));
            }
            if s.done {
                return None;
            }
            let step = match s.events.next().await {
                Some(Ok(event)) => s
                    .decoder
                    .event(&event, &mut s.queue)
                    .map(|done| s.done = done),
                Some(Err(e)) => Err(stream_error(&s.provider, e, s.key.as_ref())),
                None => {
                    s.done = true;
                    s.decoder.end_of_body(&mut s.queue)
                }
            };
            if let Err(e) = step {
                s.done = true;
                s.error = Some(e);
            }
        }
    }))
}

fn stream_error(
    provider: &str,
    error: EventStreamError<reqwest::Error>,
    key: Option<&Secret>,
) -> LlmError {
    match error {
        EventStreamError::Transport(e) => super::http::transport(provider, &e, key),
        EventStreamError::Utf8(e) => LlmError::Protocol {
            provider: provider.to_owned(),
            message: format!("the event stream is not UTF-8: {e}"),
        },
        EventStreamError::Parser(e) => LlmError::Protocol {
            provider: provider.to_owned(),
            message: format!("the event stream does not parse: {e}"),
        },
    }
}

/// The error for a body that ended before the answer was complete.
pub fn incomplete(provider: &str) -> LlmError {
    LlmError::Transport {
        provider: provider.to_owned(),
        message: "the response stream ended before the answer was complete".to_owned(),
    }
}

/// The error for an event whose data does not parse.
pub fn invalid(provider: &str, what: &str, error: &serde_json::Error) -> LlmError {
    LlmError::Protocol {
        provider: provider.to_owned(),
        message: format!("cannot parse {what}: {error}"),
    }
}
