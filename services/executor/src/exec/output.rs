//! The bounded output log of one exec: what readers stream live and what a re-attach replays.
//!
//! Each stream keeps at most `head + tail` bytes:
//!
//! * the **head** (the first `head` bytes) is delivered live and kept for replay;
//! * bytes after the head go to a **tail ring** of `tail` bytes (older bytes are evicted) and are
//!   delivered when the stream ends, because only then is it known which bytes are the tail;
//! * a reader that reaches evicted bytes gets one explicit gap (`TRUNCATED`) with their offset
//!   and length, then the tail. Offsets are always true byte offsets of the original stream.
//!
//! So a command whose output fits the head streams entirely live, memory per exec is bounded,
//! and a slow reader never blocks the process. Chunks carry a global sequence number (arrival
//! order across both streams), the same on every replay.

use std::collections::VecDeque;

use bytes::Bytes;

use super::spec::StreamKind;

/// One piece of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub stream: StreamKind,
    pub offset: u64,
    pub seq: u64,
    pub data: Bytes,
}

impl Chunk {
    fn end(&self) -> u64 {
        self.offset + self.data.len() as u64
    }
}

/// What a reader gets from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogItem {
    Output(Chunk),
    /// Bytes `offset..offset+length` of `stream` were dropped by the cap.
    Gap {
        stream: StreamKind,
        offset: u64,
        length: u64,
    },
}

#[derive(Debug, Default)]
struct Tail {
    chunks: VecDeque<Chunk>,
    bytes: u64,
}

/// The output of one exec (both streams).
#[derive(Debug)]
pub struct OutputLog {
    head_limit: u64,
    tail_limit: u64,
    /// Head chunks of both streams, in arrival order.
    head: Vec<Chunk>,
    tails: [Tail; 2],
    totals: [u64; 2],
    eof: [bool; 2],
    next_seq: u64,
    head_bytes: u64,
}

/// A reader's position in the log.
#[derive(Debug, Clone)]
pub struct LogCursor {
    head_index: usize,
    /// Next byte wanted, per stream.
    pos: [u64; 2],
    tail_done: [bool; 2],
}

impl LogCursor {
    /// Starts after `offsets` bytes of stdout and stderr.
    pub fn new(offsets: [u64; 2]) -> Self {
        Self {
            head_index: 0,
            pos: offsets,
            tail_done: [false; 2],
        }
    }
}

impl OutputLog {
    pub fn new(head_limit: u64, tail_limit: u64) -> Self {
        Self {
            head_limit,
            tail_limit,
            head: Vec::new(),
            tails: [Tail::default(), Tail::default()],
            totals: [0; 2],
            eof: [false; 2],
            next_seq: 0,
            head_bytes: 0,
        }
    }

    /// Bytes held in memory (head plus tails).
    pub fn retained_bytes(&self) -> u64 {
        self.head_bytes + self.tails[0].bytes + self.tails[1].bytes
    }

    /// Bytes produced so far on `stream`.
    pub fn total(&self, stream: StreamKind) -> u64 {
        self.totals[stream.index()]
    }

    /// Whether `stream` produced more than the cap.
    pub fn truncated(&self, stream: StreamKind) -> bool {
        self.totals[stream.index()] > self.head_limit + self.tail_limit
    }

    pub fn is_closed(&self, stream: StreamKind) -> bool {
        self.eof[stream.index()]
    }

    fn seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Appends bytes read from `stream`.
    pub fn append(&mut self, stream: StreamKind, mut data: Bytes) {
        let s = stream.index();
        if data.is_empty() || self.eof[s] {
            return;
        }
        let start = self.totals[s];
        self.totals[s] += data.len() as u64;
        if start < self.head_limit {
            let n = ((self.head_limit - start) as usize).min(data.len());
            let head = data.split_to(n);
            self.head_bytes += n as u64;
            let seq = self.seq();
            self.head.push(Chunk {
                stream,
                offset: start,
                seq,
                data: head,
            });
            if data.is_empty() {
                return;
            }
        }
        if self.tail_limit == 0 {
            return;
        }
        let offset = self.totals[s] - data.len() as u64;
        let seq = self.seq();
        let tail = &mut self.tails[s];
        tail.bytes += data.len() as u64;
        tail.chunks.push_back(Chunk {
            stream,
            offset,
            seq,
            data,
        });
        while tail.bytes > self.tail_limit {
            let excess = tail.bytes - self.tail_limit;
            let Some(front) = tail.chunks.front_mut() else {
                break;
            };
            let len = front.data.len() as u64;
            if len <= excess {
                tail.bytes -= len;
                tail.chunks.pop_front();
            } else {
                front.data = front.data.slice(excess as usize..);
                front.offset += excess;
                tail.bytes -= excess;
            }
        }
    }

    /// Marks `stream` as ended (its tail becomes readable).
    pub fn close(&mut self, stream: StreamKind) {
        self.eof[stream.index()] = true;
    }

    /// Moves `cursor` forward, pushing up to about `max` items; returns true once everything of
    /// both streams has been read (both ended and drained).
    pub fn read(&self, cursor: &mut LogCursor, out: &mut VecDeque<LogItem>, max: usize) -> bool {
        let mut n = 0;
        while cursor.head_index < self.head.len() {
            if n >= max {
                return false;
            }
            let chunk = &self.head[cursor.head_index];
            cursor.head_index += 1;
            if emit(chunk, &mut cursor.pos, out) {
                n += 1;
            }
        }
        for stream in StreamKind::ALL {
            let s = stream.index();
            if cursor.tail_done[s] || !self.eof[s] {
                continue;
            }
            let tail = &self.tails[s];
            let ring_start = tail.chunks.front().map_or(self.totals[s], |c| c.offset);
            if cursor.pos[s] < ring_start {
                out.push_back(LogItem::Gap {
                    stream,
                    offset: cursor.pos[s],
                    length: ring_start - cursor.pos[s],
                });
                cursor.pos[s] = ring_start;
            }
            for chunk in &tail.chunks {
                emit(chunk, &mut cursor.pos, out);
            }
            cursor.tail_done[s] = true;
        }
        cursor.tail_done.iter().all(|d| *d)
    }
}

/// Pushes the part of `chunk` after the reader's position; returns whether anything was pushed.
fn emit(chunk: &Chunk, pos: &mut [u64; 2], out: &mut VecDeque<LogItem>) -> bool {
    let s = chunk.stream.index();
    if chunk.end() <= pos[s] {
        return false;
    }
    let skip = pos[s].saturating_sub(chunk.offset);
    let mut c = chunk.clone();
    if skip > 0 {
        c.data = c.data.slice(skip as usize..);
        c.offset += skip;
    }
    pos[s] = chunk.end();
    out.push_back(LogItem::Output(c));
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use StreamKind::*;

    /// Reassembles what a reader sees for one stream: (bytes, gaps).
    fn drain(log: &OutputLog, cursor: &mut LogCursor) -> (Vec<LogItem>, bool) {
        let mut out = VecDeque::new();
        let done = log.read(cursor, &mut out, usize::MAX);
        (out.into_iter().collect(), done)
    }

    fn bytes_of(items: &[LogItem], stream: StreamKind) -> Vec<u8> {
        items
            .iter()
            .filter_map(|i| match i {
                LogItem::Output(c) if c.stream == stream => Some(c.data.to_vec()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn small_output_streams_live_and_completes_on_close() {
        let mut log = OutputLog::new(50, 50);
        log.append(Stdout, Bytes::from_static(b"hi\n"));
        log.append(Stderr, Bytes::from_static(b"err"));
        let mut c = LogCursor::new([0, 0]);
        let (items, done) = drain(&log, &mut c);
        assert!(!done);
        assert_eq!(bytes_of(&items, Stdout), b"hi\n");
        assert_eq!(bytes_of(&items, Stderr), b"err");
        log.close(Stdout);
        log.close(Stderr);
        let (items, done) = drain(&log, &mut c);
        assert!(done);
        assert!(items.is_empty());
        assert!(!log.truncated(Stdout));
    }

    #[test]
    fn head_gap_tail_with_true_offsets() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let mut log = OutputLog::new(40, 60);
        for piece in data.chunks(7) {
            log.append(Stdout, Bytes::copy_from_slice(piece));
        }
        let mut c = LogCursor::new([0, 0]);
        let (live, _) = drain(&log, &mut c);
        assert_eq!(
            bytes_of(&live, Stdout),
            &data[..40],
            "only the head is live"
        );
        log.close(Stdout);
        log.close(Stderr);
        let (rest, done) = drain(&log, &mut c);
        assert!(done);
        assert_eq!(
            rest[0],
            LogItem::Gap {
                stream: Stdout,
                offset: 40,
                length: 900
            }
        );
        assert_eq!(bytes_of(&rest, Stdout), &data[940..]);
        let LogItem::Output(first_tail) = &rest[1] else {
            panic!("expected output")
        };
        assert_eq!(first_tail.offset, 940);
        assert!(log.truncated(Stdout));
        assert_eq!(log.total(Stdout), 1000);
        assert_eq!(log.retained_bytes(), 100);
    }

    #[test]
    fn replay_from_offsets() {
        let mut log = OutputLog::new(100, 100);
        log.append(Stdout, Bytes::from_static(b"hello "));
        log.append(Stderr, Bytes::from_static(b"E1"));
        log.append(Stdout, Bytes::from_static(b"world"));
        log.close(Stdout);
        log.close(Stderr);
        let mut c = LogCursor::new([3, 2]);
        let (items, done) = drain(&log, &mut c);
        assert!(done);
        assert_eq!(bytes_of(&items, Stdout), b"lo world");
        assert_eq!(bytes_of(&items, Stderr), b"");
        let LogItem::Output(first) = &items[0] else {
            panic!()
        };
        assert_eq!((first.offset, first.seq), (3, 0));
    }

    #[test]
    fn sequence_numbers_follow_arrival_order() {
        let mut log = OutputLog::new(100, 0);
        log.append(Stdout, Bytes::from_static(b"a"));
        log.append(Stderr, Bytes::from_static(b"b"));
        log.append(Stdout, Bytes::from_static(b"c"));
        let mut c = LogCursor::new([0, 0]);
        let (items, _) = drain(&log, &mut c);
        let seqs: Vec<u64> = items
            .iter()
            .map(|i| match i {
                LogItem::Output(c) => c.seq,
                _ => u64::MAX,
            })
            .collect();
        assert_eq!(seqs, vec![0, 1, 2]);
    }

    #[test]
    fn batches_respect_max() {
        let mut log = OutputLog::new(100, 0);
        for _ in 0..10 {
            log.append(Stdout, Bytes::from_static(b"x"));
        }
        let mut c = LogCursor::new([0, 0]);
        let mut out = VecDeque::new();
        assert!(!log.read(&mut c, &mut out, 4));
        assert_eq!(out.len(), 4);
        log.read(&mut c, &mut out, 100);
        assert_eq!(out.len(), 10);
    }

    #[test]
    fn tail_only_cap() {
        let mut log = OutputLog::new(0, 4);
        log.append(Stdout, Bytes::from_static(b"abcdefgh"));
        log.close(Stdout);
        log.close(Stderr);
        let mut c = LogCursor::new([0, 0]);
        let (items, _) = drain(&log, &mut c);
        assert_eq!(
            items[0],
            LogItem::Gap {
                stream: Stdout,
                offset: 0,
                length: 4
            }
        );
        assert_eq!(bytes_of(&items, Stdout), b"efgh");
    }
}
