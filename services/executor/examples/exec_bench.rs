//! Measures the Exec budgets of `docs/exec-protocol.md`, in-process over loopback gRPC: sandbox
//! creation, `echo hi` round trip (p50 / p99) and stdout throughput.
//!
//! `cargo run --release -p cognition-executor --example exec_bench -- [iterations] [throughput MiB]`
//! on the local backend; with `COGNITION_SANDBOX_BACKEND=docker` on Docker (the image of
//! `compose/sandbox/build.sh`; `COGNITION_SANDBOX_AGENT=false` measures the Docker exec API path).

use std::time::{Duration, Instant};

use cognition_proto::executor::v1 as pb;
use cognition_proto::executor::v1::executor_service_client::ExecutorServiceClient;
use pb::exec_response::Msg;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let iterations: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let mib: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1024);

    let dir = tempfile::tempdir()?;
    let mut config = cognition_executor::Config::embedded(dir.path());
    if std::env::var("COGNITION_SANDBOX_BACKEND").as_deref() == Ok("docker") {
        config.sandbox_backend = cognition_executor::config::BackendKind::Docker;
        config.sandbox_agent = std::env::var("COGNITION_SANDBOX_AGENT").as_deref() != Ok("false");
    }
    println!(
        "backend {} (agent: {})",
        config.sandbox_backend.as_str(),
        config.sandbox_agent
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(cognition_executor::run(config, listener, shutdown.clone()));
    let mut client = ExecutorServiceClient::connect(format!("http://{addr}")).await?;
    let mut creates = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let sb = client
            .create_sandbox(pb::CreateSandboxRequest::default())
            .await?
            .into_inner()
            .sandbox
            .unwrap();
        creates.push(t.elapsed());
        client
            .delete_sandbox(pb::DeleteSandboxRequest { sandbox_id: sb.id })
            .await?;
    }
    creates.sort();
    println!(
        "create sandbox (ready to exec), 5 runs: p50 {:?}  max {:?}",
        creates[2], creates[4]
    );
    let sandbox = client
        .create_sandbox(pb::CreateSandboxRequest::default())
        .await?
        .into_inner()
        .sandbox
        .unwrap();

    let start = |exec_id: String, command: pb::exec_start::Command, max: u64| pb::ExecRequest {
        msg: Some(pb::exec_request::Msg::Start(pb::ExecStart {
            sandbox_id: sandbox.id.clone(),
            exec_id,
            command: Some(command),
            output: Some(pb::OutputPolicy {
                max_bytes_per_stream: max,
                head_bytes: 0,
            }),
            ..Default::default()
        })),
    };

    // echo hi round trips.
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations + 50 {
        let t = Instant::now();
        let argv = pb::exec_start::Command::Argv(pb::Argv {
            args: vec!["echo".into(), "hi".into()],
        });
        let req = start(format!("echo-{i}"), argv, 0);
        let mut stream = client.exec(tokio_stream::iter([req])).await?.into_inner();
        let mut out = Vec::new();
        let mut code = None;
        while let Some(m) = stream.message().await? {
            match m.msg {
                Some(Msg::Output(o)) => out.extend(o.data),
                Some(Msg::Exited(e)) => code = e.exit_code,
                _ => {}
            }
        }
        let elapsed = t.elapsed();
        anyhow::ensure!(out == b"hi\n" && code == Some(0), "bad echo result");
        if i >= 50 {
            samples.push(elapsed); // the first 50 warm up
        }
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "echo hi round trip over {iterations} runs: p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        samples.last().copied().unwrap_or(Duration::ZERO)
    );

    // Baselines on this machine: a unary call, and a bare spawn + wait with pipes.
    let mut unary = Vec::new();
    let mut spawn = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        client
            .get_sandbox(pb::GetSandboxRequest {
                sandbox_id: sandbox.id.clone(),
            })
            .await?;
        unary.push(t.elapsed());
        let t = Instant::now();
        let out = tokio::process::Command::new("echo")
            .arg("hi")
            .output()
            .await?;
        anyhow::ensure!(out.stdout == b"hi\n");
        spawn.push(t.elapsed());
    }
    unary.sort();
    spawn.sort();
    println!(
        "baselines, p50: unary gRPC {:?}  tokio spawn+wait of echo {:?}",
        unary[100], spawn[100]
    );

    // Throughput: everything delivered to the client (cap above the size).
    let bytes = mib * 1024 * 1024;
    // dd with 64 KiB blocks: the producer must not be the bottleneck (busybox `head -c` in the
    // sandbox image manages ~220 MB/s on its own).
    let producer = format!("dd if=/dev/zero bs=65536 count={} 2>/dev/null", mib * 16);
    let cmd = pb::exec_start::Command::Shell(producer.clone());
    let t = Instant::now();
    let mut stream = client
        .exec(tokio_stream::iter([start("tp".into(), cmd, 2 * bytes + 2)]))
        .await?
        .into_inner();
    let mut received = 0u64;
    while let Some(m) = stream.message().await? {
        if let Some(Msg::Output(o)) = m.msg {
            received += o.data.len() as u64;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "stdout throughput, {mib} MiB delivered: {:.0} MB/s ({received} bytes in {secs:.2} s)",
        received as f64 / secs / 1e6
    );

    // Throughput with the default 8 MiB cap: the process is drained at full speed.
    let cmd = pb::exec_start::Command::Shell(producer);
    let t = Instant::now();
    let mut stream = client
        .exec(tokio_stream::iter([start("tp2".into(), cmd, 0)]))
        .await?
        .into_inner();
    let mut total = 0u64;
    while let Some(m) = stream.message().await? {
        if let Some(Msg::Exited(e)) = m.msg {
            total = e.stdout_bytes;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "stdout drain with the default cap, {mib} MiB produced: {:.0} MB/s",
        total as f64 / secs / 1e6
    );

    client
        .delete_sandbox(pb::DeleteSandboxRequest {
            sandbox_id: sandbox.id.clone(),
        })
        .await?;
    shutdown.cancel();
    server.await??;
    Ok(())
}
