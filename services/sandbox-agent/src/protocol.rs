//! The wire protocol between the executor and the agent: one Unix-socket connection per process,
//! carrying length-prefixed frames in both directions.
//!
//! A frame is a 5-byte header — kind (`u8`) and payload length (`u32`, big endian) — and the
//! payload. Structured payloads (`Spawn`, `SpawnFailed`, `Pong`) are JSON; output and stdin are
//! raw bytes; the rest are fixed-size binary.
//!
//! ```text
//! executor → agent: Ping | Spawn, then Stdin* StdinClose? Signal* Resize*
//! agent → executor: Pong | SpawnFailed | Started, then Output* Eof* Exited (last)
//! ```
//!
//! `Exited` is always the last frame of a started process, but it may come before the `Eof` of a
//! stream (a grandchild can hold a pipe open after the leader exited): the executor's engine
//! decides how long to drain, exactly as it does for a local process. When the executor's side of
//! the connection closes, the agent kills the process group — a process never outlives the
//! executor connection that supervises it.

use std::io::{self, Read, Write};

use tokio::io::{AsyncRead, AsyncReadExt};

use serde::{Deserialize, Serialize};

/// Largest payload accepted in either direction.
pub const MAX_FRAME: usize = 1024 * 1024;
/// Bytes of a frame header.
pub const HEADER_LEN: usize = 5;
/// The protocol version the agent reports in `Pong`.
pub const VERSION: &str = concat!("cognition-sandbox-agent/", env!("CARGO_PKG_VERSION"), " v1");

/// What to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnRequest {
    /// Program and arguments (non-empty).
    pub argv: Vec<String>,
    /// The complete environment of the process.
    pub env: Vec<(String, String)>,
    /// Absolute working directory inside the sandbox.
    pub cwd: String,
    /// Whether stdin is a pipe (else `/dev/null`); ignored with a PTY (stdin is the terminal).
    pub stdin_pipe: bool,
    /// Run on a new pseudo-terminal of this size (output arrives as [`Stream::Pty`]).
    pub pty: Option<WindowSize>,
}

/// A terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSize {
    pub rows: u16,
    pub cols: u16,
}

/// Why a process did not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    NotFound,
    PermissionDenied,
    BadCwd,
    InvalidArgument,
    ResourceLimit,
    Other,
}

/// A spawn failure: the typed reason and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnFailure {
    pub kind: FailureKind,
    pub message: String,
}

/// An output stream of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    Pty,
}

impl Stream {
    fn code(self) -> u8 {
        match self {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
            Stream::Pty => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Stream::Stdout),
            2 => Some(Stream::Stderr),
            3 => Some(Stream::Pty),
            _ => None,
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// Frames the executor sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Liveness and version check; answered with `Pong`, the connection stays usable.
    Ping,
    Spawn(SpawnRequest),
    Stdin(Vec<u8>),
    StdinClose,
    /// A signal number (Linux numbering) for the process group, or the leader only.
    Signal {
        signal: i32,
        leader_only: bool,
    },
    Resize(WindowSize),
    /// The agent's token; the first frame of a TCP connection (answered only on failure, with
    /// `Refused`).
    Auth(Vec<u8>),
}

/// Frames the agent sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Pong {
        version: String,
    },
    Started {
        pid: u32,
    },
    SpawnFailed(SpawnFailure),
    Output {
        stream: Stream,
        data: Vec<u8>,
    },
    Eof(Stream),
    Exited(Exit),
    /// The connection was not accepted (a wrong or missing token); the agent closes it.
    Refused(String),
}

mod kind {
    pub const PING: u8 = 1;
    pub const SPAWN: u8 = 2;
    pub const STDIN: u8 = 3;
    pub const STDIN_CLOSE: u8 = 4;
    pub const SIGNAL: u8 = 5;
    pub const RESIZE: u8 = 6;
    pub const AUTH: u8 = 7;
    pub const PONG: u8 = 101;
    pub const STARTED: u8 = 102;
    pub const SPAWN_FAILED: u8 = 103;
    pub const OUTPUT: u8 = 104;
    pub const EOF: u8 = 105;
    pub const EXITED: u8 = 106;
    pub const REFUSED: u8 = 107;
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("protocol types serialize")
}

/// Splits a header into (kind, payload length), refusing oversize frames.
pub fn parse_header(header: [u8; HEADER_LEN]) -> io::Result<(u8, usize)> {
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_FRAME {
        return Err(invalid(format!(
            "frame of {len} bytes exceeds the {MAX_FRAME}-byte limit"
        )));
    }
    Ok((header[0], len))
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::Ping => frame(kind::PING, &[]),
            Request::Auth(token) => frame(kind::AUTH, token),
            Request::Spawn(spawn) => frame(kind::SPAWN, &json(spawn)),
            Request::Stdin(data) => frame(kind::STDIN, data),
            Request::StdinClose => frame(kind::STDIN_CLOSE, &[]),
            Request::Signal {
                signal,
                leader_only,
            } => {
                let mut p = signal.to_be_bytes().to_vec();
                p.push(u8::from(*leader_only));
                frame(kind::SIGNAL, &p)
            }
            Request::Resize(size) => {
                let mut p = size.rows.to_be_bytes().to_vec();
                p.extend_from_slice(&size.cols.to_be_bytes());
                frame(kind::RESIZE, &p)
            }
        }
    }

    pub fn decode(kind: u8, payload: Vec<u8>) -> io::Result<Self> {
        Ok(match kind {
            kind::PING => Request::Ping,
            kind::AUTH => Request::Auth(payload),
            kind::SPAWN => Request::Spawn(
                serde_json::from_slice(&payload)
                    .map_err(|e| invalid(format!("bad spawn request: {e}")))?,
            ),
            kind::STDIN => Request::Stdin(payload),
            kind::STDIN_CLOSE => Request::StdinClose,
            kind::SIGNAL => match payload[..] {
                [a, b, c, d, leader] => Request::Signal {
                    signal: i32::from_be_bytes([a, b, c, d]),
                    leader_only: leader != 0,
                },
                _ => return Err(invalid("bad signal frame")),
            },
            kind::RESIZE => match payload[..] {
                [a, b, c, d] => Request::Resize(WindowSize {
                    rows: u16::from_be_bytes([a, b]),
                    cols: u16::from_be_bytes([c, d]),
                }),
                _ => return Err(invalid("bad resize frame")),
            },
            other => return Err(invalid(format!("unknown request frame kind {other}"))),
        })
    }

    /// Reads one request; `Ok(None)` at a clean end of stream.
    pub fn read(reader: &mut impl Read) -> io::Result<Option<Self>> {
        read_frame(reader)?
            .map(|(kind, payload)| Self::decode(kind, payload))
            .transpose()
    }

    /// [`Request::read`] on an async reader.
    pub async fn read_async(reader: &mut (impl AsyncRead + Unpin)) -> io::Result<Option<Self>> {
        read_frame_async(reader)
            .await?
            .map(|(kind, payload)| Self::decode(kind, payload))
            .transpose()
    }
}

impl Reply {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Reply::Pong { version } => frame(kind::PONG, &json(version)),
            Reply::Started { pid } => frame(kind::STARTED, &pid.to_be_bytes()),
            Reply::SpawnFailed(failure) => frame(kind::SPAWN_FAILED, &json(failure)),
            Reply::Output { stream, data } => {
                let mut out = Vec::with_capacity(HEADER_LEN + 1 + data.len());
                out.push(kind::OUTPUT);
                out.extend_from_slice(&((data.len() + 1) as u32).to_be_bytes());
                out.push(stream.code());
                out.extend_from_slice(data);
                out
            }
            Reply::Eof(stream) => frame(kind::EOF, &[stream.code()]),
            Reply::Exited(exit) => {
                let (tag, value) = match exit {
                    Exit::Code(c) => (0u8, *c),
                    Exit::Signal(s) => (1u8, *s),
                };
                let mut p = vec![tag];
                p.extend_from_slice(&value.to_be_bytes());
                frame(kind::EXITED, &p)
            }
            Reply::Refused(reason) => frame(kind::REFUSED, reason.as_bytes()),
        }
    }

    /// Bytes before the data of an `Output` frame (header and stream code).
    pub const fn output_prefix_len() -> usize {
        HEADER_LEN + 1
    }

    /// Writes the prefix of an `Output` frame carrying `len` bytes of `stream` into `prefix`
    /// (which must be [`Reply::output_prefix_len`] long), so the data can follow in place.
    pub fn fill_output_prefix(stream: Stream, prefix: &mut [u8], len: usize) {
        prefix[0] = kind::OUTPUT;
        prefix[1..HEADER_LEN].copy_from_slice(&((len + 1) as u32).to_be_bytes());
        prefix[HEADER_LEN] = stream.code();
    }

    pub fn decode(kind: u8, mut payload: Vec<u8>) -> io::Result<Self> {
        let stream_of = |code: u8| Stream::from_code(code).ok_or_else(|| invalid("bad stream"));
        Ok(match kind {
            kind::PONG => Reply::Pong {
                version: serde_json::from_slice(&payload)
                    .map_err(|e| invalid(format!("bad pong: {e}")))?,
            },
            kind::STARTED => match payload[..] {
                [a, b, c, d] => Reply::Started {
                    pid: u32::from_be_bytes([a, b, c, d]),
                },
                _ => return Err(invalid("bad started frame")),
            },
            kind::SPAWN_FAILED => Reply::SpawnFailed(
                serde_json::from_slice(&payload)
                    .map_err(|e| invalid(format!("bad spawn failure: {e}")))?,
            ),
            kind::OUTPUT => {
                if payload.is_empty() {
                    return Err(invalid("empty output frame"));
                }
                let stream = stream_of(payload[0])?;
                payload.remove(0);
                Reply::Output {
                    stream,
                    data: payload,
                }
            }
            kind::EOF => match payload[..] {
                [code] => Reply::Eof(stream_of(code)?),
                _ => return Err(invalid("bad eof frame")),
            },
            kind::EXITED => match payload[..] {
                [tag, a, b, c, d] => {
                    let value = i32::from_be_bytes([a, b, c, d]);
                    Reply::Exited(if tag == 0 {
                        Exit::Code(value)
                    } else {
                        Exit::Signal(value)
                    })
                }
                _ => return Err(invalid("bad exited frame")),
            },
            kind::REFUSED => Reply::Refused(String::from_utf8_lossy(&payload).into_owned()),
            other => return Err(invalid(format!("unknown reply frame kind {other}"))),
        })
    }

    /// Reads one reply; `Ok(None)` at a clean end of stream.
    pub fn read(reader: &mut impl Read) -> io::Result<Option<Self>> {
        read_frame(reader)?
            .map(|(kind, payload)| Self::decode(kind, payload))
            .transpose()
    }

    /// [`Reply::read`] on an async reader.
    pub async fn read_async(reader: &mut (impl AsyncRead + Unpin)) -> io::Result<Option<Self>> {
        read_frame_async(reader)
            .await?
            .map(|(kind, payload)| Self::decode(kind, payload))
            .transpose()
    }

    /// Writes the frame in one `write_all`.
    pub fn write(&self, writer: &mut impl Write) -> io::Result<()> {
        writer.write_all(&self.encode())
    }
}

/// Reads a raw frame; `Ok(None)` when the stream ends cleanly before a header.
fn read_frame(reader: &mut impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match reader.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let (kind, len) = parse_header(header)?;
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload)?;
    Ok(Some((kind, payload)))
}

/// [`read_frame`] on an async reader.
async fn read_frame_async(
    reader: &mut (impl AsyncRead + Unpin),
) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match reader.read(&mut header[got..]).await? {
            0 if got == 0 => return Ok(None),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    let (kind, len) = parse_header(header)?;
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await?;
    Ok(Some((kind, payload)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip_request(r: Request) {
        let bytes = r.encode();
        assert_eq!(Request::read(&mut &bytes[..]).unwrap(), Some(r));
    }

    fn round_trip_reply(r: Reply) {
        let bytes = r.encode();
        assert_eq!(Reply::read(&mut &bytes[..]).unwrap(), Some(r));
    }

    #[test]
    fn every_frame_round_trips() {
        round_trip_request(Request::Ping);
        round_trip_request(Request::Spawn(SpawnRequest {
            argv: vec!["echo".into(), "hi".into()],
            env: vec![("A".into(), "b".into())],
            cwd: "/workspace".into(),
            stdin_pipe: true,
            pty: Some(WindowSize { rows: 24, cols: 80 }),
        }));
        round_trip_request(Request::Stdin(b"abc".to_vec()));
        round_trip_request(Request::StdinClose);
        round_trip_request(Request::Auth(b"s3cret".to_vec()));
        round_trip_request(Request::Signal {
            signal: 15,
            leader_only: true,
        });
        round_trip_request(Request::Resize(WindowSize {
            rows: 50,
            cols: 132,
        }));
        round_trip_reply(Reply::Pong {
            version: VERSION.into(),
        });
        round_trip_reply(Reply::Started { pid: 42 });
        round_trip_reply(Reply::SpawnFailed(SpawnFailure {
            kind: FailureKind::NotFound,
            message: "nope: command not found".into(),
        }));
        for stream in [Stream::Stdout, Stream::Stderr, Stream::Pty] {
            round_trip_reply(Reply::Output {
                stream,
                data: b"hello".to_vec(),
            });
            round_trip_reply(Reply::Eof(stream));
        }
        round_trip_reply(Reply::Exited(Exit::Code(3)));
        round_trip_reply(Reply::Exited(Exit::Signal(9)));
        round_trip_reply(Reply::Refused("wrong agent token".into()));
    }

    #[test]
    fn an_in_place_output_frame_equals_an_encoded_one() {
        let data = b"in place";
        let mut buf = vec![0u8; Reply::output_prefix_len()];
        Reply::fill_output_prefix(Stream::Stderr, &mut buf, data.len());
        buf.extend_from_slice(data);
        let encoded = Reply::Output {
            stream: Stream::Stderr,
            data: data.to_vec(),
        }
        .encode();
        assert_eq!(buf, encoded);
    }

    #[test]
    fn clean_end_and_truncation_are_distinguished() {
        assert_eq!(Request::read(&mut &[][..]).unwrap(), None);
        let bytes = Request::Stdin(b"abcdef".to_vec()).encode();
        assert!(Request::read(&mut &bytes[..3]).is_err());
        assert!(Request::read(&mut &bytes[..7]).is_err());
    }

    #[test]
    fn oversize_and_unknown_frames_are_refused() {
        let mut huge = vec![kind::STDIN];
        huge.extend_from_slice(&((MAX_FRAME + 1) as u32).to_be_bytes());
        let e = Request::read(&mut &huge[..]).unwrap_err();
        assert!(e.to_string().contains("exceeds"), "{e}");
        let unknown = frame(77, &[]);
        assert!(Request::read(&mut &unknown[..]).is_err());
        assert!(Reply::read(&mut &frame(kind::EXITED, &[1])[..]).is_err());
    }
}
