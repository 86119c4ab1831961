//! A real Prometheus server scrapes the three services, started as separate processes with
//! their own metrics ports, after a turn in which a fake model calls `execute`.
//!
//! The generated configuration passes `promtool check config`; Prometheus reports the three
//! targets `up` through `/api/v1/targets`; instant queries find our series with the values the
//! turn produced, each under the job of the service that owns it; and every PromQL expression
//! of the Grafana dashboards (`compose/grafana/dashboards/`) is accepted by Prometheus and
//! returns data.
//!
//! Needs the `prometheus` and `promtool` binaries (Debian's `prometheus` package, installed by
//! `tests/scripts/deps.sh`): under CI their absence fails the test; elsewhere it is skipped
//! with a message.

use std::net::SocketAddr;
use std::time::Duration;

use cognition_e2e::procs::{Proc, free_addr, wait_listening};
use cognition_e2e::prometheus::{self, Job, Prometheus};
use cognition_e2e::{dashboards, tool_turn};
use cognition_fake_llm::FakeLlm;

const GATEWAY_JOB: &str = "cognition-gateway";
const SESSION_JOB: &str = "cognition-session";
const EXECUTOR_JOB: &str = "cognition-executor";

/// The `prometheus` and `promtool` binaries, or `None` (skip) off CI when they are missing.
fn binaries() -> anyhow::Result<Option<(std::path::PathBuf, std::path::PathBuf)>> {
    match (
        prometheus::find_binary("prometheus"),
        prometheus::find_binary("promtool"),
    ) {
        (Some(server), Some(promtool)) => Ok(Some((server, promtool))),
        _ if std::env::var_os("CI").is_some() => anyhow::bail!(
            "`prometheus` and `promtool` must be on PATH under CI (tests/scripts/deps.sh installs \
             Debian's `prometheus` package)"
        ),
        _ => {
            eprintln!(
                "skipped: no `prometheus`/`promtool` on PATH; run tests/scripts/deps.sh (as root) \
                 to install Debian's `prometheus` package"
            );
            Ok(None)
        }
    }
}

/// The three services on loopback, each with its own metrics port, the session service on the
/// fake model.
struct Services {
    gateway: SocketAddr,
    metrics: [(&'static str, SocketAddr); 3],
    _procs: [Proc; 3],
    _dir: tempfile::TempDir,
}

async fn start_services(llm: &FakeLlm) -> anyhow::Result<Services> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().display().to_string();
    let (executor, session, gateway) = (free_addr()?, free_addr()?, free_addr()?);
    let (executor_metrics, session_metrics, gateway_metrics) =
        (free_addr()?, free_addr()?, free_addr()?);
    let port = |a: SocketAddr| a.port().to_string();
    let executor_proc = Proc::spawn(
        "cognition-executor",
        &[],
        &[
            ("COGNITION_EXECUTOR_ADDR", executor.to_string()),
            ("COGNITION_DATA_DIR", data.clone()),
            ("COGNITION_METRICS_PORT", port(executor_metrics)),
        ],
    )?;
    let mut session_env = vec![
        ("COGNITION_SESSION_ADDR", session.to_string()),
        ("COGNITION_DATA_DIR", data),
        ("COGNITION_EXECUTOR_URL", format!("http://{executor}")),
        ("COGNITION_METRICS_PORT", port(session_metrics)),
    ];
    session_env.extend(tool_turn::llm_env(llm));
    let session_proc = Proc::spawn("cognition-session", &[], &session_env)?;
    let gateway_proc = Proc::spawn(
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
    Ok(Services {
        gateway,
        metrics: [
            (GATEWAY_JOB, gateway_metrics),
            (SESSION_JOB, session_metrics),
            (EXECUTOR_JOB, executor_metrics),
        ],
        _procs: [executor_proc, session_proc, gateway_proc],
        _dir: dir,
    })
}

/// The jobs whose series `promql` returns (its `job` labels), sorted.
async fn jobs_of(prometheus: &Prometheus, promql: &str) -> anyhow::Result<Vec<String>> {
    let mut jobs: Vec<String> = prometheus
        .query(&format!("count by (job) ({promql})"))
        .await?
        .into_iter()
        .map(|(labels, _)| labels["job"].as_str().unwrap_or_default().to_owned())
        .collect();
    jobs.sort();
    Ok(jobs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_service_and_answers_the_dashboards_queries() -> anyhow::Result<()>
{
    let Some((server, promtool)) = binaries()? else {
        return Ok(());
    };
    let dashboards = dashboards::load_all()?;
    let llm = FakeLlm::start().await;
    tool_turn::script(&llm);
    let services = start_services(&llm).await?;
    let base = format!("http://{}", services.gateway);
    tool_turn::wait_ready(&base).await?;
    tool_turn::run(&base).await?;

    let jobs: Vec<Job> = services
        .metrics
        .iter()
        .map(|(name, addr)| Job::new(name, *addr))
        .collect();
    let config = prometheus::config(&jobs);
    let mut prometheus = Prometheus::start(&server, &config, Duration::from_secs(30)).await?;
    let checked = prometheus::check_config(&promtool, &prometheus.config_file)?;
    assert!(checked.contains("SUCCESS"), "{checked}");

    prometheus
        .wait_targets_up(jobs.len(), Duration::from_secs(30))
        .await?;
    let targets = prometheus.active_targets().await?;
    for (job, addr) in &services.metrics {
        assert!(
            targets.iter().any(|t| t["labels"]["job"] == *job
                && t["scrapeUrl"] == format!("http://{addr}/metrics")
                && t["health"] == "up"),
            "{job} at {addr} not up: {targets:?}"
        );
    }
    // Three scrapes of every target, so that `rate(…[1m])` has points; and the turn's run
    // has ended (the session service counts it when the run closes, after the answer).
    prometheus
        .wait_query_at_least("count_over_time(up[1m])", 3.0, Duration::from_secs(30))
        .await?;
    prometheus
        .wait_query_at_least(
            "cognition_runs_total{outcome=\"completed\"}",
            1.0,
            Duration::from_secs(30),
        )
        .await?;

    // Our series, with the turn's values, each from the service that owns it.
    for (promql, at_least, job) in [
        (
            "cognition_requests_total{route=\"/sessions/{id}/messages\",status=\"200\"}",
            1.0,
            GATEWAY_JOB,
        ),
        (
            "cognition_request_duration_seconds_count{route=\"/sessions\"}",
            1.0,
            GATEWAY_JOB,
        ),
        (
            "grpc_server_handled_total{grpc_method=\"CreateSandbox\",grpc_code=\"OK\"}",
            1.0,
            EXECUTOR_JOB,
        ),
        (
            "grpc_server_handled_total{grpc_method=\"CreateSession\",grpc_code=\"OK\"}",
            1.0,
            SESSION_JOB,
        ),
        (
            "cognition_tool_calls_total{tool=\"execute\",status=\"ok\"}",
            1.0,
            SESSION_JOB,
        ),
        (
            "cognition_llm_call_duration_seconds_count{provider=\"openai_compatible\",model=\"fake-model\"}",
            2.0,
            SESSION_JOB,
        ),
        (
            "cognition_llm_tokens_total{kind=\"input\"}",
            tool_turn::INPUT_TOKENS as f64,
            SESSION_JOB,
        ),
        (
            "cognition_llm_tokens_total{kind=\"output\"}",
            tool_turn::OUTPUT_TOKENS as f64,
            SESSION_JOB,
        ),
        (
            "cognition_execs_total{backend=\"local\",outcome=\"exited\"}",
            1.0,
            EXECUTOR_JOB,
        ),
        ("cognition_exec_duration_seconds_count", 1.0, EXECUTOR_JOB),
        (
            "cognition_sandboxes{state=\"ready\",backend=\"local\"}",
            1.0,
            EXECUTOR_JOB,
        ),
    ] {
        let value = prometheus.query_sum(promql).await?;
        assert!(
            value >= at_least,
            "{promql} = {value}, expected >= {at_least}"
        );
        assert_eq!(jobs_of(&prometheus, promql).await?, [job], "{promql}");
    }
    // The fake model has no price: its cost series exists and stays 0.
    assert_eq!(
        prometheus
            .query_sum("cognition_llm_cost_microusd_total{model=\"fake-model\"}")
            .await?,
        0.0
    );
    assert_eq!(
        jobs_of(&prometheus, "cognition_llm_cost_microusd_total").await?,
        [SESSION_JOB]
    );

    // Every dashboard query parses and shows data.
    let mut empty = Vec::new();
    let mut count = 0;
    for dashboard in &dashboards {
        for (panel, expr) in dashboard.exprs() {
            let promql = dashboards::with_grafana_variables(expr);
            let result = prometheus
                .query(&promql)
                .await
                .map_err(|e| anyhow::anyhow!("{} / {panel:?}: {e}", dashboard.uid))?;
            if result.is_empty() {
                empty.push(format!("{} / {panel:?}: {promql}", dashboard.uid));
            }
            count += 1;
        }
    }
    assert!(count >= 10, "only {count} dashboard queries");
    assert!(
        empty.is_empty(),
        "dashboard queries without data:\n{}",
        empty.join("\n")
    );
    prometheus.stop()
}
