#!/usr/bin/env bash
# The shared-cache benchmark of issue #5, strata next to BuildKit on this
# machine, the flask example (examples/flask/Dockerfile.debian on a Debian
# base made by scripts/debian-base.sh and served by a local registry):
#
#   warm      rebuild with no change
#   change    rebuild after one source change (app.py)
#   fresh     fully cached rebuild on a builder that has never built it:
#             strata: a second farm (its own scheduler state, its own
#             worker) sharing only Redis and S3 with the first;
#             BuildKit: a fresh buildkitd importing the cache the first
#             exported to the registry (--export-cache type=registry,
#             mode=max), BuildKit's way of sharing a cache between
#             builders.
#
# strata runs as a farm from deploy/local/up.sh (a scheduler, two workers,
# redis-server, s3s-fs); BuildKit is buildkitd v0.34.2 from
# scripts/buildkit.sh (OCI worker, overlayfs). Times are the client's wall
# clock. The builders alternate, each case RUNS times.
#
#   bench/cache.sh [RUNS]      (default 3; root; Go for BuildKit)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd -P)"
runs="${1:-3}"
work="$(mktemp -d /var/tmp/strata-cache-bench.XXXXXX)"
BENCH_NAME=cache-bench
# shellcheck source=bench/lib.sh
. "$repo/bench/lib.sh"
log() { bench_log "$@"; }
trap bench_cleanup EXIT
bench_require_root

bench_build_strata
bench_install_buildkit
bench_find_s3s
bench_start_services
base="$(bench_debian_base)"

ctx="$work/ctx"
cp -r "$repo/examples/flask" "$ctx"
cp "$repo/examples/flask/Dockerfile.debian" "$ctx/Dockerfile"

s_build() { # s_build URL -> seconds
    local t0="$EPOCHREALTIME"
    STRATA_SCHEDULER="$1" "$strata" build --progress plain --build-arg "BASE=$base" "$ctx" \
        >>"$work/strata.log" 2>&1 || { log "strata build failed; see $work/strata.log"; tail -30 "$work/strata.log" >&2; exit 1; }
    since "$t0"
}
bk_build() { # bk_build HOST [extra buildctl args] -> seconds
    local host="$1" t0="$EPOCHREALTIME"
    shift
    "$buildctl" --addr "$host" build --frontend dockerfile.v0 --local context="$ctx" \
        --local dockerfile="$ctx" --opt "build-arg:BASE=$base" --progress plain "$@" \
        >>"$work/buildkit.log" 2>&1 || { log "BuildKit build failed; see $work/buildkit.log"; tail -30 "$work/buildkit.log" >&2; exit 1; }
    since "$t0"
}
cache_ref="$registry/bench/flask-cache:latest"

log "cold builds (not timed)"
s_url="$(farm main 2)"
bk_host="$(buildkitd main)"
s_build "$s_url" >/dev/null
bk_build "$bk_host" --export-cache "type=registry,ref=$cache_ref,mode=max" >/dev/null

declare -a s_warm b_warm s_change b_change s_fresh b_fresh
for i in $(seq 1 "$runs"); do
    s_warm+=("$(s_build "$s_url")")
    b_warm+=("$(bk_build "$bk_host")")

    echo "# change $i" >>"$ctx/app.py"
    s_change+=("$(s_build "$s_url")")
    b_change+=("$(bk_build "$bk_host" --export-cache "type=registry,ref=$cache_ref,mode=max")")

    # A builder that never built it (started before the clock runs).
    url2="$(farm "fresh-$i" 1)"
    s_fresh+=("$(s_build "$url2")")
    farm_down "fresh-$i"
    host2="$(buildkitd "fresh-$i")"
    b_fresh+=("$(bk_build "$host2" --import-cache "type=registry,ref=$cache_ref")")
    buildkitd_stop "fresh-$i"
    log "run $i: warm ${s_warm[-1]}/${b_warm[-1]}  change ${s_change[-1]}/${b_change[-1]}  fresh ${s_fresh[-1]}/${b_fresh[-1]} (strata/BuildKit, s)"
done

printf '\nflask example, %s runs per case, %s cores\n' "$runs" "$(nproc)"
printf '%-44s %7s %7s %7s   %7s %7s %7s   %6s\n' case "s min" "s med" "s max" "bk min" "bk med" "bk max" ratio
row() {
    local name="$1" sm bm
    shift
    local -n a="$1" b="$2"
    read -r smin sm smax <<<"$(stats "${a[@]}")"
    read -r bmin bm bmax <<<"$(stats "${b[@]}")"
    printf '%-44s %7s %7s %7s   %7s %7s %7s   %6.2f\n' "$name" "$smin" "$sm" "$smax" "$bmin" "$bm" "$bmax" "$(ratio "$sm" "$bm")"
}
row "warm rebuild, no change" s_warm b_warm
row "warm rebuild, app.py changed" s_change b_change
row "fully cached on a fresh builder" s_fresh b_fresh
