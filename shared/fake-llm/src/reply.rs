//! Scripted replies: what the fake server answers to one request, in a wire-neutral form that
//! [`crate::openai`] and [`crate::anthropic`] turn into their formats.

use std::time::Duration;

/// Token counts the fake reports for a reply, the way each provider does (OpenAI: a final
/// `usage` chunk when `stream_options.include_usage` is set; Anthropic: input tokens in
/// `message_start`, output tokens in `message_delta`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// A tool call of a scripted reply. `arguments` is the JSON text the model "writes"; it is
/// streamed in several fragments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// How a streamed reply ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    /// Normally (`[DONE]` / `message_stop`).
    Complete,
    /// The connection drops after this many content pieces (text tokens and argument
    /// fragments), without the closing events.
    Break { after: usize },
    /// The provider's in-stream error event after this many content pieces, then the end of
    /// the body.
    ErrorEvent { after: usize, message: String },
    /// Nothing more after this many content pieces: only keepalives (SSE comments for OpenAI,
    /// `ping` events for Anthropic) every 100 ms until the client goes away.
    Hang { after: usize },
}

/// Why the model stopped, as reported in the last event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// `stop` / `end_turn`, or `tool_calls` / `tool_use` when the reply has tool calls.
    Natural,
    /// `length` / `max_tokens`.
    MaxTokens,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body {
    Stream {
        text: Vec<String>,
        tool_calls: Vec<ToolCall>,
        end: End,
        stop: Stop,
    },
    Error {
        status: u16,
        message: String,
        /// Sent as is instead of the provider's error JSON.
        raw_body: Option<String>,
    },
}

/// One scripted answer of the fake server, consumed by one request.
///
/// ```
/// use std::time::Duration;
/// use cognition_fake_llm::Reply;
/// use serde_json::json;
///
/// let text = Reply::text("Hello there").usage(12, 2);
/// let tools = Reply::text("Let me look.")
///     .with_tool_call("call_1", "ls", json!({"path": "/"}))
///     .with_tool_call("call_2", "read_file", json!({"file_path": "/a"}));
/// let slow = Reply::text("a b c").token_delay(Duration::from_millis(50));
/// let broken = Reply::text("a b c d").break_after(2);
/// let limited = Reply::rate_limited(1);
/// # let _ = (text, tools, slow, broken, limited);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub(crate) body: Body,
    pub(crate) usage: Option<Usage>,
    pub(crate) token_delay: Duration,
    pub(crate) delay: Duration,
    pub(crate) headers: Vec<(String, String)>,
}

/// Default input token count when a reply does not set [`Reply::usage`].
pub const DEFAULT_INPUT_TOKENS: u64 = 10;

impl Reply {
    fn stream(text: Vec<String>, tool_calls: Vec<ToolCall>) -> Reply {
        Reply {
            body: Body::Stream {
                text,
                tool_calls,
                end: End::Complete,
                stop: Stop::Natural,
            },
            usage: None,
            token_delay: Duration::ZERO,
            delay: Duration::ZERO,
            headers: Vec::new(),
        }
    }

    /// A text answer, streamed word by word (`"Hello big world"` → `"Hello"`, `" big"`,
    /// `" world"`).
    pub fn text(text: &str) -> Reply {
        Reply::stream(split_tokens(text), Vec::new())
    }

    /// A text answer streamed in exactly these pieces.
    pub fn tokens<I, S>(tokens: I) -> Reply
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Reply::stream(tokens.into_iter().map(Into::into).collect(), Vec::new())
    }

    /// A single tool call and no text.
    pub fn tool_call(id: &str, name: &str, args: serde_json::Value) -> Reply {
        Reply::stream(Vec::new(), Vec::new()).with_tool_call(id, name, args)
    }

    /// Adds a tool call (after the text and earlier tool calls). Arguments are streamed in
    /// several fragments.
    pub fn with_tool_call(self, id: &str, name: &str, args: serde_json::Value) -> Reply {
        self.with_raw_tool_call(id, name, &args.to_string())
    }

    /// Adds a tool call whose arguments are this exact text (which may be invalid JSON).
    pub fn with_raw_tool_call(mut self, id: &str, name: &str, arguments: &str) -> Reply {
        if let Body::Stream { tool_calls, .. } = &mut self.body {
            tool_calls.push(ToolCall {
                id: id.to_owned(),
                name: name.to_owned(),
                arguments: arguments.to_owned(),
            });
        }
        self
    }

    /// An HTTP error with the provider's error JSON (`{"error":{"message":…}}` for OpenAI,
    /// `{"type":"error","error":{…}}` for Anthropic).
    pub fn error(status: u16, message: &str) -> Reply {
        Reply {
            body: Body::Error {
                status,
                message: message.to_owned(),
                raw_body: None,
            },
            ..Reply::stream(Vec::new(), Vec::new())
        }
    }

    /// An HTTP error with exactly this body.
    pub fn error_body(status: u16, body: &str) -> Reply {
        Reply {
            body: Body::Error {
                status,
                message: String::new(),
                raw_body: Some(body.to_owned()),
            },
            ..Reply::stream(Vec::new(), Vec::new())
        }
    }

    /// HTTP 429 with `retry-after: <seconds>`.
    pub fn rate_limited(retry_after_secs: u64) -> Reply {
        Reply::error(429, "Rate limit reached; please retry later.")
            .header("retry-after", &retry_after_secs.to_string())
    }

    /// A stream that opens (status 200, first event) and then sends only keepalives until
    /// the client disconnects: for abort and timeout tests.
    pub fn hang() -> Reply {
        Reply::stream(Vec::new(), Vec::new()).hang_after(0)
    }

    /// Token counts to report (default: [`DEFAULT_INPUT_TOKENS`] in, one per content piece
    /// out).
    pub fn usage(mut self, input_tokens: u64, output_tokens: u64) -> Reply {
        self.usage = Some(Usage {
            input_tokens,
            output_tokens,
        });
        self
    }

    /// Waits this long before each content piece (text token or argument fragment).
    pub fn token_delay(mut self, delay: Duration) -> Reply {
        self.token_delay = delay;
        self
    }

    /// Waits this long before sending the response status and headers.
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    /// Adds a response header (e.g. `retry-after`).
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Drops the connection after `pieces` content pieces, without the closing events.
    pub fn break_after(self, pieces: usize) -> Reply {
        self.with_end(End::Break { after: pieces })
    }

    /// Sends the provider's in-stream error event after `pieces` content pieces, then ends
    /// the body.
    pub fn error_after(self, pieces: usize, message: &str) -> Reply {
        self.with_end(End::ErrorEvent {
            after: pieces,
            message: message.to_owned(),
        })
    }

    /// Stops sending content after `pieces` content pieces and only sends keepalives until
    /// the client disconnects.
    pub fn hang_after(self, pieces: usize) -> Reply {
        self.with_end(End::Hang { after: pieces })
    }

    /// Reports that the answer was cut by the token limit (`length` / `max_tokens`).
    pub fn truncated(mut self) -> Reply {
        if let Body::Stream { stop, .. } = &mut self.body {
            *stop = Stop::MaxTokens;
        }
        self
    }

    fn with_end(mut self, new_end: End) -> Reply {
        if let Body::Stream { end, .. } = &mut self.body {
            *end = new_end;
        }
        self
    }

    /// The usage reported for this reply.
    pub(crate) fn effective_usage(&self) -> Usage {
        self.usage.unwrap_or_else(|| {
            let pieces = match &self.body {
                Body::Stream {
                    text, tool_calls, ..
                } => {
                    text.len()
                        + tool_calls
                            .iter()
                            .map(|c| split_arguments(&c.arguments).len())
                            .sum::<usize>()
                }
                Body::Error { .. } => 0,
            };
            Usage {
                input_tokens: DEFAULT_INPUT_TOKENS,
                output_tokens: pieces.max(1) as u64,
            }
        })
    }
}

/// Splits text into word tokens that keep their leading whitespace.
pub(crate) fn split_tokens(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    for c in text.chars() {
        if c.is_whitespace() {
            if in_word {
                tokens.push(std::mem::take(&mut current));
                in_word = false;
            }
        } else {
            in_word = true;
        }
        current.push(c);
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

/// Splits tool arguments into up to three fragments on character boundaries (the way the
/// real APIs stream them: several partial JSON strings).
pub(crate) fn split_arguments(arguments: &str) -> Vec<String> {
    let chars: Vec<char> = arguments.chars().collect();
    if chars.is_empty() {
        return Vec::new();
    }
    let size = chars.len().div_ceil(3).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keep_whitespace() {
        assert_eq!(
            split_tokens("Hello big  world"),
            ["Hello", " big", "  world"]
        );
        assert_eq!(split_tokens(" lead"), [" lead"]);
        assert_eq!(split_tokens(""), Vec::<String>::new());
        assert_eq!(split_tokens("a b c").concat(), "a b c");
    }

    #[test]
    fn arguments_split_in_fragments() {
        let args = r#"{"path":"/tmp/ü"}"#;
        let parts = split_arguments(args);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts.concat(), args);
        assert_eq!(split_arguments("{}"), ["{", "}"]);
    }

    #[test]
    fn default_usage_counts_pieces() {
        let r = Reply::text("a b c");
        assert_eq!(r.effective_usage().output_tokens, 3);
        assert_eq!(r.usage(5, 6).effective_usage().input_tokens, 5);
    }
}
