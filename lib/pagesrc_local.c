/* pagesrc_local: pages read straight from a CRIU images directory
 * (lib/image.h). The "local floor": what a lazy restore costs with no
 * network at all. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "pagesrc.h"
#include "pagesrc_file.h"

struct local_src {
    struct dp_pagesrc base;
    struct dp_fileq q;
    struct dp_checkpoint *cp;
};

static void set_pages(struct dp_lazymap *m, uint64_t a, uint64_t b, enum dp_pg_state st)
{
    for (; a < b; a += DP_PAGE_SIZE) {
        uint8_t *pg = dp_lazymap_page(m, a, NULL);
        if (pg)
            dp_lazymap_set(m, pg, st, 0);
    }
}

int dp_checkpoint_lazymap(const struct dp_checkpoint *cp, int32_t pid, struct dp_lazymap *map, struct dp_err *err)
{
    const struct dp_task_image *t = dp_checkpoint_find_task(cp, pid);
    if (!t) {
        dp_err_set(err, "pid %d is not in the checkpoint at %s", pid, cp->dir);
        return -1;
    }
    for (size_t i = 0; i < t->nr_lazy; i++) {
        if (dp_lazymap_add(map, t->lazy[i].start, t->lazy[i].end, t->lazy[i].start, DP_PG_NONE)) {
            dp_err_set(err, "pid %d: lazy range 0x%llx-0x%llx overlaps or is out of memory", pid,
                       (unsigned long long)t->lazy[i].start, (unsigned long long)t->lazy[i].end);
            return -1;
        }
    }
    /* Pages with data: lazy ones are remote until touched; non-lazy ones
     * (CRIU restores them eagerly, e.g. the stack) are already resident.
     * Pages without data stay NONE (zero on fault). */
    for (size_t i = 0; i < t->nr_segs; i++) {
        const struct dp_page_seg *g = &t->segs[i];
        if (g->file < 0)
            continue;
        uint64_t a = g->vaddr, b = g->vaddr + g->nr_pages * DP_PAGE_SIZE;
        set_pages(map, a, b, (g->flags & DP_PE_LAZY) ? DP_PG_REMOTE : DP_PG_RESIDENT);
    }
    return 0;
}

static int local_task_map(struct dp_pagesrc *s, int32_t pid, struct dp_lazymap *map, struct dp_err *err)
{
    return dp_checkpoint_lazymap(((struct local_src *)s)->cp, pid, map, err);
}

static int local_submit(struct dp_pagesrc *s, struct dp_fetch *f)
{
    struct local_src *l = (struct local_src *)s;
    const struct dp_task_image *t = dp_checkpoint_find_task(l->cp, f->pid);
    f->status = 0;
    f->wire_bytes = 0;
    if (!t)
        f->status = -ESRCH;
    uint32_t i = 0;
    while (f->status == 0 && i < f->npages) {
        struct dp_page_loc loc;
        uint64_t a = f->img + (uint64_t)i * DP_PAGE_SIZE;
        dp_task_locate(t, a, &loc);
        uint32_t n = loc.run_pages_left;
        if (n == 0 || n > f->npages - i)
            n = f->npages - i;
        uint8_t *dst = f->buf + (size_t)i * DP_PAGE_SIZE;
        if (loc.kind == DP_PAGE_DATA)
            f->status = dp_pread_full(loc.fd, dst, (size_t)n * DP_PAGE_SIZE, loc.offset);
        else if (loc.kind == DP_PAGE_ZERO)
            memset(dst, 0, (size_t)n * DP_PAGE_SIZE);
        else
            f->status = -EINVAL; /* not lazy memory: never guess */
        i += n;
    }
    dp_fileq_complete(&l->q, f);
    return 0;
}

static int local_fd(struct dp_pagesrc *s) { return ((struct local_src *)s)->q.efd; }
static void local_process(struct dp_pagesrc *s) { dp_fileq_process(&((struct local_src *)s)->q); }
static int local_healthy(struct dp_pagesrc *s) { (void)s; return 1; }

static void local_close(struct dp_pagesrc *s)
{
    struct local_src *l = (struct local_src *)s;
    dp_fileq_close(&l->q);
    dp_checkpoint_close(l->cp);
    free(l);
}

static const struct dp_pagesrc_ops local_ops = {
    .name = "local", .task_map = local_task_map, .submit = local_submit, .fd = local_fd,
    .process = local_process, .healthy = local_healthy, .close = local_close,
};

struct dp_pagesrc *dp_pagesrc_local_open(const char *images_dir, struct dp_err *err)
{
    struct local_src *l = calloc(1, sizeof(*l));
    if (!l || dp_fileq_init(&l->q)) {
        dp_err_set(err, "local page source: out of memory or eventfd failed");
        free(l);
        return NULL;
    }
    if (dp_checkpoint_open(images_dir, &l->cp, err) < 0 || dp_checkpoint_check_images_only(l->cp, err) < 0) {
        dp_checkpoint_close(l->cp);
        dp_fileq_close(&l->q);
        free(l);
        return NULL;
    }
    l->base.ops = &local_ops;
    snprintf(l->base.desc, sizeof(l->base.desc), "local images %.200s", images_dir);
    return &l->base;
}
