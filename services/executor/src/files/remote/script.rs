//! The shell scripts [`RemoteFiles`](super::RemoteFiles) runs in the sandbox, and what their exit
//! codes mean.
//!
//! Every script is the shared [`PROLOGUE`] (path resolution, the jail check, protected paths)
//! followed by one operation's body. Scripts run as `sh -c SCRIPT sh ARGS...` in the workspace
//! (their working directory); paths only ever arrive as arguments. They use POSIX `sh` and tools
//! that BusyBox and GNU coreutils/findutils/tar share (`realpath`, `readlink`, `stat -c`, `find`
//! with `-mindepth`/`-maxdepth`/`-path`/`-prune`, `xargs -0`, `tar -c --no-recursion`).
//!
//! Failures the caller must tell apart exit with a code of their own ([`Code`]) and a short
//! machine-readable message on stderr; anything else is an unexpected failure.

/// Helpers every script starts with.
///
/// `resolve PATH` (PATH is already lexically normalised and relative, `""` for the root) follows
/// symlinks like the kernel does, tolerating a missing tail (dangling symlinks are followed too),
/// and sets `real` (the absolute real path) and `rel` (the real path relative to `pwd -P`), or
/// exits with code 10 when the real path leaves the workspace. `writable RULE...` exits with code
/// 11 when `rel` is protected.
pub const PROLOGUE: &str = r#"
set -f
NL='
'
fail() { c=$1; shift; printf '%s' "$*" >&2; exit "$c"; }
need() { for t; do command -v "$t" >/dev/null 2>&1 || fail 19 "$t"; done; }
norm() {
  n=; o=$IFS; IFS=/
  for c in $1; do
    case $c in ''|.) ;; ..) n=${n%/*} ;; *) n=$n/$c ;; esac
  done
  IFS=$o
  [ -n "$n" ] || n=/
}
resolve() {
  p=./$1; rest=; hops=0
  while :; do
    if [ -e "$p" ]; then
      real=$(realpath "$p" && echo .) || fail 17 "cannot resolve $p"
      real=${real%"$NL."}
      break
    fi
    if [ -L "$p" ]; then
      hops=$((hops + 1))
      [ "$hops" -le 40 ] || fail 16 "too many symlinks"
      t=$(readlink "$p" && echo .) || fail 17 "cannot read the symlink $p"
      t=${t%"$NL."}
      case $t in /*) p=$t ;; *) p=${p%/*}/$t ;; esac
      continue
    fi
    rest=${p##*/}${rest:+/$rest}
    p=${p%/*}
    [ -n "$p" ] || p=/
  done
  [ -z "$rest" ] || [ -d "$real" ] || fail 12 "a parent is not a directory"
  norm "$real/$rest"; real=$n
  root=$(pwd -P && echo .) || fail 17 "cannot find the workspace"
  root=${root%"$NL."}
  if [ "$real" = "$root" ]; then
    rel=
  else
    case $root in /) pre=/ ;; *) pre=$root/ ;; esac
    case $real in "$pre"*) rel=${real#"$pre"} ;; *) fail 10 "outside the workspace" ;; esac
  fi
}
writable() {
  for r; do case $rel in "$r"|"$r"/*) fail 11 "$r$NL$rel" ;; esac; done
}
FMT='%f %s %Y %y'
listing() {
  find . "$@" ! -path "*$NL*" -exec stat -c "$FMT %n" {} +
  printf '#\n'
  find . "$@" -path "*$NL*" -exec sh -c 'for f; do stat -c "$0" "$f" && printf "%s\0" "$f"; done' "$FMT" {} +
}
single() {
  printf 'F\n#\n'
  stat -c "$FMT" "$1" || fail 17 "cannot stat the file"
  printf '%s\0' "$1"
}
"#;

/// `read PATH`: `+` then the file's bytes.
pub const READ: &str = r#"
need realpath readlink cat
resolve "$1"
[ -e "$real" ] || fail 12 "missing"
[ ! -d "$real" ] || fail 13 "directory"
[ -r "$real" ] || fail 18 "permission denied"
printf +
exec cat < "$real"
"#;

/// `edit-read PATH LIMIT RULE...`: like [`READ`] for a writable file of at most LIMIT bytes.
pub const EDIT_READ: &str = r#"
need realpath readlink cat stat
resolve "$1"; limit=$2; shift 2; writable "$@"
[ -e "$real" ] || fail 12 "missing"
[ ! -d "$real" ] || fail 13 "directory"
[ -r "$real" ] || fail 18 "permission denied"
size=$(stat -c %s "$real") || fail 17 "cannot stat the file"
[ "$size" -le "$limit" ] || fail 15 "$size"
printf +
exec cat < "$real"
"#;

/// `write PATH TMPNAME SIZE RULE...`, SIZE bytes on stdin: creates the parent folders, writes a
/// temporary file next to the target (keeping the mode of a file it replaces) and renames it into
/// place, unless stdin ended early.
pub const WRITE: &str = r#"
need realpath readlink cat stat chmod mkdir mv rm
resolve "$1"; tmpname=$2; size=$3; shift 3; writable "$@"
[ -n "$rel" ] || fail 13 "the workspace root"
[ ! -d "$real" ] || fail 13 "directory"
dir=${real%/*}; [ -n "$dir" ] || dir=/
err=$(mkdir -p "$dir" 2>&1) || fail 17 "creating the parent folder: $err"
tmp=$dir/$tmpname
trap 'rm -f "$tmp"' EXIT
cat > "$tmp" || fail 17 "writing a temporary file failed"
got=$(stat -c %s "$tmp") || fail 17 "cannot stat the temporary file"
[ "$got" = "$size" ] || fail 17 "received $got bytes instead of $size"
if [ -f "$real" ]; then
  mode=$(stat -c %a "$real") && chmod "$mode" "$tmp"
fi
err=$(mv -f "$tmp" "$real" 2>&1) || fail 17 "renaming the temporary file: $err"
"#;

/// `upload PATH TMPNAME RULE...`: prints `+`, the temporary file's path and a NUL, then copies
/// stdin into it. [`COMMIT`] moves it into place; [`DISCARD`] removes it.
pub const UPLOAD: &str = r#"
need realpath readlink cat mkdir
resolve "$1"; tmpname=$2; shift 2; writable "$@"
[ -n "$rel" ] || fail 13 "the workspace root"
[ ! -d "$real" ] || fail 13 "directory"
dir=${real%/*}; [ -n "$dir" ] || dir=/
err=$(mkdir -p "$dir" 2>&1) || fail 17 "creating the parent folder: $err"
tmp=$dir/$tmpname
: > "$tmp" || fail 17 "cannot create a temporary file"
printf '+%s\0' "$tmp"
exec cat > "$tmp"
"#;

/// `commit PATH TMP SIZE RULE...`: checks the target again and that TMP has SIZE bytes, then
/// renames TMP onto it; TMP is removed whatever happens.
pub const COMMIT: &str = r#"
need realpath readlink stat mv rm
tmp=$2; size=$3
trap 'rm -f "$tmp"' EXIT
resolve "$1"; shift 3; writable "$@"
[ -n "$rel" ] || fail 13 "the workspace root"
[ ! -d "$real" ] || fail 13 "directory"
dir=${real%/*}; [ -n "$dir" ] || dir=/
[ "$dir/${tmp##*/}" = "$tmp" ] || fail 17 "the target's folder changed during the upload"
got=$(stat -c %s "$tmp") || fail 17 "the uploaded data is gone"
[ "$got" = "$size" ] || fail 17 "received $got bytes instead of $size"
err=$(mv -f "$tmp" "$real" 2>&1) || fail 17 "renaming the temporary file: $err"
"#;

/// `discard TMP NAME`: removes an abandoned upload's temporary file (only a file named NAME).
pub const DISCARD: &str = r#"
case $1 in */"$2") rm -f "$1" ;; esac
"#;

/// `list PATH`: `D`, then the entries of the folder (see [`super::listing`]), or `F` and the
/// file itself.
pub const LIST: &str = r#"
need realpath readlink find stat
resolve "$1"
[ -e "$real" ] || fail 12 "missing"
if [ -d "$real" ]; then
  cd "$real" || fail 17 "cannot enter the folder"
  printf 'D\n'
  listing -mindepth 1 -maxdepth 1
else
  single "$real"
fi
"#;

/// `glob BASE`: `D` and every entry under the folder BASE, recursively, without following
/// symlinks.
pub const GLOB: &str = r#"
need realpath readlink find stat
resolve "$1"
[ -e "$real" ] || fail 12 "missing"
[ -d "$real" ] || fail 14 "not a directory"
cd "$real" || fail 17 "cannot enter the folder"
printf 'D\n'
listing -mindepth 1
"#;

/// `grep-list PATH`: like [`GLOB`] but only regular files, skipping `.git` folders; or the file
/// itself when PATH is not a folder.
pub const GREP_LIST: &str = r#"
need realpath readlink find stat
resolve "$1"
[ -e "$real" ] || fail 12 "missing"
if [ -d "$real" ]; then
  cd "$real" || fail 17 "cannot enter the folder"
  printf 'D\n'
  listing -name .git -type d -prune -o -type f
else
  single "$real"
fi
"#;

/// `grep-fetch PATH`, NUL-separated names on stdin (relative to the folder PATH resolves to, or
/// to the file's folder when it is a file): one tar stream of those files.
pub const GREP_FETCH: &str = r#"
need realpath readlink xargs tar
resolve "$1"
if [ -d "$real" ]; then dir=$real; else dir=${real%/*}; [ -n "$dir" ] || dir=/; fi
cd "$dir" || fail 17 "cannot enter the folder"
xargs -0 tar -cf - --no-recursion --
case $? in 126|127) fail 19 "tar" ;; esac
exit 0
"#;

/// What a script's exit code says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Ok,
    /// The real path leaves the workspace.
    Escapes,
    /// The real path is protected; stderr is `RULE\nREAL_PATH`.
    Protected,
    NotFound,
    IsADirectory,
    NotADirectory,
    /// stderr is the file's size.
    TooLarge,
    TooManySymlinks,
    /// An I/O failure; stderr says what.
    Io,
    PermissionDenied,
    /// The sandbox lacks a tool; stderr names it.
    MissingTool,
    Other(i32),
}

impl Code {
    pub fn from_exit(code: i32) -> Self {
        match code {
            0 => Code::Ok,
            10 => Code::Escapes,
            11 => Code::Protected,
            12 => Code::NotFound,
            13 => Code::IsADirectory,
            14 => Code::NotADirectory,
            15 => Code::TooLarge,
            16 => Code::TooManySymlinks,
            17 => Code::Io,
            18 => Code::PermissionDenied,
            19 => Code::MissingTool,
            n => Code::Other(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_round_trip() {
        assert_eq!(Code::from_exit(0), Code::Ok);
        assert_eq!(Code::from_exit(11), Code::Protected);
        assert_eq!(Code::from_exit(19), Code::MissingTool);
        assert_eq!(Code::from_exit(127), Code::Other(127));
    }

    #[test]
    fn every_failure_code_in_the_scripts_is_known() {
        for script in [
            PROLOGUE, READ, EDIT_READ, WRITE, UPLOAD, COMMIT, LIST, GLOB, GREP_LIST, GREP_FETCH,
        ] {
            for (i, _) in script.match_indices("fail ") {
                let code: String = script[i + 5..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                if let Ok(n) = code.parse::<i32>() {
                    assert!(
                        !matches!(Code::from_exit(n), Code::Other(_) | Code::Ok),
                        "exit code {n} has no meaning"
                    );
                }
            }
        }
    }
}
