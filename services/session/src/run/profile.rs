//! What an agent is for the loop: its system prompt and its tools. Only the native agents
//! exist until the config registry (issue #4): `default` (every tool) and `readonly` (no
//! write_file, edit_file or execute).

use crate::tools;

/// The loop's view of an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub system_prompt: String,
    pub tools: &'static [&'static str],
}

const BASE_PROMPT: &str = "You are Cognition, a capable software agent. You work in a sandboxed \
workspace through tools: list and read files, search them, write and edit files, and run shell \
commands. Paths are relative to the workspace root; a leading / also means the workspace root.\n\
\n\
How to work:\n\
- For a task with several steps, write a plan with write_todos first and keep it up to date \
(mark items in_progress, then completed).\n\
- Read a file before editing it; edit_file replaces an exact string that must be unique unless \
replace_all is set.\n\
- Prefer small, verifiable steps; check the result of commands you run.\n\
- When a tool fails, read the error and adapt instead of repeating the same call.\n\
- When you are done, answer the user directly and concisely.";

const READONLY_PROMPT: &str = "\n\nYou are in read-only mode: you can list, read and search \
files, but you cannot write, edit or run commands. Say so when the user asks for a change.";

/// The profile of `agent_name` (unknown names get the default agent's).
pub fn profile(agent_name: &str) -> Profile {
    match agent_name {
        "readonly" => Profile {
            name: agent_name.to_owned(),
            system_prompt: format!("{BASE_PROMPT}{READONLY_PROMPT}"),
            tools: tools::READ_ONLY,
        },
        _ => Profile {
            name: agent_name.to_owned(),
            system_prompt: BASE_PROMPT.to_owned(),
            tools: tools::ALL,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readonly_has_no_write_or_exec_tools() {
        let p = profile("readonly");
        for t in [tools::WRITE_FILE, tools::EDIT_FILE, tools::EXECUTE] {
            assert!(!p.tools.contains(&t), "{t}");
        }
        assert!(p.system_prompt.contains("read-only"));
        assert_eq!(profile("default").tools, tools::ALL);
    }
}
