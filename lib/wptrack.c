/* wptrack: write-protect dirty tracking. See wptrack.h. */
#include "wptrack.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>

#include "util.h"

/* ======================================================================
 * The map (pure)
 * ====================================================================== */

/* An empty map tracks nothing. */
void dp_wpmap_init(struct dp_wpmap *m)
{
    memset(m, 0, sizeof(*m));
}

/* Frees every range's bits; the map is empty again. */
void dp_wpmap_free(struct dp_wpmap *m)
{
    for (size_t i = 0; i < m->n; i++)
        free(m->r[i].bits);
    free(m->r);
    memset(m, 0, sizeof(*m));
}

/* Index of the range holding addr, or of the first range after it (m->n if
 * none): the one binary search every lookup uses. */
static size_t find(const struct dp_wpmap *m, uint64_t addr)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct dp_wprange *r = &m->r[mid];
        if (addr >= r->start + r->npages * DP_PAGE_SIZE)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The range and page index holding addr, or NULL. */
static struct dp_wprange *locate(const struct dp_wpmap *m, uint64_t addr, uint64_t *pg)
{
    size_t i = find(m, addr);
    if (i == m->n || addr < m->r[i].start)
        return NULL;
    *pg = (addr - m->r[i].start) / DP_PAGE_SIZE;
    return &m->r[i];
}

/* Inserted in address order; refuses an overlap rather than merging. */
int dp_wpmap_add(struct dp_wpmap *m, uint64_t start, uint64_t len)
{
    if (!len || start % DP_PAGE_SIZE || len % DP_PAGE_SIZE || start + len < start)
        return -1;
    size_t i = find(m, start);
    if (i < m->n && m->r[i].start < start + len)
        return -1;          /* overlaps */
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 8;
        void *p = realloc(m->r, cap * sizeof(*m->r));
        if (!p)
            return -1;
        m->r = p;
        m->cap = cap;
    }
    uint64_t np = len / DP_PAGE_SIZE;
    uint64_t *bits = calloc((np + 63) / 64, sizeof(uint64_t));
    if (!bits)
        return -1;
    memmove(&m->r[i + 1], &m->r[i], (m->n - i) * sizeof(*m->r));
    m->r[i] = (struct dp_wprange){.start = start, .npages = np, .bits = bits, .nset = 0};
    m->n++;
    return 0;
}

/* Keeps pages [from, to) of range r as a new, separately allocated range. */
static int slice(struct dp_wprange *out, const struct dp_wprange *r, uint64_t from, uint64_t to)
{
    uint64_t np = to - from;
    out->start = r->start + from * DP_PAGE_SIZE;
    out->npages = np;
    out->nset = 0;
    out->bits = calloc((np + 63) / 64, sizeof(uint64_t));
    if (!out->bits)
        return -1;
    for (uint64_t p = 0; p < np; p++)
        if (r->bits[(from + p) / 64] >> ((from + p) % 64) & 1) {
            out->bits[p / 64] |= 1ULL << (p % 64);
            out->nset++;
        }
    return 0;
}

/* Each range hit is replaced by what survives of it on either side. */
void dp_wpmap_remove(struct dp_wpmap *m, uint64_t start, uint64_t end)
{
    start &= ~(DP_PAGE_SIZE - 1);
    for (size_t i = find(m, start); i < m->n && m->r[i].start < end;) {
        struct dp_wprange old = m->r[i];
        uint64_t rend = old.start + old.npages * DP_PAGE_SIZE;
        uint64_t a = start > old.start ? (start - old.start) / DP_PAGE_SIZE : 0;
        uint64_t b = end < rend ? (end - old.start + DP_PAGE_SIZE - 1) / DP_PAGE_SIZE : old.npages;
        struct dp_wprange keep[2];
        size_t nk = 0;
        if (a > 0 && slice(&keep[nk], &old, 0, a) == 0)
            nk++;
        if (b < old.npages && slice(&keep[nk], &old, b, old.npages) == 0)
            nk++;
        /* (a failed slice only forgets pages: they read as untracked) */
        if (nk == 2 && m->n == m->cap) {
            void *p = realloc(m->r, (m->cap * 2) * sizeof(*m->r));
            if (!p) {
                free(keep[1].bits);
                nk = 1;
            } else {
                m->r = p;
                m->cap *= 2;
            }
        }
        m->written -= old.nset;
        free(old.bits);
        memmove(&m->r[i], &m->r[i + 1], (m->n - i - 1) * sizeof(*m->r));
        m->n--;
        for (size_t k = 0; k < nk; k++) {
            memmove(&m->r[i + k + 1], &m->r[i + k], (m->n - i - k) * sizeof(*m->r));
            m->r[i + k] = keep[k];
            m->n++;
            m->written += keep[k].nset;
        }
        i += nk;
    }
}

/* One lookup: is addr inside a tracked range. */
int dp_wpmap_tracked(const struct dp_wpmap *m, uint64_t addr)
{
    uint64_t pg;
    return locate(m, addr, &pg) != NULL;
}

/* The page's bit, or -1 outside every range. */
int dp_wpmap_test(const struct dp_wpmap *m, uint64_t addr)
{
    uint64_t pg;
    const struct dp_wprange *r = locate(m, addr, &pg);
    if (!r)
        return -1;
    return (int)(r->bits[pg / 64] >> (pg % 64) & 1);
}

/* Sets a page's bit to v; returns its previous value, -1 if untracked. */
static int put(struct dp_wpmap *m, uint64_t addr, int v)
{
    uint64_t pg;
    struct dp_wprange *r = locate(m, addr, &pg);
    if (!r)
        return -1;
    uint64_t bit = 1ULL << (pg % 64);
    int was = (r->bits[pg / 64] & bit) != 0;
    if (was == v)
        return was;
    r->bits[pg / 64] ^= bit;
    r->nset += v ? 1 : (uint64_t)-1;
    m->written += v ? 1 : (uint64_t)-1;
    return was;
}

/* A write-protect fault says the page was written. */
int dp_wpmap_set(struct dp_wpmap *m, uint64_t addr)
{
    return put(m, addr, 1);
}

/* Installed or written back (and protected again): clean. */
int dp_wpmap_clear(struct dp_wpmap *m, uint64_t addr)
{
    return put(m, addr, 0);
}

/* Word by word, skipping ranges with nothing set. */
uint64_t dp_wpmap_next(const struct dp_wpmap *m, uint64_t addr)
{
    addr &= ~(DP_PAGE_SIZE - 1);
    for (size_t i = find(m, addr); i < m->n; i++) {
        const struct dp_wprange *r = &m->r[i];
        if (!r->nset)
            continue;
        uint64_t pg = addr > r->start ? (addr - r->start) / DP_PAGE_SIZE : 0;
        while (pg < r->npages) {
            uint64_t w = r->bits[pg / 64] >> (pg % 64);
            if (w)
                return r->start + (pg + (uint64_t)__builtin_ctzll(w)) * DP_PAGE_SIZE;
            pg = (pg / 64 + 1) * 64;
        }
    }
    return 0;
}

/* ======================================================================
 * userfaultfd and pagemap
 * ====================================================================== */

/* The same uffd, both modes: CRIU's MISSING registration stays in force. */
int dp_wp_register(int uffd, uint64_t start, uint64_t len)
{
    struct uffdio_register r = {.range = {.start = start, .len = len},
                                .mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP};
    return ioctl(uffd, UFFDIO_REGISTER, &r) ? -errno : 0;
}

/* An install that arrives write-protected (clean). */
int dp_wp_copy(int uffd, uint64_t dst, const void *src, uint64_t len, uint64_t *done)
{
    struct uffdio_copy c = {.dst = dst, .src = (uint64_t)(uintptr_t)src, .len = len,
                            .mode = UFFDIO_COPY_MODE_WP};
    int rc = ioctl(uffd, UFFDIO_COPY, &c) ? -errno : 0;
    *done = c.copy > 0 ? (uint64_t)c.copy : 0;
    return rc;
}

/* mode 0 also wakes the faulting threads (no DONTWAKE). */
int dp_wp_protect(int uffd, uint64_t start, uint64_t len, int on)
{
    struct uffdio_writeprotect w = {.range = {.start = start, .len = len},
                                    .mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0};
    return ioctl(uffd, UFFDIO_WRITEPROTECT, &w) ? -errno : 0;
}

/* Order matters: the bit before the protection goes. */
int dp_wp_resolve(struct dp_wpmap *m, int uffd, uint64_t addr)
{
    addr &= ~(DP_PAGE_SIZE - 1);
    dp_wpmap_set(m, addr);              /* first: the write is about to land */
    return dp_wp_protect(uffd, addr, DP_PAGE_SIZE, 0);
}

/* Order matters: the protection before the bit goes. */
int dp_wp_clean_begin(struct dp_wpmap *m, int uffd, uint64_t addr)
{
    addr &= ~(DP_PAGE_SIZE - 1);
    int rc = dp_wp_protect(uffd, addr, DP_PAGE_SIZE, 1);
    if (rc < 0)
        return rc;
    dp_wpmap_clear(m, addr);            /* after: a later write faults and sets it */
    return 0;
}

/* Both categories required: a written page that is present. */
int dp_wp_scan_written(int pagemap_fd, uint64_t start, uint64_t end, struct dp_page_region *out, size_t max,
                       uint64_t *walk_end)
{
    struct dp_pm_scan_arg a = {.size = sizeof(a), .flags = 0, .start = start, .end = end,
                               .vec = (uint64_t)(uintptr_t)out, .vec_len = max,
                               .category_mask = DP_PAGE_IS_WRITTEN | DP_PAGE_IS_PRESENT,
                               .return_mask = DP_PAGE_IS_WRITTEN | DP_PAGE_IS_PRESENT};
    long r = ioctl(pagemap_fd, DP_PAGEMAP_SCAN, &a);
    if (r < 0)
        return -errno;
    if (walk_end)
        *walk_end = a.walk_end;
    return (int)r;
}
