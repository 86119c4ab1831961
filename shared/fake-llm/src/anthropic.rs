//! The Anthropic messages wire format (`POST /v1/messages`), as the real API streams it:
//! `message_start` (input tokens), `ping`, per content block `content_block_start` (`text` or
//! `tool_use`), `content_block_delta` (`text_delta` or `input_json_delta`) and
//! `content_block_stop`, then `message_delta` (stop reason, output tokens) and `message_stop`.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::frames::{Frame, Kind, Tail, apply_end};
use crate::reply::{Body, Reply, Stop, ToolCall, split_arguments};

/// What a response needs from its request.
pub(crate) struct Call {
    pub id: String,
    pub model: String,
}

impl Call {
    pub fn new(number: usize, body: &Value) -> Call {
        Call {
            id: format!("msg_fake{number}"),
            model: body
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or("fake-model")
                .to_owned(),
        }
    }
}

/// Checks what the real API would reject before answering: the key (when one is required),
/// the `anthropic-version` header, and the shape of the body (`model`, `messages`,
/// `max_tokens` are required). Returns the error response.
pub(crate) fn check(
    api_key: Option<&str>,
    version: Option<&str>,
    required_key: Option<&str>,
    body: &Value,
) -> Result<(), (u16, Value)> {
    if let Some(key) = required_key
        && api_key != Some(key)
    {
        return Err((401, error_json(401, "invalid x-api-key")));
    }
    if version.is_none() {
        return Err((
            400,
            error_json(400, "anthropic-version: header is required"),
        ));
    }
    for field in ["model", "messages", "max_tokens"] {
        if body.get(field).is_none() {
            return Err((400, error_json(400, &format!("{field}: Field required"))));
        }
    }
    if !body.get("messages").is_some_and(Value::is_array) {
        return Err((
            400,
            error_json(400, "messages: Input should be a valid list"),
        ));
    }
    Ok(())
}

/// `{"type":"error","error":{"type","message"}}`.
pub(crate) fn error_json(status: u16, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type(status), "message": message}})
}

fn error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

fn stop_reason(stop: Stop, tool_calls: &[ToolCall]) -> &'static str {
    match stop {
        Stop::MaxTokens => "max_tokens",
        Stop::Natural if tool_calls.is_empty() => "end_turn",
        Stop::Natural => "tool_use",
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
    let usage = reply.effective_usage();
    let mut frames = vec![
        Frame::event(
            Kind::Opening,
            "message_start",
            &json!({
                "type": "message_start",
                "message": {
                    "id": call.id,
                    "type": "message",
                    "role": "assistant",
                    "model": call.model,
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": {
                        "input_tokens": usage.input_tokens,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                        "output_tokens": 1,
                    },
                },
            }),
        ),
        Frame::event(Kind::Opening, "ping", &json!({"type": "ping"})),
    ];
    let mut index = 0;
    if !text.is_empty() {
        frames.push(Frame::event(
            Kind::Opening,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
        ));
        for token in text {
            frames.push(Frame::event(
                Kind::Content,
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": token}}),
            ));
        }
        frames.push(block_stop(index));
        index += 1;
    }
    for tool in tool_calls {
        let kind = if index == 0 {
            Kind::Opening
        } else {
            Kind::Other
        };
        frames.push(Frame::event(
            kind,
            "content_block_start",
            &json!({
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "tool_use", "id": tool.id, "name": tool.name, "input": {}},
            }),
        ));
        let fragments = std::iter::once(String::new()).chain(split_arguments(&tool.arguments));
        for (i, fragment) in fragments.enumerate() {
            frames.push(Frame::event(
                if i == 0 { Kind::Other } else { Kind::Content },
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": fragment}}),
            ));
        }
        frames.push(block_stop(index));
        index += 1;
    }
    frames.push(Frame::event(
        Kind::Closing,
        "message_delta",
        &json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason(*stop, tool_calls), "stop_sequence": null},
            "usage": {"output_tokens": usage.output_tokens},
        }),
    ));
    frames.push(Frame::event(
        Kind::Closing,
        "message_stop",
        &json!({"type": "message_stop"}),
    ));
    apply_end(
        frames,
        end,
        |message| {
            Frame::event(
                Kind::Closing,
                "error",
                &json!({"type": "error", "error": {"type": "overloaded_error", "message": message}}),
            )
        },
        Bytes::from_static(b"event: ping\ndata: {\"type\": \"ping\"}\n\n"),
    )
}

fn block_stop(index: usize) -> Frame {
    Frame::event(
        Kind::Other,
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": index}),
    )
}

/// The `message` object of a non-streamed reply.
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
    let usage = reply.effective_usage();
    let mut content = Vec::new();
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text.concat()}));
    }
    for tool in tool_calls {
        let input: Value = serde_json::from_str(&tool.arguments).unwrap_or_else(|_| json!({}));
        content.push(json!({"type": "tool_use", "id": tool.id, "name": tool.name, "input": input}));
    }
    json!({
        "id": call.id,
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": content,
        "stop_reason": stop_reason(*stop, tool_calls),
        "stop_sequence": null,
        "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
    })
}
