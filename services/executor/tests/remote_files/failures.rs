//! Failures that are not the file's: a sandbox that is gone, a connection that breaks, a
//! sandbox without the tools the scripts need.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use cognition_executor::Error;
use cognition_executor::backend::SandboxBackend;
use cognition_executor::files::SandboxFiles;
use cognition_executor::files::remote::Launcher;
use cognition_executor::process::{ProcessSpec, SpawnError, SpawnedProcess};

use crate::harness::{Env, Flavor, Spawner, on_both_toolsets};

on_both_toolsets!(sandbox_failures_are_not_file_errors);

/// Spawns for real, but reports the connection lost before the process's end is known.
struct Cut(Spawner);

#[async_trait]
impl Launcher for Cut {
    async fn spawn(&self, spec: &ProcessSpec) -> Result<SpawnedProcess, SpawnError> {
        let mut process = self.0.spawn(spec).await?;
        process.exit = Box::pin(async {
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "agent connection reset",
            ))
        });
        Ok(process)
    }
}

async fn sandbox_failures_are_not_file_errors(env: Env) {
    env.put("a.txt", "a\n");
    // The connection breaks: the sandbox is unavailable, not the file missing.
    let cut = env.remote_with(Arc::new(Cut(env.spawner())));
    let err = cut.read("a.txt", 0, 0).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("agent connection reset"), "{err}");

    // The sandbox lacks a tool the script needs: only `sh` on PATH. (BusyBox's shell runs its
    // own applets whatever PATH says, so this takes the host's shell.)
    if env.flavor == Flavor::Gnu {
        let bin = env.outside.join("sh-only");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink("/bin/sh", bin.join("sh")).unwrap();
        let mut spawner = env.spawner();
        spawner.path = Some(bin.display().to_string());
        let bare = env.remote_with(Arc::new(spawner));
        let err = bare.read("a.txt", 0, 0).await.unwrap_err();
        assert!(matches!(err, Error::Unavailable(_)), "{err}");
        assert!(err.to_string().contains("`realpath`"), "{err}");
    }

    // The sandbox is gone: the backend's own error.
    env.backend.delete(&env.id).await.unwrap();
    for result in [
        env.remote.read("a.txt", 0, 0).await.map(|_| ()),
        env.remote
            .write("b.txt", Bytes::from_static(b"b"))
            .await
            .map(|_| ()),
        env.remote.list("").await.map(|_| ()),
    ] {
        let err = result.unwrap_err();
        assert!(matches!(err, Error::SandboxNotFound(_)), "{err}");
    }
}
