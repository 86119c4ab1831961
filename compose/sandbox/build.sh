#!/bin/sh
# Builds the sandbox image `cognition-sandbox:latest` OFFLINE: no registry pulls, only Debian
# packages through apt. The root filesystem is assembled `FROM scratch` with the classic builder.
#
# Contents: Debian's `python3` (3.11, full standard library, byte-compiled at build time) and the
# libraries it needs (libc6, libssl3, …), extracted with `dpkg-deb -x` without maintainer
# scripts (dpkg itself is left out); Debian's static busybox (`busybox-static`) in /bin with an
# applet link for every applet no package provides (sh, ls, cat, kill, setsid, wget, nc, …); the
# in-sandbox exec agent at /opt/cognition/bin/cognition-sandbox-agent (static-pie, built with
# cargo, or COGNITION_SANDBOX_AGENT_BIN=<path> to use a prebuilt one), named by the label
# `cognition.io/agent`; /etc/passwd and /etc/group with `sandbox` (uid/gid 1000), /workspace,
# /tmp, /home/sandbox. No docs, man pages, locales or glibc iconv modules (gconv).
#
# Caching: the .deb files are kept in ${XDG_CACHE_HOME:-~/.cache}/cognition/sandbox-debs (one
# file per package version; only missing versions are downloaded). The label
# `cognition.io/build-hash` hashes this script, the agent binary and the package versions: the
# build is skipped when the image already carries the same hash (so a changed agent rebuilds).
#
# Usage: compose/sandbox/build.sh [--force] [--tag NAME]
#   --force     rebuild even when the image is up to date
#   --tag NAME  image name (default: $COGNITION_SANDBOX_IMAGE or cognition-sandbox:latest)
set -eu
umask 022

TAG="${COGNITION_SANDBOX_IMAGE:-cognition-sandbox:latest}"
FORCE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --force) FORCE=1 ;;
    --tag)
      [ $# -ge 2 ] || { echo "build.sh: --tag needs a NAME" >&2; exit 2; }
      shift; TAG="$1" ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

fail() { echo "build.sh: $*" >&2; exit 1; }
now_ms() {
  ns="$(date +%s%N)"
  case "$ns" in *N) echo $(($(date +%s) * 1000)) ;; *) echo $((ns / 1000000)) ;; esac
}
STARTED="$(now_ms)"
took() { ms=$(($(now_ms) - STARTED)); printf '%d.%d s' $((ms / 1000)) $((ms % 1000 / 100)); }

HERE="$(cd "$(dirname "$0")" && pwd)"
SCRIPT="$HERE/$(basename "$0")"
REPO="$(cd "$HERE/../.." && pwd)"
PACKAGES="python3 busybox-static"
AGENT_PATH=/opt/cognition/bin/cognition-sandbox-agent
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/cognition/sandbox-debs"
for tool in apt-get dpkg dpkg-deb docker sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is required (a Debian host with Docker)"
done

CTX="$(mktemp -d)"
trap 'rm -rf "$CTX"' EXIT INT TERM

# 1. The package closure, resolved against an empty dpkg database in which only dpkg counts as
#    installed (python3-minimal depends on it for its maintainer scripts, which we do not run).
ARCH="$(dpkg --print-architecture)"
printf 'Package: dpkg\nStatus: install ok installed\nVersion: 99:0\nArchitecture: %s\nMaintainer: none\nDescription: placeholder\n' \
  "$ARCH" > "$CTX/status"
APT_OPTS="-o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= -o APT::Install-Recommends=false -o APT::Install-Suggests=false"
[ "$(id -u)" -ne 0 ] || APT_OPTS="$APT_OPTS -o APT::Sandbox::User=root"
# shellcheck disable=SC2086 # APT_OPTS is a list of words
apt-get -s -q $APT_OPTS -o Dir::State::status="$CTX/status" install $PACKAGES > "$CTX/plan" 2>&1 ||
  { cat "$CTX/plan" >&2; fail "apt-get could not resolve $PACKAGES (try: apt-get update)"; }
sed -n 's/^Inst \([^ ]*\) (\([^ ]*\) [^[]*\[\([^]]*\)\].*/\1 \2 \3/p' "$CTX/plan" | sort > "$CTX/packages"
for p in $PACKAGES; do
  grep -q "^$p " "$CTX/packages" || fail "apt-get did not plan to install $p: $(cat "$CTX/plan")"
done

# 2. The .deb files: cached per package version, only missing ones are downloaded.
deb_file() { echo "$CACHE/${1}_$(echo "$2" | sed 's/:/%3a/g')_${3}.deb"; }
mkdir -p "$CACHE"
MISSING=""
while read -r pkg ver arch; do
  [ -s "$(deb_file "$pkg" "$ver" "$arch")" ] || MISSING="$MISSING $pkg=$ver"
done < "$CTX/packages"
if [ -n "$MISSING" ]; then
  echo "build.sh: downloading $(echo "$MISSING" | wc -w) packages into $CACHE" >&2
  DL="$(mktemp -d "$CACHE/.download.XXXXXX")"
  # shellcheck disable=SC2086
  (cd "$DL" && apt-get download -q $APT_OPTS $MISSING) > "$CTX/download.log" 2>&1 ||
    { cat "$CTX/download.log" >&2; rm -rf "$DL"; fail "apt-get download failed (try: apt-get update)"; }
  mv "$DL"/*.deb "$CACHE"/
  rm -rf "$DL"
fi
while read -r pkg ver arch; do
  [ -s "$(deb_file "$pkg" "$ver" "$arch")" ] || fail "missing $(deb_file "$pkg" "$ver" "$arch") after download"
done < "$CTX/packages"

# 3. The exec agent: a static-pie binary, built here unless COGNITION_SANDBOX_AGENT_BIN names one.
if [ -n "${COGNITION_SANDBOX_AGENT_BIN:-}" ]; then
  AGENT="$COGNITION_SANDBOX_AGENT_BIN"
  [ -f "$AGENT" ] || fail "COGNITION_SANDBOX_AGENT_BIN=$AGENT is not a file"
else
  command -v cargo >/dev/null 2>&1 ||
    fail "cargo not found: install Rust to build the sandbox agent, or set COGNITION_SANDBOX_AGENT_BIN=<path to a static cognition-sandbox-agent>"
  TARGET=x86_64-unknown-linux-gnu
  (cd "$REPO" && env -u CARGO_ENCODED_RUSTFLAGS RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --quiet --release --locked -p cognition-sandbox-agent --target "$TARGET" \
    --target-dir "$REPO/target/sandbox-agent") || fail "building cognition-sandbox-agent failed"
  AGENT="$REPO/target/sandbox-agent/$TARGET/release/cognition-sandbox-agent"
fi
[ "$(head -c 4 "$AGENT" | od -An -c | tr -d ' ')" = '177ELF' ] || fail "$AGENT is not an ELF binary"
if command -v readelf >/dev/null 2>&1 && readelf -l "$AGENT" | grep -q 'program interpreter'; then
  fail "$AGENT is dynamically linked; the agent must be static (RUSTFLAGS='-C target-feature=+crt-static')"
fi

# 4. Skip when the image was built from the same script, agent and packages.
HASH="$({ sha256sum < "$SCRIPT"; sha256sum < "$AGENT"; cat "$CTX/packages"; } | sha256sum | cut -d' ' -f1)"
OLD_ID="$(docker image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)"
if [ "$FORCE" -eq 0 ] && [ -n "$OLD_ID" ] &&
  [ "$(docker image inspect --format '{{index .Config.Labels "cognition.io/build-hash"}}' "$TAG")" = "$HASH" ]; then
  echo "build.sh: image $TAG is up to date (checked in $(took); --force rebuilds)"
  exit 0
fi

# 5. The root filesystem.
ROOT="$CTX/rootfs"
mkdir -p "$ROOT"
while read -r pkg ver arch; do
  dpkg-deb -x "$(deb_file "$pkg" "$ver" "$arch")" "$ROOT"
done < "$CTX/packages"
rm -rf "$ROOT/usr/share/doc" "$ROOT/usr/share/man" "$ROOT/usr/share/locale" \
  "$ROOT/usr/share/info" "$ROOT/usr/share/lintian" "$ROOT/usr/lib/x86_64-linux-gnu/gconv"
mkdir -p "$ROOT/bin" "$ROOT/etc" "$ROOT/workspace" "$ROOT/home/sandbox" "$ROOT/root" \
  "$ROOT/proc" "$ROOT/sys" "$ROOT/dev" "$ROOT/usr/bin" "$ROOT/sbin" "$ROOT/usr/sbin" "$ROOT/var" \
  "$ROOT/tmp" "$ROOT/opt/cognition/bin"
chmod 1777 "$ROOT/tmp"
[ -x "$ROOT/bin/busybox" ] || fail "busybox-static did not provide /bin/busybox"
# Busybox applets never shadow a program a package installed.
for applet in $("$ROOT/bin/busybox" --list); do
  taken=0
  for dir in bin usr/bin sbin usr/sbin; do
    if [ -e "$ROOT/$dir/$applet" ] || [ -L "$ROOT/$dir/$applet" ]; then taken=1; fi
  done
  [ "$taken" -eq 1 ] || ln -s busybox "$ROOT/bin/$applet"
done
[ -x "$ROOT/usr/bin/python3" ] || fail "python3 did not provide /usr/bin/python3"
cat > "$ROOT/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
sandbox:x:1000:1000:sandbox:/home/sandbox:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > "$ROOT/etc/group" <<'GROUP'
root:x:0:
sandbox:x:1000:
nogroup:x:65534:
GROUP
printf 'hosts: files\n' > "$ROOT/etc/nsswitch.conf"

# The byte-compiling step stands in for python3-minimal's postinst (py3compile): without it every
# process would recompile the modules it imports, since the sandbox cannot write __pycache__.
# The agent comes last, in its own layer: when only the agent changed, the builder's cache
# (keyed by content) reuses every layer before it.
install -m 0755 "$AGENT" "$CTX/agent"
cat > "$CTX/Dockerfile" <<DOCKERFILE
FROM scratch
COPY rootfs/ /
RUN ["/usr/bin/python3", "-m", "compileall", "-q", "-j0", "/usr/lib/python3.11"]
ENV PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME=/home/sandbox LANG=C.UTF-8
USER 1000:1000
WORKDIR /workspace
CMD ["/bin/sleep", "2147483647"]
LABEL org.opencontainers.image.title=cognition-sandbox cognition.io/sandbox-image=true cognition.io/agent=$AGENT_PATH
COPY agent $AGENT_PATH
LABEL cognition.io/build-hash=$HASH
DOCKERFILE

# The classic builder needs no BuildKit frontend image (nothing to pull); its deprecation
# notice is noise here.
DOCKER_BUILDKIT=0 docker build -q --network none -t "$TAG" "$CTX" >/dev/null 2>"$CTX/build.log" || {
  cat "$CTX/build.log" >&2
  fail "docker build failed"
}
# The image this build replaced is now untagged: remove it unless something still uses it.
NEW_ID="$(docker image inspect --format '{{.Id}}' "$TAG")"
if [ -n "$OLD_ID" ] && [ "$OLD_ID" != "$NEW_ID" ]; then
  docker image rm "$OLD_ID" >/dev/null 2>&1 || true
fi
echo "build.sh: built $TAG in $(took)"
