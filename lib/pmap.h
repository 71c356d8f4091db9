/* pmap: an open-addressing hash map from a page (pid, page-aligned address)
 * to a 64-bit value. Used for the write-back overlay index and the access
 * log, which both hold one entry per page ever touched. */
#ifndef DP_PMAP_H
#define DP_PMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dp_pmap_entry {
    uint64_t addr;   /* page address; ~0 marks an empty slot */
    int32_t pid;
    uint32_t aux;    /* free for the user (e.g. a count) */
    uint64_t value;
    uint64_t value2;
};

struct dp_pmap {
    struct dp_pmap_entry *slots;
    size_t cap, len;  /* cap is a power of two */
};

/* Returns the entry for (pid, addr), inserting a zeroed one if absent
 * (*created says which). NULL only if out of memory. The pointer is valid
 * until the next insertion. */
struct dp_pmap_entry *dp_pmap_get(struct dp_pmap *m, int32_t pid, uint64_t addr, bool *created);
struct dp_pmap_entry *dp_pmap_find(const struct dp_pmap *m, int32_t pid, uint64_t addr);
void dp_pmap_free(struct dp_pmap *m);

#endif
