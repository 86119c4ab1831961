//! HTTP plumbing shared by the HTTP providers: the client, sending a request (with the trace
//! context) and turning a failed response into an [`LlmError`] with a short message (never the
//! API key) and the provider's `Retry-After`.

use std::time::Duration;

use cognition_config::Secret;
use reqwest::header::HeaderMap;

use super::LlmError;
use super::provider::Failure;

/// Time to establish a connection to a provider.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence between two reads of a response (a model thinking before its first token
/// included).
pub const READ_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest error body read, and longest error message kept.
const MAX_ERROR_BODY: usize = 16 * 1024;
const MAX_ERROR_MESSAGE: usize = 300;

/// The HTTP client shared by the providers of a router (rustls, HTTP/1.1, pooled).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .user_agent(concat!("cognition/", env!("CARGO_PKG_VERSION")))
        .build()
        // Only a broken TLS backend makes the builder fail; the default client has the same.
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Sends `request` with the current span's `traceparent` (the agent loop's `llm.call`); a
/// non-2xx status becomes [`LlmError::Http`] with the provider's message and `Retry-After`, a
/// failed connection [`LlmError::Transport`].
pub async fn send(
    provider: &str,
    request: reqwest::RequestBuilder,
    key: Option<&Secret>,
) -> Result<reqwest::Response, Failure> {
    let mut trace = HeaderMap::new();
    cognition_telemetry::grpc::inject_headers(&mut trace);
    let response = request
        .headers(trace)
        .send()
        .await
        .map_err(|e| Failure::from(transport(provider, &e, key)))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = retry_after(response.headers());
    let body = read_limited(response).await;
    let message = redact(&error_message(&body, status), key);
    Err(Failure {
        error: LlmError::Http {
            provider: provider.to_owned(),
            status: status.as_u16(),
            message,
        },
        retry_after,
    })
}

/// A transport error with its cause chain, without the URL.
pub fn transport(provider: &str, error: &reqwest::Error, key: Option<&Secret>) -> LlmError {
    LlmError::Transport {
        provider: provider.to_owned(),
        message: redact(&describe(error), key),
    }
}

/// `error` and its sources, `: `-joined, without URLs.
pub fn describe(error: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let top = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "cannot connect".to_owned()
    } else if error.is_body() || error.is_decode() {
        "the response stream broke".to_owned()
    } else {
        "request failed".to_owned()
    };
    parts.push(top);
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

async fn read_limited(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_ERROR_BODY {
            body.truncate(MAX_ERROR_BODY);
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// The provider's error message: `error.message` of the JSON body (OpenAI and Anthropic both
/// use it, Anthropic with `error.type`), else the start of the body, else the status text.
fn error_message(body: &str, status: reqwest::StatusCode) -> String {
    let from_json = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let error = v.get("error")?;
            match error {
                serde_json::Value::String(s) => Some(s.clone()),
                _ => {
                    let message = error.get("message")?.as_str()?;
                    Some(match error.get("type").and_then(|t| t.as_str()) {
                        Some(kind) if !message.contains(kind) => format!("{kind}: {message}"),
                        _ => message.to_owned(),
                    })
                }
            }
        });
    let message = match from_json {
        Some(m) => m,
        None if body.trim().is_empty() => {
            status.canonical_reason().unwrap_or("no message").to_owned()
        }
        None => body.split_whitespace().collect::<Vec<_>>().join(" "),
    };
    truncate(&message, MAX_ERROR_MESSAGE)
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Replaces the key wherever it appears (some providers echo it in error messages).
pub fn redact(text: &str, key: Option<&Secret>) -> String {
    match key {
        Some(key) if key.expose().len() >= 4 => text.replace(key.expose(), "***"),
        _ => text.to_owned(),
    }
}

/// `retry-after-ms` (OpenAI), else `retry-after` in seconds or as an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && let Ok(wait) = Duration::try_from_secs_f64(ms / 1000.0)
    {
        return Some(wait);
    }
    let value = header("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = date.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;
    use reqwest::header::HeaderValue;

    #[test]
    fn messages_from_both_error_formats() {
        let openai = r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        assert_eq!(
            error_message(openai, StatusCode::TOO_MANY_REQUESTS),
            "requests: Rate limit reached"
        );
        let anthropic =
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(
            error_message(anthropic, StatusCode::from_u16(529).unwrap()),
            "overloaded_error: Overloaded"
        );
        assert_eq!(
            error_message("<html>\n bad  gateway</html>", StatusCode::BAD_GATEWAY),
            "<html> bad gateway</html>"
        );
        assert_eq!(error_message("", StatusCode::BAD_GATEWAY), "Bad Gateway");
        let long = "é".repeat(400);
        assert!(error_message(&long, StatusCode::BAD_REQUEST).len() <= MAX_ERROR_MESSAGE + 3);
    }

    #[test]
    fn keys_are_redacted() {
        let key = Secret::new("sk-secret-123");
        assert_eq!(
            redact("Incorrect API key provided: sk-secret-123.", Some(&key)),
            "Incorrect API key provided: ***."
        );
        assert_eq!(redact("x", None), "x");
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a past date: now");
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("-1"));
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("1e300"));
        assert_eq!(retry_after(&h), None);
    }
}
