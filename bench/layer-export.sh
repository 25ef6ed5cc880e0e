#!/usr/bin/env bash
# The layer benchmark of issue #3 against BuildKit, on this machine: the
# same layer — 256 MiB of random data, 256 MiB of zeros and 20,000 small
# files — made by `COPY data/ /data/` onto scratch, by strata (embedded,
# release build) and by BuildKit (buildkitd v0.34.2 from scripts/buildkit.sh,
# OCI worker, overlayfs). The builders alternate, each run uncached.
#
# What is timed is what turns the files into a layer: for strata the COPY
# step (copy into the snapshot, diff, tar, zstd, sha256 — one pass), for
# BuildKit its COPY step plus "exporting layers" (diff, tar, compression,
# sha256). Context transfer is excluded for both (each reports it as its
# own phase). BuildKit runs with its default gzip and with zstd (the
# compression strata stores).
#
#   bench/layer-export.sh [RUNS]      (default 3; needs root, Go for BuildKit)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd -P)"
runs="${1:-3}"
work="$(mktemp -d /var/tmp/strata-layer-bench.XXXXXX)"
bkstate="$work/buildkit"

log() { printf 'layer-export: %s\n' "$*" >&2; }
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"
cleanup() {
    bash "$repo/scripts/buildkit.sh" stop "$bkstate" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

[[ "$(id -u)" -eq 0 ]] || { log "run as root (runc, overlayfs)"; exit 1; }

log "building strata (release)"
(cd "$repo" && cargo build --release -q -p strata-client --bin strata)
strata="$repo/target/release/strata"
bkdir="$(bash "$repo/scripts/buildkit.sh" install)"
buildctl="$bkdir/buildctl"

log "making the context in $work/ctx"
ctx="$work/ctx"
bench_big_context "$ctx"
printf 'FROM scratch\nCOPY data/ /data/\n' >"$ctx/Dockerfile"
bytes=$(du -sb "$ctx/data" | cut -f1)

eval "$(bash "$repo/scripts/buildkit.sh" start "$bkstate")"

# Seconds of "#N DONE X.Ys" for the step whose line contains $2, in file $1.
step_seconds() {
    local n
    n="$(grep -F "$2" "$1" | grep -oE '#[0-9]+' | head -1)"
    grep -E "^ *([0-9.]+s )?$n DONE [0-9.]+s" "$1" | tail -1 | grep -oE 'DONE [0-9.]+' | cut -d' ' -f2
}

strata_run() {
    local out="$work/strata-$1.log"
    STRATA_HOME="$work/strata-home" "$strata" build --no-cache --progress plain "$ctx" >"$out" 2>&1
    step_seconds "$out" "COPY data/ /data/"
}

buildkit_run() {
    local out="$work/buildkit-$1-$2.log" opt=""
    [[ "$2" == zstd ]] && opt=",compression=zstd"
    "$buildctl" --addr "$BUILDKIT_HOST" build --frontend dockerfile.v0 --no-cache \
        --local context="$ctx" --local dockerfile="$ctx" --progress plain \
        --output "type=oci,dest=$work/bk.tar$opt" >"$out" 2>&1
    rm -f "$work/bk.tar"
    local copy exported
    copy="$(step_seconds "$out" "COPY data/ /data/")"
    exported="$(grep -oE 'exporting layers [0-9.]+s done' "$out" | grep -oE '[0-9.]+' | head -1)"
    echo "$copy $exported"
}

# Warm both (context upload, snapshotter setup), then alternate.
strata_run warm >/dev/null
buildkit_run warm gzip >/dev/null
declare -a s_t bg_t bz_t
for i in $(seq 1 "$runs"); do
    s_t+=("$(strata_run "$i")")
    read -r c e <<<"$(buildkit_run "$i" gzip)"
    bg_t+=("$(echo "$c + $e" | bc -l)")
    read -r c e <<<"$(buildkit_run "$i" zstd)"
    bz_t+=("$(echo "$c + $e" | bc -l)")
    log "run $i: strata ${s_t[-1]}s, BuildKit gzip ${bg_t[-1]}s, BuildKit zstd ${bz_t[-1]}s"
done

stats() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {printf "%.2f %.2f %.2f", a[1], a[int((NR+1)/2)], a[NR]}'; }
read -r smin smed smax <<<"$(stats "${s_t[@]}")"
read -r gmin gmed gmax <<<"$(stats "${bg_t[@]}")"
read -r zmin zmed zmax <<<"$(stats "${bz_t[@]}")"
mb=$(echo "$bytes / 1000000" | bc -l)
printf '\nlayer: %.0f MB (256 MiB random, 256 MiB zeros, 20,000 small files); %s runs each; %s cores\n' "$mb" "$runs" "$(nproc)"
printf '%-28s %8s %8s %8s %10s\n' "builder" "min s" "median s" "max s" "MB/s (med)"
printf '%-28s %8s %8s %8s %10.0f\n' "strata (zstd)" "$smin" "$smed" "$smax" "$(echo "$mb / $smed" | bc -l)"
printf '%-28s %8s %8s %8s %10.0f\n' "BuildKit (gzip, default)" "$gmin" "$gmed" "$gmax" "$(echo "$mb / $gmed" | bc -l)"
printf '%-28s %8s %8s %8s %10.0f\n' "BuildKit (zstd)" "$zmin" "$zmed" "$zmax" "$(echo "$mb / $zmed" | bc -l)"
printf 'ratio strata/BuildKit (median): %.2f vs gzip, %.2f vs zstd\n' \
    "$(echo "$smed / $gmed" | bc -l)" "$(echo "$smed / $zmed" | bc -l)"
