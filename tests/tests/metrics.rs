//! Prometheus metrics of the real binaries, scraped over HTTP and parsed line by line.
//!
//! * `cognition up` (three services in one process) with `COGNITION_METRICS_PORT`: one endpoint
//!   serves every service's metrics. A whole turn over the gateway (a fake OpenAI-compatible
//!   model calls `execute`, the command runs in a local sandbox, the model answers) moves the
//!   gateway's, the session service's and the executor's counters, and the gRPC server metrics
//!   of both gRPC services.
//! * The three services as separate processes, each with its own port: each endpoint serves its
//!   own service's metrics only; a turn with the `mock` model shows up in the session service's
//!   and the gateway's, a `CreateSandbox` and a failing command straight on the executor in its
//!   own.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use cognition_e2e::exec;
use cognition_e2e::procs::{Proc, free_addr, wait_listening};
use cognition_fake_llm::{FakeLlm, Reply};
use cognition_metrics::exposition::{self, Samples};
use cognition_proto::executor::v1 as pb;
use serde_json::json;

/// The tests pick free ports and then start processes that bind ephemeral ports of their own:
/// run one at a time so that one test's processes cannot take the other's chosen ports.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const EXECUTOR: &str = "cognition.executor.v1.ExecutorService";
const SESSION: &str = "cognition.session.v1.SessionService";

/// `GET /metrics`, checked line by line.
async fn scrape(addr: SocketAddr) -> anyhow::Result<(String, Samples)> {
    let res = reqwest::get(format!("http://{addr}/metrics")).await?;
    anyhow::ensure!(
        res.status() == 200,
        "GET /metrics answered {}",
        res.status()
    );
    let text = res.text().await?;
    let samples = exposition::parse(&text)
        .map_err(|e| anyhow::anyhow!("not the Prometheus text format: {e}\n{text}"))?;
    Ok((text, samples))
}

/// Scrapes until `check` holds (gauges refresh in the background), or fails showing the text.
async fn scrape_until(
    addr: SocketAddr,
    what: &str,
    check: impl Fn(&Samples) -> bool,
) -> anyhow::Result<Samples> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (text, samples) = scrape(addr).await?;
        if check(&samples) {
            return Ok(samples);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{what}: not seen in /metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples.sum(name, labels).unwrap_or(0.0)
}

async fn wait_ready(base: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    cognition_harness::wait_until(Duration::from_secs(30), || {
        let request = http.get(format!("{base}/ready"));
        async move {
            request
                .send()
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cognition_up_serves_every_services_metrics_on_one_endpoint() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let llm = FakeLlm::start().await;
    llm.push(Reply::tool_call("call_1", "execute", json!({"command": "echo hi"})).usage(30, 8));
    llm.push(Reply::tokens(["It ", "printed ", "hi."]).usage(45, 4));
    let dir = tempfile::tempdir()?;
    let (gateway, metrics) = (free_addr()?, free_addr()?);
    let _up = Proc::spawn(
        "cognition",
        &["up"],
        &[
            (
                "COGNITION_DATA_DIR",
                dir.path().join("data").display().to_string(),
            ),
            ("COGNITION_PORT", gateway.port().to_string()),
            ("COGNITION_METRICS_PORT", metrics.port().to_string()),
            ("COGNITION_LLM_PROVIDER", "openai_compatible".into()),
            ("COGNITION_LLM_MODEL", "fake-model".into()),
            ("COGNITION_LLM_BASE_URL", llm.openai_base_url()),
            ("COGNITION_LLM_MAX_RETRIES", "0".into()),
        ],
    )?;
    wait_listening(gateway, Duration::from_secs(30)).await?;
    wait_listening(metrics, Duration::from_secs(30)).await?;
    let base = format!("http://{gateway}");
    wait_ready(&base).await?;

    let http = reqwest::Client::new();
    let created: serde_json::Value = http
        .post(format!("{base}/sessions"))
        .json(&json!({"title": "metrics"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = created["id"].as_str().expect("session id").to_owned();
    let turn = http
        .post(format!("{base}/sessions/{id}/messages"))
        .json(&json!({"content": "run echo hi"}))
        .send()
        .await?;
    assert_eq!(turn.status(), 200);
    let stream = turn.text().await?;
    assert!(stream.contains("event: done"), "{stream}");
    assert!(stream.contains("\"exit_code\":0"), "{stream}");
    let got = http.get(format!("{base}/sessions/{id}")).send().await?;
    assert_eq!(got.status(), 200);
    let nowhere = http.get(format!("{base}/no/such/path")).send().await?;
    assert_eq!(nowhere.status(), 404);

    // Gauges settle after the run and the exec end; every counter is read from that scrape.
    let samples = scrape_until(metrics, "the turn's run and exec to end", |s| {
        value(s, "cognition_runs_total", &[("outcome", "completed")]) == 1.0
            && value(s, "cognition_active_sessions", &[]) == 0.0
            && value(s, "cognition_execs_running", &[]) == 0.0
            && value(
                s,
                "cognition_sandboxes",
                &[("state", "ready"), ("backend", "local")],
            ) == 1.0
    })
    .await?;

    // Gateway: routes are templates, unknown paths are `unmatched`.
    for (method, route, status) in [
        ("POST", "/sessions", "201"),
        ("POST", "/sessions/{id}/messages", "200"),
        ("GET", "/sessions/{id}", "200"),
        ("GET", "unmatched", "404"),
    ] {
        let labels = [("method", method), ("route", route), ("status", status)];
        assert_eq!(
            value(&samples, "cognition_requests_total", &labels),
            1.0,
            "{labels:?}"
        );
    }
    assert_eq!(
        value(
            &samples,
            "cognition_request_duration_seconds_count",
            &[("method", "GET"), ("route", "/sessions/{id}")]
        ),
        1.0
    );
    assert!(
        samples
            .matching("cognition_requests_total", &[])
            .all(|s| !s.labels["route"].contains(&id)),
        "raw paths must not become labels"
    );

    // Session service.
    assert_eq!(
        value(
            &samples,
            "cognition_tool_calls_total",
            &[("tool", "execute"), ("status", "ok")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "cognition_llm_call_duration_seconds_count",
            &[("provider", "openai_compatible"), ("model", "fake-model")]
        ),
        2.0
    );
    assert!(value(&samples, "cognition_events_appended_total", &[]) >= 5.0);

    // Executor.
    let local = [("backend", "local")];
    assert!(value(&samples, "cognition_sandbox_create_seconds_count", &local) >= 1.0);
    assert_eq!(
        value(
            &samples,
            "cognition_execs_total",
            &[("backend", "local"), ("outcome", "exited")]
        ),
        1.0
    );
    assert_eq!(
        value(&samples, "cognition_exec_duration_seconds_count", &local),
        1.0
    );

    // gRPC servers of both services, in the same exposition.
    assert!(
        value(
            &samples,
            "grpc_server_handled_total",
            &[
                ("grpc_service", EXECUTOR),
                ("grpc_method", "CreateSandbox"),
                ("grpc_code", "OK")
            ]
        ) >= 1.0
    );
    assert!(
        value(
            &samples,
            "grpc_server_started_total",
            &[("grpc_service", EXECUTOR), ("grpc_method", "Exec")]
        ) >= 1.0
    );
    assert_eq!(
        value(
            &samples,
            "grpc_server_handled_total",
            &[
                ("grpc_service", SESSION),
                ("grpc_method", "CreateSession"),
                ("grpc_code", "OK")
            ]
        ),
        1.0
    );
    assert!(
        value(
            &samples,
            "grpc_server_handling_seconds_count",
            &[("grpc_service", SESSION), ("grpc_method", "CreateSession")]
        ) >= 1.0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_processes_each_serve_their_own_metrics() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir()?;
    let data = dir.path().display().to_string();
    let (executor, session, gateway) = (free_addr()?, free_addr()?, free_addr()?);
    let (executor_metrics, session_metrics, gateway_metrics) =
        (free_addr()?, free_addr()?, free_addr()?);
    let port = |a: SocketAddr| a.port().to_string();

    let _executor = Proc::spawn(
        "cognition-executor",
        &[],
        &[
            ("COGNITION_EXECUTOR_ADDR", executor.to_string()),
            ("COGNITION_DATA_DIR", data.clone()),
            ("COGNITION_METRICS_PORT", port(executor_metrics)),
        ],
    )?;
    let _session = Proc::spawn(
        "cognition-session",
        &[],
        &[
            ("COGNITION_SESSION_ADDR", session.to_string()),
            ("COGNITION_DATA_DIR", data.clone()),
            ("COGNITION_EXECUTOR_URL", format!("http://{executor}")),
            ("COGNITION_METRICS_PORT", port(session_metrics)),
        ],
    )?;
    let _gateway = Proc::spawn(
        "cognition-gateway",
        &[],
        &[
            ("COGNITION_HOST", "127.0.0.1".into()),
            ("COGNITION_PORT", port(gateway)),
            ("COGNITION_SESSION_URL", format!("http://{session}")),
            ("COGNITION_METRICS_PORT", port(gateway_metrics)),
        ],
    )?;
    for addr in [
        executor,
        session,
        gateway,
        executor_metrics,
        session_metrics,
        gateway_metrics,
    ] {
        wait_listening(addr, Duration::from_secs(30)).await?;
    }
    let base = format!("http://{gateway}");
    wait_ready(&base).await?;
    let http = reqwest::Client::new();
    let created: serde_json::Value = http
        .post(format!("{base}/sessions"))
        .json(&json!({}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = created["id"].as_str().expect("session id");
    // A turn with the default `mock` model (no tool calls).
    let turn = http
        .post(format!("{base}/sessions/{id}/messages"))
        .json(&json!({"content": "hello"}))
        .send()
        .await?
        .text()
        .await?;
    assert!(turn.contains("event: done"), "{turn}");

    let mut client =
        pb::executor_service_client::ExecutorServiceClient::connect(format!("http://{executor}"))
            .await?;
    let sandbox = client
        .create_sandbox(pb::CreateSandboxRequest {
            labels: HashMap::from([("test".to_owned(), "metrics".to_owned())]),
            ..Default::default()
        })
        .await?
        .into_inner()
        .sandbox
        .expect("sandbox");
    let ran = exec::run_shell(&mut client, &sandbox.id, "exit 3").await?;
    assert_eq!(ran.exited.and_then(|e| e.exit_code), Some(3));
    let missing = client
        .get_sandbox(pb::GetSandboxRequest {
            sandbox_id: "no-such-sandbox".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    let executor_samples = scrape_until(executor_metrics, "the exec to end", |s| {
        value(s, "cognition_execs_running", &[]) == 0.0
            && value(
                s,
                "cognition_sandboxes",
                &[("state", "ready"), ("backend", "local")],
            ) == 1.0
    })
    .await?;
    let create_ok = [
        ("grpc_service", EXECUTOR),
        ("grpc_method", "CreateSandbox"),
        ("grpc_code", "OK"),
    ];
    assert_eq!(
        value(&executor_samples, "grpc_server_handled_total", &create_ok),
        1.0
    );
    assert_eq!(
        value(
            &executor_samples,
            "grpc_server_handled_total",
            &[
                ("grpc_service", EXECUTOR),
                ("grpc_method", "GetSandbox"),
                ("grpc_code", "NotFound")
            ]
        ),
        1.0
    );
    // A program failing is an exec that ran and exited, not an error.
    assert_eq!(
        value(
            &executor_samples,
            "cognition_execs_total",
            &[("backend", "local"), ("outcome", "exited")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &executor_samples,
            "cognition_sandbox_create_seconds_count",
            &[("backend", "local")]
        ),
        1.0
    );
    assert_eq!(
        value(&executor_samples, "cognition_requests_total", &[]),
        0.0,
        "the executor process serves no gateway metrics"
    );

    let session_samples = scrape_until(session_metrics, "the turn's run to end", |s| {
        value(s, "cognition_runs_total", &[("outcome", "completed")]) == 1.0
    })
    .await?;
    assert_eq!(
        value(
            &session_samples,
            "cognition_llm_call_duration_seconds_count",
            &[("provider", "mock")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &session_samples,
            "grpc_server_handled_total",
            &[
                ("grpc_service", SESSION),
                ("grpc_method", "CreateSession"),
                ("grpc_code", "OK")
            ]
        ),
        1.0
    );
    assert!(value(&session_samples, "cognition_events_appended_total", &[]) >= 1.0);
    assert_eq!(
        value(&session_samples, "cognition_execs_total", &[]),
        0.0,
        "the session process serves no executor metrics"
    );

    let (_, gateway_samples) = scrape(gateway_metrics).await?;
    assert_eq!(
        value(
            &gateway_samples,
            "cognition_requests_total",
            &[
                ("method", "POST"),
                ("route", "/sessions"),
                ("status", "201")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(&gateway_samples, "grpc_server_started_total", &[]),
        0.0,
        "the gateway serves no gRPC"
    );
    Ok(())
}
