//! A client in another language: Python stubs generated from `proto/` with grpcio-tools
//! create, read, list and delete a session on the session service (scoping on).

use std::process::Command;

use cognition_harness::{StackOptions, TestStack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_generated_from_proto() -> anyhow::Result<()> {
    let have_tools = Command::new("python3")
        .args(["-c", "import grpc_tools, grpc"])
        .status()?
        .success();
    if !have_tools {
        assert!(
            std::env::var_os("CI").is_none(),
            "grpcio-tools missing under CI (tests/scripts/deps.sh installs it)"
        );
        eprintln!(
            "skipping: python3 grpcio-tools not installed (tests/scripts/deps.sh installs it)"
        );
        return Ok(());
    }
    let root = cognition_e2e::procs::repo_root();
    let out = tempfile::tempdir()?;
    let status = Command::new("python3")
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(root.join("proto"))
        .arg(format!("--python_out={}", out.path().display()))
        .arg(format!("--grpc_python_out={}", out.path().display()))
        .args([
            "cognition/common/v1/common.proto",
            "cognition/session/v1/session.proto",
        ])
        .status()?;
    assert!(status.success(), "grpc_tools.protoc failed");

    let stack = TestStack::start(StackOptions {
        scope_keys: Some(vec!["user".into()]),
        ..Default::default()
    })
    .await?;
    let session = stack.session.to_string();
    let script = root.join("tests/python/session_client.py");
    let outdir = out.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(outdir)
            .arg(session)
            .output()
    })
    .await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.trim_end().ends_with("OK"),
        "python client failed:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stack.stop().await?;
    Ok(())
}
