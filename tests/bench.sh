#!/usr/bin/env bash
# Builds the release binaries (and, when the Docker rows will run, the sandbox image of
# compose/sandbox/build.sh, a no-op when it is up to date) and runs the benchmark program, which
# prints a table of figures. Arguments go to cognition-bench (`--help` lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins

# The Docker rows belong to the `sandbox` group and are left out by --no-docker.
no_docker=0 only_given=0 sandbox_chosen=0 prev=
for arg in "$@"; do
  only=
  case "$arg" in
    --no-docker) no_docker=1 ;;
    --only=*) only="${arg#--only=}" ;;
  esac
  [ "$prev" = "--only" ] && only="$arg"
  if [ -n "$only" ]; then
    only_given=1
    case ",$only," in *,sandbox,*) sandbox_chosen=1 ;; esac
  fi
  prev="$arg"
done
docker_rows=1
if [ "$no_docker" = 1 ] || { [ "$only_given" = 1 ] && [ "$sandbox_chosen" = 0 ]; }; then
  docker_rows=0
fi
if [ "$docker_rows" = 1 ]; then
  if docker info >/dev/null 2>&1; then
    compose/sandbox/build.sh
  else
    echo "bench.sh: Docker is not reachable; the Docker rows will fail (--no-docker leaves them out)" >&2
  fi
fi
exec target/release/cognition-bench "$@"
