/* trace: first-touch recorder (see trace.h). */
#include <stdlib.h>
#include <string.h>

#include "trace.h"

void dp_trace_init(struct dp_trace *t, uint64_t start_ns, double window_s)
{
    memset(t, 0, sizeof(*t));
    t->start_ns = start_ns;
    t->window_ns = window_s > 0 ? (uint64_t)(window_s * 1e9) : 0;
}

void dp_trace_free(struct dp_trace *t)
{
    free(t->ent);
    free(t->slots);
    memset(t, 0, sizeof(*t));
}

int dp_trace_open(const struct dp_trace *t, uint64_t now_ns)
{
    return !t->full && t->window_ns && now_ns >= t->start_ns && now_ns - t->start_ns < t->window_ns;
}

static uint64_t key_hash(int32_t pid, uint64_t addr)
{
    uint64_t z = (addr >> 12) ^ ((uint64_t)(uint32_t)pid << 45) ^ 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int grow_slots(struct dp_trace *t)
{
    size_t n = t->nslots ? t->nslots * 2 : 1024;
    uint32_t *s = calloc(n, sizeof(*s));
    if (!s)
        return -1;
    for (size_t i = 0; i < t->n; i++) {
        size_t h = key_hash(t->ent[i].pid, t->ent[i].addr) & (n - 1);
        while (s[h])
            h = (h + 1) & (n - 1);
        s[h] = (uint32_t)(i + 1);
    }
    free(t->slots);
    t->slots = s;
    t->nslots = n;
    return 0;
}

int dp_trace_note(struct dp_trace *t, int32_t pid, uint64_t addr, uint64_t now_ns)
{
    if (!dp_trace_open(t, now_ns)) {
        t->dropped++;
        return 0;
    }
    addr &= ~(uint64_t)(DP_PAGE_SIZE - 1);
    if ((t->n + 1) * 2 > t->nslots && grow_slots(t) < 0)
        return -1;
    size_t h = key_hash(pid, addr) & (t->nslots - 1);
    while (t->slots[h]) {
        const struct dp_trace_ent *e = &t->ent[t->slots[h] - 1];
        if (e->pid == pid && e->addr == addr)
            return 0;
        h = (h + 1) & (t->nslots - 1);
    }
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 1024;
        struct dp_trace_ent *e = realloc(t->ent, cap * sizeof(*e));
        if (!e)
            return -1;
        t->ent = e;
        t->cap = cap;
    }
    uint64_t ms = (now_ns - t->start_ns) / 1000000u;
    t->ent[t->n] = (struct dp_trace_ent){.addr = addr, .pid = pid, .t_ms = ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms};
    t->slots[h] = (uint32_t)(++t->n);
    if (t->n >= DP_TRACE_MAX_PAGES)
        t->full = 1;
    return 1;
}

int dp_trace_build(const struct dp_trace *t, const uint8_t id[DP_CPID_SIZE], uint64_t created_us,
                   struct dp_hotset *hs, struct dp_err *err)
{
    dp_hotset_init(hs, DP_HS_TRACE, id, created_us, (uint32_t)(t->window_ns / 1000000u));
    /* pids in first-touch order */
    int32_t *pids = NULL;
    size_t np = 0;
    for (size_t i = 0; i < t->n; i++) {
        size_t k = 0;
        while (k < np && pids[k] != t->ent[i].pid)
            k++;
        if (k < np)
            continue;
        int32_t *p = realloc(pids, (np + 1) * sizeof(*p));
        if (!p)
            goto oom;
        pids = p;
        pids[np++] = t->ent[i].pid;
    }
    for (size_t k = 0; k < np; k++) {
        if (dp_hotset_add_task(hs, pids[k]) < 0)
            goto oom;
        for (size_t i = 0; i < t->n; i++)
            if (t->ent[i].pid == pids[k] && dp_hotset_add_run(hs, t->ent[i].addr, 1, 1000, t->ent[i].t_ms) < 0)
                goto oom;
    }
    free(pids);
    if (!np) {
        dp_err_set(err, "the trace is empty: no page was touched in the first %.1f s", (double)t->window_ns / 1e9);
        dp_hotset_free(hs);
        return -1;
    }
    return dp_hotset_validate(hs, err) < 0 ? (dp_hotset_free(hs), -1) : 0;
oom:
    free(pids);
    dp_hotset_free(hs);
    dp_err_set(err, "out of memory building the trace");
    return -1;
}
