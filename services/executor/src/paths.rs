//! Path safety: the one place that decides whether a path may be read or written.
//!
//! Every file operation and every exec `cwd` goes through a [`Jail`]:
//!
//! 1. **Lexical**: the path is relative to the workspace, or absolute and then inside the
//!    workspace's workdir (as clients see it) after normalisation. `.` is dropped and `..` pops a
//!    component; popping past the root is refused (`PERMISSION_DENIED`).
//! 2. **Symlinks**: the path is resolved on the host component by component (like the kernel
//!    would, but tolerating a missing tail); the real path must stay under the real workspace
//!    root. This covers symlinked directories, symlinked files and dangling symlinks whose target
//!    lies outside.
//! 3. **Protected paths** (`.cognition/` by default): a prefix match on the normalised relative
//!    path, checked on both the lexical and the real path. Writes are refused; reads are allowed.
//!
//! The local backend checks the real host path. Checking, then using, a path is racy against a
//! process in the same sandbox that swaps a directory for a symlink in between; processes of the
//! local backend can reach the host anyway, so this guards the agent's file tools, not a hostile
//! process.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

use cognition_errors::{ApiError, Code};

/// Symlinks followed while resolving one path before giving up.
const MAX_SYMLINK_HOPS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("path {path:?} is outside the workspace")]
    Escapes { path: String },
    #[error("path {path:?} is protected (rule {rule:?}): it can be read but not written")]
    Protected { path: String, rule: String },
    #[error("invalid path {path:?}: {reason}")]
    Invalid { path: String, reason: &'static str },
    #[error("resolving path {path:?}: {source}")]
    Io { path: String, source: io::Error },
}

impl PathError {
    pub fn to_api(&self) -> ApiError {
        let code = match self {
            PathError::Escapes { .. } | PathError::Protected { .. } => Code::PermissionDenied,
            PathError::Invalid { .. } => Code::ValidationError,
            PathError::Io { .. } => Code::InternalError,
        };
        ApiError::new(code, self.to_string())
    }
}

/// A normalised path inside the workspace, relative to its root: `""` is the root itself, else
/// `a/b/c` (no `.`, `..`, empty components or trailing slash).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkspacePath(String);

impl WorkspacePath {
    pub fn root() -> Self {
        Self(String::new())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The components, in order.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    /// This path with one more component (a name from a directory listing).
    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Self(name.to_owned())
        } else {
            Self(format!("{}/{name}", self.0))
        }
    }

    /// The path relative to the root for a host path under `host_root`, if it is under it.
    pub fn from_host(host_root: &Path, host: &Path) -> Option<Self> {
        let rel = host.strip_prefix(host_root).ok()?;
        let parts: Option<Vec<&str>> = rel
            .components()
            .map(|c| match c {
                Component::Normal(s) => s.to_str(),
                _ => None,
            })
            .collect();
        Some(Self(parts?.join("/")))
    }

    /// Lexical normalisation of `raw` (see the module docs); `workdir` is the absolute workspace
    /// directory as clients see it, used for absolute paths.
    pub fn parse(raw: &str, workdir: &Path) -> Result<Self, PathError> {
        let invalid = |reason| PathError::Invalid {
            path: raw.to_owned(),
            reason,
        };
        if raw.contains('\0') {
            return Err(invalid("contains a NUL byte"));
        }
        if raw.len() > 4096 {
            return Err(invalid("longer than 4096 bytes"));
        }
        let escapes = || PathError::Escapes {
            path: raw.to_owned(),
        };
        let path = Path::new(raw);
        let mut parts: Vec<&str> = Vec::new();
        if path.is_absolute() {
            for c in path.components() {
                match c {
                    Component::Normal(s) => {
                        parts.push(s.to_str().ok_or_else(|| invalid("not UTF-8"))?)
                    }
                    Component::ParentDir => {
                        parts.pop();
                    }
                    Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                }
            }
            let root: Vec<&str> = workdir
                .components()
                .filter_map(|c| match c {
                    Component::Normal(s) => s.to_str(),
                    _ => None,
                })
                .collect();
            if parts.len() < root.len() || parts[..root.len()] != root[..] {
                return Err(escapes());
            }
            parts.drain(..root.len());
        } else {
            for c in path.components() {
                match c {
                    Component::Normal(s) => {
                        parts.push(s.to_str().ok_or_else(|| invalid("not UTF-8"))?)
                    }
                    Component::ParentDir => {
                        if parts.pop().is_none() {
                            return Err(escapes());
                        }
                    }
                    Component::CurDir => {}
                    Component::RootDir | Component::Prefix(_) => return Err(escapes()),
                }
            }
        }
        Ok(Self(parts.join("/")))
    }
}

impl std::fmt::Display for WorkspacePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            f.write_str(".")
        } else {
            f.write_str(&self.0)
        }
    }
}

/// Normalises one protected-path rule (`.cognition/` → `.cognition`); `None` when the rule is not
/// a relative path inside the workspace.
pub fn normalize_protected(raw: &str) -> Option<String> {
    if Path::new(raw).is_absolute() {
        return None;
    }
    let p = WorkspacePath::parse(raw, Path::new("/")).ok()?;
    (!p.is_root()).then_some(p.0)
}

/// The protected-path rules.
#[derive(Debug, Clone, Default)]
pub struct Protected(Vec<String>);

impl Protected {
    /// Builds the rules, dropping entries that are not relative paths (config validation reports
    /// those).
    pub fn new(rules: &[String]) -> Self {
        Self(
            rules
                .iter()
                .filter_map(|r| normalize_protected(r))
                .collect(),
        )
    }

    /// The rule that protects `path`, if any.
    pub fn rule_for(&self, path: &WorkspacePath) -> Option<&str> {
        let p = path.as_str();
        self.0
            .iter()
            .find(|rule| {
                p == rule.as_str()
                    || (p.starts_with(rule.as_str()) && p[rule.len()..].starts_with('/'))
            })
            .map(String::as_str)
    }
}

/// A path resolved on the host.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The path as the client named it, normalised.
    pub path: WorkspacePath,
    /// The real host path (symlinks resolved for the part that exists).
    pub host: PathBuf,
    /// The real path relative to the workspace root.
    pub real: WorkspacePath,
}

/// The path rules of one workspace.
#[derive(Debug, Clone)]
pub struct Jail {
    /// The canonical host directory of the workspace.
    host_root: PathBuf,
    /// The workspace directory as clients see it (for absolute paths).
    workdir: PathBuf,
    protected: Protected,
}

impl Jail {
    /// `host_root` must exist; it is canonicalised here.
    pub fn new(host_root: &Path, workdir: &Path, protected: Protected) -> io::Result<Self> {
        Ok(Self {
            host_root: host_root.canonicalize()?,
            workdir: workdir.to_path_buf(),
            protected,
        })
    }

    pub fn host_root(&self) -> &Path {
        &self.host_root
    }

    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    pub fn protected(&self) -> &Protected {
        &self.protected
    }

    /// Lexical check only.
    pub fn parse(&self, raw: &str) -> Result<WorkspacePath, PathError> {
        WorkspacePath::parse(raw, &self.workdir)
    }

    /// Resolves a path for reading.
    pub fn resolve_read(&self, raw: &str) -> Result<Resolved, PathError> {
        let path = self.parse(raw)?;
        self.resolve(path)
    }

    /// Resolves a path for writing: also refuses protected paths.
    pub fn resolve_write(&self, raw: &str) -> Result<Resolved, PathError> {
        let path = self.parse(raw)?;
        self.check_writable(&path)?;
        let resolved = self.resolve(path)?;
        self.check_writable(&resolved.real)?;
        Ok(resolved)
    }

    fn check_writable(&self, path: &WorkspacePath) -> Result<(), PathError> {
        match self.protected.rule_for(path) {
            Some(rule) => Err(PathError::Protected {
                path: path.to_string(),
                rule: rule.to_owned(),
            }),
            None => Ok(()),
        }
    }

    /// Resolves symlinks of `path` on the host and checks the result stays inside the root.
    pub fn resolve(&self, path: WorkspacePath) -> Result<Resolved, PathError> {
        let mut real = self.host_root.clone();
        let mut pending: VecDeque<OsString> = path.components().map(OsString::from).collect();
        let mut hops = 0;
        let mut missing = false;
        while let Some(c) = pending.pop_front() {
            if c == ".." {
                real.pop();
                continue;
            }
            if c == "." {
                continue;
            }
            let candidate = real.join(&c);
            if missing {
                real = candidate;
                continue;
            }
            match std::fs::symlink_metadata(&candidate) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(PathError::Invalid {
                            path: path.to_string(),
                            reason: "too many symlinks",
                        });
                    }
                    let target =
                        std::fs::read_link(&candidate).map_err(|source| PathError::Io {
                            path: path.to_string(),
                            source,
                        })?;
                    if target.is_absolute() {
                        real = PathBuf::from("/");
                    }
                    for comp in target.components().rev() {
                        match comp {
                            Component::Normal(s) => pending.push_front(s.to_owned()),
                            Component::ParentDir => pending.push_front(OsString::from("..")),
                            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                        }
                    }
                }
                Ok(_) => real = candidate,
                Err(e) if is_missing(&e) => {
                    missing = true;
                    real = candidate;
                }
                Err(source) => {
                    return Err(PathError::Io {
                        path: path.to_string(),
                        source,
                    });
                }
            }
        }
        let Some(real_rel) = WorkspacePath::from_host(&self.host_root, &real) else {
            return Err(PathError::Escapes {
                path: path.to_string(),
            });
        };
        Ok(Resolved {
            path,
            host: real,
            real: real_rel,
        })
    }
}

/// Whether an I/O error means "no such file" (including a file used as a directory).
pub fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn wp(raw: &str) -> Result<String, PathError> {
        WorkspacePath::parse(raw, Path::new("/work/ws")).map(|p| p.0)
    }

    #[test]
    fn lexical_normalisation() {
        assert_eq!(wp("a/b/../c/./d/").unwrap(), "a/c/d");
        assert_eq!(wp("").unwrap(), "");
        assert_eq!(wp(".").unwrap(), "");
        assert_eq!(wp("a/..").unwrap(), "");
        assert_eq!(wp("/work/ws").unwrap(), "");
        assert_eq!(wp("/work/ws/x/y").unwrap(), "x/y");
        assert_eq!(wp("/work/other/../ws/x").unwrap(), "x");
        assert!(matches!(
            wp("../etc/passwd"),
            Err(PathError::Escapes { .. })
        ));
        assert!(matches!(wp("a/../../b"), Err(PathError::Escapes { .. })));
        assert!(matches!(wp("/etc/passwd"), Err(PathError::Escapes { .. })));
        assert!(matches!(
            wp("/work/ws/../wsx"),
            Err(PathError::Escapes { .. })
        ));
        assert!(matches!(wp("/work/wsx/a"), Err(PathError::Escapes { .. })));
        assert!(matches!(wp("a\0b"), Err(PathError::Invalid { .. })));
    }

    #[test]
    fn protected_prefixes() {
        let p = Protected::new(&[".cognition/".into(), "./secret//keys/".into()]);
        let m = |s: &str| {
            p.rule_for(&WorkspacePath(wp(s).unwrap()))
                .map(str::to_owned)
        };
        assert_eq!(m(".cognition/x").as_deref(), Some(".cognition"));
        assert_eq!(m(".cognition").as_deref(), Some(".cognition"));
        assert_eq!(m("a/../.cognition/deep/x").as_deref(), Some(".cognition"));
        assert_eq!(m(".cognitionx"), None);
        assert_eq!(m("src/.cognition/x"), None);
        assert_eq!(m("secret/keys/a").as_deref(), Some("secret/keys"));
        assert_eq!(normalize_protected("/abs"), None);
        assert_eq!(normalize_protected("../up"), None);
        assert_eq!(normalize_protected(""), None);
    }

    #[test]
    fn symlinks_are_resolved() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = tmp.path().join("ws");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(ws.join("dir")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), "x").unwrap();
        symlink(&outside, ws.join("out_dir")).unwrap();
        symlink(outside.join("secret"), ws.join("out_file")).unwrap();
        symlink(outside.join("nope"), ws.join("dangling_out")).unwrap();
        symlink("dir", ws.join("in_dir")).unwrap();
        symlink("../../outside/secret", ws.join("dir/rel_out")).unwrap();
        symlink(".cognition", ws.join("to_protected")).unwrap();
        let jail = Jail::new(&ws, &ws, Protected::new(&[".cognition/".into()])).unwrap();

        for bad in [
            "out_dir/secret",
            "out_file",
            "dangling_out",
            "dir/rel_out",
            "out_dir/new/file",
        ] {
            assert!(
                matches!(jail.resolve_read(bad), Err(PathError::Escapes { .. })),
                "{bad} was not refused"
            );
        }
        let r = jail.resolve_read("in_dir/new.txt").unwrap();
        assert_eq!(r.real.as_str(), "dir/new.txt");
        assert!(r.host.starts_with(jail.host_root()));
        assert!(matches!(
            jail.resolve_write("to_protected/x"),
            Err(PathError::Protected { .. })
        ));
        assert!(matches!(
            jail.resolve_write(".cognition/x"),
            Err(PathError::Protected { .. })
        ));
        assert!(jail.resolve_read(".cognition/x").is_ok());
        assert!(jail.resolve_write("dir/ok.txt").is_ok());
        let abs = format!("{}/dir/x", jail.workdir().display());
        assert_eq!(jail.resolve_read(&abs).unwrap().path.as_str(), "dir/x");
    }
}
