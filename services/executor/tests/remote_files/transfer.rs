//! Uploads and downloads: a few MiB both ways, no temporary files left (also when an upload is
//! abandoned), the errors.

use cognition_executor::Error;
use cognition_executor::files::{FileError, SandboxFiles};
use tokio::io::AsyncReadExt;

use crate::harness::{Env, on_both_toolsets, same, wait_until};

on_both_toolsets!(
    upload_download_round_trip,
    abandoned_uploads_leave_nothing,
    transfer_errors
);

fn data(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

async fn download(f: &dyn SandboxFiles, path: &str) -> Result<Vec<u8>, Error> {
    let mut reader = f.download(path).await?;
    let mut out = Vec::new();
    reader
        .read_to_end(&mut out)
        .await
        .map_err(|e| Error::io("downloading", e))?;
    Ok(out)
}

async fn upload_download_round_trip(env: Env) {
    let f = &env.remote;
    let data = data(3 * 1024 * 1024 + 123);
    let mut up = f.upload("up/big.bin").await.unwrap();
    for chunk in data.chunks(100_000) {
        up.write(chunk).await.unwrap();
    }
    assert_eq!(up.commit().await.unwrap(), data.len() as u64);
    assert_eq!(std::fs::read(env.host("up/big.bin")).unwrap(), data);
    assert_eq!(
        env.names("up"),
        vec!["big.bin"],
        "no temporary file is left"
    );
    assert_eq!(download(f, "up/big.bin").await.unwrap(), data);
    let abs = format!("{}/up/big.bin", env.ws.display());
    assert_eq!(download(f, &abs).await.unwrap().len(), data.len());

    // Replacing an existing file, and an empty upload.
    let up = f.upload("up/big.bin").await.unwrap();
    assert_eq!(up.commit().await.unwrap(), 0);
    assert_eq!(std::fs::read(env.host("up/big.bin")).unwrap(), b"");
    assert_eq!(download(f, "up/big.bin").await.unwrap(), b"");
    assert_eq!(env.names("up"), vec!["big.bin"]);
}

async fn abandoned_uploads_leave_nothing(env: Env) {
    let f = &env.remote;
    env.put("keep.txt", "original\n");
    let mut up = f.upload("keep.txt").await.unwrap();
    up.write(b"half of the new").await.unwrap();
    assert_eq!(env.names("").len(), 2, "the data goes to a temporary file");
    drop(up);
    wait_until("the temporary file is removed", || {
        env.names("") == vec!["keep.txt"]
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(env.host("keep.txt")).unwrap(),
        "original\n"
    );

    // A download dropped half-way ends its process.
    env.put("big.bin", data(4 * 1024 * 1024));
    let mut reader = f.download("big.bin").await.unwrap();
    let mut first = [0u8; 1000];
    reader.read_exact(&mut first).await.unwrap();
    drop(reader);
    assert_eq!(download(f, "keep.txt").await.unwrap(), b"original\n");
}

async fn transfer_errors(env: Env) {
    let f = &env.remote;
    env.put("dir/file.txt", "x");
    for path in ["nope.bin", "dir", ""] {
        same(
            download(f, path).await,
            download(env.local.as_ref(), path).await,
            &format!("download {path}"),
        );
    }
    assert!(matches!(
        download(f, "nope.bin").await,
        Err(Error::File(FileError::NotFound { .. }))
    ));
    for path in ["", "dir"] {
        let err = f.upload(path).await.err().expect("upload of a folder");
        assert!(
            matches!(err, Error::File(FileError::IsADirectory { .. })),
            "{path}: {err}"
        );
    }
    assert_eq!(env.names("dir"), vec!["file.txt"]);
}
