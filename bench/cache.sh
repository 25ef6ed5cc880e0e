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
pids=()

log() { printf 'cache-bench: %s\n' "$*" >&2; }
cleanup() {
    for d in "$work"/farm-*; do
        [[ -d "$d" ]] && "$repo/deploy/local/down.sh" --dir "$d" >/dev/null 2>&1 || true
    done
    for d in "$work"/bk-*; do
        [[ -d "$d" ]] && bash "$repo/scripts/buildkit.sh" stop "$d" >/dev/null 2>&1 || true
    done
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
[[ "$(id -u)" -eq 0 ]] || { log "run as root (runc, overlayfs)"; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    local i
    for i in $(seq 1 150); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.2
    done
    log "nothing listens on port $1"; exit 1
}

log "building strata (release)"
(cd "$repo" && cargo build --release -q -p strata-client -p strata-scheduler -p strata-worker)
bin="$repo/target/release"
strata="$bin/strata"
bkdir="$(bash "$repo/scripts/buildkit.sh" install)"
buildctl="$bkdir/buildctl"
s3s="$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")"
[[ -x "$s3s" ]] || { log "s3s-fs missing: cargo install s3s-fs@0.14.1 --features binary"; exit 1; }

log "services: registry, redis-server, s3s-fs"
reg_port="$(free_port)"
mkdir -p "$work/registry"
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$work/registry/data" "$reg_port" >"$work/registry/config.yml"
docker-registry serve "$work/registry/config.yml" >"$work/registry/log" 2>&1 &
pids+=($!)
redis_port="$(free_port)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
pids+=($!)
s3_port="$(free_port)"
mkdir -p "$work/s3/bench"
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret
"$s3s" --host 127.0.0.1 --port "$s3_port" --access-key bench --secret-key bench-secret "$work/s3" >/dev/null 2>&1 &
pids+=($!)
wait_port "$reg_port"; wait_port "$redis_port"; wait_port "$s3_port"
registry="127.0.0.1:$reg_port"
shared=(--redis "redis://127.0.0.1:$redis_port/0" --s3 "s3://bench/?endpoint=http://127.0.0.1:$s3_port&path_style=true")

log "Debian base image into the registry"
base="$registry/debian:bookworm"
rootfs="$(bash "$repo/scripts/debian-base.sh")"
STRATA_HOME="$work/push-home" "$strata" import "$rootfs" "$base" >/dev/null
STRATA_HOME="$work/push-home" "$strata" push "$base" >/dev/null

ctx="$work/ctx"
cp -r "$repo/examples/flask" "$ctx"
cp "$repo/examples/flask/Dockerfile.debian" "$ctx/Dockerfile"

farm() { # farm NAME WORKERS -> prints the scheduler URL
    local port
    port="$(free_port)"
    STRATA_BIN_DIR="$bin" "$repo/deploy/local/up.sh" --dir "$work/farm-$1" --port "$port" \
        --workers "$2" "${shared[@]}" 2>>"$work/farm.log" | sed -n 's/^export STRATA_SCHEDULER=//p'
}
buildkitd() { # buildkitd NAME -> prints BUILDKIT_HOST
    bash "$repo/scripts/buildkit.sh" start "$work/bk-$1" "$registry" 2>>"$work/bk.log" |
        sed -n 's/^BUILDKIT_HOST=//p'
}
now() { date +%s.%N; }
s_build() { # s_build URL -> seconds
    local t0
    t0="$(now)"
    STRATA_SCHEDULER="$1" "$strata" build --progress plain --build-arg "BASE=$base" "$ctx" \
        >>"$work/strata.log" 2>&1 || { log "strata build failed; see $work/strata.log"; tail -30 "$work/strata.log" >&2; exit 1; }
    echo "$(now) - $t0" | bc -l
}
bk_build() { # bk_build HOST [extra buildctl args] -> seconds
    local host="$1" t0
    shift
    t0="$(now)"
    "$buildctl" --addr "$host" build --frontend dockerfile.v0 --local context="$ctx" \
        --local dockerfile="$ctx" --opt "build-arg:BASE=$base" --progress plain "$@" \
        >>"$work/buildkit.log" 2>&1 || { log "BuildKit build failed; see $work/buildkit.log"; tail -30 "$work/buildkit.log" >&2; exit 1; }
    echo "$(now) - $t0" | bc -l
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
    "$repo/deploy/local/down.sh" --dir "$work/farm-fresh-$i" >/dev/null 2>&1
    host2="$(buildkitd "fresh-$i")"
    b_fresh+=("$(bk_build "$host2" --import-cache "type=registry,ref=$cache_ref")")
    bash "$repo/scripts/buildkit.sh" stop "$work/bk-fresh-$i" >/dev/null 2>&1
    log "run $i: warm ${s_warm[-1]}/${b_warm[-1]}  change ${s_change[-1]}/${b_change[-1]}  fresh ${s_fresh[-1]}/${b_fresh[-1]} (strata/BuildKit, s)"
done

stats() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {printf "%.2f %.2f %.2f", a[1], a[int((NR+1)/2)], a[NR]}'; }
printf '\nflask example, %s runs per case, %s cores\n' "$runs" "$(nproc)"
printf '%-44s %7s %7s %7s   %7s %7s %7s   %6s\n' case "s min" "s med" "s max" "bk min" "bk med" "bk max" ratio
row() {
    local name="$1" sm bm
    shift
    local -n a="$1" b="$2"
    read -r smin sm smax <<<"$(stats "${a[@]}")"
    read -r bmin bm bmax <<<"$(stats "${b[@]}")"
    printf '%-44s %7s %7s %7s   %7s %7s %7s   %6.2f\n' "$name" "$smin" "$sm" "$smax" "$bmin" "$bm" "$bmax" "$(echo "$sm / $bm" | bc -l)"
}
row "warm rebuild, no change" s_warm b_warm
row "warm rebuild, app.py changed" s_change b_change
row "fully cached on a fresh builder" s_fresh b_fresh
