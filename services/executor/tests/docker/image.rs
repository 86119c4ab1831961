//! The sandbox image built by `compose/sandbox/build.sh`, seen through a real sandbox: Python 3
//! runs through the Exec path (standard library and its shared libraries included), busybox
//! provides the shell, and the image names its exec agent in the `cognition.io/agent` label at a
//! path that is an executable file inside the sandbox.

use crate::harness::{DockerTest, IMAGE};
use crate::support::*;

/// Runs a subprocess and prints JSON: exercises `json`, `subprocess`, `os` and two modules that
/// need shared libraries from the image (`sqlite3`, `ssl`).
const PYTHON_PROGRAM: &str = r#"
import json, os, sqlite3, ssl, subprocess, sys
out = subprocess.run(["echo", "hi"], capture_output=True).stdout.decode()
db = sqlite3.connect(":memory:")
print(json.dumps({
    "ok": out,
    "uid": os.getuid(),
    "python": list(sys.version_info[:2]),
    "sqlite": db.execute("select 1 + 2").fetchone()[0],
    "ssl": ssl.OPENSSL_VERSION.split()[0],
}))
"#;

#[tokio::test]
async fn python3_runs_and_the_image_names_its_agent() {
    let Some(t) = DockerTest::start("python3_runs_and_the_image_names_its_agent").await else {
        return;
    };
    let sb = t.server.sandbox().await;
    let c = &t.server.client;

    let o = run(c, argv(&sb.id, "py", &["python3", "-c", PYTHON_PROGRAM])).await;
    assert_eq!(
        o.exited().exit_code,
        Some(0),
        "python3 failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        o.stdout_str(),
        "{\"ok\": \"hi\\n\", \"uid\": 1000, \"python\": [3, 11], \"sqlite\": 3, \"ssl\": \"OpenSSL\"}\n"
    );

    // Python comes from the Debian package in /usr/bin, the shell from busybox in /bin.
    let o = run(
        c,
        shell(
            &sb.id,
            "paths",
            "command -v python3; readlink /bin/sh; echo $((1+2))",
        ),
    )
    .await;
    assert_eq!(o.stdout_str(), "/usr/bin/python3\nbusybox\n3\n");

    let image = t.docker.inspect_image(IMAGE).await.expect("inspect image");
    let labels = image
        .config
        .and_then(|config| config.labels)
        .unwrap_or_default();
    let agent = labels
        .get("cognition.io/agent")
        .unwrap_or_else(|| panic!("no cognition.io/agent label on {IMAGE}: {labels:?}"));
    assert_eq!(agent, "/opt/cognition/bin/cognition-sandbox-agent");
    assert!(
        labels
            .get("cognition.io/build-hash")
            .is_some_and(|hash| hash.len() == 64),
        "no build hash label: {labels:?}"
    );
    let o = run(
        c,
        argv(&sb.id, "agent", &["test", "-f", agent, "-a", "-x", agent]),
    )
    .await;
    assert_eq!(
        o.exited().exit_code,
        Some(0),
        "{agent} is not an executable file in the sandbox"
    );
    t.finish().await;
}
