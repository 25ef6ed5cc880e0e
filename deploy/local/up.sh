#!/usr/bin/env bash
# A strata farm on this machine: one strata-scheduler and N strata-worker
# processes on loopback, no containers. Prints, on stdout, the line to point
# the CLI at it, so this works:
#
#   eval "$(deploy/local/up.sh --workers 2)"
#   strata build -t myimage:1 DIR
#   deploy/local/down.sh
#
# Everything (pid files, logs, state) lives under --dir; see common.sh for
# the layout. Workers run RUN steps with runc and overlayfs, so run this as
# root. With --redis and --s3 the farm runs on the shared cache (layers in
# S3, index and live state in Redis); without them the scheduler's state
# directory holds everything.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd -P)"
repo="$(cd "$here/../.." && pwd -P)"
# shellcheck source=deploy/local/common.sh
. "$here/common.sh"

# How long the scheduler may take to listen, and the workers to register.
readonly START_TIMEOUT_S="${STRATA_FARM_START_TIMEOUT:-60}"

usage() {
    cat >&2 <<EOF
usage: $0 [--workers N] [--port P] [--dir DIR] [--release|--debug]
          [--capacity N] [--redis URL] [--s3 URL]

  --workers N      worker processes to start (default 2)
  --port P         scheduler port on 127.0.0.1 (default 7390)
  --dir DIR        pid files, logs and state (default $(default_dir))
  --release        binaries from target/release (default)
  --debug          binaries from target/debug
                   (\$STRATA_BIN_DIR, when set, wins over both)
  --capacity N     jobs each worker runs at once (default: the worker's, two per CPU, at least four)

  --redis URL      shared state, e.g. redis://127.0.0.1:6379/0
  --s3 URL         shared layer store,
                   s3://BUCKET[/PREFIX]?endpoint=http://127.0.0.1:9000&path_style=true
                   (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
                   which the scheduler and the workers inherit)
EOF
    exit 2
}

workers=2
port=7390
dir="$(default_dir)"
profile=release
capacity=""
redis=""
s3=""
while [[ $# -gt 0 ]]; do
    case "$1" in
    --workers) workers="${2:?--workers needs a number}"; shift 2 ;;
    --port) port="${2:?--port needs a number}"; shift 2 ;;
    --dir) dir="${2:?--dir needs a directory}"; shift 2 ;;
    --release) profile=release; shift ;;
    --debug) profile=debug; shift ;;
    --capacity) capacity="${2:?--capacity needs a number}"; shift 2 ;;
    --redis) redis="${2:?--redis needs a URL}"; shift 2 ;;
    --s3) s3="${2:?--s3 needs a URL}"; shift 2 ;;
    -h | --help) usage ;;
    *) log "unknown argument: $1"; usage ;;
    esac
done
[[ "$workers" =~ ^[1-9][0-9]*$ ]] || die "--workers must be a positive number, not '$workers'"
if ! [[ "$port" =~ ^[0-9]+$ ]] || ((10#$port < 1 || 10#$port > 65535)); then
    die "--port must be 1-65535, not '$port'"
fi
[[ -z "$capacity" || "$capacity" =~ ^[1-9][0-9]*$ ]] || die "--capacity must be a positive number, not '$capacity'"
[[ "$(id -u)" -eq 0 ]] || die "workers run build steps with runc and overlayfs: run this as root"

bin_dir="${STRATA_BIN_DIR:-$repo/target/$profile}"
missing=()
for b in strata-scheduler strata-worker strata; do
    [[ -x "$bin_dir/$b" ]] || missing+=("$b")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    flag="--release"
    [[ "$profile" == debug ]] && flag=""
    die "missing in ${bin_dir}: ${missing[*]}; build them with:
    cargo build ${flag:+$flag }-p strata-scheduler -p strata-worker -p strata-client"
fi

mkdir -p "$dir"
dir="$(cd "$dir" && pwd -P)"
if farm_running "$dir"; then
    die "a farm is already running in ${dir}; stop it with: $here/down.sh --dir ${dir}"
fi
rm -f "$dir"/pids/*.pid "$dir/farm.env"
mkdir -p "$dir/pids" "$dir/logs" "$dir/state/scheduler"

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
port_open "$port" && die "port ${port} on 127.0.0.1 is already in use: pick another with --port"

url="http://127.0.0.1:${port}"

# Starts "$2..." detached (its own session, so it outlives this shell and
# the terminal) with its output in logs/$1.log and its pid in pids/$1.pid.
start() {
    local name="$1"
    shift
    log "starting ${name}: $*"
    setsid "$@" </dev/null >>"$dir/logs/$name.log" 2>&1 &
    echo "$!" >"$dir/pids/$name.pid"
}

fail() {
    log "error: $*"
    local f
    for f in "$dir"/logs/*.log; do
        [[ -e "$f" ]] || continue
        log "last lines of ${f}:"
        tail -n 20 "$f" >&2 || true
    done
    log "stopping what was started"
    stop_farm "$dir"
    exit 1
}
trap 'fail "interrupted"' INT TERM

sched_args=(--listen "127.0.0.1:${port}" --state "$dir/state/scheduler")
[[ -n "$redis" ]] && sched_args+=(--redis "$redis")
[[ -n "$s3" ]] && sched_args+=(--s3 "$s3")
start scheduler "$bin_dir/strata-scheduler" "${sched_args[@]}"
deadline=$((SECONDS + START_TIMEOUT_S))
until port_open "$port"; do
    running_pid "$dir/pids/scheduler.pid" || fail "strata-scheduler exited"
    ((SECONDS < deadline)) || fail "strata-scheduler did not listen on 127.0.0.1:${port} within ${START_TIMEOUT_S} s"
    sleep 0.2
done
log "scheduler listens on 127.0.0.1:${port}"

names=()
for ((i = 1; i <= workers; i++)); do
    name="worker-$i"
    names+=("$name")
    mkdir -p "$dir/state/$name"
    args=(--scheduler "$url" --state "$dir/state/$name" --name "$name")
    [[ -n "$capacity" ]] && args+=(--capacity "$capacity")
    start "$name" "$bin_dir/strata-worker" "${args[@]}"
done

# Every worker registered: `strata workers` shows each name, or at least
# N workers in state "ready" (should the scheduler list workers by an id of
# its own rather than by --name).
registered() {
    local out name unlisted=0
    out="$("$bin_dir/strata" --scheduler "$url" workers 2>/dev/null)" || return 1
    for name in "${names[@]}"; do
        grep -qw -- "$name" <<<"$out" || unlisted=1
    done
    ((unlisted == 0)) || (($(grep -cw ready <<<"$out" || true) >= workers))
}
until registered; do
    for name in scheduler "${names[@]}"; do
        running_pid "$dir/pids/$name.pid" || fail "strata-${name%%-*} (${name}) exited"
    done
    ((SECONDS < deadline)) || fail "not all ${workers} workers registered within ${START_TIMEOUT_S} s"
    sleep 0.5
done
trap - INT TERM

echo "STRATA_SCHEDULER=${url}" >"$dir/farm.env"
log "farm up: scheduler ${url}, ${workers} worker(s)${redis:+, state ${redis}}${s3:+, layers ${s3}}; logs in ${dir}/logs; stop with: $here/down.sh --dir ${dir}"
"$bin_dir/strata" --scheduler "$url" workers >&2 || true
echo "export STRATA_SCHEDULER=${url}"
