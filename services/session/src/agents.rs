//! Which agents a session may use.
//!
//! For now only the native agents exist; the config registry (issue #4) replaces this check
//! with a registry lookup (primary agents of the caller's scope).

/// The built-in agents: `default` (all tools) and `readonly` (no write or exec tools).
pub const NATIVE_AGENTS: &[&str] = &["default", "readonly"];

/// The agent a session gets when the caller names none.
pub const DEFAULT_AGENT: &str = "default";

/// Whether a session may be created with (or switched to) `name`.
pub fn is_known(name: &str) -> bool {
    NATIVE_AGENTS.contains(&name)
}

#[cfg(test)]
mod tests {
    #[test]
    fn native_agents_are_known() {
        assert!(super::is_known("default"));
        assert!(super::is_known("readonly"));
        assert!(!super::is_known("Default"));
        assert!(!super::is_known(""));
    }
}
