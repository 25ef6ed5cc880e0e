#!/usr/bin/env bash
# One command from a fresh machine to a built image, in embedded mode (the
# scheduler and a worker in the strata process, a local store; no Redis, S3
# or registry): installs what is missing, builds strata, prepares a base
# from a static busybox, builds examples/hello, and shows the image list
# and the image's history.
set -euo pipefail
cd "$(dirname "$0")/.."

need=""
command -v runc >/dev/null 2>&1 || need="$need runc"
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || need="$need busybox-static"
if [ -n "$need" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "please install:$need (as root: apt-get install -y$need)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "embedded builds run containers with runc and overlayfs: run this as root" >&2
  exit 1
fi

cargo build --release -p strata-client --bin strata
strata=./target/release/strata

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp examples/hello/Dockerfile examples/hello/app.sh "$ctx/"
mkdir -p "$ctx/rootfs/bin"
cp /bin/busybox "$ctx/rootfs/bin/busybox"
for applet in sh cat echo ls; do ln -s busybox "$ctx/rootfs/bin/$applet"; done

"$strata" build --progress plain -t hello:latest "$ctx"
echo
"$strata" images
echo
"$strata" history hello:latest
