//! Processes on a pseudo-terminal (`ExecStart.pty`), on every backend: the terminal is the
//! process's controlling terminal of the requested size, output comes only on the `pty` stream,
//! stdin writes are typed on the terminal, resizes reach the foreground group, ^C interrupts the
//! foreground job, and attach resumes by `pty_offset`.

use std::time::Duration;

use cognition_proto::executor::v1 as pb;
use pb::exec_request::Msg as Req;
use pb::exec_response::Msg as Resp;

use crate::backend::{Backend, Executor, on_every_backend};
use crate::support::*;

on_every_backend!(
    a_pty_is_the_controlling_terminal_of_the_requested_size,
    resize_changes_the_size_and_signals_the_foreground_group,
    ctrl_c_interrupts_the_foreground_job_not_the_shell,
    attach_resumes_pty_output_by_offset,
    bad_sizes_and_resizes_are_invalid_arguments,
);

/// The prompt of the interactive shells below (set through `PS1`), to know when they wait for
/// input.
const PROMPT: &str = "pty-test> ";

fn sized(mut start: pb::ExecStart, rows: u32, cols: u32) -> pb::ExecStart {
    start.pty = Some(pb::PtySize { rows, cols });
    start
}

/// An interactive `sh` on a 24x80 terminal.
fn interactive_shell(sandbox: &str, exec_id: &str) -> pb::ExecStart {
    let mut start = sized(argv(sandbox, exec_id, &["sh"]), 24, 80);
    start.env.insert("PS1".into(), PROMPT.into());
    start
}

/// An exec on a pty driven like a terminal: typed input, and the output read so far.
struct Terminal {
    stream: ExecStream,
    out: Outcome,
    /// Bytes typed so far (the next stdin offset).
    typed: u64,
    /// Output bytes already matched by [`Terminal::read_until`].
    seen: usize,
    pid: u32,
}

impl Terminal {
    async fn open(client: &Client, start: pb::ExecStart) -> Self {
        let mut stream = ExecStream::start(client, start).await;
        let mut out = Outcome::default();
        let first = stream.next().await.expect("a first message");
        let Resp::Started(started) = &first else {
            panic!("expected started, got {first:?}")
        };
        let pid = started.pid;
        out.push(first);
        Self {
            stream,
            out,
            typed: 0,
            seen: 0,
            pid,
        }
    }

    async fn type_bytes(&mut self, data: &[u8]) {
        self.stream
            .send(Req::Stdin(pb::StdinChunk {
                data: data.to_vec(),
                offset: self.typed,
            }))
            .await;
        self.typed += data.len() as u64;
    }

    async fn resize(&self, rows: u32, cols: u32) {
        self.stream
            .send(Req::Resize(pb::PtyResize {
                size: Some(pb::PtySize { rows, cols }),
            }))
            .await;
    }

    /// Reads until `needle` appears after the previous match; returns the output up to its end.
    async fn read_until(&mut self, needle: &str) -> String {
        let needle = needle.as_bytes();
        loop {
            let fresh = &self.out.pty[self.seen..];
            if let Some(at) = fresh.windows(needle.len()).position(|w| w == needle) {
                let upto = String::from_utf8_lossy(&fresh[..at + needle.len()]).into_owned();
                self.seen += at + needle.len();
                return upto;
            }
            let msg = self.stream.next().await.unwrap_or_else(|| {
                panic!(
                    "the exec ended before {:?} appeared; output: {:?}",
                    String::from_utf8_lossy(needle),
                    self.out.pty_str()
                )
            });
            self.out.push(msg);
        }
    }

    /// Reads until the exec's stream ends.
    async fn finish(mut self) -> Outcome {
        while let Some(msg) = self.stream.next().await {
            self.out.push(msg);
        }
        self.out
    }
}

/// The names (`comm`) of the children of `ppid`, read from `/proc` inside the sandbox.
async fn children(s: &Executor, sandbox: &str, ppid: u32) -> String {
    let script = format!(
        "for f in $(grep -ls '^PPid:[[:space:]]*{ppid}$' /proc/[0-9]*/status); do \
         cat \"${{f%/status}}/comm\"; done; true"
    );
    run(&s.client, shell(sandbox, "", &script))
        .await
        .stdout_str()
}

async fn a_pty_is_the_controlling_terminal_of_the_requested_size(backend: Backend) {
    let s = Executor::start(backend).await;
    let sb = s.sandbox().await;
    let script = "tty; stty size; echo out; echo err >&2; exit 7";
    let o = run(&s.client, sized(shell(&sb.id, "tty", script), 33, 101)).await;
    let text = o.pty_str();
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert!(lines[0].starts_with("/dev/pts/"), "tty: {text:?}");
    assert_eq!(
        lines[1..],
        ["33 101", "out", "err", ""],
        "stdout and stderr merge, in order, on the terminal: {text:?}"
    );
    assert!(
        o.outputs
            .iter()
            .all(|x| x.stream == pb::OutputStream::Pty as i32),
        "output only on the pty stream: {:?}",
        o.outputs
    );
    assert!(o.stdout.is_empty() && o.stderr.is_empty());
    assert!(o.gaps.is_empty(), "{:?}", o.gaps);
    let e = o.exited();
    assert_eq!(e.exit_code, Some(7));
    assert_eq!(
        pb::ExitReason::try_from(e.reason),
        Ok(pb::ExitReason::Exited)
    );
    assert_eq!(
        (e.stdout_bytes, e.stderr_bytes),
        (o.pty.len() as u64, 0),
        "stdout_bytes counts the pty bytes"
    );

    // The same command without a pty has no terminal.
    let o = run(&s.client, shell(&sb.id, "notty", "tty")).await;
    assert_eq!(o.exited().exit_code, Some(1), "{o:?}");
    assert_eq!(o.stdout_str(), "not a tty\n");
    assert!(o.pty.is_empty());
    s.stop().await;
}

async fn resize_changes_the_size_and_signals_the_foreground_group(backend: Backend) {
    let s = Executor::start(backend).await;
    let sb = s.sandbox().await;

    // stdin is the terminal even though the stdin mode is not PIPE.
    let mut t = Terminal::open(&s.client, interactive_shell(&sb.id, "sh")).await;
    t.read_until(PROMPT).await;
    t.type_bytes(b"stty size\n").await;
    t.read_until("\r\n24 80\r\n").await;
    t.read_until(PROMPT).await;
    t.resize(40, 120).await;
    t.type_bytes(b"stty size\n").await;
    t.read_until("\r\n40 120\r\n").await;
    t.read_until(PROMPT).await;
    t.type_bytes(b"exit\n").await;
    let o = t.finish().await;
    assert_eq!(o.exited().exit_code, Some(0), "{:?}", o.pty_str());

    // The resize sends SIGWINCH to the foreground group (here the shell and its `sleep`).
    let script = "trap 'stty size; exit 5' WINCH; echo ready; while :; do sleep 0.05; done";
    let mut t = Terminal::open(&s.client, sized(shell(&sb.id, "winch", script), 24, 80)).await;
    t.read_until("ready\r\n").await;
    t.resize(50, 132).await;
    let o = t.finish().await;
    assert_eq!(
        o.exited().exit_code,
        Some(5),
        "the WINCH trap ran: {:?}",
        o.pty_str()
    );
    assert!(
        o.pty_str().ends_with("ready\r\n50 132\r\n"),
        "{:?}",
        o.pty_str()
    );
    s.stop().await;
}

async fn ctrl_c_interrupts_the_foreground_job_not_the_shell(backend: Backend) {
    let s = Executor::start(backend).await;
    let sb = s.sandbox().await;
    let mut t = Terminal::open(&s.client, interactive_shell(&sb.id, "sh")).await;
    t.read_until(PROMPT).await;
    t.type_bytes(b"sleep 30\n").await;
    // ^C must reach the terminal while `sleep` is the foreground job, not before.
    let (ex, id, shell_pid) = (&s, sb.id.as_str(), t.pid);
    wait_until(
        "`sleep 30` to run under the shell",
        Duration::from_secs(10),
        || async move { children(ex, id, shell_pid).await.contains("sleep") },
    )
    .await;
    t.type_bytes(&[0x03]).await;
    t.read_until(PROMPT).await;
    t.type_bytes(b"echo back $?\n").await;
    t.read_until("back 130\r\n").await;
    assert!(
        !children(&s, &sb.id, shell_pid).await.contains("sleep"),
        "the sleep is gone"
    );
    t.type_bytes(b"exit\n").await;
    let o = t.finish().await;
    let e = o.exited();
    assert_eq!(
        (e.exit_code, pb::ExitReason::try_from(e.reason)),
        (Some(0), Ok(pb::ExitReason::Exited)),
        "the shell survived the ^C: {:?}",
        o.pty_str()
    );
    assert!(e.wall_time_ms < 25_000, "^C ended the sleep early: {e:?}");
    s.stop().await;
}

async fn attach_resumes_pty_output_by_offset(backend: Backend) {
    let s = Executor::start(backend).await;
    let sb = s.sandbox().await;
    let mut start = sized(
        shell(&sb.id, "att", "echo first; sleep 1; echo second"),
        24,
        80,
    );
    start.on_disconnect = pb::DisconnectPolicy::Detach as i32;
    let mut stream = ExecStream::start(&s.client, start).await;
    let mut got = Outcome::default();
    while got.pty.len() < 7 {
        got.push(stream.next().await.expect("message"));
    }
    assert_eq!(got.pty_str(), "first\r\n");
    drop(stream); // disconnect

    let attach = |pty_offset| pb::ExecAttach {
        sandbox_id: sb.id.clone(),
        exec_id: "att".into(),
        pty_offset,
        ..Default::default()
    };
    let o = ExecStream::open(&s.client, Req::Attach(attach(7)))
        .await
        .expect("attach")
        .collect_from([0, 0, 7])
        .await;
    assert!(o.started.as_ref().expect("started").attached);
    let first = o.outputs.first().expect("output after the offset");
    assert_eq!(
        (first.stream, first.offset),
        (pb::OutputStream::Pty as i32, 7)
    );
    assert_eq!(o.pty_str(), "second\r\n");
    let e = o.exited();
    assert_eq!(e.exit_code, Some(0));
    assert_eq!(e.stdout_bytes, 15);

    // After the exit, an attach from 0 replays the whole terminal output.
    let o = ExecStream::open(&s.client, Req::Attach(attach(0)))
        .await
        .expect("attach")
        .collect()
        .await;
    assert_eq!(o.pty_str(), "first\r\nsecond\r\n");
    s.stop().await;
}

async fn bad_sizes_and_resizes_are_invalid_arguments(backend: Backend) {
    let s = Executor::start(backend).await;
    let sb = s.sandbox().await;
    for (id, rows, cols) in [("r0", 0, 80), ("c0", 24, 0), ("big", 70_000, 80)] {
        let o = run(&s.client, sized(shell(&sb.id, id, "true"), rows, cols)).await;
        let f = o
            .spawn_failed
            .as_ref()
            .unwrap_or_else(|| panic!("{rows}x{cols}: no spawn_failed: {:?}", o.messages));
        assert_eq!(
            pb::SpawnFailure::try_from(f.reason),
            Ok(pb::SpawnFailure::InvalidArgument),
            "{rows}x{cols}: {f:?}"
        );
        assert!(f.message.contains("out of range"), "{f:?}");
        assert!(o.started.is_none());
    }

    // A resize on an exec without a pty is refused with INVALID_ARGUMENT.
    let mut stream = ExecStream::start(&s.client, argv(&sb.id, "plain", &["sleep", "60"])).await;
    assert!(matches!(stream.next().await, Some(Resp::Started(_))));
    stream
        .send(Req::Resize(pb::PtyResize {
            size: Some(pb::PtySize { rows: 24, cols: 80 }),
        }))
        .await;
    let status = stream.error_status().await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("no pty"), "{status:?}");

    // So is a resize of a pty to an out-of-range size.
    let mut stream = ExecStream::start(
        &s.client,
        sized(argv(&sb.id, "tty", &["sleep", "60"]), 24, 80),
    )
    .await;
    assert!(matches!(stream.next().await, Some(Resp::Started(_))));
    stream
        .send(Req::Resize(pb::PtyResize {
            size: Some(pb::PtySize { rows: 0, cols: 80 }),
        }))
        .await;
    let status = stream.error_status().await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("out of range"), "{status:?}");
    s.stop().await;
}
