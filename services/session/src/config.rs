//! Configuration of the session service, read from `COGNITION_*` environment variables.
//!
//! Load it with `cognition_config::load::<Config>(vars)` (or `from_env`); every field has a
//! default, so the embedded setup needs no variable at all.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

/// Default number of database connections (PostgreSQL pool, SQLite reader pool).
pub const DEFAULT_DB_MAX_CONNECTIONS: u32 = 8;

/// Which database holds the session state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PersistenceBackend {
    /// A SQLite file under the data dir (embedded default).
    #[default]
    Sqlite,
    /// A PostgreSQL server (`COGNITION_PERSISTENCE_URI` required).
    Postgres,
}

/// Settings of the session service.
#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `COGNITION_SESSION_ADDR`: where the gRPC server listens (used by `main` only).
    #[serde(rename = "session_addr")]
    pub addr: SocketAddr,
    /// `COGNITION_DATA_DIR`: directory for the SQLite file (created when missing).
    pub data_dir: PathBuf,
    /// `COGNITION_PERSISTENCE_BACKEND`: `sqlite` (default) or `postgres`.
    pub persistence_backend: PersistenceBackend,
    /// `COGNITION_PERSISTENCE_URI`: database URL. SQLite defaults to
    /// `sqlite://<data_dir>/cognition.db?mode=rwc`; PostgreSQL requires it.
    pub persistence_uri: Option<String>,
    /// `COGNITION_EXECUTOR_URL`: the executor's gRPC URL; unset means no executor (sandboxes
    /// are then not cleaned up on session delete).
    pub executor_url: Option<String>,
    /// `COGNITION_SCOPING_ENABLED`: require the caller's scope on every call.
    pub scoping_enabled: bool,
    /// `COGNITION_SCOPE_KEYS`: scope keys, `user,org` or `["user","org"]` (default `user`).
    #[serde(deserialize_with = "deserialize_list")]
    pub scope_keys: Vec<String>,
    /// `COGNITION_DB_MAX_CONNECTIONS`: PostgreSQL pool size, and SQLite reader pool size.
    pub db_max_connections: u32,
}

fn deserialize_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let raw = String::deserialize(d)?;
    Ok(cognition_config::parse_list(&raw))
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 50051)),
            data_dir: PathBuf::from("./.cognition"),
            persistence_backend: PersistenceBackend::Sqlite,
            persistence_uri: None,
            executor_url: None,
            scoping_enabled: false,
            scope_keys: vec!["user".to_owned()],
            db_max_connections: DEFAULT_DB_MAX_CONNECTIONS,
        }
    }
}

impl Config {
    /// The embedded setup: SQLite under `data_dir`, no executor, no scoping.
    pub fn embedded(data_dir: PathBuf) -> Config {
        Config {
            data_dir,
            ..Config::default()
        }
    }

    /// The database URL actually used: `persistence_uri`, or the SQLite default under
    /// `data_dir`. `None` only for PostgreSQL without a URI (a validation problem).
    pub fn database_url(&self) -> Option<String> {
        match (&self.persistence_uri, self.persistence_backend) {
            (Some(uri), _) => Some(uri.clone()),
            (None, PersistenceBackend::Sqlite) => {
                let path = self.data_dir.join("cognition.db").display().to_string();
                // sqlx percent-decodes the path; escape what would end it or change it.
                let path = path
                    .replace('%', "%25")
                    .replace('?', "%3F")
                    .replace('#', "%23");
                Some(format!("sqlite://{path}?mode=rwc"))
            }
            (None, PersistenceBackend::Postgres) => None,
        }
    }
}

impl cognition_config::Validate for Config {
    fn validate(&self, problems: &mut Vec<String>) {
        match (self.persistence_backend, self.persistence_uri.as_deref()) {
            (PersistenceBackend::Postgres, None) => problems.push(
                "COGNITION_PERSISTENCE_URI is required when COGNITION_PERSISTENCE_BACKEND=postgres"
                    .to_owned(),
            ),
            (PersistenceBackend::Postgres, Some(uri))
                if !(uri.starts_with("postgres://") || uri.starts_with("postgresql://")) =>
            {
                problems.push(format!(
                    "COGNITION_PERSISTENCE_URI={:?} must start with postgres:// or postgresql:// \
                     when COGNITION_PERSISTENCE_BACKEND=postgres",
                    redact_uri(uri)
                ));
            }
            (PersistenceBackend::Sqlite, Some(uri)) if !uri.starts_with("sqlite:") => {
                problems.push(format!(
                    "COGNITION_PERSISTENCE_URI={:?} must start with sqlite: when \
                     COGNITION_PERSISTENCE_BACKEND=sqlite",
                    redact_uri(uri)
                ));
            }
            _ => {}
        }
        if let Some(url) = &self.executor_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            problems.push(format!(
                "COGNITION_EXECUTOR_URL={url:?} must be an http(s) URL"
            ));
        }
        if self.scope_keys.is_empty() && self.scoping_enabled {
            problems.push(
                "COGNITION_SCOPE_KEYS must name at least one key when COGNITION_SCOPING_ENABLED=true"
                    .to_owned(),
            );
        }
        for key in &self.scope_keys {
            if !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                problems.push(format!(
                    "COGNITION_SCOPE_KEYS: {key:?} may only contain ASCII letters, digits, '_' and '-'"
                ));
            }
        }
        if self.db_max_connections == 0 {
            problems.push("COGNITION_DB_MAX_CONNECTIONS must be at least 1".to_owned());
        }
    }
}

/// Hides the password of a database URL (`postgres://user:***@host/db`).
pub fn redact_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => uri.to_owned(),
        },
        None => uri.to_owned(),
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("data_dir", &self.data_dir)
            .field("persistence_backend", &self.persistence_backend)
            .field(
                "persistence_uri",
                &self.persistence_uri.as_deref().map(redact_uri),
            )
            .field("executor_url", &self.executor_url)
            .field("scoping_enabled", &self.scoping_enabled)
            .field("scope_keys", &self.scope_keys)
            .field("db_max_connections", &self.db_max_connections)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(list: &[(&str, &str)]) -> Result<Config, cognition_config::ConfigError> {
        cognition_config::load(list.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_without_variables() {
        let c = load(&[]).unwrap();
        assert_eq!(c.addr, "127.0.0.1:50051".parse().unwrap());
        assert_eq!(c.persistence_backend, PersistenceBackend::Sqlite);
        assert_eq!(c.scope_keys, vec!["user"]);
        assert!(!c.scoping_enabled);
        assert_eq!(c.executor_url, None);
        assert_eq!(
            c.database_url().unwrap(),
            "sqlite://./.cognition/cognition.db?mode=rwc"
        );
    }

    #[test]
    fn reads_every_variable() {
        let c = load(&[
            ("COGNITION_SESSION_ADDR", "0.0.0.0:6000"),
            ("COGNITION_DATA_DIR", "/var/lib/cognition"),
            ("COGNITION_PERSISTENCE_BACKEND", "postgres"),
            (
                "COGNITION_PERSISTENCE_URI",
                "postgresql://u:pw@db:5432/cognition",
            ),
            ("COGNITION_EXECUTOR_URL", "http://127.0.0.1:50052"),
            ("COGNITION_SCOPING_ENABLED", "true"),
            ("COGNITION_SCOPE_KEYS", r#"["user","org"]"#),
            ("COGNITION_DB_MAX_CONNECTIONS", "20"),
        ])
        .unwrap();
        assert_eq!(c.addr.port(), 6000);
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/cognition"));
        assert_eq!(c.persistence_backend, PersistenceBackend::Postgres);
        assert_eq!(c.executor_url.as_deref(), Some("http://127.0.0.1:50052"));
        assert!(c.scoping_enabled);
        assert_eq!(c.scope_keys, vec!["user", "org"]);
        assert_eq!(c.db_max_connections, 20);
        let debug = format!("{c:?}");
        assert!(!debug.contains("pw"), "{debug}");
    }

    #[test]
    fn comma_separated_scope_keys() {
        let c = load(&[("COGNITION_SCOPE_KEYS", "user, org")]).unwrap();
        assert_eq!(c.scope_keys, vec!["user", "org"]);
    }

    #[test]
    fn sqlite_default_uri_follows_data_dir() {
        let c = load(&[("COGNITION_DATA_DIR", "/tmp/x")]).unwrap();
        assert_eq!(
            c.database_url().unwrap(),
            "sqlite:///tmp/x/cognition.db?mode=rwc"
        );
    }

    #[test]
    fn sqlite_default_uri_escapes_odd_paths() {
        let c = Config::embedded(PathBuf::from("/tmp/a?b#c%d"));
        let url = c.database_url().unwrap();
        let options: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
        assert_eq!(
            options.get_filename(),
            std::path::Path::new("/tmp/a?b#c%d/cognition.db")
        );
    }

    #[test]
    fn postgres_requires_a_uri_and_every_problem_is_reported() {
        let err = load(&[
            ("COGNITION_PERSISTENCE_BACKEND", "postgres"),
            ("COGNITION_DB_MAX_CONNECTIONS", "0"),
            ("COGNITION_EXECUTOR_URL", "localhost:50052"),
        ])
        .unwrap_err();
        assert_eq!(err.problems.len(), 3, "{err}");
        let text = err.to_string();
        assert!(text.contains("COGNITION_PERSISTENCE_URI"), "{text}");
        assert!(text.contains("COGNITION_EXECUTOR_URL"), "{text}");
    }

    #[test]
    fn postgres_accepts_both_schemes_and_rejects_others() {
        for uri in ["postgres://h/db", "postgresql://h/db"] {
            load(&[
                ("COGNITION_PERSISTENCE_BACKEND", "postgres"),
                ("COGNITION_PERSISTENCE_URI", uri),
            ])
            .unwrap();
        }
        let err = load(&[
            ("COGNITION_PERSISTENCE_BACKEND", "postgres"),
            ("COGNITION_PERSISTENCE_URI", "mysql://u:secret@h/db"),
        ])
        .unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn unknown_backend_is_reported() {
        let err = load(&[("COGNITION_PERSISTENCE_BACKEND", "oracle")]).unwrap_err();
        assert!(
            err.to_string().contains("COGNITION_PERSISTENCE_BACKEND"),
            "{err}"
        );
    }

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_uri("postgres://u:pw@h:1/db?x=1"),
            "postgres://u:***@h:1/db?x=1"
        );
        assert_eq!(redact_uri("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_uri("sqlite://./x.db"), "sqlite://./x.db");
    }
}
