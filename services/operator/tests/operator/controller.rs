//! The controller loop: `run` lists CognitionTenants, reconciles them through the same API, and
//! returns once shutdown is requested.

use std::time::Duration;

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::fake_api::FakeApi;
use crate::{SOURCE_SECRET_PATH, TENANT_PATH, acme, config, source_secret};

const LIST_PATH: &str = "/apis/cognition.dev/v1/namespaces/cognition-system/cognitiontenants";

/// Polls `condition` every 10 ms for at most 5 s.
async fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn run_reconciles_listed_tenants_and_stops_on_shutdown() {
    let fake = FakeApi::default();
    fake.put(TENANT_PATH, acme());
    fake.put(SOURCE_SECRET_PATH, source_secret("sk-test-1"));
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = fake.clone();
    let watches = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let parked = watches.clone();
    tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            if request.uri().path() != LIST_PATH {
                respond.send_response(server.serve(request).await);
                continue;
            }
            let query = request.uri().query().unwrap_or_default().to_owned();
            if query.contains("watch=true") {
                // Keep the watch open (unanswered) until the controller stops.
                parked.lock().unwrap().push((query, respond));
                continue;
            }
            let list = json!({
                "apiVersion": "cognition.dev/v1",
                "kind": "CognitionTenantList",
                "metadata": {"resourceVersion": "1"},
                "items": [server.get(TENANT_PATH).unwrap()]
            });
            respond.send_response(
                Response::builder()
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Body::from(serde_json::to_vec(&list).unwrap()))
                    .unwrap(),
            );
        }
    });
    let client = Client::new(service, "default");
    let mut config = config();
    config.watch_namespace = "cognition-system".into();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(cognition_operator::run(config, client, shutdown.clone()));

    let status_path = format!("{TENANT_PATH}/status");
    let reconciled = wait_until(|| {
        fake.get(TENANT_PATH).unwrap()["status"]["conditions"][0]["reason"] == "Provisioned"
    })
    .await;
    assert!(
        reconciled,
        "no reconcile within 5 s: {:#?}",
        fake.take_calls()
    );
    let calls = fake.take_calls();
    assert_eq!(calls.first().unwrap().path, SOURCE_SECRET_PATH);
    assert_eq!(calls.last().unwrap().path, status_path);
    assert!(
        fake.get("/api/v1/namespaces/cognition-tenant-acme")
            .is_some()
    );
    assert!(
        watches
            .lock()
            .unwrap()
            .iter()
            .any(|(q, _)| q.contains("resourceVersion=1")),
        "the controller watches from the listed version"
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("run returns within 5 s of shutdown")
        .unwrap();
}
