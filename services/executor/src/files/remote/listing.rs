//! The listings the `list`, `glob` and `grep-list` scripts print, parsed into records; plus the
//! ordering and glob rules that make them match [`LocalFiles`](crate::files::local::LocalFiles).
//!
//! Format: a first line `D` (the entries of a folder follow, named `./rel/path`) or `F` (one
//! record of the file itself follows, named by its absolute real path). Then records
//! `MODE SIZE SECS DATE TIME ZONE NAME\n` (`stat -c '%f %s %Y %y %n'`) for names without a
//! newline, a line `#`, and records `MODE SIZE SECS DATE TIME ZONE\nNAME\0` for the others.

use std::cmp::Ordering;
use std::io;

use chrono::{DateTime, Utc};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::files::FileEntry;

const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;

/// What the listed path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// One listed entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// For [`Kind::Dir`]: relative to the folder (no `./`); for [`Kind::File`]: the file's name.
    pub rel: String,
    pub mode: u32,
    pub size: u64,
    pub modified: Option<DateTime<Utc>>,
}

impl Record {
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }

    pub fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }

    /// The entry as [`LocalFiles`](crate::files::local::LocalFiles) reports it (`lstat`).
    pub fn entry(&self, path: String) -> FileEntry {
        FileEntry {
            path,
            is_dir: self.is_dir(),
            size: if self.is_dir() { 0 } else { self.size },
            modified: self.modified,
        }
    }

    /// The last component of the name.
    pub fn file_name(&self) -> &str {
        self.rel.rsplit('/').next().unwrap_or(&self.rel)
    }
}

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected listing from the sandbox: {what}"),
    )
}

/// The fields of one record.
struct Fields<'a> {
    mode: u32,
    size: u64,
    modified: Option<DateTime<Utc>>,
    name: &'a [u8],
}

impl Fields<'_> {
    fn record(&self, rel: String) -> Record {
        Record {
            rel,
            mode: self.mode,
            size: self.size,
            modified: self.modified,
        }
    }
}

/// Parses `MODE SIZE SECS DATE TIME ZONE` (and, when `with_name`, ` NAME`).
fn parse_fields(line: &[u8], with_name: bool) -> io::Result<Fields<'_>> {
    let mut parts = line.splitn(if with_name { 7 } else { 6 }, |b| *b == b' ');
    let mut field = || {
        parts
            .next()
            .ok_or_else(|| invalid(String::from_utf8_lossy(line)))
    };
    let text = |b: &[u8]| {
        std::str::from_utf8(b)
            .map(str::to_owned)
            .unwrap_or_default()
    };
    let mode = u32::from_str_radix(&text(field()?), 16).map_err(invalid)?;
    let size: u64 = text(field()?).parse().map_err(invalid)?;
    let secs: i64 = text(field()?).parse().map_err(invalid)?;
    let _date = field()?;
    let time = text(field()?);
    let _zone = field()?;
    let name = if with_name { field()? } else { &[][..] };
    // `%y` has the fraction `%Y` lacks; the zone does not change it.
    let nanos = time
        .split_once('.')
        .and_then(|(_, f)| format!("{f:0<9}").get(..9)?.parse::<u32>().ok())
        .unwrap_or(0);
    Ok(Fields {
        mode,
        size,
        modified: DateTime::from_timestamp(secs, nanos),
        name,
    })
}

/// Reads a listing, handing every record with a UTF-8 name to `keep`. `None` when the script
/// printed nothing (it failed; its exit code says why).
pub async fn read<R: AsyncBufRead + Unpin>(
    mut r: R,
    mut keep: impl FnMut(Kind, Record),
) -> io::Result<Option<Kind>> {
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line).await? == 0 {
        return Ok(None);
    }
    let kind = match line.as_slice() {
        b"D\n" => Kind::Dir,
        b"F\n" => Kind::File,
        other => return Err(invalid(String::from_utf8_lossy(other))),
    };
    let name = |raw: &[u8]| -> Option<String> {
        let raw = std::str::from_utf8(raw).ok()?;
        Some(match kind {
            Kind::Dir => raw.strip_prefix("./").unwrap_or(raw).to_owned(),
            Kind::File => raw.rsplit('/').next().unwrap_or(raw).to_owned(),
        })
    };
    // Names without a newline, one per line, until `#`.
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).await? == 0 {
            return Err(invalid("it ended early"));
        }
        let Some(body) = line.strip_suffix(b"\n") else {
            return Err(invalid("a truncated line"));
        };
        if body == b"#" {
            break;
        }
        let fields = parse_fields(body, true)?;
        if let Some(rel) = name(fields.name) {
            keep(kind, fields.record(rel));
        }
    }
    // The other names: fields on a line, then the name and a NUL.
    let mut raw = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).await? == 0 {
            return Ok(Some(kind));
        }
        let Some(body) = line.strip_suffix(b"\n") else {
            return Err(invalid("a truncated line"));
        };
        let fields = parse_fields(body, false)?;
        raw.clear();
        r.read_until(0, &mut raw).await?;
        if raw.pop() != Some(0) {
            return Err(invalid("a name without its NUL"));
        }
        if let Some(rel) = name(&raw) {
            keep(kind, fields.record(rel));
        }
    }
}

/// The order of a depth-first walk that visits the entries of each folder by name (what
/// `walkdir` with `sort_by_file_name` yields): component by component.
pub fn walk_order(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(text: &[u8]) -> (Option<Kind>, Vec<Record>) {
        let mut out = Vec::new();
        let kind = read(text, |_, r| out.push(r)).await.unwrap();
        (kind, out)
    }

    #[tokio::test]
    async fn both_record_forms() {
        let text = b"D\n81a4 12 1700000000 2023-11-14 22:13:20.5 +0000 ./a b.txt\n\
41ed 4096 1700000001 2023-11-14 23:13:21.000000123 +0100 ./dir\n#\n\
81a4 3 5 1970-01-01 00:00:05.000000000 +0000\n./new\nline\0";
        let (kind, recs) = parse(text).await;
        assert_eq!(kind, Some(Kind::Dir));
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].rel, "a b.txt");
        assert_eq!(recs[0].size, 12);
        assert!(recs[0].is_file());
        assert_eq!(
            recs[0].modified,
            DateTime::from_timestamp(1_700_000_000, 500_000_000)
        );
        assert!(recs[1].is_dir());
        assert_eq!(recs[1].entry("x/dir".into()).size, 0);
        assert_eq!(
            recs[1].modified,
            DateTime::from_timestamp(1_700_000_001, 123)
        );
        assert_eq!(recs[2].rel, "new\nline");
    }

    #[tokio::test]
    async fn single_files_and_failures() {
        let (kind, recs) =
            parse(b"F\n#\n81a4 1 2 2023-11-14 22:13:20.0 +0000\n/ws/sub/f.rs\0").await;
        assert_eq!(kind, Some(Kind::File));
        assert_eq!(recs[0].rel, "f.rs");
        assert_eq!(parse(b"").await, (None, vec![]));
        let mut sink = |_, _| {};
        assert!(read(&b"D\n81a4 x\n#\n"[..], &mut sink).await.is_err());
        assert!(
            read(&b"D\n81a4 1 2 d t z ./a\n"[..], &mut sink)
                .await
                .is_err()
        );
        assert!(read(&b"Q\n"[..], &mut sink).await.is_err());
        // Names that are not UTF-8 are skipped, like the local walk does.
        let (_, recs) = parse(b"D\n81a4 1 2 d t.0 z ./\xff\n#\n").await;
        assert!(recs.is_empty());
    }

    #[test]
    fn walk_order_is_per_component() {
        let mut v = vec!["a.txt", "a/b", "a", "b", "a/a/z", "a-b"];
        v.sort_by(|a, b| walk_order(a, b));
        assert_eq!(v, vec!["a", "a/a/z", "a/b", "a-b", "a.txt", "b"]);
    }
}
