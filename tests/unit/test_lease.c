/* lib/lease (the one-writer rule), lib/proto_lease (its message) and
 * lib/lease_store (its file and the write-back generations). The state
 * machine is driven through every transition; the file and the message are
 * checked to refuse every single-bit flip and every invalid field; the store
 * is run in a scratch directory, including a generation change interrupted
 * by a crash. */
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

#include "lease.h"
#include "lease_store.h"
#include "overlay.h"
#include "proto.h"
#include "proto_lease.h"

/* ---- helpers ----------------------------------------------------------------- */

static struct dp_lease_ask ask(uint64_t epoch, uint32_t flags, const char *holder)
{
    struct dp_lease_ask a = {.epoch = epoch, .flags = flags};
    snprintf(a.holder, sizeof(a.holder), "%s", holder);
    return a;
}

static enum dp_lease_verdict decide(struct dp_lease *l, struct dp_lease_ask a, char *why)
{
    struct dp_lease next;
    enum dp_lease_verdict v = dp_lease_decide(l, &a, 1764760000000000ull, &next, why, 1024);
    *l = next;
    return v;
}

/* ---- pure: the state machine ------------------------------------------------- */

/* A free lease is granted at epoch last + 1; the holder resumes it; a second
 * restore is refused with the holder's name and the way to take over. */
static void grant_resume_refuse(void **state)
{
    (void)state;
    struct dp_lease l = {0};
    char why[1024];
    assert_int_equal(decide(&l, ask(0, 0, "A"), why), DP_LEASE_GRANTED);
    assert_int_equal(l.epoch, 1);
    assert_true(l.held);
    assert_string_equal(l.holder, "A");
    assert_int_equal(l.log_epoch, 0); /* the generation moves when the store has moved the log */
    assert_int_equal(decide(&l, ask(1, 0, "A"), why), DP_LEASE_RESUMED);
    assert_int_equal(l.epoch, 1);
    assert_int_equal(decide(&l, ask(0, 0, "B"), why), DP_LEASE_HELD);
    assert_int_equal(l.epoch, 1);
    assert_string_equal(l.holder, "A");
    assert_non_null(strstr(why, "'A'"));
    assert_non_null(strstr(why, "--take-over"));
}

/* Take-over: a new epoch for the new holder; the old epoch is stale from
 * then on, for resume, writes and reads. */
static void take_over_fences_the_old_epoch(void **state)
{
    (void)state;
    struct dp_lease l = {0};
    char why[1024];
    decide(&l, ask(0, 0, "A"), why);
    assert_int_equal(decide(&l, ask(0, DP_LEASE_TAKE_OVER, "B"), why), DP_LEASE_GRANTED);
    assert_int_equal(l.epoch, 2);
    assert_string_equal(l.holder, "B");
    assert_non_null(strstr(why, "'A'"));
    assert_int_equal(decide(&l, ask(1, 0, "A"), why), DP_LEASE_STALE);
    assert_non_null(strstr(why, "'B'"));
    assert_int_equal(l.epoch, 2);
    assert_int_equal(dp_lease_may_write(&l, 1, why, sizeof(why)), DP_E_FENCED);
    assert_int_equal(dp_lease_may_read(&l, 1, why, sizeof(why)), DP_E_FENCED);
    assert_int_equal(dp_lease_may_write(&l, 2, why, sizeof(why)), DP_E_OK);
    assert_int_equal(dp_lease_may_read(&l, 2, why, sizeof(why)), DP_E_OK);
    /* a released epoch cannot be released again, nor resumed */
    assert_int_equal(decide(&l, ask(1, DP_LEASE_RELEASE, "A"), why), DP_LEASE_STALE);
    assert_true(l.held);
}

/* Release frees the lease; its epoch is stale afterwards; the next grant is
 * a new epoch (a new generation), never the released one again. */
static void release_then_new_epoch(void **state)
{
    (void)state;
    struct dp_lease l = {0};
    char why[1024];
    decide(&l, ask(0, 0, "A"), why);
    assert_int_equal(decide(&l, ask(1, DP_LEASE_RELEASE, "A"), why), DP_LEASE_RELEASED);
    assert_false(l.held);
    assert_int_equal(decide(&l, ask(1, 0, "A"), why), DP_LEASE_STALE);
    assert_int_equal(dp_lease_may_write(&l, 1, why, sizeof(why)), DP_E_FENCED);
    assert_int_equal(decide(&l, ask(0, 0, "C"), why), DP_LEASE_GRANTED);
    assert_int_equal(l.epoch, 2);
}

/* An epoch above the last granted (a lease file lost or replaced) is not
 * believed. */
static void unknown_epoch_is_stale(void **state)
{
    (void)state;
    struct dp_lease l = {0};
    char why[1024];
    decide(&l, ask(0, 0, "A"), why);
    assert_int_equal(decide(&l, ask(7, 0, "A"), why), DP_LEASE_STALE);
    assert_non_null(strstr(why, "never granted"));
}

/* Writes without a lease: accepted only while nobody holds it. */
static void unleased_writes(void **state)
{
    (void)state;
    struct dp_lease l = {0};
    char why[1024];
    assert_int_equal(dp_lease_may_write(&l, 0, why, sizeof(why)), DP_E_OK);
    decide(&l, ask(0, 0, "A"), why);
    assert_int_equal(dp_lease_may_write(&l, 0, why, sizeof(why)), DP_E_LEASE_HELD);
    assert_non_null(strstr(why, "'A'"));
    assert_int_equal(dp_lease_may_read(&l, 0, why, sizeof(why)), DP_E_OK);
}

/* ---- pure: the lease file ---------------------------------------------------- */

/* Round trip, and every single-bit flip of the 128 bytes is refused. */
static void file_round_trip_and_every_flip_refused(void **state)
{
    (void)state;
    struct dp_lease l = {.epoch = 5, .log_epoch = 4, .held = true, .granted_us = 123456789}, back;
    snprintf(l.holder, sizeof(l.holder), "restore pid 42 on dst");
    uint8_t f[DP_LEASE_FILE_SIZE];
    struct dp_err err;
    dp_lease_encode(&l, f);
    assert_int_equal(dp_lease_decode(f, sizeof(f), &back, &err), 0);
    assert_int_equal(back.epoch, 5);
    assert_int_equal(back.log_epoch, 4);
    assert_true(back.held);
    assert_int_equal(back.granted_us, 123456789);
    assert_string_equal(back.holder, l.holder);
    for (size_t bit = 0; bit < sizeof(f) * 8; bit++) {
        f[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        assert_int_equal(dp_lease_decode(f, sizeof(f), &back, &err), -1);
        f[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    assert_int_equal(dp_lease_decode(f, sizeof(f) - 1, &back, &err), -1);
}

/* ---- pure: the LEASE message ------------------------------------------------- */

static void message_round_trip_and_invalid_requests(void **state)
{
    (void)state;
    struct dp_buf b = {0};
    struct dp_lease_ask a = ask(0, DP_LEASE_TAKE_OVER, "B"), back;
    struct dp_err err;
    assert_int_equal(dp_enc_lease_req(&b, 9, &a), 0);
    assert_int_equal(b.len, DP_HDR_SIZE + DP_LEASE_REQ_LEN);
    uint8_t *p = b.data + DP_HDR_SIZE;
    assert_int_equal(dp_dec_lease_req(p, DP_LEASE_REQ_LEN, &back, &err), DP_E_OK);
    assert_int_equal(back.flags, DP_LEASE_TAKE_OVER);
    assert_string_equal(back.holder, "B");
    /* take-over of a named epoch, release of epoch 0, unknown flags, no
     * holder, a control byte, bytes after the name: all MALFORMED */
    uint8_t m[DP_LEASE_REQ_LEN];
    struct { size_t off; uint8_t v; } bad[] = {{0, 1}, {8, 0x04}, {12, 0}, {16, 0x07}, {40, 'x'}, {14, 1}};
    for (size_t i = 0; i < DP_ARRAY_LEN(bad); i++) {
        memcpy(m, p, sizeof(m));
        m[bad[i].off] = bad[i].v;
        assert_int_equal(dp_dec_lease_req(m, sizeof(m), &back, &err), DP_E_MALFORMED);
    }
    memcpy(m, p, sizeof(m));
    dp_put_u64(m, 3);
    dp_put_u32(m + 8, DP_LEASE_RELEASE);
    assert_int_equal(dp_dec_lease_req(m, sizeof(m), &back, &err), DP_E_OK);
    dp_put_u64(m, 0);
    assert_int_equal(dp_dec_lease_req(m, sizeof(m), &back, &err), DP_E_MALFORMED);
    assert_int_equal(dp_dec_lease_req(p, DP_LEASE_REQ_LEN - 1, &back, &err), DP_E_MALFORMED);
    dp_buf_free(&b);

    struct dp_lease_reply r = {.epoch = 2, .verdict = DP_LEASE_GRANTED, .prev_epoch = 1}, rb;
    snprintf(r.prev_holder, sizeof(r.prev_holder), "A");
    assert_int_equal(dp_enc_lease_reply(&b, 9, &r), 0);
    p = b.data + DP_HDR_SIZE;
    assert_int_equal(dp_dec_lease_reply(p, DP_LEASE_REPLY_LEN, &rb, &err), DP_E_OK);
    assert_int_equal(rb.epoch, 2);
    assert_int_equal(rb.prev_epoch, 1);
    assert_string_equal(rb.prev_holder, "A");
    p[8] = 9; /* verdict out of range */
    assert_int_equal(dp_dec_lease_reply(p, DP_LEASE_REPLY_LEN, &rb, &err), DP_E_MALFORMED);
    dp_buf_free(&b);
}

/* ---- the store, in a scratch directory --------------------------------------- */

static char dir[64];

static void write_file(const char *name, const char *text)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static long file_size(const char *name)
{
    char path[128];
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static int setup_dir(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/dp-lease-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* A grant moves a non-empty log aside (kept, named by its epoch), persists
 * the lease, and a reopen reads the same state; a second generation of the
 * same epoch never overwrites the first. */
static void store_grant_moves_the_log_aside(void **state)
{
    (void)state;
    struct dp_lease_store *s;
    struct dp_err err = {{0}};
    char archived[4400], why[1024];
    assert_int_equal(dp_lease_store_open(dir, &s, &err), 0);
    assert_int_equal(dp_lease_store_get(s)->epoch, 0);
    write_file(DP_OVERLAY_NAME, "unleased writes of generation 0");
    struct dp_lease next, cur = *dp_lease_store_get(s);
    struct dp_lease_ask a = ask(0, 0, "A");
    assert_int_equal(dp_lease_decide(&cur, &a, 1, &next, why, sizeof(why)), DP_LEASE_GRANTED);
    assert_int_equal(dp_lease_store_apply(s, &next, true, archived, sizeof(archived), &err), 0);
    assert_non_null(strstr(archived, DP_OVERLAY_NAME ".epoch-0"));
    assert_int_equal(file_size(DP_OVERLAY_NAME ".epoch-0"), 31);
    assert_int_equal(file_size(DP_OVERLAY_NAME), -1);
    assert_int_equal(dp_lease_store_get(s)->log_epoch, 1);
    dp_lease_store_close(s);

    assert_int_equal(dp_lease_store_open(dir, &s, &err), 0);
    assert_int_equal(dp_lease_store_get(s)->epoch, 1);
    assert_true(dp_lease_store_get(s)->held);
    assert_string_equal(dp_lease_store_get(s)->holder, "A");
    /* epoch 1 writes; take-over: its log is kept as .epoch-1 */
    write_file(DP_OVERLAY_NAME, "epoch 1");
    write_file(DP_OVERLAY_NAME ".epoch-1", "an older file of that name");
    cur = *dp_lease_store_get(s);
    a = ask(0, DP_LEASE_TAKE_OVER, "B");
    assert_int_equal(dp_lease_decide(&cur, &a, 2, &next, why, sizeof(why)), DP_LEASE_GRANTED);
    assert_int_equal(dp_lease_store_apply(s, &next, true, archived, sizeof(archived), &err), 0);
    assert_non_null(strstr(archived, ".epoch-1.1"));
    assert_int_equal(file_size(DP_OVERLAY_NAME ".epoch-1"), 26);
    assert_int_equal(file_size(DP_OVERLAY_NAME ".epoch-1.1"), 7);
    dp_lease_store_close(s);
}

/* A crash between "lease written with the new epoch" and "log moved aside":
 * the reopen finishes the move before anyone can read the old log as the
 * new epoch's. */
static void store_finishes_an_interrupted_generation_change(void **state)
{
    (void)state;
    struct dp_lease l = {.epoch = 3, .log_epoch = 2, .held = true, .granted_us = 1};
    snprintf(l.holder, sizeof(l.holder), "C");
    uint8_t f[DP_LEASE_FILE_SIZE];
    dp_lease_encode(&l, f);
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", dir, DP_LEASE_FILE_NAME);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, f, sizeof(f)), (ssize_t)sizeof(f));
    close(fd);
    write_file(DP_OVERLAY_NAME, "epoch 2's writes");
    struct dp_lease_store *s;
    struct dp_err err = {{0}};
    assert_int_equal(dp_lease_store_open(dir, &s, &err), 0);
    assert_int_equal(dp_lease_store_get(s)->log_epoch, 3);
    assert_int_equal(file_size(DP_OVERLAY_NAME ".epoch-2"), 16);
    assert_int_equal(file_size(DP_OVERLAY_NAME), -1);
    dp_lease_store_close(s);
    /* a damaged lease file stops the server: it decides who may write */
    f[50] ^= 1;
    fd = open(path, O_WRONLY | O_TRUNC);
    assert_int_equal(write(fd, f, sizeof(f)), (ssize_t)sizeof(f));
    close(fd);
    assert_int_equal(dp_lease_store_open(dir, &s, &err), -1);
    assert_non_null(strstr(err.msg, "checksum"));
}

/* The epoch never wraps: at the maximum a grant (new or take-over) is
 * refused with the state unchanged, and a file beyond it does not decode
 * (fuzz_lease found a lease file at 2^64 - 1 granting epoch 0). */
static void epoch_never_wraps(void **state)
{
    (void)state;
    char why[1024];
    struct dp_lease l = {.epoch = DP_LEASE_EPOCH_MAX - 1};
    assert_int_equal(decide(&l, ask(0, 0, "A"), why), DP_LEASE_GRANTED);
    assert_true(l.epoch == DP_LEASE_EPOCH_MAX);
    struct dp_lease before = l;
    assert_int_equal(decide(&l, ask(0, DP_LEASE_TAKE_OVER, "B"), why), DP_LEASE_HELD);
    assert_memory_equal(&l, &before, sizeof(l));
    assert_non_null(strstr(why, "maximum"));
    l.held = false;
    assert_int_equal(decide(&l, ask(0, 0, "C"), why), DP_LEASE_HELD);
    assert_true(l.epoch == DP_LEASE_EPOCH_MAX);
    uint8_t f[DP_LEASE_FILE_SIZE];
    struct dp_lease back;
    struct dp_err err;
    dp_lease_encode(&l, f);
    assert_int_equal(dp_lease_decode(f, sizeof(f), &back, &err), 0);
    l.epoch = UINT64_MAX;
    dp_lease_encode(&l, f);
    assert_int_equal(dp_lease_decode(f, sizeof(f), &back, &err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(grant_resume_refuse),
        cmocka_unit_test(epoch_never_wraps),
        cmocka_unit_test(take_over_fences_the_old_epoch),
        cmocka_unit_test(release_then_new_epoch),
        cmocka_unit_test(unknown_epoch_is_stale),
        cmocka_unit_test(unleased_writes),
        cmocka_unit_test(file_round_trip_and_every_flip_refused),
        cmocka_unit_test(message_round_trip_and_invalid_requests),
        cmocka_unit_test_setup_teardown(store_grant_moves_the_log_aside, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(store_finishes_an_interrupted_generation_change, setup_dir, teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
