#!/usr/bin/env bash
# A minimal Debian root filesystem as a tarball, for `strata import`, built
# without any container registry: debootstrap (variant minbase) from the
# Debian mirror this machine's apt already uses.
#
#   scripts/debian-base.sh [--out FILE] [--suite SUITE] [--mirror URL] [--force]
#
# The mirror is the first `deb` source for SUITE in
# /etc/apt/sources.list.d/*.sources (deb822 `URIs:`) or /etc/apt/sources.list;
# SUITE is VERSION_CODENAME from /etc/os-release. The rootfs's own apt
# sources name the same mirror (plus the host's SUITE-updates and
# SUITE-security sources), so `RUN apt-get update` works in a build.
#
# The tarball (default ${STRATA_CACHE:-/var/cache/strata}/debian-SUITE-rootfs.tar)
# is reused when it exists, unless --force. Its paths are relative
# (`./bin`, `./etc/...`), entries sorted, owners numeric and mtimes clamped
# to the archive's Release date, so two runs against the same archive state
# give the same bytes (two runs in a row gave identical tarballs). Needs root. Everything but the tarball's path
# goes to stderr.
set -euo pipefail

readonly CACHE_DIR="${STRATA_CACHE:-/var/cache/strata}"
readonly KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

log() {
    printf 'debian-base.sh: %s\n' "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

usage() {
    cat >&2 <<EOF
usage: $0 [--out FILE] [--suite SUITE] [--mirror URL] [--force]

Builds a minimal Debian rootfs tarball with debootstrap from this machine's
apt mirror, for: strata import FILE strata-local/debian:SUITE
EOF
    exit 2
}

# "URI SUITE COMPONENTS..." for every enabled `deb` source on this machine,
# deb822 files first, then the one-line format.
host_sources() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f "$f" ]] || continue
        # Stanzas are separated by blank lines; a field may continue on
        # lines that start with white space.
        awk '
            function flush(   i, j, n, m, s, u) {
                if (types ~ /(^| )deb( |$)/ && tolower(enabled) != "no") {
                    n = split(uris, u, " "); m = split(suites, s, " ")
                    for (i = 1; i <= n; i++) for (j = 1; j <= m; j++)
                        print u[i], s[j], comps
                }
                types = uris = suites = comps = key = ""; enabled = "yes"
            }
            BEGIN { enabled = "yes" }
            /^#/ { next }
            /^[ \t]*$/ { flush(); next }
            /^[ \t]/ { v = $0; sub(/^[ \t]+/, "", v); val[key] = val[key] " " v; assign(); next }
            {
                key = tolower(substr($0, 1, index($0, ":") - 1))
                v = substr($0, index($0, ":") + 1); sub(/^[ \t]+/, "", v); sub(/[ \t]+$/, "", v)
                val[key] = v; assign()
            }
            function assign() {
                if (key == "types") types = val[key]
                else if (key == "uris") uris = val[key]
                else if (key == "suites") suites = val[key]
                else if (key == "components") comps = val[key]
                else if (key == "enabled") enabled = val[key]
            }
            END { flush() }
        ' "$f"
    done
    local list
    for list in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f "$list" ]] || continue
        # deb [opts] URI SUITE COMPONENTS...
        awk '
            $1 != "deb" { next }
            {
                i = 2
                if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                line = $i " " $(i + 1)
                for (j = i + 2; j <= NF; j++) line = line " " $j
                print line
            }
        ' "$list"
    done
}

# The first host source for exactly SUITE: "URI COMPONENTS...".
source_for() {
    local suite="$1" uri s comps
    while read -r uri s comps; do
        if [[ "$s" == "$suite" ]]; then
            echo "${uri%/} ${comps:-main}"
            return 0
        fi
    done < <(host_sources)
    return 1
}

install_debootstrap() {
    command -v debootstrap >/dev/null 2>&1 && [[ -f "$KEYRING" ]] && return
    log "installing debootstrap and debian-archive-keyring"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap debian-archive-keyring >&2
}

# Mount points at or below $1, deepest first (a failed debootstrap leaves
# /proc and /sys mounted in the target).
mounts_under() {
    local dir="$1" mountpoint
    while read -r _ _ _ _ mountpoint _; do
        mountpoint="$(printf '%b' "$mountpoint")"
        if [[ "$mountpoint" == "$dir" || "$mountpoint" == "$dir"/* ]]; then
            echo "$mountpoint"
        fi
    done </proc/self/mountinfo | sort -r
}

cleanup_work() {
    local dir="$1" mountpoint
    [[ -n "$dir" && -d "$dir" ]] || return 0
    while read -r mountpoint; do
        [[ -n "$mountpoint" ]] || continue
        umount "$mountpoint" 2>/dev/null || umount -l "$mountpoint" || true
    done < <(mounts_under "$dir")
    rm -rf "$dir"
}

# The rootfs's apt sources: the host's mirrors for SUITE, SUITE-updates and
# SUITE-security, as a deb822 file like Debian's own images carry.
write_sources() {
    local root="$1" suite="$2" mirror="$3" comps="$4" s line
    {
        echo "# Written by strata's scripts/debian-base.sh from the build machine's apt sources."
        printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: %s\nSigned-By: %s\n' \
            "$mirror" "$suite" "$comps" "$KEYRING"
        for s in "${suite}-updates" "${suite}-security"; do
            line="$(source_for "$s")" || continue
            printf '\nTypes: deb\nURIs: %s\nSuites: %s\nComponents: %s\nSigned-By: %s\n' \
                "${line%% *}" "$s" "${line#* }" "$KEYRING"
        done
    } >"$root/etc/apt/sources.list.d/debian.sources"
    rm -f "$root/etc/apt/sources.list"
}

# apt settings of Debian's official container images, plus the host's own
# Check-Valid-Until/Check-Date/proxy settings: a mirror that needs them on
# the host needs them in a build too.
write_apt_conf() {
    local root="$1" d="$1/etc/apt/apt.conf.d"
    echo 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";' >"$d/docker-clean"
    echo 'Acquire::GzipIndexes "true";' >"$d/docker-gzip-indexes"
    echo 'Acquire::Languages "none";' >"$d/docker-no-languages"
    echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$d/docker-autoremove-suggests"
    local host
    host="$(apt-config dump 2>/dev/null | grep -E '^Acquire::(Check-Valid-Until|Check-Date|https?::Proxy) ' || true)"
    if [[ -n "$host" ]]; then
        printf '// From the build machine (scripts/debian-base.sh).\n%s\n' "$host" >"$d/90strata-host"
    fi
}

# Debian's "slim" trimming: no documentation but copyright files, no man
# pages, no translations. dpkg keeps honouring it for packages a build adds.
slim() {
    local root="$1"
    cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
    find "$root/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    local d
    for d in man groff info lintian linda; do
        [[ -d "$root/usr/share/$d" ]] && find "$root/usr/share/$d" -mindepth 1 -delete
    done
    [[ -d "$root/usr/share/locale" ]] &&
        find "$root/usr/share/locale" -mindepth 1 -not -name locale.alias -delete
    return 0
}

# What a fresh container must not inherit from this machine or from the
# bootstrap: caches, logs, machine identity, device nodes.
scrub() {
    local root="$1"
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
        "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/archives/partial/*
    mkdir -p "$root/var/lib/apt/lists/partial"
    rm -rf "$root"/var/log/* "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old \
        "$root"/var/cache/ldconfig/aux-cache "$root"/tmp/* "$root"/var/tmp/* \
        "$root"/root/.bash_history "$root"/debootstrap
    rm -rf "${root:?}"/dev/* "${root:?}"/proc/* "${root:?}"/sys/* "${root:?}"/run/*
    # The runtime supplies these per container.
    rm -f "$root/etc/resolv.conf" "$root/etc/hostname"
    printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
    : >"$root/etc/machine-id"
}

main() {
    local out="" suite="" mirror="" force=false
    while [[ $# -gt 0 ]]; do
        case "$1" in
        --out) out="${2:?--out needs a file}"; shift 2 ;;
        --suite) suite="${2:?--suite needs a name}"; shift 2 ;;
        --mirror) mirror="${2:?--mirror needs a URL}"; shift 2 ;;
        --force) force=true; shift ;;
        -h | --help) usage ;;
        *) log "unknown argument: $1"; usage ;;
        esac
    done
    [[ "$(id -u)" -eq 0 ]] || die "debootstrap needs root: run this as root"

    if [[ -z "$suite" ]]; then
        # shellcheck disable=SC1091
        suite="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
        [[ -n "$suite" ]] || die "no VERSION_CODENAME in /etc/os-release: pass --suite"
    fi
    local comps="main" line
    if [[ -z "$mirror" ]]; then
        line="$(source_for "$suite")" ||
            die "no 'deb' source for suite '$suite' in /etc/apt/sources.list(.d): pass --mirror URL"
        mirror="${line%% *}"
        comps="${line#* }"
    fi
    out="${out:-${CACHE_DIR}/debian-${suite}-rootfs.tar}"

    mkdir -p "$(dirname "$out")"
    # Two quickstarts at once: one builds, the other waits and reuses.
    exec 9>"${out}.lock"
    flock 9
    if [[ -s "$out" ]] && ! $force; then
        log "reusing ${out} (delete it or pass --force to rebuild)"
        echo "$out"
        return
    fi

    install_debootstrap
    local work
    work="$(mktemp -d "$(dirname "$out")/.debian-${suite}.XXXXXX")"
    # shellcheck disable=SC2064 # expand now: $work is local
    trap "cleanup_work '$work'" EXIT
    local root="$work/rootfs"
    local include=apt,gpgv,debian-archive-keyring
    [[ "$mirror" == https://* ]] && include="$include,ca-certificates"

    local started=$SECONDS
    log "debootstrap --variant=minbase ${suite} from ${mirror} (components: ${comps}); about a minute or two"
    if ! debootstrap --variant=minbase --include="$include" \
        --components="${comps// /,}" --keyring="$KEYRING" \
        "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1; then
        tail -n 30 "$work/debootstrap.log" >&2
        [[ -f "$root/debootstrap/debootstrap.log" ]] && tail -n 30 "$root/debootstrap/debootstrap.log" >&2
        die "debootstrap failed"
    fi
    log "debootstrap took $((SECONDS - started)) s"

    # The archive's Release date pins the mtimes: the same archive state
    # gives the same tar headers.
    local epoch release
    release="$(find "$root/var/lib/apt/lists" -name "*_dists_${suite}_Release" -print -quit)"
    epoch="$( { [[ -n "$release" ]] && date -d "$(sed -n 's/^Date: //p' "$release")" +%s; } 2>/dev/null || date +%s)"

    write_sources "$root" "$suite" "$mirror" "$comps"
    write_apt_conf "$root"
    slim "$root"
    scrub "$root"

    tar --create --file "$work/rootfs.tar" --directory "$root" \
        --sort=name --numeric-owner --xattrs --xattrs-include='security.capability' \
        --mtime="@${epoch}" --clamp-mtime \
        --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
        .
    mv -f "$work/rootfs.tar" "$out"
    log "wrote ${out} ($(du -h "$out" | cut -f1), $(tar tf "$out" | wc -l) entries) in $((SECONDS - started)) s"
    echo "$out"
}

main "$@"
