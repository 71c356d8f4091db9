/* pmap: linear probing over a power-of-two table, grown at 50% load. */
#include "pmap.h"

#include <stdlib.h>
#include <string.h>

#define EMPTY UINT64_MAX

static size_t hash(int32_t pid, uint64_t addr)
{
    uint64_t x = (addr >> 12) ^ ((uint64_t)(uint32_t)pid << 40);
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x;
}

static struct dp_pmap_entry *probe(const struct dp_pmap *m, int32_t pid, uint64_t addr)
{
    size_t mask = m->cap - 1;
    for (size_t i = hash(pid, addr) & mask;; i = (i + 1) & mask) {
        struct dp_pmap_entry *e = &m->slots[i];
        if (e->addr == EMPTY || (e->addr == addr && e->pid == pid))
            return e;
    }
}

static int grow(struct dp_pmap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 1024;
    struct dp_pmap_entry *slots = malloc(cap * sizeof(*slots));
    if (!slots)
        return -1;
    for (size_t i = 0; i < cap; i++)
        slots[i].addr = EMPTY;
    struct dp_pmap old = *m;
    m->slots = slots;
    m->cap = cap;
    for (size_t i = 0; i < old.cap; i++)
        if (old.slots[i].addr != EMPTY)
            *probe(m, old.slots[i].pid, old.slots[i].addr) = old.slots[i];
    free(old.slots);
    return 0;
}

struct dp_pmap_entry *dp_pmap_find(const struct dp_pmap *m, int32_t pid, uint64_t addr)
{
    if (!m->cap)
        return NULL;
    struct dp_pmap_entry *e = probe(m, pid, addr);
    return e->addr == EMPTY ? NULL : e;
}

struct dp_pmap_entry *dp_pmap_get(struct dp_pmap *m, int32_t pid, uint64_t addr, bool *created)
{
    if ((m->len + 1) * 2 > m->cap && grow(m) < 0)
        return NULL;
    struct dp_pmap_entry *e = probe(m, pid, addr);
    *created = e->addr == EMPTY;
    if (*created) {
        memset(e, 0, sizeof(*e));
        e->addr = addr;
        e->pid = pid;
        m->len++;
    }
    return e;
}

void dp_pmap_free(struct dp_pmap *m)
{
    free(m->slots);
    memset(m, 0, sizeof(*m));
}
