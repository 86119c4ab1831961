//! The exporter over real sockets: install (disabled, bind failure, on a listener, again as a
//! no-op), a real tonic server with the gRPC layer (unary OK, unary error, a stream the client
//! drops), and `/metrics` scraped over HTTP and parsed line by line.
//!
//! The recorder is global to the process, so everything runs in one test, in order.

use std::net::TcpListener;
use std::time::Duration;

use cognition_metrics::exposition::{self, Samples};
use cognition_metrics::grpc::GrpcMetricsLayer;
use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const HEALTH: &str = "grpc.health.v1.Health";

async fn scrape(addr: std::net::SocketAddr) -> anyhow::Result<(String, Samples)> {
    let res = reqwest::get(format!("http://{addr}/metrics")).await?;
    assert_eq!(res.status(), 200);
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = res.text().await?;
    let samples = exposition::parse(&text).map_err(|e| anyhow::anyhow!("{e}\n{text}"))?;
    Ok((text, samples))
}

async fn eventually(
    addr: std::net::SocketAddr,
    what: &str,
    check: impl Fn(&Samples) -> bool,
) -> anyhow::Result<Samples> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (text, samples) = scrape(addr).await?;
        if check(&samples) {
            return Ok(samples);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("{what} not seen in:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_serve_and_record_grpc_calls() -> anyhow::Result<()> {
    // Disabled: nothing installed.
    assert!(cognition_metrics::install("test", 0)?.is_none());
    assert!(!cognition_metrics::is_installed());

    // A port in use: a clear error naming the variable and the port.
    let taken = TcpListener::bind("0.0.0.0:0")?;
    let port = taken.local_addr()?.port();
    let err = cognition_metrics::install("test", port).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("COGNITION_METRICS_PORT") && message.contains(&port.to_string()),
        "{message}"
    );
    assert!(!cognition_metrics::is_installed());
    drop(taken);

    // Installed on a listener; a second install is a no-op returning the same exporter.
    let exporter = cognition_metrics::install_on("test", TcpListener::bind("127.0.0.1:0")?)?;
    let addr = exporter.addr();
    let again = cognition_metrics::install("another service", 1)?.expect("installed");
    assert_eq!(again.addr(), addr);
    assert!(cognition_metrics::is_installed());

    // Other paths are not served.
    let missing = reqwest::get(format!("http://{addr}/nope")).await?;
    assert_eq!(missing.status(), 404);

    // A real tonic server with the layer.
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let grpc_addr = listener.local_addr()?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(GrpcMetricsLayer)
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc_addr}"))?
        .connect()
        .await?;
    let mut client = HealthClient::new(channel);
    client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    let missing = client
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let mut watch = client
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner();
    assert!(watch.next().await.is_some(), "a first health status");
    drop(watch);

    let samples = eventually(addr, "the dropped Watch stream", |s| {
        s.sum(
            "grpc_server_handled_total",
            &[("grpc_method", "Watch"), ("grpc_code", "Canceled")],
        ) == Some(1.0)
    })
    .await?;
    let check = [("grpc_service", HEALTH), ("grpc_method", "Check")];
    assert_eq!(samples.sum("grpc_server_started_total", &check), Some(2.0));
    let ok = [
        ("grpc_service", HEALTH),
        ("grpc_method", "Check"),
        ("grpc_code", "OK"),
    ];
    assert_eq!(samples.sum("grpc_server_handled_total", &ok), Some(1.0));
    let not_found = [
        ("grpc_service", HEALTH),
        ("grpc_method", "Check"),
        ("grpc_code", "NotFound"),
    ];
    assert_eq!(
        samples.sum("grpc_server_handled_total", &not_found),
        Some(1.0)
    );
    assert_eq!(
        samples.sum("grpc_server_handling_seconds_count", &check),
        Some(2.0)
    );
    assert_eq!(
        samples.sum(
            "grpc_server_handling_seconds_bucket",
            &[("grpc_method", "Check"), ("le", "+Inf")]
        ),
        Some(2.0),
        "histograms have buckets"
    );
    assert_eq!(
        samples.sum(
            "grpc_server_started_total",
            &[("grpc_service", HEALTH), ("grpc_method", "Watch")]
        ),
        Some(1.0)
    );
    Ok(())
}
