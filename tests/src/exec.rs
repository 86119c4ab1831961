//! Drives one `Exec` stream: start a command, collect its output, return the terminal message.

use cognition_proto::executor::v1 as pb;
use pb::executor_service_client::ExecutorServiceClient;
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;

/// What one exec produced.
#[derive(Debug, Default)]
pub struct ExecResult {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub started: Option<pb::ExecStarted>,
    pub exited: Option<pb::ExecExited>,
    pub spawn_failed: Option<pb::SpawnFailed>,
}

/// Runs `shell` in `sandbox_id` and waits for the terminal message.
pub async fn run_shell(
    client: &mut ExecutorServiceClient<Channel>,
    sandbox_id: &str,
    shell: &str,
) -> anyhow::Result<ExecResult> {
    let start = pb::ExecStart {
        sandbox_id: sandbox_id.to_owned(),
        exec_id: uuid::Uuid::new_v4().to_string(),
        command: Some(pb::exec_start::Command::Shell(shell.to_owned())),
        ..Default::default()
    };
    run(client, start).await
}

/// Runs `start` and waits for the terminal message. The request stream stays open until the
/// exec ends, so the default disconnect policy never fires.
pub async fn run(
    client: &mut ExecutorServiceClient<Channel>,
    start: pb::ExecStart,
) -> anyhow::Result<ExecResult> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::ExecRequest {
        msg: Some(pb::exec_request::Msg::Start(start)),
    })
    .await?;
    let mut stream = client
        .exec(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut result = ExecResult::default();
    while let Some(msg) = stream.next().await {
        match msg?.msg {
            Some(pb::exec_response::Msg::Started(s)) => result.started = Some(s),
            Some(pb::exec_response::Msg::Output(o)) => match o.stream() {
                pb::OutputStream::Stderr => result.stderr.extend_from_slice(&o.data),
                _ => result.stdout.extend_from_slice(&o.data),
            },
            Some(pb::exec_response::Msg::Exited(e)) => {
                result.exited = Some(e);
                break;
            }
            Some(pb::exec_response::Msg::SpawnFailed(f)) => {
                result.spawn_failed = Some(f);
                break;
            }
            _ => {}
        }
    }
    drop(tx);
    Ok(result)
}
