/* prefetch: sequential, stride and adaptive prefetch policy (see prefetch.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prefetch.h"

#define PG DP_PAGE_SIZE
#define STRIDE_DEPTH_DEFAULT 8
#define AUTO_START_DEFAULT 8
#define AUTO_MAX_DEFAULT 256
#define WINDOW_LIMIT 4096   /* pages; 16 MiB */

static int parse_u32(const char *s, uint32_t *out)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (!*s || *end || v == 0 || v > WINDOW_LIMIT)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

int dp_prefetch_parse(const char *text, struct dp_prefetch_cfg *cfg, struct dp_err *err)
{
    memset(cfg, 0, sizeof(*cfg));
    if (strcmp(text, "none") == 0) {
        cfg->mode = DP_PF_NONE;
        return 0;
    }
    if (strncmp(text, "seq:", 4) == 0) {
        cfg->mode = DP_PF_SEQ;
        if (parse_u32(text + 4, &cfg->n) == 0)
            return 0;
    } else if (strcmp(text, "seq") == 0) {
        cfg->mode = DP_PF_SEQ;
        cfg->n = 8;
        return 0;
    } else if (strcmp(text, "stride") == 0 || strncmp(text, "stride:", 7) == 0) {
        cfg->mode = DP_PF_STRIDE;
        cfg->n = STRIDE_DEPTH_DEFAULT;
        if (text[6] == '\0' || parse_u32(text + 7, &cfg->n) == 0)
            return 0;
    } else if (strcmp(text, "auto") == 0 || strncmp(text, "auto:", 5) == 0) {
        cfg->mode = DP_PF_AUTO;
        cfg->n = AUTO_START_DEFAULT;
        cfg->max = AUTO_MAX_DEFAULT;
        if (text[4] == '\0')
            return 0;
        if (parse_u32(text + 5, &cfg->max) == 0) {
            if (cfg->n > cfg->max)
                cfg->n = cfg->max;
            return 0;
        }
    }
    dp_err_set(err, "bad prefetch policy '%s': use none, seq:N, stride[:DEPTH] or auto[:MAX] "
               "with N between 1 and %d pages", text, WINDOW_LIMIT);
    return -1;
}

void dp_prefetch_format(const struct dp_prefetch_cfg *cfg, char *buf, size_t len)
{
    switch (cfg->mode) {
    case DP_PF_NONE: snprintf(buf, len, "none"); break;
    case DP_PF_SEQ: snprintf(buf, len, "seq:%u", cfg->n); break;
    case DP_PF_STRIDE: snprintf(buf, len, "stride:%u", cfg->n); break;
    case DP_PF_AUTO: snprintf(buf, len, "auto:%u", cfg->max); break;
    }
}

void dp_prefetch_state_init(struct dp_prefetch_state *st)
{
    memset(st, 0, sizeof(*st));
}

static struct dp_pf_map *map_for(const struct dp_prefetch_cfg *cfg, struct dp_prefetch_state *st, uint64_t region)
{
    struct dp_pf_map *victim = &st->maps[0];
    st->tick++;
    for (int i = 0; i < DP_PF_MAPS; i++) {
        struct dp_pf_map *m = &st->maps[i];
        if (m->region == region && m->used) {
            m->used = st->tick;
            return m;
        }
        if (m->used < victim->used)
            victim = m;
    }
    memset(victim, 0, sizeof(*victim));
    victim->region = region;
    victim->window = cfg->n;
    victim->used = st->tick;
    return victim;
}

static int emit(struct dp_pf_range *out, int n, int max_out, uint64_t addr, uint32_t pages)
{
    if (n > 0 && out[n - 1].addr + (uint64_t)out[n - 1].npages * PG == addr) {
        out[n - 1].npages += pages;
        return n;
    }
    if (n >= max_out)
        return n;
    out[n].addr = addr;
    out[n].npages = pages;
    return n + 1;
}

int dp_prefetch_plan(const struct dp_prefetch_cfg *cfg, struct dp_prefetch_state *st,
                     uint64_t fault, uint64_t reg_lo, uint64_t reg_hi,
                     struct dp_pf_range *out, int max_out)
{
    if (cfg->mode == DP_PF_NONE || fault < reg_lo || fault >= reg_hi || max_out <= 0)
        return 0;
    fault &= ~(PG - 1);
    struct dp_pf_map *m = map_for(cfg, st, reg_lo);
    int fresh = m->last == 0;

    /* Judge the previous window by where this fault landed. */
    int consumed = 0;
    if (m->win_pages) {
        uint64_t pages = m->win_pages;
        if (fault == m->expect) {
            st->hits_inferred += pages;
            consumed = 1;
        } else if (fault < m->win_lo || fault >= m->win_hi) {
            st->misses += pages;
            if (cfg->mode == DP_PF_AUTO)
                m->window /= 2;
        }
        m->win_lo = m->win_hi = m->expect = 0;
        m->win_pages = 0;
    }
    int64_t delta = fresh ? 0 : (int64_t)(fault - m->last);
    m->last = fault;

    int n = 0;
    switch (cfg->mode) {
    case DP_PF_NONE:
        break;
    case DP_PF_AUTO:
        /* Widen on a consumed window, and regrow from 0 on a plain
         * sequential fault (no window was there to be consumed). */
        if (consumed || delta == (int64_t)PG) {
            uint32_t w = m->window ? m->window * 2 : 1;
            m->window = w > cfg->max ? cfg->max : w;
        }
        /* fall through */
    case DP_PF_SEQ: {
        uint32_t w = cfg->mode == DP_PF_SEQ ? cfg->n : m->window;
        uint64_t lo = fault + PG, hi = lo + (uint64_t)w * PG;
        if (hi > reg_hi || hi < lo)
            hi = reg_hi;
        if (lo < hi) {
            n = emit(out, n, max_out, lo, (uint32_t)((hi - lo) / PG));
            m->win_lo = lo;
            m->win_hi = hi;
            m->expect = hi;
            m->win_pages = (uint32_t)((hi - lo) / PG);
        }
        break;
    }
    case DP_PF_STRIDE: {
        if (consumed) {
            /* the stride held across the whole window: keep it */
        } else if (delta != 0 && delta == m->stride) {
            m->confirmed++;
        } else {
            m->stride = delta;
            m->confirmed = 0;
        }
        if (m->confirmed == 0 || m->stride == 0)
            break;
        uint64_t a = fault, first = 0, last = 0;
        uint32_t k;
        for (k = 0; k < cfg->n; k++) {
            a += (uint64_t)m->stride;
            if (a < reg_lo || a >= reg_hi)
                break;
            int before = n;
            n = emit(out, n, max_out, a, 1);
            if (n == before && !(out[n - 1].addr + (uint64_t)out[n - 1].npages * PG == a + PG))
                break; /* out of room */
            if (!first)
                first = a;
            last = a;
        }
        if (first) {
            uint64_t lo = first < last ? first : last;
            uint64_t hi = (first < last ? last : first) + PG;
            m->win_lo = lo;
            m->win_hi = hi;
            m->expect = last + (uint64_t)m->stride;
            m->win_pages = 0;
            for (int x = 0; x < n; x++)
                m->win_pages += out[x].npages;
        }
        break;
    }
    }
    return n;
}

void dp_prefetch_window_actual(struct dp_prefetch_state *st, uint64_t reg_lo, uint32_t pages)
{
    for (int i = 0; i < DP_PF_MAPS; i++) {
        struct dp_pf_map *m = &st->maps[i];
        if (m->used && m->region == reg_lo && m->win_pages) {
            if (pages < m->win_pages)
                m->win_pages = pages;
            if (!m->win_pages)
                m->win_lo = m->win_hi = m->expect = 0;
            return;
        }
    }
}

void dp_prefetch_inflight_hit(struct dp_prefetch_state *st, uint64_t reg_lo, uint64_t addr)
{
    for (int i = 0; i < DP_PF_MAPS; i++) {
        struct dp_pf_map *m = &st->maps[i];
        if (m->used && m->region == reg_lo && m->win_pages && addr >= m->win_lo && addr < m->win_hi) {
            m->win_pages--;
            return;
        }
    }
}
