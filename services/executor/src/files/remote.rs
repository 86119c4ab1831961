//! [`SandboxFiles`] for sandboxes whose workspace the executor cannot reach on its own disk (a
//! Kubernetes pod): every operation runs a small POSIX shell script in the sandbox through a
//! [`Launcher`] — one process per operation (two for edit, grep and upload) — and the
//! semantics are those of [`LocalFiles`](super::local::LocalFiles).
//!
//! Path safety is as strict as the host [`Jail`](crate::paths::Jail): the executor normalises the
//! path lexically (refusing `..` escapes and absolute paths outside the workspace) and checks
//! protected paths; the script then resolves symlinks in the sandbox, refuses a real path that
//! leaves `pwd -P` (the workspace) and checks protected paths again on the real path. Text
//! handling (line slices, edits, binary detection, glob and regex matching) happens here, with
//! the helpers of [`crate::files`]; the sandbox only needs `sh` and BusyBox or GNU tools (see
//! [`script`]).
//!
//! Like the jail, checking then using a path is racy against a process of the same sandbox that
//! swaps a folder for a symlink in between; that process could write there anyway.

mod archive;
mod command;
mod listing;
mod script;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use self::archive::{Item, TarReader};
use self::command::{Command, Outcome, Streamed, lost};
use self::listing::{Kind, Record, walk_order};
use self::script::Code;
use super::{
    Edit, FileEntry, FileError, GrepMatch, GrepQuery, GrepResult, MAX_GLOB_RESULTS,
    MAX_GREP_LINE_CHARS, MAX_GREP_MATCHES, MAX_SCAN_FILE_BYTES, ReadResult, SandboxFiles, Upload,
    apply_edit, glob_matcher, looks_binary, read_lines,
};
use crate::error::Error;
use crate::paths::{PathError, Protected, WorkspacePath, normalize_protected};
use crate::process::{ProcessSpec, Reader, SpawnError, SpawnedProcess, Writer};

/// Starts processes in one sandbox; what a backend gives [`RemoteFiles`].
#[async_trait]
pub trait Launcher: Send + Sync {
    /// Starts `spec` like `SandboxBackend::spawn` does (`cwd` `""` is the workspace).
    async fn spawn(&self, spec: &ProcessSpec) -> Result<SpawnedProcess, SpawnError>;
}

/// Bytes of stdout read at most for the workspace path.
const MAX_WORKDIR_BYTES: u64 = 8192;

/// File operations in a sandbox, done by processes running in it.
pub struct RemoteFiles {
    launcher: Arc<dyn Launcher>,
    protected: Protected,
    /// The protected-path rules, normalised, as the scripts get them.
    rules: Arc<[String]>,
    /// The workspace as clients see it (for absolute paths); asked of the sandbox when unset.
    workdir: tokio::sync::OnceCell<PathBuf>,
}

impl RemoteFiles {
    /// `protected_paths` are the configured rules (`.cognition/`); rules that are not relative
    /// paths are dropped, as [`Protected::new`] does.
    pub fn new(launcher: Arc<dyn Launcher>, protected_paths: Vec<String>) -> Self {
        let rules: Vec<String> = protected_paths
            .iter()
            .filter_map(|r| normalize_protected(r))
            .collect();
        Self {
            launcher,
            protected: Protected::new(&protected_paths),
            rules: rules.into(),
            workdir: tokio::sync::OnceCell::new(),
        }
    }

    /// The workspace directory as the sandbox's processes see it (`Sandbox.workdir`): absolute
    /// paths are checked against it. Without it, the first absolute path asks the sandbox
    /// (`pwd -P`).
    pub fn with_workdir(self, workdir: impl Into<PathBuf>) -> Self {
        Self {
            workdir: tokio::sync::OnceCell::new_with(Some(workdir.into())),
            ..self
        }
    }

    async fn run(
        &self,
        op: &'static str,
        body: &str,
        args: Vec<String>,
        stdin: bool,
    ) -> Result<Command, Error> {
        Command::start(self.launcher.as_ref(), op, body, args, stdin).await
    }

    async fn workdir(&self) -> Result<&Path, Error> {
        let dir = self
            .workdir
            .get_or_try_init(|| async {
                let mut cmd = self.run("workdir", "pwd -P", Vec::new(), false).await?;
                let out = cmd.read_to_end(MAX_WORKDIR_BYTES).await?;
                let outcome = cmd.finish().await?;
                let dir = String::from_utf8(out).unwrap_or_default();
                let dir = dir.strip_suffix('\n').unwrap_or(&dir);
                if outcome.code != Code::Ok || !dir.starts_with('/') {
                    return Err(Error::Internal(format!(
                        "the sandbox did not tell its workspace directory ({:?}): {}",
                        outcome.code, outcome.stderr
                    )));
                }
                Ok(PathBuf::from(dir))
            })
            .await?;
        Ok(dir)
    }

    /// The lexical check: the path relative to the workspace.
    async fn parse(&self, raw: &str) -> Result<WorkspacePath, Error> {
        let workdir = if Path::new(raw).is_absolute() {
            self.workdir().await?
        } else {
            Path::new("/")
        };
        Ok(WorkspacePath::parse(raw, workdir)?)
    }

    /// The lexical check for writes: also refuses protected paths.
    async fn parse_writable(&self, raw: &str) -> Result<WorkspacePath, Error> {
        let path = self.parse(raw).await?;
        if let Some(rule) = self.protected.rule_for(&path) {
            return Err(PathError::Protected {
                path: path.to_string(),
                rule: rule.to_owned(),
            }
            .into());
        }
        Ok(path)
    }

    fn with_rules(&self, mut args: Vec<String>) -> Vec<String> {
        args.extend(self.rules.iter().cloned());
        args
    }

    /// Runs the `write` script with `content` on stdin.
    async fn put(&self, path: &WorkspacePath, content: &[u8]) -> Result<(), Error> {
        let name = path.to_string();
        let args = self.with_rules(vec![
            path.as_str().to_owned(),
            temp_name(path, "write"),
            content.len().to_string(),
        ]);
        let mut cmd = self.run("write", script::WRITE, args, true).await?;
        if let Some(mut stdin) = cmd.take_stdin() {
            // A script that refused the path exits without reading: its exit code says why.
            let _ = stdin.write_all(content).await;
            let _ = stdin.shutdown().await;
        }
        expect_ok(cmd.finish().await?, "writing", &name)
    }

    /// Runs a listing script and hands every record to `keep`.
    async fn listing(
        &self,
        op: &'static str,
        body: &str,
        path: &WorkspacePath,
        keep: impl FnMut(Kind, Record),
    ) -> Result<Kind, Error> {
        let name = path.to_string();
        let mut cmd = self
            .run(op, body, vec![path.as_str().to_owned()], false)
            .await?;
        let kind = listing::read(cmd.stdout(), keep).await;
        let outcome = cmd.finish().await?;
        let kind = kind.map_err(|e| lost(op, e))?;
        match kind {
            Some(kind) if outcome.code == Code::Ok => Ok(kind),
            _ => Err(failure(outcome, "listing", &name)),
        }
    }
}

/// `.NAME.KIND-UUID` next to the target, like the local implementation's uploads (shorter when
/// the name is long).
fn temp_name(path: &WorkspacePath, kind: &str) -> String {
    let id = uuid::Uuid::new_v4().simple();
    match path.components().last() {
        Some(name) if name.len() <= 200 => format!(".{name}.{kind}-{id}"),
        _ => format!(".{kind}-{id}"),
    }
}

/// The error a script reported, for the file `name`; `context` says what was being done.
fn failure(outcome: Outcome, context: &'static str, name: &str) -> Error {
    let path = name.to_owned();
    let msg = outcome.stderr;
    match outcome.code {
        Code::Escapes => PathError::Escapes { path }.into(),
        Code::Protected => {
            let (rule, real) = msg.split_once('\n').unwrap_or((msg.as_str(), ""));
            PathError::Protected {
                path: if real.is_empty() {
                    path
                } else {
                    real.to_owned()
                },
                rule: rule.to_owned(),
            }
            .into()
        }
        Code::NotFound => FileError::NotFound { path }.into(),
        Code::IsADirectory => FileError::IsADirectory { path }.into(),
        Code::NotADirectory => FileError::NotADirectory { path }.into(),
        Code::TooLarge => FileError::TooLarge {
            path,
            size: msg.parse().unwrap_or(0),
            limit: MAX_SCAN_FILE_BYTES,
        }
        .into(),
        Code::TooManySymlinks => PathError::Invalid {
            path,
            reason: "too many symlinks",
        }
        .into(),
        Code::Io => FileError::Io {
            context,
            path,
            source: std::io::Error::other(msg),
        }
        .into(),
        Code::PermissionDenied => FileError::Io {
            context,
            path,
            source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, msg),
        }
        .into(),
        Code::MissingTool => Error::Unavailable(format!(
            "the sandbox has no `{msg}` command, which file operations need (an image with \
             BusyBox, or GNU coreutils, findutils and tar)"
        )),
        Code::Ok => Error::Internal(format!(
            "{context} {name}: the sandbox ended the file operation without an answer"
        )),
        Code::Other(n) => Error::Internal(format!(
            "{context} {name}: the file operation failed in the sandbox (exit code {n}): {msg}"
        )),
    }
}

fn expect_ok(outcome: Outcome, context: &'static str, name: &str) -> Result<(), Error> {
    match outcome.code {
        Code::Ok => Ok(()),
        _ => Err(failure(outcome, context, name)),
    }
}

/// Feeds `stdout` to [`read_lines`] on the blocking pool, chunk by chunk.
async fn read_text(
    stdout: &mut (impl AsyncRead + Unpin),
    offset: u64,
    limit: u64,
    name: &str,
) -> Result<Result<ReadResult, FileError>, std::io::Error> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let owned = name.to_owned();
    let lines = tokio::task::spawn_blocking(move || {
        read_lines(
            std::io::BufReader::new(ChunkReader {
                rx,
                buf: Bytes::new(),
            }),
            offset,
            limit,
            &owned,
        )
    });
    let mut buf = vec![0u8; 64 * 1024];
    let fed: std::io::Result<()> = async {
        loop {
            let n = stdout.read(&mut buf).await?;
            if n == 0 || tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                return Ok(());
            }
        }
    }
    .await;
    drop(tx);
    let result = lines
        .await
        .map_err(|e| std::io::Error::other(format!("line reader task failed: {e}")))?;
    fed.map(|()| result)
}

/// A blocking reader over chunks sent by an async task.
struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    buf: Bytes,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.buf = chunk,
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf.split_to(n));
        Ok(n)
    }
}

/// The matching lines of one file, as local grep reports them (binary files have none).
fn grep_bytes(bytes: &[u8], regex: &regex::bytes::Regex) -> Vec<(u64, String)> {
    if looks_binary(bytes) {
        return Vec::new();
    }
    bytes
        .split(|b| *b == b'\n')
        .enumerate()
        .filter_map(|(i, line)| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            regex.is_match(line).then(|| {
                let text: String = String::from_utf8_lossy(line)
                    .chars()
                    .take(MAX_GREP_LINE_CHARS)
                    .collect();
                (i as u64 + 1, text)
            })
        })
        .collect()
}

/// Adds `found` for `path`; true when the match cap was reached.
fn add_matches(result: &mut GrepResult, path: &str, found: &[(u64, String)]) -> bool {
    for (line_number, line) in found {
        if result.matches.len() >= MAX_GREP_MATCHES {
            result.truncated = true;
            return true;
        }
        result.matches.push(GrepMatch {
            path: path.to_owned(),
            line_number: *line_number,
            line: line.clone(),
        });
    }
    false
}

#[async_trait]
impl SandboxFiles for RemoteFiles {
    async fn read(&self, path: &str, offset: u64, limit: u64) -> Result<ReadResult, Error> {
        let p = self.parse(path).await?;
        let name = p.to_string();
        let mut cmd = self
            .run("read", script::READ, vec![p.as_str().to_owned()], false)
            .await?;
        if !cmd.marker().await? {
            return Err(failure(cmd.finish().await?, "reading", &name));
        }
        let text = read_text(cmd.stdout(), offset, limit, &name).await;
        let outcome = cmd.finish().await?;
        expect_ok(outcome, "reading", &name)?;
        Ok(text.map_err(|e| lost("read", e))??)
    }

    async fn write(&self, path: &str, content: Bytes) -> Result<u64, Error> {
        let p = self.parse_writable(path).await?;
        if p.is_root() {
            return Err(FileError::IsADirectory {
                path: p.to_string(),
            }
            .into());
        }
        self.put(&p, &content).await?;
        Ok(content.len() as u64)
    }

    async fn edit(&self, path: &str, edit: Edit) -> Result<u64, Error> {
        let p = self.parse_writable(path).await?;
        let name = p.to_string();
        let args = self.with_rules(vec![p.as_str().to_owned(), MAX_SCAN_FILE_BYTES.to_string()]);
        let mut cmd = self.run("edit", script::EDIT_READ, args, false).await?;
        if !cmd.marker().await? {
            return Err(failure(cmd.finish().await?, "reading", &name));
        }
        let bytes = cmd.read_to_end(MAX_SCAN_FILE_BYTES).await?;
        expect_ok(cmd.finish().await?, "reading", &name)?;
        let text =
            String::from_utf8(bytes).map_err(|_| FileError::NotUtf8 { path: name.clone() })?;
        let (updated, count) = apply_edit(&text, &edit, &name)?;
        self.put(&p, updated.as_bytes()).await?;
        Ok(count)
    }

    async fn list(&self, path: &str) -> Result<Vec<FileEntry>, Error> {
        let p = self.parse(path).await?;
        let mut records = Vec::new();
        let kind = self
            .listing("list", script::LIST, &p, |_, r| records.push(r))
            .await?;
        let mut out: Vec<FileEntry> = match kind {
            Kind::File => records
                .iter()
                .map(|r| r.entry(p.as_str().to_owned()))
                .collect(),
            Kind::Dir => records
                .iter()
                .map(|r| r.entry(p.child(&r.rel).as_str().to_owned()))
                .collect(),
        };
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    async fn glob(&self, pattern: &str, base: &str) -> Result<Vec<FileEntry>, Error> {
        let matcher = glob_matcher(pattern)?;
        let p = self.parse(base).await?;
        let mut records = Vec::new();
        self.listing("glob", script::GLOB, &p, |_, r| {
            if matcher.is_match(&r.rel) {
                records.push(r);
            }
        })
        .await?;
        records.sort_by(|a, b| walk_order(&a.rel, &b.rel));
        if records.len() > MAX_GLOB_RESULTS {
            tracing::info!(pattern, limit = MAX_GLOB_RESULTS, "glob results capped");
            records.truncate(MAX_GLOB_RESULTS);
        }
        Ok(records
            .iter()
            .map(|r| r.entry(p.child(&r.rel).as_str().to_owned()))
            .collect())
    }

    async fn grep(&self, query: GrepQuery) -> Result<GrepResult, Error> {
        let (regex, include) = crate::files::grep_matchers(&query)?;
        let p = self.parse(&query.path).await?;
        let name = p.to_string();
        // 1. Which files: (name for the fetch, path in results).
        let mut files: Vec<(String, String)> = Vec::new();
        self.listing("grep", script::GREP_LIST, &p, |kind, r| {
            let rel = match kind {
                Kind::Dir if !r.is_file() => return,
                Kind::Dir => p.child(&r.rel).as_str().to_owned(),
                Kind::File => p.as_str().to_owned(),
            };
            if let Some(m) = &include {
                let subject = if query.include.contains('/') {
                    rel.as_str()
                } else {
                    r.file_name()
                };
                if !m.is_match(subject) {
                    return;
                }
            }
            if r.size <= MAX_SCAN_FILE_BYTES {
                files.push((format!("./{}", r.rel), rel));
            }
        })
        .await?;
        files.sort_by(|a, b| walk_order(&a.0, &b.0));
        let mut result = GrepResult::default();
        if files.is_empty() {
            return Ok(result);
        }
        // 2. Their contents, in that order, as one tar stream.
        let mut cmd = self
            .run(
                "grep",
                script::GREP_FETCH,
                vec![p.as_str().to_owned()],
                true,
            )
            .await?;
        let mut names = Vec::new();
        for (fetch, _) in &files {
            names.extend_from_slice(fetch.as_bytes());
            names.push(0);
        }
        let feeder = cmd.take_stdin().map(|mut stdin: Writer| {
            tokio::spawn(async move {
                let _ = stdin.write_all(&names).await;
                let _ = stdin.shutdown().await;
            })
        });
        let paths: HashMap<&str, &str> = files
            .iter()
            .map(|(fetch, rel)| (fetch.as_str(), rel.as_str()))
            .collect();
        let mut seen: HashMap<String, Vec<(u64, String)>> = HashMap::new();
        let mut tar = TarReader::new(cmd.stdout(), MAX_SCAN_FILE_BYTES);
        let capped = loop {
            let item = match tar.next().await {
                Ok(Some(item)) => item,
                Ok(None) => break false,
                Err(e) => {
                    let outcome = cmd.finish().await?;
                    expect_ok(outcome, "searching", &name)?;
                    return Err(lost("grep", e));
                }
            };
            let (member, found) = match item {
                Item::File { name, data } => {
                    let found = grep_bytes(&data, &regex);
                    (name, found)
                }
                Item::HardLink { name, target } => {
                    let found = seen.get(&target).cloned().unwrap_or_default();
                    (name, found)
                }
                Item::Skipped { .. } | Item::Other => continue,
            };
            let Some(path) = paths.get(member.as_str()) else {
                continue;
            };
            if add_matches(&mut result, path, &found) {
                break true;
            }
            seen.insert(member, found);
        };
        if let Some(feeder) = feeder {
            feeder.abort();
        }
        if capped {
            cmd.abandon();
        } else {
            expect_ok(cmd.finish().await?, "searching", &name)?;
        }
        Ok(result)
    }

    async fn upload(&self, path: &str) -> Result<Box<dyn Upload>, Error> {
        let p = self.parse_writable(path).await?;
        let name = p.to_string();
        if p.is_root() {
            return Err(FileError::IsADirectory { path: name }.into());
        }
        let tmp_name = temp_name(&p, "upload");
        let args = self.with_rules(vec![p.as_str().to_owned(), tmp_name.clone()]);
        let mut cmd = self.run("upload", script::UPLOAD, args, true).await?;
        if !cmd.marker().await? {
            return Err(failure(cmd.finish().await?, "uploading", &name));
        }
        let tmp = cmd.read_until(0, 8192).await?;
        let tmp = String::from_utf8(tmp)
            .ok()
            .filter(|t| t.ends_with(&format!("/{tmp_name}")))
            .ok_or_else(|| {
                Error::Internal(format!(
                    "uploading {name}: the sandbox named no temporary file"
                ))
            })?;
        let Some(stdin) = cmd.take_stdin() else {
            return Err(Error::Internal("the upload process has no stdin".into()));
        };
        Ok(Box::new(RemoteUpload {
            launcher: self.launcher.clone(),
            rules: self.rules.clone(),
            path: p,
            name,
            tmp,
            tmp_name,
            stdin: Some(stdin),
            cmd: Some(cmd),
            written: 0,
        }))
    }

    async fn download(&self, path: &str) -> Result<Reader, Error> {
        let p = self.parse(path).await?;
        let name = p.to_string();
        let mut cmd = self
            .run("download", script::READ, vec![p.as_str().to_owned()], false)
            .await?;
        if !cmd.marker().await? {
            return Err(failure(cmd.finish().await?, "opening", &name));
        }
        Ok(Box::pin(Streamed::new(cmd, name)))
    }
}

/// An upload streaming into a temporary file in the sandbox.
struct RemoteUpload {
    launcher: Arc<dyn Launcher>,
    rules: Arc<[String]>,
    path: WorkspacePath,
    name: String,
    /// The temporary file's absolute path in the sandbox, and its name.
    tmp: String,
    tmp_name: String,
    stdin: Option<Writer>,
    /// The process copying stdin into the temporary file; `None` once it ended.
    cmd: Option<Command>,
    written: u64,
}

impl RemoteUpload {
    /// Why the copy stopped, when writing to it failed.
    async fn copy_failure(&mut self, e: std::io::Error) -> Error {
        self.stdin = None;
        match self.cmd.take() {
            Some(cmd) => match cmd.finish().await {
                Ok(outcome) if outcome.code != Code::Ok => {
                    failure(outcome, "uploading", &self.name)
                }
                Ok(_) => lost("upload", e),
                Err(e) => e,
            },
            None => lost("upload", e),
        }
    }
}

#[async_trait]
impl Upload for RemoteUpload {
    async fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(Error::Internal("upload already committed".into()));
        };
        if let Err(e) = stdin.write_all(data).await {
            return Err(self.copy_failure(e).await);
        }
        self.written += data.len() as u64;
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<u64, Error> {
        if let Some(mut stdin) = self.stdin.take()
            && let Err(e) = stdin.shutdown().await
        {
            return Err(self.copy_failure(e).await);
        }
        if let Some(cmd) = self.cmd.take() {
            expect_ok(cmd.finish().await?, "uploading", &self.name)?;
        }
        let mut args = vec![
            self.path.as_str().to_owned(),
            self.tmp.clone(),
            self.written.to_string(),
        ];
        args.extend(self.rules.iter().cloned());
        let cmd = Command::start(
            self.launcher.as_ref(),
            "upload",
            script::COMMIT,
            args,
            false,
        )
        .await?;
        // The commit script removes the temporary file whatever happens.
        self.tmp.clear();
        expect_ok(cmd.finish().await?, "writing", &self.name)?;
        Ok(self.written)
    }
}

impl Drop for RemoteUpload {
    /// An upload dropped before its commit leaves no temporary file behind.
    fn drop(&mut self) {
        if self.tmp.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(tmp = %self.tmp, "an abandoned upload left its temporary file");
            return;
        };
        self.stdin = None;
        let copy = self.cmd.take();
        let launcher = self.launcher.clone();
        let args = vec![std::mem::take(&mut self.tmp), self.tmp_name.clone()];
        runtime.spawn(async move {
            if let Some(copy) = copy {
                let _ = copy.finish().await;
            }
            let removed = match Command::start(
                launcher.as_ref(),
                "upload",
                script::DISCARD,
                args.clone(),
                false,
            )
            .await
            {
                Ok(cmd) => cmd.finish().await.map(|o| o.code),
                Err(e) => Err(e),
            };
            if !matches!(removed, Ok(Code::Ok)) {
                tracing::warn!(tmp = %args[0], result = ?removed, "removing an abandoned upload");
            }
        });
    }
}
