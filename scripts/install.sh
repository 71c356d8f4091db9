#!/usr/bin/env bash
# install: copies a built DistriProc into DESTDIR/PREFIX and records every file
# and every directory it created in an install manifest, so that uninstall
# removes exactly that and nothing else.
#
#   scripts/install.sh install   (make install:   PREFIX, DESTDIR, BUILD, CRIU_DIR, SYSTEMD_UNIT_DIR)
#   scripts/install.sh uninstall (make uninstall: PREFIX, DESTDIR)
#
# Layout under PREFIX:
#   bin/distriproc
#   lib/distriproc/bin/criu, lib/distriproc/prefix/   CRIU (>= 4.2) of `make deps`, copied
#       from CRIU_DIR (default .deps); the binary finds it relative to itself (lib/criu.c)
#   lib/distriproc/install-manifest                   what this script installed
#   share/man/man1/distriproc*.1                      generated from --help (scripts/gen-docs.py)
#   share/bash-completion/completions/distriproc      the same
#   share/doc/distriproc/                             README.md, docs/*.md
#   SYSTEMD_UNIT_DIR (default PREFIX/lib/systemd/system): distriproc-serve@.service,
#       distriproc-lazy-pages@.service, with PREFIX/bin filled in
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
BUILD=${BUILD:-build}
CRIU_DIR=${CRIU_DIR:-$ROOT/.deps}
SYSTEMD_UNIT_DIR=${SYSTEMD_UNIT_DIR:-$PREFIX/lib/systemd/system}
MANIFEST_REL=lib/distriproc/install-manifest

# Every failure says what failed and what to do; nothing half-done stays claimed.
die() {
    echo "install: error: $*" >&2
    exit 1
}

case "$PREFIX" in /*) ;; *) die "PREFIX must be an absolute path (got '$PREFIX')" ;; esac
case "$SYSTEMD_UNIT_DIR" in /*) ;; *) die "SYSTEMD_UNIT_DIR must be an absolute path (got '$SYSTEMD_UNIT_DIR')" ;; esac
if [ -n "$DESTDIR" ]; then
    case "$DESTDIR" in /*) ;; *) DESTDIR=$(pwd)/$DESTDIR ;; esac
fi
MANIFEST=$DESTDIR$PREFIX/$MANIFEST_REL

# ---- Install -----------------------------------------------------------------
# Manifest lines: "d PATH" for a directory this run created, "f PATH" for a
# file or symlink, PATH without DESTDIR. Written to a temporary file first and
# moved into place last, so a failed install leaves no manifest claiming it worked.
entries=()

# Creates DIR (and missing parents), recording only the ones that did not exist.
mkdirs() {
    local d=$1 missing=()
    while [ ! -d "$DESTDIR$d" ]; do
        missing=("$d" "${missing[@]}")
        d=$(dirname "$d")
    done
    local m
    for m in "${missing[@]}"; do
        mkdir -m 755 "$DESTDIR$m"
        entries+=("d $m")
    done
}

# Installs one file SRC as DST (a path under PREFIX, without DESTDIR) with MODE.
put() {
    local src=$1 dst=$2 mode=$3
    mkdirs "$(dirname "$dst")"
    install -m "$mode" "$src" "$DESTDIR$dst"
    entries+=("f $dst")
}

# Copies the CRIU tree (wrapper + prefix) file by file, keeping symlinks as
# symlinks (the prefix's libraries are symlink chains).
put_criu() {
    local wrapper=$CRIU_DIR/bin/criu prefix=$CRIU_DIR/prefix
    [ -x "$wrapper" ] && [ -f "$prefix/CRIU_VERSION" ] \
        || die "no CRIU at $CRIU_DIR (bin/criu and prefix/); run 'make deps' first (it builds CRIU >= 4.2 there), or set CRIU_DIR"
    local dst=$PREFIX/lib/distriproc
    put "$wrapper" "$dst/bin/criu" 755
    local rel
    while IFS= read -r -d '' rel; do
        rel=${rel#./}
        if [ -d "$prefix/$rel" ] && [ ! -L "$prefix/$rel" ]; then
            mkdirs "$dst/prefix/$rel"
        else
            mkdirs "$(dirname "$dst/prefix/$rel")"
            cp -P --preserve=mode,timestamps "$prefix/$rel" "$DESTDIR$dst/prefix/$rel"
            entries+=("f $dst/prefix/$rel")
        fi
    done < <(cd "$prefix" && find . -mindepth 1 -print0 | sort -z)
}

# Refuses to install over an install (its manifest would be lost), then puts
# each piece and writes the manifest last.
do_install() {
    local build=$BUILD
    case "$build" in /*) ;; *) build=$ROOT/$build ;; esac
    local bin=$build/distriproc man=$build/man comp=$build/completion/distriproc
    [ -x "$bin" ] || die "$bin is missing; run 'make' first"
    [ -f "$man/distriproc.1" ] && [ -f "$comp" ] || die "$man or $comp is missing; run 'make man' first"
    [ ! -e "$MANIFEST" ] || die "$MANIFEST exists: DistriProc is installed there already; run 'make uninstall' (same PREFIX and DESTDIR) first"
    if [ -n "$DESTDIR" ]; then mkdir -p "$DESTDIR"; fi

    put "$bin" "$PREFIX/bin/distriproc" 755
    put_criu
    local f
    for f in "$man"/*.1; do
        put "$f" "$PREFIX/share/man/man1/$(basename "$f")" 644
    done
    put "$comp" "$PREFIX/share/bash-completion/completions/distriproc" 644
    put "$ROOT/README.md" "$PREFIX/share/doc/distriproc/README.md" 644
    for f in "$ROOT"/docs/*.md; do
        put "$f" "$PREFIX/share/doc/distriproc/docs/$(basename "$f")" 644
    done
    local tmp
    tmp=$(mktemp)
    for f in "$ROOT"/systemd/*.service.in; do
        sed "s#@BINDIR@#$PREFIX/bin#g" "$f" >"$tmp"
        local name
        name=$(basename "$f" .in)
        put "$tmp" "$SYSTEMD_UNIT_DIR/$name" 644
    done
    rm -f "$tmp"

    mkdirs "$(dirname "$PREFIX/$MANIFEST_REL")"
    entries+=("f $PREFIX/$MANIFEST_REL")
    printf '%s\n' "${entries[@]}" >"$MANIFEST.new"
    mv "$MANIFEST.new" "$MANIFEST"
    echo "install: $(grep -c '^f ' "$MANIFEST") files into $DESTDIR$PREFIX (manifest: $PREFIX/$MANIFEST_REL)"
}

# ---- Uninstall ---------------------------------------------------------------

# Removes what the manifest lists and nothing else (entries outside PREFIX and
# the unit directory are refused: a tampered manifest must not delete elsewhere).
do_uninstall() {
    [ -f "$MANIFEST" ] || die "no install manifest at $MANIFEST: nothing installed with this PREFIX/DESTDIR (PREFIX=$PREFIX DESTDIR=${DESTDIR:-none})"
    local kind path line nfiles=0 ndirs=0 lines
    mapfile -t lines <"$MANIFEST"   # read it whole: it lists itself
    # Check every entry before removing anything, so a refusal removes nothing.
    for line in "${lines[@]}"; do
        kind=${line%% *}
        path=${line#* }
        case "$kind" in f | d) ;; *) die "bad manifest line '$line' in $MANIFEST" ;; esac
        # Files lie below PREFIX or the unit directory; created directories may
        # also be their parents (install made /opt/dp for PREFIX=/opt/dp/x).
        case "$kind:$path" in
        ?:"$PREFIX"/* | ?:"$SYSTEMD_UNIT_DIR"/*) ;;
        d:*) case "$PREFIX/ $SYSTEMD_UNIT_DIR/" in "$path"/* | *" $path"/*) ;; *) die "manifest directory '$path' is neither below nor above PREFIX ($PREFIX) and SYSTEMD_UNIT_DIR ($SYSTEMD_UNIT_DIR); pass the SYSTEMD_UNIT_DIR= the install used; nothing removed" ;; esac ;;
        *) die "manifest entry '$path' is outside PREFIX ($PREFIX) and SYSTEMD_UNIT_DIR ($SYSTEMD_UNIT_DIR); pass the SYSTEMD_UNIT_DIR= the install used; nothing removed" ;;
        esac
    done
    # Files first, then the directories this install created, deepest first;
    # a directory that is no longer empty (someone else's files) stays.
    for line in "${lines[@]}"; do
        path=${line#f }
        [ "$path" != "$line" ] || continue
        if [ -e "$DESTDIR$path" ] || [ -L "$DESTDIR$path" ]; then
            rm -f -- "$DESTDIR$path"
            nfiles=$((nfiles + 1))
        fi
    done
    while read -r path; do
        if rmdir -- "$DESTDIR$path" 2>/dev/null; then ndirs=$((ndirs + 1)); fi
    done < <(printf '%s\n' "${lines[@]}" | sed -n 's/^d //p' | sort -r)
    echo "uninstall: removed $nfiles files and $ndirs directories from $DESTDIR$PREFIX"
}

case "${1:-}" in
install) do_install ;;
uninstall) do_uninstall ;;
*) die "usage: scripts/install.sh install|uninstall (make install / make uninstall)" ;;
esac
