#!/usr/bin/env bash
# Builds the release binaries and runs the benchmark program (prints a table of figures).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins
exec target/release/cognition-bench "$@"
