/* The write-back log on a real file in a temporary directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "overlay.h"

static char dir[64];

static int setup(void **state)
{
    (void)state;
    strcpy(dir, "/tmp/dp-overlay-test-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void page(uint8_t *p, int v)
{
    memset(p, v, 4096);
}

static void read_page(struct dp_overlay *o, int32_t pid, uint64_t addr, uint8_t *out)
{
    uint64_t off;
    assert_true(dp_overlay_lookup(o, pid, addr, &off));
    assert_int_equal(pread(dp_overlay_fd(o), out, 4096, (off_t)off), 4096);
}

static char *log_path(void)
{
    static char p[128];
    snprintf(p, sizeof(p), "%s/%s", dir, DP_OVERLAY_NAME);
    return p;
}

static void replay_keeps_latest_and_cuts_torn_tail(void **state)
{
    (void)state;
    struct dp_overlay *o;
    struct dp_err err;
    uint8_t a[8192], got[4096];
    assert_int_equal(dp_overlay_open(dir, &o, &err), 0);
    uint64_t off;
    assert_false(dp_overlay_lookup(o, 1, 0x1000, &off));
    page(a, 1);
    page(a + 4096, 2);
    assert_int_equal(dp_overlay_append(o, 1, 0x1000, 2, a, &err), 0);
    assert_true(dp_overlay_dirty(o));
    assert_int_equal(dp_overlay_sync(o, &err), 0);
    page(a, 3);
    assert_int_equal(dp_overlay_append(o, 1, 0x1000, 1, a, &err), 0); /* supersedes */
    assert_int_equal(dp_overlay_sync(o, &err), 0);
    dp_overlay_close(o);

    /* A torn append after the last sync: half a record. */
    int fd = open(log_path(), O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    uint8_t junk[3000];
    memset(junk, 0x77, sizeof(junk));
    assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
    close(fd);

    assert_int_equal(dp_overlay_open(dir, &o, &err), 0);
    struct dp_overlay_stats st;
    dp_overlay_get_stats(o, &st);
    assert_int_equal(st.live_pages, 2);
    assert_int_equal(st.records, 3);
    assert_int_equal(st.torn_bytes, 3000);
    read_page(o, 1, 0x1000, got);
    assert_int_equal(got[0], 3);
    read_page(o, 1, 0x2000, got);
    assert_int_equal(got[100], 2);
    assert_false(dp_overlay_lookup(o, 2, 0x1000, &off)); /* other pid */
    dp_overlay_close(o);
    struct stat sb;
    assert_int_equal(stat(log_path(), &sb), 0);
    assert_int_equal(sb.st_size, 3 * DP_OVERLAY_REC_SIZE);
    unlink(log_path());
}

static void corrupt_record_ends_the_log(void **state)
{
    (void)state;
    struct dp_overlay *o;
    struct dp_err err;
    uint8_t a[4096];
    assert_int_equal(dp_overlay_open(dir, &o, &err), 0);
    for (int i = 0; i < 3; i++) {
        page(a, 10 + i);
        assert_int_equal(dp_overlay_append(o, 5, 0x10000 + (uint64_t)i * 4096, 1, a, &err), 0);
    }
    assert_int_equal(dp_overlay_sync(o, &err), 0);
    dp_overlay_close(o);
    /* Flip one data byte of the second record: it and all after it go. */
    int fd = open(log_path(), O_RDWR);
    uint8_t b = 0xff;
    assert_int_equal(pwrite(fd, &b, 1, DP_OVERLAY_REC_SIZE + DP_OVERLAY_REC_HDR + 7), 1);
    close(fd);
    assert_int_equal(dp_overlay_open(dir, &o, &err), 0);
    uint64_t off;
    assert_true(dp_overlay_lookup(o, 5, 0x10000, &off));
    assert_false(dp_overlay_lookup(o, 5, 0x11000, &off));
    assert_false(dp_overlay_lookup(o, 5, 0x12000, &off));
    dp_overlay_close(o);
    unlink(log_path());
}

/* The log's fd is swapped for a pipe during one sync (fdatasync: EINVAL), then
 * put back, so the pages synced before can still be read. */
static void failed_sync_takes_back_unsynced_pages_and_fails_the_log(void **state)
{
    (void)state;
    struct dp_overlay *o;
    struct dp_err err;
    uint8_t a[4096], got[4096];
    unlink(log_path()); /* a fresh log, whatever the other tests left */
    assert_int_equal(dp_overlay_open(dir, &o, &err), 0);
    page(a, 1);
    assert_int_equal(dp_overlay_append(o, 1, 0x1000, 1, a, &err), 0);
    page(a, 2);
    assert_int_equal(dp_overlay_append(o, 1, 0x2000, 1, a, &err), 0);
    assert_int_equal(dp_overlay_sync(o, &err), 0);
    assert_null(dp_overlay_failure(o));
    /* Unsynced: page 0x1000 twice, and a page new to the overlay. */
    page(a, 3);
    assert_int_equal(dp_overlay_append(o, 1, 0x1000, 1, a, &err), 0);
    page(a, 4);
    assert_int_equal(dp_overlay_append(o, 1, 0x1000, 1, a, &err), 0);
    page(a, 5);
    assert_int_equal(dp_overlay_append(o, 1, 0x3000, 1, a, &err), 0);

    int fd = dp_overlay_fd(o), saved = dup(fd), pfd[2];
    assert_true(saved >= 0 && pipe(pfd) == 0);
    assert_int_equal(dup2(pfd[0], fd), fd);
    assert_int_equal(dp_overlay_sync(o, &err), -1);
    assert_int_equal(dup2(saved, fd), fd);
    close(saved);
    close(pfd[0]);
    close(pfd[1]);
    assert_non_null(strstr(err.msg, "fdatasync of"));
    assert_non_null(dp_overlay_failure(o));

    /* The index is back to the synced records. */
    read_page(o, 1, 0x1000, got);
    assert_int_equal(got[0], 1);
    read_page(o, 1, 0x2000, got);
    assert_int_equal(got[0], 2);
    uint64_t off;
    assert_false(dp_overlay_lookup(o, 1, 0x3000, &off));
    struct dp_overlay_stats st;
    dp_overlay_get_stats(o, &st);
    assert_int_equal(st.live_pages, 2);
    assert_int_equal(st.syncs, 1);

    /* Failed for good: no append, no sync (a retry could falsely succeed), no compaction. */
    assert_int_equal(dp_overlay_append(o, 1, 0x2000, 1, a, &err), -1);
    assert_non_null(strstr(err.msg, "no more writes"));
    assert_int_equal(dp_overlay_sync(o, &err), -1);
    assert_false(dp_overlay_dirty(o));
    assert_false(dp_overlay_wants_compaction(o));
    assert_int_equal(dp_overlay_compact(o, &err), -1);
    read_page(o, 1, 0x2000, got);
    assert_int_equal(got[0], 2);
    dp_overlay_close(o);
}

static void compaction_keeps_live_pages(void **state)
{
    (void)state;
    struct dp_overlay *o;
    struct dp_err err;
    uint8_t a[4096], got[4096];
    assert_int_equal(dp_overlay_open(dir, &o, &err), 0);
    dp_overlay_set_compact_min(o, 16 * DP_OVERLAY_REC_SIZE);
    for (int round = 0; round < 20; round++)
        for (int p = 0; p < 4; p++) {
            page(a, round * 4 + p);
            assert_int_equal(dp_overlay_append(o, 7, 0x40000 + (uint64_t)p * 4096, 1, a, &err), 0);
        }
    assert_int_equal(dp_overlay_sync(o, &err), 0);
    assert_true(dp_overlay_wants_compaction(o));
    assert_int_equal(dp_overlay_compact(o, &err), 0);
    struct dp_overlay_stats st;
    dp_overlay_get_stats(o, &st);
    assert_int_equal(st.records, 4);
    assert_int_equal(st.log_bytes, 4 * DP_OVERLAY_REC_SIZE);
    assert_false(dp_overlay_wants_compaction(o));
    for (int p = 0; p < 4; p++) {
        read_page(o, 7, 0x40000 + (uint64_t)p * 4096, got);
        assert_int_equal(got[0], 19 * 4 + p);
    }
    /* Appends after compaction, then a reopen: everything still there. */
    page(a, 200);
    assert_int_equal(dp_overlay_append(o, 7, 0x40000, 1, a, &err), 0);
    assert_int_equal(dp_overlay_sync(o, &err), 0);
    dp_overlay_close(o);
    assert_int_equal(dp_overlay_open(dir, &o, &err), 0);
    read_page(o, 7, 0x40000, got);
    assert_int_equal(got[0], 200);
    read_page(o, 7, 0x43000, got);
    assert_int_equal(got[0], 79);
    dp_overlay_close(o);
    unlink(log_path());
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(replay_keeps_latest_and_cuts_torn_tail),
        cmocka_unit_test(corrupt_record_ends_the_log),
        cmocka_unit_test(compaction_keeps_live_pages),
        cmocka_unit_test(failed_sync_takes_back_unsynced_pages_and_fails_the_log),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
