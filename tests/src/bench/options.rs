//! The command line of `cognition-bench`: which groups of rows to run (`--only`) and whether
//! the Docker rows run (`--no-docker`).

/// What `--help` (and a bad argument) prints.
pub const USAGE: &str = "usage: cognition-bench [--only GROUP[,GROUP...]] [--no-docker]
  groups: rest, turns, memory, startup, sandbox (default: all)
  --no-docker  leave out the Docker rows of the sandbox group
  BENCH_SECONDS (default 10) sets the length of the load phases";

/// The groups of rows, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// REST load and idle RSS.
    Rest,
    /// Turns, turn throughput, watchers.
    Turns,
    /// RSS per session and growth over turns.
    Memory,
    /// Start → healthy per binary.
    Startup,
    /// Exec and new session → first tool output.
    Sandbox,
}

impl Group {
    pub const ALL: [Group; 5] = [
        Group::Rest,
        Group::Turns,
        Group::Memory,
        Group::Startup,
        Group::Sandbox,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Group::Rest => "rest",
            Group::Turns => "turns",
            Group::Memory => "memory",
            Group::Startup => "startup",
            Group::Sandbox => "sandbox",
        }
    }
}

/// The command line of `cognition-bench`.
#[derive(Debug, PartialEq, Eq)]
pub struct Options {
    pub groups: Vec<Group>,
    /// Whether the Docker rows run.
    pub docker: bool,
}

impl Options {
    /// `Ok(None)` for `--help`.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Options>, String> {
        let mut groups: Option<Vec<Group>> = None;
        let mut docker = true;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let only = match arg.as_str() {
                "-h" | "--help" => return Ok(None),
                "--no-docker" => {
                    docker = false;
                    continue;
                }
                "--only" => args.next().ok_or_else(|| {
                    "--only needs a group (rest, turns, memory, startup, sandbox)".to_owned()
                })?,
                other => match other.strip_prefix("--only=") {
                    Some(value) => value.to_owned(),
                    None => return Err(format!("unknown argument {other:?}")),
                },
            };
            let chosen = groups.get_or_insert_with(Vec::new);
            for name in only.split(',') {
                let group = Group::ALL
                    .into_iter()
                    .find(|g| g.name() == name.trim())
                    .ok_or_else(|| {
                        format!("unknown group {name:?} (rest, turns, memory, startup, sandbox)")
                    })?;
                if !chosen.contains(&group) {
                    chosen.push(group);
                }
            }
        }
        Ok(Some(Options {
            groups: groups.unwrap_or_else(|| Group::ALL.to_vec()),
            docker,
        }))
    }

    pub fn runs(&self, group: Group) -> bool {
        self.groups.contains(&group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Options>, String> {
        Options::parse(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn every_group_with_docker_by_default() {
        let o = parse(&[]).unwrap().unwrap();
        assert_eq!(o.groups, Group::ALL.to_vec());
        assert!(o.docker);
    }

    #[test]
    fn only_and_no_docker() {
        let o = parse(&["--only", "sandbox", "--no-docker"])
            .unwrap()
            .unwrap();
        assert_eq!(o.groups, vec![Group::Sandbox]);
        assert!(!o.docker);
        let o = parse(&["--only=rest,startup", "--only", "rest"])
            .unwrap()
            .unwrap();
        assert_eq!(o.groups, vec![Group::Rest, Group::Startup]);
        assert_eq!(parse(&["--help"]).unwrap(), None);
    }

    #[test]
    fn bad_arguments_are_refused_with_a_reason() {
        assert!(parse(&["--only"]).unwrap_err().contains("needs a group"));
        assert!(
            parse(&["--only", "docker"])
                .unwrap_err()
                .contains("unknown group \"docker\"")
        );
        assert!(parse(&["--fast"]).unwrap_err().contains("unknown argument"));
    }
}
