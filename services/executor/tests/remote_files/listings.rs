//! list, glob and grep give what `LocalFiles` gives on the same tree: entries, sizes, times,
//! order, symlinks (listed, not followed), `.git` skipped by grep, binary and large files
//! skipped, the match cap, hard links, odd names.

use std::os::unix::fs::symlink;

use cognition_executor::Error;
use cognition_executor::files::{FileError, GrepQuery, SandboxFiles};

use crate::harness::{Env, on_both_toolsets, same};

on_both_toolsets!(listings_match_local, grep_matches_local, listing_errors);

/// A tree with most things a workspace can hold.
fn build_tree(env: &Env) {
    env.put("README.md", "# hello\n");
    env.put("src/main.rs", "fn main() {\n    println!(\"hello\");\n}\n");
    env.put(
        "src/lib/util.rs",
        "pub fn util() {}\r\n// TODO: hello again\r\n",
    );
    env.put("src/lib.rs", "mod util; // hello\n");
    env.put("src/a-b.rs", "hello dash\n");
    env.put("src/a.txt", "hello dot\n");
    env.put("src/a/inner.rs", "hello inner\n");
    env.put("bin.dat", b"hello\0binary");
    env.put(".hidden/cfg.toml", "hello = 1\n");
    env.put(".git/config", "hello from git\n");
    env.put("sub/.git/HEAD", "hello nested git\n");
    env.put("with space/file name.rs", "hello spaces\n");
    env.put("new\nline/odd\nname.rs", "hello newline\n");
    env.put("ünï/cödé.rs", "hello ünïcödé\n");
    std::fs::create_dir_all(env.host("empty")).unwrap();
    symlink("src", env.host("link_dir")).unwrap();
    symlink("README.md", env.host("link_file.md")).unwrap();
    symlink("nowhere", env.host("dangling")).unwrap();
    std::fs::hard_link(env.host("src/main.rs"), env.host("src/z_hard.rs")).unwrap();
}

async fn listings_match_local(env: Env) {
    build_tree(&env);
    let (f, l) = (&env.remote, &env.local);
    for path in [
        "",
        ".",
        "src",
        "src/lib",
        "README.md",
        "link_file.md",
        "link_dir",
        "empty",
    ] {
        let listed = same(
            f.list(path).await,
            l.list(path).await,
            &format!("list {path}"),
        );
        assert!(
            listed.is_some_and(|v| !v.is_empty() || path == "empty"),
            "{path}"
        );
    }
    let root = f.list("").await.unwrap();
    assert!(root.iter().any(|e| e.path == "new\nline" && e.is_dir));
    assert!(root.iter().all(|e| e.modified.is_some()));

    for (pattern, base) in [
        ("**/*.rs", ""),
        ("*.rs", "src"),
        ("*", ""),
        ("**", ""),
        ("**/*", "src"),
        ("src/**/*.rs", ""),
        ("*.md", ""),
        ("**/.git/*", ""),
        ("**/*[!s]", "src"),
        ("{*.md,**/*.toml}", ""),
        ("link_*", ""),
        ("**/*name*", ""),
    ] {
        let found = same(
            f.glob(pattern, base).await,
            l.glob(pattern, base).await,
            &format!("glob {pattern} in {base:?}"),
        )
        .unwrap();
        assert!(!found.is_empty(), "glob {pattern} found nothing");
    }
    let rs: Vec<String> = f
        .glob("**/*.rs", "")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert!(rs.contains(&"new\nline/odd\nname.rs".to_owned()), "{rs:?}");
    assert!(
        !rs.iter().any(|p| p.starts_with("link_dir/")),
        "symlinks are not followed"
    );
}

fn query(pattern: &str, path: &str, include: &str) -> GrepQuery {
    GrepQuery {
        pattern: pattern.into(),
        path: path.into(),
        include: include.into(),
    }
}

async fn grep_matches_local(env: Env) {
    build_tree(&env);
    let (f, l) = (&env.remote, &env.local);
    let many: String = (0..1500).map(|i| format!("match {i}\n")).collect();
    env.put("many.txt", &many);
    let big = std::fs::File::create(env.host("huge.txt")).unwrap();
    big.set_len(16 * 1024 * 1024 + 1).unwrap();
    for q in [
        query("hello", "", ""),
        query("hel+o", "src", "*.rs"),
        query("TODO", "src/lib/util.rs", ""),
        query("hello", "", "src/**"),
        query("hello", "link_file.md", ""),
        query("^fn", "", "*.rs"),
        query("match 1\\d\\d\\d", "", ""),
        query("match", "many.txt", ""),
        query("match", "", ""),
        query("nothing matches this", "", ""),
        query("hello", ".git", ""),
        query("hello", "empty", ""),
    ] {
        let what = format!("grep {q:?}");
        let r = same(f.grep(q.clone()).await, l.grep(q).await, &what).unwrap();
        assert!(r.matches.len() <= 1000, "{what}");
    }
    let r = f.grep(query("hello", "", "")).await.unwrap();
    let paths: Vec<&str> = r.matches.iter().map(|m| m.path.as_str()).collect();
    assert!(
        paths.contains(&"src/z_hard.rs"),
        "hard links are searched: {paths:?}"
    );
    assert!(paths.contains(&"new\nline/odd\nname.rs"), "{paths:?}");
    assert!(!paths.contains(&"bin.dat"), "binary files are skipped");
    assert!(
        !paths.iter().any(|p| p.contains(".git/")),
        ".git is skipped"
    );
    let r = f.grep(query("match", "", "")).await.unwrap();
    assert!(r.truncated && r.matches.len() == 1000);
}

async fn listing_errors(env: Env) {
    env.put("file.txt", "x\n");
    let (f, l) = (&env.remote, &env.local);
    same(f.list("nope").await, l.list("nope").await, "list missing");
    same(
        f.glob("*", "nope").await,
        l.glob("*", "nope").await,
        "glob missing",
    );
    same(
        f.glob("*", "file.txt").await,
        l.glob("*", "file.txt").await,
        "glob a file",
    );
    same(
        f.grep(query("x", "nope", "")).await,
        l.grep(query("x", "nope", "")).await,
        "grep missing",
    );
    for bad in ["", "/abs/*", "../*", "["] {
        let err = f.glob(bad, "").await.unwrap_err();
        assert!(
            matches!(err, Error::File(FileError::InvalidPattern { .. })),
            "{bad}: {err}"
        );
    }
    let err = f.grep(query("(", "", "")).await.unwrap_err();
    assert!(
        matches!(err, Error::File(FileError::InvalidPattern { .. })),
        "{err}"
    );
    let err = f.glob("*", "file.txt").await.unwrap_err();
    assert!(
        matches!(err, Error::File(FileError::NotADirectory { .. })),
        "{err}"
    );
    let err = f.list("nope").await.unwrap_err();
    assert!(
        matches!(err, Error::File(FileError::NotFound { .. })),
        "{err}"
    );
}
