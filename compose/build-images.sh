#!/bin/sh
# Builds the images of the compose stacks OFFLINE (no registry pulls: every image is `FROM
# scratch`, assembled from Debian packages with compose/lib/rootfs.sh and built with the classic
# builder, which needs no frontend image):
#
#   cognition-runtime:TAG    the base of our services: glibc (libc6, libgcc-s1), the CA bundle,
#                            busybox (sh, wget for health checks), user `cognition` (10001)
#   cognition-gateway:TAG    \
#   cognition-session:TAG     > the runtime + one binary from the cargo target folder, run as
#   cognition-executor:TAG   /  10001 (compose runs the executor as root: it owns the sandboxes)
#   cognition-fake-llm:TAG   the scripted fake LLM (tests only)
#   cognition-postgres:TAG   PostgreSQL 15 (Debian's postgresql-15 and its library closure, no
#                            perl/debconf tooling), entrypoint compose/postgres/entrypoint.sh
#
# The sandbox image is compose/sandbox/build.sh's. Compose files use these images through
# compose/.env.local.
#
# Binaries: by default those of target/debug (what `cargo build --workspace --bins` produced);
# missing ones are built with cargo. --profile release uses target/release; --bin-dir DIR takes
# them from DIR and never runs cargo; --cargo runs `cargo build` first even when they exist
# (use it when the sources changed since the last build).
#
# Caching: .deb files in ${COGNITION_DEB_CACHE:-${XDG_CACHE_HOME:-~/.cache}/cognition/debs}; each
# image carries the label `cognition.io/build-hash` (this script, the library, the package
# versions, the binary) and is skipped while it matches (--force rebuilds).
#
# Usage: compose/build-images.sh [--profile debug|release] [--bin-dir DIR] [--cargo] [--force]
#                                [--tag TAG]
set -eu
umask 022

PROFILE=debug
BIN_DIR=""
CARGO_ALWAYS=0
FORCE=0
TAG=local
while [ $# -gt 0 ]; do
  case "$1" in
    --profile)
      [ $# -ge 2 ] || { echo "build-images.sh: --profile needs debug or release" >&2; exit 2; }
      shift; PROFILE="$1"
      case "$PROFILE" in debug | release) ;; *) echo "build-images.sh: --profile $PROFILE: debug or release" >&2; exit 2 ;; esac ;;
    --bin-dir)
      [ $# -ge 2 ] || { echo "build-images.sh: --bin-dir needs a folder" >&2; exit 2; }
      shift; BIN_DIR="$1" ;;
    --cargo) CARGO_ALWAYS=1 ;;
    --force) FORCE=1 ;;
    --tag)
      [ $# -ge 2 ] || { echo "build-images.sh: --tag needs a TAG" >&2; exit 2; }
      shift; TAG="$1" ;;
    -h | --help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "build-images.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

HERE="$(cd "$(dirname "$0")" && pwd)"
SCRIPT="$HERE/$(basename "$0")"
REPO="$(cd "$HERE/.." && pwd)"
ROOTFS_NAME=build-images.sh
# shellcheck source=lib/rootfs.sh
. "$HERE/lib/rootfs.sh"
fail() { rootfs_fail "$@"; }
rootfs_check_tools
command -v docker >/dev/null 2>&1 || fail "docker is required"
docker info >/dev/null 2>&1 || fail "the Docker engine does not answer (docker info failed)"

now_ms() {
  ns="$(date +%s%N)"
  case "$ns" in *N) echo $(($(date +%s) * 1000)) ;; *) echo $((ns / 1000000)) ;; esac
}
STARTED="$(now_ms)"
took() { ms=$(($(now_ms) - $1)); printf '%d.%d s' $((ms / 1000)) $((ms % 1000 / 100)); }

CACHE="${COGNITION_DEB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cognition/debs}"
ROOTFS_PLAN_CACHE="$CACHE/plans"
CTX="$(mktemp -d)"
trap 'rm -rf "$CTX"' EXIT INT TERM
SERVICE_UID=10001
PG_UID=999
SCRIPT_HASH="$(cat "$SCRIPT" "$HERE/lib/rootfs.sh" "$HERE/postgres/entrypoint.sh" | sha256sum | cut -d' ' -f1)"

# --- binaries ----------------------------------------------------------------------------------
BINARIES="cognition-gateway cognition-session cognition-executor cognition-fake-llm"
PACKAGES_OF_BINARIES="-p cognition-gateway -p cognition-session -p cognition-executor -p cognition-fake-llm"
if [ -n "$BIN_DIR" ]; then
  [ -d "$BIN_DIR" ] || fail "--bin-dir $BIN_DIR is not a folder"
  BIN_DIR="$(cd "$BIN_DIR" && pwd)"
  for b in $BINARIES; do
    [ -x "$BIN_DIR/$b" ] || fail "$BIN_DIR/$b is missing (build it: cargo build --workspace --bins)"
  done
else
  BIN_DIR="${CARGO_TARGET_DIR:-$REPO/target}/$PROFILE"
  missing=0
  for b in $BINARIES; do [ -x "$BIN_DIR/$b" ] || missing=1; done
  if [ "$missing" -eq 1 ] || [ "$CARGO_ALWAYS" -eq 1 ]; then
    command -v cargo >/dev/null 2>&1 || fail "cargo not found: install Rust, or pass --bin-dir with prebuilt binaries"
    release=""
    [ "$PROFILE" = debug ] || release=--release
    echo "build-images.sh: cargo build $release --bins ($PROFILE)" >&2
    # shellcheck disable=SC2086
    (cd "$REPO" && cargo build --quiet --locked $release --bins $PACKAGES_OF_BINARIES) ||
      fail "cargo build failed"
  fi
  for b in $BINARIES; do
    [ -x "$BIN_DIR/$b" ] || fail "$BIN_DIR/$b is still missing after cargo build"
  done
fi
for b in $BINARIES; do
  [ "$(head -c 4 "$BIN_DIR/$b" | od -An -c | tr -d ' ')" = '177ELF' ] || fail "$BIN_DIR/$b is not an ELF binary"
done

# --- helpers -----------------------------------------------------------------------------------
# up_to_date IMAGE HASH: the image exists and carries HASH (and --force was not given).
up_to_date() {
  [ "$FORCE" -eq 0 ] &&
    [ "$(docker image inspect --format '{{index .Config.Labels "cognition.io/build-hash"}}' "$1" 2>/dev/null || true)" = "$2" ]
}

# build IMAGE DIR: docker build of DIR (its Dockerfile), then removes the image it replaced
# unless something still uses it.
build() {
  old="$(docker image inspect --format '{{.Id}}' "$1" 2>/dev/null || true)"
  DOCKER_BUILDKIT=0 docker build -q --network none -t "$1" "$2" >/dev/null 2>"$2.log" || {
    cat "$2.log" >&2
    fail "docker build of $1 failed"
  }
  new="$(docker image inspect --format '{{.Id}}' "$1")"
  if [ -n "$old" ] && [ "$old" != "$new" ]; then
    docker image rm "$old" >/dev/null 2>&1 || true
  fi
}

# write_identity ROOT: /etc/passwd and /etc/group with root, the given extra lines, nobody.
write_identity() {
  printf 'root:x:0:0:root:/root:/bin/sh\n%s\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' "$2" > "$1/etc/passwd"
  printf 'root:x:0:\n%s\nnogroup:x:65534:\n' "$3" > "$1/etc/group"
}

REPORT=""
report() { REPORT="$REPORT
  $1"; }

# --- the runtime base --------------------------------------------------------------------------
RUNTIME="cognition-runtime:$TAG"
T0="$(now_ms)"
rootfs_plan "$CTX/runtime.plan" "debconf openssl" "libc6 libgcc-s1 ca-certificates busybox-static"
RUNTIME_HASH="$({ echo "$SCRIPT_HASH"; cat "$CTX/runtime.plan"; } | sha256sum | cut -d' ' -f1)"
if up_to_date "$RUNTIME" "$RUNTIME_HASH"; then
  report "$RUNTIME up to date"
else
  rootfs_fetch "$CACHE" "$CTX/runtime.plan"
  mkdir -p "$CTX/runtime"
  rootfs_extract "$CACHE" "$CTX/runtime.plan" "$CTX/runtime/rootfs"
  rootfs_busybox_links "$CTX/runtime/rootfs"
  rootfs_ca_bundle "$CTX/runtime/rootfs"
  write_identity "$CTX/runtime/rootfs" "cognition:x:$SERVICE_UID:$SERVICE_UID:cognition:/var/lib/cognition:/bin/false" \
    "cognition:x:$SERVICE_UID:"
  mkdir -p "$CTX/runtime/data"
  cat > "$CTX/runtime/Dockerfile" <<DOCKERFILE
FROM scratch
COPY rootfs/ /
COPY --chown=$SERVICE_UID:$SERVICE_UID data/ /var/lib/cognition/
ENV PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin LANG=C.UTF-8 SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
WORKDIR /var/lib/cognition
USER $SERVICE_UID:$SERVICE_UID
LABEL org.opencontainers.image.title=cognition-runtime cognition.io/build-hash=$RUNTIME_HASH
DOCKERFILE
  build "$RUNTIME" "$CTX/runtime"
  report "$RUNTIME built in $(took "$T0")"
fi
RUNTIME_ID="$(docker image inspect --format '{{.Id}}' "$RUNTIME")"

# --- our services ------------------------------------------------------------------------------
# service IMAGE BINARY PORTS ENV...: the runtime + the binary as entrypoint.
service() {
  name="$1" image="$1:$TAG" binary="$2" ports="$3"
  shift 3
  t0="$(now_ms)"
  hash="$({ echo "$SCRIPT_HASH $RUNTIME_ID $ports $*"; sha256sum < "$BIN_DIR/$binary"; } | sha256sum | cut -d' ' -f1)"
  if up_to_date "$image" "$hash"; then
    report "$image up to date"
    return 0
  fi
  dir="$CTX/$binary"
  mkdir -p "$dir"
  cp "$BIN_DIR/$binary" "$dir/$binary"
  chmod 0755 "$dir/$binary"
  {
    echo "FROM $RUNTIME"
    echo "COPY $binary /usr/local/bin/$binary"
    for kv in "$@"; do echo "ENV $kv"; done
    [ -z "$ports" ] || echo "EXPOSE $ports"
    echo "ENTRYPOINT [\"/usr/local/bin/$binary\"]"
    echo "LABEL org.opencontainers.image.title=$name cognition.io/build-hash=$hash"
  } > "$dir/Dockerfile"
  build "$image" "$dir"
  report "$image built in $(took "$t0")"
}

service cognition-gateway cognition-gateway "8000 9464" \
  COGNITION_HOST=0.0.0.0 COGNITION_PORT=8000 COGNITION_DATA_DIR=/var/lib/cognition
service cognition-session cognition-session "50051 9464" \
  COGNITION_SESSION_ADDR=0.0.0.0:50051 COGNITION_DATA_DIR=/var/lib/cognition
service cognition-executor cognition-executor "50052 9464" \
  COGNITION_EXECUTOR_ADDR=0.0.0.0:50052 COGNITION_DATA_DIR=/var/lib/cognition
service cognition-fake-llm cognition-fake-llm "8080"

# --- PostgreSQL --------------------------------------------------------------------------------
POSTGRES="cognition-postgres:$TAG"
T0="$(now_ms)"
# Left out: the perl/debconf packaging tools (pg_wrapper, pg_ctlcluster), locales (initdb uses
# the C locale), LLVM (no JIT), PAM modules, user-management tools.
PG_EXCLUDED="postgresql-common postgresql-client-common perl perl-base perl-modules-5.36 libperl5.36
  debconf locales locales-all ssl-cert libllvm14 usrmerge init-system-helpers sysvinit-utils lsb-base
  passwd adduser libc-bin libpam-modules libpam-modules-bin libpam-runtime openssl"
rootfs_plan "$CTX/postgres.plan" "$PG_EXCLUDED" "postgresql-15 postgresql-client-15 busybox-static"
PG_HASH="$({ echo "$SCRIPT_HASH"; cat "$CTX/postgres.plan"; } | sha256sum | cut -d' ' -f1)"
if up_to_date "$POSTGRES" "$PG_HASH"; then
  report "$POSTGRES up to date"
else
  rootfs_fetch "$CACHE" "$CTX/postgres.plan"
  ROOT="$CTX/postgres/rootfs"
  mkdir -p "$CTX/postgres"
  rootfs_extract "$CACHE" "$CTX/postgres.plan" "$ROOT"
  rootfs_busybox_links "$ROOT"
  PGBIN=/usr/lib/postgresql/15/bin
  [ -x "$ROOT$PGBIN/postgres" ] || fail "postgresql-15 did not provide $PGBIN/postgres"
  # No JIT: the LLVM provider and its bitcode are useless without libllvm.
  rm -rf "$ROOT/usr/lib/postgresql/15/lib/llvmjit.so" "$ROOT/usr/lib/postgresql/15/lib/llvmjit_types.bc" \
    "$ROOT/usr/lib/postgresql/15/lib/bitcode"
  [ -e "$ROOT/var/run" ] || ln -s /run "$ROOT/var/run"
  write_identity "$ROOT" "postgres:x:$PG_UID:$PG_UID:PostgreSQL:/var/lib/postgresql:/bin/sh" "postgres:x:$PG_UID:"
  mkdir -p "$CTX/postgres/home/data" "$CTX/postgres/run"
  chmod 700 "$CTX/postgres/home/data"
  install -m 0755 "$HERE/postgres/entrypoint.sh" "$CTX/postgres/entrypoint.sh"
  cat > "$CTX/postgres/Dockerfile" <<DOCKERFILE
FROM scratch
COPY rootfs/ /
COPY --chown=$PG_UID:$PG_UID home/ /var/lib/postgresql/
COPY --chown=$PG_UID:$PG_UID run/ /run/postgresql/
COPY entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=$PGBIN:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin LANG=C.UTF-8 PGDATA=/var/lib/postgresql/data
RUN ["/bin/sh", "-ec", "for b in postgres initdb pg_isready psql; do if /lib64/ld-linux-x86-64.so.2 --list $PGBIN/\$b | grep 'not found'; then echo \"\$b misses libraries\" >&2; exit 1; fi; done; postgres --version"]
VOLUME /var/lib/postgresql/data
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
LABEL org.opencontainers.image.title=cognition-postgres cognition.io/build-hash=$PG_HASH
DOCKERFILE
  build "$POSTGRES" "$CTX/postgres"
  report "$POSTGRES built in $(took "$T0")"
fi

echo "build-images.sh: done in $(took "$STARTED") (binaries from $BIN_DIR)$REPORT"
