//! The in-sandbox agent: a process dies with the executor's connection to the agent (an executor
//! that vanishes leaves nothing running), and with the agent turned off
//! (`COGNITION_SANDBOX_AGENT=false`) the Docker exec API runs processes, without PTYs.
//!
//! (A graceful shutdown killing its processes, seen from a fresh executor, is
//! `exec::docker::shutdown_ends_streams_and_kills_processes` in the shared suite.)

use std::time::Duration;

use bollard::query_parameters::InspectContainerOptions;
use cognition_executor::BackendKind;
use cognition_proto::executor::v1 as pb;
use cognition_proto::executor::v1::executor_service_client::ExecutorServiceClient;
use pb::exec_request::Msg as Req;
use pb::exec_response::Msg as Resp;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::harness::{DockerTest, IMAGE};
use crate::support::*;

/// An executor on its own runtime: dropping the runtime drops every task at once (the gRPC
/// server, the exec supervisors and their agent connections) with no graceful shutdown, as when
/// the executor process dies.
struct VanishingExecutor {
    client: Client,
    runtime: tokio::runtime::Runtime,
}

impl VanishingExecutor {
    fn start(t: &DockerTest) -> Self {
        let mut config = test_config(t.data_dir());
        config.sandbox_backend = BackendKind::Docker;
        config.sandbox_image = IMAGE.into();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("addr");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            cognition_executor::run(config, listener, CancellationToken::new()).await
        });
        // The socket listens already: the connection is made lazily, on the first call.
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect_lazy();
        Self {
            client: ExecutorServiceClient::new(channel),
            runtime,
        }
    }

    /// Drops every task of the executor without a shutdown.
    fn vanish(self) {
        self.runtime.shutdown_background();
    }
}

/// The command lines of the `sleep` processes in the sandbox (busybox `ps`).
async fn sleeps(client: &Client, sandbox: &str) -> Vec<String> {
    let o = run(client, shell(sandbox, "", "ps -o args")).await;
    assert_eq!(o.exited().exit_code, Some(0), "ps: {}", o.stderr_str());
    o.stdout_str()
        .lines()
        .filter(|l| l.starts_with("sleep "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_process_dies_with_the_executors_connection_to_the_agent() {
    let Some(mut t) =
        DockerTest::start("a_process_dies_with_the_executors_connection_to_the_agent").await
    else {
        return;
    };
    let sb = t.server.sandbox().await;

    // A second executor on the same root re-adopts the sandbox and starts the process; DETACH,
    // so no disconnect policy is what kills it.
    let vanishing = VanishingExecutor::start(&t);
    let mut start = shell(&sb.id, "long", "sleep 300 & sleep 300");
    start.on_disconnect = pb::DisconnectPolicy::Detach as i32;
    let mut stream = ExecStream::start(&vanishing.client, start).await;
    let first = stream.next().await;
    assert!(matches!(first, Some(Resp::Started(_))), "{first:?}");
    let c = &t.server.client;
    wait_until("both sleeps to run", Duration::from_secs(10), || async {
        sleeps(c, &sb.id).await.len() == 2
    })
    .await;

    vanishing.vanish();
    drop(stream);

    // A fresh executor on the same root (re-adoption) sees nothing left of the process group.
    t.restart().await;
    let c = &t.server.client;
    wait_until(
        "the agent to kill the process group",
        Duration::from_secs(10),
        || async { sleeps(c, &sb.id).await.is_empty() },
    )
    .await;
    let o = run(c, shell(&sb.id, "after", "echo still-usable")).await;
    assert_eq!(o.stdout_str(), "still-usable\n");
    t.finish().await;
}

#[tokio::test]
async fn without_the_agent_the_docker_exec_api_runs_processes() {
    let Some(t) = DockerTest::start_with(
        "without_the_agent_the_docker_exec_api_runs_processes",
        |c| c.sandbox_agent = false,
    )
    .await
    else {
        return;
    };
    let sb = t.server.sandbox().await;
    let c = &t.server.client;

    // The container does not run the agent, and has no socket folder.
    let inspect = t
        .docker
        .inspect_container(
            &format!("cognition-{}", sb.id),
            None::<InspectContainerOptions>,
        )
        .await
        .expect("the container exists");
    let cmd = inspect.config.and_then(|c| c.cmd).unwrap_or_default();
    assert!(
        !cmd.iter().any(|a| a.contains("agent")),
        "the agent is off: {cmd:?}"
    );
    let binds = inspect
        .host_config
        .and_then(|h| h.binds)
        .unwrap_or_default();
    assert_eq!(binds.len(), 1, "only the workspace: {binds:?}");

    let o = run(c, shell(&sb.id, "e1", "echo hi")).await;
    assert!(o.started.as_ref().expect("started").pid > 0);
    assert_eq!(o.stdout, b"hi\n");
    assert!(o.stderr.is_empty(), "{}", o.stderr_str());
    assert_eq!(o.exited().exit_code, Some(0));

    let o = run(c, shell(&sb.id, "e2", "echo out; echo err >&2; exit 3")).await;
    assert_eq!(o.stdout_str(), "out\n");
    assert_eq!(o.stderr_str(), "err\n");
    assert_eq!(o.exited().exit_code, Some(3));

    // A client signal reaches the process group.
    let mut stream = ExecStream::start(c, argv(&sb.id, "sig", &["sleep", "60"])).await;
    let first = stream.next().await;
    assert!(matches!(first, Some(Resp::Started(_))), "{first:?}");
    stream
        .send(Req::Signal(pb::ExecSignal {
            signal: pb::Signal::Int as i32,
            leader_only: false,
        }))
        .await;
    let e = stream.collect().await.exited();
    assert_eq!(
        (e.signal, pb::ExitReason::try_from(e.reason)),
        (Some(2), Ok(pb::ExitReason::ClientSignal)),
        "{e:?}"
    );

    // A timeout's SIGTERM too.
    let mut start = argv(&sb.id, "t", &["sleep", "60"]);
    start.limits = Some(pb::ExecLimits {
        timeout_ms: 300,
        ..Default::default()
    });
    let e = run(c, start).await.exited();
    assert_eq!(
        (e.signal, pb::ExitReason::try_from(e.reason)),
        (Some(15), Ok(pb::ExitReason::Timeout)),
        "{e:?}"
    );

    // A pty needs the agent.
    let mut start = shell(&sb.id, "pty", "tty");
    start.pty = Some(pb::PtySize { rows: 24, cols: 80 });
    let o = run(c, start).await;
    let f = o
        .spawn_failed
        .unwrap_or_else(|| panic!("no spawn_failed: {:?}", o.messages));
    assert_eq!(
        pb::SpawnFailure::try_from(f.reason),
        Ok(pb::SpawnFailure::InvalidArgument),
        "{f:?}"
    );
    assert!(f.message.contains("agent"), "{f:?}");
    t.finish().await;
}
