#!/usr/bin/env bash
# Stops the farm deploy/local/up.sh started: SIGTERM to the workers, then
# to the scheduler, SIGKILL to whatever is still running after
# ${STRATA_FARM_STOP_TIMEOUT:-30} s; removes the pid files and unmounts
# what a killed worker left behind. State and logs stay (the next up.sh
# reuses the cache) unless --purge.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd -P)"
# shellcheck source=deploy/local/common.sh
. "$here/common.sh"

usage() {
    cat >&2 <<EOF
usage: $0 [--dir DIR] [--purge]

  --dir DIR   the farm's directory (default $(default_dir))
  --purge     also delete its state and logs
EOF
    exit 2
}

dir="$(default_dir)"
purge=false
while [[ $# -gt 0 ]]; do
    case "$1" in
    --dir) dir="${2:?--dir needs a directory}"; shift 2 ;;
    --purge) purge=true; shift ;;
    -h | --help) usage ;;
    *) log "unknown argument: $1"; usage ;;
    esac
done

[[ -d "$dir" ]] || die "no farm directory ${dir}"
dir="$(cd "$dir" && pwd -P)"
# Never purge a directory up.sh did not lay out.
[[ -d "$dir/pids" && -d "$dir/state" ]] || die "${dir} is not a farm directory (no pids/ and state/)"

if farm_running "$dir"; then
    stop_farm "$dir"
    log "farm in ${dir} stopped"
else
    stop_farm "$dir"
    log "no farm was running in ${dir}"
fi
if $purge; then
    rm -rf "${dir:?}/pids" "$dir/logs" "$dir/state"
    rmdir "$dir" 2>/dev/null || true
    log "removed ${dir}"
fi
