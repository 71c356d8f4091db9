/* Unit tests of the skeleton plan: all image bytes but the lazy pages. */
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
#include "skeleton.h"

#define PG 4096ULL
#define FIXTURE "tests/fixtures/images-tinymem"

static const struct dp_skeleton_file *find(const struct dp_skeleton_file *f, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(f[i].name, name))
            return &f[i];
    return NULL;
}

static int covered(const struct dp_skeleton_file *f, uint64_t off, uint64_t len)
{
    for (size_t e = 0; e < f->nr_extents; e++)
        if (off >= f->extents[e].offset && off + len <= f->extents[e].offset + f->extents[e].length)
            return 1;
    return 0;
}

static int touches(const struct dp_skeleton_file *f, uint64_t off, uint64_t len)
{
    for (size_t e = 0; e < f->nr_extents; e++)
        if (off < f->extents[e].offset + f->extents[e].length && f->extents[e].offset < off + len)
            return 1;
    return 0;
}

/* The fixture: pages-1.img keeps exactly its non-lazy runs; every other file
 * goes whole. */
static void fixture_plan(void **state)
{
    (void)state;
    struct dp_checkpoint *cp;
    struct dp_err err;
    struct dp_skeleton_file *files;
    size_t n;
    assert_int_equal(dp_checkpoint_open(FIXTURE, &cp, &err), 0);
    assert_int_equal(dp_skeleton_plan(cp, &files, &n, &err), 0);
    const struct dp_skeleton_file *pages = find(files, n, "pages-1.img");
    assert_non_null(pages);
    assert_true(pages->sparse);
    const struct dp_task_image *t = &cp->tasks[0];
    uint64_t lazy = 0, eager = 0;
    for (size_t i = 0; i < t->nr_runs; i++) {
        const struct dp_page_run *r = &t->runs[i];
        uint64_t len = r->nr_pages * PG;
        if (r->flags & DP_PE_LAZY) {
            assert_false(touches(pages, r->data_offset, len));
            lazy += len;
        } else {
            assert_true(covered(pages, r->data_offset, len));
            eager += len;
        }
    }
    assert_true(lazy > 0 && eager > 0);
    assert_int_equal(pages->send_bytes, eager);
    assert_int_equal(pages->size, lazy + eager);
    for (size_t i = 1; i < pages->nr_extents; i++)
        assert_true(pages->extents[i - 1].offset + pages->extents[i - 1].length < pages->extents[i].offset);
    /* everything else whole */
    uint64_t send, total, whole = 0;
    for (size_t i = 0; i < n; i++)
        if (&files[i] != pages) {
            assert_false(files[i].sparse);
            assert_int_equal(files[i].send_bytes, files[i].size);
            whole += files[i].size;
        }
    assert_non_null(find(files, n, "core-1.img"));
    assert_non_null(find(files, n, "pagemap-1.img"));
    dp_skeleton_totals(files, n, &send, &total);
    assert_int_equal(send, eager + whole);
    assert_int_equal(total, cp->image_bytes);
    dp_skeleton_free(files, n);
    dp_checkpoint_close(cp);
}

/* Written out, the skeleton is a readable checkpoint of the same shape whose
 * pages file has the non-lazy bytes and zeros (holes) instead of lazy data. */
static void fixture_write_local(void **state)
{
    (void)state;
    struct dp_checkpoint *cp, *sk;
    struct dp_err err;
    struct dp_skeleton_file *files;
    size_t n;
    char dst[] = "/tmp/dp-test-skel.XXXXXX";
    assert_non_null(mkdtemp(dst));
    assert_int_equal(dp_checkpoint_open(FIXTURE, &cp, &err), 0);
    assert_int_equal(dp_skeleton_plan(cp, &files, &n, &err), 0);
    if (dp_skeleton_write_local(FIXTURE, files, n, dst, &err) < 0)
        fail_msg("%s", err.msg);
    if (dp_checkpoint_open(dst, &sk, &err) < 0)
        fail_msg("%s", err.msg);
    assert_int_equal(sk->nr_tasks, cp->nr_tasks);
    assert_int_equal(sk->tasks[0].nr_runs, cp->tasks[0].nr_runs);
    assert_int_equal(sk->image_bytes, cp->image_bytes);
    const struct dp_task_image *t = &cp->tasks[0], *s = &sk->tasks[0];
    uint8_t a[4096], b[4096], zero[4096] = {0};
    for (size_t i = 0; i < t->nr_runs; i++)
        for (uint64_t p = 0; p < t->runs[i].nr_pages; p++) {
            off_t off = (off_t)(t->runs[i].data_offset + p * PG);
            assert_int_equal(pread(t->pages_fd, a, PG, off), PG);
            assert_int_equal(pread(s->pages_fd, b, PG, off), PG);
            if (t->runs[i].flags & DP_PE_LAZY)
                assert_memory_equal(b, zero, PG);
            else
                assert_memory_equal(a, b, PG);
        }
    struct stat st;
    assert_int_equal(fstat(s->pages_fd, &st), 0);
    const struct dp_skeleton_file *pages = find(files, n, "pages-1.img");
    assert_true((uint64_t)st.st_blocks * 512 < pages->size);   /* sparse */
    dp_checkpoint_close(sk);
    dp_checkpoint_close(cp);
    dp_skeleton_free(files, n);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dst);
    assert_int_equal(system(cmd), 0);
}

/* With a pre-dump chain the parent's pages file is sent sparse too, with only
 * the pages the top level's PARENT entries use. */
static void chain_plan(void **state)
{
    (void)state;
    char root[] = "/tmp/dp-test-skchain.XXXXXX", top[128];
    assert_non_null(mkdtemp(root));
    assert_int_equal(ib_chain(root), 0);
    snprintf(top, sizeof(top), "%s/top", root);
    struct dp_checkpoint *cp;
    struct dp_err err;
    struct dp_skeleton_file *files;
    size_t n;
    assert_int_equal(dp_checkpoint_open(top, &cp, &err), 0);
    assert_int_equal(dp_skeleton_plan(cp, &files, &n, &err), 0);
    const struct dp_skeleton_file *pp = find(files, n, "parent/pages-7.img");
    const struct dp_skeleton_file *tp = find(files, n, "pages-1.img");
    assert_non_null(pp);
    assert_non_null(tp);
    assert_non_null(find(files, n, "parent/pagemap-1.img"));
    assert_non_null(find(files, n, "parent/inventory.img"));
    assert_null(find(files, n, "parent"));
    assert_int_equal(pp->size, 4 * PG);
    assert_int_equal(pp->nr_extents, 1);
    assert_int_equal(pp->extents[0].offset, PG);       /* 101, 102 */
    assert_int_equal(pp->extents[0].length, 2 * PG);
    assert_int_equal(tp->nr_extents, 1);
    assert_int_equal(tp->extents[0].offset, 2 * PG);   /* 300: the file page */
    assert_int_equal(tp->extents[0].length, PG);

    char dst[160];
    snprintf(dst, sizeof(dst), "%s/skel", root);
    if (dp_skeleton_write_local(top, files, n, dst, &err) < 0)
        fail_msg("%s", err.msg);
    struct dp_checkpoint *sk;
    if (dp_checkpoint_open(dst, &sk, &err) < 0)
        fail_msg("%s", err.msg);
    assert_int_equal(sk->parent_depth, 1);
    struct dp_page_loc loc;
    uint64_t word;
    dp_task_locate(&sk->tasks[0], 0x12000, &loc);   /* eager, from the parent */
    assert_int_equal(loc.kind, DP_PAGE_DATA);
    assert_int_equal(pread(loc.fd, &word, 8, (off_t)loc.offset), 8);
    assert_int_equal(word, 102);
    dp_task_locate(&sk->tasks[0], 0x13000, &loc);   /* lazy: left out */
    assert_int_equal(pread(loc.fd, &word, 8, (off_t)loc.offset), 8);
    assert_int_equal(word, 0);
    dp_checkpoint_close(sk);

    /* a name that would escape the destination is refused */
    struct dp_skeleton_file evil = {.name = "../x", .size = 0};
    assert_int_equal(dp_skeleton_write_local(top, &evil, 1, dst, &err), -1);

    dp_skeleton_free(files, n);
    dp_checkpoint_close(cp);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    assert_int_equal(system(cmd), 0);
}

/* CRIU's logs and DistriProc's own files in the images directory never go to
 * the destination (at any pre-dump level). */
static void logs_left_out(void **state)
{
    (void)state;
    struct dp_checkpoint *cp;
    struct dp_err err;
    assert_int_equal(dp_checkpoint_open(FIXTURE, &cp, &err), 0);
    struct dp_dir_entry l[] = {{"core-1.img", 100}, {"dump.log", 3 << 20}, {"inventory.img", 40},
                               {"restore.log", 10}, {"x.logs", 5}, {"distriproc-overlay.log", 4096},
                               {"distriproc-merged.bin", 64}, {"distriproc-hotset.bin", 64},
                               {"distriproc-hotset.json", 64}, {"distriproc-trace-1700000000000000.bin", 64},
                               {"parent/distriproc-merged.bin", 64}, {"parent/dump.log", 64}};
    struct dp_skeleton_file *files;
    size_t n;
    assert_int_equal(dp_skeleton_plan_listing(cp, l, sizeof(l) / sizeof(l[0]), &files, &n, &err), 0);
    assert_int_equal(n, 3);
    assert_non_null(find(files, n, "core-1.img"));
    assert_non_null(find(files, n, "inventory.img"));
    assert_non_null(find(files, n, "x.logs"));
    assert_null(find(files, n, "dump.log"));
    assert_null(find(files, n, "restore.log"));
    uint64_t send, total;
    dp_skeleton_totals(files, n, &send, &total);
    assert_int_equal(send, 145);
    dp_skeleton_free(files, n);
    dp_checkpoint_close(cp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fixture_plan),
        cmocka_unit_test(fixture_write_local),
        cmocka_unit_test(chain_plan),
        cmocka_unit_test(logs_left_out),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
