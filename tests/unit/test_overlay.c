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

#include <sodium.h>

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

    /* A torn append after the last sync: the first 3000 bytes of a record. */
    int fd = open(log_path(), O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    uint8_t junk[3000];
    memset(junk, 0x77, sizeof(junk));
    memcpy(junk, "DPOV\2\0\0\0", 8);
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
    assert_int_equal(sb.st_size, 3 * DP_OVERLAY_REC_SIZE + 2 * DP_OVERLAY_COMMIT_SIZE);
    unlink(log_path());
}

/* Three synced groups (2, 1 and 3 pages): 6 records and 3 commit records. */
static void three_groups(void)
{
    struct dp_overlay *o;
    struct dp_err err;
    uint8_t a[3 * 4096];
    assert_int_equal(dp_overlay_open(dir, &o, &err), 0);
    static const int sizes[3] = {2, 1, 3};
    int v = 10;
    for (int g = 0; g < 3; g++) {
        for (int i = 0; i < sizes[g]; i++)
            page(a + (size_t)i * 4096, v++);
        assert_int_equal(dp_overlay_append(o, 5, 0x10000 + (uint64_t)g * 0x10000, (uint32_t)sizes[g], a, &err), 0);
        assert_int_equal(dp_overlay_sync(o, &err), 0);
    }
    dp_overlay_close(o);
}

static uint8_t *slurp(size_t *len)
{
    int fd = open(log_path(), O_RDONLY);
    struct stat sb;
    assert_int_equal(fstat(fd, &sb), 0);
    uint8_t *b = malloc((size_t)sb.st_size);
    assert_int_equal(read(fd, b, (size_t)sb.st_size), sb.st_size);
    close(fd);
    *len = (size_t)sb.st_size;
    return b;
}

static void flip(off_t at)
{
    int fd = open(log_path(), O_RDWR);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, at), 1);
    b ^= 0x01;
    assert_int_equal(pwrite(fd, &b, 1, at), 1);
    close(fd);
}

/* A bit flipped inside acknowledged writes (the first record's data, a
 * middle record's header, a commit record, the last group's commit record)
 * is no torn tail: open fails saying so, and the file stays byte for byte. */
static void damage_inside_acknowledged_writes_refuses_to_open(void **state)
{
    (void)state;
    const off_t R = DP_OVERLAY_REC_SIZE, C = DP_OVERLAY_COMMIT_SIZE;
    const off_t where[] = {
        DP_OVERLAY_REC_HDR + 7,   /* first record's data */
        2 * R + C + 20,           /* the second group's only record: its address */
        2 * R,                    /* the first commit record's magic */
        2 * R + 40,               /* the first commit record's checksum */
        6 * R + 2 * C + 50,       /* the last group's commit record: its group hash */
        6 * R + 2 * C + 9,        /* ... its count */
        6 * R + 2 * C + 1,        /* ... its magic: still no torn tail */
    };
    for (size_t k = 0; k < DP_ARRAY_LEN(where); k++) {
        three_groups();
        size_t n0, n1;
        uint8_t *before = slurp(&n0);
        assert_int_equal(n0, 6 * R + 3 * C);
        flip(where[k]);
        struct dp_overlay *o = NULL;
        struct dp_err err = {{0}};
        assert_int_equal(dp_overlay_open(dir, &o, &err), -1);
        assert_non_null(strstr(err.msg, "not a torn tail"));
        assert_non_null(strstr(err.msg, "left untouched"));
        uint8_t *after = slurp(&n1);
        assert_int_equal(n1, n0);
        after[where[k]] ^= 0x01;
        assert_memory_equal(before, after, n0);
        free(before);
        free(after);
        unlink(log_path());
    }
}

/* One to three bytes that are neither zeros nor the start of a page record
 * after the last commit record: damage (as for a longer run of such bytes),
 * judged without reading past the end of the log (fuzz/fuzz_overlay.c found
 * a 4-byte read of a 3-byte tail). */
static void short_garbage_tail_is_damage(void **state)
{
    (void)state;
    for (size_t tail = 1; tail <= 3; tail++) {
        three_groups();
        int fd = open(log_path(), O_WRONLY | O_APPEND);
        assert_int_equal(write(fd, "\x08\x2b\x0e", tail), (ssize_t)tail);
        close(fd);
        size_t n0, n1;
        uint8_t *before = slurp(&n0);
        struct dp_overlay *o = NULL;
        struct dp_err err = {{0}};
        assert_int_equal(dp_overlay_open(dir, &o, &err), -1);
        assert_non_null(strstr(err.msg, "not a torn tail"));
        uint8_t *after = slurp(&n1);
        assert_int_equal(n1, n0);
        assert_memory_equal(before, after, n0);
        free(before);
        free(after);
        unlink(log_path());
    }
}

/* What may be torn is only what follows the last commit record: a group
 * appended without its commit (crash before the sync), a half-written
 * record, zeros (a file extended whose data never arrived). It is cut and
 * every earlier group stays. */
static void torn_last_group_is_cut(void **state)
{
    (void)state;
    const off_t R = DP_OVERLAY_REC_SIZE, C = DP_OVERLAY_COMMIT_SIZE;
    for (int kind = 0; kind < 4; kind++) {
        three_groups();
        struct dp_overlay *o;
        struct dp_err err;
        uint8_t a[2 * 4096], got[4096];
        assert_int_equal(dp_overlay_open(dir, &o, &err), 0);
        page(a, 90);
        page(a + 4096, 91);
        assert_int_equal(dp_overlay_append(o, 5, 0x10000, 2, a, &err), 0); /* never synced */
        dp_overlay_close(o);
        off_t end = 6 * R + 3 * C;
        int fd = open(log_path(), O_RDWR);
        if (kind == 1)
            assert_int_equal(ftruncate(fd, end + R + 1000), 0);  /* second record half written */
        if (kind == 2) {
            uint8_t z[4096] = {0};
            assert_int_equal(pwrite(fd, z, sizeof(z), end + 100), (ssize_t)sizeof(z)); /* zeros */
        }
        if (kind == 3) {
            uint8_t x = 0x5a;
            assert_int_equal(pwrite(fd, &x, 1, end + DP_OVERLAY_REC_HDR + 5), 1); /* bad data, no commit */
        }
        close(fd);
        assert_int_equal(dp_overlay_open(dir, &o, &err), 0);
        struct dp_overlay_stats st;
        dp_overlay_get_stats(o, &st);
        assert_int_equal(st.records, 6);
        assert_int_equal(st.live_pages, 6);
        assert_true(st.torn_bytes > 0);
        read_page(o, 5, 0x10000, got);
        assert_int_equal(got[0], 10); /* the acknowledged version */
        read_page(o, 5, 0x32000, got);
        assert_int_equal(got[0], 15);
        /* The log goes on after the cut. */
        page(a, 99);
        assert_int_equal(dp_overlay_append(o, 5, 0x10000, 1, a, &err), 0);
        assert_int_equal(dp_overlay_sync(o, &err), 0);
        dp_overlay_close(o);
        assert_int_equal(dp_overlay_open(dir, &o, &err), 0);
        read_page(o, 5, 0x10000, got);
        assert_int_equal(got[0], 99);
        dp_overlay_close(o);
        struct stat sb;
        assert_int_equal(stat(log_path(), &sb), 0);
        assert_int_equal(sb.st_size, 7 * R + 4 * C);
        unlink(log_path());
    }
}

/* A format-1 log (page records alone, written by an older server) is read
 * with the old rule and rewritten as format 2 at open. */
static void format1_log_is_read_and_rewritten(void **state)
{
    (void)state;
    uint8_t rec[2][DP_OVERLAY_REC_SIZE];
    for (int i = 0; i < 2; i++) {
        uint8_t *r = rec[i];
        memset(r, 0, DP_OVERLAY_REC_HDR);
        memset(r + DP_OVERLAY_REC_HDR, 0x40 + i, 4096);
        const uint32_t magic = 0x564f5044u, format = 1;
        const int32_t pid = 3;
        const uint64_t addr = 0x7000 + (uint64_t)i * 4096, seq = (uint64_t)i;
        memcpy(r, &magic, 4);
        memcpy(r + 4, &format, 4);
        memcpy(r + 8, &pid, 4);
        memcpy(r + 16, &addr, 8);
        memcpy(r + 24, &seq, 8);
        crypto_generichash_state st;
        crypto_generichash_init(&st, NULL, 0, 16);
        crypto_generichash_update(&st, r, 32);
        crypto_generichash_update(&st, r + DP_OVERLAY_REC_HDR, 4096);
        crypto_generichash_final(&st, r + 32, 16);
    }
    int fd = open(log_path(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_int_equal(write(fd, rec, sizeof(rec)), (ssize_t)sizeof(rec));
    close(fd);
    struct dp_overlay *o;
    struct dp_err err;
    uint8_t got[4096];
    assert_int_equal(dp_overlay_open(dir, &o, &err), 0);
    read_page(o, 3, 0x8000, got);
    assert_int_equal(got[10], 0x41);
    dp_overlay_close(o);
    struct stat sb;
    assert_int_equal(stat(log_path(), &sb), 0);
    assert_int_equal(sb.st_size, 2 * DP_OVERLAY_REC_SIZE + DP_OVERLAY_COMMIT_SIZE); /* now format 2 */
    assert_int_equal(dp_overlay_open(dir, &o, &err), 0);
    read_page(o, 3, 0x7000, got);
    assert_int_equal(got[10], 0x40);
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
    /* On a pipe the group's commit record already fails (ESPIPE); the
     * integration test injects EIO into the fdatasync itself. */
    assert_true(strstr(err.msg, "fdatasync of") || strstr(err.msg, "commit record"));
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
    assert_int_equal(st.log_bytes, 4 * DP_OVERLAY_REC_SIZE + DP_OVERLAY_COMMIT_SIZE);
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
        cmocka_unit_test(damage_inside_acknowledged_writes_refuses_to_open),
        cmocka_unit_test(torn_last_group_is_cut),
        cmocka_unit_test(short_garbage_tail_is_damage),
        cmocka_unit_test(format1_log_is_read_and_rewritten),
        cmocka_unit_test(compaction_keeps_live_pages),
        cmocka_unit_test(failed_sync_takes_back_unsynced_pages_and_fails_the_log),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
