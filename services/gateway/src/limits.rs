//! Process limits for a server that holds one socket per SSE watcher.

/// Raises the soft open-files limit to the hard limit, so a gateway can hold thousands of SSE
/// connections without `EMFILE`. Returns the new soft limit; `None` if it could not be read or
/// raised (the server still runs, with the limit it had).
pub fn raise_open_files_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft >= hard {
        return Some(soft);
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).ok()?;
    Some(hard)
}

#[cfg(test)]
mod tests {
    #[test]
    fn soft_limit_reaches_the_hard_limit() {
        let raised = super::raise_open_files_limit().expect("readable limit");
        let (soft, hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(soft, hard);
        assert_eq!(raised, soft);
    }
}
