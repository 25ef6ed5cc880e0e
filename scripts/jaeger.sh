#!/usr/bin/env bash
# Jaeger v2, the trace backend the telemetry test sends one build's spans to,
# built from its Go module.
#
#   scripts/jaeger.sh install
#       Builds the `jaeger` binary ${JAEGER_VERSION} from source into
#       ${STRATA_CACHE:-/var/cache/strata}/jaeger/jaeger unless it is already
#       there (a warm CI cache skips the ~8 minute build). Never downloads a
#       prebuilt binary. Prints the binary's path.
#
# Run with no arguments, jaeger keeps traces in memory, takes OTLP on
# 127.0.0.1:4317 (gRPC) and 4318 (HTTP) and serves the query API and UI on
# :16686. tests/tests/traces.rs instead gives it a config file
# (`jaeger --config FILE`, OpenTelemetry collector style) with free loopback
# ports. A binary built this way serves a placeholder instead of the web UI
# (its assets are built with npm, outside the Go module); the query API
# (`/api/traces`, `/api/services`) is complete.
#
# Everything but the path goes to stderr.
set -euo pipefail

readonly JAEGER_VERSION=v1.76.0
readonly JAEGER_PACKAGE=github.com/jaegertracing/jaeger/cmd/jaeger
readonly CACHE_DIR="${STRATA_CACHE:-/var/cache/strata}/jaeger"
readonly JAEGER="${CACHE_DIR}/jaeger"
# Records which version the cached binary was built from: an unstamped
# build reports no useful version of its own.
readonly STAMP="${CACHE_DIR}/jaeger.version"

log() {
    printf 'jaeger.sh: %s\n' "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

usage() {
    echo "usage: $0 install" >&2
    exit 2
}

# True when the binary exists and was built from the pinned version.
installed() {
    [[ -x "$JAEGER" && -s "$STAMP" ]] || return 1
    [[ "$(<"$STAMP")" == "$JAEGER_VERSION" ]]
}

find_go() {
    if command -v go >/dev/null 2>&1; then
        command -v go
    elif [[ -x /usr/local/go/bin/go ]]; then
        echo /usr/local/go/bin/go
    else
        die "Go is needed to build Jaeger: install it (https://go.dev/dl) or put it on PATH"
    fi
}

cmd_install() {
    mkdir -p "$CACHE_DIR"
    # Concurrent callers may all call install: one builds, the others wait
    # for it and then find the binary in place.
    exec 9>"${CACHE_DIR}.lock"
    flock 9
    if installed; then
        echo "$JAEGER"
        return
    fi
    local go src started
    go="$(find_go)"
    src="${CACHE_DIR}/src"
    started=$SECONDS
    log "building Jaeger ${JAEGER_VERSION} from source with $("$go" version) (about 8 minutes)"
    rm -rf "$src"
    mkdir -p "$src"
    (
        cd "$src"
        # Use this Go even if the module asks for a newer toolchain: fetching
        # one would be a download of prebuilt binaries.
        export GOTOOLCHAIN=local CGO_ENABLED=0
        "$go" mod init scratch >/dev/null 2>&1
        "$go" get -tool "${JAEGER_PACKAGE}@${JAEGER_VERSION}"
        "$go" build -trimpath -o jaeger.new "$JAEGER_PACKAGE"
        # Moved only once built, so a half-finished build is never taken for
        # a cached one.
        mv -f jaeger.new "$JAEGER"
    )
    echo "$JAEGER_VERSION" >"$STAMP"
    rm -rf "$src"
    installed || die "built ${JAEGER} but it is not executable"
    log "built Jaeger ${JAEGER_VERSION} in $((SECONDS - started)) s: ${JAEGER}"
    echo "$JAEGER"
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
    *) usage ;;
    esac
}

main "$@"
