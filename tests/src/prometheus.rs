//! A real Prometheus server for tests (Debian's `prometheus` package, installed by
//! `tests/scripts/deps.sh`): a generated configuration that scrapes given targets every second,
//! storage in a temporary folder, the web API on a free loopback port, and the HTTP API calls
//! the tests need (targets, instant queries). Killed when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// `name` (`prometheus`, `promtool`) on `PATH`, if installed.
pub fn find_binary(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

/// A scrape job: its `job` label and the `host:port` serving `/metrics`.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub target: SocketAddr,
}

impl Job {
    pub fn new(name: &str, target: SocketAddr) -> Job {
        Job {
            name: name.to_owned(),
            target,
        }
    }
}

/// The configuration file: one static job per entry, scraped (and rules evaluated) every second.
pub fn config(jobs: &[Job]) -> String {
    let mut yaml = String::from(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
    );
    for job in jobs {
        yaml.push_str(&format!(
            "  - job_name: '{}'\n    metrics_path: /metrics\n    static_configs:\n      - targets: ['{}']\n",
            job.name, job.target
        ));
    }
    yaml
}

/// `promtool check config <file>`: its output, or an error with it.
pub fn check_config(promtool: &Path, file: &Path) -> anyhow::Result<String> {
    let out = Command::new(promtool)
        .arg("check")
        .arg("config")
        .arg(file)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(
        out.status.success(),
        "promtool check config failed:\n{text}"
    );
    Ok(text)
}

/// A running Prometheus server.
pub struct Prometheus {
    child: Child,
    /// Where its web API listens.
    pub addr: SocketAddr,
    /// The configuration file it was started with.
    pub config_file: PathBuf,
    log_file: PathBuf,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts `binary` with `config` (see [`config`]), storage in a temporary folder and the web
    /// API on a free loopback port; returns once `/-/ready` answers 200 (at most `timeout`).
    pub async fn start(binary: &Path, config: &str, timeout: Duration) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config)?;
        let log_file = dir.path().join("prometheus.log");
        let log = std::fs::File::create(&log_file)?;
        let addr = crate::procs::free_addr()?;
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {}: {e}", binary.display()))?;
        let mut prometheus = Prometheus {
            child,
            addr,
            config_file,
            log_file,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
            _dir: dir,
        };
        let ready = format!("http://{addr}/-/ready");
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            prometheus.ensure_running()?;
            if let Ok(res) = prometheus.http.get(&ready).send().await
                && res.status() == 200
            {
                return Ok(prometheus);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "Prometheus not ready within {timeout:?}; its log:\n{}",
                prometheus.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!("Prometheus exited ({status}); its log:\n{}", self.log());
        }
        Ok(())
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Value> {
        let res = self
            .http
            .get(format!("http://{}{path}", self.addr))
            .query(query)
            .send()
            .await?;
        let status = res.status();
        let body: Value = res.json().await?;
        anyhow::ensure!(
            status == 200 && body["status"] == "success",
            "GET {path} {query:?} answered {status}: {body}"
        );
        Ok(body["data"].clone())
    }

    /// `GET /api/v1/targets`: the active targets.
    pub async fn active_targets(&self) -> anyhow::Result<Vec<Value>> {
        let data = self.get("/api/v1/targets", &[("state", "active")]).await?;
        Ok(data["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Waits (at most `timeout`) until exactly `count` active targets report `health: up`;
    /// fails showing the targets (with their last scrape errors) and the server's log.
    pub async fn wait_targets_up(&mut self, count: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.ensure_running()?;
            let targets = self.active_targets().await?;
            if targets.len() == count && targets.iter().all(|t| t["health"] == "up") {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{count} targets not up within {timeout:?}: {}\nPrometheus log:\n{}",
                serde_json::to_string_pretty(&targets)?,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `GET /api/v1/query` (instant query, now): the result vector's `(labels, value)` pairs
    /// (`NaN` included). A syntax error or a non-vector result is an error.
    pub async fn query(&self, promql: &str) -> anyhow::Result<Vec<(Value, f64)>> {
        let data = self.get("/api/v1/query", &[("query", promql)]).await?;
        anyhow::ensure!(
            data["resultType"] == "vector",
            "{promql}: a {} result, not a vector",
            data["resultType"]
        );
        let mut samples = Vec::new();
        for sample in data["result"].as_array().cloned().unwrap_or_default() {
            let value = sample["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| anyhow::anyhow!("{promql}: no value in {sample}"))?;
            samples.push((sample["metric"].clone(), value));
        }
        Ok(samples)
    }

    /// The sum of an instant query's values (0 when it has none).
    pub async fn query_sum(&self, promql: &str) -> anyhow::Result<f64> {
        Ok(self.query(promql).await?.iter().map(|(_, v)| v).sum())
    }

    /// Waits (at most `timeout`) until `promql` has a result whose values are all `>= at_least`.
    pub async fn wait_query_at_least(
        &mut self,
        promql: &str,
        at_least: f64,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.ensure_running()?;
            let samples = self.query(promql).await?;
            if !samples.is_empty() && samples.iter().all(|(_, v)| *v >= at_least) {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{promql}: not >= {at_least} within {timeout:?} (last: {samples:?})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Kills the server; fails if it had already exited on its own.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.ensure_running()?;
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
