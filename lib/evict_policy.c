/* evict_policy: 2Q-like victim selection with ghosts, and the victim
 * buffer. See evict_policy.h. */
#include "evict_policy.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NIL UINT32_MAX
#define PG 4096ULL

enum { L_PROB = 0, L_PROT = 1, L_GHOST = 2, L_EVICTING = 3, L_NONE = 4, L_FREE = 5 };

struct dp_evict_rec {
    uint64_t addr;
    int32_t owner;
    uint8_t list;
    uint8_t refault_pending;    /* faulted while a ghost: install protected */
    uint8_t moving;             /* dp_evict_move in progress */
    uint32_t faults, refaults, hint;
    uint64_t t_install, t_evict;
    uint32_t prev, next;
};

static void unlink_rec(struct dp_evict *p, uint32_t i)
{
    struct dp_evict_rec *r = &p->rec[i];
    if (r->list >= L_NONE)
        return;
    int l = r->list;
    if (r->prev != NIL)
        p->rec[r->prev].next = r->next;
    else
        p->head[l] = r->next;
    if (r->next != NIL)
        p->rec[r->next].prev = r->prev;
    else
        p->tail[l] = r->prev;
    p->len[l]--;
    r->prev = r->next = NIL;
    r->list = L_NONE;
}

static void push_head(struct dp_evict *p, int l, uint32_t i)
{
    unlink_rec(p, i);
    struct dp_evict_rec *r = &p->rec[i];
    r->list = (uint8_t)l;
    r->prev = NIL;
    r->next = p->head[l];
    if (p->head[l] != NIL)
        p->rec[p->head[l]].prev = i;
    else
        p->tail[l] = i;
    p->head[l] = i;
    p->len[l]++;
}

static void sync_stats(struct dp_evict *p)
{
    p->st.probation = p->len[L_PROB];
    p->st.protected_ = p->len[L_PROT];
    p->st.ghosts = p->len[L_GHOST];
    p->st.evicting = p->len[L_EVICTING];
    p->st.resident = p->len[L_PROB] + p->len[L_PROT];
}

int dp_evict_init(struct dp_evict *p, const struct dp_evict_cfg *cfg)
{
    memset(p, 0, sizeof(*p));
    p->cfg.protected_frac = 0.5;
    p->cfg.ghost_max = 65536;
    p->cfg.hot_hint = 0;
    if (cfg)
        p->cfg = *cfg;
    if (p->cfg.protected_frac < 0 || p->cfg.protected_frac > 1)
        return -1;
    for (int l = 0; l < 4; l++)
        p->head[l] = p->tail[l] = NIL;
    p->free_head = NIL;
    return 0;
}

void dp_evict_free(struct dp_evict *p)
{
    dp_pmap_free(&p->map);
    free(p->rec);
    memset(p, 0, sizeof(*p));
}

static uint32_t find(const struct dp_evict *p, int32_t owner, uint64_t addr)
{
    struct dp_pmap_entry *e = dp_pmap_find(&p->map, owner, addr & ~(PG - 1));
    return e && e->value ? (uint32_t)(e->value - 1) : NIL;
}

/* Record for the page, created (list L_NONE) if absent. NIL on ENOMEM. */
static uint32_t get(struct dp_evict *p, int32_t owner, uint64_t addr)
{
    addr &= ~(PG - 1);
    bool created;
    struct dp_pmap_entry *e = dp_pmap_get(&p->map, owner, addr, &created);
    if (!e)
        return NIL;
    if (e->value)
        return (uint32_t)(e->value - 1);
    uint32_t i;
    if (p->free_head != NIL) {
        i = p->free_head;
        p->free_head = p->rec[i].next;
    } else {
        if (p->nrec == p->cap) {
            uint32_t cap = p->cap ? p->cap * 2 : 1024;
            if (cap <= p->cap)
                return NIL;
            void *n = realloc(p->rec, (size_t)cap * sizeof(*p->rec));
            if (!n)
                return NIL;
            p->rec = n;
            p->cap = cap;
        }
        i = p->nrec++;
    }
    memset(&p->rec[i], 0, sizeof(p->rec[i]));
    p->rec[i].addr = addr;
    p->rec[i].owner = owner;
    p->rec[i].list = L_NONE;
    p->rec[i].prev = p->rec[i].next = NIL;
    e->value = (uint64_t)i + 1;
    return i;
}

static void release(struct dp_evict *p, uint32_t i)
{
    unlink_rec(p, i);
    struct dp_evict_rec *r = &p->rec[i];
    struct dp_pmap_entry *e = dp_pmap_find(&p->map, r->owner, r->addr);
    if (e)
        e->value = 0;
    r->list = L_FREE;
    r->next = p->free_head;
    p->free_head = i;
}

static void trim_ghosts(struct dp_evict *p)
{
    while (p->len[L_GHOST] > p->cfg.ghost_max)
        release(p, p->tail[L_GHOST]);
}

/* Keeps the protected list within its share: demote its tail. */
static void balance(struct dp_evict *p)
{
    uint64_t resident = p->len[L_PROB] + p->len[L_PROT];
    uint64_t max = (uint64_t)ceil(p->cfg.protected_frac * (double)resident);
    while (p->len[L_PROT] > max && p->tail[L_PROT] != NIL) {
        push_head(p, L_PROB, p->tail[L_PROT]);
        p->st.demotions++;
    }
}

int dp_evict_record_fault(struct dp_evict *p, int32_t owner, uint64_t addr, uint64_t now)
{
    (void)now;
    uint32_t i = get(p, owner, addr);
    if (i == NIL)
        return -1;
    struct dp_evict_rec *r = &p->rec[i];
    r->faults++;
    p->st.faults++;
    if (r->list == L_GHOST) {
        r->refaults++;
        r->refault_pending = 1;
        p->st.refaults++;
        unlink_rec(p, i);      /* no longer a ghost; installed soon */
        sync_stats(p);
        return 1;
    }
    return 0;
}

int dp_evict_record_install(struct dp_evict *p, int32_t owner, uint64_t addr, uint64_t now)
{
    uint32_t i = get(p, owner, addr);
    if (i == NIL)
        return -1;
    struct dp_evict_rec *r = &p->rec[i];
    if (r->list == L_PROB || r->list == L_PROT || r->list == L_EVICTING) {
        r->t_install = now;     /* already resident: nothing moves */
        return 0;
    }
    if (r->list == L_GHOST) {
        /* installed without a fault (prefetch) while a ghost: not proof of use */
        unlink_rec(p, i);
    }
    r->t_install = now;
    p->st.installs++;
    int hot = r->refault_pending || (p->cfg.hot_hint && r->hint >= p->cfg.hot_hint);
    r->refault_pending = 0;
    push_head(p, hot ? L_PROT : L_PROB, i);
    if (hot)
        p->st.promotions++;
    balance(p);
    sync_stats(p);
    return 0;
}

void dp_evict_record_touch(struct dp_evict *p, int32_t owner, uint64_t addr, uint64_t now)
{
    uint32_t i = find(p, owner, addr);
    if (i == NIL)
        return;
    struct dp_evict_rec *r = &p->rec[i];
    if (r->list != L_PROB && r->list != L_PROT)
        return;
    (void)now;
    if (r->list == L_PROB)
        p->st.promotions++;
    push_head(p, L_PROT, i);
    balance(p);
    sync_stats(p);
}

int dp_evict_record_hint(struct dp_evict *p, int32_t owner, uint64_t addr, uint32_t count)
{
    uint32_t i = get(p, owner, addr);
    if (i == NIL)
        return -1;
    struct dp_evict_rec *r = &p->rec[i];
    r->hint = count;
    if (p->cfg.hot_hint && count >= p->cfg.hot_hint && r->list == L_PROB) {
        push_head(p, L_PROT, i);
        p->st.promotions++;
        balance(p);
        sync_stats(p);
    }
    return 0;
}

size_t dp_evict_pick(struct dp_evict *p, struct dp_evict_key *out, size_t n)
{
    size_t k = 0;
    balance(p);
    while (k < n) {
        uint32_t i = p->tail[L_PROB];
        if (i == NIL) {
            /* only protected pages left: the coldest of them */
            i = p->tail[L_PROT];
            if (i == NIL)
                break;
        }
        struct dp_evict_rec *r = &p->rec[i];
        out[k].owner = r->owner;
        out[k].addr = r->addr;
        k++;
        push_head(p, L_EVICTING, i);
    }
    sync_stats(p);
    return k;
}

void dp_evict_done(struct dp_evict *p, int32_t owner, uint64_t addr, uint64_t now)
{
    uint32_t i = find(p, owner, addr);
    if (i == NIL)
        return;
    struct dp_evict_rec *r = &p->rec[i];
    r->t_evict = now;
    p->st.evictions++;
    push_head(p, L_GHOST, i);
    trim_ghosts(p);
    sync_stats(p);
}

void dp_evict_cancel(struct dp_evict *p, int32_t owner, uint64_t addr)
{
    uint32_t i = find(p, owner, addr);
    if (i == NIL || p->rec[i].list != L_EVICTING)
        return;
    p->st.cancels++;
    push_head(p, L_PROB, i);
    sync_stats(p);
}

void dp_evict_forget(struct dp_evict *p, int32_t owner, uint64_t start, uint64_t end)
{
    start &= ~(PG - 1);
    if (end <= start)
        return;
    uint64_t pages = (end - start + PG - 1) / PG;
    if (pages <= p->nrec) {
        for (uint64_t a = start; a < end; a += PG) {
            uint32_t i = find(p, owner, a);
            if (i != NIL)
                release(p, i);
        }
    } else {
        for (uint32_t i = 0; i < p->nrec; i++) {
            struct dp_evict_rec *r = &p->rec[i];
            if (r->list != L_FREE && r->owner == owner && r->addr >= start && r->addr < end)
                release(p, i);
        }
    }
    sync_stats(p);
}

int dp_evict_move(struct dp_evict *p, int32_t owner, uint64_t from, uint64_t to, uint64_t len)
{
    from &= ~(PG - 1);
    to &= ~(PG - 1);
    if (!len || from == to)
        return 0;
    /* whatever was at the target is gone (mremap ranges never overlap) */
    dp_evict_forget(p, owner, to, to + len);
    /* two passes: unhook every moving record, then re-key them */
    for (uint32_t i = 0; i < p->nrec; i++) {
        struct dp_evict_rec *r = &p->rec[i];
        if (r->list == L_FREE || r->owner != owner || r->addr < from || r->addr - from >= len)
            continue;
        struct dp_pmap_entry *e = dp_pmap_find(&p->map, owner, r->addr);
        if (e)
            e->value = 0;
        r->addr = r->addr - from + to;
        r->moving = 1;
    }
    int rc = 0;
    for (uint32_t i = 0; i < p->nrec; i++) {
        struct dp_evict_rec *r = &p->rec[i];
        if (r->list == L_FREE || !r->moving)
            continue;
        r->moving = 0;
        bool created;
        struct dp_pmap_entry *e = dp_pmap_get(&p->map, owner, r->addr, &created);
        if (!e) {
            /* out of memory: lose the record (only policy history is lost) */
            unlink_rec(p, i);
            r->list = L_FREE;
            r->next = p->free_head;
            p->free_head = i;
            rc = -1;
            continue;
        }
        e->value = (uint64_t)i + 1;
    }
    sync_stats(p);
    return rc;
}

void dp_evict_forget_owner(struct dp_evict *p, int32_t owner)
{
    for (uint32_t i = 0; i < p->nrec; i++)
        if (p->rec[i].list != L_FREE && p->rec[i].owner == owner)
            release(p, i);
    sync_stats(p);
}

int dp_evict_is_protected(const struct dp_evict *p, int32_t owner, uint64_t addr)
{
    uint32_t i = find(p, owner, addr);
    return i != NIL && p->rec[i].list == L_PROT;
}

int dp_evict_check(const struct dp_evict *p)
{
    uint32_t seen[4] = {0};
    for (int l = 0; l < 4; l++) {
        uint32_t prev = NIL;
        for (uint32_t i = p->head[l]; i != NIL; i = p->rec[i].next) {
            if (i >= p->nrec || p->rec[i].list != l || p->rec[i].prev != prev)
                return -1;
            if (++seen[l] > p->nrec)
                return -1;
            prev = i;
        }
        if (p->tail[l] != prev || seen[l] != p->len[l])
            return -1;
    }
    for (uint32_t i = 0; i < p->nrec; i++) {
        const struct dp_evict_rec *r = &p->rec[i];
        if (r->list == L_FREE)
            continue;
        if (find(p, r->owner, r->addr) != i)
            return -1;
    }
    return 0;
}

/* ---- victim buffer ---- */

struct dp_vbuf_ent {
    int32_t owner;
    uint64_t addr;
    uint8_t *data;               /* NULL: free slot */
    uint32_t prev, next;         /* LRU: head newest */
};

void dp_vbuf_init(struct dp_vbuf *v, uint64_t max_bytes)
{
    memset(v, 0, sizeof(*v));
    v->max_bytes = max_bytes;
    v->free_head = v->head = v->tail = NIL;
}

void dp_vbuf_free(struct dp_vbuf *v)
{
    for (uint32_t i = 0; i < v->n; i++)
        free(v->e[i].data);
    free(v->e);
    dp_pmap_free(&v->map);
    memset(v, 0, sizeof(*v));
}

static void vb_unlink(struct dp_vbuf *v, uint32_t i)
{
    struct dp_vbuf_ent *e = &v->e[i];
    if (e->prev != NIL)
        v->e[e->prev].next = e->next;
    else
        v->head = e->next;
    if (e->next != NIL)
        v->e[e->next].prev = e->prev;
    else
        v->tail = e->prev;
    e->prev = e->next = NIL;
}

static void vb_remove(struct dp_vbuf *v, uint32_t i)
{
    struct dp_vbuf_ent *e = &v->e[i];
    vb_unlink(v, i);
    struct dp_pmap_entry *m = dp_pmap_find(&v->map, e->owner, e->addr);
    if (m)
        m->value = 0;
    free(e->data);
    e->data = NULL;
    v->bytes -= PG;
    e->next = v->free_head;
    v->free_head = i;
}

static uint32_t vb_find(const struct dp_vbuf *v, int32_t owner, uint64_t addr)
{
    struct dp_pmap_entry *m = dp_pmap_find(&v->map, owner, addr & ~(PG - 1));
    return m && m->value ? (uint32_t)(m->value - 1) : NIL;
}

int dp_vbuf_put(struct dp_vbuf *v, int32_t owner, uint64_t addr, const void *page)
{
    addr &= ~(PG - 1);
    if (v->max_bytes < PG)
        return -1;
    uint32_t i = vb_find(v, owner, addr);
    if (i != NIL) {
        memcpy(v->e[i].data, page, PG);
        vb_unlink(v, i);
    } else {
        while (v->bytes + PG > v->max_bytes && v->tail != NIL) {
            vb_remove(v, v->tail);
            v->overflows++;
        }
        uint8_t *data = malloc(PG);
        if (!data)
            return -1;
        bool created;
        struct dp_pmap_entry *m = dp_pmap_get(&v->map, owner, addr, &created);
        if (!m) {
            free(data);
            return -1;
        }
        if (v->free_head != NIL) {
            i = v->free_head;
            v->free_head = v->e[i].next;
        } else {
            if (v->n == v->cap) {
                uint32_t cap = v->cap ? v->cap * 2 : 256;
                void *n = realloc(v->e, (size_t)cap * sizeof(*v->e));
                if (!n) {
                    free(data);
                    return -1;
                }
                v->e = n;
                v->cap = cap;
            }
            i = v->n++;
        }
        v->e[i].owner = owner;
        v->e[i].addr = addr;
        v->e[i].data = data;
        memcpy(data, page, PG);
        m->value = (uint64_t)i + 1;
        v->bytes += PG;
    }
    struct dp_vbuf_ent *e = &v->e[i];
    e->prev = NIL;
    e->next = v->head;
    if (v->head != NIL)
        v->e[v->head].prev = i;
    else
        v->tail = i;
    v->head = i;
    v->puts++;
    return 0;
}

int dp_vbuf_get(struct dp_vbuf *v, int32_t owner, uint64_t addr, void *out)
{
    uint32_t i = vb_find(v, owner, addr);
    if (i == NIL) {
        v->misses++;
        return 0;
    }
    memcpy(out, v->e[i].data, PG);
    vb_remove(v, i);
    v->hits++;
    return 1;
}

void dp_vbuf_drop(struct dp_vbuf *v, int32_t owner, uint64_t addr)
{
    uint32_t i = vb_find(v, owner, addr);
    if (i != NIL) {
        vb_remove(v, i);
        v->drops++;
    }
}

void dp_vbuf_drop_range(struct dp_vbuf *v, int32_t owner, uint64_t start, uint64_t end)
{
    start &= ~(PG - 1);
    if (end <= start)
        return;
    if ((end - start) / PG <= v->n) {
        for (uint64_t a = start; a < end; a += PG)
            dp_vbuf_drop(v, owner, a);
        return;
    }
    for (uint32_t i = 0; i < v->n; i++)
        if (v->e[i].data && v->e[i].owner == owner && v->e[i].addr >= start && v->e[i].addr < end) {
            vb_remove(v, i);
            v->drops++;
        }
}
