//! Typed configuration from `COGNITION_*` environment variables.
//!
//! Every service describes its configuration as a `serde` struct whose fields all have defaults
//! (the embedded default needs no configuration at all) and implements [`Validate`] for rules
//! that span fields. [`load`] parses with `envy` and reports *every* problem at once: a value that
//! does not parse, and every rule that fails. Loaders take the variables as an iterator, so tests
//! never mutate the process environment.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;

/// The prefix of every Cognition environment variable.
pub const PREFIX: &str = "COGNITION_";

/// Cross-field rules of a configuration struct.
pub trait Validate {
    /// Pushes one human-readable line per broken rule, naming the variable(s).
    fn validate(&self, problems: &mut Vec<String>);
}

/// Every problem found while loading a configuration.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problem(s)):",
            self.problems.len()
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

/// Loads `T` from the process environment.
pub fn from_env<T: DeserializeOwned + Validate>() -> Result<T, ConfigError> {
    load(std::env::vars())
}

/// Loads `T` from `COGNITION_*` variables in `vars` (other variables are ignored).
///
/// A variable whose value does not parse is reported and then treated as unset, so that the
/// remaining variables are still checked; then [`Validate::validate`] runs on the result.
pub fn load<T: DeserializeOwned + Validate>(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let mut vars: BTreeMap<String, String> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with(PREFIX))
        .collect();
    let mut problems = Vec::new();
    let parsed = loop {
        match parse::<T>(&vars) {
            Ok(v) => break Some(v),
            Err(e) => {
                let message = e.to_string();
                match culprit::<T>(&vars, &message) {
                    Some(key) => {
                        problems.push(describe(&key, &vars[&key], &message));
                        vars.remove(&key);
                    }
                    None => {
                        problems.push(message);
                        break None;
                    }
                }
            }
        }
    };
    if let Some(v) = &parsed {
        v.validate(&mut problems);
    }
    match parsed {
        Some(v) if problems.is_empty() => Ok(v),
        _ => Err(ConfigError { problems }),
    }
}

fn parse<T: DeserializeOwned>(vars: &BTreeMap<String, String>) -> Result<T, envy::Error> {
    envy::prefixed(PREFIX).from_iter(vars.iter().map(|(k, v)| (k.clone(), v.clone())))
}

/// Finds the variable responsible for an error: the one whose removal makes that error go away.
fn culprit<T: DeserializeOwned>(vars: &BTreeMap<String, String>, message: &str) -> Option<String> {
    vars.keys()
        .find(|key| {
            let mut without = vars.clone();
            without.remove(*key);
            match parse::<T>(&without) {
                Ok(_) => true,
                Err(e) => e.to_string() != message,
            }
        })
        .cloned()
}

fn describe(key: &str, value: &str, message: &str) -> String {
    // envy appends "while parsing value '…' provided by …"; keep only the reason.
    let reason = message
        .split(" while parsing value")
        .next()
        .unwrap_or(message);
    format!("{key}={value:?}: {reason}")
}

/// A secret string whose `Debug` and `Display` never show the value.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

/// Parses a comma-separated list (`a,b , c` → `["a","b","c"]`), also accepting a JSON-style list
/// (`["a","b"]`), which is how the original Python server read list settings.
pub fn parse_list(raw: &str) -> Vec<String> {
    let trimmed = raw.trim().trim_start_matches('[').trim_end_matches(']');
    trimmed
        .split(',')
        .map(|s| {
            s.trim()
                .trim_matches('"')
                .trim_matches('\'')
                .trim()
                .to_owned()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(default)]
    struct Demo {
        port: u16,
        enabled: bool,
        mode: Mode,
        secret: Secret,
    }

    #[derive(Debug, Deserialize, Default, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        #[default]
        Sqlite,
        Postgres,
    }

    impl Default for Demo {
        fn default() -> Self {
            Self {
                port: 8000,
                enabled: false,
                mode: Mode::Sqlite,
                secret: Secret::default(),
            }
        }
    }

    impl Validate for Demo {
        fn validate(&self, problems: &mut Vec<String>) {
            if self.port == 0 {
                problems.push("COGNITION_PORT must not be 0".into());
            }
        }
    }

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_without_variables() {
        let d: Demo = load(vars(&[("PATH", "/bin")])).unwrap();
        assert_eq!(d.port, 8000);
        assert_eq!(d.mode, Mode::Sqlite);
    }

    #[test]
    fn reads_prefixed_variables() {
        let d: Demo = load(vars(&[
            ("COGNITION_PORT", "9000"),
            ("COGNITION_MODE", "postgres"),
        ]))
        .unwrap();
        assert_eq!(d.port, 9000);
        assert_eq!(d.mode, Mode::Postgres);
    }

    #[test]
    fn reports_every_problem_at_once() {
        let err = load::<Demo>(vars(&[
            ("COGNITION_PORT", "eighty"),
            ("COGNITION_ENABLED", "maybe"),
            ("COGNITION_MODE", "oracle"),
        ]))
        .unwrap_err();
        assert_eq!(err.problems.len(), 3, "{err}");
        let text = err.to_string();
        for key in ["COGNITION_PORT", "COGNITION_ENABLED", "COGNITION_MODE"] {
            assert!(text.contains(key), "{key} missing from: {text}");
        }
    }

    #[test]
    fn parse_errors_and_rule_failures_together() {
        let err = load::<Demo>(vars(&[
            ("COGNITION_PORT", "0"),
            ("COGNITION_MODE", "oracle"),
        ]))
        .unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
    }

    #[test]
    fn secrets_are_redacted() {
        let d: Demo = load(vars(&[("COGNITION_SECRET", "sk-123")])).unwrap();
        assert_eq!(d.secret.expose(), "sk-123");
        assert!(!format!("{d:?}").contains("sk-123"));
    }

    #[test]
    fn lists() {
        assert_eq!(parse_list("a, b,c"), vec!["a", "b", "c"]);
        assert_eq!(parse_list(r#"["user", "org"]"#), vec!["user", "org"]);
        assert!(parse_list("").is_empty());
    }
}
