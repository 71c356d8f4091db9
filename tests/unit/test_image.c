/* Unit tests of the CRIU image reader: a real dump of tinymem
 * (tests/fixtures/images-tinymem), synthetic images and malformed buffers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image.h"
#include "imgbuild.h"
#include "pb.h"
#include "../fixtures/tinymem.h"

#define PG 4096ULL
#define FIXTURE "tests/fixtures/images-tinymem"

static const struct dp_range *range_of(const struct dp_task_image *t, uint64_t a)
{
    for (size_t i = 0; i < t->nr_lazy; i++)
        if (a >= t->lazy[i].start && a < t->lazy[i].end)
            return &t->lazy[i];
    return NULL;
}

/* Linear reference for dp_task_locate. */
static void locate_slow(const struct dp_task_image *t, uint64_t a, struct dp_page_loc *loc)
{
    memset(loc, 0, sizeof(*loc));
    loc->fd = -1;
    const struct dp_range *r = range_of(t, a);
    if (!r) {
        loc->kind = DP_PAGE_NOT_LAZY;
        return;
    }
    loc->kind = DP_PAGE_ZERO;
    for (size_t i = 0; i < t->nr_segs; i++) {
        const struct dp_page_seg *s = &t->segs[i];
        if (a >= s->vaddr && a < s->vaddr + s->nr_pages * PG) {
            if (s->file >= 0) {
                loc->kind = DP_PAGE_DATA;
                loc->fd = s->fd;
                loc->offset = s->offset + (a - s->vaddr);
            }
            return;
        }
    }
}

static void fixture_opens(void **state)
{
    (void)state;
    struct dp_checkpoint *cp;
    struct dp_err err = {{0}};
    assert_int_equal(dp_checkpoint_open(FIXTURE, &cp, &err), 0);
    assert_int_equal(cp->img_version, 2);
    assert_int_equal(cp->nr_tasks, 1);
    const struct dp_task_image *t = &cp->tasks[0];
    assert_ptr_equal(dp_checkpoint_find_task(cp, 1), t);
    assert_null(dp_checkpoint_find_task(cp, 2));
    assert_int_equal(t->pid, 1);
    assert_int_equal(t->nr_threads, 1);
    assert_int_equal(t->threads[0], 1);
    assert_true(t->pages_fd >= 0);
    assert_true(t->nr_vmas > 5);
    /* tinymem's region is one lazy range of its own */
    const struct dp_range *r = range_of(t, TINYMEM_ADDR);
    assert_non_null(r);
    assert_int_equal(r->start, TINYMEM_ADDR);
    assert_int_equal(r->end, TINYMEM_ADDR + TINYMEM_PAGES * PG);
    /* lazy ranges: sorted, page aligned, inside VMAs */
    for (size_t i = 0; i < t->nr_lazy; i++) {
        assert_true(t->lazy[i].start < t->lazy[i].end);
        assert_int_equal(t->lazy[i].start % PG, 0);
        if (i)
            assert_true(t->lazy[i - 1].end <= t->lazy[i].start);
    }
    /* the PRESENT runs fill the pages file exactly, back to back */
    uint64_t off = 0;
    for (size_t i = 0; i < t->nr_runs; i++)
        if (t->runs[i].flags & DP_PE_PRESENT) {
            assert_int_equal(t->runs[i].data_offset, off);
            off += t->runs[i].nr_pages * PG;
        }
    struct stat st;
    assert_int_equal(fstat(t->pages_fd, &st), 0);
    assert_int_equal((uint64_t)st.st_size, off);
    assert_true(cp->lazy_bytes >= TINYMEM_PAGES * PG);
    assert_true(cp->image_bytes >= off);
    dp_checkpoint_close(cp);
}

/* A plain `criu dump` marks private anonymous pages PE_LAZY|PE_PRESENT: the
 * data is in pages-N.img, and CRIU may still restore them lazily. */
static void fixture_lazy_entries_have_data(void **state)
{
    (void)state;
    struct dp_checkpoint *cp;
    struct dp_err err;
    assert_int_equal(dp_checkpoint_open(FIXTURE, &cp, &err), 0);
    const struct dp_task_image *t = &cp->tasks[0];
    size_t lazy = 0, region = 0;
    for (size_t i = 0; i < t->nr_runs; i++) {
        const struct dp_page_run *r = &t->runs[i];
        if (r->flags & DP_PE_LAZY) {
            lazy++;
            assert_true(r->flags & DP_PE_PRESENT);
            assert_non_null(range_of(t, r->vaddr));
        }
        if (r->vaddr >= TINYMEM_ADDR && r->vaddr < TINYMEM_ADDR + TINYMEM_PAGES * PG) {
            region++;
            assert_int_equal(r->flags, DP_PE_LAZY | DP_PE_PRESENT);
        }
    }
    assert_true(lazy > 0);
    assert_int_equal(region, TINYMEM_PAGES / 4);   /* every fourth page is a gap */
    dp_checkpoint_close(cp);
}

/* Every page of tinymem's region: DATA with exactly the bytes tinymem wrote,
 * or ZERO for the pages it never touched. */
static void fixture_pages_have_tinymem_content(void **state)
{
    (void)state;
    struct dp_checkpoint *cp;
    struct dp_err err;
    assert_int_equal(dp_checkpoint_open(FIXTURE, &cp, &err), 0);
    const struct dp_task_image *t = &cp->tasks[0];
    uint64_t page[512];
    for (uint64_t i = 0; i < TINYMEM_PAGES; i++) {
        struct dp_page_loc loc;
        dp_task_locate(t, TINYMEM_ADDR + i * PG, &loc);
        if (!tinymem_page_has_data(i)) {
            assert_int_equal(loc.kind, DP_PAGE_ZERO);
            assert_int_equal(loc.run_pages_left, 1);
            continue;
        }
        assert_int_equal(loc.kind, DP_PAGE_DATA);
        assert_int_equal(loc.fd, t->pages_fd);
        assert_int_equal(loc.run_pages_left, 3 - i % 4);
        assert_int_equal(pread(loc.fd, page, sizeof(page), (off_t)loc.offset), (ssize_t)sizeof(page));
        for (uint64_t w = 0; w < 512; w++)
            if (page[w] != tinymem_word(i, w))
                fail_msg("page %llu word %llu: %#llx, want %#llx", (unsigned long long)i,
                         (unsigned long long)w, (unsigned long long)page[w],
                         (unsigned long long)tinymem_word(i, w));
    }
    dp_checkpoint_close(cp);
}

/* The binary searches agree with a linear scan on every page of every VMA
 * and around it. */
static void fixture_locate_matches_linear_scan(void **state)
{
    (void)state;
    struct dp_checkpoint *cp;
    struct dp_err err;
    assert_int_equal(dp_checkpoint_open(FIXTURE, &cp, &err), 0);
    const struct dp_task_image *t = &cp->tasks[0];
    size_t checked = 0, data = 0;
    for (size_t v = 0; v < t->nr_vmas; v++) {
        uint64_t lo = t->vmas[v].start - 2 * PG, hi = t->vmas[v].end + 2 * PG;
        if (hi - lo > 4096 * PG)
            hi = lo + 4096 * PG;
        for (uint64_t a = lo; a < hi; a += PG) {
            struct dp_page_loc fast, slow;
            dp_task_locate(t, a, &fast);
            locate_slow(t, a, &slow);
            assert_int_equal(fast.kind, slow.kind);
            if (fast.kind == DP_PAGE_DATA) {
                data++;
                assert_int_equal(fast.fd, slow.fd);
                assert_int_equal(fast.offset, slow.offset);
            }
            if (fast.kind != DP_PAGE_NOT_LAZY) {
                /* the run stays inside the lazy range and keeps its kind */
                const struct dp_range *r = range_of(t, a);
                assert_true(a + fast.run_pages_left * PG <= r->end);
                struct dp_page_loc last;
                dp_task_locate(t, a + (fast.run_pages_left - 1) * PG, &last);
                assert_int_equal(last.kind, fast.kind);
                if (fast.kind == DP_PAGE_DATA)
                    assert_int_equal(last.offset, fast.offset + (fast.run_pages_left - 1) * PG);
            }
            checked++;
        }
    }
    assert_true(checked > 100);
    assert_true(data >= TINYMEM_PAGES / 4 * 3);
    dp_checkpoint_close(cp);
}

/* ---- malformed input: every error names the file and a byte offset ---- */

static void expect_error_at(const char *msg, const char *name, const char *at)
{
    if (!strstr(msg, name) || !strstr(msg, at))
        fail_msg("error \"%s\" should name \"%s\" and \"%s\"", msg, name, at);
}

static int parse_any(const char *which, const uint8_t *b, size_t n, struct dp_err *err)
{
    uint32_t v, id;
    uint64_t bytes;
    size_t nr;
    int rc;
    if (!strcmp(which, "inventory.img"))
        return dp_image_parse_inventory(which, b, n, &v, err);
    if (!strcmp(which, "pstree.img")) {
        struct dp_task_image *t;
        rc = dp_image_parse_pstree(which, b, n, 2, &t, &nr, err);
        if (rc == 0) {
            for (size_t i = 0; i < nr; i++)
                free(t[i].threads);
            free(t);
        }
        return rc;
    }
    if (!strcmp(which, "mm-1.img")) {
        struct dp_vma *vm;
        rc = dp_image_parse_mm(which, b, n, 2, &vm, &nr, err);
        free(rc == 0 ? vm : NULL);
        return rc;
    }
    struct dp_page_run *runs;
    rc = dp_image_parse_pagemap(which, b, n, 2, &id, &runs, &nr, &bytes, err);
    free(rc == 0 ? runs : NULL);
    return rc;
}

/* Every prefix of the fixture's images either parses (it ends on an entry
 * boundary) or fails with the file name and "at byte". */
static void truncated_fixture_images(void **state)
{
    (void)state;
    const char *names[] = {"inventory.img", "pstree.img", "mm-1.img", "pagemap-1.img"};
    for (size_t k = 0; k < DP_ARRAY_LEN(names); k++) {
        char path[256];
        uint8_t *buf;
        size_t len;
        struct dp_err err;
        snprintf(path, sizeof(path), FIXTURE "/%s", names[k]);
        assert_int_equal(dp_read_file(path, &buf, &len, &err), 0);
        assert_int_equal(parse_any(names[k], buf, len, &err), 0);
        size_t failures = 0;
        for (size_t n = 0; n < len; n++) {
            uint8_t *copy = malloc(n ? n : 1);   /* exact size: ASan sees overreads */
            memcpy(copy, buf, n);
            if (parse_any(names[k], copy, n, &err) < 0) {
                expect_error_at(err.msg, names[k], "at byte ");
                failures++;
            }
            free(copy);
        }
        assert_true(failures > len / 2);
        free(buf);
    }
}

static void bad_magics(void **state)
{
    (void)state;
    struct ib b;
    struct dp_err err;
    uint32_t id;
    uint64_t bytes;
    size_t nr;
    struct dp_page_run *runs;

    ib_pagemap_head(&b, 1);
    b.buf[0] ^= 1;
    assert_int_equal(dp_image_parse_pagemap("pagemap-7.img", b.buf, b.len, 2, &id, &runs, &nr, &bytes, &err), -1);
    expect_error_at(err.msg, "pagemap-7.img", "at byte 0:");

    ib_pagemap_head(&b, 1);
    b.buf[5] ^= 1;
    assert_int_equal(dp_image_parse_pagemap("pagemap-7.img", b.buf, b.len, 2, &id, &runs, &nr, &bytes, &err), -1);
    expect_error_at(err.msg, "pagemap-7.img", "at byte 4:");

    /* an mm image given where a pagemap is expected */
    struct ib_vma v[] = {IB_ANON_VMA(0x1000, 0x3000)};
    ib_mm(&b, v, 1);
    assert_int_equal(dp_image_parse_pagemap("pagemap-7.img", b.buf, b.len, 2, &id, &runs, &nr, &bytes, &err), -1);
    expect_error_at(err.msg, "pagemap-7.img", "at byte 4:");

    /* version 1 images have no common magic */
    b.len = 0;
    ib_u32(&b, DP_PAGEMAP_MAGIC);
    struct ib m = {.len = 0};
    ib_vfield(&m, 1, 3);
    ib_entry(&b, &m);
    assert_int_equal(dp_image_parse_pagemap("p", b.buf, b.len, 1, &id, &runs, &nr, &bytes, &err), 0);
    assert_int_equal(id, 3);
    assert_int_equal(nr, 0);
    free(runs);

    /* inventory with an unknown version */
    b.len = 0;
    ib_u32(&b, DP_INVENTORY_MAGIC);
    m.len = 0;
    ib_vfield(&m, 1, 9);
    ib_entry(&b, &m);
    assert_int_equal(dp_image_parse_inventory("inventory.img", b.buf, b.len, &id, &err), -1);
    expect_error_at(err.msg, "inventory.img", "at byte 8:");
}

static void bad_entries(void **state)
{
    (void)state;
    struct ib b, m;
    struct dp_err err;
    uint32_t id;
    uint64_t bytes;
    size_t nr;
    struct dp_page_run *runs;

    /* entry size larger than the file: offset of the size field */
    ib_pagemap_head(&b, 1);
    ib_u32(&b, 1000);
    assert_int_equal(dp_image_parse_pagemap("pm", b.buf, b.len, 2, &id, &runs, &nr, &bytes, &err), -1);
    expect_error_at(err.msg, "pm", "at byte 14:");

    /* a varint that never ends inside the entry: offset of the value */
    ib_pagemap_head(&b, 1);
    m.len = 0;
    ib_varint(&m, 1 << 3);
    uint8_t ff[3] = {0xff, 0xff, 0xff};
    ib_bytes(&m, ff, 3);
    ib_entry(&b, &m);
    assert_int_equal(dp_image_parse_pagemap("pm", b.buf, b.len, 2, &id, &runs, &nr, &bytes, &err), -1);
    expect_error_at(err.msg, "pm", "at byte 19:");

    /* group wire type */
    ib_pagemap_head(&b, 1);
    m.len = 0;
    ib_varint(&m, 1 << 3 | 3);
    ib_entry(&b, &m);
    assert_int_equal(dp_image_parse_pagemap("pm", b.buf, b.len, 2, &id, &runs, &nr, &bytes, &err), -1);
    expect_error_at(err.msg, "pm", "at byte 18:");

    /* length-delimited field overrunning its message */
    ib_pagemap_head(&b, 1);
    m.len = 0;
    ib_varint(&m, 9 << 3 | 2);
    ib_varint(&m, 50);
    ib_entry(&b, &m);
    assert_int_equal(dp_image_parse_pagemap("pm", b.buf, b.len, 2, &id, &runs, &nr, &bytes, &err), -1);
    expect_error_at(err.msg, "pm", "at byte 19:");

    /* vaddr with the wrong wire type */
    ib_pagemap_head(&b, 1);
    m.len = 0;
    ib_varint(&m, 1 << 3 | 5);
    ib_u32(&m, 0);
    ib_entry(&b, &m);
    assert_int_equal(dp_image_parse_pagemap("pm", b.buf, b.len, 2, &id, &runs, &nr, &bytes, &err), -1);
    expect_error_at(err.msg, "pm", "at byte 18:");

    /* overlapping entries: offset of the second entry */
    ib_pagemap_head(&b, 1);
    ib_pagemap_entry(&b, 0x10000, 4, DP_PE_PRESENT);
    size_t second = b.len;
    ib_pagemap_entry(&b, 0x12000, 1, DP_PE_PRESENT);
    assert_int_equal(dp_image_parse_pagemap("pm", b.buf, b.len, 2, &id, &runs, &nr, &bytes, &err), -1);
    char at[32];
    snprintf(at, sizeof(at), "at byte %zu:", second);
    expect_error_at(err.msg, "pm", at);

    /* unaligned vaddr, unknown flags */
    ib_pagemap_head(&b, 1);
    ib_pagemap_entry(&b, 0x10001, 1, DP_PE_PRESENT);
    assert_int_equal(dp_image_parse_pagemap("pm", b.buf, b.len, 2, &id, &runs, &nr, &bytes, &err), -1);
    expect_error_at(err.msg, "pm", "at byte 14:");
    ib_pagemap_head(&b, 1);
    ib_pagemap_entry(&b, 0x10000, 1, 8);
    assert_int_equal(dp_image_parse_pagemap("pm", b.buf, b.len, 2, &id, &runs, &nr, &bytes, &err), -1);
    expect_error_at(err.msg, "pm", "at byte 14:");

    /* pstree entry without ppid; a duplicate pid */
    struct dp_task_image *t;
    ib_header(&b, DP_PSTREE_MAGIC);
    m.len = 0;
    ib_vfield(&m, 1, 5);
    ib_entry(&b, &m);
    assert_int_equal(dp_image_parse_pstree("pstree.img", b.buf, b.len, 2, &t, &nr, &err), -1);
    expect_error_at(err.msg, "pstree.img", "at byte 8:");
    ib_header(&b, DP_PSTREE_MAGIC);
    ib_pstree_entry(&b, 5, 0, 1);
    size_t dup = b.len;
    ib_pstree_entry(&b, 5, 0, 1);
    assert_int_equal(dp_image_parse_pstree("pstree.img", b.buf, b.len, 2, &t, &nr, &err), -1);
    snprintf(at, sizeof(at), "at byte %zu:", dup);
    expect_error_at(err.msg, "pstree.img", at);

    /* mm: vmas out of order, empty vma */
    struct dp_vma *vm;
    struct ib_vma unsorted[] = {IB_ANON_VMA(0x5000, 0x6000), IB_ANON_VMA(0x1000, 0x2000)};
    ib_mm(&b, unsorted, 2);
    assert_int_equal(dp_image_parse_mm("mm-3.img", b.buf, b.len, 2, &vm, &nr, &err), -1);
    expect_error_at(err.msg, "mm-3.img", "at byte ");
    struct ib_vma empty[] = {IB_ANON_VMA(0x5000, 0x5000)};
    ib_mm(&b, empty, 1);
    assert_int_equal(dp_image_parse_mm("mm-3.img", b.buf, b.len, 2, &vm, &nr, &err), -1);
    expect_error_at(err.msg, "mm-3.img", "at byte ");
}

/* Packed and unpacked repeated fields both decode (threads). */
static void pstree_packed_threads(void **state)
{
    (void)state;
    struct ib b, m, packed;
    struct dp_err err;
    struct dp_task_image *t;
    size_t nr;
    ib_header(&b, DP_PSTREE_MAGIC);
    ib_pstree_entry(&b, 10, 0, 3);
    m.len = 0;
    ib_vfield(&m, 1, 20);
    ib_vfield(&m, 2, 10);
    ib_vfield(&m, 3, 10);
    ib_vfield(&m, 4, 10);
    packed.len = 0;
    ib_varint(&packed, 20);
    ib_varint(&packed, 300);
    ib_lfield(&m, 5, &packed);
    ib_entry(&b, &m);
    assert_int_equal(dp_image_parse_pstree("pstree.img", b.buf, b.len, 2, &t, &nr, &err), 0);
    assert_int_equal(nr, 2);
    assert_int_equal(t[0].nr_threads, 3);
    assert_int_equal(t[0].threads[2], 12);
    assert_int_equal(t[1].pid, 20);
    assert_int_equal(t[1].ppid, 10);
    assert_int_equal(t[1].nr_threads, 2);
    assert_int_equal(t[1].threads[1], 300);
    for (size_t i = 0; i < nr; i++)
        free(t[i].threads);
    free(t);
}

/* Older images: in_parent, compat_nr_pages, no flags (= PRESENT). */
static void pagemap_compat_fields(void **state)
{
    (void)state;
    struct ib b, m;
    struct dp_err err;
    uint32_t id;
    uint64_t bytes;
    size_t nr;
    struct dp_page_run *runs;
    ib_pagemap_head(&b, 4);
    m.len = 0;
    ib_vfield(&m, 1, 0x10000);
    ib_vfield(&m, 2, 2);
    ib_entry(&b, &m);
    m.len = 0;
    ib_vfield(&m, 1, 0x20000);
    ib_vfield(&m, 2, 3);
    ib_vfield(&m, 3, 1);
    ib_entry(&b, &m);
    ib_pagemap_entry(&b, 0x30000, 1, DP_PE_PRESENT | DP_PE_LAZY);
    assert_int_equal(dp_image_parse_pagemap("pm", b.buf, b.len, 2, &id, &runs, &nr, &bytes, &err), 0);
    assert_int_equal(id, 4);
    assert_int_equal(nr, 3);
    assert_int_equal(runs[0].flags, DP_PE_PRESENT);
    assert_int_equal(runs[0].nr_pages, 2);
    assert_int_equal(runs[1].flags, DP_PE_PARENT);
    assert_int_equal(runs[1].nr_pages, 3);
    assert_int_equal(runs[2].data_offset, 2 * PG);   /* the PARENT run takes no room */
    assert_int_equal(bytes, 3 * PG);
    free(runs);
}

static void vma_laziness(void **state)
{
    (void)state;
    struct dp_vma anon = {.start = 0x1000, .end = 0x2000, .flags = 0x22,
                          .status = DP_VMA_AREA_REGULAR | DP_VMA_ANON_PRIVATE};
    assert_true(dp_vma_is_lazy(&anon));
    struct dp_vma v = anon;
    v.flags |= 0x2000;   /* MAP_LOCKED */
    assert_false(dp_vma_is_lazy(&v));
    v = anon;
    v.flags |= 0x40000;  /* MAP_HUGETLB */
    assert_false(dp_vma_is_lazy(&v));
    v = anon;
    v.status |= DP_VMA_AREA_VDSO;
    assert_false(dp_vma_is_lazy(&v));
    v = anon;
    v.status |= DP_VMA_AREA_VVAR;
    assert_false(dp_vma_is_lazy(&v));
    v = anon;
    v.flags = 0x21;      /* MAP_SHARED|MAP_ANONYMOUS */
    v.status = DP_VMA_AREA_REGULAR | (1u << 8);
    assert_false(dp_vma_is_lazy(&v));
    v = anon;
    v.flags = 0x02;      /* private file mapping */
    v.status = DP_VMA_AREA_REGULAR | DP_VMA_FILE_PRIVATE;
    assert_false(dp_vma_is_lazy(&v));
    v = anon;
    v.status |= DP_VMA_AREA_STACK;
    assert_true(dp_vma_is_lazy(&v));
    v.status |= DP_VMA_EXT_PLUGIN;
    assert_false(dp_vma_is_lazy(&v));
}

/* ---- the pre-dump chain ---- */

static void resolve_through_parent(void **state)
{
    (void)state;
    struct dp_err err;
    /* parent: data for 0x10000..0x14000 at offsets 0.., a hole at 0x14000 */
    struct dp_page_run prun[] = {
        {0x10000, 2, DP_PE_PRESENT | DP_PE_LAZY, 0},
        {0x12000, 2, DP_PE_PRESENT | DP_PE_LAZY, 2 * PG},
        {0x14000, 1, 0, 0},
    };
    struct dp_page_seg *pseg, *seg;
    size_t np, n;
    assert_int_equal(dp_image_resolve("parent/pm", prun, 3, 1, NULL, 0, &pseg, &np, &err), 0);
    assert_int_equal(np, 3);
    struct dp_page_run run[] = {
        {0x8000, 1, DP_PE_PRESENT, 0},
        {0x11000, 4, DP_PE_PARENT, 0},       /* spans two parent entries and the hole */
    };
    assert_int_equal(dp_image_resolve("pm", run, 2, 0, pseg, np, &seg, &n, &err), 0);
    assert_int_equal(n, 4);
    assert_int_equal(seg[0].file, 0);
    assert_int_equal(seg[1].vaddr, 0x11000);
    assert_int_equal(seg[1].nr_pages, 1);
    assert_int_equal(seg[1].file, 1);
    assert_int_equal(seg[1].offset, PG);
    assert_int_equal(seg[1].flags, DP_PE_PARENT);
    assert_int_equal(seg[2].vaddr, 0x12000);
    assert_int_equal(seg[2].nr_pages, 2);
    assert_int_equal(seg[2].offset, 2 * PG);
    assert_int_equal(seg[3].vaddr, 0x14000);
    assert_int_equal(seg[3].file, -1);
    free(seg);

    /* the parent lacks a page */
    struct dp_page_run beyond[] = {{0x14000, 2, DP_PE_PARENT, 0}};
    assert_int_equal(dp_image_resolve("pm", beyond, 1, 0, pseg, np, &seg, &n, &err), -1);
    expect_error_at(err.msg, "pm", "0x15000");
    assert_int_equal(dp_image_resolve("pm", beyond, 1, 0, NULL, 0, &seg, &n, &err), -1);
    /* lazy without data: dumped with --lazy-pages */
    struct dp_page_run nodata[] = {{0x14000, 2, DP_PE_LAZY, 0}};
    assert_int_equal(dp_image_resolve("pm", nodata, 1, 0, NULL, 0, &seg, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(seg[0].file, DP_SEG_FILE_LIVE);
    assert_int_equal(seg[0].nr_pages, 2);
    /* such a page is DATA at (live_fd, address) once the tree is attached,
     * and never DATA from the images without it */
    struct dp_range lr = {0x14000, 0x16000};
    struct dp_task_image lt = {.segs = seg, .nr_segs = n, .lazy = &lr, .nr_lazy = 1, .live_fd = -1};
    struct dp_page_loc loc;
    dp_task_locate(&lt, 0x15000, &loc);
    assert_int_not_equal(loc.kind, DP_PAGE_DATA);
    lt.live_fd = 77;
    dp_task_locate(&lt, 0x15000, &loc);
    assert_int_equal(loc.kind, DP_PAGE_DATA);
    assert_int_equal(loc.fd, 77);
    assert_int_equal(loc.offset, 0x15000);
    free(seg);
    free(pseg);
}

/* A two-level chain on disk: top/parent -> ../pre (see ib_chain). */
static void open_chain_on_disk(void **state)
{
    (void)state;
    char root[] = "/tmp/dp-test-chain.XXXXXX", top[128], link[160];
    assert_non_null(mkdtemp(root));
    assert_int_equal(ib_chain(root), 0);
    snprintf(top, sizeof(top), "%s/top", root);
    snprintf(link, sizeof(link), "%s/parent", top);
    uint64_t top_tags[] = {200, 203, 300};

    struct dp_checkpoint *cp;
    struct dp_err err;
    if (dp_checkpoint_open(top, &cp, &err) < 0)
        fail_msg("%s", err.msg);
    assert_int_equal(cp->parent_depth, 1);
    assert_int_equal(cp->nr_files, 2);
    const struct dp_task_image *t = &cp->tasks[0];
    assert_int_equal(t->nr_lazy, 1);
    assert_int_equal(t->lazy_bytes, 0x10000);
    uint64_t want[] = {200, 101, 102, 203, 0};
    for (int i = 0; i < 5; i++) {
        struct dp_page_loc loc;
        dp_task_locate(t, 0x10000 + (uint64_t)i * PG, &loc);
        if (!want[i]) {
            assert_int_equal(loc.kind, DP_PAGE_ZERO);
            assert_int_equal(loc.run_pages_left, 12);   /* to the end of the VMA */
            continue;
        }
        assert_int_equal(loc.kind, DP_PAGE_DATA);
        uint64_t word;
        assert_int_equal(pread(loc.fd, &word, 8, (off_t)loc.offset), 8);
        assert_int_equal(word, want[i]);
    }
    struct dp_page_loc loc;
    dp_task_locate(t, 0x400000, &loc);
    assert_int_equal(loc.kind, DP_PAGE_NOT_LAZY);
    dp_task_locate(t, 0x0, &loc);
    assert_int_equal(loc.kind, DP_PAGE_NOT_LAZY);
    assert_int_equal(loc.run_pages_left, 16);   /* up to the lazy range */
    dp_checkpoint_close(cp);

    /* a truncated pages file is refused with its name */
    ib_write_pages(top, "pages-1.img", top_tags, 2);
    assert_int_equal(dp_checkpoint_open(top, &cp, &err), -1);
    expect_error_at(err.msg, "pages-1.img", "truncated");
    /* a missing parent is refused */
    unlink(link);
    ib_write_pages(top, "pages-1.img", top_tags, 3);
    assert_int_equal(dp_checkpoint_open(top, &cp, &err), -1);
    expect_error_at(err.msg, "pagemap-1.img", "parent");

    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    assert_int_equal(system(cmd), 0);
}

static void missing_directory(void **state)
{
    (void)state;
    struct dp_checkpoint *cp;
    struct dp_err err;
    assert_int_equal(dp_checkpoint_open("/nonexistent/images", &cp, &err), -1);
    expect_error_at(err.msg, "/nonexistent/images", "inventory.img");
}

static void pb_varints(void **state)
{
    (void)state;
    uint64_t v;
    size_t pos = 0;
    const uint8_t max[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    assert_int_equal(dp_pb_varint(max, sizeof(max), &pos, &v), 0);
    assert_int_equal(v, UINT64_MAX);
    assert_int_equal(pos, 10);
    const uint8_t over[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
    pos = 0;
    assert_int_equal(dp_pb_varint(over, sizeof(over), &pos, &v), -1);
    const uint8_t eleven[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00};
    pos = 0;
    assert_int_equal(dp_pb_varint(eleven, sizeof(eleven), &pos, &v), -1);
    const uint8_t small[] = {0xac, 0x02};
    pos = 0;
    assert_int_equal(dp_pb_varint(small, sizeof(small), &pos, &v), 0);
    assert_int_equal(v, 300);
    assert_int_equal(dp_pb_zigzag64(1), -1);
    assert_int_equal(dp_pb_zigzag64(4), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fixture_opens),
        cmocka_unit_test(fixture_lazy_entries_have_data),
        cmocka_unit_test(fixture_pages_have_tinymem_content),
        cmocka_unit_test(fixture_locate_matches_linear_scan),
        cmocka_unit_test(truncated_fixture_images),
        cmocka_unit_test(bad_magics),
        cmocka_unit_test(bad_entries),
        cmocka_unit_test(pstree_packed_threads),
        cmocka_unit_test(pagemap_compat_fields),
        cmocka_unit_test(vma_laziness),
        cmocka_unit_test(resolve_through_parent),
        cmocka_unit_test(open_chain_on_disk),
        cmocka_unit_test(missing_directory),
        cmocka_unit_test(pb_varints),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
