/* Unit tests for lib/lazyfix: a dump CRIU's is_stack() wrote non-lazy gets
 * PE_LAZY on exactly the pages of lazy VMAs, entries are split at VMA edges,
 * every page keeps its place in the pages file, and anything else (a lazy
 * dump, PARENT entries, file mappings, locked memory) is left as it was. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "imgbuild.h"
#include "lazyfix.h"

#define PG 4096u

/* ---- helpers ---- */

/* The VMAs as dp_image_parse_mm returns them, from imgbuild's description. */
static struct dp_vma vma_of(struct ib_vma v)
{
    struct dp_vma d = {.start = v.start, .end = v.end, .flags = v.flags, .status = v.status, .shmid = -1};
    return d;
}

/* Runs the rewrite; the output is parsed back into runs (the caller frees). */
static uint64_t fix(const struct ib *in, const struct dp_vma *vmas, size_t n, struct dp_buf *out,
                    struct dp_page_run **runs, size_t *nr)
{
    struct dp_err err = {{0}};
    uint64_t marked = 99;
    assert_int_equal(dp_lazyfix_pagemap("pagemap-1.img", in->buf, in->len, DP_IMG_VERSION_V1_1, vmas, n, out,
                                        &marked, &err),
                     0);
    uint32_t id;
    uint64_t data_bytes;
    assert_int_equal(dp_image_parse_pagemap("out", out->data, out->len, DP_IMG_VERSION_V1_1, &id, runs, nr,
                                            &data_bytes, &err),
                     0);
    return marked;
}

/* The pages-file offset of the page at vaddr in runs, or -1 if it has none. */
static int64_t offset_of(const struct dp_page_run *runs, size_t nr, uint64_t vaddr)
{
    for (size_t i = 0; i < nr; i++)
        if (vaddr >= runs[i].vaddr && vaddr < runs[i].vaddr + (uint64_t)runs[i].nr_pages * PG)
            return (runs[i].flags & DP_PE_PRESENT) ? (int64_t)(runs[i].data_offset + (vaddr - runs[i].vaddr))
                                                   : -1;
    return -1;
}

/* ---- tests ---- */

/* The is_stack() dump: .data (file, copied) right before .bss and the heap
 * (anonymous), one entry across both, plus a lone anonymous entry. */
static void eager_dump_is_marked_lazy_and_split_at_vma_edges(void **state)
{
    (void)state;
    struct ib in;
    struct dp_vma vmas[] = {vma_of((struct ib_vma)IB_FILE_VMA(0x400000, 0x402000)),
                            vma_of((struct ib_vma)IB_ANON_VMA(0x402000, 0x410000)),
                            vma_of((struct ib_vma)IB_ANON_VMA(0x7f0000000000, 0x7f0000100000))};
    ib_pagemap_head(&in, 3);
    ib_pagemap_entry(&in, 0x401000, 5, DP_PE_PRESENT);      /* 1 file page, 4 anonymous */
    ib_pagemap_entry(&in, 0x7f0000010000, 3, DP_PE_PRESENT);
    struct dp_page_run *before, *after;
    size_t nb, na;
    uint32_t id;
    uint64_t db;
    struct dp_err err = {{0}};
    assert_int_equal(dp_image_parse_pagemap("in", in.buf, in.len, DP_IMG_VERSION_V1_1, &id, &before, &nb, &db, &err),
                     0);
    struct dp_buf out = {0};
    assert_int_equal(fix(&in, vmas, 3, &out, &after, &na), 7);
    assert_int_equal(na, 3);
    assert_int_equal(after[0].vaddr, 0x401000);
    assert_int_equal(after[0].nr_pages, 1);
    assert_int_equal(after[0].flags, DP_PE_PRESENT); /* a file page: the restore does not register it */
    assert_int_equal(after[1].vaddr, 0x402000);
    assert_int_equal(after[1].nr_pages, 4);
    assert_int_equal(after[1].flags, DP_PE_PRESENT | DP_PE_LAZY);
    assert_int_equal(after[2].vaddr, 0x7f0000010000);
    assert_int_equal(after[2].nr_pages, 3);
    assert_int_equal(after[2].flags, DP_PE_PRESENT | DP_PE_LAZY);
    /* every page still points at its own bytes in the pages file */
    for (size_t i = 0; i < nb; i++)
        for (uint64_t a = before[i].vaddr; a < before[i].vaddr + before[i].nr_pages * (uint64_t)PG; a += PG)
            assert_int_equal(offset_of(after, na, a), offset_of(before, nb, a));
    free(before);
    free(after);
    dp_buf_free(&out);
}

/* What CRIU writes in the other 255 dumps, and entries never to touch:
 * PARENT (eager from the parent), a locked anonymous VMA, lazy already. */
static void lazy_dump_and_other_entries_are_left_byte_for_byte(void **state)
{
    (void)state;
    struct ib in;
    struct ib_vma locked = IB_ANON_VMA(0x500000, 0x510000);
    locked.flags |= MAP_LOCKED;
    struct dp_vma vmas[] = {vma_of((struct ib_vma)IB_ANON_VMA(0x10000, 0x20000)), vma_of(locked),
                            vma_of((struct ib_vma)IB_FILE_VMA(0x600000, 0x610000))};
    ib_pagemap_head(&in, 1);
    ib_pagemap_entry(&in, 0x10000, 2, DP_PE_PRESENT | DP_PE_LAZY);
    ib_pagemap_entry(&in, 0x12000, 2, DP_PE_PARENT);
    ib_pagemap_entry(&in, 0x500000, 4, DP_PE_PRESENT);
    ib_pagemap_entry(&in, 0x600000, 1, DP_PE_PRESENT);
    struct dp_buf out = {0};
    struct dp_page_run *runs;
    size_t nr;
    assert_int_equal(fix(&in, vmas, 3, &out, &runs, &nr), 0);
    assert_int_equal(out.len, in.len);
    assert_memory_equal(out.data, in.buf, in.len);
    free(runs);
    dp_buf_free(&out);
}

/* A page outside every VMA (a broken image) is not made lazy: nothing
 * would register it with userfaultfd. */
static void pages_outside_any_vma_stay_eager(void **state)
{
    (void)state;
    struct ib in;
    struct dp_vma vmas[] = {vma_of((struct ib_vma)IB_ANON_VMA(0x10000, 0x12000))};
    ib_pagemap_head(&in, 1);
    ib_pagemap_entry(&in, 0x10000, 4, DP_PE_PRESENT); /* 2 in the VMA, 2 beyond it */
    struct dp_buf out = {0};
    struct dp_page_run *runs;
    size_t nr;
    assert_int_equal(fix(&in, vmas, 1, &out, &runs, &nr), 2);
    assert_int_equal(nr, 2);
    assert_int_equal(runs[0].flags, DP_PE_PRESENT | DP_PE_LAZY);
    assert_int_equal(runs[1].vaddr, 0x12000);
    assert_int_equal(runs[1].flags, DP_PE_PRESENT);
    free(runs);
    dp_buf_free(&out);
}

static void malformed_pagemap_is_refused(void **state)
{
    (void)state;
    struct ib in;
    struct dp_vma vmas[] = {vma_of((struct ib_vma)IB_ANON_VMA(0x10000, 0x20000))};
    ib_pagemap_head(&in, 1);
    ib_pagemap_entry(&in, 0x10000, 2, DP_PE_PRESENT);
    struct dp_buf out = {0};
    struct dp_err err = {{0}};
    uint64_t marked;
    assert_int_equal(dp_lazyfix_pagemap("pagemap-1.img", in.buf, in.len - 1, DP_IMG_VERSION_V1_1, vmas, 1, &out,
                                        &marked, &err),
                     -1);
    assert_non_null(strstr(err.msg, "pagemap-1.img"));
    dp_buf_free(&out);
}

/* The directory pass: the file is replaced, the checkpoint then reads the
 * anonymous pages as lazy with the same data. */
static void dir_pass_rewrites_the_task_pagemap(void **state)
{
    (void)state;
    char root[] = "/tmp/dp-lazyfix-XXXXXX";
    assert_non_null(mkdtemp(root));
    struct ib *b = malloc(sizeof(*b));
    assert_non_null(b);
    ib_inventory(b);
    assert_int_equal(ib_write(root, "inventory.img", b->buf, b->len), 0);
    ib_header(b, DP_PSTREE_MAGIC);
    ib_pstree_entry(b, 1, 0, 1);
    assert_int_equal(ib_write(root, "pstree.img", b->buf, b->len), 0);
    struct ib_vma vmas[] = {IB_FILE_VMA(0x400000, 0x401000), IB_ANON_VMA(0x401000, 0x403000)};
    ib_mm(b, vmas, 2);
    assert_int_equal(ib_write(root, "mm-1.img", b->buf, b->len), 0);
    ib_pagemap_head(b, 1);
    ib_pagemap_entry(b, 0x400000, 3, DP_PE_PRESENT);
    assert_int_equal(ib_write(root, "pagemap-1.img", b->buf, b->len), 0);
    uint64_t tags[] = {300, 301, 302};
    assert_int_equal(ib_write_pages(root, "pages-1.img", tags, 3), 0);

    struct dp_err err = {{0}};
    uint64_t marked = 0;
    assert_int_equal(dp_lazyfix_dir(root, &marked, &err), 0);
    assert_int_equal(marked, 2);
    struct dp_checkpoint *cp;
    assert_int_equal(dp_checkpoint_open(root, &cp, &err), 0);
    const struct dp_task_image *t = dp_checkpoint_find_task(cp, 1);
    assert_non_null(t);
    assert_int_equal(t->nr_runs, 2);
    assert_int_equal(t->runs[1].flags, DP_PE_PRESENT | DP_PE_LAZY);
    struct dp_page_loc loc;
    dp_task_locate(t, 0x402000, &loc);
    assert_int_equal(loc.kind, DP_PAGE_DATA);
    assert_int_equal(loc.offset, 2 * PG); /* still the third page of pages-1.img */
    dp_checkpoint_close(cp);
    /* a second pass finds nothing left to do */
    assert_int_equal(dp_lazyfix_dir(root, &marked, &err), 0);
    assert_int_equal(marked, 0);

    const char *names[] = {"inventory.img", "pstree.img", "mm-1.img", "pagemap-1.img", "pages-1.img"};
    char path[4200];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", root, names[i]);
        unlink(path);
    }
    rmdir(root);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(eager_dump_is_marked_lazy_and_split_at_vma_edges),
        cmocka_unit_test(lazy_dump_and_other_entries_are_left_byte_for_byte),
        cmocka_unit_test(pages_outside_any_vma_stay_eager),
        cmocka_unit_test(malformed_pagemap_is_refused),
        cmocka_unit_test(dir_pass_rewrites_the_task_pagemap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
