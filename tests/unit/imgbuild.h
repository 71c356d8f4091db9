/* imgbuild: writes small synthetic CRIU images for the unit tests (a protobuf
 * encoder just big enough for pstree, mm, pagemap and inventory entries). */
#ifndef IMGBUILD_H
#define IMGBUILD_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image.h"

struct ib {
    uint8_t buf[1 << 16];
    size_t len;
};

static inline void ib_bytes(struct ib *b, const void *p, size_t n)
{
    if (b->len + n > sizeof(b->buf))
        abort();
    memcpy(b->buf + b->len, p, n);
    b->len += n;
}

static inline void ib_u32(struct ib *b, uint32_t v)
{
    uint8_t p[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    ib_bytes(b, p, 4);
}

static inline void ib_varint(struct ib *b, uint64_t v)
{
    do {
        uint8_t c = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v)
            c |= 0x80;
        ib_bytes(b, &c, 1);
    } while (v);
}

static inline void ib_vfield(struct ib *b, uint32_t num, uint64_t v)
{
    ib_varint(b, (uint64_t)num << 3);
    ib_varint(b, v);
}

static inline void ib_lfield(struct ib *b, uint32_t num, const struct ib *msg)
{
    ib_varint(b, (uint64_t)num << 3 | 2);
    ib_varint(b, msg->len);
    ib_bytes(b, msg->buf, msg->len);
}

/* a framed entry: u32 size, then the message */
static inline void ib_entry(struct ib *b, const struct ib *msg)
{
    ib_u32(b, (uint32_t)msg->len);
    ib_bytes(b, msg->buf, msg->len);
}

static inline void ib_header(struct ib *b, uint32_t magic)
{
    b->len = 0;
    if (magic != DP_INVENTORY_MAGIC)
        ib_u32(b, DP_IMG_COMMON_MAGIC);
    ib_u32(b, magic);
}

static inline void ib_inventory(struct ib *b)
{
    struct ib m = {.len = 0};
    ib_header(b, DP_INVENTORY_MAGIC);
    ib_vfield(&m, 1, DP_IMG_VERSION_V1_1);
    ib_entry(b, &m);
}

static inline void ib_pstree_entry(struct ib *b, uint32_t pid, uint32_t ppid, uint32_t nthreads)
{
    struct ib m = {.len = 0};
    ib_vfield(&m, 1, pid);
    ib_vfield(&m, 2, ppid);
    ib_vfield(&m, 3, pid);
    ib_vfield(&m, 4, pid);
    for (uint32_t i = 0; i < nthreads; i++)
        ib_vfield(&m, 5, pid + i);
    ib_entry(b, &m);
}

struct ib_vma {
    uint64_t start, end;
    uint32_t flags, status;
};

#define IB_ANON_VMA(s, e) {(s), (e), 0x22 /* MAP_PRIVATE|MAP_ANONYMOUS */, \
                           DP_VMA_AREA_REGULAR | DP_VMA_ANON_PRIVATE}
#define IB_FILE_VMA(s, e) {(s), (e), 0x02 /* MAP_PRIVATE */, DP_VMA_AREA_REGULAR | DP_VMA_FILE_PRIVATE}

static inline void ib_mm(struct ib *b, const struct ib_vma *v, size_t n)
{
    struct ib m = {.len = 0};
    ib_header(b, DP_MM_MAGIC);
    for (int f = 1; f <= 11; f++)
        ib_vfield(&m, (uint32_t)f, 0);
    ib_vfield(&m, 12, 1);
    for (size_t i = 0; i < n; i++) {
        struct ib e = {.len = 0};
        ib_vfield(&e, 1, v[i].start);
        ib_vfield(&e, 2, v[i].end);
        ib_vfield(&e, 3, 0);
        ib_vfield(&e, 4, 0);
        ib_vfield(&e, 5, 3);
        ib_vfield(&e, 6, v[i].flags);
        ib_vfield(&e, 7, v[i].status);
        ib_vfield(&e, 8, 1); /* sint64 -1 */
        ib_lfield(&m, 14, &e);
    }
    ib_entry(b, &m);
}

static inline void ib_pagemap_head(struct ib *b, uint32_t pages_id)
{
    struct ib m = {.len = 0};
    ib_header(b, DP_PAGEMAP_MAGIC);
    ib_vfield(&m, 1, pages_id);
    ib_entry(b, &m);
}

static inline void ib_pagemap_entry(struct ib *b, uint64_t vaddr, uint64_t nr, uint32_t flags)
{
    struct ib m = {.len = 0};
    ib_vfield(&m, 1, vaddr);
    ib_vfield(&m, 2, 0);
    ib_vfield(&m, 4, flags);
    ib_vfield(&m, 5, nr);
    ib_entry(b, &m);
}

static inline int ib_write(const char *dir, const char *name, const void *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int rc = fwrite(p, 1, n, f) == n ? 0 : -1;
    return fclose(f) == 0 ? rc : -1;
}

/* Pages whose every 64-bit word is tags[i]. */
static inline int ib_write_pages(const char *dir, const char *name, const uint64_t *tags, size_t n)
{
    uint64_t page[512];
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    for (size_t i = 0; i < n; i++) {
        for (int w = 0; w < 512; w++)
            page[w] = tags[i];
        if (fwrite(page, sizeof(page), 1, f) != 1) {
            fclose(f);
            return -1;
        }
    }
    return fclose(f);
}

/* A two-level pre-dump chain under root: root/top with top/parent -> ../pre.
 * Task 1, VMAs: anon 0x10000-0x20000 (lazy), file 0x400000-0x401000.
 * pre:  0x10000 x4 PRESENT|LAZY, words 100..103, pages-7.img
 * top:  0x10000 PRESENT|LAZY (200), 0x11000 x2 PARENT (-> 101, 102),
 *       0x13000 PRESENT|LAZY (203), 0x400000 PRESENT (300), pages-1.img */
static inline int ib_chain(const char *root)
{
    char top[4096 - 64], pre[4096 - 64], link[4096];
    struct ib *b = malloc(sizeof(*b));
    int rc = -1;
    if (!b)
        return -1;
    snprintf(top, sizeof(top), "%.4000s/top", root);
    snprintf(pre, sizeof(pre), "%.4000s/pre", root);
    snprintf(link, sizeof(link), "%s/parent", top);
    if (mkdir(top, 0755) < 0 || mkdir(pre, 0755) < 0 || symlink("../pre", link) < 0)
        goto out;
    ib_inventory(b);
    if (ib_write(top, "inventory.img", b->buf, b->len) || ib_write(pre, "inventory.img", b->buf, b->len))
        goto out;
    ib_header(b, DP_PSTREE_MAGIC);
    ib_pstree_entry(b, 1, 0, 1);
    if (ib_write(top, "pstree.img", b->buf, b->len))
        goto out;
    struct ib_vma vmas[] = {IB_ANON_VMA(0x10000, 0x20000), IB_FILE_VMA(0x400000, 0x401000)};
    ib_mm(b, vmas, 2);
    if (ib_write(top, "mm-1.img", b->buf, b->len))
        goto out;
    ib_pagemap_head(b, 7);
    ib_pagemap_entry(b, 0x10000, 4, DP_PE_PRESENT | DP_PE_LAZY);
    if (ib_write(pre, "pagemap-1.img", b->buf, b->len))
        goto out;
    uint64_t pre_tags[] = {100, 101, 102, 103};
    if (ib_write_pages(pre, "pages-7.img", pre_tags, 4))
        goto out;
    ib_pagemap_head(b, 1);
    ib_pagemap_entry(b, 0x10000, 1, DP_PE_PRESENT | DP_PE_LAZY);
    ib_pagemap_entry(b, 0x11000, 2, DP_PE_PARENT);
    ib_pagemap_entry(b, 0x13000, 1, DP_PE_PRESENT | DP_PE_LAZY);
    ib_pagemap_entry(b, 0x400000, 1, DP_PE_PRESENT);
    if (ib_write(top, "pagemap-1.img", b->buf, b->len))
        goto out;
    uint64_t top_tags[] = {200, 203, 300};
    rc = ib_write_pages(top, "pages-1.img", top_tags, 3);
out:
    free(b);
    return rc;
}

#endif
