//! An in-process stand-in for the executor's gRPC service (a remote service in production):
//! it holds sandboxes with labels, answers `ListSandboxes` by label selector, deletes on
//! `DeleteSandbox`, and records both calls. Every other RPC is unimplemented.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use cognition_proto::executor::v1 as pb;
use cognition_proto::executor::v1::executor_service_server::{
    ExecutorService, ExecutorServiceServer,
};
use futures::Stream;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

#[derive(Debug, Default)]
pub struct Recorded {
    pub list_selectors: Vec<HashMap<String, String>>,
    pub deleted: Vec<String>,
}

#[derive(Clone, Default)]
pub struct FakeExecutor {
    sandboxes: Arc<Mutex<Vec<pb::Sandbox>>>,
    pub recorded: Arc<Mutex<Recorded>>,
}

impl FakeExecutor {
    pub fn add_sandbox(&self, id: &str, labels: &[(&str, &str)]) {
        self.sandboxes.lock().unwrap().push(pb::Sandbox {
            id: id.to_owned(),
            state: pb::SandboxState::Ready as i32,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        });
    }

    pub fn sandbox_ids(&self) -> Vec<String> {
        self.sandboxes
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.id.clone())
            .collect()
    }

    /// Serves on 127.0.0.1:0 until `shutdown`; returns the address.
    pub async fn start(&self, shutdown: CancellationToken) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = ExecutorServiceServer::new(self.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    shutdown.cancelled_owned(),
                )
                .await
                .unwrap();
        });
        addr
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn nope<T>() -> Result<T, Status> {
    Err(Status::unimplemented("not part of the fake"))
}

#[tonic::async_trait]
impl ExecutorService for FakeExecutor {
    async fn list_sandboxes(
        &self,
        request: Request<pb::ListSandboxesRequest>,
    ) -> Result<Response<pb::ListSandboxesResponse>, Status> {
        let selector = request.into_inner().label_selector;
        self.recorded
            .lock()
            .unwrap()
            .list_selectors
            .push(selector.clone());
        let sandboxes = self
            .sandboxes
            .lock()
            .unwrap()
            .iter()
            .filter(|s| selector.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .cloned()
            .collect();
        Ok(Response::new(pb::ListSandboxesResponse { sandboxes }))
    }

    async fn delete_sandbox(
        &self,
        request: Request<pb::DeleteSandboxRequest>,
    ) -> Result<Response<pb::DeleteSandboxResponse>, Status> {
        let id = request.into_inner().sandbox_id;
        self.recorded.lock().unwrap().deleted.push(id.clone());
        let mut sandboxes = self.sandboxes.lock().unwrap();
        let before = sandboxes.len();
        sandboxes.retain(|s| s.id != id);
        if sandboxes.len() == before {
            return Err(Status::not_found("no such sandbox"));
        }
        Ok(Response::new(pb::DeleteSandboxResponse {}))
    }

    async fn create_sandbox(
        &self,
        _: Request<pb::CreateSandboxRequest>,
    ) -> Result<Response<pb::CreateSandboxResponse>, Status> {
        nope()
    }
    async fn get_sandbox(
        &self,
        _: Request<pb::GetSandboxRequest>,
    ) -> Result<Response<pb::GetSandboxResponse>, Status> {
        nope()
    }
    async fn renew_sandbox(
        &self,
        _: Request<pb::RenewSandboxRequest>,
    ) -> Result<Response<pb::RenewSandboxResponse>, Status> {
        nope()
    }
    type ExecStream = BoxStream<pb::ExecResponse>;
    async fn exec(
        &self,
        _: Request<Streaming<pb::ExecRequest>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        nope()
    }
    async fn signal_exec(
        &self,
        _: Request<pb::SignalExecRequest>,
    ) -> Result<Response<pb::SignalExecResponse>, Status> {
        nope()
    }
    async fn get_exec(
        &self,
        _: Request<pb::GetExecRequest>,
    ) -> Result<Response<pb::GetExecResponse>, Status> {
        nope()
    }
    async fn list_execs(
        &self,
        _: Request<pb::ListExecsRequest>,
    ) -> Result<Response<pb::ListExecsResponse>, Status> {
        nope()
    }
    async fn wait_exec(
        &self,
        _: Request<pb::WaitExecRequest>,
    ) -> Result<Response<pb::WaitExecResponse>, Status> {
        nope()
    }
    async fn read_file(
        &self,
        _: Request<pb::ReadFileRequest>,
    ) -> Result<Response<pb::ReadFileResponse>, Status> {
        nope()
    }
    async fn write_file(
        &self,
        _: Request<pb::WriteFileRequest>,
    ) -> Result<Response<pb::WriteFileResponse>, Status> {
        nope()
    }
    async fn edit_file(
        &self,
        _: Request<pb::EditFileRequest>,
    ) -> Result<Response<pb::EditFileResponse>, Status> {
        nope()
    }
    async fn list_files(
        &self,
        _: Request<pb::ListFilesRequest>,
    ) -> Result<Response<pb::ListFilesResponse>, Status> {
        nope()
    }
    async fn glob(
        &self,
        _: Request<pb::GlobRequest>,
    ) -> Result<Response<pb::GlobResponse>, Status> {
        nope()
    }
    async fn grep(
        &self,
        _: Request<pb::GrepRequest>,
    ) -> Result<Response<pb::GrepResponse>, Status> {
        nope()
    }
    async fn upload_file(
        &self,
        _: Request<Streaming<pb::UploadFileRequest>>,
    ) -> Result<Response<pb::UploadFileResponse>, Status> {
        nope()
    }
    type DownloadFileStream = BoxStream<pb::DownloadFileResponse>;
    async fn download_file(
        &self,
        _: Request<pb::DownloadFileRequest>,
    ) -> Result<Response<Self::DownloadFileStream>, Status> {
        nope()
    }
}
