//! The built-in tools of the agent, with the original's names and arguments (deepagents
//! style): `execute`, `ls`, `read_file`, `write_file`, `edit_file`, `glob`, `grep` (all run in
//! the session's sandbox through the executor, see [`executor`]) and `write_todos` (the plan).
//!
//! A tool never fails the run: bad arguments, a refused path, a non-zero exit or an
//! unreachable executor all become a [`ToolResult`] the model reads (exit code ≠ 0 and an
//! `Error: …` text). Output is cut to `max_output_chars` with a visible note
//! ([`format::truncate`]). Paths are relative to the sandbox's workspace; a leading `/` means
//! the workspace root (the original's virtual file system), and the executor refuses anything
//! that leaves the workspace.

pub mod executor;
pub mod format;
pub mod todos;

use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use self::executor::Cancellable;
pub use self::executor::{Executor, ExecutorError, Sandbox};
use crate::domain::{StringMap, ToolCall};
use crate::event::EventKind;
use crate::llm::ToolSpec;

pub const EXECUTE: &str = "execute";
pub const LS: &str = "ls";
pub const READ_FILE: &str = "read_file";
pub const WRITE_FILE: &str = "write_file";
pub const EDIT_FILE: &str = "edit_file";
pub const GLOB: &str = "glob";
pub const GREP: &str = "grep";
pub const WRITE_TODOS: &str = "write_todos";

/// Every built-in tool.
pub const ALL: &[&str] = &[
    WRITE_TODOS,
    LS,
    READ_FILE,
    WRITE_FILE,
    EDIT_FILE,
    GLOB,
    GREP,
    EXECUTE,
];

/// The tools that neither write nor execute (the `readonly` agent).
pub const READ_ONLY: &[&str] = &[WRITE_TODOS, LS, READ_FILE, GLOB, GREP];

/// Exit code of a tool result that was cut short by an abort.
pub const ABORTED_EXIT_CODE: i32 = 130;

/// Tool limits (from the service configuration).
#[derive(Debug, Clone)]
pub struct ToolSettings {
    /// Longest tool output the model sees, in characters.
    pub max_output_chars: usize,
    /// `execute` timeout when the model gives none.
    pub default_timeout: Duration,
    /// Longest `execute` timeout the model may ask for.
    pub max_timeout: Duration,
}

impl Default for ToolSettings {
    fn default() -> Self {
        Self {
            max_output_chars: 30_000,
            default_timeout: Duration::from_secs(120),
            max_timeout: Duration::from_secs(1800),
        }
    }
}

/// What a tool call produced: events to emit before the result (`planning`, …), the text the
/// model reads and an exit code (0 = success).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolResult {
    pub events: Vec<EventKind>,
    pub output: String,
    pub exit_code: i32,
}

impl ToolResult {
    fn ok(output: impl Into<String>) -> Self {
        Self {
            events: Vec::new(),
            output: output.into(),
            exit_code: 0,
        }
    }

    fn error(message: impl std::fmt::Display) -> Self {
        Self {
            events: Vec::new(),
            output: format!("Error: {message}"),
            exit_code: 1,
        }
    }
}

/// A tool call's end: a result, or abandoned because the run was cancelled.
#[derive(Debug)]
pub enum Outcome {
    Finished(ToolResult),
    Cancelled,
}

/// Per-run state of the tools: the session, its sandbox once created, the plan.
#[derive(Debug)]
pub struct ToolContext {
    pub session_id: Uuid,
    pub scopes: StringMap,
    sandbox: Option<Sandbox>,
    plan: todos::Plan,
}

impl ToolContext {
    pub fn new(session_id: Uuid, scopes: StringMap) -> Self {
        Self {
            session_id,
            scopes,
            sandbox: None,
            plan: todos::Plan::default(),
        }
    }
}

/// The built-in tools of this replica.
#[derive(Debug, Clone)]
pub struct Toolbox {
    executor: Executor,
    settings: ToolSettings,
}

#[derive(Deserialize)]
struct ExecuteArgs {
    command: String,
    /// Seconds.
    timeout: Option<f64>,
}

#[derive(Deserialize)]
struct LsArgs {
    path: Option<String>,
}

#[derive(Deserialize)]
struct ReadFileArgs {
    file_path: String,
    offset: Option<u64>,
    limit: Option<u64>,
}

#[derive(Deserialize)]
struct WriteFileArgs {
    file_path: String,
    content: String,
}

#[derive(Deserialize)]
struct EditFileArgs {
    file_path: String,
    old_string: String,
    new_string: String,
    #[serde(default)]
    replace_all: bool,
}

#[derive(Deserialize)]
struct GlobArgs {
    pattern: String,
    path: Option<String>,
}

#[derive(Deserialize)]
struct GrepArgs {
    pattern: String,
    path: Option<String>,
    glob: Option<String>,
    include: Option<String>,
    output_mode: Option<String>,
}

/// Default `read_file` line count.
const READ_LIMIT: u64 = 2000;

fn parse<T: DeserializeOwned>(tool: &str, args: &serde_json::Value) -> Result<T, ToolResult> {
    serde_json::from_value(args.clone())
        .map_err(|e| ToolResult::error(format!("invalid arguments for {tool}: {e}")))
}

/// A model path → a workspace path for the executor (a leading `/` is the workspace root,
/// unless the path already lies under the sandbox's real workdir).
fn workspace_path(workdir: &str, path: &str) -> String {
    let path = path.trim();
    if !workdir.is_empty() && path.starts_with(workdir) {
        return path.to_owned();
    }
    let relative = path.trim_start_matches('/');
    if relative.is_empty() {
        ".".to_owned()
    } else {
        relative.to_owned()
    }
}

/// The JSON Schema of each tool, described for the model.
pub fn spec(name: &str) -> Option<ToolSpec> {
    let (description, parameters) = match name {
        EXECUTE => (
            "Run a shell command (`/bin/sh -c`) in the session's sandbox, in the workspace \
             directory. Returns stdout and stderr combined, and the exit code when it is not 0.",
            json!({"type": "object", "properties": {
                "command": {"type": "string", "description": "The shell command to run."},
                "timeout": {"type": "number", "description": "Timeout in seconds (default 120)."}
            }, "required": ["command"]}),
        ),
        LS => (
            "List the files and directories in a directory of the workspace (directories end \
             with /).",
            json!({"type": "object", "properties": {
                "path": {"type": "string", "description": "Directory, relative to the workspace (default: the workspace root)."}
            }}),
        ),
        READ_FILE => (
            "Read a text file of the workspace. Lines are numbered like `cat -n`. Use offset \
             (0-based first line) and limit (number of lines, default 2000) for long files.",
            json!({"type": "object", "properties": {
                "file_path": {"type": "string", "description": "Path of the file."},
                "offset": {"type": "integer", "minimum": 0, "description": "First line to read (0-based)."},
                "limit": {"type": "integer", "minimum": 1, "description": "Number of lines to read."}
            }, "required": ["file_path"]}),
        ),
        WRITE_FILE => (
            "Create or overwrite a file in the workspace with the given content.",
            json!({"type": "object", "properties": {
                "file_path": {"type": "string", "description": "Path of the file."},
                "content": {"type": "string", "description": "The whole new content."}
            }, "required": ["file_path", "content"]}),
        ),
        EDIT_FILE => (
            "Replace an exact string in a file. old_string must occur exactly once unless \
             replace_all is true. Read the file first.",
            json!({"type": "object", "properties": {
                "file_path": {"type": "string", "description": "Path of the file."},
                "old_string": {"type": "string", "description": "The exact text to replace."},
                "new_string": {"type": "string", "description": "The replacement text."},
                "replace_all": {"type": "boolean", "description": "Replace every occurrence (default false)."}
            }, "required": ["file_path", "old_string", "new_string"]}),
        ),
        GLOB => (
            "Find files whose path matches a glob pattern such as `**/*.rs`.",
            json!({"type": "object", "properties": {
                "pattern": {"type": "string", "description": "Glob pattern."},
                "path": {"type": "string", "description": "Directory to search (default: the workspace root)."}
            }, "required": ["pattern"]}),
        ),
        GREP => (
            "Search file contents for a regular expression. output_mode: files_with_matches \
             (default), content (path:line:text) or count.",
            json!({"type": "object", "properties": {
                "pattern": {"type": "string", "description": "Regular expression."},
                "path": {"type": "string", "description": "Directory or file to search (default: the workspace root)."},
                "glob": {"type": "string", "description": "Only files whose name matches this glob, e.g. *.py."},
                "output_mode": {"type": "string", "enum": ["files_with_matches", "content", "count"]}
            }, "required": ["pattern"]}),
        ),
        WRITE_TODOS => (
            "Write the plan for this task as a todo list, and update it as you go (mark items \
             in_progress and completed). Each call replaces the whole list.",
            json!({"type": "object", "properties": {
                "todos": {"type": "array", "items": {"type": "object", "properties": {
                    "content": {"type": "string"},
                    "status": {"type": "string", "enum": ["pending", "in_progress", "completed"]}
                }, "required": ["content", "status"]}}
            }, "required": ["todos"]}),
        ),
        _ => return None,
    };
    Some(ToolSpec {
        name: name.to_owned(),
        description: description.to_owned(),
        parameters,
    })
}

impl Toolbox {
    pub fn new(executor: Executor, settings: ToolSettings) -> Self {
        Self { executor, settings }
    }

    pub fn settings(&self) -> &ToolSettings {
        &self.settings
    }

    /// Runs one tool call. `allowed` are the agent's tools; anything else is refused (as a
    /// result). On `cancel` a running command is killed and the call returns
    /// [`Outcome::Cancelled`].
    pub async fn call(
        &self,
        ctx: &mut ToolContext,
        call: &ToolCall,
        allowed: &[&str],
        exec_id: String,
        cancel: &CancellationToken,
    ) -> Outcome {
        if !allowed.contains(&call.name.as_str()) {
            return Outcome::Finished(ToolResult::error(format!(
                "there is no tool named {:?} for this agent; available tools: {}",
                call.name,
                allowed.join(", ")
            )));
        }
        let result = tokio::select! {
            _ = cancel.cancelled() => return Outcome::Cancelled,
            result = self.dispatch(ctx, call, exec_id, cancel) => result,
        };
        match result {
            Ok(Cancellable::Cancelled) => Outcome::Cancelled,
            Ok(Cancellable::Done(mut result)) => {
                result.output = format::truncate(
                    std::mem::take(&mut result.output),
                    self.settings.max_output_chars,
                );
                Outcome::Finished(result)
            }
            Err(result) => Outcome::Finished(result),
        }
    }

    async fn sandbox(&self, ctx: &mut ToolContext) -> Result<Sandbox, ToolResult> {
        if let Some(sandbox) = &ctx.sandbox
            && self.executor.still_holds(sandbox)
        {
            return Ok(sandbox.clone());
        }
        ctx.sandbox = None;
        let sandbox = self
            .executor
            .ensure_sandbox(&ctx.session_id.to_string(), &ctx.scopes)
            .await
            .map_err(ToolResult::error)?;
        ctx.sandbox = Some(sandbox.clone());
        Ok(sandbox)
    }

    async fn dispatch(
        &self,
        ctx: &mut ToolContext,
        call: &ToolCall,
        exec_id: String,
        cancel: &CancellationToken,
    ) -> Result<Cancellable<ToolResult>, ToolResult> {
        let args = &call.args;
        let done = |r: ToolResult| Ok(Cancellable::Done(r));
        match call.name.as_str() {
            WRITE_TODOS => {
                let args: todos::WriteTodos = parse(WRITE_TODOS, args)?;
                let (events, output) = ctx.plan.update(&args.todos);
                done(ToolResult {
                    events,
                    output,
                    exit_code: 0,
                })
            }
            EXECUTE => {
                let args: ExecuteArgs = parse(EXECUTE, args)?;
                let timeout = match args.timeout {
                    Some(secs) if secs.is_finite() && secs > 0.0 => {
                        Duration::from_secs_f64(secs.min(self.settings.max_timeout.as_secs_f64()))
                    }
                    _ => self.settings.default_timeout,
                };
                let sandbox = self.sandbox(ctx).await?;
                let ran = self
                    .executor
                    .execute(&sandbox, exec_id, args.command, timeout, cancel)
                    .await
                    .map_err(ToolResult::error)?;
                let Cancellable::Done(ran) = ran else {
                    return Ok(Cancellable::Cancelled);
                };
                let mut output = ran.output;
                let exit_code = ran.exit_code.unwrap_or(-1);
                if let Some(note) = ran.note {
                    if !output.is_empty() && !output.ends_with('\n') {
                        output.push('\n');
                    }
                    output.push_str(&format!("[{note}]"));
                } else if exit_code != 0 {
                    if !output.is_empty() && !output.ends_with('\n') {
                        output.push('\n');
                    }
                    output.push_str(&format!("[Command failed with exit code {exit_code}]"));
                }
                done(ToolResult {
                    events: Vec::new(),
                    output,
                    exit_code,
                })
            }
            LS => {
                let args: LsArgs = parse(LS, args)?;
                let sandbox = self.sandbox(ctx).await?;
                let path = workspace_path(&sandbox.workdir, args.path.as_deref().unwrap_or(""));
                let files = self
                    .executor
                    .list_files(&sandbox, path.clone())
                    .await
                    .map_err(ToolResult::error)?;
                done(ToolResult::ok(list_paths(
                    &files,
                    &format!("{path} is empty"),
                )))
            }
            READ_FILE => {
                let args: ReadFileArgs = parse(READ_FILE, args)?;
                let sandbox = self.sandbox(ctx).await?;
                let offset = args.offset.unwrap_or(0);
                let read = self
                    .executor
                    .read_file(
                        &sandbox,
                        workspace_path(&sandbox.workdir, &args.file_path),
                        offset,
                        args.limit.unwrap_or(READ_LIMIT).max(1),
                    )
                    .await
                    .map_err(ToolResult::error)?;
                if read.total_lines == 0 {
                    return done(ToolResult::ok(
                        "System reminder: File exists but has empty contents",
                    ));
                }
                if read.content.is_empty() && offset >= read.total_lines {
                    return Err(ToolResult::error(format!(
                        "line offset {offset} exceeds file length ({} lines)",
                        read.total_lines
                    )));
                }
                let mut output = format::numbered(&read.content, offset + 1);
                if read.truncated {
                    output.push_str(&format!(
                        "… [file has {} lines; use offset and limit to read more]\n",
                        read.total_lines
                    ));
                }
                done(ToolResult::ok(output))
            }
            WRITE_FILE => {
                let args: WriteFileArgs = parse(WRITE_FILE, args)?;
                let sandbox = self.sandbox(ctx).await?;
                let bytes = self
                    .executor
                    .write_file(
                        &sandbox,
                        workspace_path(&sandbox.workdir, &args.file_path),
                        args.content,
                    )
                    .await
                    .map_err(ToolResult::error)?;
                done(ToolResult::ok(format!(
                    "Wrote {bytes} bytes to {}",
                    args.file_path
                )))
            }
            EDIT_FILE => {
                let args: EditFileArgs = parse(EDIT_FILE, args)?;
                let sandbox = self.sandbox(ctx).await?;
                let request = cognition_proto::executor::v1::EditFileRequest {
                    sandbox_id: String::new(),
                    path: workspace_path(&sandbox.workdir, &args.file_path),
                    old_string: args.old_string,
                    new_string: args.new_string,
                    replace_all: args.replace_all,
                };
                let n = self
                    .executor
                    .edit_file(&sandbox, request)
                    .await
                    .map_err(ToolResult::error)?;
                done(ToolResult::ok(format!(
                    "Successfully replaced {n} occurrence(s) in {}",
                    args.file_path
                )))
            }
            GLOB => {
                let args: GlobArgs = parse(GLOB, args)?;
                let sandbox = self.sandbox(ctx).await?;
                let path = workspace_path(&sandbox.workdir, args.path.as_deref().unwrap_or(""));
                let files = self
                    .executor
                    .glob(&sandbox, args.pattern.clone(), path)
                    .await
                    .map_err(ToolResult::error)?;
                done(ToolResult::ok(list_paths(
                    &files,
                    &format!("No files match {}", args.pattern),
                )))
            }
            GREP => {
                let args: GrepArgs = parse(GREP, args)?;
                let sandbox = self.sandbox(ctx).await?;
                let path = workspace_path(&sandbox.workdir, args.path.as_deref().unwrap_or(""));
                let include = args.glob.or(args.include).unwrap_or_default();
                let found = self
                    .executor
                    .grep(&sandbox, args.pattern.clone(), path, include)
                    .await
                    .map_err(ToolResult::error)?;
                done(ToolResult::ok(grep_output(
                    &found,
                    args.output_mode.as_deref(),
                    &args.pattern,
                )))
            }
            other => Err(ToolResult::error(format!("unknown tool {other:?}"))),
        }
    }
}

fn list_paths(files: &[cognition_proto::executor::v1::FileInfo], empty: &str) -> String {
    if files.is_empty() {
        return empty.to_owned();
    }
    files
        .iter()
        .map(|f| {
            if f.is_dir && !f.path.ends_with('/') {
                format!("{}/", f.path)
            } else {
                f.path.clone()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn grep_output(
    found: &cognition_proto::executor::v1::GrepResponse,
    mode: Option<&str>,
    pattern: &str,
) -> String {
    if found.matches.is_empty() {
        return format!("No matches for {pattern}");
    }
    let mut out = match mode.unwrap_or("files_with_matches") {
        "content" => found
            .matches
            .iter()
            .map(|m| format!("{}:{}:{}", m.path, m.line_number, m.line))
            .collect::<Vec<_>>()
            .join("\n"),
        "count" => {
            let mut counts: Vec<(String, usize)> = Vec::new();
            for m in &found.matches {
                match counts.iter_mut().find(|(p, _)| *p == m.path) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((m.path.clone(), 1)),
                }
            }
            counts
                .into_iter()
                .map(|(p, n)| format!("{p}: {n}"))
                .collect::<Vec<_>>()
                .join("\n")
        }
        _ => {
            let mut paths: Vec<&str> = Vec::new();
            for m in &found.matches {
                if !paths.contains(&m.path.as_str()) {
                    paths.push(&m.path);
                }
            }
            paths.join("\n")
        }
    };
    if found.truncated {
        out.push_str("\n… [more matches omitted; narrow the search]");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_a_schema() {
        for name in ALL {
            let spec = spec(name).unwrap();
            assert_eq!(spec.parameters["type"], "object", "{name}");
        }
        assert!(spec("nope").is_none());
        assert!(READ_ONLY.iter().all(|t| ALL.contains(t)));
        assert!(!READ_ONLY.contains(&EXECUTE) && !READ_ONLY.contains(&WRITE_FILE));
    }

    #[test]
    fn paths_are_relative_to_the_workspace() {
        let sandbox = "/data/s/workspace";
        assert_eq!(workspace_path(sandbox, "/notes.txt"), "notes.txt");
        assert_eq!(workspace_path(sandbox, "a/b"), "a/b");
        assert_eq!(workspace_path(sandbox, "/"), ".");
        assert_eq!(workspace_path(sandbox, ""), ".");
        assert_eq!(
            workspace_path(sandbox, "/data/s/workspace/x"),
            "/data/s/workspace/x"
        );
        assert_eq!(workspace_path(sandbox, "../etc/passwd"), "../etc/passwd");
    }

    #[tokio::test]
    async fn bad_arguments_and_unknown_tools_are_results() {
        let toolbox = Toolbox::new(
            Executor::new(crate::executor_pool::ExecutorPool::none()),
            ToolSettings::default(),
        );
        let mut ctx = ToolContext::new(Uuid::nil(), StringMap::new());
        let cancel = CancellationToken::new();
        let call = |name: &str, args| ToolCall {
            name: name.into(),
            args,
            id: "c".into(),
        };
        let Outcome::Finished(r) = toolbox
            .call(
                &mut ctx,
                &call(READ_FILE, json!({})),
                ALL,
                "e".into(),
                &cancel,
            )
            .await
        else {
            panic!("cancelled")
        };
        assert_eq!(r.exit_code, 1);
        assert!(r.output.contains("file_path"), "{}", r.output);
        let Outcome::Finished(r) = toolbox
            .call(
                &mut ctx,
                &call(EXECUTE, json!({"command": "ls"})),
                READ_ONLY,
                "e".into(),
                &cancel,
            )
            .await
        else {
            panic!("cancelled")
        };
        assert!(r.output.contains("no tool named"), "{}", r.output);
        let Outcome::Finished(r) = toolbox
            .call(
                &mut ctx,
                &call(EXECUTE, json!({"command": "ls"})),
                ALL,
                "e".into(),
                &cancel,
            )
            .await
        else {
            panic!("cancelled")
        };
        assert_eq!(r.exit_code, 1);
        assert!(
            r.output.contains("no executor is configured"),
            "{}",
            r.output
        );
        let Outcome::Finished(r) = toolbox
            .call(
                &mut ctx,
                &call(
                    WRITE_TODOS,
                    json!({"todos": [{"content": "a", "status": "completed"}]}),
                ),
                ALL,
                "e".into(),
                &cancel,
            )
            .await
        else {
            panic!("cancelled")
        };
        assert_eq!(r.exit_code, 0);
        assert_eq!(r.events.len(), 2);
    }

    #[test]
    fn grep_modes() {
        use cognition_proto::executor::v1::{GrepMatch, GrepResponse};
        let found = GrepResponse {
            matches: vec![
                GrepMatch {
                    path: "a".into(),
                    line_number: 1,
                    line: "x".into(),
                },
                GrepMatch {
                    path: "a".into(),
                    line_number: 3,
                    line: "xx".into(),
                },
                GrepMatch {
                    path: "b".into(),
                    line_number: 2,
                    line: "x".into(),
                },
            ],
            truncated: false,
        };
        assert_eq!(grep_output(&found, None, "x"), "a\nb");
        assert_eq!(grep_output(&found, Some("count"), "x"), "a: 2\nb: 1");
        assert_eq!(
            grep_output(&found, Some("content"), "x"),
            "a:1:x\na:3:xx\nb:2:x"
        );
    }
}
