#!/usr/bin/env bash
# Installs what the checks and tests need, idempotently: PostgreSQL (Debian), buf and the
# Python gRPC tools (PyPI, for the cross-language client test). Safe to run repeatedly.
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "deps: installing postgresql" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 || true
  apt-get install -y -qq postgresql >&2
fi
pip_quiet() { python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "$@" >&2; }
command -v buf >/dev/null 2>&1 || pip_quiet buf-bin
python3 -c 'import grpc_tools, grpc' >/dev/null 2>&1 || pip_quiet grpcio grpcio-tools
