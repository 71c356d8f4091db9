/* dirty: page content hashes for modified-page detection. See dirty.h. */
#include "dirty.h"

#include <string.h>

#define P1 0x9E3779B185EBCA87ULL
#define P2 0xC2B2AE3D27D4EB4FULL
#define P3 0x165667B19E3779F9ULL
#define P4 0x85EBCA77C2B2AE63ULL
#define P5 0x27D4EB2F165667C5ULL

static inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint64_t round64(uint64_t acc, uint64_t w)
{
    acc += w * P2;
    acc = rotl(acc, 31);
    return acc * P1;
}

static inline uint64_t avalanche(uint64_t h)
{
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    h ^= h >> 32;
    return h;
}

static struct dp_page_hash finish(const uint64_t acc[8], uint64_t len, uint64_t seed)
{
    uint64_t a = len ^ seed, b = (len * P5) ^ rotl(seed, 29);
    for (int i = 0; i < 8; i++) {
        a = (a ^ round64(0, acc[i])) * P1 + P4;
        b = rotl(b ^ (acc[i] * P3), 27) * P2 + P5;
    }
    struct dp_page_hash h = {avalanche(a), avalanche(b ^ a)};
    return h;
}

static void init(uint64_t acc[8], uint64_t seed)
{
    for (int i = 0; i < 8; i++)
        acc[i] = seed + P1 * (uint64_t)(i + 1) + P2;
}

struct dp_page_hash dp_hash_bytes(uint64_t seed, const void *data, size_t len)
{
    const uint8_t *p = data;
    uint64_t acc[8];
    init(acc, seed);
    size_t n = len;
    while (n >= 64) {
        for (int i = 0; i < 8; i++)
            acc[i] = round64(acc[i], load64(p + 8 * i));
        p += 64;
        n -= 64;
    }
    /* tail: whole words then the last bytes, padded with their count */
    int lane = 0;
    while (n >= 8) {
        acc[lane] = round64(acc[lane], load64(p));
        lane++;
        p += 8;
        n -= 8;
    }
    if (n) {
        uint8_t last[8] = {0};
        memcpy(last, p, n);
        last[7] = (uint8_t)(0x80 | n);
        acc[lane] = round64(acc[lane], load64(last));
    }
    return finish(acc, len, seed);
}

struct dp_page_hash dp_page_hash(uint64_t seed, const void *page)
{
    const uint8_t *p = page;
    uint64_t acc[8];
    init(acc, seed);
    for (size_t s = 0; s < 4096; s += 64)
        for (int i = 0; i < 8; i++)
            acc[i] = round64(acc[i], load64(p + s + 8 * i));
    return finish(acc, 4096, seed);
}

size_t dp_dirty_check(uint64_t seed, const uint8_t *buf, size_t n, const struct dp_page_hash *installed,
                      uint8_t *dirty, struct dp_page_hash *now)
{
    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        struct dp_page_hash h = dp_page_hash(seed, buf + i * 4096);
        dirty[i] = !dp_page_hash_eq(h, installed[i]);
        count += dirty[i];
        if (now)
            now[i] = h;
    }
    return count;
}
