//! The executor half of the tools: the session's sandbox (created on the first tool call,
//! idempotently, with `sandbox_id` = the session id, on the replica the [`ExecutorPool`]
//! chooses) and the gRPC calls behind each tool, all sent to the replica holding the sandbox.
//!
//! Program failures are results (exit code, error text); only infrastructure problems
//! (executor unreachable, sandbox refused) become [`ExecutorError`], which the tool layer also
//! turns into a result the model sees. When the replica holding the sandbox stops answering
//! (a transport failure, also mid-command), the pool forgets the sandbox and the call ends
//! with [`ExecutorError::Lost`] / [`ExecutorError::LostWhileRunning`]; the next call gets a
//! fresh sandbox on a live replica.
//!
//! Every call acts for the session's scope: the [`Sandbox`] handle carries it, and the client
//! for a sandbox sends it as `x-cognition-scope-<key>` metadata, so the executor refuses a call
//! that reaches another tenant's sandbox (`PERMISSION_DENIED`, reported as a refusal).

use std::collections::HashMap;
use std::time::Duration;

use cognition_proto::executor::v1 as pb;
use cognition_proto::scope::Scope;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

pub use crate::executor_pool::ExecutorError;
use crate::executor_pool::{ExecutorPool, ReplicaId, ScopedExecutorClient, is_transport_failure};
use crate::sandboxes::SESSION_LABEL;

/// Bound on one unary executor call (file operations).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Extra time an exec gets over its own timeout before we stop waiting for the executor.
const EXEC_SLACK: Duration = Duration::from_secs(30);
/// Output bytes kept per command (the executor keeps head + tail beyond its own cap too).
const MAX_EXEC_BYTES: usize = 4 * 1024 * 1024;

/// Label prefix of the scope labels of a sandbox (`cognition.io/<scope-key>`).
pub const SCOPE_LABEL_PREFIX: &str = "cognition.io/";

/// The executors (a lazy pool), shared by every run of this replica.
#[derive(Debug, Clone)]
pub struct Executor {
    pool: ExecutorPool,
}

/// The session's sandbox as the executor reported it, and the replica that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub id: String,
    /// Working directory of processes in the sandbox.
    pub workdir: String,
    /// The replica holding the sandbox.
    pub replica: ReplicaId,
    /// The session's scope, sent with every call on the sandbox.
    pub scope: Scope,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// stdout and stderr, interleaved in arrival order.
    pub output: String,
    /// The exit code; `None` when killed by a signal or it never started.
    pub exit_code: Option<i32>,
    /// A note on how it ended when not a plain exit (timeout, signal, spawn failure).
    pub note: Option<String>,
}

/// Whether a call finished or was abandoned because the run was cancelled.
pub enum Cancellable<T> {
    Done(T),
    Cancelled,
}

impl Executor {
    /// The tools' view of `pool`.
    pub fn new(pool: ExecutorPool) -> Self {
        Self { pool }
    }

    /// Whether `sandbox` still lives where it was found (the pool forgets a sandbox whose
    /// replica stopped answering; a cached copy is then stale).
    pub fn still_holds(&self, sandbox: &Sandbox) -> bool {
        self.pool.home(&sandbox.id) == Some(sandbox.replica)
    }

    fn client(&self, sandbox: &Sandbox) -> ScopedExecutorClient {
        self.pool.client_for(sandbox.replica, &sandbox.scope)
    }

    /// The error for a failed call on `sandbox`: a transport failure loses the sandbox.
    fn failed(&self, sandbox: &Sandbox, status: tonic::Status, running: bool) -> ExecutorError {
        if is_transport_failure(&status) {
            self.pool.lose(&sandbox.id, sandbox.replica, &status);
            if running {
                ExecutorError::LostWhileRunning
            } else {
                ExecutorError::Lost
            }
        } else {
            status.into()
        }
    }

    /// A unary call on `sandbox`, bounded by [`CALL_TIMEOUT`].
    async fn unary<T>(
        &self,
        sandbox: &Sandbox,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, ExecutorError> {
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(self.failed(sandbox, status, false)),
            Err(_) => Err(ExecutorError::Timeout),
        }
    }

    /// Creates (or finds: the id is the idempotency key) the sandbox of a session, labelled
    /// with the session id and the session's scopes, on the replica the pool chooses. The
    /// call acts for those scopes (the executor stamps the same labels and checks them).
    pub async fn ensure_sandbox(
        &self,
        session_id: &str,
        scopes: &crate::domain::StringMap,
    ) -> Result<Sandbox, ExecutorError> {
        let mut labels: HashMap<String, String> = scopes
            .iter()
            .map(|(k, v)| (format!("{SCOPE_LABEL_PREFIX}{k}"), v.clone()))
            .collect();
        labels.insert(SESSION_LABEL.to_owned(), session_id.to_owned());
        let scope = Scope(scopes.clone());
        let (replica, sandbox) = self
            .pool
            .ensure_sandbox(
                pb::CreateSandboxRequest {
                    sandbox_id: session_id.to_owned(),
                    labels,
                    ..Default::default()
                },
                &scope,
            )
            .await?;
        Ok(Sandbox {
            id: sandbox.id,
            workdir: sandbox.workdir,
            replica,
            scope,
        })
    }

    pub async fn read_file(
        &self,
        sandbox: &Sandbox,
        path: String,
        offset: u64,
        limit: u64,
    ) -> Result<pb::ReadFileResponse, ExecutorError> {
        self.unary(
            sandbox,
            self.client(sandbox).read_file(pb::ReadFileRequest {
                sandbox_id: sandbox.id.clone(),
                path,
                offset,
                limit,
            }),
        )
        .await
    }

    pub async fn write_file(
        &self,
        sandbox: &Sandbox,
        path: String,
        content: String,
    ) -> Result<u64, ExecutorError> {
        Ok(self
            .unary(
                sandbox,
                self.client(sandbox).write_file(pb::WriteFileRequest {
                    sandbox_id: sandbox.id.clone(),
                    path,
                    content: content.into_bytes(),
                }),
            )
            .await?
            .bytes_written)
    }

    pub async fn edit_file(
        &self,
        sandbox: &Sandbox,
        request: pb::EditFileRequest,
    ) -> Result<u64, ExecutorError> {
        let request = pb::EditFileRequest {
            sandbox_id: sandbox.id.clone(),
            ..request
        };
        Ok(self
            .unary(sandbox, self.client(sandbox).edit_file(request))
            .await?
            .replacements)
    }

    pub async fn list_files(
        &self,
        sandbox: &Sandbox,
        path: String,
    ) -> Result<Vec<pb::FileInfo>, ExecutorError> {
        Ok(self
            .unary(
                sandbox,
                self.client(sandbox).list_files(pb::ListFilesRequest {
                    sandbox_id: sandbox.id.clone(),
                    path,
                }),
            )
            .await?
            .files)
    }

    pub async fn glob(
        &self,
        sandbox: &Sandbox,
        pattern: String,
        path: String,
    ) -> Result<Vec<pb::FileInfo>, ExecutorError> {
        Ok(self
            .unary(
                sandbox,
                self.client(sandbox).glob(pb::GlobRequest {
                    sandbox_id: sandbox.id.clone(),
                    pattern,
                    path,
                }),
            )
            .await?
            .files)
    }

    pub async fn grep(
        &self,
        sandbox: &Sandbox,
        pattern: String,
        path: String,
        include: String,
    ) -> Result<pb::GrepResponse, ExecutorError> {
        self.unary(
            sandbox,
            self.client(sandbox).grep(pb::GrepRequest {
                sandbox_id: sandbox.id.clone(),
                pattern,
                path,
                include,
            }),
        )
        .await
    }

    /// Runs `command` with `/bin/sh -c` in the sandbox's workdir. On `cancel` the process
    /// group is killed (SIGKILL) and the call returns [`Cancellable::Cancelled`].
    pub async fn execute(
        &self,
        sandbox: &Sandbox,
        exec_id: String,
        command: String,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<Cancellable<CommandOutput>, ExecutorError> {
        let mut client = self.client(sandbox);
        let (tx, rx) = mpsc::channel(4);
        let start = pb::ExecRequest {
            msg: Some(pb::exec_request::Msg::Start(pb::ExecStart {
                sandbox_id: sandbox.id.clone(),
                exec_id,
                command: Some(pb::exec_start::Command::Shell(command)),
                limits: Some(pb::ExecLimits {
                    timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                    ..Default::default()
                }),
                on_disconnect: pb::DisconnectPolicy::Kill as i32,
                ..Default::default()
            })),
        };
        // The receiver is alive (owned below); a full channel cannot happen on the first send.
        let _ = tx.send(start).await;
        let deadline = tokio::time::Instant::now() + timeout + EXEC_SLACK;
        let opened = tokio::select! {
            _ = cancel.cancelled() => return Ok(Cancellable::Cancelled),
            opened = tokio::time::timeout_at(deadline, client.exec(ReceiverStream::new(rx))) => opened,
        };
        let mut stream = match opened {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => return Err(self.failed(sandbox, status, false)),
            Err(_) => return Err(ExecutorError::Timeout),
        };
        let mut output = Vec::new();
        let mut dropped = 0u64;
        loop {
            let message = tokio::select! {
                _ = cancel.cancelled() => {
                    let kill = pb::ExecRequest {
                        msg: Some(pb::exec_request::Msg::Signal(pb::ExecSignal {
                            signal: pb::Signal::Kill as i32,
                            leader_only: false,
                        })),
                    };
                    // Best effort: dropping the stream also kills it (disconnect policy KILL).
                    let _ = tokio::time::timeout(Duration::from_millis(500), tx.send(kill)).await;
                    return Ok(Cancellable::Cancelled);
                }
                message = tokio::time::timeout_at(deadline, stream.message()) => message,
            };
            let message = match message {
                Err(_) => return Err(ExecutorError::Timeout),
                Ok(Err(status)) => return Err(self.failed(sandbox, status, true)),
                // The executor closed the stream without the terminal message it always sends
                // for a live sandbox: it is going away with the command's outcome unknown.
                Ok(Ok(None)) => {
                    let ended =
                        tonic::Status::unavailable("the exec stream ended without an exit status");
                    return Err(self.failed(sandbox, ended, true));
                }
                Ok(Ok(Some(message))) => message,
            };
            use pb::exec_response::Msg;
            match message.msg {
                Some(Msg::Output(chunk)) => {
                    let room = MAX_EXEC_BYTES.saturating_sub(output.len());
                    let take = room.min(chunk.data.len());
                    output.extend_from_slice(&chunk.data[..take]);
                    dropped += (chunk.data.len() - take) as u64;
                }
                Some(Msg::Gap(gap)) => {
                    output.extend_from_slice(
                        format!("\n… [{} bytes of output omitted] …\n", gap.length).as_bytes(),
                    );
                }
                Some(Msg::SpawnFailed(failed)) => {
                    return Ok(Cancellable::Done(CommandOutput {
                        output: String::from_utf8_lossy(&output).into_owned(),
                        exit_code: None,
                        note: Some(format!("the command could not start: {}", failed.message)),
                    }));
                }
                Some(Msg::Exited(exited)) => {
                    if dropped > 0 {
                        output.extend_from_slice(
                            format!("\n… [{dropped} more bytes of output omitted] …").as_bytes(),
                        );
                    }
                    let reason = pb::ExitReason::try_from(exited.reason)
                        .unwrap_or(pb::ExitReason::Unspecified);
                    let note = match reason {
                        pb::ExitReason::Timeout => Some(format!(
                            "the command timed out after {} s and was killed",
                            timeout.as_secs()
                        )),
                        pb::ExitReason::IdleTimeout => {
                            Some("the command produced no output for too long".into())
                        }
                        pb::ExitReason::OomKilled => Some("the command ran out of memory".into()),
                        pb::ExitReason::SandboxTerminated => {
                            Some("the sandbox was terminated".into())
                        }
                        _ => exited
                            .signal
                            .map(|signal| format!("the command was killed by signal {signal}")),
                    };
                    return Ok(Cancellable::Done(CommandOutput {
                        output: String::from_utf8_lossy(&output).into_owned(),
                        exit_code: exited.exit_code,
                        note,
                    }));
                }
                Some(Msg::Started(_) | Msg::Idle(_) | Msg::Keepalive(_)) | None => {}
            }
        }
    }
}
