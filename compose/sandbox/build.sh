#!/bin/sh
# Builds the sandbox image `cognition-sandbox:latest` OFFLINE: no registry pulls. The root
# filesystem is assembled `FROM scratch` from Debian's statically linked busybox (package
# `busybox-static`, installed with apt-get when /bin/busybox is missing or not static).
#
# Contents: /bin/busybox and its applet links in /bin (sh, ls, cat, kill, setsid, wget, nc, …),
# /etc/passwd and /etc/group with `sandbox` (uid/gid 1000), /workspace, /tmp, /home/sandbox.
# Python is not in this image yet.
#
# Usage: compose/sandbox/build.sh [--force] [--tag NAME]
#   Skips the build when the image already exists, unless --force.
set -eu

TAG="${COGNITION_SANDBOX_IMAGE:-cognition-sandbox:latest}"
FORCE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --force) FORCE=1 ;;
    --tag) shift; TAG="$1" ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

if [ "$FORCE" -eq 0 ] && docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "build.sh: image $TAG exists (use --force to rebuild)"
  exit 0
fi

BUSYBOX=/bin/busybox
is_static() { "$BUSYBOX" --help >/dev/null 2>&1 && ! ldd "$BUSYBOX" >/dev/null 2>&1; }
if [ ! -x "$BUSYBOX" ] || ! is_static; then
  echo "build.sh: installing busybox-static" >&2
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get install -y busybox-static >/dev/null
fi
is_static || { echo "build.sh: $BUSYBOX is not a static binary" >&2; exit 1; }

CTX="$(mktemp -d)"
trap 'rm -rf "$CTX"' EXIT INT TERM
ROOT="$CTX/rootfs"
mkdir -p "$ROOT/bin" "$ROOT/etc" "$ROOT/workspace" "$ROOT/home/sandbox" "$ROOT/root" \
  "$ROOT/proc" "$ROOT/sys" "$ROOT/dev" "$ROOT/usr/bin" "$ROOT/sbin" "$ROOT/usr/sbin" "$ROOT/var"
install -m 0755 "$BUSYBOX" "$ROOT/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$ROOT/bin/$applet"
done
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

cat > "$CTX/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME=/home/sandbox LANG=C.UTF-8
USER 1000:1000
WORKDIR /workspace
CMD ["/bin/sleep", "2147483647"]
DOCKERFILE
mkdir -p "$ROOT/tmp"
chmod 1777 "$ROOT/tmp"

# The classic builder needs no BuildKit frontend image (nothing to pull); its deprecation
# notice is noise here.
DOCKER_BUILDKIT=0 docker build -q -t "$TAG" \
  --label org.opencontainers.image.title=cognition-sandbox \
  --label cognition.io/sandbox-image=true "$CTX" >/dev/null 2>"$CTX/build.log" || {
  cat "$CTX/build.log" >&2
  exit 1
}
echo "build.sh: built $TAG"
