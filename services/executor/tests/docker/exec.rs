//! The Exec path on a Docker sandbox: output, exit codes, typed spawn failures, timeouts.

use std::time::{Duration, Instant};

use cognition_proto::executor::v1 as pb;

use crate::harness::DockerTest;
use crate::support::*;

fn reason(e: &pb::ExecExited) -> pb::ExitReason {
    pb::ExitReason::try_from(e.reason).expect("reason")
}

#[tokio::test]
async fn echo_exit_codes_stderr_and_spawn_failures() {
    let Some(t) = DockerTest::start("echo_exit_codes_stderr_and_spawn_failures").await else {
        return;
    };
    let sb = t.server.sandbox().await;
    let c = &t.server.client;

    let o = run(c, shell(&sb.id, "e1", "echo hi")).await;
    assert!(o.started.as_ref().expect("started").pid > 0);
    assert_eq!(o.stdout, b"hi\n");
    assert!(
        o.stderr.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&o.stderr)
    );
    let e = o.exited();
    assert_eq!(e.exit_code, Some(0));
    assert_eq!(reason(&e), pb::ExitReason::Exited);

    let o = run(c, shell(&sb.id, "e2", "echo out; echo err >&2; exit 3")).await;
    assert_eq!(o.stdout_str(), "out\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "err\n");
    assert_eq!(o.exited().exit_code, Some(3));

    let o = run(c, argv(&sb.id, "e3", &["printf", "%s|%s", "a b", "c"])).await;
    assert_eq!(o.stdout_str(), "a b|c");

    let mut start = argv(&sb.id, "e4", &["sh", "-c", "echo $GREETING; id -u"]);
    start.env.insert("GREETING".into(), "hello".into());
    assert_eq!(run(c, start).await.stdout_str(), "hello\n1000\n");

    for (exec_id, args, want) in [
        ("f1", vec!["no-such-program"], pb::SpawnFailure::NotFound),
        ("f2", vec!["/no/such/path"], pb::SpawnFailure::NotFound),
        (
            "f3",
            vec!["/etc/passwd"],
            pb::SpawnFailure::PermissionDenied,
        ),
    ] {
        let o = run(c, argv(&sb.id, exec_id, &args)).await;
        let f = o
            .spawn_failed
            .unwrap_or_else(|| panic!("{args:?}: no spawn_failed: {:?}", o.messages));
        assert_eq!(
            pb::SpawnFailure::try_from(f.reason).expect("reason"),
            want,
            "{args:?}"
        );
    }
    let mut start = argv(&sb.id, "f4", &["true"]);
    start.cwd = "missing-dir".into();
    let f = run(c, start).await.spawn_failed.expect("bad cwd");
    assert_eq!(
        pb::SpawnFailure::try_from(f.reason).expect("reason"),
        pb::SpawnFailure::BadCwd
    );

    // stdin pipe.
    let mut start = argv(&sb.id, "in", &["cat"]);
    start.stdin = pb::StdinMode::Pipe as i32;
    let stream = ExecStream::start(c, start).await;
    stream
        .send(pb::exec_request::Msg::Stdin(pb::StdinChunk {
            data: b"piped\n".to_vec(),
            offset: 0,
        }))
        .await;
    stream
        .send(pb::exec_request::Msg::StdinClose(pb::StdinClose {}))
        .await;
    let o = stream.collect().await;
    assert_eq!(o.stdout_str(), "piped\n");
    assert_eq!(o.exited().exit_code, Some(0));

    // Latency of `echo hi` on a running sandbox (printed, not asserted).
    let mut times = Vec::new();
    for i in 0..20 {
        let begin = Instant::now();
        let o = run(c, argv(&sb.id, &format!("lat-{i}"), &["echo", "hi"])).await;
        times.push(begin.elapsed());
        assert_eq!(o.stdout, b"hi\n");
    }
    times.sort();
    println!(
        "docker echo hi through Exec (n=20): p50 {:?}, max {:?}",
        times[times.len() / 2],
        times[times.len() - 1]
    );
    t.finish().await;
}

#[tokio::test]
async fn timeout_terms_then_kills_the_group() {
    let Some(t) = DockerTest::start("timeout_terms_then_kills_the_group").await else {
        return;
    };
    let sb = t.server.sandbox().await;
    let c = &t.server.client;
    let mut start = shell(&sb.id, "t1", "trap '' TERM; sleep 1000 & sleep 60");
    start.limits = Some(pb::ExecLimits {
        timeout_ms: 1000,
        kill_grace_ms: 500,
        ..Default::default()
    });
    let e = run(c, start).await.exited();
    assert_eq!(reason(&e), pb::ExitReason::Timeout);
    assert_eq!(e.signal, Some(9), "TERM is ignored, so KILL ends it: {e:?}");
    wait_until(
        "the background sleep to die",
        Duration::from_secs(10),
        || async {
            let o = run(
                c,
                shell(&sb.id, "", "ps -o args | grep -c '^sleep 1000' || true"),
            )
            .await;
            o.stdout_str().trim() == "0"
        },
    )
    .await;

    let mut start = argv(&sb.id, "t2", &["sleep", "60"]);
    start.limits = Some(pb::ExecLimits {
        timeout_ms: 300,
        ..Default::default()
    });
    let e = run(c, start).await.exited();
    assert_eq!(reason(&e), pb::ExitReason::Timeout);
    assert_eq!(e.signal, Some(15), "{e:?}");

    // A client signal.
    let mut stream = ExecStream::start(c, argv(&sb.id, "s1", &["sleep", "60"])).await;
    let started = stream.next().await;
    assert!(
        matches!(started, Some(pb::exec_response::Msg::Started(_))),
        "{started:?}"
    );
    stream
        .send(pb::exec_request::Msg::Signal(pb::ExecSignal {
            signal: pb::Signal::Int as i32,
            ..Default::default()
        }))
        .await;
    let e = stream.collect().await.exited();
    assert_eq!(reason(&e), pb::ExitReason::ClientSignal, "{e:?}");
    assert_eq!(e.signal, Some(2));
    t.finish().await;
}

#[tokio::test]
async fn concurrent_execs_in_one_sandbox() {
    let Some(t) = DockerTest::start("concurrent_execs_in_one_sandbox").await else {
        return;
    };
    let sb = t.server.sandbox().await;
    let runs = (0..20).map(|i| {
        let c = t.server.client.clone();
        let id = sb.id.clone();
        async move {
            let o = run(
                &c,
                shell(&id, &format!("c{i}"), &format!("sleep 0.2; echo {i}")),
            )
            .await;
            (i, o)
        }
    });
    for (i, o) in futures::future::join_all(runs).await {
        assert_eq!(o.stdout_str(), format!("{i}\n"));
        assert_eq!(o.exited().exit_code, Some(0));
    }
    t.finish().await;
}
