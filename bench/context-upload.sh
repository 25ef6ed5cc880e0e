#!/usr/bin/env bash
# Context upload to a farm on the shared cache: how long `strata build`
# takes to send bench/run.sh's case-3 context (256 MiB of random data,
# 256 MiB of zeros, 20,000 small files: 20,003 files, 539 MB) to a
# scheduler running with --redis and --s3 (redis-server, s3s-fs), from
# the start of `strata build` to its "context: ... uploaded" line: the
# client's walk and hashing, FindMissingBlobs, and UploadBlobs until the
# scheduler answered that every blob is stored (locally and in S3).
#
# Every run has a fresh farm (deploy/local/up.sh, one worker) and a fresh
# S3 prefix, so every blob is sent and stored. The Dockerfile copies a
# file the context lacks: the build is refused right after the upload
# and no step runs.
#
#   bench/context-upload.sh [RUNS]      (default 3; root, as up.sh)
#
# STRATA_BIN_DIR=DIR times the binaries in DIR instead of building
# target/release (e.g. to compare two versions).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd -P)"
runs="${1:-3}"
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [RUNS]" >&2; exit 2; }
work="$(mktemp -d /var/tmp/strata-upload-bench.XXXXXX)"
BENCH_NAME=context-upload
# shellcheck source=bench/lib.sh
. "$repo/bench/lib.sh"
trap bench_cleanup EXIT
bench_require_root

if [[ -n "${STRATA_BIN_DIR:-}" ]]; then
    bin="$STRATA_BIN_DIR"
    strata="$bin/strata"
else
    bench_build_strata
fi
bench_find_s3s

bench_log "services: redis-server, s3s-fs"
bench_start_redis_s3

bench_log "making the context in $work/ctx"
ctx="$work/ctx"
bench_big_context "$ctx"
printf 'FROM scratch\nCOPY not-in-the-context /\n' >"$ctx/Dockerfile"

times=()
for ((run = 1; run <= runs; run++)); do
    shared=(--redis "redis://127.0.0.1:$redis_port/0"
        --s3 "s3://bench/run$run/?endpoint=http://127.0.0.1:$s3_port&path_style=true")
    url="$(farm "$run" 1)"
    [[ -n "$url" ]] || bench_die "the farm did not start (see $work/farm.log)"
    log="$work/build-$run.log"
    start="$EPOCHREALTIME"
    seconds=""
    while IFS= read -r line; do
        printf '%s\n' "$line" >>"$log"
        if [[ -z "$seconds" && "$line" == *"context: "*" files, uploaded "* ]]; then
            seconds="$(since "$start")"
        fi
    done < <(STRATA_SCHEDULER="$url" "$strata" build --progress plain "$ctx" 2>&1 || true)
    farm_down "$run"
    grep -q "uploaded 20003 " "$log" || bench_die "run $run did not upload the context: $(tail -5 "$log")"
    bench_log "run $run: $seconds s"
    times+=("$seconds")
done
echo "context upload, $runs runs, seconds (min median max): $(stats "${times[@]}")"
