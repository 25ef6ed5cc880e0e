# shellcheck shell=bash disable=SC2034,SC2154
# Shared pieces of the bench scripts (bench/cache.sh, bench/run.sh): the
# services a side-by-side run needs (a registry, redis-server, s3s-fs),
# strata farms from deploy/local/up.sh on them, buildkitd from
# scripts/buildkit.sh, base images in the registry, timing and statistics.
#
# Source it after setting:
#   BENCH_NAME   prefix of log lines (e.g. cache-bench)
#   repo         the repository's root
#   work         a scratch directory the script owns (removed on exit by
#                bench_cleanup)
# It defines the globals bench_pids (processes to kill on exit), bin,
# strata, buildctl, s3s, registry, shared (the farm's --redis/--s3
# arguments), redis_pid and s3s_pid.

bench_pids=()

bench_log() { printf '%s: %s\n' "${BENCH_NAME:-bench}" "$*" >&2; }
bench_die() {
    bench_log "error: $*"
    exit 1
}

# Stops every farm and buildkitd under $work, the services, and removes
# $work. For `trap bench_cleanup EXIT`.
bench_cleanup() {
    local d p f
    for d in "$work"/farm-*; do
        if [[ -d "$d" ]]; then "$repo/deploy/local/down.sh" --dir "$d" >/dev/null 2>&1 || true; fi
        # The farm's own logs (scheduler, workers) go with the results:
        # with STRATA_LOG_SPANS=1 they time every phase of every step.
        if [[ -n "${out:-}" && -d "$d/logs" ]]; then
            mkdir -p "$out/logs"
            for f in "$d"/logs/*.log; do
                [[ -f "$f" ]] && cp "$f" "$out/logs/$(basename "$d")-$(basename "$f")"
            done
        fi
    done
    for d in "$work"/bk-*; do
        if [[ -d "$d" ]]; then bash "$repo/scripts/buildkit.sh" stop "$d" >/dev/null 2>&1 || true; fi
    done
    for p in "${bench_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}

bench_require_root() {
    [[ "$(id -u)" -eq 0 ]] || bench_die "run as root (runc, overlayfs)"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    local _
    for _ in $(seq 1 150); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.2
    done
    bench_die "nothing listens on port $1"
}

# strata's release binaries: sets bin and strata.
bench_build_strata() {
    bench_log "building strata (release)"
    (cd "$repo" && cargo build --release -q -p strata-client -p strata-scheduler -p strata-worker)
    bin="$repo/target/release"
    strata="$bin/strata"
}

# buildkitd/buildctl v0.34.2, built once from source: sets buildctl.
bench_install_buildkit() {
    local bkdir
    bkdir="$(bash "$repo/scripts/buildkit.sh" install)"
    buildctl="$bkdir/buildctl"
}

# s3s-fs: sets s3s.
bench_find_s3s() {
    s3s="$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")"
    [[ -x "$s3s" ]] || bench_die "s3s-fs missing: cargo install s3s-fs@0.14.1 --features binary"
}

# redis-server and s3s-fs (bucket "bench", data under $work) on free
# loopback ports, answering: sets redis_port and s3_port, exports the S3
# credentials the farms inherit.
bench_start_redis_s3() {
    redis_port="$(free_port)"
    redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
    bench_pids+=($!)
    redis_pid=$!
    s3_port="$(free_port)"
    mkdir -p "$work/s3/bench"
    export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret
    "$s3s" --host 127.0.0.1 --port "$s3_port" --access-key bench --secret-key bench-secret "$work/s3" >/dev/null 2>&1 &
    bench_pids+=($!)
    s3s_pid=$!
    wait_port "$redis_port"
    wait_port "$s3_port"
}

# The big layer's files under $1/data: 256 MiB of random data, 256 MiB of
# zeros and 20,000 small files (run.sh's case 3, layer-export.sh,
# context-upload.sh).
bench_big_context() {
    local ctx="$1"
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
}

# A registry, redis-server and s3s-fs (bucket "bench") on free loopback
# ports, data under $work: sets registry and shared, exports the S3
# credentials the farms inherit.
bench_start_services() {
    bench_log "services: registry, redis-server, s3s-fs"
    local reg_port redis_port s3_port
    reg_port="$(free_port)"
    mkdir -p "$work/registry"
    printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
        "$work/registry/data" "$reg_port" >"$work/registry/config.yml"
    docker-registry serve "$work/registry/config.yml" >"$work/registry/log" 2>&1 &
    bench_pids+=($!)
    bench_start_redis_s3
    wait_port "$reg_port"
    registry="127.0.0.1:$reg_port"
    shared=(--redis "redis://127.0.0.1:$redis_port/0" --s3 "s3://bench/?endpoint=http://127.0.0.1:$s3_port&path_style=true")
}

# The Debian base of scripts/debian-base.sh, imported and pushed as
# $registry/debian:bookworm; prints that reference.
bench_debian_base() {
    bench_log "Debian base image into the registry"
    local base="$registry/debian:bookworm" rootfs
    rootfs="$(bash "$repo/scripts/debian-base.sh")"
    STRATA_HOME="$work/push-home" "$strata" import "$rootfs" "$base" >/dev/null
    STRATA_HOME="$work/push-home" "$strata" push "$base" >/dev/null
    echo "$base"
}

# /bin/busybox of Debian's busybox-static with a link per applet, imported
# onto scratch and pushed as $registry/busybox:bench; prints the reference.
bench_busybox_base() {
    bench_log "busybox base image into the registry"
    local base="$registry/busybox:bench" root="$work/busybox-root" bb applet
    bb="$(command -v busybox || true)"
    if [[ -z "$bb" ]] || ldd "$bb" >/dev/null 2>&1; then
        bench_log "installing busybox-static (a static /bin/busybox)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >&2
        bb="$(command -v busybox)"
    fi
    mkdir -p "$root/bin" "$root/tmp" "$root/etc"
    chmod 1777 "$root/tmp"
    cp "$bb" "$root/bin/busybox"
    for applet in $("$bb" --list); do
        [[ "$applet" == busybox ]] || ln -sf busybox "$root/bin/$applet"
    done
    tar -C "$root" --numeric-owner --owner=0 --group=0 --sort=name -cf "$work/busybox.tar" .
    STRATA_HOME="$work/push-home" "$strata" import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' \
        "$work/busybox.tar" "$base" >/dev/null
    STRATA_HOME="$work/push-home" "$strata" push "$base" >/dev/null
    echo "$base"
}

# farm NAME WORKERS: a scheduler and WORKERS workers on the shared Redis
# and S3 (more up.sh arguments in $BENCH_FARM_ARGS), state in
# $work/farm-NAME; prints the scheduler URL.
farm() {
    local port extra=()
    port="$(free_port)"
    read -r -a extra <<<"${BENCH_FARM_ARGS:-}"
    STRATA_BIN_DIR="$bin" "$repo/deploy/local/up.sh" --dir "$work/farm-$1" --port "$port" \
        --workers "$2" "${extra[@]}" "${shared[@]}" 2>>"$work/farm.log" | sed -n 's/^export STRATA_SCHEDULER=//p'
}
farm_down() { "$repo/deploy/local/down.sh" --dir "$work/farm-$1" >/dev/null 2>&1; }

# buildkitd NAME: a buildkitd with state in $work/bk-NAME that reaches the
# registry over plain HTTP; prints its BUILDKIT_HOST.
buildkitd() {
    bash "$repo/scripts/buildkit.sh" start "$work/bk-$1" "$registry" 2>>"$work/bk.log" |
        sed -n 's/^BUILDKIT_HOST=//p'
}
buildkitd_stop() { bash "$repo/scripts/buildkit.sh" stop "$work/bk-$1" >/dev/null 2>&1; }

# CPU seconds (user + system, all threads) the processes $@ have used so
# far; processes that are gone count nothing. Their children (runc, a RUN
# step's processes) are not counted.
cpu_seconds() {
    local p ticks=0 stat
    for p in "$@"; do
        stat="$(cat "/proc/$p/stat" 2>/dev/null)" || continue
        ticks=$((ticks + $(stat_ticks "$stat")))
    done
    ticks_to_seconds "$ticks"
}

# The CPU seconds (utime + stime) in one line of /proc/PID/stat; "-" for
# an empty line.
cpu_seconds_of_stat() {
    [[ -n "$1" ]] || { echo -; return; }
    ticks_to_seconds "$(stat_ticks "$1")"
}

# utime + stime, in clock ticks, of one line of /proc/PID/stat. The fields
# after the command name (which may hold spaces): state is field 3, utime
# 14 and stime 15.
stat_ticks() {
    local f
    read -r -a f <<<"${1##*) }"
    echo $((f[11] + f[12]))
}

ticks_to_seconds() { awk -v t="$1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }'; }

# Seconds since $1 (an $EPOCHREALTIME), three decimals.
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'; }

# "min median max" of the arguments, $stats_decimals (default 2) decimals.
stats() {
    printf '%s\n' "$@" | sort -g | awk -v d="${stats_decimals:-2}" \
        '{a[NR]=$1} END {f = "%." d "f"; printf f " " f " " f, a[1], a[int((NR+1)/2)], a[NR]}'
}

# $1 / $2, two decimals ("-" if $2 is zero or empty).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }
