#!/usr/bin/env bash
# The test command: starts a throwaway PostgreSQL server, runs every test of the workspace
# (SQLite and PostgreSQL store suites, gRPC and HTTP component tests, end-to-end tests with the
# three services on loopback, the Python gRPC client), then stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/scripts/deps.sh
COGNITION_TEST_POSTGRES_URL=$(tests/scripts/pg.sh start)
export COGNITION_TEST_POSTGRES_URL
trap 'tests/scripts/pg.sh stop' EXIT
# End-to-end tests spawn the service binaries (cognition, cognition-gateway, …): build them all.
cargo build --workspace --bins
cargo test --workspace --all-targets "$@"
