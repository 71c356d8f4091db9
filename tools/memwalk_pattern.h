/* memwalk_pattern: the content every memwalk page must hold, and its check.
 *
 * A page's content is a pure function of (seed, page index, generation): a
 * splitmix64 word stream keyed by the three. memwalk keeps the generation of
 * every page in a separate array, so the expected bytes of any page can always
 * be recomputed and compared with what the page really holds.
 *
 * Header-only and free of I/O so memwalk and the unit tests share one copy. */
#ifndef MEMWALK_PATTERN_H
#define MEMWALK_PATTERN_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MW_PAGE_SIZE 4096u
#define MW_PAGE_WORDS (MW_PAGE_SIZE / 8u)

static inline uint64_t mw_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Key of one (page, generation): distinct pages and generations give unrelated
 * streams, so a page copied to the wrong place or an old version of a page
 * (a lost write) never passes verification. */
static inline uint64_t mw_page_key(uint64_t seed, uint64_t page, uint64_t gen)
{
    return mw_mix64(mw_mix64(seed ^ 0x6d656d77616c6bULL) ^ mw_mix64(page * 0x9e3779b97f4a7c15ULL + gen));
}

/* Word i of the page: splitmix64 stream, each word independent of the others. */
static inline uint64_t mw_word(uint64_t key, uint32_t i)
{
    return mw_mix64(key + (uint64_t)(i + 1) * 0x9e3779b97f4a7c15ULL);
}

static inline void mw_fill(void *page, uint64_t seed, uint64_t index, uint64_t gen)
{
    uint64_t key = mw_page_key(seed, index, gen);
    uint8_t *p = page;
    for (uint32_t i = 0; i < MW_PAGE_WORDS; i++) {
        uint64_t w = mw_word(key, i);
        memcpy(p + (size_t)i * 8, &w, 8);
    }
}

/* First bad byte found by mw_verify. */
struct mw_mismatch {
    uint32_t offset;   /* byte offset inside the page */
    uint8_t expected;
    uint8_t got;
};

/* Compares every byte of the page with its expected content. Returns the
 * number of bytes that differ (0 = page is intact); fills *first (if not NULL)
 * with the first differing byte. */
static inline uint32_t mw_verify(const void *page, uint64_t seed, uint64_t index, uint64_t gen,
                                 struct mw_mismatch *first)
{
    uint64_t key = mw_page_key(seed, index, gen);
    const uint8_t *p = page;
    uint32_t bad = 0;
    for (uint32_t i = 0; i < MW_PAGE_WORDS; i++) {
        uint64_t want = mw_word(key, i), have;
        memcpy(&have, p + (size_t)i * 8, 8);
        if (have == want)
            continue;
        /* Slow path only for a bad word: count and locate its bad bytes. */
        uint8_t wb[8], hb[8];
        memcpy(wb, &want, 8);
        memcpy(hb, &have, 8);
        for (uint32_t b = 0; b < 8; b++) {
            if (wb[b] == hb[b])
                continue;
            if (bad == 0 && first) {
                first->offset = i * 8 + b;
                first->expected = wb[b];
                first->got = hb[b];
            }
            bad++;
        }
    }
    return bad;
}

/* xorshift64* generator for access choices: one per thread, never shared. */
static inline uint64_t mw_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545f4914f6cdd1dULL;
}

static inline uint64_t mw_rand_seed(uint64_t seed, uint64_t stream)
{
    uint64_t s = mw_mix64(seed + 0x9e3779b97f4a7c15ULL * (stream + 1));
    return s ? s : 1; /* xorshift must never hold 0 */
}

/* Uniform in [0, n) without modulo bias worth caring about (Lemire's multiply). */
static inline uint64_t mw_rand_below(uint64_t *state, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)mw_rand(state) * n) >> 64);
}

/* Uniform double in [0, 1). */
static inline double mw_rand_unit(uint64_t *state)
{
    return (double)(mw_rand(state) >> 11) * (1.0 / 9007199254740992.0);
}

/* Zipf over ranks 0..n-1 with skew s: cdf[k] = P(rank <= k), cdf[n-1] = 1.
 * Caller provides n doubles. */
static inline void mw_zipf_cdf(double *cdf, uint64_t n, double s, double (*powfn)(double, double))
{
    double sum = 0;
    for (uint64_t k = 0; k < n; k++) {
        sum += 1.0 / powfn((double)(k + 1), s);
        cdf[k] = sum;
    }
    for (uint64_t k = 0; k < n; k++)
        cdf[k] /= sum;
    cdf[n - 1] = 1.0;
}

/* Smallest rank k with cdf[k] > u (u in [0,1)): binary search. */
static inline uint64_t mw_zipf_rank(const double *cdf, uint64_t n, double u)
{
    uint64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (cdf[mid] > u)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* Fixed permutation of 0..n-1 (Fisher-Yates from seed): maps zipf ranks to
 * pages so the hot pages are scattered over the area, not packed at its start. */
static inline void mw_permutation(uint32_t *perm, uint64_t n, uint64_t seed)
{
    uint64_t st = mw_rand_seed(seed, 0xfeed);
    for (uint64_t i = 0; i < n; i++)
        perm[i] = (uint32_t)i;
    for (uint64_t i = n - 1; i > 0; i--) {
        uint64_t j = mw_rand_below(&st, i + 1);
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

/* Access patterns: "seq", "uniform", "zipf:S" (S > 0), "stride:K" (K >= 1),
 * "probe:P" (1 <= P <= 90: the first P% of the pages are a table probed at
 * random before each read of the next page of the rest, in order: a cache
 * whose values are read back in key order behind a hash-table lookup). */
enum mw_pattern_kind { MW_SEQ, MW_UNIFORM, MW_ZIPF, MW_STRIDE, MW_PROBE };

struct mw_pattern {
    enum mw_pattern_kind kind;
    double zipf_s;
    uint64_t stride;
    unsigned table_pct;
};

/* Returns 0, or -1 if text is not a valid pattern. */
static inline int mw_parse_pattern(const char *text, struct mw_pattern *out)
{
    char *end;
    memset(out, 0, sizeof(*out));
    if (strcmp(text, "seq") == 0) {
        out->kind = MW_SEQ;
        return 0;
    }
    if (strcmp(text, "uniform") == 0) {
        out->kind = MW_UNIFORM;
        return 0;
    }
    if (strncmp(text, "zipf:", 5) == 0) {
        out->kind = MW_ZIPF;
        out->zipf_s = strtod(text + 5, &end);
        if (end == text + 5 || *end || !(out->zipf_s > 0.0) || out->zipf_s > 100.0)
            return -1;
        return 0;
    }
    if (strncmp(text, "stride:", 7) == 0) {
        out->kind = MW_STRIDE;
        if (text[7] < '0' || text[7] > '9')
            return -1;
        out->stride = strtoull(text + 7, &end, 10);
        if (*end || out->stride == 0)
            return -1;
        return 0;
    }
    if (strncmp(text, "probe:", 6) == 0) {
        out->kind = MW_PROBE;
        if (text[6] < '0' || text[6] > '9')
            return -1;
        unsigned long pct = strtoul(text + 6, &end, 10);
        if (*end || pct < 1 || pct > 90)
            return -1;
        out->table_pct = (unsigned)pct;
        return 0;
    }
    return -1;
}

#endif
