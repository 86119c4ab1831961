//! Isolation seen from inside a Docker sandbox: read-only root, no network, pids limit.

use cognition_proto::executor::v1 as pb;

use crate::harness::DockerTest;
use crate::support::*;

#[tokio::test]
async fn read_only_root_no_network_non_root() {
    let Some(t) = DockerTest::start("read_only_root_no_network_non_root").await else {
        return;
    };
    let sb = t.server.sandbox().await;
    let c = &t.server.client;
    let o = run(c, shell(&sb.id, "ro", "touch /evil")).await;
    assert_ne!(o.exited().exit_code, Some(0));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Read-only file system"),
        "{:?}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = run(
        c,
        shell(
            &sb.id,
            "tmp",
            "echo x > /tmp/x && cat /tmp/x && echo y > $HOME/y && cat $HOME/y",
        ),
    )
    .await;
    assert_eq!(
        o.stdout_str(),
        "x\ny\n",
        "{:?}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = run(
        c,
        shell(&sb.id, "noexec", "cp /bin/busybox /tmp/bb && /tmp/bb true"),
    )
    .await;
    assert_ne!(o.exited().exit_code, Some(0), "/tmp is noexec");
    let o = run(c, shell(&sb.id, "id", "id -u; id -g")).await;
    assert_eq!(o.stdout_str(), "1000\n1000\n");
    let o = run(c, shell(&sb.id, "caps", "grep CapEff /proc/self/status")).await;
    assert!(
        o.stdout_str().contains("0000000000000000"),
        "{}",
        o.stdout_str()
    );
    let o = run(c, shell(&sb.id, "nnp", "grep NoNewPrivs /proc/self/status")).await;
    assert!(o.stdout_str().contains('1'), "{}", o.stdout_str());

    // Only the loopback interface, and nothing is reachable.
    let o = run(
        c,
        shell(
            &sb.id,
            "ifaces",
            "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '",
        ),
    )
    .await;
    assert_eq!(o.stdout_str(), "lo\n");
    let o = run(c, shell(&sb.id, "net", "wget -q -T 3 -O- http://1.1.1.1/ ")).await;
    assert_ne!(
        o.exited().exit_code,
        Some(0),
        "the network must be unreachable"
    );
    t.finish().await;
}

#[tokio::test]
async fn a_fork_bomb_is_contained_by_the_pids_limit() {
    let Some(t) = DockerTest::start("a_fork_bomb_is_contained_by_the_pids_limit").await else {
        return;
    };
    let sb = t.server.sandbox().await;
    let c = &t.server.client;
    let mut start = shell(&sb.id, "bomb", "bomb() { bomb | bomb & }; bomb; sleep 30");
    start.limits = Some(pb::ExecLimits {
        timeout_ms: 3000,
        kill_grace_ms: 200,
        ..Default::default()
    });
    let o = run(c, start).await;
    let e = o.exited();
    assert_eq!(
        pb::ExitReason::try_from(e.reason).expect("reason"),
        pb::ExitReason::Timeout,
        "{e:?}"
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("can't fork") || stderr.contains("Resource temporarily unavailable"),
        "the bomb must have hit the pids limit: {:?}",
        stderr.chars().rev().take(300).collect::<String>()
    );
    // The sandbox survives, and the pids controller held the line.
    wait_until(
        "the sandbox to answer again",
        std::time::Duration::from_secs(30),
        || async {
            let o = run(c, shell(&sb.id, "", "echo alive; cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max")).await;
            o.stdout_str().starts_with("alive\n")
        },
    )
    .await;
    let o = run(
        c,
        shell(
            &sb.id,
            "max",
            "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max",
        ),
    )
    .await;
    assert_eq!(o.stdout_str().trim(), "256");
    t.finish().await;
}
