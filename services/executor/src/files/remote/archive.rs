//! A minimal reader of the tar streams `tar -cf -` writes (GNU tar and BusyBox: ustar headers
//! with GNU long names, pax path records), enough to take the regular files grep asked for out
//! of one stream. Several archives back to back (one per `xargs` batch) read as one.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

const BLOCK: usize = 512;
/// Largest long-name or pax record accepted.
const MAX_META: u64 = 64 * 1024;

/// One member of the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    /// A regular file's name and bytes.
    File { name: String, data: Vec<u8> },
    /// A regular file larger than the reader's limit; its data was skipped.
    Skipped { name: String },
    /// A hard link to a member earlier in the stream (tar stores a file's data once).
    HardLink { name: String, target: String },
    /// Anything else (folders, symlinks, devices).
    Other,
}

/// Reads [`Item`]s from a tar stream.
pub struct TarReader<R> {
    r: R,
    max_file: u64,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected tar stream from the sandbox: {what}"),
    )
}

/// A NUL-terminated header field.
fn field(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(field(bytes)).into_owned()
}

/// A numeric field: octal, or GNU base-256 when the high bit is set.
fn number(bytes: &[u8]) -> io::Result<u64> {
    if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        let mut n: u64 = u64::from(bytes[0] & 0x7f);
        for b in &bytes[1..] {
            n = n
                .checked_mul(256)
                .and_then(|n| n.checked_add(u64::from(*b)))
                .ok_or_else(|| invalid("a size that does not fit"))?;
        }
        return Ok(n);
    }
    let digits = String::from_utf8_lossy(field(bytes));
    let digits = digits.trim_matches(|c: char| c == ' ' || c == '\0');
    if digits.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(digits, 8).map_err(|_| invalid("a size that is not octal"))
}

/// `path` and `linkpath` of a pax extended header.
fn pax(data: &[u8]) -> (Option<String>, Option<String>) {
    let (mut path, mut link) = (None, None);
    let mut rest = data;
    while let Some(space) = rest.iter().position(|b| *b == b' ') {
        let Some(len) = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            break;
        };
        if len <= space || len > rest.len() {
            break;
        }
        let record = &rest[space + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(v) = record.strip_prefix(b"path=") {
            path = Some(String::from_utf8_lossy(v).into_owned());
        } else if let Some(v) = record.strip_prefix(b"linkpath=") {
            link = Some(String::from_utf8_lossy(v).into_owned());
        }
        rest = &rest[len..];
    }
    (path, link)
}

impl<R: AsyncRead + Unpin> TarReader<R> {
    /// Files larger than `max_file` bytes are [`Item::Skipped`].
    pub fn new(r: R, max_file: u64) -> Self {
        Self { r, max_file }
    }

    /// Reads a header block; `None` at the end of the stream.
    async fn header(&mut self) -> io::Result<Option<[u8; BLOCK]>> {
        let mut block = [0u8; BLOCK];
        let mut got = 0;
        while got < BLOCK {
            let n = self.r.read(&mut block[got..]).await?;
            if n == 0 {
                return if got == 0 {
                    Ok(None)
                } else {
                    Err(invalid("it ends inside a header"))
                };
            }
            got += n;
        }
        Ok(Some(block))
    }

    /// Reads `size` bytes of data and the padding after them.
    async fn data(&mut self, size: u64) -> io::Result<Vec<u8>> {
        let mut data = Vec::with_capacity(size as usize);
        (&mut self.r).take(size).read_to_end(&mut data).await?;
        if data.len() as u64 != size {
            return Err(invalid("it ends inside a file"));
        }
        self.skip_padding(size).await?;
        Ok(data)
    }

    async fn skip(&mut self, size: u64) -> io::Result<()> {
        let copied = tokio::io::copy(&mut (&mut self.r).take(size), &mut tokio::io::sink()).await?;
        if copied != size {
            return Err(invalid("it ends inside a file"));
        }
        self.skip_padding(size).await
    }

    async fn skip_padding(&mut self, size: u64) -> io::Result<()> {
        let pad = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        let mut buf = [0u8; BLOCK];
        self.r.read_exact(&mut buf[..pad as usize]).await?;
        Ok(())
    }

    /// The next member; `None` at the end of the stream.
    pub async fn next(&mut self) -> io::Result<Option<Item>> {
        let (mut long_name, mut long_link) = (None::<String>, None::<String>);
        loop {
            let Some(h) = self.header().await? else {
                return Ok(None);
            };
            if h.iter().all(|b| *b == 0) {
                continue; // end-of-archive blocks (between `xargs` batches too)
            }
            let size = number(&h[124..136])?;
            let kind = h[156];
            let meta = |size: u64| {
                if size > MAX_META {
                    Err(invalid("an oversized long name"))
                } else {
                    Ok(())
                }
            };
            match kind {
                b'L' | b'K' => {
                    meta(size)?;
                    let value = text(&self.data(size).await?);
                    if kind == b'L' {
                        long_name = Some(value);
                    } else {
                        long_link = Some(value);
                    }
                    continue;
                }
                b'x' => {
                    meta(size)?;
                    let (path, link) = pax(&self.data(size).await?);
                    long_name = path.or(long_name);
                    long_link = link.or(long_link);
                    continue;
                }
                b'g' => {
                    self.skip(size).await?;
                    continue;
                }
                _ => {}
            }
            let name = long_name.take().unwrap_or_else(|| {
                let name = text(&h[0..100]);
                let prefix = text(&h[345..500]);
                if &h[257..263] == b"ustar\0" && !prefix.is_empty() {
                    format!("{prefix}/{name}")
                } else {
                    name
                }
            });
            return Ok(Some(match kind {
                b'0' | b'\0' | b'7' if size > self.max_file => {
                    self.skip(size).await?;
                    Item::Skipped { name }
                }
                b'0' | b'\0' | b'7' => Item::File {
                    data: self.data(size).await?,
                    name,
                },
                b'1' => {
                    self.skip(size).await?;
                    let target = long_link.take().unwrap_or_else(|| text(&h[157..257]));
                    Item::HardLink { name, target }
                }
                _ => {
                    self.skip(size).await?;
                    Item::Other
                }
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, kind: u8, size: usize, link: &str) -> Vec<u8> {
        let mut h = vec![0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let size = format!("{size:011o}\0");
        h[124..136].copy_from_slice(size.as_bytes());
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..265].copy_from_slice(b"ustar  \0");
        h
    }

    fn member(name: &str, kind: u8, data: &[u8], link: &str) -> Vec<u8> {
        let mut out = header(name, kind, data.len(), link);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
        out
    }

    async fn items(stream: Vec<u8>, max: u64) -> io::Result<Vec<Item>> {
        let mut r = TarReader::new(stream.as_slice(), max);
        let mut out = Vec::new();
        while let Some(item) = r.next().await? {
            out.push(item);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn members_of_concatenated_archives() {
        let long = format!("./{}/f.txt", "d".repeat(150));
        let mut s = member("./a.txt", b'0', b"hello\n", "");
        s.extend(member("./sub", b'5', b"", ""));
        s.extend(vec![0u8; 2 * BLOCK]);
        s.extend(member(
            "././@LongLink",
            b'L',
            format!("{long}\0").as_bytes(),
            "",
        ));
        s.extend(member(&long[..99], b'0', &[7u8; 600], ""));
        s.extend(member("./b.txt", b'1', b"", "./a.txt"));
        s.extend(member("./big", b'0', &[1u8; 40], ""));
        s.extend(member("PaxHeaders/x", b'x', b"19 path=./pax name\n", ""));
        s.extend(member("./ignored", b'0', b"p", ""));
        s.extend(vec![0u8; 2 * BLOCK]);
        let got = items(s, 32).await.unwrap();
        assert_eq!(
            got,
            vec![
                Item::File {
                    name: "./a.txt".into(),
                    data: b"hello\n".to_vec()
                },
                Item::Other,
                Item::Skipped { name: long },
                Item::HardLink {
                    name: "./b.txt".into(),
                    target: "./a.txt".into()
                },
                Item::Skipped {
                    name: "./big".into()
                },
                Item::File {
                    name: "./pax name".into(),
                    data: b"p".to_vec()
                },
            ]
        );
    }

    #[tokio::test]
    async fn truncated_streams_are_errors() {
        let s = member("./a.txt", b'0', &[b'x'; 700], "");
        assert!(items(s[..BLOCK + 100].to_vec(), 1024).await.is_err());
        assert!(items(s[..100].to_vec(), 1024).await.is_err());
        assert_eq!(number(&[0x80, 0, 0, 1, 2]).unwrap(), 258);
    }
}
