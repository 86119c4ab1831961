//! Identifier newtypes: [`SandboxId`] (also a directory name) and [`ExecId`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest accepted id.
pub const MAX_ID_LEN: usize = 128;

/// A sandbox id: `[A-Za-z0-9._-]`, 1–128 characters, not starting with `.` (it names a folder).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SandboxId(String);

impl SandboxId {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("sandbox id must not be empty".into());
        }
        if raw.len() > MAX_ID_LEN {
            return Err(format!("sandbox id is longer than {MAX_ID_LEN} characters"));
        }
        if raw.starts_with('.') {
            return Err("sandbox id must not start with '.'".into());
        }
        if let Some(c) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(format!(
                "sandbox id contains {c:?}; allowed are letters, digits, '.', '_' and '-'"
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// A fresh random id.
    pub fn generate() -> Self {
        Self(format!("sbx-{}", uuid::Uuid::new_v4().simple()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SandboxId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<SandboxId> for String {
    fn from(id: SandboxId) -> Self {
        id.0
    }
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client-chosen exec id (idempotency key): 1–128 printable characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExecId(String);

impl ExecId {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("exec id must not be empty".into());
        }
        if raw.len() > MAX_ID_LEN {
            return Err(format!("exec id is longer than {MAX_ID_LEN} characters"));
        }
        if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("exec id must not contain whitespace or control characters".into());
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn generate() -> Self {
        Self(format!("exec-{}", uuid::Uuid::new_v4().simple()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ExecId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_ids() {
        assert!(SandboxId::parse("sess-1_a.b").is_ok());
        for bad in ["", ".hidden", "a/b", "..", "a b", &"x".repeat(129)] {
            assert!(SandboxId::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(SandboxId::parse(SandboxId::generate().as_str()).is_ok());
    }

    #[test]
    fn exec_ids() {
        assert!(ExecId::parse("tool-call-42:attempt/1").is_ok());
        assert!(ExecId::parse("").is_err());
        assert!(ExecId::parse("a\nb").is_err());
        assert!(ExecId::parse(ExecId::generate().as_str()).is_ok());
    }
}
