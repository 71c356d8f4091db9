/* lazymap: per-task lazy memory bookkeeping (see lazymap.h). */
#include <stdlib.h>
#include <string.h>

#include "lazymap.h"
#include "util.h"

#define PG DP_PAGE_SIZE

void dp_lazymap_init(struct dp_lazymap *m)
{
    memset(m, 0, sizeof(*m));
}

void dp_lazymap_free(struct dp_lazymap *m)
{
    for (size_t i = 0; i < m->n; i++)
        free(m->r[i].pg);
    free(m->r);
    memset(m, 0, sizeof(*m));
}

static uint64_t npages(const struct dp_lazy_region *r)
{
    return (r->end - r->start) / PG;
}

static int reserve(struct dp_lazymap *m, size_t want)
{
    if (want <= m->cap)
        return 0;
    size_t cap = m->cap ? m->cap * 2 : 8;
    while (cap < want)
        cap *= 2;
    struct dp_lazy_region *r = realloc(m->r, cap * sizeof(*r));
    if (!r)
        return -1;
    m->r = r;
    m->cap = cap;
    return 0;
}

/* Index of the first region whose end > addr (m->n if none). */
static size_t lower(const struct dp_lazymap *m, uint64_t addr)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (m->r[mid].end <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void count_region(struct dp_lazymap *m, const struct dp_lazy_region *r, int sign)
{
    for (uint64_t i = 0; i < npages(r); i++)
        m->count[r->pg[i] & DP_PG_STATE_MASK] += (uint64_t)(int64_t)sign;
}

static int insert_at(struct dp_lazymap *m, size_t idx, const struct dp_lazy_region *r)
{
    if (reserve(m, m->n + 1))
        return -1;
    memmove(&m->r[idx + 1], &m->r[idx], (m->n - idx) * sizeof(*r));
    m->r[idx] = *r;
    m->n++;
    return 0;
}

static void delete_at(struct dp_lazymap *m, size_t idx)
{
    count_region(m, &m->r[idx], -1);
    free(m->r[idx].pg);
    memmove(&m->r[idx], &m->r[idx + 1], (m->n - idx - 1) * sizeof(m->r[0]));
    m->n--;
}

int dp_lazymap_add(struct dp_lazymap *m, uint64_t start, uint64_t end, uint64_t img, enum dp_pg_state state)
{
    if (start >= end || start % PG || end % PG || img % PG)
        return -1;
    size_t idx = lower(m, start);
    if (idx < m->n && m->r[idx].start < end)
        return -1;
    struct dp_lazy_region r = {.start = start, .end = end, .img = img};
    r.pg = malloc((end - start) / PG);
    if (!r.pg)
        return -1;
    memset(r.pg, state, (end - start) / PG);
    if (insert_at(m, idx, &r)) {
        free(r.pg);
        return -1;
    }
    m->count[state] += (end - start) / PG;
    return 0;
}

uint8_t *dp_lazymap_page(struct dp_lazymap *m, uint64_t addr, struct dp_lazy_region **region)
{
    size_t idx = lower(m, addr);
    if (idx >= m->n || addr < m->r[idx].start)
        return NULL;
    if (region)
        *region = &m->r[idx];
    return &m->r[idx].pg[(addr - m->r[idx].start) / PG];
}

uint64_t dp_lazymap_img_to_addr(const struct dp_lazymap *m, uint64_t img, struct dp_lazy_region **region)
{
    /* Regions are sorted by run-time address, not image address; after
     * remaps the two orders differ, so this is a linear scan (few regions). */
    for (size_t i = 0; i < m->n; i++) {
        const struct dp_lazy_region *r = &m->r[i];
        if (img >= r->img && img < r->img + (r->end - r->start)) {
            if (region)
                *region = (struct dp_lazy_region *)r;
            return r->start + (img - r->img);
        }
    }
    return 0;
}

void dp_lazymap_set(struct dp_lazymap *m, uint8_t *pg, enum dp_pg_state state, uint8_t flags)
{
    m->count[*pg & DP_PG_STATE_MASK]--;
    m->count[state]++;
    *pg = (uint8_t)(state | (flags & ~DP_PG_STATE_MASK));
}

void dp_lazymap_remove(struct dp_lazymap *m, uint64_t start, uint64_t end)
{
    start &= ~(PG - 1);
    for (size_t i = lower(m, start); i < m->n && m->r[i].start < end; i++) {
        struct dp_lazy_region *r = &m->r[i];
        uint64_t a = start > r->start ? start : r->start;
        uint64_t b = end < r->end ? end : r->end;
        for (uint64_t p = a; p < b; p += PG)
            dp_lazymap_set(m, &r->pg[(p - r->start) / PG], DP_PG_NONE, 0);
    }
}

static int in_ranges(uint64_t a, const struct dp_lazy_range *r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a >= r[i].start && a < r[i].end)
            return 1;
    return 0;
}

void dp_lazymap_remove_except(struct dp_lazymap *m, uint64_t start, uint64_t end,
                              const struct dp_lazy_range *keep, size_t nkeep)
{
    if (!nkeep) {
        dp_lazymap_remove(m, start, end);
        return;
    }
    start &= ~(PG - 1);
    for (size_t i = lower(m, start); i < m->n && m->r[i].start < end; i++) {
        struct dp_lazy_region *r = &m->r[i];
        uint64_t a = start > r->start ? start : r->start;
        uint64_t b = end < r->end ? end : r->end;
        for (uint64_t p = a; p < b; p += PG) {
            uint8_t *pg = &r->pg[(p - r->start) / PG];
            if (!in_ranges(p, keep, nkeep))
                dp_lazymap_set(m, pg, DP_PG_NONE, 0);
            else if ((*pg & DP_PG_STATE_MASK) == DP_PG_RESIDENT)
                dp_lazymap_set(m, pg, DP_PG_REMOTE, 0);
        }
    }
}

/* Splits region idx at addr (start < addr < end) into idx and idx+1. */
static int split(struct dp_lazymap *m, size_t idx, uint64_t addr)
{
    struct dp_lazy_region *r = &m->r[idx];
    uint64_t head = (addr - r->start) / PG, tail = (r->end - addr) / PG;
    struct dp_lazy_region nr = {.start = addr, .end = r->end, .img = r->img + (addr - r->start)};
    nr.pg = malloc(tail);
    if (!nr.pg)
        return -1;
    memcpy(nr.pg, r->pg + head, tail);
    uint8_t *shrunk = realloc(r->pg, head);
    if (shrunk)
        r->pg = shrunk;
    r->end = addr;
    if (insert_at(m, idx + 1, &nr)) {
        /* undo: glue the tail back */
        uint8_t *full = realloc(m->r[idx].pg, head + tail);
        if (full) {
            memcpy(full + head, nr.pg, tail);
            m->r[idx].pg = full;
            m->r[idx].end = nr.end;
        }
        free(nr.pg);
        return -1;
    }
    return 0;
}

/* Makes start and end region boundaries where they fall inside a region. */
static int cut(struct dp_lazymap *m, uint64_t start, uint64_t end)
{
    size_t i = lower(m, start);
    if (i < m->n && m->r[i].start < start && start < m->r[i].end && split(m, i, start))
        return -1;
    i = lower(m, end);
    if (i < m->n && m->r[i].start < end && end < m->r[i].end && split(m, i, end))
        return -1;
    return 0;
}

int dp_lazymap_unmap(struct dp_lazymap *m, uint64_t start, uint64_t end)
{
    start &= ~(PG - 1);
    end = (end + PG - 1) & ~(PG - 1);
    if (start >= end)
        return 0;
    if (cut(m, start, end))
        return -1;
    size_t i = lower(m, start);
    while (i < m->n && m->r[i].start < end)
        delete_at(m, i);
    return 0;
}

int dp_lazymap_remap(struct dp_lazymap *m, uint64_t from, uint64_t to, uint64_t len)
{
    len = (len + PG - 1) & ~(PG - 1);
    if (from == to || len == 0)
        return 0;
    if (cut(m, from, from + len))
        return -1;
    /* Take the moved regions out, clear the target, put them back shifted. */
    size_t i = lower(m, from), j = i;
    while (j < m->n && m->r[j].start < from + len)
        j++;
    size_t k = j - i;
    struct dp_lazy_region *moved = NULL;
    if (k) {
        moved = malloc(k * sizeof(*moved));
        if (!moved)
            return -1;
        memcpy(moved, &m->r[i], k * sizeof(*moved));
        memmove(&m->r[i], &m->r[j], (m->n - j) * sizeof(*moved));
        m->n -= k;
        for (size_t x = 0; x < k; x++)
            count_region(m, &moved[x], -1);
    }
    int rc = dp_lazymap_unmap(m, to, to + len);
    for (size_t x = 0; x < k; x++) {
        moved[x].start = moved[x].start - from + to;
        moved[x].end = moved[x].end - from + to;
        size_t idx = lower(m, moved[x].start);
        if (rc == 0 && insert_at(m, idx, &moved[x]) == 0) {
            count_region(m, &moved[x], +1);
        } else {
            free(moved[x].pg);
            rc = -1;
        }
    }
    free(moved);
    return rc;
}

int dp_lazymap_clone(struct dp_lazymap *dst, const struct dp_lazymap *src)
{
    dp_lazymap_init(dst);
    if (reserve(dst, src->n ? src->n : 1))
        return -1;
    for (size_t i = 0; i < src->n; i++) {
        struct dp_lazy_region r = src->r[i];
        uint64_t n = npages(&r);
        r.pg = malloc(n);
        if (!r.pg) {
            dp_lazymap_free(dst);
            return -1;
        }
        for (uint64_t p = 0; p < n; p++) {
            uint8_t s = src->r[i].pg[p] & DP_PG_STATE_MASK;
            r.pg[p] = s == DP_PG_INFLIGHT ? DP_PG_REMOTE : s;
        }
        dst->r[dst->n++] = r;
        count_region(dst, &r, +1);
    }
    return 0;
}

uint64_t dp_lazymap_pages(const struct dp_lazymap *m, enum dp_pg_state state)
{
    return m->count[state & DP_PG_STATE_MASK];
}

int dp_lazymap_check(const struct dp_lazymap *m)
{
    uint64_t count[4] = {0};
    for (size_t i = 0; i < m->n; i++) {
        const struct dp_lazy_region *r = &m->r[i];
        if (r->start >= r->end || r->start % PG || r->end % PG || r->img % PG)
            return -1;
        if (i && m->r[i - 1].end > r->start)
            return -1;
        for (uint64_t p = 0; p < npages(r); p++)
            count[r->pg[p] & DP_PG_STATE_MASK]++;
    }
    return memcmp(count, m->count, sizeof(count)) ? -1 : 0;
}
