//! [`SandboxFiles`] over a host directory (the local backend's workspace; a Docker backend with a
//! bind-mounted workspace can reuse it). Blocking filesystem work runs on the blocking pool.

use std::fs;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::io::AsyncWriteExt;

use super::{
    Edit, FileEntry, FileError, GrepMatch, GrepQuery, GrepResult, MAX_GLOB_RESULTS,
    MAX_GREP_LINE_CHARS, MAX_GREP_MATCHES, MAX_SCAN_FILE_BYTES, ReadResult, SandboxFiles, Upload,
    apply_edit, glob_matcher, grep_matchers, looks_binary, read_lines,
};
use crate::error::Error;
use crate::paths::{Jail, WorkspacePath};
use crate::process::Reader;

/// File operations on a host directory guarded by a [`Jail`].
#[derive(Debug, Clone)]
pub struct LocalFiles {
    jail: Arc<Jail>,
    owner: Option<Owner>,
}

/// Who owns what the file operations create: the sandbox user, when the processes that use the
/// files run as another user than the executor (Docker: uid 1000 in the container, the executor
/// often root on the host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    /// Gives `path` to the owner; when the executor may not chown (it is not root), makes it
    /// writable by everyone instead, so the sandbox user can still change it.
    fn adopt(self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        if std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid)).is_ok() {
            return Ok(());
        }
        let meta = fs::symlink_metadata(path)?;
        let mode = meta.permissions().mode() | if meta.is_dir() { 0o777 } else { 0o666 };
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    }
}

impl LocalFiles {
    pub fn new(jail: Arc<Jail>) -> Self {
        Self { jail, owner: None }
    }

    /// Files and folders created from now on belong to `owner`.
    pub fn owned_by(mut self, owner: Owner) -> Self {
        self.owner = Some(owner);
        self
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Jail) -> Result<T, Error> + Send + 'static,
    {
        let jail = self.jail.clone();
        tokio::task::spawn_blocking(move || f(&jail))
            .await
            .map_err(|e| Error::Internal(format!("file operation task failed: {e}")))?
    }
}

/// `create_dir_all`, giving every folder it creates to `owner`.
fn create_dirs(dir: &Path, owner: Option<Owner>) -> std::io::Result<()> {
    let Some(owner) = owner else {
        return fs::create_dir_all(dir);
    };
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|d| fs::symlink_metadata(d).is_err())
        .collect();
    fs::create_dir_all(dir)?;
    for d in missing.iter().rev() {
        owner.adopt(d)?;
    }
    Ok(())
}

fn entry(path: String, meta: &fs::Metadata) -> FileEntry {
    FileEntry {
        path,
        is_dir: meta.is_dir(),
        size: if meta.is_dir() { 0 } else { meta.len() },
        modified: meta.modified().ok().map(DateTime::<Utc>::from),
    }
}

/// Walks `dir` (not following symlinks), yielding entries with their path relative to `dir`.
fn walk(dir: &Path, skip_git: bool) -> impl Iterator<Item = (walkdir::DirEntry, String)> {
    walkdir::WalkDir::new(dir)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(move |e| !(skip_git && e.file_type().is_dir() && e.file_name() == ".git"))
        .filter_map(Result::ok)
        .filter_map(move |e| {
            let rel = e.path().strip_prefix(dir).ok()?.to_str()?.to_owned();
            Some((e, rel))
        })
}

fn dir_of(jail: &Jail, raw: &str) -> Result<(WorkspacePath, PathBuf), Error> {
    let r = jail.resolve_read(raw)?;
    let meta =
        fs::metadata(&r.host).map_err(|e| FileError::io("reading", &r.path.to_string(), e))?;
    if !meta.is_dir() {
        return Err(FileError::NotADirectory {
            path: r.path.to_string(),
        }
        .into());
    }
    Ok((r.path, r.host))
}

#[async_trait]
impl SandboxFiles for LocalFiles {
    async fn read(&self, path: &str, offset: u64, limit: u64) -> Result<ReadResult, Error> {
        let raw = path.to_owned();
        self.blocking(move |jail| {
            let r = jail.resolve_read(&raw)?;
            let name = r.path.to_string();
            let file = fs::File::open(&r.host).map_err(|e| FileError::io("opening", &name, e))?;
            let meta = file
                .metadata()
                .map_err(|e| FileError::io("reading", &name, e))?;
            if meta.is_dir() {
                return Err(FileError::IsADirectory { path: name }.into());
            }
            Ok(read_lines(BufReader::new(file), offset, limit, &name)?)
        })
        .await
    }

    async fn write(&self, path: &str, content: Bytes) -> Result<u64, Error> {
        let raw = path.to_owned();
        let owner = self.owner;
        self.blocking(move |jail| {
            let r = jail.resolve_write(&raw)?;
            let name = r.path.to_string();
            if r.path.is_root() {
                return Err(FileError::IsADirectory { path: name }.into());
            }
            if let Some(parent) = r.host.parent() {
                create_dirs(parent, owner)
                    .map_err(|e| FileError::io("creating the parent of", &name, e))?;
            }
            let existed = fs::symlink_metadata(&r.host).is_ok();
            fs::write(&r.host, &content).map_err(|e| FileError::io("writing", &name, e))?;
            if let Some(owner) = owner
                && !existed
            {
                owner
                    .adopt(&r.host)
                    .map_err(|e| FileError::io("writing", &name, e))?;
            }
            Ok(content.len() as u64)
        })
        .await
    }

    async fn edit(&self, path: &str, edit: Edit) -> Result<u64, Error> {
        let raw = path.to_owned();
        self.blocking(move |jail| {
            let r = jail.resolve_write(&raw)?;
            let name = r.path.to_string();
            let meta = fs::metadata(&r.host).map_err(|e| FileError::io("reading", &name, e))?;
            if meta.is_dir() {
                return Err(FileError::IsADirectory { path: name }.into());
            }
            if meta.len() > MAX_SCAN_FILE_BYTES {
                return Err(FileError::TooLarge {
                    path: name,
                    size: meta.len(),
                    limit: MAX_SCAN_FILE_BYTES,
                }
                .into());
            }
            let bytes = fs::read(&r.host).map_err(|e| FileError::io("reading", &name, e))?;
            let text =
                String::from_utf8(bytes).map_err(|_| FileError::NotUtf8 { path: name.clone() })?;
            let (updated, count) = apply_edit(&text, &edit, &name)?;
            fs::write(&r.host, updated).map_err(|e| FileError::io("writing", &name, e))?;
            Ok(count)
        })
        .await
    }

    async fn list(&self, path: &str) -> Result<Vec<FileEntry>, Error> {
        let raw = path.to_owned();
        self.blocking(move |jail| {
            let r = jail.resolve_read(&raw)?;
            let name = r.path.to_string();
            let meta = fs::metadata(&r.host).map_err(|e| FileError::io("reading", &name, e))?;
            if !meta.is_dir() {
                return Ok(vec![entry(r.path.as_str().to_owned(), &meta)]);
            }
            let mut out = Vec::new();
            for item in fs::read_dir(&r.host).map_err(|e| FileError::io("listing", &name, e))? {
                let item = item.map_err(|e| FileError::io("listing", &name, e))?;
                let Some(file_name) = item.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                let Ok(meta) = fs::symlink_metadata(item.path()) else {
                    continue;
                };
                out.push(entry(r.path.child(&file_name).as_str().to_owned(), &meta));
            }
            out.sort_by(|a, b| a.path.cmp(&b.path));
            Ok(out)
        })
        .await
    }

    async fn glob(&self, pattern: &str, base: &str) -> Result<Vec<FileEntry>, Error> {
        let (pattern, raw) = (pattern.to_owned(), base.to_owned());
        self.blocking(move |jail| {
            let matcher = glob_matcher(&pattern)?;
            let (base, dir) = dir_of(jail, &raw)?;
            let mut out = Vec::new();
            for (e, rel) in walk(&dir, false) {
                if !matcher.is_match(&rel) {
                    continue;
                }
                let Ok(meta) = e.metadata() else { continue };
                out.push(entry(base.child(&rel).as_str().to_owned(), &meta));
                if out.len() >= MAX_GLOB_RESULTS {
                    tracing::info!(pattern, limit = MAX_GLOB_RESULTS, "glob results capped");
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    async fn grep(&self, query: GrepQuery) -> Result<GrepResult, Error> {
        self.blocking(move |jail| {
            let (regex, include) = grep_matchers(&query)?;
            let r = jail.resolve_read(&query.path)?;
            let meta = fs::metadata(&r.host)
                .map_err(|e| FileError::io("reading", &r.path.to_string(), e))?;
            let files: Vec<(PathBuf, String, String)> = if meta.is_dir() {
                walk(&r.host, true)
                    .filter(|(e, _)| e.file_type().is_file())
                    .map(|(e, rel)| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        (e.into_path(), r.path.child(&rel).as_str().to_owned(), name)
                    })
                    .collect()
            } else {
                let name = r
                    .host
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                vec![(r.host.clone(), r.path.as_str().to_owned(), name)]
            };
            let mut result = GrepResult::default();
            for (host, rel, name) in files {
                if let Some(m) = &include {
                    let subject = if query.include.contains('/') {
                        rel.as_str()
                    } else {
                        name.as_str()
                    };
                    if !m.is_match(subject) {
                        continue;
                    }
                }
                if grep_file(&host, &rel, &regex, &mut result) {
                    break;
                }
            }
            Ok(result)
        })
        .await
    }

    async fn upload(&self, path: &str) -> Result<Box<dyn Upload>, Error> {
        let raw = path.to_owned();
        let owner = self.owner;
        let (target, tmp, name) = self
            .blocking(move |jail| {
                let r = jail.resolve_write(&raw)?;
                let name = r.path.to_string();
                if r.path.is_root() || r.host.is_dir() {
                    return Err(FileError::IsADirectory { path: name }.into());
                }
                let parent = r
                    .host
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| jail.host_root().to_path_buf());
                create_dirs(&parent, owner)
                    .map_err(|e| FileError::io("creating the parent of", &name, e))?;
                let file_name = r
                    .host
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let tmp = parent.join(format!(
                    ".{file_name}.upload-{}",
                    uuid::Uuid::new_v4().simple()
                ));
                Ok((r.host, tmp, name))
            })
            .await?;
        let file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| FileError::io("creating", &name, e))?;
        if let Some(owner) = owner {
            // The upload replaces the target by a rename: the new file must be the owner's.
            owner
                .adopt(&tmp)
                .map_err(|e| FileError::io("creating", &name, e))?;
        }
        Ok(Box::new(LocalUpload {
            file: Some(file),
            tmp,
            target,
            name,
            written: 0,
        }))
    }

    async fn download(&self, path: &str) -> Result<Reader, Error> {
        let r = self.jail.resolve_read(path)?;
        let name = r.path.to_string();
        let file = tokio::fs::File::open(&r.host)
            .await
            .map_err(|e| FileError::io("opening", &name, e))?;
        let meta = file
            .metadata()
            .await
            .map_err(|e| FileError::io("reading", &name, e))?;
        if meta.is_dir() {
            return Err(FileError::IsADirectory { path: name }.into());
        }
        Ok(Box::pin(file))
    }
}

/// Greps one file into `result`; returns true when the match cap was reached.
fn grep_file(host: &Path, rel: &str, regex: &regex::bytes::Regex, result: &mut GrepResult) -> bool {
    let Ok(meta) = fs::metadata(host) else {
        return false;
    };
    if meta.len() > MAX_SCAN_FILE_BYTES {
        return false;
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    if fs::File::open(host)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .is_err()
        || looks_binary(&bytes)
    {
        return false;
    }
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !regex.is_match(line) {
            continue;
        }
        if result.matches.len() >= MAX_GREP_MATCHES {
            result.truncated = true;
            return true;
        }
        let text: String = String::from_utf8_lossy(line)
            .chars()
            .take(MAX_GREP_LINE_CHARS)
            .collect();
        result.matches.push(GrepMatch {
            path: rel.to_owned(),
            line_number: i as u64 + 1,
            line: text,
        });
    }
    false
}

struct LocalUpload {
    file: Option<tokio::fs::File>,
    tmp: PathBuf,
    target: PathBuf,
    name: String,
    written: u64,
}

#[async_trait]
impl Upload for LocalUpload {
    async fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        let Some(file) = self.file.as_mut() else {
            return Err(Error::Internal("upload already committed".into()));
        };
        file.write_all(data)
            .await
            .map_err(|e| FileError::io("writing", &self.name, e))?;
        self.written += data.len() as u64;
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<u64, Error> {
        if let Some(mut file) = self.file.take() {
            file.flush()
                .await
                .map_err(|e| FileError::io("writing", &self.name, e))?;
        }
        tokio::fs::rename(&self.tmp, &self.target)
            .await
            .map_err(|e| FileError::io("writing", &self.name, e))?;
        self.tmp = PathBuf::new();
        Ok(self.written)
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}
