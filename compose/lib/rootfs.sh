# shellcheck shell=sh
# Root filesystems from Debian packages, OFFLINE of any image registry: the dependency closure
# is resolved by apt against an empty dpkg database, the .deb files are fetched with
# `apt-get download` into a cache (one file per package version) and extracted with
# `dpkg-deb -x` (no maintainer scripts, no dpkg database in the result). Sourced by
# compose/build-images.sh; the same steps as compose/sandbox/build.sh, which can move onto it.
#
# Functions (POSIX sh; each exits the calling script through rootfs_fail on error):
#   rootfs_plan PLAN "EXCLUDED" "PACKAGES"
#       Writes the closure of PACKAGES to PLAN, one "package version arch" per line, sorted.
#       The packages of EXCLUDED count as installed: neither they nor what only they need are
#       in the closure (maintainer-script machinery such as perl or debconf, JIT libraries, …).
#   rootfs_fetch CACHE PLAN         downloads the .deb files of PLAN missing from CACHE
#   rootfs_deb CACHE PKG VER ARCH   prints the cached .deb path of one package version
#   rootfs_extract CACHE PLAN ROOT  extracts every package of PLAN into ROOT, prunes docs, man
#                                   pages, locales, lintian overrides and glibc's gconv, adds the
#                                   usual empty folders and /etc/nsswitch.conf (hosts: files dns)
#   rootfs_busybox_links ROOT       links every busybox applet no package installed into /bin
#   rootfs_ca_bundle ROOT           writes /etc/ssl/certs/ca-certificates.crt from the
#                                   ca-certificates package (what update-ca-certificates does)
#   rootfs_check_tools              fails unless apt-get, dpkg, dpkg-deb and sha256sum exist
# Variables: ROOTFS_NAME prefixes messages (default: the script's name); ROOTFS_PLAN_CACHE, when
# set, is a folder where plans are kept, keyed by their inputs and the state of apt's package
# lists (resolving takes apt ~1.5 s).

rootfs_fail() {
  echo "${ROOTFS_NAME:-$(basename "$0")}: $*" >&2
  exit 1
}

rootfs_check_tools() {
  for _rf_tool in apt-get dpkg dpkg-deb sha256sum; do
    command -v "$_rf_tool" >/dev/null 2>&1 || rootfs_fail "$_rf_tool is required (a Debian host)"
  done
}

# apt options shared by planning and downloading: no package caches written, no recommends.
rootfs_apt_opts() {
  _rf_opts="-o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= -o APT::Install-Recommends=false -o APT::Install-Suggests=false"
  # As root, apt drops to the _apt user, who cannot write into our folders.
  [ "$(id -u)" -ne 0 ] || _rf_opts="$_rf_opts -o APT::Sandbox::User=root"
  echo "$_rf_opts"
}

rootfs_plan() {
  _rf_plan="$1" _rf_excluded="$2" _rf_packages="$3"
  _rf_arch="$(dpkg --print-architecture)"
  # A plan only changes with the inputs and the package lists (apt-get update): reuse it.
  if [ -n "${ROOTFS_PLAN_CACHE:-}" ]; then
    _rf_key="$({ echo "$_rf_arch|$_rf_excluded|$_rf_packages"; ls -lL --full-time /var/lib/apt/lists 2>/dev/null; } |
      sha256sum | cut -d' ' -f1)"
    if [ -s "$ROOTFS_PLAN_CACHE/$_rf_key" ]; then
      cp "$ROOTFS_PLAN_CACHE/$_rf_key" "$_rf_plan"
      return 0
    fi
  fi
  : > "$_rf_plan.status"
  for _rf_pkg in dpkg $_rf_excluded; do
    printf 'Package: %s\nStatus: install ok installed\nVersion: 99:0\nArchitecture: %s\nMaintainer: none\nDescription: counted as installed, left out of the image\n\n' \
      "$_rf_pkg" "$_rf_arch" >> "$_rf_plan.status"
  done
  # shellcheck disable=SC2046,SC2086 # word lists
  apt-get -s -q $(rootfs_apt_opts) -o Dir::State::status="$_rf_plan.status" install $_rf_packages \
    > "$_rf_plan.log" 2>&1 ||
    { cat "$_rf_plan.log" >&2; rootfs_fail "apt-get could not resolve $_rf_packages (try: apt-get update)"; }
  sed -n 's/^Inst \([^ ]*\) (\([^ ]*\) [^[]*\[\([^]]*\)\].*/\1 \2 \3/p' "$_rf_plan.log" | sort > "$_rf_plan"
  for _rf_pkg in $_rf_packages; do
    grep -q "^$_rf_pkg " "$_rf_plan" || rootfs_fail "apt-get did not plan to install $_rf_pkg: $(cat "$_rf_plan.log")"
  done
  rm -f "$_rf_plan.status" "$_rf_plan.log"
  if [ -n "${ROOTFS_PLAN_CACHE:-}" ]; then
    mkdir -p "$ROOTFS_PLAN_CACHE"
    cp "$_rf_plan" "$ROOTFS_PLAN_CACHE/$_rf_key.tmp" && mv "$ROOTFS_PLAN_CACHE/$_rf_key.tmp" "$ROOTFS_PLAN_CACHE/$_rf_key"
  fi
}

rootfs_deb() {
  echo "$1/${2}_$(echo "$3" | sed 's/:/%3a/g')_${4}.deb"
}

rootfs_fetch() {
  _rf_cache="$1" _rf_plan="$2"
  mkdir -p "$_rf_cache"
  _rf_missing=""
  while read -r _rf_pkg _rf_ver _rf_arch; do
    [ -s "$(rootfs_deb "$_rf_cache" "$_rf_pkg" "$_rf_ver" "$_rf_arch")" ] || _rf_missing="$_rf_missing $_rf_pkg=$_rf_ver"
  done < "$_rf_plan"
  if [ -n "$_rf_missing" ]; then
    echo "${ROOTFS_NAME:-$(basename "$0")}: downloading $(echo "$_rf_missing" | wc -w) packages into $_rf_cache" >&2
    _rf_dl="$(mktemp -d "$_rf_cache/.download.XXXXXX")"
    # shellcheck disable=SC2046,SC2086
    (cd "$_rf_dl" && apt-get download -q $(rootfs_apt_opts) $_rf_missing) > "$_rf_dl.log" 2>&1 ||
      { cat "$_rf_dl.log" >&2; rm -rf "$_rf_dl" "$_rf_dl.log"; rootfs_fail "apt-get download failed (try: apt-get update)"; }
    mv "$_rf_dl"/*.deb "$_rf_cache"/
    rm -rf "$_rf_dl" "$_rf_dl.log"
  fi
  while read -r _rf_pkg _rf_ver _rf_arch; do
    [ -s "$(rootfs_deb "$_rf_cache" "$_rf_pkg" "$_rf_ver" "$_rf_arch")" ] ||
      rootfs_fail "missing $(rootfs_deb "$_rf_cache" "$_rf_pkg" "$_rf_ver" "$_rf_arch") after download"
  done < "$_rf_plan"
}

rootfs_extract() {
  _rf_cache="$1" _rf_plan="$2" _rf_root="$3"
  mkdir -p "$_rf_root"
  while read -r _rf_pkg _rf_ver _rf_arch; do
    dpkg-deb -x "$(rootfs_deb "$_rf_cache" "$_rf_pkg" "$_rf_ver" "$_rf_arch")" "$_rf_root" ||
      rootfs_fail "cannot extract $_rf_pkg $_rf_ver"
  done < "$_rf_plan"
  rm -rf "$_rf_root/usr/share/doc" "$_rf_root/usr/share/man" "$_rf_root/usr/share/locale" \
    "$_rf_root/usr/share/info" "$_rf_root/usr/share/lintian" "$_rf_root/usr/lib/x86_64-linux-gnu/gconv"
  mkdir -p "$_rf_root/bin" "$_rf_root/etc" "$_rf_root/tmp" "$_rf_root/proc" "$_rf_root/sys" "$_rf_root/dev" \
    "$_rf_root/usr/bin" "$_rf_root/sbin" "$_rf_root/usr/sbin" "$_rf_root/var" "$_rf_root/run" "$_rf_root/root"
  chmod 1777 "$_rf_root/tmp"
  printf 'hosts: files dns\n' > "$_rf_root/etc/nsswitch.conf"
}

rootfs_busybox_links() {
  _rf_root="$1"
  [ -x "$_rf_root/bin/busybox" ] || rootfs_fail "busybox-static did not provide /bin/busybox"
  for _rf_applet in $("$_rf_root/bin/busybox" --list); do
    _rf_taken=0
    for _rf_dir in bin usr/bin sbin usr/sbin; do
      if [ -e "$_rf_root/$_rf_dir/$_rf_applet" ] || [ -L "$_rf_root/$_rf_dir/$_rf_applet" ]; then _rf_taken=1; fi
    done
    [ "$_rf_taken" -eq 1 ] || ln -s busybox "$_rf_root/bin/$_rf_applet"
  done
}

rootfs_ca_bundle() {
  _rf_root="$1"
  [ -d "$_rf_root/usr/share/ca-certificates" ] || rootfs_fail "ca-certificates is not in $_rf_root"
  mkdir -p "$_rf_root/etc/ssl/certs"
  find "$_rf_root/usr/share/ca-certificates" -name '*.crt' | LC_ALL=C sort | while read -r _rf_crt; do
    cat "$_rf_crt"
    # A certificate file may lack its final newline.
    [ -z "$(tail -c 1 "$_rf_crt")" ] || echo
  done > "$_rf_root/etc/ssl/certs/ca-certificates.crt"
  [ -s "$_rf_root/etc/ssl/certs/ca-certificates.crt" ] || rootfs_fail "no certificate in ca-certificates"
}
