#!/usr/bin/env bash
# BuildKit (buildkitd + buildctl) as the reference strata's images must
# equal, built from its Go module and run on this machine's runc.
#
#   scripts/buildkit.sh install
#       Builds buildkitd and buildctl ${BUILDKIT_VERSION} from source into
#       ${STRATA_CACHE:-/var/cache/strata}/buildkit-${BUILDKIT_VERSION}/ unless
#       they are already there (a warm CI cache skips the ~3 minute build).
#       Never downloads a prebuilt binary. Prints the directory.
#   scripts/buildkit.sh start STATE_DIR [INSECURE_REGISTRY...]
#       Starts buildkitd in the background (OCI worker on runc, overlayfs
#       snapshotter, host network for RUN) with its state, socket, log and
#       pid file in STATE_DIR; each INSECURE_REGISTRY (host:port) is reached
#       over plain HTTP. Waits until it answers, then prints
#       BUILDKIT_HOST=unix://STATE_DIR/buildkitd.sock.
#       With STRATA_BUILDKIT_WATCH_PID set, buildkitd is also stopped once
#       that process exits, so a killed test run leaves no daemon behind.
#       STRATA_BUILDKIT_RUNC names the runc binary it runs (default: this
#       machine's runc); bench/run.sh counts BuildKit's steps through a
#       wrapper there.
#   scripts/buildkit.sh stop STATE_DIR
#       Stops that buildkitd and unmounts anything left under STATE_DIR.
#
# Everything but the BUILDKIT_HOST line goes to stderr.
set -euo pipefail

readonly BUILDKIT_VERSION=v0.34.2
readonly BUILDKIT_MODULE=github.com/moby/buildkit
readonly CACHE_DIR="${STRATA_CACHE:-/var/cache/strata}/buildkit-${BUILDKIT_VERSION}"
readonly BUILDKITD="${CACHE_DIR}/buildkitd"
readonly BUILDCTL="${CACHE_DIR}/buildctl"
# How long buildkitd may take to answer, and to exit on SIGTERM.
readonly START_TIMEOUT_S=60
readonly STOP_TIMEOUT_S=20

log() {
    printf 'buildkit.sh: %s\n' "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

usage() {
    cat >&2 <<EOF
usage: $0 install
       $0 start STATE_DIR [INSECURE_REGISTRY...]
       $0 stop STATE_DIR
EOF
    exit 2
}

# True when both binaries exist and buildctl reports the pinned version.
installed() {
    [[ -x "$BUILDKITD" && -x "$BUILDCTL" ]] || return 1
    local version
    version="$("$BUILDCTL" --version 2>/dev/null)" || return 1
    [[ " $version " == *" ${BUILDKIT_VERSION} "* ]]
}

find_go() {
    if command -v go >/dev/null 2>&1; then
        command -v go
    elif [[ -x /usr/local/go/bin/go ]]; then
        echo /usr/local/go/bin/go
    else
        die "Go is needed to build BuildKit: install it (https://go.dev/dl) or put it on PATH"
    fi
}

# Debian puts runc in /usr/sbin, which a non-login PATH may lack.
find_runc() {
    local candidate
    for candidate in "$(command -v runc || true)" /usr/sbin/runc /usr/bin/runc /usr/local/sbin/runc; do
        if [[ -n "$candidate" && -x "$candidate" ]]; then
            echo "$candidate"
            return
        fi
    done
    die "runc not found: apt-get install -y runc"
}

cmd_install() {
    mkdir -p "$CACHE_DIR"
    # Concurrent test binaries may all call install: one builds, the others
    # wait for it and then find the binaries in place.
    exec 9>"${CACHE_DIR}.lock"
    flock 9
    if installed; then
        echo "$CACHE_DIR"
        return
    fi
    local go src started
    go="$(find_go)"
    src="${CACHE_DIR}/src"
    started=$SECONDS
    log "building BuildKit ${BUILDKIT_VERSION} from source with $("$go" version) (about 3 minutes)"
    rm -rf "$src"
    mkdir -p "$src"
    (
        cd "$src"
        # Use this Go even if a module asks for a newer toolchain: fetching
        # one would be a download of prebuilt binaries.
        export GOTOOLCHAIN=local CGO_ENABLED=0
        "$go" mod init x >/dev/null 2>&1
        "$go" get "${BUILDKIT_MODULE}/cmd/buildkitd@${BUILDKIT_VERSION}" \
            "${BUILDKIT_MODULE}/cmd/buildctl@${BUILDKIT_VERSION}"
        # Released binaries get their version stamped at link time;
        # `buildctl --version` then says v0.34.2 instead of v0.0.0+unknown.
        local ldflags="-s -w -X ${BUILDKIT_MODULE}/version.Version=${BUILDKIT_VERSION}"
        local bin
        for bin in buildkitd buildctl; do
            "$go" build -trimpath -ldflags "$ldflags" -o "${bin}.new" "${BUILDKIT_MODULE}/cmd/${bin}"
        done
        # Renamed only once both built, so a half-finished build is never
        # taken for a cached one.
        mv -f buildkitd.new "$BUILDKITD"
        mv -f buildctl.new "$BUILDCTL"
    )
    installed || die "built ${BUILDCTL} but it does not report ${BUILDKIT_VERSION}: $("$BUILDCTL" --version 2>&1 || true)"
    log "built BuildKit ${BUILDKIT_VERSION} in $((SECONDS - started)) s: ${BUILDKITD}, ${BUILDCTL}"
    echo "$CACHE_DIR"
}

# buildkitd.toml: every given registry over plain HTTP.
write_config() {
    local config="$1" registry
    shift
    # host, host:port, [v6]:port
    local valid='^[]A-Za-z0-9.:_[-]+$'
    for registry in "$@"; do
        [[ "$registry" =~ $valid ]] || die "not a registry host[:port]: '$registry'"
    done
    {
        echo "# Generated by scripts/buildkit.sh."
        for registry in "$@"; do
            printf '\n[registry."%s"]\n  http = true\n  insecure = true\n' "$registry"
        done
    } >"$config"
}

# The absolute path of a state directory (created if missing).
state_dir() {
    mkdir -p "$1"
    (cd "$1" && pwd -P)
}

running_pid() {
    local pidfile="$1/buildkitd.pid" pid
    [[ -s "$pidfile" ]] || return 1
    pid="$(<"$pidfile")"
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

cmd_start() {
    [[ $# -ge 1 ]] || usage
    local dir
    dir="$(state_dir "$1")"
    shift
    installed || die "BuildKit ${BUILDKIT_VERSION} is not built in ${CACHE_DIR}: run '$0 install' first"
    local runc
    runc="${STRATA_BUILDKIT_RUNC:-$(find_runc)}"
    if running_pid "$dir" >/dev/null; then
        die "a buildkitd already runs for ${dir} (pid $(<"${dir}/buildkitd.pid")); stop it first"
    fi
    local sock="${dir}/buildkitd.sock"
    local addr="unix://${sock}"
    # sun_path holds 108 bytes, the NUL included.
    [[ ${#sock} -lt 108 ]] || die "socket path too long for a unix socket (${#sock} bytes): ${sock}"
    # buildkitd also listens on a trace socket, by default one fixed path
    # (/run/buildkit/otel-grpc.sock) that two buildkitds started at once,
    # or one killed without cleaning up, make the next start fail with
    # "address already in use": each gets its own, in its state directory.
    local otel_sock="${dir}/otel-grpc.sock"
    [[ ${#otel_sock} -lt 108 ]] || die "socket path too long for a unix socket (${#otel_sock} bytes): ${otel_sock}"
    rm -f "$sock" "$otel_sock"
    write_config "${dir}/buildkitd.toml" "$@"
    mkdir -p "${dir}/root"

    local args=(
        --config "${dir}/buildkitd.toml"
        --root "${dir}/root"
        --addr "$addr"
        --otel-socket-path "$otel_sock"
        --oci-worker=true
        --containerd-worker=false
        --oci-worker-snapshotter=overlayfs
        --oci-worker-binary="$runc"
        # No CNI here: RUN shares the host's network namespace.
        --oci-worker-net=host
        # Lets a Dockerfile ask for it explicitly (RUN --network=host).
        --allow-insecure-entitlement=network.host
    )
    log "starting ${BUILDKITD} ${args[*]}"
    # setsid: the daemon must outlive this script and not share a process
    # group with the caller's terminal or test harness.
    setsid "$BUILDKITD" "${args[@]}" </dev/null >"${dir}/buildkitd.log" 2>&1 &
    local pid=$!
    echo "$pid" >"${dir}/buildkitd.pid"

    local deadline=$((SECONDS + START_TIMEOUT_S))
    until "$BUILDCTL" --addr "$addr" debug workers >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "buildkitd exited; its log (${dir}/buildkitd.log):"
            tail -n 50 "${dir}/buildkitd.log" >&2 || true
            rm -f "${dir}/buildkitd.pid"
            die "buildkitd failed to start"
        fi
        if ((SECONDS >= deadline)); then
            log "buildkitd did not answer within ${START_TIMEOUT_S} s; its log:"
            tail -n 50 "${dir}/buildkitd.log" >&2 || true
            cmd_stop "$dir"
            die "buildkitd failed to start"
        fi
        sleep 0.2
    done

    if [[ -n "${STRATA_BUILDKIT_WATCH_PID:-}" ]]; then
        local watched="$STRATA_BUILDKIT_WATCH_PID" self
        self="$(readlink -f "$0")"
        # Detached from every inherited descriptor, so a caller reading this
        # script's output sees EOF when the script exits. The single quotes
        # are meant: the inner script expands its own arguments.
        # shellcheck disable=SC2016
        setsid bash -c '
            while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done
            if kill -0 "$2" 2>/dev/null; then exec "$3" stop "$4"; fi
        ' watch "$watched" "$pid" "$self" "$dir" </dev/null >>"${dir}/watch.log" 2>&1 &
    fi
    log "buildkitd pid ${pid} answers on ${addr}"
    echo "BUILDKIT_HOST=${addr}"
}

# Mount points at or below $1, deepest first. /proc/self/mountinfo escapes
# space, tab, newline and backslash as \ooo.
mounts_under() {
    local dir="$1" mountpoint
    while read -r _ _ _ _ mountpoint _; do
        mountpoint="$(printf '%b' "$mountpoint")"
        if [[ "$mountpoint" == "$dir" || "$mountpoint" == "$dir"/* ]]; then
            echo "$mountpoint"
        fi
    done </proc/self/mountinfo | sort -r
}

cmd_stop() {
    [[ $# -eq 1 ]] || usage
    [[ -d "$1" ]] || die "no such state directory: $1"
    local dir pid
    dir="$(state_dir "$1")"
    if pid="$(running_pid "$dir")"; then
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + STOP_TIMEOUT_S))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "buildkitd ${pid} ignored SIGTERM for ${STOP_TIMEOUT_S} s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
        fi
        log "stopped buildkitd ${pid}"
    fi
    rm -f "${dir}/buildkitd.pid" "${dir}/buildkitd.sock"
    # A killed buildkitd leaves its snapshot and executor mounts behind;
    # they would make the state directory impossible to delete.
    local mountpoint
    while read -r mountpoint; do
        [[ -n "$mountpoint" ]] || continue
        umount "$mountpoint" 2>/dev/null || umount -l "$mountpoint" ||
            log "could not unmount ${mountpoint}"
    done < <(mounts_under "$dir")
}

main() {
    [[ $# -ge 1 ]] || usage
    local cmd="$1"
    shift
    case "$cmd" in
    install)
        [[ $# -eq 0 ]] || usage
        cmd_install
        ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    *) usage ;;
    esac
}

main "$@"
