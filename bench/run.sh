#!/usr/bin/env bash
# The side-by-side benchmark of issue #7: strata and BuildKit on this
# machine, the same Dockerfiles, the builders alternating (A B A B ...),
# each case RUNS times; prints min/median/max per builder and the ratio
# strata/BuildKit (of the medians) per case, and keeps the raw times.
#
#   1 cold multi-stage: a base stage, four independent CPU- and
#     sleep-bound stages, a final stage copying from all (bench/cases/1)
#   2 cold, 40 small RUN steps: per-step overhead (bench/cases/2)
#   3 cold, one big layer: COPY of 256 MiB random + 256 MiB zeros + 20,000
#     small files (bench/cases/3; the context as bench/layer-export.sh makes it)
#   4 cold flask example (examples/flask/Dockerfile.debian, apt-get from
#     this machine's mirror)
#   5 warm rebuild, no change; 6 warm rebuild after app.py changed
#   7 fully cached rebuild on a builder that never built it: strata a
#     second farm (own scheduler state, one worker) sharing only Redis and
#     S3; BuildKit a fresh buildkitd with --import-cache from the registry
#     cache the first one exported (as bench/cache.sh)
#   8 ten concurrent builds of one Dockerfile (bench/cases/8), a fresh
#     RUN_ID per run: the wall time of all ten, and for strata the steps
#     executed over the ten (--metadata-file)
#
# strata: a farm from deploy/local/up.sh (a scheduler and two workers,
# release build) on redis-server and s3s-fs; cases 1-3 also embedded
# (scheduler and worker in the strata process). BuildKit: buildkitd
# v0.34.2 (scripts/buildkit.sh; OCI worker, overlayfs). Base images
# (busybox from Debian's busybox-static on scratch; the Debian base of
# scripts/debian-base.sh) come from a local registry. Every builder does
# one untimed build of a case first (base images pulled, contexts sent),
# then cold cases run with --no-cache on both sides. BuildKit writes the
# image into its image store (--output type=image,push=false), as strata
# stores its image record; BENCH_BK_OUTPUT=none drops the output.
# Times are the client's wall clock.
#
#   bench/run.sh [RUNS]            (default 3; root; Go for BuildKit)
#
# Environment:
#   BENCH_CASES="1 2 ..."   the cases to run (default all; 5-7 need 4's
#                           untimed build, done anyway)
#   BENCH_EMBEDDED="1 2 3"  cases also timed with embedded strata ("" for none)
#   BENCH_PERF=N            after case N (1-4), one more (untimed) strata
#                           farm build under `perf record -g` of the
#                           farm's processes (workers, scheduler, Redis,
#                           s3s-fs): perf-caseN.txt (top
#                           symbols), perf-caseN-callers.txt (call chains)
#   BENCH_FARM_ARGS="..."   more deploy/local/up.sh arguments for every
#                           farm (e.g. "--capacity 2"; default none: the
#                           workers' own defaults)
#   BENCH_OUT=DIR           results directory (default
#                           /var/tmp/strata-bench-results/DATE-TIME):
#                           results.tsv (every time, run 0 being the
#                           untimed first builds), summary.txt (the
#                           table), notes.txt, machine.txt, logs/
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd -P)"
runs="${1:-3}"
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [RUNS]" >&2; exit 2; }
cases=" ${BENCH_CASES:-1 2 3 4 5 6 7 8} "
embedded_cases=" ${BENCH_EMBEDDED-1 2 3} "
perf_case="${BENCH_PERF:-}"
bk_output="${BENCH_BK_OUTPUT:-image}"
out="${BENCH_OUT:-/var/tmp/strata-bench-results/$(date +%Y%m%d-%H%M%S)}"
work="$(mktemp -d /var/tmp/strata-bench.XXXXXX)"
BENCH_NAME=bench
# Warm rebuilds take tens of milliseconds: keep milliseconds in the table.
stats_decimals=3
# shellcheck source=bench/lib.sh
. "$repo/bench/lib.sh"
trap bench_cleanup EXIT
bench_require_root

mkdir -p "$out/logs"
out="$(cd "$out" && pwd -P)"
results="$out/results.tsv"
printf 'case\tbuilder\trun\tseconds\tcpu\tload1\n' >"$results"
: >"$out/notes.txt"
started=$SECONDS

selected() { [[ "$cases" == *" $1 "* ]]; }
embedded_too() { [[ "$embedded_cases" == *" $1 "* ]]; }
load1() { cut -d' ' -f1 /proc/loadavg; }
note() {
    printf '%s\n' "$*" >>"$out/notes.txt"
    bench_log "$*"
}

declare -A times=() cpus=() case_load=() builder_pids=()
# record CASE BUILDER RUN "SECONDS [CPU]"; run 0 is an untimed first build.
# CPU is the CPU seconds the builder's daemons spent during the build
# ("-" where not measured).
record() {
    local secs cpu
    read -r secs cpu <<<"$4"
    cpu="${cpu:--}"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$secs" "$cpu" "$(load1)" >>"$results"
    [[ "$3" == 0 ]] && return
    times["$1|$2"]+=" $secs"
    [[ "$cpu" == - ]] || cpus["$1|$2"]+=" $cpu"
}
fail() { # fail LOG WHAT
    bench_log "$2 failed; the end of $1:"
    tail -n 30 "$1" >&2
    exit 1
}

# Before every timed build: write back what earlier builds left dirty in
# the page cache, and let the filesystem's journal commit that follows
# pass, so that no build pays for the one before it.
settle() {
    sync
    sleep 0.5
}

# sb WHERE NAME CTX [strata build args...] -> "SECONDS CPU". WHERE is a
# scheduler URL or "embedded"; CPU is what the farm's processes
# (builder_pids[WHERE]) spent, or for embedded the strata process itself
# (client, scheduler and worker; see cpu_sampler). The clock stops as
# soon as strata exits, before any CPU figure is worked out.
sb() {
    local where="$1" name="$2" ctx="$3" log="$out/logs/strata-$2.log" t0 c0 secs spid sampler
    shift 3
    local env=(env STRATA_SCHEDULER="$where") pids=()
    [[ "$where" == embedded ]] && env=(env -u STRATA_SCHEDULER STRATA_HOME="$work/embedded-home")
    read -r -a pids <<<"${builder_pids[$where]:-}"
    echo "=== $(date +%T) $where $*" >>"$log"
    settle
    if [[ "$where" != embedded ]]; then
        c0="$(cpu_seconds "${pids[@]}")"
        t0="$EPOCHREALTIME"
        "${env[@]}" "$strata" build --progress plain -t "bench/$name:latest" "$@" "$ctx" >>"$log" 2>&1 ||
            fail "$log" "strata build ($name)"
        secs="$(since "$t0")"
        echo "$secs $(cpu_since "$c0" "${pids[@]}")"
        return
    fi
    t0="$EPOCHREALTIME"
    "${env[@]}" "$strata" build --progress plain -t "bench/$name:latest" "$@" "$ctx" >>"$log" 2>&1 &
    spid=$!
    # A background command ignores Ctrl-C here: pass it on.
    trap 'kill "$spid" 2>/dev/null' INT TERM
    cpu_sampler "$spid" >"$work/cpu-sample" &
    sampler=$!
    wait "$spid" || fail "$log" "strata build ($name)"
    secs="$(since "$t0")"
    trap - INT TERM
    wait "$sampler" || true
    echo "$secs $(cpu_seconds_of_stat "$(<"$work/cpu-sample")")"
}

# cpu_sampler PID: reads /proc/PID/stat every 10 ms until PID is gone,
# then prints the last line read: the CPU its threads used, but for up to
# its last 10 ms. Waiting is a read timing out on a FIFO nobody writes,
# so no process is started while the build runs.
cpu_sampler() {
    local stat="" line tick
    [[ -p "$work/tick" ]] || mkfifo "$work/tick"
    exec {tick}<>"$work/tick"
    while { read -r line <"/proc/$1/stat"; } 2>/dev/null; do
        stat="$line"
        read -rt 0.01 -u "$tick" _ || true
    done
    exec {tick}>&-
    printf '%s\n' "$stat"
}

# bkb HOST NAME CTX [buildctl build args...] -> "SECONDS CPU", CPU being
# what buildkitd (builder_pids[HOST]) spent.
bkb() {
    local host="$1" name="$2" ctx="$3" log="$out/logs/buildkit-$2.log" t0 c0
    shift 3
    local output=() pids=()
    [[ "$bk_output" == image ]] && output=(--output "type=image,name=$registry/bench/$name:latest,push=false")
    read -r -a pids <<<"${builder_pids[$host]:-}"
    echo "=== $(date +%T) $host $*" >>"$log"
    settle
    c0="$(cpu_seconds "${pids[@]}")"
    t0="$EPOCHREALTIME"
    "$buildctl" --addr "$host" build --frontend dockerfile.v0 --local context="$ctx" \
        --local dockerfile="$ctx" --progress plain "${output[@]}" "$@" >>"$log" 2>&1 ||
        fail "$log" "buildctl build ($name)"
    echo "$(since "$t0") $(cpu_since "$c0" "${pids[@]}")"
}

# cpu_since C0 PIDS...: the CPU seconds PIDS spent since they had spent C0;
# "-" without PIDS.
cpu_since() {
    local c0="$1"
    shift
    [[ $# -gt 0 ]] || { echo -; return; }
    awk -v a="$c0" -v b="$(cpu_seconds "$@")" 'BEGIN { printf "%.2f", b - a }'
}

# The processes whose CPU a build on farm NAME (URL) or buildkitd NAME
# (HOST) counts: the farm's scheduler and workers with Redis and S3, or
# buildkitd.
farm_counted() { builder_pids[$2]="$(cat "$work/farm-$1/pids/"*.pid | tr '\n' ' ') $redis_pid $s3s_pid"; }
bk_counted() { builder_pids[$2]="$(cat "$work/bk-$1/buildkitd.pid")"; }

# Pids of the main farm's processes (builder_pids), comma-separated.
farm_pids() { tr -s " " "\n" <<<"${builder_pids[$s_url]}" | grep . | paste -sd, -; }

# profile CASE CTX [strata build args...]: one untimed farm build under
# perf; the report in $out/perf-caseN.txt.
profile() {
    local n="$1" ctx="$2" data="$out/perf-case$1.data" perf_pid
    shift 2
    command -v perf >/dev/null || { note "case $n: perf not installed, no profile"; return; }
    perf record -g -F 499 -p "$(farm_pids)" -o "$data" >"$out/logs/perf-case$n.log" 2>&1 &
    perf_pid=$!
    sleep 1
    sb "$s_url" "case$n-profiled" "$ctx" "$@" >/dev/null
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    {
        echo "# perf record -g -F 499 of the farm's workers, scheduler, redis-server and s3s-fs during one strata build of case $n"
        perf report -i "$data" --stdio --no-children -g none --sort comm,dso,symbol \
            --percent-limit 0.5 2>/dev/null | grep -E '^ +[0-9]' | head -n 60
    } >"$out/perf-case$n.txt"
    perf report -i "$data" --stdio --no-children -g caller --sort symbol --percent-limit 3 \
        2>/dev/null >"$out/perf-case$n-callers.txt" || true
    note "case $n: profile in $out/perf-case$n.txt (data: $data)"
}

# cold_case N NAME CTX [build args for both, KEY=VALUE...]: an untimed
# build by each builder, then RUNS timed --no-cache builds, alternating.
cold_case() {
    local n="$1" name="$2" ctx="$3" i t a
    shift 3
    local s_args=() b_args=()
    for a in "$@"; do
        s_args+=(--build-arg "$a")
        b_args+=(--opt "build-arg:$a")
    done
    case_load[$n]="$(load1)"
    note "case $n ($name): load at start $(cut -d' ' -f1-3 /proc/loadavg)"
    # The first builds (run 0: bases pulled, context sent, caches empty)
    # are kept in results.tsv and the notes, not in the table.
    local first
    t="$(sb "$s_url" "$name" "$ctx" "${s_args[@]}")"
    record "$n" strata 0 "$t"
    first="strata ${t% *} s"
    t="$(bkb "$bk_host" "$name" "$ctx" "${b_args[@]}")"
    record "$n" buildkit 0 "$t"
    first="$first, BuildKit ${t% *} s"
    if embedded_too "$n"; then
        t="$(sb embedded "$name" "$ctx" "${s_args[@]}")"
        record "$n" strata-embedded 0 "$t"
        first="$first, strata embedded ${t% *} s"
    fi
    note "case $n: first builds (untimed in the table): $first"
    for i in $(seq 1 "$runs"); do
        t="$(sb "$s_url" "$name" "$ctx" --no-cache "${s_args[@]}")"
        record "$n" strata "$i" "$t"
        t="$(bkb "$bk_host" "$name" "$ctx" --no-cache "${b_args[@]}")"
        record "$n" buildkit "$i" "$t"
        if embedded_too "$n"; then
            t="$(sb embedded "$name" "$ctx" --no-cache "${s_args[@]}")"
            record "$n" strata-embedded "$i" "$t"
        fi
        bench_log "case $n run $i: ${times["$n|strata"]##* } s strata, ${times["$n|buildkit"]##* } s BuildKit"
    done
    [[ "$perf_case" == "$n" ]] && profile "$n" "$ctx" --no-cache "${s_args[@]}"
    return 0
}

bench_build_strata
bench_install_buildkit
bench_find_s3s
bench_start_services
busybox="$(bench_busybox_base)"
debian=""
for n in 4 5 6 7; do selected "$n" && debian="$(bench_debian_base)" && break; done

{
    echo "date: $(date -Is)"
    echo "host: $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM"
    # shellcheck disable=SC1091
    echo "kernel: $(uname -r); $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "filesystem of $work: $(df -T "$work" | awk 'NR == 2 {print $2}')"
    echo "runc: $(runc --version 2>/dev/null | head -1 || /usr/sbin/runc --version | head -1)"
    echo "buildkit: $("$buildctl" --version)"
    echo "strata: $(git -C "$repo" rev-parse --short HEAD)$(git -C "$repo" diff --quiet HEAD 2>/dev/null || echo ' (uncommitted changes)'), release build"
    echo "BuildKit output: $bk_output"
    echo "runs per case: $runs"
    echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$out/machine.txt"
cat "$out/machine.txt" >&2

s_url="$(farm main 2)"
bk_host="$(buildkitd main)"
[[ -n "$s_url" && -n "$bk_host" ]] || bench_die "the farm or buildkitd did not start; see $work/farm.log, $work/bk.log"
farm_counted main "$s_url"
bk_counted main "$bk_host"

if selected 1; then
    cold_case 1 case1 "$repo/bench/cases/1" "BASE=$busybox"
fi
if selected 2; then
    cold_case 2 case2 "$repo/bench/cases/2" "BASE=$busybox"
fi
if selected 3; then
    bench_log "case 3: making the context (256 MiB random, 256 MiB zeros, 20,000 small files)"
    ctx3="$work/case3"
    bench_big_context "$ctx3"
    cp "$repo/bench/cases/3/Dockerfile" "$ctx3/"
    cold_case 3 case3 "$ctx3"
    rm -rf "$ctx3"
fi

flask="$work/flask"
cache_ref="$registry/bench/flask-cache:latest"
if selected 4 || selected 5 || selected 6 || selected 7; then
    cp -r "$repo/examples/flask" "$flask"
    cp "$repo/examples/flask/Dockerfile.debian" "$flask/Dockerfile"
    fl_s=(--build-arg "BASE=$debian")
    fl_b=(--opt "build-arg:BASE=$debian")
    export_cache=(--export-cache "type=registry,ref=$cache_ref,mode=max")
fi
if selected 4; then
    # cold_case's untimed builds also fill the caches cases 5-7 start from.
    cold_case 4 flask "$flask" "BASE=$debian"
    bkb "$bk_host" flask "$flask" "${fl_b[@]}" "${export_cache[@]}" >/dev/null
elif selected 5 || selected 6 || selected 7; then
    sb "$s_url" flask "$flask" "${fl_s[@]}" >/dev/null
    bkb "$bk_host" flask "$flask" "${fl_b[@]}" "${export_cache[@]}" >/dev/null
fi

if selected 5 || selected 6 || selected 7; then
    for n in 5 6 7; do case_load[$n]="$(load1)"; done
    note "cases 5-7: load at start $(cut -d' ' -f1-3 /proc/loadavg)"
    for i in $(seq 1 "$runs"); do
        if selected 5; then
            t="$(sb "$s_url" flask "$flask" "${fl_s[@]}")"
            record 5 strata "$i" "$t"
            t="$(bkb "$bk_host" flask "$flask" "${fl_b[@]}")"
            record 5 buildkit "$i" "$t"
        fi
        # The change is made for case 7 too, so its fresh builders see a
        # cache that was written after a change.
        echo "# change $i" >>"$flask/app.py"
        t="$(sb "$s_url" flask "$flask" "${fl_s[@]}")"
        selected 6 && record 6 strata "$i" "$t"
        t="$(bkb "$bk_host" flask "$flask" "${fl_b[@]}")"
        selected 6 && record 6 buildkit "$i" "$t"
        # BuildKit shares its cache through the registry only when asked:
        # exported here, untimed, for case 7's fresh buildkitd. strata
        # writes its shared cache on every build, inside its time.
        selected 7 && bkb "$bk_host" flask "$flask" "${fl_b[@]}" "${export_cache[@]}" >/dev/null
        if selected 7; then
            # Started before the clock runs.
            url2="$(farm "fresh-$i" 1)"
            [[ -n "$url2" ]] || bench_die "the fresh farm did not start; see $work/farm.log"
            farm_counted "fresh-$i" "$url2"
            t="$(sb "$url2" flask "$flask" "${fl_s[@]}")"
            record 7 strata "$i" "$t"
            # Worker counters travel in heartbeats (every 5 s).
            sleep 6
            STRATA_SCHEDULER="$url2" "$strata" workers --format json >"$out/case7-workers-$i.json"
            note "case 7 run $i: the fresh farm's worker: $(python3 -c '
import json, sys
w = json.load(open(sys.argv[1]))
print("jobs_completed=%d blobs_downloaded=%d bytes_downloaded=%d" % tuple(
    sum(x.get(k, 0) for x in w) for k in ("jobs_completed", "blobs_downloaded", "bytes_downloaded")))
' "$out/case7-workers-$i.json")"
            farm_down "fresh-$i"
            host2="$(buildkitd "fresh-$i")"
            [[ -n "$host2" ]] || bench_die "the fresh buildkitd did not start; see $work/bk.log"
            bk_counted "fresh-$i" "$host2"
            t="$(bkb "$host2" flask "$flask" "${fl_b[@]}" --import-cache "type=registry,ref=$cache_ref")"
            record 7 buildkit "$i" "$t"
            note "case 7 run $i: the fresh buildkitd's state directory holds $(du -sb "$work/bk-fresh-$i/root" | cut -f1) bytes after the build"
            buildkitd_stop "fresh-$i"
        fi
        bench_log "cases 5-7 run $i done"
    done
fi

if selected 8; then
    case_load[8]="$(load1)"
    note "case 8: load at start $(cut -d' ' -f1-3 /proc/loadavg)"
    ctx8="$repo/bench/cases/8"
    mkdir -p "$out/case8"
    # One untimed build each: the base image pulled.
    sb "$s_url" case8 "$ctx8" --build-arg "BASE=$busybox" >/dev/null
    bkb "$bk_host" case8 "$ctx8" --opt "build-arg:BASE=$busybox" >/dev/null
    for i in $(seq 1 "$runs"); do
        id="$i-$EPOCHSECONDS-$RANDOM"
        pids=()
        t0="$EPOCHREALTIME"
        for k in $(seq 1 10); do
            STRATA_SCHEDULER="$s_url" "$strata" build --progress plain -t "bench/case8-$k:latest" \
                --build-arg "BASE=$busybox" --build-arg "RUN_ID=$id" \
                --metadata-file "$out/case8/strata-$i-$k.json" "$ctx8" \
                >"$out/logs/strata-case8-$i-$k.log" 2>&1 &
            pids+=($!)
        done
        for k in $(seq 1 10); do
            wait "${pids[k - 1]}" || fail "$out/logs/strata-case8-$i-$k.log" "concurrent strata build $k"
        done
        record 8 strata "$i" "$(since "$t0")"
        note "case 8 run $i: strata: $(python3 -c '
import json, sys
docs = [json.load(open(f)) for f in sys.argv[1:]]
steps = len(docs[0]["strata.steps"])
executed = sum(s["status"] == "executed" for d in docs for s in d["strata.steps"])
print("%d steps executed over the %d builds (%d steps per build)" % (executed, len(docs), steps))
' "$out/case8/strata-$i-"*.json)"
        output=()
        pids=()
        t0="$EPOCHREALTIME"
        for k in $(seq 1 10); do
            [[ "$bk_output" == image ]] && output=(--output "type=image,name=$registry/bench/case8-$k:latest,push=false")
            "$buildctl" --addr "$bk_host" build --frontend dockerfile.v0 --local context="$ctx8" \
                --local dockerfile="$ctx8" --progress plain "${output[@]}" \
                --opt "build-arg:BASE=$busybox" --opt "build-arg:RUN_ID=$id" \
                >"$out/logs/buildkit-case8-$i-$k.log" 2>&1 &
            pids+=($!)
        done
        for k in $(seq 1 10); do
            wait "${pids[k - 1]}" || fail "$out/logs/buildkit-case8-$i-$k.log" "concurrent buildctl build $k"
        done
        record 8 buildkit "$i" "$(since "$t0")"
        bench_log "case 8 run $i: ${times["8|strata"]##* } s strata, ${times["8|buildkit"]##* } s BuildKit"
    done
    # How many RUN steps BuildKit executed over ten concurrent builds: one
    # more, untimed round on a buildkitd whose runc is a wrapper noting
    # every `runc run` (a RUN step's container) before it runs it.
    runs_log="$work/bk-runc-runs.log"
    : >"$runs_log"
    wrapper="$work/runc-counting"
    real_runc="$(command -v runc || echo /usr/sbin/runc)"
    cat >"$wrapper" <<EOF
#!/bin/sh
case " \$* " in *" run "*) echo run >>'$runs_log' ;; esac
exec '$real_runc' "\$@"
EOF
    chmod +x "$wrapper"
    bk_count="$(STRATA_BUILDKIT_RUNC="$wrapper" buildkitd count8)"
    [[ -n "$bk_count" ]] || bench_die "the counting buildkitd did not start; see $work/bk.log"
    bkb "$bk_count" case8 "$ctx8" --opt "build-arg:BASE=$busybox" >/dev/null
    before="$(wc -l <"$runs_log")"
    id="count-$EPOCHSECONDS-$RANDOM"
    pids=()
    for k in $(seq 1 10); do
        "$buildctl" --addr "$bk_count" build --frontend dockerfile.v0 --local context="$ctx8" \
            --local dockerfile="$ctx8" --progress plain \
            --opt "build-arg:BASE=$busybox" --opt "build-arg:RUN_ID=$id" \
            >"$out/logs/buildkit-case8-count-$k.log" 2>&1 &
        pids+=($!)
    done
    for k in $(seq 1 10); do
        wait "${pids[k - 1]}" || fail "$out/logs/buildkit-case8-count-$k.log" "concurrent buildctl build $k"
    done
    note "case 8: BuildKit: $(($(wc -l <"$runs_log") - before)) RUN steps executed over 10 concurrent builds (3 RUN steps per build; an untimed round, runc wrapped to count)"
    buildkitd_stop count8
fi

declare -A titles=(
    [1]="1 cold multi-stage, 4 parallel stages"
    [2]="2 cold, 40 small RUN steps"
    [3]="3 cold, big layer (539 MB COPY)"
    [4]="4 cold, flask example (apt-get)"
    [5]="5 warm rebuild, no change"
    [6]="6 warm rebuild, app.py changed"
    [7]="7 cached, on a builder that never built it"
    [8]="8 ten concurrent builds (wall, all ten)"
)
{
    printf '\n%s runs per case, %s CPUs; times in seconds (client wall clock); ratio = strata median / BuildKit median\n' "$runs" "$(nproc)"
    printf '%-57s %7s %7s %7s   %7s %7s %7s   %6s  %5s\n' case "s min" "s med" "s max" "bk min" "bk med" "bk max" ratio load
    for n in 1 2 3 4 5 6 7 8; do
        [[ -n "${times["$n|buildkit"]:-}" ]] || continue
        # shellcheck disable=SC2086 # the lists are space-separated numbers
        read -r bmin bmed bmax <<<"$(stats ${times["$n|buildkit"]})"
        for builder in strata strata-embedded; do
            [[ -n "${times["$n|$builder"]:-}" ]] || continue
            # shellcheck disable=SC2086
            read -r smin smed smax <<<"$(stats ${times["$n|$builder"]})"
            title="${titles[$n]}"
            [[ "$builder" == strata-embedded ]] && title="$title [embedded]"
            printf '%-57s %7s %7s %7s   %7s %7s %7s   %6s  %5s\n' "$title" "$smin" "$smed" "$smax" \
                "$bmin" "$bmed" "$bmax" "$(ratio "$smed" "$bmed")" "${case_load[$n]:-}"
        done
    done
    printf '\nCPU seconds per build (median) of the builder'"'"'s daemons: the farm'"'"'s scheduler, workers,\n'
    printf 'redis-server and s3s-fs, or buildkitd, or the embedded strata process; not the processes of RUN steps\n'
    printf '%-57s %7s %8s %7s\n' case strata embedded BuildKit
    for n in 1 2 3 4 5 6 7; do
        [[ -n "${cpus["$n|strata"]:-}" && -n "${cpus["$n|buildkit"]:-}" ]] || continue
        # shellcheck disable=SC2086
        read -r _ scpu _ <<<"$(stats ${cpus["$n|strata"]})"
        ecpu=-
        if [[ -n "${cpus["$n|strata-embedded"]:-}" ]]; then
            # shellcheck disable=SC2086
            read -r _ ecpu _ <<<"$(stats ${cpus["$n|strata-embedded"]})"
        fi
        # shellcheck disable=SC2086
        read -r _ bcpu _ <<<"$(stats ${cpus["$n|buildkit"]})"
        printf '%-57s %7s %8s %7s\n' "${titles[$n]}" "$scpu" "$ecpu" "$bcpu"
    done
    if [[ -n "${times["5|strata"]:-}" && -n "${times["7|strata"]:-}" ]]; then
        # shellcheck disable=SC2086
        read -r _ m5 _ <<<"$(stats ${times["5|strata"]})"
        # shellcheck disable=SC2086
        read -r _ m7 _ <<<"$(stats ${times["7|strata"]})"
        printf 'strata case 7 / case 5 (medians): %s\n' "$(ratio "$m7" "$m5")"
    fi
    printf '\nnotes:\n'
    cat "$out/notes.txt"
    printf 'load at the end: %s; total time %d s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" "$((SECONDS - started))"
    printf 'raw times: %s\n' "$results"
} | tee "$out/summary.txt"
