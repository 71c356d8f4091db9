/* libFuzzer target for the CRIU image parsers: the input is taken as each
 * kind of image (inventory, pstree, mm, pagemap; image versions 1 and 2).
 * A pagemap that parses is also resolved (alone and over itself as a
 * pre-dump parent) and located in, checking the answers' invariants, and
 * rewritten by lib/lazyfix.h over VMAs that split it (every page keeps its
 * place in the pages file). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "lazyfix.h"

#define PG DP_PAGE_SIZE

static void check_locate(const struct dp_page_run *runs, size_t nr, const struct dp_page_seg *segs,
                         size_t nr_segs, uint64_t data_bytes)
{
    if (nr == 0)
        return;
    struct dp_range range = {runs[0].vaddr, runs[nr - 1].vaddr + (uint64_t)runs[nr - 1].nr_pages * PG};
    struct dp_task_image t;
    memset(&t, 0, sizeof(t));
    t.lazy = &range;
    t.nr_lazy = 1;
    t.segs = (struct dp_page_seg *)segs;
    t.nr_segs = nr_segs;
    for (size_t i = 0; i < nr && i < 64; i++) {
        uint64_t probes[3] = {runs[i].vaddr, runs[i].vaddr + ((uint64_t)runs[i].nr_pages - 1) * PG,
                              runs[i].vaddr + (uint64_t)runs[i].nr_pages * PG};
        for (int k = 0; k < 3; k++) {
            struct dp_page_loc loc;
            dp_task_locate(&t, probes[k], &loc);
            if (loc.kind != DP_PAGE_NOT_LAZY) {
                if (loc.run_pages_left == 0 || probes[k] + (uint64_t)loc.run_pages_left * PG > range.end)
                    abort();
            }
            /* a segment of this level points into its own data */
            if (loc.kind == DP_PAGE_DATA && loc.offset + PG > data_bytes && loc.fd == -1)
                abort();
        }
    }
}

/* The pages-file offset of the page at a, or UINT64_MAX without one. */
static uint64_t offset_at(const struct dp_page_run *runs, size_t nr, uint64_t a)
{
    for (size_t i = 0; i < nr; i++)
        if (a >= runs[i].vaddr && a < runs[i].vaddr + (uint64_t)runs[i].nr_pages * PG)
            return (runs[i].flags & DP_PE_PRESENT) ? runs[i].data_offset + (a - runs[i].vaddr) : UINT64_MAX;
    return UINT64_MAX;
}

/* lazyfix over an anonymous VMA on the first half of the pagemap's span and
 * a file one on the rest: the result parses, marks at most every page, and
 * every page keeps its offset. */
static void check_lazyfix(const uint8_t *data, size_t size, uint32_t version, const struct dp_page_run *runs,
                          size_t nr)
{
    if (nr == 0)
        return;
    uint64_t lo = runs[0].vaddr, hi = runs[nr - 1].vaddr + (uint64_t)runs[nr - 1].nr_pages * PG;
    uint64_t mid = lo + (hi - lo) / 2 / PG * PG;
    struct dp_vma vmas[2] = {
        {.start = lo, .end = mid, .flags = 0x22, .status = DP_VMA_AREA_REGULAR | DP_VMA_ANON_PRIVATE},
        {.start = mid, .end = hi, .flags = 0x02, .status = DP_VMA_AREA_REGULAR | DP_VMA_FILE_PRIVATE},
    };
    struct dp_buf out = {0};
    struct dp_err err;
    uint64_t marked, bytes, pages = 0;
    uint32_t id;
    struct dp_page_run *after;
    size_t na;
    if (dp_lazyfix_pagemap("pagemap.img", data, size, version, vmas, 2, &out, &marked, &err) < 0) {
        dp_buf_free(&out);
        return;
    }
    if (dp_image_parse_pagemap("out", out.data, out.len, version, &id, &after, &na, &bytes, &err) < 0)
        abort();
    for (size_t i = 0; i < nr; i++)
        pages += runs[i].nr_pages;
    if (marked > pages || (marked == 0 && (out.len != size || memcmp(out.data, data, size))))
        abort();
    for (size_t i = 0; i < nr && i < 64; i++)
        if (offset_at(after, na, runs[i].vaddr) != offset_at(runs, nr, runs[i].vaddr))
            abort();
    free(after);
    dp_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dp_err err;
    for (uint32_t version = 1; version <= 2; version++) {
        uint32_t v, id;
        uint64_t bytes;
        size_t n;

        dp_image_parse_inventory("inventory.img", data, size, &v, &err);

        struct dp_task_image *tasks;
        if (dp_image_parse_pstree("pstree.img", data, size, version, &tasks, &n, &err) == 0) {
            for (size_t i = 0; i < n; i++)
                free(tasks[i].threads);
            free(tasks);
        }

        struct dp_vma *vmas;
        if (dp_image_parse_mm("mm.img", data, size, version, &vmas, &n, &err) == 0) {
            struct dp_range *ranges;
            size_t nr;
            if (dp_image_lazy_ranges(vmas, n, &ranges, &nr, &bytes, &err) == 0) {
                for (size_t i = 1; i < nr; i++)
                    if (ranges[i].start < ranges[i - 1].end)
                        abort();
                free(ranges);
            }
            free(vmas);
        }

        struct dp_page_run *runs;
        if (dp_image_parse_pagemap("pagemap.img", data, size, version, &id, &runs, &n, &bytes, &err) == 0) {
            check_lazyfix(data, size, version, runs, n);
            struct dp_page_seg *segs, *top;
            size_t nr_segs, nr_top;
            if (dp_image_resolve("pagemap.img", runs, n, 0, NULL, 0, &segs, &nr_segs, &err) == 0) {
                check_locate(runs, n, segs, nr_segs, bytes);
                if (dp_image_resolve("pagemap.img", runs, n, 1, segs, nr_segs, &top, &nr_top, &err) == 0)
                    free(top);
                free(segs);
            }
            free(runs);
        }
    }
    return 0;
}
