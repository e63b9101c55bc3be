#!/usr/bin/env bash
# Builds the images of the Docker mode without any image registry (see docker/README.md):
#   tunswitch-busybox:local  stand-in app image: busybox-static and its applets, nothing else
#   tunswitch-base:local     stand-in base of the switch: busybox + the host's node, ip,
#                            nsenter and the shared libraries they load (found with ldd)
#   tunswitch:local          ./Dockerfile on top of tunswitch-base: package.json, the built
#                            dist, node_modules and the native TUN binding
#
# Usage: docker/build-images.sh [--dist DIR] [--base-only]
#   --dist DIR    the tsc outDir to ship (default dist)
#   --base-only   only the two stand-ins (before anything is built)
# Idempotent: a stand-in image is re-imported only when its input files changed (a hash of
# them is kept in the image label tunswitch.input); the last image is a cached docker build.
set -euo pipefail
cd "$(dirname "$0")/.."

DIST=dist
BASE_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dist) DIST="${2:?--dist needs a folder}"; DIST="${DIST%/}"; shift 2 ;;
    --base-only) BASE_ONLY=1; shift ;;
    *) echo "build-images: unknown argument $1 (want --dist DIR, --base-only)" >&2; exit 2 ;;
  esac
done

# The engine here may be older than a docker CLI found first on PATH; use the engine's own
# client when there is one (DOCKER overrides).
if [ -z "${DOCKER:-}" ]; then
  if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
fi
# The classic builder: BuildKit may try to reach a registry for FROM lines.
export DOCKER_BUILDKIT=0

[ "$BASE_ONLY" = 1 ] || for f in "$DIST/src/cli/main.js" "$DIST/workers/shard.js" native/build/Release/tunswitch_tun.node node_modules/piscina/package.json; do
  [ -e "$f" ] || { echo "build-images: $f is missing: run 'npm ci' and 'npx tsc -p tsconfig.json --outDir $DIST' first" >&2; exit 1; }
done
BUSYBOX=$(command -v busybox || true)
[ -n "$BUSYBOX" ] || { echo "build-images: busybox is missing (apt-get install busybox-static)" >&2; exit 1; }
if ldd "$BUSYBOX" >/dev/null 2>&1; then
  echo "build-images: $BUSYBOX is dynamically linked; install busybox-static" >&2
  exit 1
fi

WORK=$(mktemp -d /tmp/tunswitch-images.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# A root file system with busybox at /bin/busybox and one symlink per applet, except those
# named in $2 (a space-separated list the real tools replace).
busybox_root() {
  local root=$1 skip=" ${2:-} "
  mkdir -p "$root"/{bin,etc,tmp,proc,sys,dev,run,root,var/www,usr/local/bin}
  chmod 1777 "$root/tmp"
  cp "$BUSYBOX" "$root/bin/busybox"
  local a
  for a in $("$BUSYBOX" --list); do
    case "$skip" in *" $a "*) continue ;; esac
    [ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
  printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
}

# Copies a host binary to /usr/local/bin and every library ldd names, at the same paths.
with_libs() {
  local root=$1 bin=$2 lib
  cp -L "$bin" "$root/usr/local/bin/$(basename "$bin")"
  for lib in $(ldd "$bin" | awk '/=> \//{print $3} /^\t\//{print $1}'); do
    cp -L --parents "$lib" "$root"
  done
}

# Imports $root as $image unless an image with the same input hash exists.
import_root() {
  local root=$1 image=$2 hash have
  hash=$(cd "$root" && find . \( -type f -o -type l \) -print0 | sort -z | xargs -0 sha256sum 2>/dev/null | sha256sum | cut -c1-16)
  have=$("$DOCKER" image inspect -f '{{ index .Config.Labels "tunswitch.input" }}' "$image" 2>/dev/null || true)
  if [ "$have" = "$hash" ]; then
    echo "build-images: $image is up to date ($hash)"
    return
  fi
  tar -C "$root" --numeric-owner --owner=0 --group=0 -cf "$WORK/$(basename "$root").tar" .
  "$DOCKER" import \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
    --change 'CMD ["/bin/sh"]' \
    --change "LABEL tunswitch.input=$hash" \
    "$WORK/$(basename "$root").tar" "$image" >/dev/null
  echo "build-images: imported $image ($hash)"
}

# 1. The app stand-in: busybox only (nc, httpd, wget, sh).
busybox_root "$WORK/apps"
printf 'tunswitch demo app\n' >"$WORK/apps/var/www/index.html"
import_root "$WORK/apps" tunswitch-busybox:local

# 2. The switch's base: busybox plus the host's node, ip and nsenter with their libraries.
busybox_root "$WORK/base" "ip nsenter"
for tool in node ip nsenter; do
  path=$(command -v "$tool" || true)
  [ -n "$path" ] || { echo "build-images: $tool is missing on the host" >&2; exit 1; }
  with_libs "$WORK/base" "$path"
done
[ -d /etc/iproute2 ] && cp -a /etc/iproute2 "$WORK/base/etc/"
[ -d /usr/share/iproute2 ] && mkdir -p "$WORK/base/usr/share" && cp -a /usr/share/iproute2 "$WORK/base/usr/share/"
import_root "$WORK/base" tunswitch-base:local

[ "$BASE_ONLY" = 1 ] && exit 0

# 3. The switch itself.
# The context is a tar of exactly what the image copies, with $DIST renamed dist (so any
# outDir can be shipped without a .dockerignore that knows its name).
tar -c --transform "s,^$DIST/,dist/," package.json node_modules native/build/Release/tunswitch_tun.node \
  "$DIST/src" "$DIST/workers" "$DIST/bench" Dockerfile \
  | "$DOCKER" build -q --network none -t tunswitch:local -f Dockerfile - >/dev/null
echo "build-images: built tunswitch:local from $DIST"
"$DOCKER" run --rm --network none tunswitch:local --version >/dev/null
echo "build-images: tunswitch:local runs"
