//! The opaque paging cursor of session lists.
//!
//! Sessions are listed newest first in the stable order `(created_at DESC, id DESC)`; a cursor
//! is the position of the last session of a page. On the wire it is 48 hex digits (8 bytes of
//! microseconds since the epoch, 16 bytes of id) that clients must treat as opaque.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::Session;

/// Position in the session order: continue with sessions strictly after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

/// A cursor string that no server produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cursor is invalid")]
pub struct CursorError;

impl Cursor {
    /// The position of `session`.
    pub fn after(session: &Session) -> Cursor {
        Cursor {
            created_at: session.created_at,
            id: session.id,
        }
    }

    /// Microseconds since the epoch of `created_at`.
    pub fn micros(&self) -> i64 {
        self.created_at.timestamp_micros()
    }

    /// The opaque string form.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(24);
        bytes.extend_from_slice(&self.micros().to_be_bytes());
        bytes.extend_from_slice(self.id.as_bytes());
        let mut out = String::with_capacity(48);
        for b in bytes {
            let _ = write!(out, "{b:02x}");
        }
        out
    }

    /// Parses [`Cursor::encode`]'s output.
    pub fn decode(raw: &str) -> Result<Cursor, CursorError> {
        if raw.len() != 48 || !raw.is_ascii() {
            return Err(CursorError);
        }
        let mut bytes = [0u8; 24];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&raw[2 * i..2 * i + 2], 16).map_err(|_| CursorError)?;
        }
        let mut micros = [0u8; 8];
        micros.copy_from_slice(&bytes[..8]);
        let created_at =
            DateTime::from_timestamp_micros(i64::from_be_bytes(micros)).ok_or(CursorError)?;
        let id = Uuid::from_slice(&bytes[8..]).map_err(|_| CursorError)?;
        Ok(Cursor { created_at, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let c = Cursor {
            created_at: crate::domain::now(),
            id: Uuid::new_v4(),
        };
        let s = c.encode();
        assert_eq!(s.len(), 48);
        assert_eq!(Cursor::decode(&s).unwrap(), c);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "abc", &"z".repeat(48), &"é".repeat(24), &"0".repeat(47)] {
            assert_eq!(Cursor::decode(bad), Err(CursorError), "{bad:?}");
        }
    }
}
