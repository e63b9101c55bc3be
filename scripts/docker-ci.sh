#!/usr/bin/env bash
# Gets a machine ready for the Docker end-to-end test (test/e2e/docker.test.ts), as root:
#   1. installs docker.io, docker-compose and busybox-static if one is missing (Debian),
#   2. starts dockerd in the background unless an engine answers (log: /tmp/dockerd.log),
#   3. builds the images offline (docker/build-images.sh): the two stand-ins always, and
#      tunswitch:local too when the built JavaScript is there.
# Idempotent: a second run installs nothing, starts nothing, and re-uses the images.
#
# Usage: scripts/docker-ci.sh [--dist DIR]   (DIR: tsc outDir to put in the image, default dist)
#
# dockerd flags: no iptables rules, no ip_forward change and no docker0 bridge, so the engine
# leaves the host's network as it found it (the switch and the apps need no Docker network:
# network_mode host and none). Only a daemon this script starts gets these flags.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

DIST=dist
while [ $# -gt 0 ]; do
  case "$1" in
    --dist) DIST="${2:?--dist needs a folder}"; DIST="${DIST%/}"; shift 2 ;;
    *) echo "docker-ci: unknown argument $1 (want --dist DIR)" >&2; exit 2 ;;
  esac
done

say() { echo "docker-ci: $*"; }

# 1. packages
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
if ! command -v busybox >/dev/null 2>&1 || ldd "$(command -v busybox)" >/dev/null 2>&1; then missing+=(busybox-static); fi
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/tmp/docker-ci-apt.log 2>&1 || { tail -20 /tmp/docker-ci-apt.log >&2; exit 1; }
fi

# The engine's own client (a newer docker CLI earlier on PATH also works, but this one matches).
if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
export DOCKER

# 2. the engine
if ! "$DOCKER" info >/dev/null 2>&1; then
  [ -c /dev/net/tun ] || { mkdir -p /dev/net && mknod /dev/net/tun c 10 200 && chmod 0666 /dev/net/tun; }
  say "starting dockerd (log: /tmp/dockerd.log)"
  setsid nohup dockerd --iptables=false --ip6tables=false --ip-forward=false --bridge=none \
    >/tmp/dockerd.log 2>&1 </dev/null &
  for _ in $(seq 1 60); do
    "$DOCKER" info >/dev/null 2>&1 && break
    sleep 1
  done
  if ! "$DOCKER" info >/dev/null 2>&1; then
    say "dockerd did not answer within 60 s; the end of /tmp/dockerd.log:" >&2
    tail -20 /tmp/dockerd.log >&2
    exit 1
  fi
fi
say "engine $("$DOCKER" version -f '{{.Server.Version}}') is up"

# 3. images
if [ -f "$DIST/src/cli/main.js" ] && [ -f native/build/Release/tunswitch_tun.node ]; then
  docker/build-images.sh --dist "$DIST"
else
  say "$DIST/src/cli/main.js is not built yet: only the stand-in base images (the test builds tunswitch:local)"
  docker/build-images.sh --base-only
fi
