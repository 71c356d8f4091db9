#!/usr/bin/env bash
# Regenerates the fuzz seed corpora in fuzz/seeds/<target>/ (committed):
# fuzz/gen_seeds.c writes valid inputs from DistriProc's own encoders (the
# protocol messages, a client session (plain and sealed), key files, a lazy-pages socket
# conversation, a write-back log, a hot set); fuzz_image's seeds are the
# small CRIU images of tests/fixtures/images-tinymem (made by a real CRIU
# dump: tests/fixtures/make-tinymem-images.sh). fuzz_container's seeds are
# hand-written JSON and stay as they are. Usage: scripts/gen-fuzz-seeds.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
[ "${1:-}" = "--help" ] && { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0; }
make --no-print-directory -j2 build/libdistriproc.a >/dev/null
mkdir -p build/fuzz
${CC:-gcc} -std=gnu11 -Wall -Wextra -Werror -O1 -g -D_GNU_SOURCE -Ilib fuzz/gen_seeds.c build/libdistriproc.a \
    -lsodium -ljansson -lcrypto -lpthread -lm -o build/fuzz/gen_seeds
# regress-* seeds are inputs that once found a bug: kept, never regenerated
for t in fuzz_client fuzz_conn fuzz_proto fuzz_chan fuzz_key fuzz_lazysock fuzz_overlay fuzz_hotset; do
    find "fuzz/seeds/$t" -type f ! -name 'regress-*' -delete 2>/dev/null || true
done
build/fuzz/gen_seeds fuzz/seeds
rm -rf fuzz/seeds/fuzz_image && mkdir -p fuzz/seeds/fuzz_image
for f in inventory pstree mm-1 pagemap-1; do
    cp tests/fixtures/images-tinymem/$f.img fuzz/seeds/fuzz_image/$f.img
done
du -sh fuzz/seeds
