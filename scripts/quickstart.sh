#!/usr/bin/env bash
# One command from a fresh Debian machine to a built image, with no
# container registry and no PyPI, in embedded mode (the scheduler and a
# worker in the strata process, a local store; no Redis or S3):
#
#   1. installs what is missing (runc, debootstrap, busybox-static);
#   2. builds the strata CLI;
#   3. makes a Debian rootfs from this machine's apt mirror
#      (scripts/debian-base.sh, cached in /var/cache/strata) and imports it
#      as the local base image strata-local/debian:SUITE;
#   4. builds examples/flask/Dockerfile.debian as my_flask_app:latest;
#   5. shows `strata images` and `strata history my_flask_app:latest`.
#
# Run it as root (builds run containers with runc and overlayfs). State
# goes to $STRATA_HOME (default /var/lib/strata). A second run reuses the
# rootfs, the imported base and every unchanged layer (CACHED).
set -euo pipefail
cd "$(dirname "$0")/.."

log() {
    printf 'quickstart: %s\n' "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

# Debian puts runc and debootstrap in /usr/sbin, which a non-login PATH may lack.
have() {
    command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" ]]
}

need=()
have runc || need+=(runc)
have debootstrap || need+=(debootstrap)
# The static busybox the tests and examples/hello build their bases from.
if [[ ! -x /bin/busybox ]] || ldd /bin/busybox >/dev/null 2>&1; then
    need+=(busybox-static)
fi
if [[ "$(id -u)" -ne 0 ]]; then
    if [[ ${#need[@]} -gt 0 ]]; then
        log "please install: ${need[*]} (as root: apt-get install -y ${need[*]})"
    fi
    die "builds run containers with runc and overlayfs, and debootstrap needs root: run this as root"
fi
if [[ ${#need[@]} -gt 0 ]]; then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi
export PATH="$PATH:/usr/sbin:/sbin"

if ! command -v cargo >/dev/null 2>&1; then
    [[ -x "$HOME/.cargo/bin/cargo" ]] || die "cargo not found: install a Rust toolchain (https://rustup.rs) and put cargo on PATH"
    export PATH="$HOME/.cargo/bin:$PATH"
fi
cargo build --release -p strata-client --bin strata
strata=./target/release/strata

# This quickstart is the embedded mode; a farm is deploy/local/up.sh.
unset STRATA_SCHEDULER

# shellcheck disable=SC1091
suite="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
[[ -n "$suite" ]] || die "no VERSION_CODENAME in /etc/os-release: is this Debian?"
base="strata-local/debian:${suite}"
rootfs="$(scripts/debian-base.sh)"

# Importing again would make a new image ID (docker import stamps the
# time), and every build on top of it would miss the cache.
if "$strata" images | awk -v r="${base%:*}" -v t="${base##*:}" '$1 == r && $2 == t { found = 1 } END { exit !found }'; then
    log "${base} is already in the local image store; not importing ${rootfs} again"
else
    log "importing ${rootfs} as ${base}"
    "$strata" import "$rootfs" "$base"
fi

"$strata" build --progress plain --build-arg "BASE=${base}" \
    -f examples/flask/Dockerfile.debian -t my_flask_app:latest examples/flask
echo
"$strata" images
echo
"$strata" history my_flask_app:latest
