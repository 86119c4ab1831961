//! The Grafana dashboards and provisioning files of `compose/grafana/`.
//!
//! * Every dashboard JSON has what Grafana provisioning needs (title, uid, panels whose targets
//!   query the datasource uid `prometheus`), and the provisioning files name that datasource and
//!   the folder the dashboards are mounted at.
//! * Every metric name in every PromQL expression is exposed by a real `cognition up` after a
//!   turn with a tool call (fake model): renaming a metric without updating the dashboards fails
//!   here. (`tests/tests/prometheus.rs` also runs every expression on a real Prometheus.)

use std::collections::BTreeSet;
use std::time::Duration;

use cognition_e2e::dashboards;
use cognition_e2e::procs::{Proc, free_addr, repo_root, wait_listening};
use cognition_e2e::tool_turn;
use cognition_fake_llm::FakeLlm;
use cognition_metrics::exposition;

#[test]
fn dashboards_and_provisioning_files_are_complete() -> anyhow::Result<()> {
    let dashboards = dashboards::load_all()?;
    let uids: BTreeSet<&str> = dashboards.iter().map(|d| d.uid.as_str()).collect();
    assert!(
        uids.contains("cognition-overview") && uids.contains("cognition-executor"),
        "{uids:?}"
    );
    for dashboard in &dashboards {
        for (panel, expr) in dashboard.exprs() {
            let names = dashboards::metric_names(expr)
                .map_err(|e| anyhow::anyhow!("{} / {panel:?}: {e}", dashboard.uid))?;
            assert!(
                !names.is_empty(),
                "{} / {panel:?}: no metric in {expr}",
                dashboard.uid
            );
        }
    }

    let provisioning = repo_root().join("compose/grafana/provisioning");
    let datasource = std::fs::read_to_string(provisioning.join("datasources/prometheus.yml"))?;
    for line in [
        "apiVersion: 1",
        "- name: Prometheus",
        &format!("uid: {}", dashboards::DATASOURCE_UID),
        "type: prometheus",
    ] {
        assert!(
            datasource.lines().any(|l| l.trim() == line),
            "datasources/prometheus.yml lacks {line:?}"
        );
    }
    let provider = std::fs::read_to_string(provisioning.join("dashboards/cognition.yml"))?;
    for line in [
        "apiVersion: 1",
        "type: file",
        "path: /var/lib/grafana/dashboards/cognition",
    ] {
        assert!(
            provider.lines().any(|l| l.trim() == line),
            "dashboards/cognition.yml lacks {line:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboards_query_is_exposed() -> anyhow::Result<()> {
    let dashboards = dashboards::load_all()?;
    let llm = FakeLlm::start().await;
    tool_turn::script(&llm);
    let dir = tempfile::tempdir()?;
    let (gateway, metrics) = (free_addr()?, free_addr()?);
    let mut env = vec![
        (
            "COGNITION_DATA_DIR",
            dir.path().join("data").display().to_string(),
        ),
        ("COGNITION_PORT", gateway.port().to_string()),
        ("COGNITION_METRICS_PORT", metrics.port().to_string()),
    ];
    env.extend(tool_turn::llm_env(&llm));
    let _up = Proc::spawn("cognition", &["up"], &env)?;
    wait_listening(gateway, Duration::from_secs(30)).await?;
    wait_listening(metrics, Duration::from_secs(30)).await?;
    let base = format!("http://{gateway}");
    tool_turn::wait_ready(&base).await?;
    tool_turn::run(&base).await?;

    // Scrape once the run has ended (its counters are written as it closes).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let samples = loop {
        let text = reqwest::get(format!("http://{metrics}/metrics"))
            .await?
            .error_for_status()?
            .text()
            .await?;
        let samples = exposition::parse(&text)
            .map_err(|e| anyhow::anyhow!("not the Prometheus text format: {e}\n{text}"))?;
        if samples
            .sum("cognition_runs_total", &[("outcome", "completed")])
            .unwrap_or(0.0)
            >= 1.0
        {
            break samples;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the run never ended:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let exposed: BTreeSet<&str> = samples.0.iter().map(|s| s.name.as_str()).collect();

    let mut queried = BTreeSet::new();
    let mut missing = Vec::new();
    for dashboard in &dashboards {
        for (panel, expr) in dashboard.exprs() {
            for name in dashboards::metric_names(expr)? {
                if !exposed.contains(name.as_str()) {
                    missing.push(format!("{} / {panel:?}: {name}", dashboard.uid));
                }
                queried.insert(name);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "metrics the dashboards query but `cognition up` does not expose:\n{}\nexposed: {exposed:?}",
        missing.join("\n")
    );
    // The dashboards cover every service: the gateway, the session service, the executor, and
    // the gRPC servers.
    for name in [
        "cognition_requests_total",
        "cognition_request_duration_seconds_bucket",
        "cognition_llm_call_duration_seconds_bucket",
        "cognition_llm_cost_microusd_total",
        "cognition_tool_calls_total",
        "cognition_active_sessions",
        "cognition_runs_total",
        "cognition_sandboxes",
        "cognition_execs_total",
        "cognition_exec_duration_seconds_bucket",
        "grpc_server_handled_total",
    ] {
        assert!(queried.contains(name), "no dashboard queries {name}");
    }
    Ok(())
}
