//! Reading a server-sent event stream as it arrives, with the time each event was parsed.

use std::time::Instant;

use eventsource_stream::{Event, Eventsource as _};
use futures::StreamExt as _;
use http_body_util::BodyExt as _;

/// Whether to go on reading after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// Calls `on_event` with each event of `body` (comments and `retry:`-only frames are skipped)
/// and the instant it was parsed, until it says [`Flow::Stop`] (true) or the body ends (false).
pub async fn each_event(
    body: hyper::body::Incoming,
    mut on_event: impl FnMut(Event, Instant) -> anyhow::Result<Flow>,
) -> anyhow::Result<bool> {
    let mut events = body.into_data_stream().eventsource();
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| anyhow::anyhow!("event stream: {e}"))?;
        if on_event(event, Instant::now())? == Flow::Stop {
            return Ok(true);
        }
    }
    Ok(false)
}

/// What a client saw of one run on a gateway event stream.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// The `id:` (sequence number) of every event, in arrival order.
    pub seqs: Vec<u64>,
    /// When the first `token` event arrived.
    pub first_token: Option<Instant>,
    /// When the `done` event arrived.
    pub done: Option<Instant>,
    /// Events after `done`.
    pub after_done: usize,
}

impl Trace {
    fn see(&mut self, event: &Event, at: Instant) -> anyhow::Result<Flow> {
        let seq = event
            .id
            .parse()
            .map_err(|_| anyhow::anyhow!("{} event without a numeric id", event.event))?;
        if self.done.is_some() {
            self.after_done += 1;
        }
        self.seqs.push(seq);
        match event.event.as_str() {
            "token" if self.first_token.is_none() => self.first_token = Some(at),
            "done" if self.done.is_none() => {
                self.done = Some(at);
                return Ok(Flow::Stop);
            }
            _ => {}
        }
        Ok(Flow::Continue)
    }

    /// Reads a gateway event stream up to its `done` event; with `to_end`, then on to the end
    /// of the body (so that the connection can carry the next request).
    pub async fn follow(body: hyper::body::Incoming, to_end: bool) -> anyhow::Result<Trace> {
        let mut trace = Trace::default();
        each_event(body, |event, at| {
            let flow = trace.see(&event, at)?;
            Ok(if to_end { Flow::Continue } else { flow })
        })
        .await?;
        Ok(trace)
    }
}
