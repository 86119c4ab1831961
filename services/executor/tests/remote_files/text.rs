//! Reading, writing and editing text: line slices, unicode, parent folders, edits, and the
//! errors for missing files, folders, large and non-UTF-8 files.

use std::os::unix::fs::PermissionsExt;

use bytes::Bytes;
use cognition_executor::Error;
use cognition_executor::files::{Edit, FileError, MAX_READ_BYTES, SandboxFiles};

use crate::harness::{Env, on_both_toolsets, same};

on_both_toolsets!(
    read_write_round_trip,
    edits,
    errors_match_local,
    large_and_odd_files
);

fn edit(old: &str, new: &str, all: bool) -> Edit {
    Edit {
        old_string: old.into(),
        new_string: new.into(),
        replace_all: all,
    }
}

async fn read_write_round_trip(env: Env) {
    let f = &env.remote;
    let text = "l0 héllo ✓\nl1 日本語\n\nl3 🦀 end";
    assert_eq!(
        f.write("src/deep/a.txt", Bytes::from(text)).await.unwrap(),
        text.len() as u64
    );
    assert_eq!(
        std::fs::read_to_string(env.host("src/deep/a.txt")).unwrap(),
        text,
        "missing parent folders are created"
    );
    for (offset, limit) in [(0, 0), (1, 2), (3, 10), (4, 0), (10, 1), (0, 1)] {
        let r = same(
            f.read("src/deep/a.txt", offset, limit).await,
            env.local.read("src/deep/a.txt", offset, limit).await,
            &format!("read {offset}/{limit}"),
        )
        .unwrap();
        assert_eq!(r.total_lines, 4);
    }
    let r = f.read("src/deep/a.txt", 1, 2).await.unwrap();
    assert_eq!((r.content.as_str(), r.truncated), ("l1 日本語\n\n", true));

    // Absolute paths inside the workspace, told or asked of the sandbox.
    let abs = format!("{}/src/deep/a.txt", env.ws.display());
    assert_eq!(f.read(&abs, 3, 0).await.unwrap().content, "l3 🦀 end");
    let told = env
        .remote_with(std::sync::Arc::new(env.spawner()))
        .with_workdir(&env.ws);
    assert_eq!(told.read(&abs, 0, 1).await.unwrap().content, "l0 héllo ✓\n");
    assert_eq!(
        told.read("./src/../src/deep/a.txt", 0, 1)
            .await
            .unwrap()
            .content,
        "l0 héllo ✓\n"
    );

    // Replacing keeps nothing of the old content and leaves no temporary file.
    f.write("src/deep/a.txt", Bytes::from_static(b"short\n"))
        .await
        .unwrap();
    assert_eq!(
        f.read("src/deep/a.txt", 0, 0).await.unwrap().content,
        "short\n"
    );
    assert_eq!(env.names("src/deep"), vec!["a.txt"]);
    assert_eq!(f.write("empty", Bytes::new()).await.unwrap(), 0);
    let r = f.read("empty", 0, 0).await.unwrap();
    assert_eq!((r.content.as_str(), r.total_lines), ("", 0));

    // A file with a name that needs quoting everywhere.
    let odd = "we ird/$(echo x) *'\"\\ -n.txt";
    f.write(odd, Bytes::from_static(b"odd\n")).await.unwrap();
    same(
        f.read(odd, 0, 0).await,
        env.local.read(odd, 0, 0).await,
        "odd name",
    );
    assert_eq!(std::fs::read(env.host(odd)).unwrap(), b"odd\n");
}

async fn edits(env: Env) {
    let f = &env.remote;
    f.write("e.txt", Bytes::from_static(b"let a = 1;\nlet b = 1;\n"))
        .await
        .unwrap();
    assert_eq!(
        f.edit("e.txt", edit("let a", "let x", false))
            .await
            .unwrap(),
        1
    );
    let err = f
        .edit("e.txt", edit("= 1", "= 2", false))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::File(FileError::Ambiguous { count: 2, .. })),
        "{err}"
    );
    let err = f
        .edit("e.txt", edit("nothing", "y", false))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::File(FileError::OldStringNotFound { .. })
    ));
    assert!(matches!(
        f.edit("e.txt", edit("", "y", false)).await.unwrap_err(),
        Error::File(FileError::EmptyOldString)
    ));
    assert_eq!(f.edit("e.txt", edit("= 1", "= 2", true)).await.unwrap(), 2);
    assert_eq!(
        std::fs::read_to_string(env.host("e.txt")).unwrap(),
        "let x = 2;\nlet b = 2;\n"
    );
    // Unicode edits, and an edit keeps the file's mode (an executable stays executable).
    env.put("run.sh", "#!/bin/sh\necho 'héllo'\n");
    std::fs::set_permissions(env.host("run.sh"), std::fs::Permissions::from_mode(0o751)).unwrap();
    assert_eq!(
        f.edit("run.sh", edit("héllo", "wörld ✓", false))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        std::fs::read_to_string(env.host("run.sh")).unwrap(),
        "#!/bin/sh\necho 'wörld ✓'\n"
    );
    let mode = std::fs::metadata(env.host("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o751);
    assert_eq!(env.names(""), vec!["e.txt", "run.sh"], "no temporary files");
}

async fn errors_match_local(env: Env) {
    let f = &env.remote;
    let l = &env.local;
    env.put("dir/file.txt", "x\n");
    for path in ["missing.txt", "dir", "", "dir/file.txt/below", "nodir/x"] {
        same(f.read(path, 0, 0).await, l.read(path, 0, 0).await, path);
        same(
            f.edit(path, edit("x", "y", false)).await,
            l.edit(path, edit("x", "y", false)).await,
            path,
        );
    }
    let err = f.read("missing.txt", 0, 0).await.unwrap_err();
    assert!(
        matches!(err, Error::File(FileError::NotFound { .. })),
        "{err}"
    );
    let err = f.read("dir", 0, 0).await.unwrap_err();
    assert!(
        matches!(err, Error::File(FileError::IsADirectory { .. })),
        "{err}"
    );
    for path in ["dir", "", "."] {
        let err = f.write(path, Bytes::from_static(b"x")).await.unwrap_err();
        assert!(
            matches!(err, Error::File(FileError::IsADirectory { .. })),
            "{path}: {err}"
        );
    }
    let err = f
        .write("dir/file.txt/below", Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::File(FileError::NotFound { .. })),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(env.host("dir/file.txt")).unwrap(),
        "x\n"
    );
}

async fn large_and_odd_files(env: Env) {
    let f = &env.remote;
    // Larger than MAX_SCAN_FILE_BYTES: no edit (sparse, so cheap to make).
    let big = std::fs::File::create(env.host("big.log")).unwrap();
    big.set_len(16 * 1024 * 1024 + 1).unwrap();
    let err = f.edit("big.log", edit("a", "b", false)).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::File(FileError::TooLarge {
                size: 16_777_217,
                ..
            })
        ),
        "{err}"
    );
    same(
        f.edit("big.log", edit("a", "b", false)).await,
        env.local.edit("big.log", edit("a", "b", false)).await,
        "too large",
    );
    // Reads of files past MAX_READ_BYTES are cut like local ones.
    let long: String = (0..40_000).map(|i| format!("line {i:>30}\n")).collect();
    assert!(long.len() > MAX_READ_BYTES);
    env.put("long.txt", &long);
    let r = same(
        f.read("long.txt", 0, 100_000).await,
        env.local.read("long.txt", 0, 100_000).await,
        "long",
    )
    .unwrap();
    assert!(r.truncated && r.total_lines == 40_000);
    // Binary and non-UTF-8 content.
    env.put("bin.dat", b"text\0\xff\xfe binary\nmore");
    same(
        f.read("bin.dat", 0, 0).await,
        env.local.read("bin.dat", 0, 0).await,
        "binary read",
    );
    let err = f
        .edit("bin.dat", edit("text", "t", false))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::File(FileError::NotUtf8 { .. })),
        "{err}"
    );
    let raw: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    f.write("raw.bin", Bytes::from(raw.clone())).await.unwrap();
    assert_eq!(std::fs::read(env.host("raw.bin")).unwrap(), raw);
}
