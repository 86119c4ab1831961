//! File operations the agent's tools need, as a backend-neutral trait ([`SandboxFiles`]) plus the
//! pure pieces every implementation shares (line slicing, exact-string edits, binary detection).
//!
//! Paths are raw client strings; implementations check them with [`crate::paths::Jail`].

pub mod local;
pub mod remote;

use std::io::BufRead;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use cognition_errors::{ApiError, Code};

use crate::error::Error;
use crate::process::Reader;

/// Lines returned by `ReadFile` when the client asks for 0.
pub const DEFAULT_READ_LIMIT: u64 = 2000;
/// Content bytes returned by one `ReadFile` at most (stays well under gRPC's 4 MiB default).
pub const MAX_READ_BYTES: usize = 1024 * 1024;
/// Grep matches returned at most.
pub const MAX_GREP_MATCHES: usize = 1000;
/// Characters of one matching line returned by grep at most.
pub const MAX_GREP_LINE_CHARS: usize = 1000;
/// Files larger than this are skipped by grep and refused by edit.
pub const MAX_SCAN_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Glob results returned at most.
pub const MAX_GLOB_RESULTS: usize = 10_000;
/// Bytes per `DownloadFile` chunk.
pub const DOWNLOAD_CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: no such file or directory")]
    NotFound { path: String },
    #[error("{path} is a directory")]
    IsADirectory { path: String },
    #[error("{path} is not a directory")]
    NotADirectory { path: String },
    #[error("{path} is not valid UTF-8 text")]
    NotUtf8 { path: String },
    #[error("{path} is {size} bytes, more than the {limit} bytes this operation accepts")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("old_string must not be empty")]
    EmptyOldString,
    #[error("old_string and new_string are identical; nothing to change")]
    Identical,
    #[error(
        "old_string was not found in {path} (0 occurrences); it must match the file exactly, including whitespace"
    )]
    OldStringNotFound { path: String },
    #[error(
        "old_string occurs {count} times in {path}; add surrounding context to make it unique, or set replace_all"
    )]
    Ambiguous { path: String, count: u64 },
    #[error("invalid pattern {pattern:?}: {reason}")]
    InvalidPattern { pattern: String, reason: String },
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: String,
        source: std::io::Error,
    },
}

impl FileError {
    pub fn to_api(&self) -> ApiError {
        let api = match self {
            FileError::NotFound { .. } => ApiError::not_found(self.to_string()),
            FileError::Io { .. } => ApiError::internal(self.to_string()),
            FileError::OldStringNotFound { .. } => {
                ApiError::validation(self.to_string()).with_detail("occurrences", 0)
            }
            FileError::Ambiguous { count, .. } => {
                ApiError::validation(self.to_string()).with_detail("occurrences", *count)
            }
            _ => ApiError::new(Code::ValidationError, self.to_string()),
        };
        match self {
            FileError::NotFound { path }
            | FileError::IsADirectory { path }
            | FileError::NotADirectory { path }
            | FileError::NotUtf8 { path }
            | FileError::TooLarge { path, .. }
            | FileError::OldStringNotFound { path }
            | FileError::Ambiguous { path, .. } => api.with_detail("path", path.as_str()),
            _ => api,
        }
    }

    /// Maps an I/O error on `path`, turning "not found" into [`FileError::NotFound`].
    pub fn io(context: &'static str, path: &str, source: std::io::Error) -> Self {
        if crate::paths::is_missing(&source) {
            return FileError::NotFound {
                path: path.to_owned(),
            };
        }
        if source.kind() == std::io::ErrorKind::IsADirectory {
            return FileError::IsADirectory {
                path: path.to_owned(),
            };
        }
        FileError::Io {
            context,
            path: path.to_owned(),
            source,
        }
    }
}

/// A slice of a text file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    pub content: String,
    pub total_lines: u64,
    pub truncated: bool,
}

/// One file or directory.
#[derive(Debug, Clone, PartialEq)]
pub struct FileEntry {
    /// Relative to the workspace root.
    pub path: String,
    pub is_dir: bool,
    pub size: u64,
    pub modified: Option<DateTime<Utc>>,
}

/// An exact-string replacement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub old_string: String,
    pub new_string: String,
    pub replace_all: bool,
}

/// A grep request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrepQuery {
    /// A `regex` crate pattern.
    pub pattern: String,
    /// File or directory to search; the workspace root when empty.
    pub path: String,
    /// Only files whose name (or relative path, when it has a `/`) matches this glob.
    pub include: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrepMatch {
    pub path: String,
    /// 1-based.
    pub line_number: u64,
    pub line: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GrepResult {
    pub matches: Vec<GrepMatch>,
    pub truncated: bool,
}

/// An upload in progress: data goes to a temporary file that replaces the target on commit.
/// Dropping it without committing discards the data.
#[async_trait]
pub trait Upload: Send {
    async fn write(&mut self, data: &[u8]) -> Result<(), Error>;
    /// Moves the data into place and returns the bytes written.
    async fn commit(self: Box<Self>) -> Result<u64, Error>;
}

/// File operations inside one sandbox's workspace. Writes to protected paths are refused.
#[async_trait]
pub trait SandboxFiles: Send + Sync {
    /// Lines `offset..offset+limit` (0-based; `limit` 0 means [`DEFAULT_READ_LIMIT`]).
    async fn read(&self, path: &str, offset: u64, limit: u64) -> Result<ReadResult, Error>;
    /// Creates or replaces the file (and missing parent directories).
    async fn write(&self, path: &str, content: Bytes) -> Result<u64, Error>;
    /// Exact-string replacement; returns the number of replacements.
    async fn edit(&self, path: &str, edit: Edit) -> Result<u64, Error>;
    /// Entries of a directory (or the file itself), sorted by name.
    async fn list(&self, path: &str) -> Result<Vec<FileEntry>, Error>;
    /// Entries under `base` whose path relative to `base` matches `pattern`.
    async fn glob(&self, pattern: &str, base: &str) -> Result<Vec<FileEntry>, Error>;
    async fn grep(&self, query: GrepQuery) -> Result<GrepResult, Error>;
    async fn upload(&self, path: &str) -> Result<Box<dyn Upload>, Error>;
    async fn download(&self, path: &str) -> Result<Reader, Error>;
}

/// Reads lines `offset..offset+limit` from `reader`, counting every line.
pub fn read_lines(
    reader: impl BufRead,
    offset: u64,
    limit: u64,
    path: &str,
) -> Result<ReadResult, FileError> {
    let limit = if limit == 0 {
        DEFAULT_READ_LIMIT
    } else {
        limit
    };
    let mut reader = reader;
    let mut content = String::new();
    let mut total = 0u64;
    let mut truncated = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| FileError::io("reading", path, e))?;
        if n == 0 {
            break;
        }
        let index = total;
        total += 1;
        if index < offset {
            continue;
        }
        if index - offset >= limit {
            truncated = true;
            continue;
        }
        if truncated {
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        if content.len() + text.len() > MAX_READ_BYTES {
            truncated = true;
            continue;
        }
        content.push_str(&text);
    }
    Ok(ReadResult {
        content,
        total_lines: total,
        truncated,
    })
}

/// Applies an exact-string edit to `content`.
pub fn apply_edit(content: &str, edit: &Edit, path: &str) -> Result<(String, u64), FileError> {
    if edit.old_string.is_empty() {
        return Err(FileError::EmptyOldString);
    }
    if edit.old_string == edit.new_string {
        return Err(FileError::Identical);
    }
    let count = content.matches(edit.old_string.as_str()).count() as u64;
    match count {
        0 => Err(FileError::OldStringNotFound {
            path: path.to_owned(),
        }),
        1 => Ok((content.replacen(&edit.old_string, &edit.new_string, 1), 1)),
        n if edit.replace_all => Ok((content.replace(&edit.old_string, &edit.new_string), n)),
        n => Err(FileError::Ambiguous {
            path: path.to_owned(),
            count: n,
        }),
    }
}

/// Whether the start of a file looks binary (has a NUL byte in the first 8 KiB).
/// The glob rules of every implementation: relative, no `..`, `*` stops at `/`.
pub fn glob_matcher(pattern: &str) -> Result<globset::GlobMatcher, FileError> {
    let invalid = |reason: String| FileError::InvalidPattern {
        pattern: pattern.to_owned(),
        reason,
    };
    if pattern.is_empty() {
        return Err(invalid("must not be empty".into()));
    }
    if pattern.starts_with('/') || pattern.split('/').any(|c| c == "..") {
        return Err(invalid("must be relative and must not contain '..'".into()));
    }
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| invalid(e.kind().to_string()))
}

/// A grep query's regex and optional include glob, checked the same way by every
/// implementation.
pub fn grep_matchers(
    query: &GrepQuery,
) -> Result<(regex::bytes::Regex, Option<globset::GlobMatcher>), FileError> {
    let regex = regex::bytes::RegexBuilder::new(&query.pattern)
        .size_limit(10 * 1024 * 1024)
        .build()
        .map_err(|e| FileError::InvalidPattern {
            pattern: query.pattern.clone(),
            reason: e.to_string(),
        })?;
    let include = if query.include.is_empty() {
        None
    } else {
        Some(glob_matcher(&query.include)?)
    };
    Ok((regex, include))
}

pub fn looks_binary(head: &[u8]) -> bool {
    head[..head.len().min(8192)].contains(&0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(old: &str, new: &str, all: bool) -> Edit {
        Edit {
            old_string: old.into(),
            new_string: new.into(),
            replace_all: all,
        }
    }

    #[test]
    fn edits() {
        assert_eq!(
            apply_edit("a b c", &edit("b", "B", false), "f").unwrap(),
            ("a B c".into(), 1)
        );
        assert!(matches!(
            apply_edit("x x", &edit("x", "y", false), "f"),
            Err(FileError::Ambiguous { count: 2, .. })
        ));
        assert_eq!(
            apply_edit("x x", &edit("x", "y", true), "f").unwrap(),
            ("y y".into(), 2)
        );
        assert!(matches!(
            apply_edit("abc", &edit("z", "y", false), "f"),
            Err(FileError::OldStringNotFound { .. })
        ));
        assert!(matches!(
            apply_edit("abc", &edit("", "y", false), "f"),
            Err(FileError::EmptyOldString)
        ));
        assert!(matches!(
            apply_edit("abc", &edit("a", "a", false), "f"),
            Err(FileError::Identical)
        ));
    }

    #[test]
    fn line_slices() {
        let text = "l0\nl1\nl2\nl3";
        let r = read_lines(text.as_bytes(), 1, 2, "f").unwrap();
        assert_eq!(
            r,
            ReadResult {
                content: "l1\nl2\n".into(),
                total_lines: 4,
                truncated: true
            }
        );
        let r = read_lines(text.as_bytes(), 0, 0, "f").unwrap();
        assert_eq!(
            r,
            ReadResult {
                content: text.into(),
                total_lines: 4,
                truncated: false
            }
        );
        let r = read_lines("".as_bytes(), 0, 0, "f").unwrap();
        assert_eq!(r.total_lines, 0);
        let r = read_lines(text.as_bytes(), 10, 0, "f").unwrap();
        assert_eq!(
            (r.content.as_str(), r.total_lines, r.truncated),
            ("", 4, false)
        );
    }

    #[test]
    fn binary_detection() {
        assert!(looks_binary(b"ab\0c"));
        assert!(!looks_binary(b"plain text\n"));
    }
}
