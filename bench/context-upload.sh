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
redis_port="$(free_port)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
bench_pids+=($!)
s3_port="$(free_port)"
mkdir -p "$work/s3/bench"
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret
"$s3s" --host 127.0.0.1 --port "$s3_port" --access-key bench --secret-key bench-secret "$work/s3" >/dev/null 2>&1 &
bench_pids+=($!)
wait_port "$redis_port"
wait_port "$s3_port"

bench_log "making the context in $work/ctx"
ctx="$work/ctx"
mkdir -p "$ctx/data/small"
head -c 256M /dev/urandom >"$ctx/data/random"
head -c 256M /dev/zero >"$ctx/data/zeros"
python3 - "$ctx/data/small" <<'PY'
import os, sys
d = sys.argv[1]
for i in range(20000):
    sub = os.path.join(d, f"d{i // 1000:02d}")
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"f{i:05d}.txt"), "w") as f:
        f.write(f"small file {i}\n" * (1 + i % 7))
PY
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
