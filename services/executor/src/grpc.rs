//! The tonic adapter of `cognition.executor.v1.ExecutorService`: validate, convert, check the
//! caller's scope against the sandbox ([`tenancy`]), delegate to the [`Engine`], map the error.

pub mod convert;
mod exec_stream;
pub mod tenancy;

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use cognition_proto::executor::v1 as pb;
use cognition_proto::executor::v1::executor_service_server::ExecutorService;
use futures::Stream;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::engine::Engine;
use crate::error::Error;
use crate::files::{DOWNLOAD_CHUNK, Edit, GrepQuery};
use crate::ids::SandboxId;

pub use exec_stream::ExecResponseStream;
pub use tenancy::Tenant;

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct GrpcService {
    engine: Arc<Engine>,
    shutdown: CancellationToken,
}

impl GrpcService {
    pub fn new(engine: Arc<Engine>, shutdown: CancellationToken) -> Self {
        Self { engine, shutdown }
    }

    /// `PERMISSION_DENIED` unless `tenant` may use sandbox `id` (`NOT_FOUND` when it does not
    /// exist). Costs one backend lookup, skipped for unscoped callers.
    async fn authorize(&self, tenant: &Tenant, id: &SandboxId) -> Result<(), Error> {
        if tenant.is_unscoped() {
            return Ok(());
        }
        tenant.check(&self.engine.get_sandbox(id).await?)
    }
}

/// The caller's scope, read from the request metadata.
fn tenant<T>(request: &Request<T>) -> Result<Tenant, Error> {
    Tenant::from_metadata(request.metadata())
}

type Res<T> = Result<Response<T>, Status>;

/// How long an Exec stream may stay silent before its first message.
const FIRST_MESSAGE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

fn ok<T>(v: T) -> Res<T> {
    Ok(Response::new(v))
}

#[tonic::async_trait]
impl ExecutorService for GrpcService {
    async fn create_sandbox(
        &self,
        request: Request<pb::CreateSandboxRequest>,
    ) -> Res<pb::CreateSandboxResponse> {
        let tenant = tenant(&request)?;
        let mut spec = convert::create_sandbox(request.into_inner(), |ttl| self.engine.ttl(ttl))?;
        tenant.stamp(&mut spec.labels)?;
        let sandbox = self.engine.create_sandbox(spec).await?;
        // Create is idempotent by id: an existing sandbox of another tenant is not handed out.
        tenant.check(&sandbox)?;
        ok(pb::CreateSandboxResponse {
            sandbox: Some(convert::sandbox(sandbox)),
        })
    }

    async fn get_sandbox(
        &self,
        request: Request<pb::GetSandboxRequest>,
    ) -> Res<pb::GetSandboxResponse> {
        let tenant = tenant(&request)?;
        let id = convert::sandbox_id(&request.into_inner().sandbox_id)?;
        let sandbox = self.engine.get_sandbox(&id).await?;
        tenant.check(&sandbox)?;
        ok(pb::GetSandboxResponse {
            sandbox: Some(convert::sandbox(sandbox)),
        })
    }

    async fn list_sandboxes(
        &self,
        request: Request<pb::ListSandboxesRequest>,
    ) -> Res<pb::ListSandboxesResponse> {
        let tenant = tenant(&request)?;
        let selector = request.into_inner().label_selector.into_iter().collect();
        let sandboxes = match tenant.narrow(selector) {
            Some(selector) => self.engine.list_sandboxes(&selector).await?,
            None => Vec::new(),
        };
        ok(pb::ListSandboxesResponse {
            sandboxes: sandboxes.into_iter().map(convert::sandbox).collect(),
        })
    }

    async fn renew_sandbox(
        &self,
        request: Request<pb::RenewSandboxRequest>,
    ) -> Res<pb::RenewSandboxResponse> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let id = convert::sandbox_id(&req.sandbox_id)?;
        self.authorize(&tenant, &id).await?;
        let sandbox = self
            .engine
            .renew_sandbox(&id, convert::renew_ttl(req.ttl_seconds))
            .await?;
        ok(pb::RenewSandboxResponse {
            sandbox: Some(convert::sandbox(sandbox)),
        })
    }

    async fn delete_sandbox(
        &self,
        request: Request<pb::DeleteSandboxRequest>,
    ) -> Res<pb::DeleteSandboxResponse> {
        let tenant = tenant(&request)?;
        let id = convert::sandbox_id(&request.into_inner().sandbox_id)?;
        self.authorize(&tenant, &id).await?;
        self.engine.delete_sandbox(&id).await?;
        ok(pb::DeleteSandboxResponse {})
    }

    type ExecStream = ExecResponseStream;

    async fn exec(&self, request: Request<Streaming<pb::ExecRequest>>) -> Res<Self::ExecStream> {
        use pb::exec_request::Msg;
        let tenant = tenant(&request)?;
        let mut inbound = request.into_inner();
        let first = tokio::select! {
            m = tokio::time::timeout(FIRST_MESSAGE_WAIT, inbound.message()) => m.map_err(|_| {
                Status::deadline_exceeded("no start or attach message arrived on the Exec stream")
            })??,
            _ = self.shutdown.cancelled() => {
                return Err(Status::unavailable("the executor is shutting down"));
            }
        };
        let first = first.ok_or_else(|| {
            Status::invalid_argument("empty Exec stream: the first message must be start or attach")
        })?;
        let (exec, attached, offsets) = match first.msg {
            Some(Msg::Start(start)) => {
                let req = convert::start_exec(start)?;
                let (exec, attached) = self
                    .engine
                    .start_exec(req, |sandbox| tenant.check(sandbox))
                    .await?;
                (exec, attached, [0, 0])
            }
            Some(Msg::Attach(a)) => {
                let sandbox_id = convert::sandbox_id(&a.sandbox_id)?;
                let exec_id = convert::exec_id(&a.exec_id)?;
                self.authorize(&tenant, &sandbox_id).await?;
                let exec = self.engine.exec(&sandbox_id, &exec_id).await?;
                let offsets = convert::attach_offsets(&a, exec.spec().pty.is_some());
                (exec, true, offsets)
            }
            _ => {
                return Err(Status::invalid_argument(
                    "the first Exec message must be start or attach",
                ));
            }
        };
        let sub = exec.subscribe(offsets, attached);
        ok(exec_stream::open(
            sub,
            inbound,
            self.engine.config().keepalive(),
            self.shutdown.clone(),
        ))
    }

    async fn signal_exec(
        &self,
        request: Request<pb::SignalExecRequest>,
    ) -> Res<pb::SignalExecResponse> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let (sandbox_id, exec_id) = (
            convert::sandbox_id(&req.sandbox_id)?,
            convert::exec_id(&req.exec_id)?,
        );
        self.authorize(&tenant, &sandbox_id).await?;
        let signal = convert::signal(req.signal)?;
        self.engine
            .exec(&sandbox_id, &exec_id)
            .await?
            .signal(signal, req.leader_only)?;
        ok(pb::SignalExecResponse {})
    }

    async fn get_exec(&self, request: Request<pb::GetExecRequest>) -> Res<pb::GetExecResponse> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let (sandbox_id, exec_id) = (
            convert::sandbox_id(&req.sandbox_id)?,
            convert::exec_id(&req.exec_id)?,
        );
        self.authorize(&tenant, &sandbox_id).await?;
        let exec = self.engine.exec(&sandbox_id, &exec_id).await?;
        ok(pb::GetExecResponse {
            exec: Some(convert::exec_info(exec.snapshot())),
        })
    }

    async fn list_execs(
        &self,
        request: Request<pb::ListExecsRequest>,
    ) -> Res<pb::ListExecsResponse> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let sandbox_id = convert::sandbox_id(&req.sandbox_id)?;
        self.authorize(&tenant, &sandbox_id).await?;
        let execs = self
            .engine
            .list_execs(&sandbox_id, req.include_finished)
            .await?;
        ok(pb::ListExecsResponse {
            execs: execs
                .iter()
                .map(|e| convert::exec_info(e.snapshot()))
                .collect(),
        })
    }

    async fn wait_exec(&self, request: Request<pb::WaitExecRequest>) -> Res<pb::WaitExecResponse> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let (sandbox_id, exec_id) = (
            convert::sandbox_id(&req.sandbox_id)?,
            convert::exec_id(&req.exec_id)?,
        );
        self.authorize(&tenant, &sandbox_id).await?;
        let exec = self.engine.exec(&sandbox_id, &exec_id).await?;
        tokio::select! {
            _ = exec.wait() => {}
            _ = self.shutdown.cancelled() => {
                return Err(Status::unavailable("the executor is shutting down; wait again"));
            }
        }
        ok(pb::WaitExecResponse {
            exec: Some(convert::exec_info(exec.snapshot())),
        })
    }

    async fn read_file(&self, request: Request<pb::ReadFileRequest>) -> Res<pb::ReadFileResponse> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let id = convert::sandbox_id(&req.sandbox_id)?;
        let r = self
            .engine
            .files(&id, None, |sandbox| tenant.check(sandbox))
            .await?
            .read(&req.path, req.offset, req.limit)
            .await?;
        ok(pb::ReadFileResponse {
            content: r.content,
            total_lines: r.total_lines,
            truncated: r.truncated,
        })
    }

    async fn write_file(
        &self,
        request: Request<pb::WriteFileRequest>,
    ) -> Res<pb::WriteFileResponse> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let id = convert::sandbox_id(&req.sandbox_id)?;
        let n = self
            .engine
            .files(&id, Some(&req.path), |sandbox| tenant.check(sandbox))
            .await?
            .write(&req.path, Bytes::from(req.content))
            .await?;
        ok(pb::WriteFileResponse { bytes_written: n })
    }

    async fn edit_file(&self, request: Request<pb::EditFileRequest>) -> Res<pb::EditFileResponse> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let id = convert::sandbox_id(&req.sandbox_id)?;
        let edit = Edit {
            old_string: req.old_string,
            new_string: req.new_string,
            replace_all: req.replace_all,
        };
        let n = self
            .engine
            .files(&id, Some(&req.path), |sandbox| tenant.check(sandbox))
            .await?
            .edit(&req.path, edit)
            .await?;
        ok(pb::EditFileResponse { replacements: n })
    }

    async fn list_files(
        &self,
        request: Request<pb::ListFilesRequest>,
    ) -> Res<pb::ListFilesResponse> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let id = convert::sandbox_id(&req.sandbox_id)?;
        let files = self
            .engine
            .files(&id, None, |sandbox| tenant.check(sandbox))
            .await?
            .list(&req.path)
            .await?;
        ok(pb::ListFilesResponse {
            files: files.into_iter().map(convert::file_info).collect(),
        })
    }

    async fn glob(&self, request: Request<pb::GlobRequest>) -> Res<pb::GlobResponse> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let id = convert::sandbox_id(&req.sandbox_id)?;
        let files = self
            .engine
            .files(&id, None, |sandbox| tenant.check(sandbox))
            .await?
            .glob(&req.pattern, &req.path)
            .await?;
        ok(pb::GlobResponse {
            files: files.into_iter().map(convert::file_info).collect(),
        })
    }

    async fn grep(&self, request: Request<pb::GrepRequest>) -> Res<pb::GrepResponse> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let id = convert::sandbox_id(&req.sandbox_id)?;
        let query = GrepQuery {
            pattern: req.pattern,
            path: req.path,
            include: req.include,
        };
        let r = self
            .engine
            .files(&id, None, |sandbox| tenant.check(sandbox))
            .await?
            .grep(query)
            .await?;
        ok(pb::GrepResponse {
            matches: r
                .matches
                .into_iter()
                .map(|m| pb::GrepMatch {
                    path: m.path,
                    line_number: m.line_number,
                    line: m.line,
                })
                .collect(),
            truncated: r.truncated,
        })
    }

    async fn upload_file(
        &self,
        request: Request<Streaming<pb::UploadFileRequest>>,
    ) -> Res<pb::UploadFileResponse> {
        let tenant = tenant(&request)?;
        let mut stream = request.into_inner();
        let first = stream.message().await?.ok_or_else(|| {
            Status::invalid_argument(
                "empty upload: the first message must name sandbox_id and path",
            )
        })?;
        let id = convert::sandbox_id(&first.sandbox_id)?;
        if first.path.is_empty() {
            return Err(Error::Invalid("path is required".into()).into());
        }
        let mut upload = self
            .engine
            .files(&id, Some(&first.path), |sandbox| tenant.check(sandbox))
            .await?
            .upload(&first.path)
            .await?;
        upload.write(&first.data).await?;
        while let Some(msg) = stream.message().await? {
            if (!msg.sandbox_id.is_empty() && msg.sandbox_id != first.sandbox_id)
                || (!msg.path.is_empty() && msg.path != first.path)
            {
                return Err(Error::Invalid(
                    "sandbox_id and path must not change during an upload".into(),
                )
                .into());
            }
            upload.write(&msg.data).await?;
        }
        let n = upload.commit().await?;
        ok(pb::UploadFileResponse { bytes_written: n })
    }

    type DownloadFileStream =
        Pin<Box<dyn Stream<Item = Result<pb::DownloadFileResponse, Status>> + Send>>;

    async fn download_file(
        &self,
        request: Request<pb::DownloadFileRequest>,
    ) -> Res<Self::DownloadFileStream> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let id = convert::sandbox_id(&req.sandbox_id)?;
        let reader = self
            .engine
            .files(&id, None, |sandbox| tenant.check(sandbox))
            .await?
            .download(&req.path)
            .await?;
        let path = req.path;
        let stream = futures::stream::unfold(Some(reader), move |reader| {
            let path = path.clone();
            async move {
                let mut reader = reader?;
                let mut buf = vec![0u8; DOWNLOAD_CHUNK];
                match reader.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok(pb::DownloadFileResponse { data: buf }), Some(reader)))
                    }
                    Err(e) => {
                        let err = crate::files::FileError::io("reading", &path, e);
                        Some((Err(Error::from(err).into_status()), None))
                    }
                }
            }
        });
        ok(Box::pin(stream))
    }
}
