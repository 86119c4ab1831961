//! File operations and path safety, on every backend (the jail is the executor's, on the
//! host, so the symlinks below are made on the host).

use std::os::unix::fs::symlink;

use cognition_proto::executor::v1 as pb;
use tokio_stream::StreamExt;

use crate::backend::{Backend, Executor, on_every_backend};
use crate::support::*;

on_every_backend!(
    read_write_edit,
    path_escapes_are_refused,
    protected_paths_are_read_only,
    list_glob_grep,
    upload_download_round_trip,
);

struct Files {
    client: Client,
    id: String,
}

impl Files {
    async fn write(&self, path: &str, content: &[u8]) -> Result<u64, tonic::Status> {
        self.client
            .clone()
            .write_file(pb::WriteFileRequest {
                sandbox_id: self.id.clone(),
                path: path.into(),
                content: content.to_vec(),
            })
            .await
            .map(|r| r.into_inner().bytes_written)
    }

    async fn read(
        &self,
        path: &str,
        offset: u64,
        limit: u64,
    ) -> Result<pb::ReadFileResponse, tonic::Status> {
        self.client
            .clone()
            .read_file(pb::ReadFileRequest {
                sandbox_id: self.id.clone(),
                path: path.into(),
                offset,
                limit,
            })
            .await
            .map(|r| r.into_inner())
    }

    async fn edit(
        &self,
        path: &str,
        old: &str,
        new: &str,
        all: bool,
    ) -> Result<u64, tonic::Status> {
        self.client
            .clone()
            .edit_file(pb::EditFileRequest {
                sandbox_id: self.id.clone(),
                path: path.into(),
                old_string: old.into(),
                new_string: new.into(),
                replace_all: all,
            })
            .await
            .map(|r| r.into_inner().replacements)
    }

    async fn list(&self, path: &str) -> Result<Vec<pb::FileInfo>, tonic::Status> {
        self.client
            .clone()
            .list_files(pb::ListFilesRequest {
                sandbox_id: self.id.clone(),
                path: path.into(),
            })
            .await
            .map(|r| r.into_inner().files)
    }

    async fn glob(&self, pattern: &str, path: &str) -> Result<Vec<String>, tonic::Status> {
        self.client
            .clone()
            .glob(pb::GlobRequest {
                sandbox_id: self.id.clone(),
                pattern: pattern.into(),
                path: path.into(),
            })
            .await
            .map(|r| r.into_inner().files.into_iter().map(|f| f.path).collect())
    }

    async fn grep(
        &self,
        pattern: &str,
        path: &str,
        include: &str,
    ) -> Result<pb::GrepResponse, tonic::Status> {
        self.client
            .clone()
            .grep(pb::GrepRequest {
                sandbox_id: self.id.clone(),
                pattern: pattern.into(),
                path: path.into(),
                include: include.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    async fn upload(&self, path: &str, data: &[u8], chunk: usize) -> Result<u64, tonic::Status> {
        let mut msgs = vec![pb::UploadFileRequest {
            sandbox_id: self.id.clone(),
            path: path.into(),
            data: Vec::new(),
        }];
        msgs.extend(data.chunks(chunk).map(|c| pb::UploadFileRequest {
            data: c.to_vec(),
            ..Default::default()
        }));
        self.client
            .clone()
            .upload_file(tokio_stream::iter(msgs))
            .await
            .map(|r| r.into_inner().bytes_written)
    }

    async fn download(&self, path: &str) -> Result<Vec<Vec<u8>>, tonic::Status> {
        let mut stream = self
            .client
            .clone()
            .download_file(pb::DownloadFileRequest {
                sandbox_id: self.id.clone(),
                path: path.into(),
            })
            .await?
            .into_inner();
        let mut chunks = Vec::new();
        while let Some(item) = stream.next().await {
            chunks.push(item?.data);
        }
        Ok(chunks)
    }
}

fn denied<T: std::fmt::Debug>(r: Result<T, tonic::Status>, what: &str) {
    let err = r.expect_err(what);
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{what}: {err:?}");
}

async fn read_write_edit(backend: Backend) {
    let s = Executor::start(backend).await;
    let sb = s.sandbox().await;
    let f = Files {
        client: s.client.clone(),
        id: sb.id.clone(),
    };

    assert_eq!(
        f.write("src/deep/a.txt", b"l0\nl1\nl2\nl3\n")
            .await
            .unwrap(),
        12
    );
    let r = f.read("src/deep/a.txt", 0, 0).await.unwrap();
    assert_eq!(
        (r.content.as_str(), r.total_lines, r.truncated),
        ("l0\nl1\nl2\nl3\n", 4, false)
    );
    let r = f.read("src/deep/a.txt", 1, 2).await.unwrap();
    assert_eq!(
        (r.content.as_str(), r.total_lines, r.truncated),
        ("l1\nl2\n", 4, true)
    );
    let r = f
        .read(&format!("{}/src/deep/a.txt", sb.workdir), 3, 10)
        .await
        .unwrap();
    assert_eq!(
        r.content, "l3\n",
        "absolute paths inside the workspace work"
    );
    assert_eq!(
        f.read("missing.txt", 0, 0).await.unwrap_err().code(),
        tonic::Code::NotFound
    );
    assert_eq!(
        f.read("src", 0, 0).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );

    // The sandbox's processes read, change and add to what the API wrote (files and the folders
    // it created are theirs), and the API sees what they write.
    let o = run(
        &s.client,
        shell(
            &sb.id,
            "cat",
            "cat src/deep/a.txt && echo l4 >> src/deep/a.txt && echo made > src/made.txt",
        ),
    )
    .await;
    assert_eq!(
        (o.exited().exit_code, o.stdout_str(), o.stderr_str()),
        (Some(0), "l0\nl1\nl2\nl3\n".to_owned(), String::new()),
        "a process works on files written through the API"
    );
    assert_eq!(
        f.read("src/made.txt", 0, 0).await.unwrap().content,
        "made\n"
    );
    assert_eq!(
        f.read("src/deep/a.txt", 4, 0).await.unwrap().content,
        "l4\n"
    );

    f.write("e.txt", b"let a = 1;\nlet b = 1;\n").await.unwrap();
    assert_eq!(f.edit("e.txt", "let a", "let x", false).await.unwrap(), 1);
    let err = f.edit("e.txt", "= 1", "= 2", false).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("2 times"), "{}", err.message());
    let err = f
        .edit("e.txt", "nothing like this", "y", false)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("not found"), "{}", err.message());
    assert_eq!(f.edit("e.txt", "= 1", "= 2", true).await.unwrap(), 2);
    assert_eq!(
        f.read("e.txt", 0, 0).await.unwrap().content,
        "let x = 2;\nlet b = 2;\n"
    );
    assert_eq!(
        f.edit("missing.txt", "a", "b", false)
            .await
            .unwrap_err()
            .code(),
        tonic::Code::NotFound
    );
    // A file a process made stays the process's after an edit through the API.
    let o = run(&s.client, shell(&sb.id, "mk", "echo 'x = 1' > p.txt")).await;
    assert_eq!(o.exited().exit_code, Some(0), "{}", o.stderr_str());
    assert_eq!(f.edit("p.txt", "1", "2", false).await.unwrap(), 1);
    let o = run(&s.client, shell(&sb.id, "append", "echo 'y = 3' >> p.txt")).await;
    assert_eq!(
        (o.exited().exit_code, o.stderr_str()),
        (Some(0), String::new()),
        "a process changes its file after an API edit"
    );
    assert_eq!(
        f.read("p.txt", 0, 0).await.unwrap().content,
        "x = 2\ny = 3\n"
    );
    s.stop().await;
}

async fn path_escapes_are_refused(backend: Backend) {
    let s = Executor::start(backend).await;
    let sb = s.sandbox().await;
    let f = Files {
        client: s.client.clone(),
        id: sb.id.clone(),
    };
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "top secret").unwrap();
    let host = s.workspace(&sb);
    symlink(outside.path(), host.join("linkdir")).unwrap();
    symlink(outside.path().join("secret.txt"), host.join("linkfile")).unwrap();
    symlink(outside.path().join("new.txt"), host.join("dangling")).unwrap();

    denied(f.read("../etc/passwd", 0, 0).await, "relative escape");
    denied(f.read("a/../../etc/passwd", 0, 0).await, "nested escape");
    denied(f.read("/etc/passwd", 0, 0).await, "absolute path outside");
    denied(f.read("linkfile", 0, 0).await, "symlinked file");
    denied(f.read("linkdir/secret.txt", 0, 0).await, "symlinked dir");
    denied(f.list("linkdir").await, "list through a symlinked dir");
    denied(
        f.write("linkdir/new.txt", b"x").await,
        "write through a symlinked dir",
    );
    denied(
        f.write("linkfile", b"x").await,
        "write through a symlinked file",
    );
    denied(
        f.write("dangling", b"x").await,
        "write through a dangling symlink",
    );
    denied(f.write("../escape.txt", b"x").await, "write outside");
    denied(
        f.upload("linkdir/up.bin", b"x", 1).await,
        "upload through a symlinked dir",
    );
    denied(f.download("linkfile").await, "download a symlinked file");
    denied(
        f.grep("secret", "linkdir", "").await,
        "grep a symlinked dir",
    );
    denied(f.glob("*", "linkdir").await, "glob a symlinked dir");
    assert!(!outside.path().join("new.txt").exists());
    assert_eq!(
        std::fs::read_to_string(outside.path().join("secret.txt")).unwrap(),
        "top secret"
    );

    // Grep over the workspace does not follow the symlinks either.
    f.write("inside.txt", b"no secrets here\n").await.unwrap();
    let r = f.grep("secret", "", "").await.unwrap();
    assert_eq!(r.matches.len(), 1);
    assert_eq!(r.matches[0].path, "inside.txt");
    s.stop().await;
}

async fn protected_paths_are_read_only(backend: Backend) {
    let s = Executor::start(backend).await;
    let sb = s.sandbox().await;
    let f = Files {
        client: s.client.clone(),
        id: sb.id.clone(),
    };
    let o = run(
        &s.client,
        shell(
            &sb.id,
            "mk",
            "mkdir .cognition && echo cfg > .cognition/x && ln -s .cognition alias",
        ),
    )
    .await;
    assert_eq!(o.exited().exit_code, Some(0));
    denied(f.write(".cognition/x", b"overwrite").await, "write");
    denied(f.write(".cognition/new", b"x").await, "create");
    denied(f.write("./sub/../.cognition/x", b"x").await, "normalised");
    denied(
        f.write(&format!("{}/.cognition/x", sb.workdir), b"x").await,
        "absolute",
    );
    denied(f.write("alias/x", b"x").await, "through a symlink");
    denied(f.edit(".cognition/x", "cfg", "evil", false).await, "edit");
    denied(f.upload(".cognition/up", b"data", 2).await, "upload");
    assert_eq!(
        f.read(".cognition/x", 0, 0).await.unwrap().content,
        "cfg\n",
        "reads are allowed"
    );
    f.write(".cognitionx", b"fine")
        .await
        .expect("a prefix of the name is not the protected folder");
    s.stop().await;
}

async fn list_glob_grep(backend: Backend) {
    let s = Executor::start(backend).await;
    let sb = s.sandbox().await;
    let f = Files {
        client: s.client.clone(),
        id: sb.id.clone(),
    };
    f.write("src/main.rs", b"fn main() {\n    println!(\"hello\");\n}\n")
        .await
        .unwrap();
    f.write(
        "src/lib/util.rs",
        b"pub fn util() {}\n// TODO: hello again\n",
    )
    .await
    .unwrap();
    f.write("README.md", b"# hello\n").await.unwrap();
    f.write("bin.dat", b"hello\0binary").await.unwrap();

    let listed = f.list("").await.unwrap();
    let names: Vec<(&str, bool)> = listed.iter().map(|e| (e.path.as_str(), e.is_dir)).collect();
    assert_eq!(
        names,
        vec![("README.md", false), ("bin.dat", false), ("src", true)]
    );
    assert_eq!(listed[0].size, 8);
    assert!(listed[0].modified_at.is_some());
    let listed = f.list("src").await.unwrap();
    assert_eq!(
        listed.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
        vec!["src/lib", "src/main.rs"]
    );

    assert_eq!(
        f.glob("**/*.rs", "").await.unwrap(),
        vec!["src/lib/util.rs", "src/main.rs"]
    );
    assert_eq!(f.glob("*.rs", "src").await.unwrap(), vec!["src/main.rs"]);
    assert_eq!(f.glob("*.md", "").await.unwrap(), vec!["README.md"]);
    assert_eq!(
        f.glob("[", "").await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );

    let r = f.grep("hello", "", "").await.unwrap();
    let hits: Vec<(String, u64)> = r
        .matches
        .iter()
        .map(|m| (m.path.clone(), m.line_number))
        .collect();
    assert_eq!(
        hits,
        vec![
            ("README.md".into(), 1),
            ("src/lib/util.rs".into(), 2),
            ("src/main.rs".into(), 2)
        ],
        "binary files are skipped"
    );
    assert!(!r.truncated);
    let r = f.grep("hel+o", "src", "*.rs").await.unwrap();
    assert_eq!(r.matches.len(), 2);
    assert_eq!(r.matches[1].line, "    println!(\"hello\");");
    let r = f.grep("TODO", "src/lib/util.rs", "").await.unwrap();
    assert_eq!(r.matches.len(), 1);
    assert_eq!(
        f.grep("(", "", "").await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );

    let many: String = (0..1500).map(|i| format!("match {i}\n")).collect();
    f.write("many.txt", many.as_bytes()).await.unwrap();
    let r = f.grep("match", "many.txt", "").await.unwrap();
    assert!(r.truncated);
    assert_eq!(r.matches.len(), 1000);
    s.stop().await;
}

async fn upload_download_round_trip(backend: Backend) {
    let s = Executor::start(backend).await;
    let sb = s.sandbox().await;
    let f = Files {
        client: s.client.clone(),
        id: sb.id.clone(),
    };
    let data: Vec<u8> = (0..(1024 * 1024 + 123))
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert_eq!(
        f.upload("up/big.bin", &data, 100_000).await.unwrap(),
        data.len() as u64
    );
    let chunks = f.download("up/big.bin").await.unwrap();
    assert!(
        chunks.iter().all(|c| c.len() <= 64 * 1024),
        "chunks of at most 64 KiB"
    );
    assert_eq!(chunks.concat(), data);
    // No temporary files are left behind.
    let listed = f.list("up").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].size, data.len() as u64);
    assert_eq!(
        f.download("nope.bin").await.unwrap_err().code(),
        tonic::Code::NotFound
    );
    assert_eq!(
        f.upload("", b"x", 1).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    s.stop().await;
}
