//! Every gRPC service answers `grpc.health.v1` and lists itself over server reflection, so
//! tools such as grpcurl and clients in other languages can discover the API.

use cognition_harness::{StackOptions, TestStack};
use tokio_stream::StreamExt as _;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

async fn channel(addr: std::net::SocketAddr) -> anyhow::Result<tonic::transport::Channel> {
    Ok(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await?,
    )
}

async fn listed_services(addr: std::net::SocketAddr) -> anyhow::Result<Vec<String>> {
    let mut client = ServerReflectionClient::new(channel(addr).await?);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let response = responses
        .next()
        .await
        .ok_or_else(|| anyhow::anyhow!("no reflection answer"))??;
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            Ok(list.service.into_iter().map(|s| s.name).collect())
        }
        other => anyhow::bail!("unexpected reflection answer {other:?}"),
    }
}

async fn health(addr: std::net::SocketAddr, service: &str) -> anyhow::Result<i32> {
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel(addr).await?);
    let answer = client
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(answer.into_inner().status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_on_every_grpc_service() -> anyhow::Result<()> {
    let stack = TestStack::start(StackOptions::default()).await?;
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    for (addr, service) in [
        (stack.session, "cognition.session.v1.SessionService"),
        (stack.executor, "cognition.executor.v1.ExecutorService"),
    ] {
        let services = listed_services(addr).await?;
        assert!(
            services.iter().any(|s| s == service),
            "{service} not in {services:?}"
        );
        assert!(
            services.iter().any(|s| s == "grpc.health.v1.Health"),
            "health not in {services:?}"
        );
        assert_eq!(health(addr, "").await?, serving);
        assert_eq!(health(addr, service).await?, serving);
    }
    stack.stop().await?;
    Ok(())
}
