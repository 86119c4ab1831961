//! The body of a streamed reply as a list of SSE frames, cut where a [`Reply`] says the stream
//! breaks, errs or hangs; and the body stream that plays them (with token delays).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;

use crate::reply::End;

/// How often a hanging stream sends a keepalive.
const KEEPALIVE_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Before any content (OpenAI role chunk, Anthropic `message_start`, `ping`, first block
    /// start).
    Opening,
    /// A text token or an argument fragment (delayed by the token delay, counted by cuts).
    Content,
    /// Structure between content (block stops and starts, tool call headers).
    Other,
    /// The closing events (finish reason, usage, `[DONE]` / `message_delta`, `message_stop`).
    Closing,
}

#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub kind: Kind,
    pub bytes: Bytes,
}

impl Frame {
    /// `data: <json>\n\n` (OpenAI).
    pub fn data(kind: Kind, json: &serde_json::Value) -> Frame {
        Frame {
            kind,
            bytes: Bytes::from(format!("data: {json}\n\n")),
        }
    }

    /// `event: <name>\ndata: <json>\n\n` (Anthropic).
    pub fn event(kind: Kind, name: &str, json: &serde_json::Value) -> Frame {
        Frame {
            kind,
            bytes: Bytes::from(format!("event: {name}\ndata: {json}\n\n")),
        }
    }

    pub fn raw(kind: Kind, text: &str) -> Frame {
        Frame {
            kind,
            bytes: Bytes::from(text.to_owned()),
        }
    }
}

/// What happens after the last frame.
#[derive(Debug, Clone)]
pub(crate) enum Tail {
    Done,
    Break,
    Hang { keepalive: Bytes },
}

/// Applies `end` to the full list of frames: cut, then maybe an error frame, then the tail.
pub(crate) fn apply_end(
    mut frames: Vec<Frame>,
    end: &End,
    error_frame: impl FnOnce(&str) -> Frame,
    keepalive: Bytes,
) -> (Vec<Frame>, Tail) {
    let after = match end {
        End::Complete => return (frames, Tail::Done),
        End::Break { after } | End::ErrorEvent { after, .. } | End::Hang { after } => *after,
    };
    let first_closing = frames
        .iter()
        .position(|f| f.kind == Kind::Closing)
        .unwrap_or(frames.len());
    let cut = if after == 0 {
        frames
            .iter()
            .position(|f| f.kind != Kind::Opening)
            .unwrap_or(frames.len())
    } else {
        frames
            .iter()
            .enumerate()
            .filter(|(_, f)| f.kind == Kind::Content)
            .nth(after - 1)
            .map(|(i, _)| i + 1)
            .unwrap_or(frames.len())
    };
    frames.truncate(cut.min(first_closing));
    match end {
        End::Complete => (frames, Tail::Done),
        End::Break { .. } => (frames, Tail::Break),
        End::ErrorEvent { message, .. } => {
            frames.push(error_frame(message));
            (frames, Tail::Done)
        }
        End::Hang { .. } => (frames, Tail::Hang { keepalive }),
    }
}

/// Counts open response streams; decremented when a stream is dropped (finished or the client
/// went away).
pub(crate) struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    pub fn new(counter: Arc<AtomicUsize>) -> OpenGuard {
        counter.fetch_add(1, Ordering::SeqCst);
        OpenGuard(counter)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Player {
    frames: VecDeque<Frame>,
    tail: Tail,
    token_delay: Duration,
    _open: OpenGuard,
}

/// The response body: frames in order, content frames after `token_delay`, then the tail (an
/// I/O error aborts the connection mid-body).
pub(crate) fn play(
    frames: Vec<Frame>,
    tail: Tail,
    token_delay: Duration,
    open: OpenGuard,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let player = Player {
        frames: frames.into(),
        tail,
        token_delay,
        _open: open,
    };
    futures::stream::unfold(player, |mut p| async move {
        if let Some(frame) = p.frames.pop_front() {
            if frame.kind == Kind::Content && !p.token_delay.is_zero() {
                tokio::time::sleep(p.token_delay).await;
            }
            return Some((Ok(frame.bytes), p));
        }
        match &p.tail {
            Tail::Done => None,
            Tail::Break => {
                // Let the server flush what was sent (as a real broken connection would have
                // delivered it) before the connection is torn down.
                tokio::time::sleep(Duration::from_millis(5)).await;
                p.tail = Tail::Done;
                Some((
                    Err(std::io::Error::other("fake-llm: stream broken on purpose")),
                    p,
                ))
            }
            Tail::Hang { keepalive } => {
                let keepalive = keepalive.clone();
                tokio::time::sleep(KEEPALIVE_EVERY).await;
                Some((Ok(keepalive), p))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames() -> Vec<Frame> {
        vec![
            Frame::raw(Kind::Opening, "o"),
            Frame::raw(Kind::Content, "1"),
            Frame::raw(Kind::Other, "x"),
            Frame::raw(Kind::Content, "2"),
            Frame::raw(Kind::Closing, "c"),
        ]
    }

    fn texts(frames: &[Frame]) -> String {
        frames
            .iter()
            .map(|f| String::from_utf8_lossy(&f.bytes).into_owned())
            .collect()
    }

    #[test]
    fn cuts_after_content_pieces_and_never_keeps_closing_frames() {
        let err = |m: &str| Frame::raw(Kind::Closing, &format!("E{m}"));
        let ka = Bytes::from_static(b"k");
        let (f, _) = apply_end(frames(), &End::Complete, err, ka.clone());
        assert_eq!(texts(&f), "o1x2c");
        let (f, t) = apply_end(frames(), &End::Break { after: 1 }, err, ka.clone());
        assert_eq!(texts(&f), "o1");
        assert!(matches!(t, Tail::Break));
        let (f, _) = apply_end(frames(), &End::Break { after: 9 }, err, ka.clone());
        assert_eq!(texts(&f), "o1x2");
        let (f, t) = apply_end(frames(), &End::Hang { after: 0 }, err, ka.clone());
        assert_eq!(texts(&f), "o");
        assert!(matches!(t, Tail::Hang { .. }));
        let end = End::ErrorEvent {
            after: 2,
            message: "boom".into(),
        };
        let (f, t) = apply_end(frames(), &end, err, ka);
        assert_eq!(texts(&f), "o1x2Eboom");
        assert!(matches!(t, Tail::Done));
    }
}
