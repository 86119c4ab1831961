//! The Exec stream against real processes, on every backend.

use std::time::Duration;

use cognition_proto::executor::v1 as pb;
use pb::exec_request::Msg as Req;
use pb::exec_response::Msg as Resp;

use crate::backend::{Backend, Executor, on_every_backend};
use crate::support::*;

on_every_backend!(
    echo_hi,
    exit_code_and_argv,
    stderr_is_separate_with_its_own_offsets,
    env_cwd_and_home,
    stdin_pipe_to_cat,
    stdin_hole_is_an_error_and_null_stdin_reads_eof,
    timeout_terms_then_kills_the_whole_group,
    timeout_with_term_only,
    spawn_failures_are_typed,
    client_signal_int,
    output_cap_keeps_head_gap_and_tail,
    repeated_start_attaches_instead_of_running_twice,
    attach_by_offset_after_a_disconnect,
    disconnect_kill_policy_kills_and_detach_keeps_running,
    fifty_concurrent_execs_in_one_sandbox,
    concurrency_cap_and_stream_errors,
    keepalive_after_silence,
    idle_notice_then_idle_timeout,
    unary_get_list_wait_signal,
    shutdown_ends_streams_and_kills_processes,
);

fn reason(e: &pb::ExecExited) -> pb::ExitReason {
    pb::ExitReason::try_from(e.reason).expect("reason")
}

fn failure(o: &Outcome) -> pb::SpawnFailure {
    let f = o
        .spawn_failed
        .as_ref()
        .unwrap_or_else(|| panic!("no spawn_failed: {:?}", o.messages));
    pb::SpawnFailure::try_from(f.reason).expect("failure reason")
}

async fn echo_hi(backend: Backend) {
    let s = Executor::start(backend).await;
    let sb = s.sandbox().await;
    let o = run(&s.client, shell(&sb.id, "e1", "echo hi")).await;
    let started = o.started.clone().expect("started");
    assert!(started.pid > 0);
    assert_eq!(started.exec_id, "e1");
    assert!(!started.attached);
    assert_eq!(o.stdout, b"hi\n");
    assert!(o.stderr.is_empty());
    let e = o.exited();
    assert_eq!(e.exit_code, Some(0));
    assert_eq!(e.signal, None);
    assert_eq!(reason(&e), pb::ExitReason::Exited);
    assert_eq!((e.stdout_bytes, e.stderr_bytes), (3, 0));
    assert!(matches!(o.messages.first(), Some(Resp::Started(_))));
    s.stop().await;
}

async fn exit_code_and_argv(backend: Backend) {
    let s = Executor::start(backend).await;
    let sb = s.sandbox().await;
    let o = run(&s.client, shell(&sb.id, "", "exit 3")).await;
    assert_eq!(o.exited().exit_code, Some(3));
    assert!(
        o.started.expect("started").exec_id.starts_with("exec-"),
        "generated exec id"
    );
    let o = run(
        &s.client,
        argv(&sb.id, "a", &["printf", "%s-%s", "a b", "c"]),
    )
    .await;
    assert_eq!(o.stdout_str(), "a b-c");
    s.stop().await;
}

async fn stderr_is_separate_with_its_own_offsets(backend: Backend) {
    let s = Executor::start(backend).await;
    let sb = s.sandbox().await;
    let o = run(
        &s.client,
        shell(
            &sb.id,
            "e",
            "echo out; echo err >&2; echo more >&2; echo out2",
        ),
    )
    .await;
    assert_eq!(o.stdout_str(), "out\nout2\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "err\nmore\n");
    let e = o.exited();
    assert_eq!((e.stdout_bytes, e.stderr_bytes), (9, 9));
    // Offsets were checked per stream while collecting; sequence numbers grow.
    let seqs: Vec<u64> = o.outputs.iter().map(|x| x.seq).collect();
    let mut sorted = seqs.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), seqs.len(), "unique seqs");
    let first_err = o
        .outputs
        .iter()
        .find(|x| x.stream == pb::OutputStream::Stderr as i32)
        .unwrap();
    assert_eq!(first_err.offset, 0);
    s.stop().await;
}

async fn env_cwd_and_home(backend: Backend) {
    let s = Executor::start(backend).await;
    let sb = s.sandbox().await;
    std::fs::create_dir_all(s.workspace(&sb).join("sub/dir")).unwrap();
    let mut start = shell(
        &sb.id,
        "e",
        "pwd; echo $HOME; echo $GREETING; echo ${CARGO_MANIFEST_DIR:-none}; echo $PATH",
    );
    start.cwd = "sub/dir".into();
    start.env.insert("GREETING".into(), "hello".into());
    let o = run(&s.client, start).await;
    let lines: Vec<String> = o.stdout_str().lines().map(str::to_owned).collect();
    assert_eq!(lines[0], format!("{}/sub/dir", s.process_workdir(&sb)));
    assert_eq!(lines[1], s.home(&sb), "HOME");
    assert_eq!(lines[2], "hello");
    assert!(
        std::env::var_os("CARGO_MANIFEST_DIR").is_some(),
        "the test process has it"
    );
    assert_eq!(
        lines[3], "none",
        "the executor's environment must not leak in"
    );
    assert_eq!(lines[4], s.path_var(), "PATH");
    assert_eq!(lines.len(), 5, "{lines:?}");
    // SIGPIPE has its default action in sandboxed processes (no "Broken pipe" errors).
    let o = run(&s.client, shell(&sb.id, "pipe", "yes | head -n 1")).await;
    assert_eq!(o.stdout_str(), "y\n");
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    s.stop().await;
}

async fn stdin_pipe_to_cat(backend: Backend) {
    let s = Executor::start(backend).await;
    let sb = s.sandbox().await;
    let mut start = argv(&sb.id, "cat", &["cat"]);
    start.stdin = pb::StdinMode::Pipe as i32;
    let stream = ExecStream::start(&s.client, start).await;
    stream
        .send(Req::Stdin(pb::StdinChunk {
            data: b"hello ".to_vec(),
            offset: 0,
        }))
        .await;
    // A resend after a reconnect: fully duplicate, then overlapping.
    stream
        .send(Req::Stdin(pb::StdinChunk {
            data: b"hello ".to_vec(),
            offset: 0,
        }))
        .await;
    stream
        .send(Req::Stdin(pb::StdinChunk {
            data: b"lo world".to_vec(),
            offset: 3,
        }))
        .await;
    stream.send(Req::StdinClose(pb::StdinClose {})).await;
    let o = stream.collect().await;
    assert_eq!(o.stdout_str(), "hello world");
    assert_eq!(o.exited().exit_code, Some(0));
    s.stop().await;
}

async fn stdin_hole_is_an_error_and_null_stdin_reads_eof(backend: Backend) {
    let s = Executor::start(backend).await;
    let sb = s.sandbox().await;
    let mut start = argv(&sb.id, "cat", &["cat"]);
    start.stdin = pb::StdinMode::Pipe as i32;
    let stream = ExecStream::start(&s.client, start).await;
    stream
        .send(Req::Stdin(pb::StdinChunk {
            data: b"x".to_vec(),
            offset: 5,
        }))
        .await;
    let status = stream.error_status().await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("hole"), "{}", status.message());
    // stdin NULL: cat sees end of file at once.
    let o = run(&s.client, argv(&sb.id, "cat2", &["cat"])).await;
    assert_eq!(o.exited().exit_code, Some(0));
    s.stop().await;
}

async fn timeout_terms_then_kills_the_whole_group(backend: Backend) {
    let s = Executor::start(backend).await;
    let sb = s.sandbox().await;
    let mut start = shell(&sb.id, "t", "trap '' TERM; sleep 1000 & echo $!; sleep 60");
    start.limits = Some(pb::ExecLimits {
        timeout_ms: 1000,
        kill_grace_ms: 300,
        ..Default::default()
    });
    let o = run(&s.client, start).await;
    let e = o.exited();
    assert_eq!(reason(&e), pb::ExitReason::Timeout);
    assert_eq!(e.signal, Some(9), "TERM is ignored, so KILL ends it: {e:?}");
    assert_eq!(e.exit_code, None);
    let grandchild: u32 = o.stdout_str().trim().parse().expect("background pid");
    let (ex, id) = (&s, sb.id.as_str());
    wait_until(
        "the background grandchild to die",
        Duration::from_secs(10),
        || async move { !ex.alive(id, grandchild).await },
    )
    .await;
    s.stop().await;
}

async fn timeout_with_term_only(backend: Backend) {
    let s = Executor::start(backend).await;
    let sb = s.sandbox().await;
    let mut start = argv(&sb.id, "t", &["sleep", "60"]);
    start.limits = Some(pb::ExecLimits {
        timeout_ms: 200,
        ..Default::default()
    });
    let e = run(&s.client, start).await.exited();
    assert_eq!(reason(&e), pb::ExitReason::Timeout);
    assert_eq!(e.signal, Some(15));
    s.stop().await;
}

async fn spawn_failures_are_typed(backend: Backend) {
    let s = Executor::start(backend).await;
    let sb = s.sandbox().await;
    // `host` is the workspace as this test sees it, `ws` as the sandbox's processes see it.
    let (host, ws) = (s.workspace(&sb), s.process_workdir(&sb));
    std::fs::write(host.join("noexec.sh"), "#!/bin/sh\necho no\n").unwrap();
    std::fs::create_dir_all(host.join("dir")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), host.join("outside")).unwrap();

    let o = run(
        &s.client,
        argv(&sb.id, "nf", &["definitely-not-a-command-xyz"]),
    )
    .await;
    assert_eq!(failure(&o), pb::SpawnFailure::NotFound);
    assert!(o.started.is_none(), "no started message for a failed spawn");
    assert!(
        o.spawn_failed
            .as_ref()
            .unwrap()
            .message
            .contains("definitely-not-a-command-xyz")
    );

    let o = run(&s.client, argv(&sb.id, "nf2", &["/no/such/path"])).await;
    assert_eq!(failure(&o), pb::SpawnFailure::NotFound);

    let o = run(&s.client, argv(&sb.id, "pd", &["./noexec.sh"])).await;
    assert_eq!(failure(&o), pb::SpawnFailure::PermissionDenied);
    let o = run(&s.client, argv(&sb.id, "pd2", &[&format!("{ws}/dir")])).await;
    assert_eq!(failure(&o), pb::SpawnFailure::PermissionDenied);
    let o = run(&s.client, argv(&sb.id, "pd3", &["/etc/passwd"])).await;
    assert_eq!(failure(&o), pb::SpawnFailure::PermissionDenied);

    for (id, cwd) in [
        ("c1", "missing"),
        ("c2", "../"),
        ("c3", "/etc"),
        ("c4", "outside"),
        ("c5", "noexec.sh"),
    ] {
        let mut start = argv(&sb.id, id, &["true"]);
        start.cwd = cwd.into();
        let o = run(&s.client, start).await;
        assert_eq!(failure(&o), pb::SpawnFailure::BadCwd, "cwd {cwd}");
    }
    // An absolute cwd is named as the executor reports the workspace; `pwd` answers as the
    // process sees it (the same path, but on the fake Kubernetes cluster).
    let mut start = argv(&sb.id, "c6", &["pwd"]);
    start.cwd = format!("{}/dir", sb.workdir);
    assert_eq!(
        run(&s.client, start).await.stdout_str().trim(),
        format!("{ws}/dir")
    );

    let o = run(&s.client, argv(&sb.id, "ia", &[])).await;
    assert_eq!(failure(&o), pb::SpawnFailure::InvalidArgument);
    let o = run(&s.client, argv(&sb.id, "ia2", &["echo", "a\0b"])).await;
    assert_eq!(failure(&o), pb::SpawnFailure::InvalidArgument);
    let mut start = shell(&sb.id, "ia3", "true");
    start.command = None;
    assert_eq!(
        failure(&run(&s.client, start).await),
        pb::SpawnFailure::InvalidArgument
    );
    let mut start = shell(&sb.id, "pty", "true");
    start.pty = Some(pb::PtySize { rows: 0, cols: 80 });
    let o = run(&s.client, start).await;
    assert_eq!(failure(&o), pb::SpawnFailure::InvalidArgument);
    assert!(o.spawn_failed.unwrap().message.contains("out of range"));

    // Failed execs are remembered: Get reports them.
    let info = s
        .client
        .clone()
        .get_exec(pb::GetExecRequest {
            sandbox_id: sb.id.clone(),
            exec_id: "nf".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .exec
        .unwrap();
    assert_eq!(info.state, pb::ExecState::SpawnFailed as i32);
    s.stop().await;
}

async fn client_signal_int(backend: Backend) {
    let s = Executor::start(backend).await;
    let sb = s.sandbox().await;
    let mut stream = ExecStream::start(&s.client, argv(&sb.id, "sig", &["sleep", "60"])).await;
    assert!(matches!(stream.next().await, Some(Resp::Started(_))));
    stream
        .send(Req::Signal(pb::ExecSignal {
            signal: pb::Signal::Int as i32,
            leader_only: false,
        }))
        .await;
    let e = stream.collect().await.exited();
    assert_eq!(e.signal, Some(2));
    assert_eq!(reason(&e), pb::ExitReason::ClientSignal);
    s.stop().await;
}

async fn output_cap_keeps_head_gap_and_tail(backend: Backend) {
    let s = Executor::start(backend).await;
    let sb = s.sandbox().await;
    let expected: String = (1..=1000).map(|i| format!("{i}\n")).collect();
    let mut start = shell(&sb.id, "cap", "seq 1 1000; echo small >&2");
    start.output = Some(pb::OutputPolicy {
        max_bytes_per_stream: 100,
        head_bytes: 40,
    });
    let o = run(&s.client, start).await;
    let total = expected.len() as u64;
    assert_eq!(o.gaps.len(), 1, "{:?}", o.gaps);
    let gap = &o.gaps[0];
    assert_eq!(gap.stream, pb::OutputStream::Stdout as i32);
    assert_eq!(gap.reason, pb::GapReason::Truncated as i32);
    assert_eq!((gap.offset, gap.length), (40, total - 100));
    let mut want = expected.as_bytes()[..40].to_vec();
    want.extend_from_slice(&expected.as_bytes()[(total - 60) as usize..]);
    assert_eq!(o.stdout, want);
    let tail_first = o
        .outputs
        .iter()
        .find(|x| x.stream == pb::OutputStream::Stdout as i32 && x.offset >= 40)
        .unwrap();
    assert_eq!(tail_first.offset, total - 60);
    assert_eq!(String::from_utf8_lossy(&o.stderr), "small\n");
    let e = o.exited();
    assert!(e.stdout_truncated);
    assert!(!e.stderr_truncated);
    assert_eq!(e.stdout_bytes, total);
    s.stop().await;
}

async fn repeated_start_attaches_instead_of_running_twice(backend: Backend) {
    let s = Executor::start(backend).await;
    let sb = s.sandbox().await;
    let script = "echo ran >> count.txt; echo hello; sleep 0.5; echo bye";
    let mut first = ExecStream::start(&s.client, shell(&sb.id, "once", script)).await;
    let Some(Resp::Started(started)) = first.next().await else {
        panic!("started")
    };
    // While it runs: same id and spec.
    let second = ExecStream::start(&s.client, shell(&sb.id, "once", script)).await;
    let (a, b) = tokio::join!(first.collect(), second.collect());
    let b_started = b.started.clone().unwrap();
    assert!(b_started.attached);
    assert_eq!(b_started.pid, started.pid);
    assert_eq!(a.stdout_str(), "hello\nbye\n");
    assert_eq!(b.stdout, a.stdout);
    assert_eq!(b.exited(), a.exited());
    // After it finished: same again.
    let c = run(&s.client, shell(&sb.id, "once", script)).await;
    assert!(c.started.as_ref().unwrap().attached);
    assert_eq!(c.stdout_str(), "hello\nbye\n");
    let count = std::fs::read_to_string(s.workspace(&sb).join("count.txt")).unwrap();
    assert_eq!(count, "ran\n", "the command ran exactly once");
    // Same id, other spec: refused.
    let err = ExecStream::open(&s.client, Req::Start(shell(&sb.id, "once", "echo other")))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    s.stop().await;
}

async fn attach_by_offset_after_a_disconnect(backend: Backend) {
    // The re-attach happens well within the 1 s grace; the process outlives the grace, so it
    // survives only if the re-attach cancelled the pending kill.
    let s = Executor::start_with(backend, |c| c.disconnect_grace_ms = 1000).await;
    let sb = s.sandbox().await;
    let script = "echo first; sleep 2; echo second; echo err >&2";
    let mut stream = ExecStream::start(&s.client, shell(&sb.id, "att", script)).await;
    let mut got = Outcome::default();
    while got.stdout.len() < 6 {
        got.push(stream.next().await.expect("message"));
    }
    assert_eq!(got.stdout, b"first\n");
    drop(stream); // disconnect
    // Let the server see the disconnect before the re-attach (ordering, not a timing check).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let attach = pb::ExecAttach {
        sandbox_id: sb.id.clone(),
        exec_id: "att".into(),
        stdout_offset: 6,
        stderr_offset: 0,
        pty_offset: 0,
    };
    let o = ExecStream::open(&s.client, Req::Attach(attach))
        .await
        .unwrap()
        .collect_from([6, 0, 0])
        .await;
    let started = o.started.clone().unwrap();
    assert!(started.attached);
    let first_out = o
        .outputs
        .iter()
        .find(|x| x.stream == pb::OutputStream::Stdout as i32)
        .unwrap();
    assert_eq!(first_out.offset, 6);
    assert_eq!(String::from_utf8_lossy(&first_out.data), "second\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "err\n");
    let e = o.exited();
    assert_eq!(
        reason(&e),
        pb::ExitReason::Exited,
        "re-attached within the grace: not killed"
    );
    assert_eq!(e.exit_code, Some(0));

    // Attaching to a finished exec replays everything after the offsets.
    let attach = pb::ExecAttach {
        sandbox_id: sb.id.clone(),
        exec_id: "att".into(),
        stdout_offset: 0,
        ..Default::default()
    };
    let o = ExecStream::open(&s.client, Req::Attach(attach))
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(o.stdout_str(), "first\nsecond\n");
    s.stop().await;
}

async fn disconnect_kill_policy_kills_and_detach_keeps_running(backend: Backend) {
    let s = Executor::start(backend).await; // disconnect grace 300 ms
    let sb = s.sandbox().await;
    let mut client = s.client.clone();

    let mut stream = ExecStream::start(&s.client, argv(&sb.id, "k", &["sleep", "60"])).await;
    assert!(matches!(stream.next().await, Some(Resp::Started(_))));
    drop(stream);
    let waited = client
        .wait_exec(pb::WaitExecRequest {
            sandbox_id: sb.id.clone(),
            exec_id: "k".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .exec
        .unwrap();
    let e = waited.exited.unwrap();
    assert_eq!(reason(&e), pb::ExitReason::ClientDisconnected);
    assert!(e.signal.is_some());

    let mut start = shell(&sb.id, "d", "sleep 1; echo done");
    start.on_disconnect = pb::DisconnectPolicy::Detach as i32;
    let mut stream = ExecStream::start(&s.client, start).await;
    assert!(matches!(stream.next().await, Some(Resp::Started(_))));
    drop(stream);
    let waited = client
        .wait_exec(pb::WaitExecRequest {
            sandbox_id: sb.id.clone(),
            exec_id: "d".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .exec
        .unwrap();
    let e = waited.exited.unwrap();
    assert_eq!(reason(&e), pb::ExitReason::Exited);
    assert_eq!(e.exit_code, Some(0));
    assert_eq!(e.stdout_bytes, 5);

    // An explicit detach keeps a KILL-policy exec running too.
    let mut stream = ExecStream::start(&s.client, shell(&sb.id, "dx", "sleep 1; echo done")).await;
    assert!(matches!(stream.next().await, Some(Resp::Started(_))));
    stream.send(Req::Detach(pb::Detach {})).await;
    assert!(stream.next().await.is_none(), "detach ends the stream");
    let waited = client
        .wait_exec(pb::WaitExecRequest {
            sandbox_id: sb.id.clone(),
            exec_id: "dx".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .exec
        .unwrap();
    assert_eq!(reason(&waited.exited.unwrap()), pb::ExitReason::Exited);
    s.stop().await;
}

async fn fifty_concurrent_execs_in_one_sandbox(backend: Backend) {
    let s = Executor::start(backend).await;
    let sb = s.sandbox().await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let client = s.client.clone();
        let id = sb.id.clone();
        tasks.push(tokio::spawn(async move {
            let o = run(
                &client,
                shell(&id, &format!("c{i}"), &format!("echo {i}; sleep 0.2")),
            )
            .await;
            (i, o)
        }));
    }
    for t in tasks {
        let (i, o) = t.await.unwrap();
        assert_eq!(o.stdout_str(), format!("{i}\n"));
        assert_eq!(o.exited().exit_code, Some(0));
    }
    s.stop().await;
}

async fn concurrency_cap_and_stream_errors(backend: Backend) {
    let s = Executor::start_with(backend, |c| c.max_concurrent_execs = 2).await;
    let sb = s.sandbox().await;
    let mut a = ExecStream::start(&s.client, argv(&sb.id, "a", &["sleep", "60"])).await;
    let mut b = ExecStream::start(&s.client, argv(&sb.id, "b", &["sleep", "60"])).await;
    assert!(matches!(a.next().await, Some(Resp::Started(_))));
    assert!(matches!(b.next().await, Some(Resp::Started(_))));
    let err = ExecStream::open(&s.client, Req::Start(argv(&sb.id, "c", &["true"])))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);

    let err = ExecStream::open(
        &s.client,
        Req::Start(argv("no-such-sandbox", "x", &["true"])),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = ExecStream::open(&s.client, Req::StdinClose(pb::StdinClose {}))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let attach = pb::ExecAttach {
        sandbox_id: sb.id.clone(),
        exec_id: "nope".into(),
        ..Default::default()
    };
    let err = ExecStream::open(&s.client, Req::Attach(attach))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = ExecStream::open(&s.client, Req::Start(argv("bad/id", "x", &["true"])))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    for stream in [&a, &b] {
        stream
            .send(Req::Signal(pb::ExecSignal {
                signal: pb::Signal::Kill as i32,
                leader_only: false,
            }))
            .await;
    }
    assert_eq!(a.collect().await.exited().signal, Some(9));
    s.stop().await;
}

async fn keepalive_after_silence(backend: Backend) {
    let s = Executor::start_with(backend, |c| c.keepalive_ms = 50).await;
    let sb = s.sandbox().await;
    let o = run(&s.client, shell(&sb.id, "ka", "sleep 0.5; echo done")).await;
    assert!(o.keepalives >= 1, "{:?}", o.messages);
    assert_eq!(o.stdout_str(), "done\n");
    s.stop().await;
}

async fn idle_notice_then_idle_timeout(backend: Backend) {
    let s = Executor::start(backend).await;
    let sb = s.sandbox().await;
    let mut start = shell(&sb.id, "idle", "echo x; sleep 60");
    start.limits = Some(pb::ExecLimits {
        idle_notice_ms: 100,
        idle_timeout_ms: 600,
        ..Default::default()
    });
    let o = run(&s.client, start).await;
    assert!(o.idles >= 1, "{:?}", o.messages);
    assert_eq!(reason(&o.exited()), pb::ExitReason::IdleTimeout);
    s.stop().await;
}

async fn unary_get_list_wait_signal(backend: Backend) {
    let s = Executor::start(backend).await;
    let sb = s.sandbox().await;
    let mut client = s.client.clone();
    let mut start = argv(&sb.id, "long", &["sleep", "60"]);
    start.labels.insert("tool".into(), "bash".into());
    let mut stream = ExecStream::start(&s.client, start).await;
    let Some(Resp::Started(started)) = stream.next().await else {
        panic!("started")
    };
    let ids = |sb: &str, e: &str| (sb.to_string(), e.to_string());
    let (sid, eid) = ids(&sb.id, "long");

    let info = client
        .get_exec(pb::GetExecRequest {
            sandbox_id: sid.clone(),
            exec_id: eid.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .exec
        .unwrap();
    assert_eq!(info.state, pb::ExecState::Running as i32);
    assert_eq!(info.pid, started.pid);
    assert_eq!(info.labels.get("tool").map(String::as_str), Some("bash"));
    assert!(info.exited.is_none());

    let running = client
        .list_execs(pb::ListExecsRequest {
            sandbox_id: sid.clone(),
            include_finished: false,
        })
        .await
        .unwrap()
        .into_inner()
        .execs;
    assert_eq!(
        running
            .iter()
            .map(|e| e.exec_id.as_str())
            .collect::<Vec<_>>(),
        vec!["long"]
    );

    let waiter = {
        let mut c = client.clone();
        let (sid, eid) = (sid.clone(), eid.clone());
        tokio::spawn(async move {
            c.wait_exec(pb::WaitExecRequest {
                sandbox_id: sid,
                exec_id: eid,
            })
            .await
        })
    };
    client
        .signal_exec(pb::SignalExecRequest {
            sandbox_id: sid.clone(),
            exec_id: eid.clone(),
            signal: pb::Signal::Term as i32,
            leader_only: false,
        })
        .await
        .unwrap();
    let waited = waiter.await.unwrap().unwrap().into_inner().exec.unwrap();
    assert_eq!(waited.state, pb::ExecState::Exited as i32);
    let e = waited.exited.unwrap();
    assert_eq!(e.signal, Some(15));
    assert_eq!(reason(&e), pb::ExitReason::ClientSignal);
    let streamed = stream.collect().await.exited();
    assert_eq!(streamed, e);

    let running = client
        .list_execs(pb::ListExecsRequest {
            sandbox_id: sid.clone(),
            include_finished: false,
        })
        .await
        .unwrap()
        .into_inner()
        .execs;
    assert!(running.is_empty());
    let all = client
        .list_execs(pb::ListExecsRequest {
            sandbox_id: sid.clone(),
            include_finished: true,
        })
        .await
        .unwrap()
        .into_inner()
        .execs;
    assert_eq!(all.len(), 1);

    let err = client
        .get_exec(pb::GetExecRequest {
            sandbox_id: sid.clone(),
            exec_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = client
        .signal_exec(pb::SignalExecRequest {
            sandbox_id: sid.clone(),
            exec_id: eid.clone(),
            signal: 0,
            leader_only: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    s.stop().await;
}

async fn shutdown_ends_streams_and_kills_processes(backend: Backend) {
    let mut s = Executor::start(backend).await;
    let sb = s.sandbox().await;
    let mut stream = ExecStream::start(&s.client, argv(&sb.id, "long", &["sleep", "60"])).await;
    let Some(Resp::Started(started)) = stream.next().await else {
        panic!("started")
    };
    let pid = started.pid;
    // A second executor on the same data directory (it re-adopts the sandbox) watches from
    // inside the sandbox, where the pid means something on every backend.
    let next = s.second().await;
    let o = run(
        &next.client,
        argv(&sb.id, "", &["cat", &format!("/proc/{pid}/stat")]),
    )
    .await;
    assert!(
        stat_alive(&o.stdout_str()),
        "running before the shutdown: {o:?}"
    );
    let reader = tokio::spawn(async move {
        loop {
            match stream.rx.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status.code()),
            }
        }
    });
    s.hand_over(next).await; // the first executor shuts down
    let ended = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("stream ended")
        .unwrap();
    assert!(
        matches!(ended, Some(tonic::Code::Unavailable) | None),
        "{ended:?}"
    );
    let (ex, id) = (&s, sb.id.as_str());
    wait_until(
        "the process to be killed",
        Duration::from_secs(10),
        || async move { !ex.alive(id, pid).await },
    )
    .await;
    s.stop().await;
}
