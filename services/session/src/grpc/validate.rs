//! Wire → domain conversions of requests, with every rule a client can break.
//!
//! Each failure is a `VALIDATION_ERROR` whose message names the field and whose details carry
//! `{"field": …}`; nothing here panics on client input.

use std::collections::HashMap;

use cognition_errors::ApiError;
use cognition_proto::session::v1 as pb;
use uuid::Uuid;

use crate::agents;
use crate::domain::{NewSession, SessionConfig, SessionPatch, StringMap};
use crate::store::Cursor;

/// Longest session title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Most metadata entries of one session (and of one list filter).
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Longest metadata key, in bytes.
pub const MAX_METADATA_KEY_BYTES: usize = 128;
/// Longest metadata value, in bytes.
pub const MAX_METADATA_VALUE_BYTES: usize = 1024;
/// Page size of `ListSessions` when the request says 0.
pub const DEFAULT_SESSION_LIMIT: u32 = 100;
/// Page size of `ListMessages` when the request says 0.
pub const DEFAULT_MESSAGE_LIMIT: u32 = 50;
/// Largest page of either list.
pub const MAX_LIMIT: u32 = 1000;
/// Highest accepted temperature.
pub const MAX_TEMPERATURE: f64 = 2.0;

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::validation(message).with_detail("field", field)
}

/// Parses a UUID field: `"<field> must be a UUID"` otherwise.
pub fn uuid(field: &str, raw: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(raw).map_err(|_| invalid(field, format!("{field} must be a UUID")))
}

pub fn title(title: Option<String>) -> Result<Option<String>, ApiError> {
    match title {
        Some(t) if t.chars().count() > MAX_TITLE_CHARS => Err(invalid(
            "title",
            format!("title must be at most {MAX_TITLE_CHARS} characters"),
        )),
        other => Ok(other),
    }
}

pub fn agent_name(name: String) -> Result<String, ApiError> {
    if agents::is_known(&name) {
        Ok(name)
    } else {
        Err(invalid("agent_name", format!("unknown agent {name:?}"))
            .with_detail("known_agents", agents::NATIVE_AGENTS.to_vec()))
    }
}

pub fn metadata(field: &str, map: HashMap<String, String>) -> Result<StringMap, ApiError> {
    if map.len() > MAX_METADATA_ENTRIES {
        return Err(invalid(
            field,
            format!("{field} has more than {MAX_METADATA_ENTRIES} entries"),
        ));
    }
    for (key, value) in &map {
        if key.is_empty() {
            return Err(invalid(field, format!("{field} keys must not be empty")));
        }
        if key.len() > MAX_METADATA_KEY_BYTES {
            return Err(invalid(
                field,
                format!("{field} keys must be at most {MAX_METADATA_KEY_BYTES} bytes"),
            ));
        }
        if value.len() > MAX_METADATA_VALUE_BYTES {
            return Err(invalid(
                field,
                format!(
                    "{field} value of {key:?} must be at most {MAX_METADATA_VALUE_BYTES} bytes"
                ),
            ));
        }
    }
    Ok(map.into_iter().collect())
}

/// Page size: 0 → `default`, above [`MAX_LIMIT`] → error.
pub fn limit(raw: u32, default: u32) -> Result<u32, ApiError> {
    match raw {
        0 => Ok(default),
        n if n > MAX_LIMIT => Err(invalid(
            "limit",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        )),
        n => Ok(n),
    }
}

/// An empty cursor starts at the first page.
pub fn cursor(raw: &str) -> Result<Option<Cursor>, ApiError> {
    if raw.is_empty() {
        return Ok(None);
    }
    Cursor::decode(raw)
        .map(Some)
        .map_err(|_| invalid("cursor", "cursor is invalid"))
}

impl TryFrom<pb::SessionConfig> for SessionConfig {
    type Error = ApiError;
    fn try_from(c: pb::SessionConfig) -> Result<Self, ApiError> {
        if let Some(t) = c.temperature
            && !(0.0..=MAX_TEMPERATURE).contains(&t)
        {
            return Err(invalid(
                "config.temperature",
                "config.temperature must be between 0 and 2",
            ));
        }
        if c.max_tokens == Some(0) {
            return Err(invalid(
                "config.max_tokens",
                "config.max_tokens must be at least 1",
            ));
        }
        if c.recursion_limit == Some(0) {
            return Err(invalid(
                "config.recursion_limit",
                "config.recursion_limit must be at least 1",
            ));
        }
        if c.provider.is_some() && c.model.is_none() {
            return Err(invalid(
                "config.model",
                "config.provider requires config.model",
            ));
        }
        Ok(SessionConfig {
            provider_id: c.provider_id,
            provider: c.provider,
            model: c.model,
            temperature: c.temperature,
            max_tokens: c.max_tokens,
            recursion_limit: c.recursion_limit,
        })
    }
}

impl TryFrom<pb::CreateSessionRequest> for NewSession {
    type Error = ApiError;
    /// The session without scopes (the handler adds the caller's).
    fn try_from(req: pb::CreateSessionRequest) -> Result<Self, ApiError> {
        Ok(NewSession {
            title: title(req.title)?,
            agent_name: agent_name(
                req.agent_name
                    .unwrap_or_else(|| agents::DEFAULT_AGENT.to_owned()),
            )?,
            metadata: metadata("metadata", req.metadata)?,
            config: SessionConfig::default(),
            scopes: StringMap::new(),
        })
    }
}

/// The session id and patch of an `UpdateSession` request.
pub fn update(req: pb::UpdateSessionRequest) -> Result<(Uuid, SessionPatch), ApiError> {
    let id = uuid("session_id", &req.session_id)?;
    let patch = SessionPatch {
        title: title(req.title)?,
        agent_name: req.agent_name.map(agent_name).transpose()?,
        status: None,
        metadata: req
            .metadata
            .map(|m| metadata("metadata", m.entries))
            .transpose()?,
        config: req.config.map(SessionConfig::try_from).transpose()?,
    };
    Ok((id, patch))
}

#[cfg(test)]
mod tests {
    use cognition_errors::Code;

    use super::*;

    fn field(e: &ApiError) -> &str {
        e.details
            .get("field")
            .and_then(|v| v.as_str())
            .unwrap_or("")
    }

    #[test]
    fn create_defaults_and_limits() {
        let s = NewSession::try_from(pb::CreateSessionRequest::default()).unwrap();
        assert_eq!(s.agent_name, "default");
        assert_eq!(s.title, None);

        let long = pb::CreateSessionRequest {
            title: Some("é".repeat(201)),
            ..Default::default()
        };
        let e = NewSession::try_from(long).unwrap_err();
        assert_eq!((e.code, field(&e)), (Code::ValidationError, "title"));
        let ok = pb::CreateSessionRequest {
            title: Some("é".repeat(200)),
            ..Default::default()
        };
        assert!(NewSession::try_from(ok).is_ok());

        let agent = pb::CreateSessionRequest {
            agent_name: Some("ghost".into()),
            ..Default::default()
        };
        let e = NewSession::try_from(agent).unwrap_err();
        assert!(e.message.contains("unknown agent"), "{}", e.message);
    }

    #[test]
    fn metadata_limits() {
        let many: HashMap<_, _> = (0..65).map(|i| (i.to_string(), "v".to_string())).collect();
        assert!(metadata("metadata", many).is_err());
        let long_key = HashMap::from([("k".repeat(129), "v".to_string())]);
        assert!(metadata("metadata", long_key).is_err());
        let long_value = HashMap::from([("k".to_string(), "v".repeat(1025))]);
        assert!(metadata("metadata", long_value).is_err());
        let empty_key = HashMap::from([(String::new(), "v".to_string())]);
        assert!(metadata("metadata", empty_key).is_err());
        let fine = HashMap::from([("k".repeat(128), "v".repeat(1024))]);
        assert_eq!(metadata("metadata", fine).unwrap().len(), 1);
    }

    #[test]
    fn config_rules() {
        let bad = [
            pb::SessionConfig {
                temperature: Some(2.5),
                ..Default::default()
            },
            pb::SessionConfig {
                temperature: Some(-0.1),
                ..Default::default()
            },
            pb::SessionConfig {
                temperature: Some(f64::NAN),
                ..Default::default()
            },
            pb::SessionConfig {
                max_tokens: Some(0),
                ..Default::default()
            },
            pb::SessionConfig {
                recursion_limit: Some(0),
                ..Default::default()
            },
            pb::SessionConfig {
                provider: Some("openai".into()),
                ..Default::default()
            },
        ];
        for c in bad {
            assert!(SessionConfig::try_from(c.clone()).is_err(), "{c:?}");
        }
        let good = pb::SessionConfig {
            provider: Some("openai".into()),
            model: Some("gpt-4o".into()),
            temperature: Some(2.0),
            max_tokens: Some(1),
            recursion_limit: Some(1),
            ..Default::default()
        };
        assert_eq!(
            SessionConfig::try_from(good).unwrap().temperature,
            Some(2.0)
        );
    }

    #[test]
    fn limits_and_ids() {
        assert_eq!(limit(0, 100).unwrap(), 100);
        assert_eq!(limit(1000, 100).unwrap(), 1000);
        assert!(limit(1001, 100).is_err());
        let e = uuid("session_id", "nope").unwrap_err();
        assert_eq!(e.message, "session_id must be a UUID");
        assert!(cursor("").unwrap().is_none());
        assert!(cursor("zz").is_err());
    }
}
