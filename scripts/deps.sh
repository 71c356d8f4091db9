#!/usr/bin/env bash
# deps: installs everything DistriProc needs on a Debian 12 machine (as root).
#   1. Debian packages from the system's own apt sources (build, tests, workloads).
#   2. CRIU >= 4.2 into .deps/ of this checkout: Debian 12's criu cannot run on
#      new kernels, so the newest criu of Debian trixie/sid is fetched through a
#      private apt configuration (.deps/apt; the system's sources stay untouched),
#      its .debs and their library closure are unpacked into .deps/prefix, and
#      .deps/bin/criu runs it through the prefix's own dynamic loader.
#   3. Verifies criu: --version, `criu check`, and a real dump + restore.
# Idempotent: when everything is in place it prints one line and does nothing else.
set -euo pipefail

# ---- The one list of what the project needs ---------------------------------
# build: gcc make pkg-config libcmocka-dev libsodium-dev libjansson-dev libssl-dev (libcrypto: the AEAD;
#   libssl: TLS to the Redis Cluster store) libhiredis-dev (its RESP reader and command encoder, lib/redis_conn.c);
#   fuzzing: clang libclang-rt-14-dev
# lab + tests: iproute2 procps util-linux python3-pytest curl; iptables: criu --tcp-established
#   locks the dumped connections with iptables rules in the dumped netns; strace: the page server
#   tests check the order fdatasync/reply and inject an fdatasync EIO with it
# workloads + benchmarks: redis-server redis-tools nginx-light wrk gnuplot-nox; openssl: the lab Redis Cluster's CA
#   and node certificate (distriproc lab cluster up)
# containers: runc (Debian 12: 1.1.5; always run with --criu .deps/bin/criu, which it drives
#   through `criu swrk` RPC); podman (Debian 12: 4.3.1, run with --runtime runc) and
#   containernetworking-plugins (its CNI backend): tests/integration/test_podman.py
# criu fetching: debian-archive-keyring (its keys sign trixie and sid)
# container rootfs (make rootfs, scripts/rootfs.sh): mmdebstrap
PACKAGES=(
    gcc make pkg-config libcmocka-dev libsodium-dev libjansson-dev libssl-dev libhiredis-dev
    clang libclang-rt-14-dev
    iproute2 procps util-linux iptables strace
    python3 python3-pytest curl ca-certificates debian-archive-keyring
    redis-server redis-tools openssl nginx-light wrk gnuplot-nox
    runc mmdebstrap
    podman containernetworking-plugins
)
# DEPS_ML=1 (make deps-ml): also PyTorch for the ML inference workload
# (tools/ml_infer.py, bench warmup); ~640 MB installed (176 packages on a
# fresh Debian 12), so it is optional
# and no test needs it.
if [ "${DEPS_ML:-0}" = 1 ]; then
    PACKAGES+=(python3-torch)
fi
# DEPS_PKG=1 (make deps-pkg): packaging, only for building the Debian package
# (make deb, dpkg-buildpackage; dpkg-dev and fakeroot are there already):
# debhelper. Not needed to build, test or `make install`.
if [ "${DEPS_PKG:-0}" = 1 ]; then
    PACKAGES+=(debhelper dpkg-dev fakeroot)
fi
# Services those packages ship; tests start their own instances.
SERVICES=(redis-server nginx)
CRIU_MIN=4.2
RUNC_MIN=1.1   # restore --lazy-pages with --work-path; netns by path as external (lib/runc.h)
CRIU_SUITES=(sid trixie)
DEBIAN_MIRROR=http://deb.debian.org/debian
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
DEPS_VERSION=2   # bump when the layout of .deps/ changes

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEPS=$ROOT/.deps
APTDIR=$DEPS/apt
PREFIX=$DEPS/prefix
WRAPPER=$DEPS/bin/criu
STAMP=$DEPS/stamp

say() { echo "deps: $*"; }
die() {
    echo "deps: error: $*" >&2
    exit 1
}

stamp_key() {
    { printf '%s\n' "${PACKAGES[@]}" "${SERVICES[@]}" "${CRIU_SUITES[@]}";
      echo "criu>=$CRIU_MIN v$DEPS_VERSION"; } | sha256sum | cut -c1-16
}

missing_packages() {
    local p status
    for p in "${PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
        [ "$status" = "install ok installed" ] || echo "$p"
    done
}

# "4.2.1" from the first line of `criu --version` output ("Version: 4.2.1").
criu_version() {
    "$WRAPPER" --version 2>/dev/null | sed -n 's/^Version: *\([0-9][0-9.]*\).*/\1/p' | head -n1
}

version_ok() { [ -n "$1" ] && dpkg --compare-versions "$1" ge "$CRIU_MIN"; }

# ---- Fast path ----------------------------------------------------------------
KEY=$(stamp_key)
if [ -f "$STAMP" ] && [ -z "$(missing_packages)" ] && [ -x "$WRAPPER" ]; then
    v=$(criu_version || true)
    if version_ok "$v" && [ "$(cat "$STAMP")" = "$KEY criu-$v" ]; then
        say "all dependencies already installed (criu $v at .deps/bin/criu); nothing to do"
        exit 0
    fi
fi

[ "$(id -u)" = 0 ] || die "must run as root (apt-get install, criu check); run: sudo make deps"
if ! command -v apt-get >/dev/null || ! command -v dpkg >/dev/null; then
    die "apt-get/dpkg not found: DistriProc's setup needs Debian 12 (or a Debian-based system)"
fi
[ "$(dpkg --print-architecture)" = amd64 ] \
    || die "architecture $(dpkg --print-architecture) is not supported (the CRIU prefix is amd64)"

# ---- 1. Debian packages -------------------------------------------------------
install_packages() {
    local missing
    mapfile -t missing < <(missing_packages)
    [ "${#missing[@]}" -eq 0 ] && return 0
    say "installing Debian packages: ${missing[*]}"
    # Keep package scripts from starting services while we install; remove our
    # policy file again (even on failure) if there was none before.
    local policy=/usr/sbin/policy-rc.d own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        own_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq || die "apt-get update failed (network? apt sources?); fix apt, then rerun make deps"
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed; see the apt output above, fix it, rerun make deps"
    if [ "$own_policy" = 1 ]; then
        rm -f "$policy"
        trap - EXIT
    fi
    mapfile -t missing < <(missing_packages)
    [ "${#missing[@]}" -eq 0 ] || die "still not installed after apt-get install: ${missing[*]}"
}

# The packaged services must not keep running: tests start their own instances on
# their own ports, and a system redis/nginx would hold 6379/80.
quiet_services() {
    local s
    for s in "${SERVICES[@]}"; do
        [ -e "/etc/init.d/$s" ] || [ -e "/lib/systemd/system/$s.service" ] || continue
        if [ -d /run/systemd/system ]; then
            systemctl disable --now "$s" >/dev/null 2>&1 || true
        else
            update-rc.d "$s" disable >/dev/null 2>&1 || true
            if service "$s" status >/dev/null 2>&1; then
                say "stopping the packaged $s service (tests start their own)"
                service "$s" stop >/dev/null 2>&1 || die "could not stop the $s service; stop it (service $s stop), then rerun"
            fi
        fi
    done
}

install_packages
quiet_services

# ---- 2. CRIU into .deps/prefix ----------------------------------------------
apt_private() { APT_CONFIG=$APTDIR/apt.conf "$@"; }

setup_private_apt() {
    mkdir -p "$APTDIR"/etc/sources.list.d "$APTDIR"/etc/preferences.d "$APTDIR"/lists/partial \
        "$APTDIR"/cache/archives/partial "$APTDIR"/debs
    : >"$APTDIR/etc/preferences"
    [ -f "$APTDIR/status" ] || : >"$APTDIR/status"
    [ -f "$KEYRING" ] || die "$KEYRING missing; install debian-archive-keyring"
    local s
    for s in "${CRIU_SUITES[@]}"; do
        echo "deb [signed-by=$KEYRING] $DEBIAN_MIRROR $s main"
    done >"$APTDIR/etc/sources.list"
    # An empty status file: apt resolves as if nothing is installed, so the
    # whole library closure comes from the newer suite and matches criu.
    cat >"$APTDIR/apt.conf" <<EOF
Dir::State "$APTDIR";
Dir::State::Lists "$APTDIR/lists";
Dir::State::status "$APTDIR/status";
Dir::Cache "$APTDIR/cache";
Dir::Cache::Archives "$APTDIR/cache/archives";
Dir::Etc::SourceList "$APTDIR/etc/sources.list";
Dir::Etc::SourceParts "$APTDIR/etc/sources.list.d";
Dir::Etc::Preferences "$APTDIR/etc/preferences";
Dir::Etc::PreferencesParts "$APTDIR/etc/preferences.d";
APT::Architecture "amd64";
APT::Architectures { "amd64"; };
APT::Sandbox::User "root";
EOF
}

# Newest criu version the private sources offer.
newest_criu() {
    apt_private apt-cache madison criu 2>/dev/null | awk -F'|' '{gsub(/ /,"",$2); print $2}' \
        | { best=""; while read -r v; do
                if [ -z "$best" ] || dpkg --compare-versions "$v" gt "$best"; then best=$v; fi
            done; echo "$best"; }
}

# criu and its Depends/PreDepends closure (no recommends; virtual <...> skipped).
criu_closure() {
    apt_private apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
        --no-breaks --no-replaces --no-enhances "criu=$1" \
        | grep -v '^ ' | grep -v '^<' | sed 's/:amd64$//' | sort -u
}

build_prefix() {
    setup_private_apt
    say "fetching package lists of Debian ${CRIU_SUITES[*]} (private apt config in .deps/apt)"
    apt_private apt-get update -qq >/dev/null \
        || die "private apt-get update failed (APT_CONFIG=$APTDIR/apt.conf); check network access to $DEBIAN_MIRROR and $KEYRING, then rerun make deps"
    local ver
    ver=$(newest_criu)
    [ -n "$ver" ] || die "Debian ${CRIU_SUITES[*]} offer no criu package; cannot provide CRIU >= $CRIU_MIN"
    dpkg --compare-versions "$ver" ge "$CRIU_MIN" \
        || die "the newest criu in Debian ${CRIU_SUITES[*]} is $ver, but DistriProc needs >= $CRIU_MIN"
    local pkgs
    mapfile -t pkgs < <(criu_closure "$ver")
    [ "${#pkgs[@]}" -gt 1 ] || die "could not resolve the dependencies of criu $ver"
    say "criu $ver with ${#pkgs[@]} packages: ${pkgs[*]}"

    local debs=$APTDIR/debs
    rm -f "$debs"/*.deb
    local args=() p
    for p in "${pkgs[@]}"; do
        if [ "$p" = criu ]; then args+=("criu=$ver"); else args+=("$p"); fi
    done
    (cd "$debs" && apt_private apt-get download -qq "${args[@]}" >/dev/null) \
        || die "apt-get download of criu's packages failed; check the network, then rerun make deps"

    # Unpack into a fresh directory and swap it in, so a failed run never leaves
    # a half-built prefix behind a working-looking wrapper.
    local tmp=$DEPS/prefix.new
    rm -rf "$tmp"
    mkdir -p "$tmp"
    local deb
    for deb in "$debs"/*.deb; do
        dpkg -x "$deb" "$tmp" || die "dpkg -x $deb failed"
    done
    printf '%s\n' "$ver" >"$tmp/CRIU_VERSION"
    (cd "$debs" && ls -1 -- *.deb) >"$tmp/PACKAGES"
    rm -rf "$PREFIX"
    mv "$tmp" "$PREFIX"
}

write_wrapper() {
    local ld
    for ld in usr/lib64/ld-linux-x86-64.so.2 lib64/ld-linux-x86-64.so.2 \
        usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 lib/x86_64-linux-gnu/ld-linux-x86-64.so.2; do
        [ -e "$PREFIX/$ld" ] && break
        ld=""
    done
    [ -n "$ld" ] || die "no dynamic loader (ld-linux-x86-64.so.2) in .deps/prefix; remove .deps and rerun make deps"
    local bin
    for bin in usr/sbin/criu sbin/criu usr/bin/criu; do
        [ -x "$PREFIX/$bin" ] && break
        bin=""
    done
    [ -n "$bin" ] || die "no criu binary in .deps/prefix; remove .deps and rerun make deps"
    mkdir -p "$DEPS/bin"
    # The wrapper finds the prefix relative to itself, so the checkout may move.
    cat >"$WRAPPER.new" <<EOF
#!/bin/sh
# Generated by scripts/deps.sh: runs the CRIU of .deps/prefix (Debian $(cat "$PREFIX/CRIU_VERSION"))
# through the prefix's own dynamic loader and libraries; the system's stay untouched.
# Child processes criu starts (ip, iptables-restore) use the system's libraries.
p=\$(dirname "\$(readlink -f "\$0")")/../prefix
exec "\$p/$ld" --library-path "\$p/usr/lib/x86_64-linux-gnu:\$p/lib/x86_64-linux-gnu:\$p/usr/lib64" \\
    --argv0 criu "\$p/$bin" "\$@"
EOF
    chmod 755 "$WRAPPER.new"
    mv "$WRAPPER.new" "$WRAPPER"
}

# A real dump and restore of a tiny process tree: a session leader in its own pid
# namespace, the way DistriProc's workloads run.
verify_criu() {
    local v
    v=$(criu_version || true)
    if ! version_ok "$v"; then
        "$WRAPPER" --version >&2 || true
        die "$WRAPPER does not run or reports version '${v:-?}' (< $CRIU_MIN); remove .deps and rerun make deps"
    fi
    local out
    if ! out=$(timeout -s KILL 60 "$WRAPPER" check 2>&1); then
        echo "$out" | tail -n 20 >&2
        die "'criu check' failed (output above): the kernel lacks a feature CRIU needs, or criu is not run as root"
    fi

    # Lazy restore (the heart of DistriProc) needs userfaultfd with fork events.
    if ! out=$(timeout -s KILL 30 "$WRAPPER" check --feature uffd-noncoop 2>&1); then
        echo "$out" | tail -n 5 >&2
        die "the kernel lacks non-cooperative userfaultfd ('criu check --feature uffd-noncoop' failed); DistriProc's lazy restore needs it (Linux >= 4.11 with CONFIG_USERFAULTFD, vm.unprivileged_userfaultfd irrelevant as root)"
    fi

    local work pid="" rpid="" ok=0
    work=$(mktemp -d /tmp/dp-deps-criu.XXXXXX)
    # shellcheck disable=SC2064
    trap "verify_cleanup '$work'" EXIT
    mkdir -p "$work/img"
    # No --kill-child: CRIU restores the parent-death signal, which would kill
    # the restored tree as soon as the detached criu exits.
    unshare --pid --fork setsid sh -c 'while :; do sleep 0.1; done' \
        </dev/null >/dev/null 2>&1 &
    local outer=$!
    echo "$outer" >"$work/outer.pid"

    for _ in $(seq 50); do
        pid=$(pgrep -P "$outer" 2>/dev/null | head -n1 || true)
        [ -n "$pid" ] && break
        sleep 0.1
    done
    [ -n "$pid" ] || die "criu self-test: could not start the test process (unshare --pid --fork setsid)"
    echo "$pid" >"$work/inner.pid"
    sleep 0.3
    if ! timeout -s KILL 60 "$WRAPPER" dump --tree "$pid" --images-dir "$work/img" \
        -o dump.log -v4 >/dev/null 2>&1; then
        tail -n 20 "$work/img/dump.log" >&2 || true
        die "criu self-test: 'criu dump' of a test process failed (last lines of $work/img/dump.log above)"
    fi
    # The dump killed the test tree: forget its pids so cleanup never signals a
    # process that later reuses one of them.
    wait "$outer" 2>/dev/null || true
    rm -f "$work/inner.pid" "$work/outer.pid"
    if ! timeout -s KILL 60 "$WRAPPER" restore --images-dir "$work/img" --restore-detached \
        --pidfile "$work/restored.pid" -o restore.log -v4 >/dev/null 2>&1; then
        tail -n 20 "$work/img/restore.log" >&2 || true
        die "criu self-test: 'criu restore' of the dumped test process failed (last lines of $work/img/restore.log above)"
    fi
    rpid=$(cat "$work/restored.pid" 2>/dev/null || true)
    echo "$rpid" >"$work/restored.pid.copy"
    # Alive, not a zombie, and still the loop (a second apart, to see it run on).
    local st
    for _ in 1 2; do
        sleep 0.5
        st=$(ps -o stat=,comm= -p "$rpid" 2>/dev/null || true)
        case "$st" in Z* | "") ok=0; break ;; *" sh") ok=1 ;; *) ok=0; break ;; esac
    done
    [ "$ok" = 1 ] || die "criu self-test: the restored process (pid ${rpid:-?}) is not running after restore (state: '${st:-gone}'); see $work/img/restore.log"
    verify_cleanup "$work"
    trap - EXIT
    say "criu $v works: check passed, dump + restore of a test process succeeded"
}

# Kills only the test processes this script started (by the pids it recorded).
verify_cleanup() {
    local work=$1 f p
    for f in restored.pid.copy inner.pid outer.pid; do
        p=$(cat "$work/$f" 2>/dev/null || true)
        if [ -n "$p" ]; then kill -KILL "$p" 2>/dev/null || true; fi
    done
    # Keep the logs of a failed run for the user; remove a successful one's.
    if [ "${ok:-0}" = 1 ]; then rm -rf "$work"; fi
}

if [ ! -x "$WRAPPER" ] || [ ! -f "$PREFIX/CRIU_VERSION" ] || ! version_ok "$(criu_version || true)"; then
    build_prefix
    write_wrapper
fi
verify_criu

# runc drives our criu through `criu swrk` (RPC over an inherited socket); the
# integration tests (tests/integration/test_runc.py) check a real checkpoint
# and lazy restore; here only that the packaged runc is new enough.
verify_runc() {
    local v
    v=$(runc --version 2>/dev/null | sed -n 's/^runc version \([0-9][0-9.]*\).*/\1/p' | head -n1)
    [ -n "$v" ] && dpkg --compare-versions "$v" ge "$RUNC_MIN" \
        || die "runc ${v:-not found} is older than $RUNC_MIN (or missing); DistriProc's container commands need runc >= $RUNC_MIN (apt-get install runc on Debian 12), or set DISTRIPROC_RUNC"
    say "runc $v found"
}
verify_runc
echo "$KEY criu-$(criu_version)" >"$STAMP"
say "done: packages installed, criu $(criu_version) at .deps/bin/criu (set DISTRIPROC_CRIU to override)"
