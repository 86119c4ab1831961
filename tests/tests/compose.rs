//! The compose deployment (`compose/`), for real: the images are built offline
//! (`compose/build-images.sh` from the binaries of this build, `compose/sandbox/build.sh`), the
//! minimal stack (gateway, session service on PostgreSQL, executor on the Docker backend) comes
//! up with `docker-compose` under a unique project name, with the test overlay
//! `compose/test/fake-llm.yml` (the scripted `cognition-fake-llm` container on the project's own
//! network, so no traffic leaves loopback or that network). A turn through the published gateway
//! port runs `echo hi` in a sandbox container, whose labels and hardening are checked with
//! `docker inspect`; then the session is deleted, the stack torn down with `down -v`, and nothing
//! of it may remain: no container, network or volume of the project (anonymous volumes
//! included), no sandbox container of its sandbox root, no sandbox folder. A guard force-removes
//! everything when the test fails half-way.
//!
//! Also: both stacks' files (`docker-compose.yml`, `docker-compose.full.yml`) pass
//! `docker-compose config`, with the public images and with `.env.local`, and the full stack's
//! `prometheus.yml` passes `promtool check config`.
//!
//! Needs Docker and docker-compose (v1 syntax): under CI their absence fails the tests; elsewhere
//! they are skipped with a message.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use cognition_e2e::procs::{free_addr, repo_root};
use serde_json::{Value, json};

/// Bounds of the slow steps.
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);
const UP_TIMEOUT: Duration = Duration::from_secs(180);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(90);
const TURN_TIMEOUT: Duration = Duration::from_secs(60);
const DOWN_TIMEOUT: Duration = Duration::from_secs(120);
/// Variables of `.env.local` that a caller's environment would override: the test removes them
/// so that the file under test decides.
const IMAGE_VARIABLES: [&str; 6] = [
    "COGNITION_GATEWAY_IMAGE",
    "COGNITION_SESSION_IMAGE",
    "COGNITION_EXECUTOR_IMAGE",
    "COGNITION_SANDBOX_IMAGE",
    "COGNITION_FAKE_LLM_IMAGE",
    "POSTGRES_IMAGE",
];

mod tools {
    //! Finding docker and docker-compose, and running commands with a bound.

    use super::*;

    /// Whether the tests can run: `Ok(false)` (skip, with the reason printed) off CI when Docker
    /// or docker-compose is missing; an error under CI.
    pub fn available() -> anyhow::Result<bool> {
        let missing = if !on_path("docker-compose") {
            Some("docker-compose is not on PATH")
        } else if !std::process::Command::new("docker")
            .arg("info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            Some("the Docker engine does not answer (`docker info` failed)")
        } else {
            None
        };
        match missing {
            None => Ok(true),
            Some(why) if std::env::var_os("CI").is_some() => {
                anyhow::bail!("{why}: the compose tests need Docker and docker-compose under CI")
            }
            Some(why) => {
                eprintln!("skipped: {why}; the compose tests need Docker and docker-compose");
                Ok(false)
            }
        }
    }

    pub fn on_path(name: &str) -> bool {
        std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
    }

    /// Runs `command` to completion within `timeout` (killed after it); its stdout, or an error
    /// with both outputs.
    pub async fn run(
        mut command: tokio::process::Command,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let shown = format!("{:?}", command.as_std());
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out = tokio::time::timeout(timeout, command.output())
            .await
            .map_err(|_| anyhow::anyhow!("{shown} did not finish within {timeout:?}"))??;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        anyhow::ensure!(
            out.status.success(),
            "{shown} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(stdout)
    }

    /// `docker ARGS` within 30 s; its stdout.
    pub async fn docker(args: &[&str]) -> anyhow::Result<String> {
        let mut command = tokio::process::Command::new("docker");
        command.args(args);
        run(command, Duration::from_secs(30)).await
    }

    /// The non-empty lines of `docker ARGS` (ids, names).
    pub async fn docker_lines(args: &[&str]) -> anyhow::Result<Vec<String>> {
        Ok(docker(args)
            .await?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }
}

mod stack {
    //! One compose project of the minimal stack plus the fake-LLM overlay, and its guard.

    use super::*;

    /// A project: unique name, its own sandbox root and gateway port. Dropping it force-removes
    /// whatever is left (sandbox containers of its root, the project's containers, networks and
    /// volumes, the sandbox folder).
    pub struct Project {
        pub name: String,
        pub sandbox_root: PathBuf,
        /// The folder holding `sandbox_root` (removed with it).
        dir: PathBuf,
        pub gateway_port: u16,
    }

    impl Project {
        pub fn new() -> anyhow::Result<Project> {
            let suffix = uuid::Uuid::new_v4().simple().to_string();
            let name = format!("cgntest{}", &suffix[..10]);
            // Short: the agent's socket path (<root>/<id>/agent/agent.sock) must fit in 108 bytes.
            let dir = std::env::temp_dir().join(format!("cognition-{name}"));
            let sandbox_root = dir.join("sandboxes");
            std::fs::create_dir_all(&sandbox_root)?;
            Ok(Project {
                name,
                sandbox_root,
                dir,
                gateway_port: free_addr()?.port(),
            })
        }

        pub fn base_url(&self) -> String {
            format!("http://127.0.0.1:{}", self.gateway_port)
        }

        pub fn root_label(&self) -> String {
            format!("executor.cognition.io/root={}", self.sandbox_root.display())
        }

        pub fn project_label(&self) -> String {
            format!("com.docker.compose.project={}", self.name)
        }

        /// `docker-compose -p NAME -f docker-compose.yml -f test/fake-llm.yml --env-file
        /// .env.local ARGS`, with this project's settings in the environment.
        pub fn compose(&self, args: &[&str]) -> tokio::process::Command {
            let mut command = tokio::process::Command::new("docker-compose");
            self.configure(command.as_std_mut(), args);
            command
        }

        fn configure(&self, command: &mut std::process::Command, args: &[&str]) {
            let root = repo_root();
            command
                .current_dir(root)
                .args(["-p", &self.name])
                .args(["-f", "compose/docker-compose.yml"])
                .args(["-f", "compose/test/fake-llm.yml"])
                .args(["--env-file", "compose/.env.local"])
                .args(args)
                .env("COGNITION_SANDBOX_ROOT", &self.sandbox_root)
                .env("COGNITION_GATEWAY_PORT", self.gateway_port.to_string())
                .env("COGNITION_PUBLISH_ADDR", "127.0.0.1")
                .env("POSTGRES_FSYNC", "off");
            for var in IMAGE_VARIABLES {
                command.env_remove(var);
            }
        }

        /// The last log lines of every service (printed when the test fails).
        pub async fn logs(&self) -> String {
            let command = self.compose(&["logs", "--no-color", "--tail", "80"]);
            match tools::run(command, Duration::from_secs(30)).await {
                Ok(text) => text,
                Err(e) => format!("(no logs: {e})"),
            }
        }

        /// Blocking best-effort removal of everything this project may have left behind.
        fn force_clean(&self) {
            let quiet = |command: &mut std::process::Command| {
                let _ = command
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            };
            let ids = |args: &[&str]| -> Vec<String> {
                std::process::Command::new("docker")
                    .args(args)
                    .output()
                    .map(|o| {
                        String::from_utf8_lossy(&o.stdout)
                            .split_whitespace()
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let sandboxes = ids(&[
                "ps",
                "-aq",
                "--filter",
                &format!("label={}", self.root_label()),
            ]);
            if !sandboxes.is_empty() {
                quiet(
                    std::process::Command::new("docker")
                        .args(["rm", "-fv"])
                        .args(&sandboxes),
                );
            }
            let mut down = std::process::Command::new("docker-compose");
            self.configure(
                &mut down,
                &["down", "-v", "--remove-orphans", "--timeout", "5"],
            );
            quiet(&mut down);
            let label = format!("label={}", self.project_label());
            let containers = ids(&["ps", "-aq", "--filter", &label]);
            if !containers.is_empty() {
                quiet(
                    std::process::Command::new("docker")
                        .args(["rm", "-fv"])
                        .args(&containers),
                );
            }
            for kind in ["network", "volume"] {
                let left = ids(&[kind, "ls", "-q", "--filter", &label]);
                if !left.is_empty() {
                    quiet(
                        std::process::Command::new("docker")
                            .args([kind, "rm"])
                            .args(&left),
                    );
                }
            }
            if std::fs::remove_dir_all(&self.dir).is_err() && self.dir.exists() {
                // Folders the executor (root in its container) made may not be ours to delete:
                // remove them from a throwaway container of the runtime image.
                let parent = self.dir.parent().unwrap_or(Path::new("/"));
                let name = self.dir.file_name().unwrap_or_default().to_string_lossy();
                quiet(std::process::Command::new("docker").args([
                    "run",
                    "--rm",
                    "--network",
                    "none",
                    "--user",
                    "0:0",
                    "-v",
                    &format!("{}:/cleanup", parent.display()),
                    "--entrypoint",
                    "rm",
                    "cognition-runtime:local",
                    "-rf",
                    &format!("/cleanup/{name}"),
                ]));
            }
        }
    }

    impl Drop for Project {
        fn drop(&mut self) {
            self.force_clean();
        }
    }
}

mod turn {
    //! The turn through the gateway: a session, one message, the SSE frames.

    use super::*;

    /// One SSE frame: (event, data).
    pub type Frame = (String, Value);

    pub fn parse_sse(body: &str) -> Vec<Frame> {
        body.split("\n\n")
            .filter_map(|block| {
                let (mut event, mut data) = (None, None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = serde_json::from_str(v).ok();
                    }
                }
                Some((event?, data?))
            })
            .collect()
    }

    /// Waits (bounded) until `GET /health` answers 200 with the session service serving.
    pub async fn wait_healthy(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
        cognition_harness::wait_until(HEALTH_TIMEOUT, || {
            let request = http.get(format!("{base}/health")).send();
            async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                request.await.is_ok_and(|r| r.status() == 200)
            }
        })
        .await
        .map_err(|e| anyhow::anyhow!("{base}/health never answered 200: {e}"))
    }

    /// Creates a session and runs one turn; returns the session id and the frames.
    pub async fn run(http: &reqwest::Client, base: &str) -> anyhow::Result<(String, Vec<Frame>)> {
        let created: Value = http
            .post(format!("{base}/sessions"))
            .json(&json!({"title": "compose"}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id = created["id"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no session id in {created}"))?
            .to_owned();
        let response = http
            .post(format!("{base}/sessions/{id}/messages"))
            .json(&json!({"content": "run echo hi"}))
            .timeout(TURN_TIMEOUT)
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == 200,
            "the turn answered {}",
            response.status()
        );
        let body = response.text().await?;
        Ok((id, parse_sse(&body)))
    }
}

mod inspect {
    //! The sandbox container as the engine reports it.

    use super::*;

    /// Checks the labels and hardening of the sandbox container of `session` under `project`'s
    /// sandbox root; returns its id.
    pub async fn sandbox_of(project: &stack::Project, session: &str) -> anyhow::Result<String> {
        let ids = tools::docker_lines(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=cognition.io/session={session}"),
            "--filter",
            &format!("label={}", project.root_label()),
        ])
        .await?;
        anyhow::ensure!(
            ids.len() == 1,
            "expected one sandbox container of session {session}, found {ids:?}"
        );
        let raw = tools::docker(&["inspect", &ids[0]]).await?;
        let inspected: Value = serde_json::from_str(&raw)?;
        check_hardening(&inspected[0], session, project)?;
        Ok(ids[0].clone())
    }

    fn check_hardening(c: &Value, session: &str, project: &stack::Project) -> anyhow::Result<()> {
        let host = &c["HostConfig"];
        let labels = &c["Config"]["Labels"];
        let shown = serde_json::to_string_pretty(host)?;
        anyhow::ensure!(
            c["State"]["Running"] == true,
            "the sandbox is not running: {}",
            c["State"]
        );
        anyhow::ensure!(
            labels["cognition.io/session"] == session,
            "labels: {labels}"
        );
        anyhow::ensure!(labels["cognition.io/managed"] == "true", "labels: {labels}");
        anyhow::ensure!(
            host["CapDrop"]
                .as_array()
                .is_some_and(|caps| caps.iter().any(|c| c == "ALL")),
            "CapDrop is not ALL: {shown}"
        );
        anyhow::ensure!(
            host["CapAdd"].as_array().is_none_or(Vec::is_empty),
            "capabilities were added: {shown}"
        );
        anyhow::ensure!(host["ReadonlyRootfs"] == true, "root is writable: {shown}");
        anyhow::ensure!(
            host["NetworkMode"] == "none",
            "network is not none: {shown}"
        );
        anyhow::ensure!(host["Privileged"] == false, "privileged: {shown}");
        anyhow::ensure!(
            host["SecurityOpt"]
                .as_array()
                .is_some_and(|opts| opts.iter().any(|o| o
                    .as_str()
                    .is_some_and(|o| o.starts_with("no-new-privileges")))),
            "no no-new-privileges: {shown}"
        );
        let user = c["Config"]["User"].as_str().unwrap_or_default();
        let uid = user.split(':').next().and_then(|u| u.parse::<u32>().ok());
        anyhow::ensure!(
            uid.is_some_and(|uid| uid > 0),
            "the sandbox runs as {user:?}"
        );
        // The workspace is a folder of this project's sandbox root, mounted by host path.
        let root = project.sandbox_root.display().to_string();
        let mounts = c["Mounts"].as_array().cloned().unwrap_or_default();
        anyhow::ensure!(
            mounts.iter().any(|m| m["Destination"] == "/workspace"
                && m["Source"].as_str().is_some_and(|s| s.starts_with(&root))),
            "the workspace is not under {root}: {mounts:?}"
        );
        Ok(())
    }

    /// Names of the volumes (named and anonymous) mounted by the project's containers.
    pub async fn project_volumes(project: &stack::Project) -> anyhow::Result<Vec<String>> {
        let ids = tools::docker_lines(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label={}", project.project_label()),
        ])
        .await?;
        let mut args = vec![
            "inspect",
            "--format",
            "{{range .Mounts}}{{if eq .Type \"volume\"}}{{.Name}} {{end}}{{end}}",
        ];
        args.extend(ids.iter().map(String::as_str));
        Ok(tools::docker(&args)
            .await?
            .split_whitespace()
            .map(str::to_owned)
            .collect())
    }
}

/// Builds the images (a no-op when they are up to date).
async fn build_images() -> anyhow::Result<()> {
    let root = repo_root();
    let started = Instant::now();
    // The image .env.local names (cognition-sandbox:latest), whatever the caller's environment.
    let mut sandbox = tokio::process::Command::new(root.join("compose/sandbox/build.sh"));
    sandbox
        .current_dir(root)
        .env_remove("COGNITION_SANDBOX_IMAGE");
    tools::run(sandbox, BUILD_TIMEOUT).await?;
    let bin_dir = cognition_harness::bin_dir()?;
    let mut images = tokio::process::Command::new(root.join("compose/build-images.sh"));
    images.current_dir(root).arg("--bin-dir").arg(&bin_dir);
    let report = tools::run(images, BUILD_TIMEOUT).await?;
    eprintln!("images ready in {:.1?}:\n{report}", started.elapsed());
    Ok(())
}

async fn turn_and_teardown(project: &stack::Project) -> anyhow::Result<()> {
    let started = Instant::now();
    tools::run(project.compose(&["up", "-d"]), UP_TIMEOUT).await?;
    let http = reqwest::Client::new();
    let base = project.base_url();
    turn::wait_healthy(&http, &base).await?;
    eprintln!("stack healthy after {:.1?}", started.elapsed());

    let (session, frames) = turn::run(&http, &base).await?;
    let events: Vec<&str> = frames.iter().map(|(e, _)| e.as_str()).collect();
    anyhow::ensure!(
        events.last() == Some(&"done"),
        "the turn did not finish: {frames:?}"
    );
    let call = frames
        .iter()
        .find(|(e, _)| e == "tool_call")
        .ok_or_else(|| anyhow::anyhow!("no tool_call: {frames:?}"))?;
    anyhow::ensure!(
        call.1["name"] == "execute" && call.1["args"]["command"] == "echo hi",
        "{call:?}"
    );
    let result = frames
        .iter()
        .find(|(e, _)| e == "tool_result")
        .ok_or_else(|| anyhow::anyhow!("no tool_result: {frames:?}"))?;
    anyhow::ensure!(
        result.1["exit_code"] == 0
            && result.1["output"]
                .as_str()
                .is_some_and(|o| o.contains("hi")),
        "`echo hi` did not print hi in the sandbox: {result:?}"
    );

    inspect::sandbox_of(project, &session).await?;
    let volumes = inspect::project_volumes(project).await?;
    anyhow::ensure!(!volumes.is_empty(), "PostgreSQL has no volume");

    // Delete the session: its sandbox container and folder go with it.
    let deleted = http
        .delete(format!("{base}/sessions/{session}"))
        .send()
        .await?;
    anyhow::ensure!(
        deleted.status() == 204,
        "DELETE answered {}",
        deleted.status()
    );
    let root_filter = format!("label={}", project.root_label());
    cognition_harness::wait_until(Duration::from_secs(30), || async {
        tools::docker_lines(&["ps", "-aq", "--filter", &root_filter])
            .await
            .is_ok_and(|ids| ids.is_empty())
    })
    .await
    .map_err(|e| anyhow::anyhow!("the sandbox container outlived its session: {e}"))?;

    tools::run(
        project.compose(&["down", "-v", "--timeout", "10"]),
        DOWN_TIMEOUT,
    )
    .await?;
    assert_nothing_left(project, &volumes).await?;
    eprintln!("turn, delete and teardown in {:.1?}", started.elapsed());
    Ok(())
}

async fn assert_nothing_left(project: &stack::Project, volumes: &[String]) -> anyhow::Result<()> {
    let label = format!("label={}", project.project_label());
    let containers = tools::docker_lines(&["ps", "-aq", "--filter", &label]).await?;
    anyhow::ensure!(containers.is_empty(), "containers left: {containers:?}");
    let networks = tools::docker_lines(&["network", "ls", "-q", "--filter", &label]).await?;
    anyhow::ensure!(networks.is_empty(), "networks left: {networks:?}");
    let labelled = tools::docker_lines(&["volume", "ls", "-q", "--filter", &label]).await?;
    anyhow::ensure!(labelled.is_empty(), "volumes left: {labelled:?}");
    let all = tools::docker_lines(&["volume", "ls", "-q"]).await?;
    let left: Vec<&String> = volumes.iter().filter(|v| all.contains(v)).collect();
    anyhow::ensure!(
        left.is_empty(),
        "volumes of the project's containers left: {left:?}"
    );
    let sandboxes = tools::docker_lines(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label={}", project.root_label()),
    ])
    .await?;
    anyhow::ensure!(
        sandboxes.is_empty(),
        "sandbox containers left: {sandboxes:?}"
    );
    let folders: Vec<PathBuf> = std::fs::read_dir(&project.sandbox_root)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(folders.is_empty(), "sandbox folders left: {folders:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimal_stack_runs_a_tool_turn_in_a_hardened_sandbox_and_leaves_nothing_behind()
-> anyhow::Result<()> {
    if !tools::available()? {
        return Ok(());
    }
    let started = Instant::now();
    build_images().await?;
    let project = stack::Project::new()?;
    eprintln!(
        "project {} (gateway 127.0.0.1:{}, sandboxes in {})",
        project.name,
        project.gateway_port,
        project.sandbox_root.display()
    );
    let outcome = turn_and_teardown(&project).await;
    if outcome.is_err() {
        eprintln!(
            "compose logs of {}:\n{}",
            project.name,
            project.logs().await
        );
    }
    drop(project);
    eprintln!("compose test took {:.1?}", started.elapsed());
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_stacks_pass_docker_compose_config() -> anyhow::Result<()> {
    if !tools::available()? {
        return Ok(());
    }
    let root = repo_root();
    for file in [
        "compose/docker-compose.yml",
        "compose/docker-compose.full.yml",
    ] {
        for env_file in [None, Some("compose/.env.local")] {
            let mut command = tokio::process::Command::new("docker-compose");
            command.current_dir(root).args(["-f", file]);
            if let Some(env_file) = env_file {
                command.args(["--env-file", env_file]);
            }
            command.args(["config", "-q"]);
            for var in IMAGE_VARIABLES {
                command.env_remove(var);
            }
            tools::run(command, Duration::from_secs(60)).await?;
        }
    }
    // The images each variant names: the public ones by default, the local ones with .env.local.
    let images = |env_file: Option<&'static str>| async move {
        let mut command = tokio::process::Command::new("docker-compose");
        command
            .current_dir(root)
            .args(["-f", "compose/docker-compose.full.yml"]);
        if let Some(env_file) = env_file {
            command.args(["--env-file", env_file]);
        }
        command.arg("config");
        for var in IMAGE_VARIABLES {
            command.env_remove(var);
        }
        let text = tools::run(command, Duration::from_secs(60)).await?;
        anyhow::Ok(
            text.lines()
                .filter_map(|l| l.trim().strip_prefix("image: "))
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        )
    };
    let public = images(None).await?;
    for expected in [
        "postgres:16",
        "otel/opentelemetry-collector-contrib:latest",
        "prom/prometheus:latest",
        "grafana/grafana:latest",
        "grafana/loki:latest",
        "grafana/promtail:latest",
        "ghcr.io/mlflow/mlflow:v3.10.0",
    ] {
        anyhow::ensure!(
            public.iter().any(|i| i == expected),
            "{expected} not in {public:?}"
        );
    }
    anyhow::ensure!(
        public
            .iter()
            .filter(|i| i.starts_with("ghcr.io/cognition-platform/"))
            .count()
            == 3,
        "our three services should default to public images: {public:?}"
    );
    let local = images(Some("compose/.env.local")).await?;
    for expected in [
        "cognition-gateway:local",
        "cognition-session:local",
        "cognition-executor:local",
        "cognition-postgres:local",
    ] {
        anyhow::ensure!(
            local.iter().any(|i| i == expected),
            "{expected} not in {local:?}"
        );
    }

    match cognition_e2e::prometheus::find_binary("promtool") {
        Some(promtool) => {
            cognition_e2e::prometheus::check_config(
                &promtool,
                &root.join("compose/prometheus.yml"),
            )?;
        }
        None if std::env::var_os("CI").is_some() => {
            anyhow::bail!("promtool must be on PATH under CI (tests/scripts/deps.sh installs it)")
        }
        None => eprintln!("promtool not on PATH: compose/prometheus.yml not checked"),
    }
    Ok(())
}
