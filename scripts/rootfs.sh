#!/usr/bin/env bash
# rootfs: builds the container root filesystem of DistriProc's container workloads
# (PostgreSQL 15, NGINX, Redis) reproducibly from Debian 12 packages, with mmdebstrap.
#
#   scripts/rootfs.sh            build it unless it is already there (idempotent)
#   scripts/rootfs.sh --path     print the directory of the built rootfs (exit 1 if none)
#   scripts/rootfs.sh --help
#
# What is pinned: the suite (bookworm), the mirror (only Debian's bookworm main, no
# security or updates suites, so versions change only at a point release), the
# variant (apt: Essential + apt), the package list, SOURCE_DATE_EPOCH (file times),
# and this script's version. Their hash is the cache key: the result lives in
#   $DISTRIPROC_ROOTFS_CACHE/<key>/        (default: .deps/rootfs/<key>)
#     root/             the tree, owned by host root (root containers)
#     root-userns/      the same tree with every uid/gid shifted by USERNS_BASE
#                       (user-namespaced containers: container root = host uid USERNS_BASE)
#     packages.txt      package=version of everything installed (what was resolved)
#     KEY               the key's inputs
# Both lab hosts run on this one machine, so they share the path.
# Set DISTRIPROC_ROOTFS_SNAPSHOT=20250101T000000Z to build from snapshot.debian.org
# instead (exact package versions; part of the key).
set -euo pipefail

SCRIPT_VERSION=3          # bump when what the script does to the tree changes
SUITE=bookworm
VARIANT=apt
MIRROR=http://deb.debian.org/debian
SOURCE_DATE_EPOCH=1700000000   # 2023-11-14: fixed file times inside the tree
USERNS_BASE=100000             # host uid/gid of the container's root in root-userns/
USERNS_SIZE=65536
# Workloads, and what the tests run inside: psql, redis-cli, pgrep.
PACKAGES=(postgresql-15 postgresql-client-15 nginx-light redis-server redis-tools procps)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${DISTRIPROC_ROOTFS_CACHE:-$ROOT/.deps/rootfs}
SNAPSHOT=${DISTRIPROC_ROOTFS_SNAPSHOT:-}
if [ -n "$SNAPSHOT" ]; then
    MIRROR=http://snapshot.debian.org/archive/debian/$SNAPSHOT
fi

say() { echo "rootfs: $*"; }
die() {
    echo "rootfs: error: $*" >&2
    exit 1
}

usage() {
    sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

key_text() {
    printf 'version=%s\nsuite=%s\nvariant=%s\nmirror=%s\nepoch=%s\nuserns=%s:%s\npackages=%s\n' \
        "$SCRIPT_VERSION" "$SUITE" "$VARIANT" "$MIRROR" "$SOURCE_DATE_EPOCH" \
        "$USERNS_BASE" "$USERNS_SIZE" "${PACKAGES[*]}"
}
KEY=$(key_text | sha256sum | cut -c1-16)
DEST=$CACHE/$KEY

complete() {
    [ -f "$DEST/KEY" ] && [ -x "$DEST/root/usr/lib/postgresql/15/bin/postgres" ] \
        && [ -x "$DEST/root-userns/usr/sbin/nginx" ] && [ -f "$DEST/packages.txt" ]
}

case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    --path)
        complete || { echo "rootfs: not built (key $KEY); run: make rootfs" >&2; exit 1; }
        echo "$DEST"
        exit 0
        ;;
    "") ;;
    *) die "unknown argument '$1' (see --help)" ;;
esac

if complete; then
    say "rootfs $KEY already built at $DEST; nothing to do"
    exit 0
fi

[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap --mode=root, chown); run: sudo make rootfs"
command -v mmdebstrap >/dev/null || die "mmdebstrap not found; install it (make deps, or apt-get install mmdebstrap)"

# ---- Build into a temporary directory, then rename: never a half tree at $DEST ----
mkdir -p "$CACHE"
TMP=$(mktemp -d "$CACHE/.build-$KEY.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
start=$(date +%s)
say "building $SUITE ($VARIANT) with ${PACKAGES[*]} from $MIRROR (key $KEY)"

# --mode=root: we are root; no uid mapping needed for the build itself.
# The hook drops what differs between builds or is of no use in a container:
# (docs, manuals and translations are not unpacked at all:
# --dpkgopt path-exclude) the snakeoil TLS key and certificate ssl-cert makes
# at random at install (nothing here uses TLS), the main cluster the postgresql package creates at install (tests run initdb
# into their own data directories), apt lists and caches, logs.
export SOURCE_DATE_EPOCH
if ! mmdebstrap --mode=root --variant="$VARIANT" --format=directory \
    --include="$(IFS=,; echo "${PACKAGES[*]}")" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook='chroot "$1" sh -c "pg_dropcluster 15 main 2>/dev/null || true"' \
    --customize-hook='rm -rf "$1"/var/lib/postgresql/15 "$1"/etc/postgresql/15 "$1"/var/log/postgresql/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/*.log "$1"/var/log/apt/*' \
    --customize-hook='rm -f "$1"/etc/ssl/private/ssl-cert-snakeoil.key "$1"/etc/ssl/certs/ssl-cert-snakeoil.pem' \
    --customize-hook='find "$1"/etc/ssl/certs -xtype l -delete' \
    --customize-hook='chroot "$1" dpkg-query -W -f="\${Package}=\${Version}\n" > "$1"/packages.txt' \
    "$SUITE" "$TMP/root" "deb $MIRROR $SUITE main" >"$TMP/mmdebstrap.log" 2>&1; then
    tail -n 30 "$TMP/mmdebstrap.log" >&2
    die "mmdebstrap failed (last lines above); check network access to $MIRROR, then rerun make rootfs"
fi
mv "$TMP/root/packages.txt" "$TMP/packages.txt"
# Files made at install time (maintainer scripts, ldconfig, ...) carry the
# build's clock: clamp every time to SOURCE_DATE_EPOCH, as reproducible builds
# do, so that two builds of one key differ in nothing but ctime/atime.
find "$TMP/root" -newermt "@$SOURCE_DATE_EPOCH" -print0 | xargs -0 -r touch -h -d "@$SOURCE_DATE_EPOCH"

# ---- The user-namespaced copy: every owner shifted by USERNS_BASE ------------------
# chown clears setuid/setgid bits, so each mode is put back after the chown.
# File capabilities (security.capability) are none in this package set.
cp -a "$TMP/root" "$TMP/root-userns"
python3 - "$TMP/root-userns" "$USERNS_BASE" "$USERNS_SIZE" <<'EOF' || die "shifting the owners of root-userns failed"
import os, stat, sys
top, base, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
seen = set()  # hard links: shift each inode once
def shift(path):
    st = os.lstat(path)
    if (st.st_dev, st.st_ino) in seen:
        return
    seen.add((st.st_dev, st.st_ino))
    if st.st_uid >= size or st.st_gid >= size:
        sys.exit(f"{path}: owner {st.st_uid}:{st.st_gid} outside the mapped range 0..{size - 1}")
    os.lchown(path, base + st.st_uid, base + st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(path, stat.S_IMODE(st.st_mode))
shift(top)
for d, dirs, files in os.walk(top):
    for n in dirs + files:
        shift(os.path.join(d, n))
EOF

key_text >"$TMP/KEY"
rm -rf "$DEST"
mv "$TMP" "$DEST"
trap - EXIT
chmod 755 "$DEST"
say "built $DEST in $(($(date +%s) - start)) s ($(du -sh "$DEST/root" | cut -f1) per tree, $(wc -l <"$DEST/packages.txt") packages)"
