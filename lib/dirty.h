/* dirty: detect pages modified at the destination without write-protect or
 * soft-dirty (CRIU's userfaultfd has neither): a 128-bit content hash of a
 * page is taken when the daemon installs it; at eviction time (all threads
 * stopped) the page's current content is hashed again and compared.
 *
 * The hash (dp_page_hash) is ours: 8 lanes of the xxHash64 round over the
 * 4 KiB page (64-byte stripes), each lane folded into two 64-bit outputs
 * with different multipliers and a final avalanche, keyed with a random
 * seed per daemon. Measured here (tests/helpers/hashbench, 32 MiB of random
 * pages): ~1.0 us per 4 KiB page (~3.9 GB/s) against ~8.4 us for BLAKE2b-128
 * (libsodium crypto_generichash, 16-byte output): 0.27 ms vs 2.2 ms for a
 * 256-page eviction batch, time during which the process is stopped.
 * Not cryptographic: the 512-bit lane state makes an accidental collision
 * between a page and its modified version about 2^-64 per comparison (at a
 * million comparisons a second, ~2e-6 per year). The process is the only
 * party that could craft a collision, and it would only hide its own write
 * from its own memory; the per-daemon seed makes even that impractical.
 *
 * Pure: no I/O. Page contents are read by the caller (dp_inject_read_pages).
 */
#ifndef DP_DIRTY_H
#define DP_DIRTY_H

#include <stddef.h>
#include <stdint.h>

struct dp_page_hash {
    uint64_t lo, hi;
};

/* Hash of one 4 KiB page under seed. */
struct dp_page_hash dp_page_hash(uint64_t seed, const void *page);
/* Hash of len bytes (any length), for tests and other uses. */
struct dp_page_hash dp_hash_bytes(uint64_t seed, const void *data, size_t len);

static inline int dp_page_hash_eq(struct dp_page_hash a, struct dp_page_hash b)
{
    return a.lo == b.lo && a.hi == b.hi;
}

/* n pages laid out back to back in buf; dirty[i] = 1 when page i no longer
 * hashes to installed[i]. Returns the number of dirty pages. Optional out:
 * now[i] = the new hash (what the page server holds once it is written back). */
size_t dp_dirty_check(uint64_t seed, const uint8_t *buf, size_t n, const struct dp_page_hash *installed,
                      uint8_t *dirty, struct dp_page_hash *now);

#endif
