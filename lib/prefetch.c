/* prefetch: sequential, stride, adaptive and multi-stream prefetch policies
 * (see prefetch.h). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prefetch.h"

#define PG DP_PAGE_SIZE
#define STRIDE_DEPTH_DEFAULT 8
#define AUTO_START_DEFAULT 8
#define AUTO_MAX_DEFAULT 256
#define STREAMS_START_DEFAULT 8
#define STREAMS_MAX_DEFAULT 256
#define WINDOW_LIMIT 4096   /* pages; 16 MiB */

/* ---- parsing ------------------------------------------------------------ */

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
    } else if (strcmp(text, "streams") == 0 || strncmp(text, "streams:", 8) == 0) {
        cfg->mode = DP_PF_STREAMS;
        cfg->n = STREAMS_START_DEFAULT;
        cfg->max = STREAMS_MAX_DEFAULT;
        if (text[7] == '\0')
            return 0;
        if (parse_u32(text + 8, &cfg->max) == 0) {
            if (cfg->n > cfg->max)
                cfg->n = cfg->max;
            return 0;
        }
    }
    dp_err_set(err, "bad prefetch policy '%s': use none, seq:N, stride[:DEPTH], auto[:MAX] or streams[:MAX] "
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
    case DP_PF_STREAMS: snprintf(buf, len, "streams:%u", cfg->max); break;
    }
}

void dp_prefetch_state_init(struct dp_prefetch_state *st)
{
    memset(st, 0, sizeof(*st));
    st->last_stream = -1;
}

/* ---- per-mapping policies: seq, stride, auto ------------------------------ */

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

/* One stream of faults per task and mapping: the last fault of the mapping
 * decides (seq, auto) or the last two deltas (stride). */
static int plan_mapping(const struct dp_prefetch_cfg *cfg, struct dp_prefetch_state *st, uint64_t fault,
                        uint64_t reg_lo, uint64_t reg_hi, struct dp_pf_range *out, int max_out)
{
    struct dp_pf_map *m = map_for(cfg, st, reg_lo);
    int fresh = m->last == 0;

    /* Judge the previous window by where this fault landed. */
    int consumed = 0;
    if (m->win_pages) {
        uint64_t pages = m->win_pages;
        if (fault == m->expect) {
            st->hits_inferred += pages;
            consumed = 1;
            if (cfg->mode != DP_PF_STRIDE) { /* a stride's span holds pages it skipped */
                st->walked_lo = m->win_lo;
                st->walked_hi = m->win_hi;
            }
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
    case DP_PF_STREAMS:
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

/* ---- streams ------------------------------------------------------------ */

/* Whether stream s (of fault's region) is continued by fault: the fault lands
 * past the stream's last fault, inside its window or at most DP_PF_GAP pages
 * beyond where the window (or, without one, the last fault) ends. Pages the
 * stream skips are ones already resident, which do not fault. */
static bool stream_claims(const struct dp_pf_stream *s, uint64_t fault)
{
    if (s->dir > 0) {
        uint64_t end = s->expect ? s->expect : s->last + PG;
        return fault > s->last && fault <= end + DP_PF_GAP * PG;
    }
    uint64_t end = s->expect ? s->expect : s->last - PG;
    return fault < s->last && fault + DP_PF_GAP * PG >= end;
}

/* Whether a recent fault of [reg_lo, reg_hi) other than `not` lies at most
 * DP_PF_GAP pages from x on side dir (below x for +1, above for -1); its page
 * in *found. */
static bool history_near(const struct dp_prefetch_state *st, uint64_t x, int dir, uint64_t not, uint64_t reg_lo,
                         uint64_t reg_hi, int from, uint64_t *found)
{
    for (int i = from; i < DP_PF_HISTORY; i++) {
        uint64_t h = st->history[i];
        if (!h || h < reg_lo || h >= reg_hi || h == x || h == not)
            continue;
        if ((dir > 0 && h < x && x - h <= DP_PF_GAP * PG) || (dir < 0 && h > x && h - x <= DP_PF_GAP * PG)) {
            *found = h;
            return true;
        }
    }
    return false;
}

/* The direction of a new stream through fault: +1 if two recent faults of
 * the region step up to it (each at most DP_PF_GAP pages above the one
 * before), -1 if two step down to it, 0 if neither. One nearby fault is not
 * enough: random faults land near one of the last DP_PF_HISTORY ones every
 * few hundred faults (a hash table's probes far more often), and each such
 * "stream" would fetch a window nobody reads; two in a row in one direction
 * are rare by chance, and a real walk pays one fault more to be found. */
static int history_trend(const struct dp_prefetch_state *st, uint64_t fault, uint64_t reg_lo, uint64_t reg_hi)
{
    for (int dir = 1; dir >= -1; dir -= 2) {
        for (int i = 0; i < DP_PF_HISTORY; i++) {
            uint64_t h1, h2;
            if (!history_near(st, fault, dir, 0, reg_lo, reg_hi, i, &h1))
                break;
            if (history_near(st, h1, dir, fault, reg_lo, reg_hi, 0, &h2))
                return dir;
            /* the next candidate h1 after this one */
            while (i < DP_PF_HISTORY && st->history[i] != h1)
                i++;
        }
    }
    return 0;
}

/* A slot for a new stream: an unused one, else the least recently used of
 * the streams none of whose windows was walked through yet, else the least
 * recently used. A proven stream is claimed once per window only (its
 * window grows to 256 pages), while random faults near each other start
 * "streams" all the time (a hash table's probes): plain LRU let those push
 * out the real ones, whose outstanding window was then read unseen and
 * whose walker had to be found again, window 8. The victim's unconsumed
 * window is counted as missed. */
static struct dp_pf_stream *stream_slot(struct dp_prefetch_state *st)
{
    struct dp_pf_stream *victim = NULL, *unproven = NULL;
    for (int i = 0; i < DP_PF_NSTREAMS; i++) {
        struct dp_pf_stream *s = &st->streams[i];
        if (!s->region)
            return s;
        if (!victim || s->used < victim->used)
            victim = s;
        if (!s->walked && (!unproven || s->used < unproven->used))
            unproven = s;
    }
    if (unproven)
        victim = unproven;
    st->misses += victim->win_pages;
    memset(victim, 0, sizeof(*victim));
    return victim;
}

/* Several sequential streams per task, found by address (see prefetch.h). */
static int plan_streams(const struct dp_prefetch_cfg *cfg, struct dp_prefetch_state *st, uint64_t fault,
                        uint64_t reg_lo, uint64_t reg_hi, struct dp_pf_range *out, int max_out)
{
    st->tick++;
    st->last_stream = -1;
    struct dp_pf_stream *s = NULL;
    for (int i = 0; i < DP_PF_NSTREAMS && !s; i++)
        if (st->streams[i].region == reg_lo && stream_claims(&st->streams[i], fault))
            s = &st->streams[i];
    if (s) {
        /* Judge its window: walked through to its end (or past it, over
         * resident pages) is a hit and widens it; a fault inside it found a
         * page not yet there (in flight, counted by the daemon). */
        bool inside = s->win_hi && fault >= s->win_lo && fault < s->win_hi;
        s->used = st->tick;
        if (inside)
            return 0; /* the window is still being walked: nothing new to ask */
        /* Past it: its prefetched pages were used (a window the daemon found
         * all resident counts nothing, but the stream moved on all the same). */
        if (s->win_hi) {
            s->walked++;
            st->hits_inferred += s->win_pages;
            st->walked_lo = s->win_lo;
            st->walked_hi = s->win_hi;
            uint32_t w = s->window * 2;
            s->window = w > cfg->max ? cfg->max : w;
        }
    } else {
        int dir = history_trend(st, fault, reg_lo, reg_hi);
        st->history[st->hist_pos] = fault;
        st->hist_pos = (st->hist_pos + 1) % DP_PF_HISTORY;
        if (!dir)
            return 0;
        s = stream_slot(st);
        s->region = reg_lo;
        s->dir = dir;
        s->window = cfg->n;
        st->streams_started++;
    }
    s->last = fault;
    s->used = st->tick;
    s->win_pages = 0;
    s->win_lo = s->win_hi = s->expect = 0;
    uint64_t lo, hi;
    if (s->dir > 0) {
        lo = fault + PG;
        hi = lo + (uint64_t)s->window * PG;
        if (hi > reg_hi || hi < lo)
            hi = reg_hi;
        s->expect = hi;
    } else {
        hi = fault;
        lo = hi - reg_lo > (uint64_t)s->window * PG ? hi - (uint64_t)s->window * PG : reg_lo;
        s->expect = lo - PG; /* below the region if lo == reg_lo: never claimed */
    }
    if (lo >= hi || max_out <= 0)
        return 0;
    s->win_lo = lo;
    s->win_hi = hi;
    s->win_pages = (uint32_t)((hi - lo) / PG);
    st->last_stream = (int)(s - st->streams);
    out[0].addr = lo;
    out[0].npages = s->win_pages;
    return 1;
}

/* ---- the policy table ------------------------------------------------------ */

typedef int (*plan_fn)(const struct dp_prefetch_cfg *cfg, struct dp_prefetch_state *st, uint64_t fault,
                       uint64_t reg_lo, uint64_t reg_hi, struct dp_pf_range *out, int max_out);

/* Chosen once per fault by the configured mode; none plans nothing. */
static const plan_fn planners[] = {
    [DP_PF_NONE] = NULL,
    [DP_PF_SEQ] = plan_mapping,
    [DP_PF_STRIDE] = plan_mapping,
    [DP_PF_AUTO] = plan_mapping,
    [DP_PF_STREAMS] = plan_streams,
};

int dp_prefetch_plan(const struct dp_prefetch_cfg *cfg, struct dp_prefetch_state *st,
                     uint64_t fault, uint64_t reg_lo, uint64_t reg_hi,
                     struct dp_pf_range *out, int max_out)
{
    st->walked_lo = st->walked_hi = 0;
    if ((unsigned)cfg->mode >= sizeof(planners) / sizeof(planners[0]) || !planners[cfg->mode] || fault < reg_lo ||
        fault >= reg_hi || max_out <= 0)
        return 0;
    return planners[cfg->mode](cfg, st, fault & ~(PG - 1), reg_lo, reg_hi, out, max_out);
}

/* ---- what the daemon reports back ------------------------------------------ */

void dp_prefetch_window_actual(struct dp_prefetch_state *st, uint64_t reg_lo, uint32_t pages)
{
    if (st->last_stream >= 0) {
        struct dp_pf_stream *s = &st->streams[st->last_stream];
        if (s->region == reg_lo && s->win_hi) {
            /* Only the count changes: the window's span (and where the
             * stream is expected next) stays, resident pages or not. */
            if (pages < s->win_pages)
                s->win_pages = pages;
            return;
        }
    }
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
    for (int i = 0; i < DP_PF_NSTREAMS; i++) {
        struct dp_pf_stream *s = &st->streams[i];
        if (s->region == reg_lo && s->win_pages && addr >= s->win_lo && addr < s->win_hi) {
            s->win_pages--;
            return;
        }
    }
    for (int i = 0; i < DP_PF_MAPS; i++) {
        struct dp_pf_map *m = &st->maps[i];
        if (m->used && m->region == reg_lo && m->win_pages && addr >= m->win_lo && addr < m->win_hi) {
            m->win_pages--;
            return;
        }
    }
}
