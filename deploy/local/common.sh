# shellcheck shell=bash
# Shared by deploy/local/up.sh and down.sh (sourced, not run).
#
# A farm directory holds:
#   farm.env                 STRATA_SCHEDULER=... of the running farm
#   pids/scheduler.pid, pids/worker-N.pid
#   logs/scheduler.log,  logs/worker-N.log
#   state/scheduler/,    state/worker-N/

# Seconds a process gets between SIGTERM and SIGKILL.
readonly STOP_TIMEOUT_S="${STRATA_FARM_STOP_TIMEOUT:-30}"

log() {
    printf '%s: %s\n' "$(basename "$0")" "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

default_dir() {
    echo "${XDG_RUNTIME_DIR:-/tmp}/strata-farm"
}

# The pid in pid file $1 if that process is alive and is a strata process
# (a pid reused by something else since is never signalled).
live_pid() {
    local pidfile="$1" pid
    [[ -s "$pidfile" ]] || return 1
    pid="$(<"$pidfile")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'strata-' || return 1
    echo "$pid"
}

# Whether the process in pid file $1, started by this shell a moment ago,
# is still running. Unlike live_pid it does not insist on a strata command
# line: right after `setsid CMD &` the child may not have exec'd CMD yet.
running_pid() {
    local pidfile="$1" pid stat state
    [[ -s "$pidfile" ]] || return 1
    pid="$(<"$pidfile")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    { stat="$(<"/proc/$pid/stat")"; } 2>/dev/null || return 1
    # "PID (COMM) STATE ...": COMM may hold spaces and parentheses.
    state="${stat##*) }"
    state="${state%% *}"
    [[ -n "$state" && "$state" != Z && "$state" != X ]]
}

# Pid files of the farm in $1: workers first, the scheduler last.
pid_files() {
    local dir="$1" f
    for f in "$dir"/pids/worker-*.pid "$dir"/pids/scheduler.pid; do
        [[ -e "$f" ]] && echo "$f"
    done
    return 0
}

# True if any process of the farm in $1 is running.
farm_running() {
    local f
    while read -r f; do
        live_pid "$f" >/dev/null && return 0
    done < <(pid_files "$1")
    return 1
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

# SIGTERM to the pids in pid files "$@", wait up to STOP_TIMEOUT_S, then
# SIGKILL what is left; removes the pid files.
stop_group() {
    local f pid pids=()
    for f in "$@"; do
        if pid="$(live_pid "$f")"; then
            log "stopping $(basename "$f" .pid) (pid ${pid})"
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    local deadline=$((SECONDS + STOP_TIMEOUT_S)) alive
    while :; do
        alive=()
        for pid in "${pids[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive+=("$pid")
        done
        [[ ${#alive[@]} -eq 0 ]] && break
        if ((SECONDS >= deadline)); then
            log "pid(s) ${alive[*]} ignored SIGTERM for ${STOP_TIMEOUT_S} s; sending SIGKILL"
            kill -KILL "${alive[@]}" 2>/dev/null || true
            sleep 0.5
            break
        fi
        sleep 0.2
    done
    rm -f "$@"
}

# Stops the farm in $1: workers first (they finish or hand back their
# jobs while the scheduler still answers), then the scheduler; unmounts
# what a killed worker left under state/.
stop_farm() {
    local dir="$1" f worker_files=() scheduler_files=()
    while read -r f; do
        if [[ "$f" == */scheduler.pid ]]; then scheduler_files+=("$f"); else worker_files+=("$f"); fi
    done < <(pid_files "$dir")
    if [[ ${#worker_files[@]} -gt 0 ]]; then stop_group "${worker_files[@]}"; fi
    if [[ ${#scheduler_files[@]} -gt 0 ]]; then stop_group "${scheduler_files[@]}"; fi
    local mountpoint
    while read -r mountpoint; do
        [[ -n "$mountpoint" ]] || continue
        umount "$mountpoint" 2>/dev/null || umount -l "$mountpoint" ||
            log "could not unmount ${mountpoint}"
    done < <(mounts_under "$dir/state")
    rm -f "$dir/farm.env"
}
