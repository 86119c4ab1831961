//! The OpenAI chat completions wire format (`POST /v1/chat/completions`), as the real API
//! streams it: `data: {chat.completion.chunk}` events, tool call deltas with
//! `index`/`id`/`function.name`/`function.arguments` fragments, a `finish_reason`, a usage
//! chunk with empty `choices` when `stream_options.include_usage` is set, and `data: [DONE]`.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::frames::{Frame, Kind, Tail, apply_end};
use crate::reply::{Body, Reply, Stop, ToolCall, split_arguments};

/// What a response needs from its request.
pub(crate) struct Call {
    pub id: String,
    pub model: String,
    pub created: u64,
    pub include_usage: bool,
}

impl Call {
    pub fn new(number: usize, body: &Value, created: u64) -> Call {
        Call {
            id: format!("chatcmpl-fake{number}"),
            model: body
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or("fake-model")
                .to_owned(),
            created,
            include_usage: body
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        }
    }

    fn chunk(&self, choices: Value) -> Value {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_fake",
            "choices": choices,
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    fn delta(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        self.chunk(json!([{
            "index": 0,
            "delta": delta,
            "logprobs": null,
            "finish_reason": finish_reason,
        }]))
    }
}

/// Checks what the real API would reject before answering: the key (when one is required)
/// and the shape of the body. Returns the error response.
pub(crate) fn check(
    authorization: Option<&str>,
    required_key: Option<&str>,
    body: &Value,
) -> Result<(), (u16, Value)> {
    if let Some(key) = required_key
        && authorization != Some(format!("Bearer {key}").as_str())
    {
        return Err((
            401,
            error_json(401, "Incorrect API key provided.", Some("invalid_api_key")),
        ));
    }
    if !body.get("messages").is_some_and(Value::is_array) {
        return Err((
            400,
            error_json(400, "'messages' is a required property", None),
        ));
    }
    if !body.get("model").is_some_and(Value::is_string) {
        return Err((
            400,
            error_json(400, "you must provide a model parameter", None),
        ));
    }
    Ok(())
}

/// `{"error":{"message","type","param","code"}}`.
pub(crate) fn error_json(status: u16, message: &str, code: Option<&str>) -> Value {
    let kind = match status {
        400 | 401 | 404 | 409 | 422 => "invalid_request_error",
        403 => "permission_error",
        429 => "rate_limit_exceeded",
        _ => "server_error",
    };
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

fn finish_reason(stop: Stop, tool_calls: &[ToolCall]) -> &'static str {
    match stop {
        Stop::MaxTokens => "length",
        Stop::Natural if tool_calls.is_empty() => "stop",
        Stop::Natural => "tool_calls",
    }
}

/// The SSE frames of a streamed reply, cut as the reply says.
pub(crate) fn stream(reply: &Reply, call: &Call) -> (Vec<Frame>, Tail) {
    let Body::Stream {
        text,
        tool_calls,
        end,
        stop,
    } = &reply.body
    else {
        return (Vec::new(), Tail::Done);
    };
    let mut frames = Vec::new();
    let has_text = !text.is_empty() || tool_calls.is_empty();
    if has_text {
        frames.push(Frame::data(
            Kind::Opening,
            &call.delta(
                json!({"role": "assistant", "content": "", "refusal": null}),
                None,
            ),
        ));
        for token in text {
            frames.push(Frame::data(
                Kind::Content,
                &call.delta(json!({"content": token}), None),
            ));
        }
    }
    for (index, tool) in tool_calls.iter().enumerate() {
        let header = json!([{
            "index": index,
            "id": tool.id,
            "type": "function",
            "function": {"name": tool.name, "arguments": ""},
        }]);
        let (kind, delta) = if index == 0 && !has_text {
            (
                Kind::Opening,
                json!({"role": "assistant", "content": null, "tool_calls": header}),
            )
        } else {
            (Kind::Other, json!({"tool_calls": header}))
        };
        frames.push(Frame::data(kind, &call.delta(delta, None)));
        for fragment in split_arguments(&tool.arguments) {
            let delta =
                json!({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]});
            frames.push(Frame::data(Kind::Content, &call.delta(delta, None)));
        }
    }
    frames.push(Frame::data(
        Kind::Closing,
        &call.delta(json!({}), Some(finish_reason(*stop, tool_calls))),
    ));
    if call.include_usage {
        let mut chunk = call.chunk(json!([]));
        chunk["usage"] = usage_json(reply);
        frames.push(Frame::data(Kind::Closing, &chunk));
    }
    frames.push(Frame::raw(Kind::Closing, "data: [DONE]\n\n"));
    apply_end(
        frames,
        end,
        |message| Frame::data(Kind::Closing, &error_json(500, message, None)),
        Bytes::from_static(b": keepalive\n\n"),
    )
}

fn usage_json(reply: &Reply) -> Value {
    let usage = reply.effective_usage();
    json!({
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    })
}

/// The `chat.completion` object of a non-streamed reply.
pub(crate) fn complete(reply: &Reply, call: &Call) -> Value {
    let Body::Stream {
        text,
        tool_calls,
        stop,
        ..
    } = &reply.body
    else {
        return Value::Null;
    };
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text.concat()) },
        "refusal": null,
    });
    if !tool_calls.is_empty() {
        message["tool_calls"] = tool_calls
            .iter()
            .map(|t| {
                json!({
                    "id": t.id,
                    "type": "function",
                    "function": {"name": t.name, "arguments": t.arguments},
                })
            })
            .collect();
    }
    json!({
        "id": call.id,
        "object": "chat.completion",
        "created": call.created,
        "model": call.model,
        "system_fingerprint": "fp_fake",
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(*stop, tool_calls),
        }],
        "usage": usage_json(reply),
    })
}
