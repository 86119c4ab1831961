//! Path safety: lexical escapes, symlinks leaving the workspace (files, folders, parents,
//! dangling), protected paths read-only; the same refusals as the host jail.

use std::os::unix::fs::symlink;

use bytes::Bytes;
use cognition_executor::Error;
use cognition_executor::files::{Edit, GrepQuery, SandboxFiles};
use cognition_executor::paths::PathError;

use crate::harness::{Env, on_both_toolsets, same};

on_both_toolsets!(
    escapes_are_refused,
    symlinks_inside_work,
    protected_paths_are_read_only
);

#[track_caller]
fn escapes<T: std::fmt::Debug>(r: Result<T, Error>, what: &str) {
    match r {
        Err(Error::Path(PathError::Escapes { path })) => {
            assert!(!path.is_empty(), "{what}: the error names the path")
        }
        other => panic!("{what}: expected an escape, got {other:?}"),
    }
}

#[track_caller]
fn protected<T: std::fmt::Debug>(r: Result<T, Error>, what: &str) {
    match r {
        Err(Error::Path(PathError::Protected { rule, .. })) => assert_eq!(rule, ".cognition"),
        other => panic!("{what}: expected a protected-path refusal, got {other:?}"),
    }
}

fn edit() -> Edit {
    Edit {
        old_string: "top".into(),
        new_string: "changed".into(),
        replace_all: false,
    }
}

fn grep(path: &str) -> GrepQuery {
    GrepQuery {
        pattern: "secret".into(),
        path: path.into(),
        include: String::new(),
    }
}

async fn upload(f: &dyn SandboxFiles, path: &str) -> Result<u64, Error> {
    let mut up = f.upload(path).await?;
    up.write(b"data").await?;
    up.commit().await
}

async fn escapes_are_refused(env: Env) {
    let f = &env.remote;
    let out = &env.outside;
    std::fs::write(out.join("secret.txt"), "top secret").unwrap();
    std::fs::create_dir_all(env.host("dir/sub")).unwrap();
    symlink(out, env.host("linkdir")).unwrap();
    symlink(out.join("secret.txt"), env.host("linkfile")).unwrap();
    symlink(out.join("new.txt"), env.host("dangling")).unwrap();
    symlink("../../../../../outside/secret.txt", env.host("dir/sub/rel")).unwrap();
    symlink(out, env.host("dir/parent")).unwrap();
    symlink("hop2", env.host("hop1")).unwrap();
    symlink(out.join("hop3"), env.host("hop2")).unwrap();
    symlink("loop_b", env.host("loop_a")).unwrap();
    symlink("loop_a", env.host("loop_b")).unwrap();
    let abs_other = format!("{}x/file", env.ws.display());

    for path in [
        "../etc/passwd",
        "a/../../x",
        "/etc/passwd",
        abs_other.as_str(),
    ] {
        escapes(f.read(path, 0, 0).await, path);
        escapes(f.write(path, Bytes::from_static(b"x")).await, path);
        same(
            f.read(path, 0, 0).await,
            env.local.read(path, 0, 0).await,
            path,
        );
    }
    for path in [
        "linkfile",
        "linkdir/secret.txt",
        "dir/sub/rel",
        "dir/parent/secret.txt",
        "dangling",
        "hop1",
    ] {
        escapes(f.read(path, 0, 0).await, &format!("read {path}"));
        escapes(
            f.download(path).await.map(|_| ()),
            &format!("download {path}"),
        );
        escapes(f.edit(path, edit()).await, &format!("edit {path}"));
        escapes(
            f.write(path, Bytes::from_static(b"x")).await,
            &format!("write {path}"),
        );
        escapes(upload(f, path).await, &format!("upload {path}"));
        same(
            f.read(path, 0, 0).await,
            env.local.read(path, 0, 0).await,
            path,
        );
    }
    for path in ["linkdir", "dir/parent", "linkdir/new/deeper"] {
        escapes(f.list(path).await, &format!("list {path}"));
        escapes(f.glob("*", path).await, &format!("glob {path}"));
        escapes(f.grep(grep(path)).await, &format!("grep {path}"));
        escapes(
            f.write(&format!("{path}/new.txt"), Bytes::from_static(b"x"))
                .await,
            &format!("write under {path}"),
        );
    }
    let err = f.read("loop_a", 0, 0).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Path(PathError::Invalid {
                reason: "too many symlinks",
                ..
            })
        ),
        "{err}"
    );
    same(
        f.read("loop_a", 0, 0).await,
        env.local.read("loop_a", 0, 0).await,
        "loop",
    );

    assert_eq!(
        std::fs::read_to_string(out.join("secret.txt")).unwrap(),
        "top secret"
    );
    let mut outside: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    outside.sort();
    assert_eq!(outside, vec!["secret.txt"], "nothing was created outside");
    // Searching the whole workspace does not follow the symlinks either.
    env.put("inside.txt", "no secrets here\n");
    let r = f.grep(grep("")).await.unwrap();
    assert_eq!(r.matches.len(), 1);
    assert_eq!(r.matches[0].path, "inside.txt");
}

async fn symlinks_inside_work(env: Env) {
    let f = &env.remote;
    env.put("dir/target.txt", "inside\n");
    symlink("dir", env.host("in_dir")).unwrap();
    symlink("dir/target.txt", env.host("in_file")).unwrap();
    symlink("dir/made.txt", env.host("in_dangling")).unwrap();
    assert_eq!(f.read("in_file", 0, 0).await.unwrap().content, "inside\n");
    f.write("in_dir/new.txt", Bytes::from_static(b"new\n"))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(env.host("dir/new.txt")).unwrap(),
        "new\n"
    );
    f.write("in_dangling", Bytes::from_static(b"made\n"))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(env.host("dir/made.txt")).unwrap(),
        "made\n"
    );
    // Writing through a symlinked file changes the target; the link stays.
    f.write("in_file", Bytes::from_static(b"changed\n"))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(env.host("dir/target.txt")).unwrap(),
        "changed\n"
    );
    assert!(
        std::fs::symlink_metadata(env.host("in_file"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    same(
        f.list("in_dir").await,
        env.local.list("in_dir").await,
        "list through a link",
    );
}

async fn protected_paths_are_read_only(env: Env) {
    let f = &env.remote;
    env.put(".cognition/x", "cfg\n");
    symlink(".cognition", env.host("alias")).unwrap();
    let abs = format!("{}/.cognition/x", env.ws.display());
    for path in [
        ".cognition/x",
        ".cognition/new",
        "./sub/../.cognition/x",
        ".cognition",
        &abs,
        "alias/x",
    ] {
        protected(f.write(path, Bytes::from_static(b"x")).await, path);
        protected(f.edit(path, edit()).await, path);
        protected(upload(f, path).await, path);
        same(
            f.write(path, Bytes::from_static(b"x")).await,
            env.local.write(path, Bytes::from_static(b"x")).await,
            path,
        );
    }
    assert_eq!(f.read(".cognition/x", 0, 0).await.unwrap().content, "cfg\n");
    assert_eq!(f.read("alias/x", 0, 0).await.unwrap().content, "cfg\n");
    assert_eq!(env.names(".cognition"), vec!["x"]);
    f.write(".cognitionx", Bytes::from_static(b"fine"))
        .await
        .expect("a prefix of the name is not the protected folder");
}
