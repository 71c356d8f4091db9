/* lazyfix: gives back to a dump the lazy memory CRIU's is_stack() took away.
 *
 * criu dump marks a page PE_LAZY when its VMA can be restored lazily
 * (vma_entry_can_be_lazy) and is_stack(item, vaddr) is false. is_stack()
 * (criu/mem.c, since "lazy-pages: fix stack detection", 2019, still in 4.2)
 * tests (sp ^ vaddr) & ~PAGE_MASK, the offset inside the page, instead of
 * the page: it is true for *every* page as soon as one thread's stack
 * pointer sits exactly on a page boundary. The whole dump is then written
 * non-lazy and `criu restore --lazy-pages` copies all of it up front: the
 * restore is correct but not lazy, the lazy-pages daemon serves nothing, a
 * budget never evicts. A main thread's stack top is randomized in 16-byte
 * steps, so this hits about one dump in 256.
 *
 * The fix is the dump CRIU makes in the other 255 cases: every page with
 * data in the pages file (PE_PRESENT, not PE_PARENT) inside a VMA the
 * restore registers with userfaultfd (dp_vma_is_lazy, CRIU's rule) gets
 * PE_LAZY too; an entry that spans such a VMA and another one is split at
 * the boundary. PE_PRESENT stays, so every later entry keeps its offset in
 * the pages file and CRIU's reader skips the same bytes. A dump that has
 * no such page is left byte for byte as it was. Pre-dump parents are not
 * touched: their pages are reached through PE_PARENT entries, which CRIU
 * restores eagerly either way. */
#ifndef DP_LAZYFIX_H
#define DP_LAZYFIX_H

#include <stddef.h>
#include <stdint.h>

#include "image.h"
#include "proto.h"
#include "util.h"

/* Pure: the pagemap image buf (name for error messages, img_version from
 * the inventory) of a task with VMAs vmas, rewritten into out (appended)
 * with PE_LAZY on every PRESENT, non-PARENT page of a lazy VMA. *marked is
 * how many pages gained PE_LAZY (0: out holds buf unchanged). 0, or -1 with
 * err on a malformed image or out of memory. */
int dp_lazyfix_pagemap(const char *name, const uint8_t *buf, size_t len, uint32_t img_version,
                       const struct dp_vma *vmas, size_t nr_vmas, struct dp_buf *out, uint64_t *marked,
                       struct dp_err *err);

/* The images in dir (just written by criu dump): each task's pagemap
 * rewritten in place (a new file renamed over the old one) when it has
 * pages to mark. *marked: pages marked over all tasks. 0, or -1 with err
 * (the images are then as criu wrote them). */
int dp_lazyfix_dir(const char *dir, uint64_t *marked, struct dp_err *err);

#endif
