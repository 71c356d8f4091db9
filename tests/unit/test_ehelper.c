/* ehelper's pure part: the move request's layout, the validation of the
 * helper's reply (it comes from the target's memory: every field checked),
 * and the Seccomp line of /proc/PID/status. The helper itself runs in
 * tests/integration/test_ehelper.py (tests/helpers/ehdrv). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>
#include <sys/syscall.h>

#include "ehelper.h"

#define PG 4096UL
#define BUF 0x7f0000001000ULL
#define SCR 0x7f0000100000ULL

static size_t build3(uint8_t *msg, struct dp_eh_run *r)
{
    r[0] = (struct dp_eh_run){.src = 0x10000, .npages = 4};
    r[1] = (struct dp_eh_run){.src = 0x20000, .npages = 1};
    r[2] = (struct dp_eh_run){.src = 0x30000, .npages = 2};
    return dp_eh_build_move(msg, DP_EH_BUF_BYTES, BUF, 7, SCR, r, 3);
}

/* Simulates the helper: every entry's ret, and the kernel's move field. */
static void answer(uint8_t *reply, size_t i, size_t n, int64_t ret, int64_t move)
{
    size_t e = 8 + i * sizeof(struct dp_eh_entry);
    memcpy(reply + e + offsetof(struct dp_eh_entry, ret), &ret, 8);
    size_t mv = 8 + n * sizeof(struct dp_eh_entry) + i * sizeof(struct dp_uffdio_move);
    memcpy(reply + mv + offsetof(struct dp_uffdio_move, move), &move, 8);
}

static void request_layout(void **state)
{
    (void)state;
    uint8_t msg[DP_EH_BUF_BYTES];
    struct dp_eh_run r[3];
    size_t len = build3(msg, r);
    assert_int_equal(len, 8 + 3 * (sizeof(struct dp_eh_entry) + sizeof(struct dp_uffdio_move)));
    uint64_t cnt;
    memcpy(&cnt, msg, 8);
    assert_int_equal(cnt, 3);
    uint64_t dst = SCR;
    for (size_t i = 0; i < 3; i++) {
        struct dp_eh_entry e;
        struct dp_uffdio_move mv;
        memcpy(&e, msg + 8 + i * sizeof(e), sizeof(e));
        size_t mvoff = 8 + 3 * sizeof(e) + i * sizeof(mv);
        memcpy(&mv, msg + mvoff, sizeof(mv));
        assert_int_equal(e.nr, __NR_ioctl);
        assert_int_equal(e.a[0], 7);
        assert_int_equal(e.a[1], DP_UFFDIO_MOVE);
        assert_int_equal(e.a[2], BUF + mvoff);      /* points at its struct inside the target's buffer */
        assert_int_equal(mv.src, r[i].src);
        assert_int_equal(mv.dst, dst);               /* runs back to back in scratch */
        assert_int_equal(r[i].scratch, dst);
        assert_int_equal(mv.len, r[i].npages * PG);
        dst += mv.len;
    }
}

static void request_limits(void **state)
{
    (void)state;
    uint8_t msg[DP_EH_BUF_BYTES];
    struct dp_eh_run r[2] = {{.src = 0x10000, .npages = DP_EH_SCRATCH_PAGES}, {.src = 0x900000, .npages = 1}};
    assert_int_equal(dp_eh_build_move(msg, sizeof(msg), BUF, 3, SCR, r, 1) > 0, 1);
    assert_int_equal(dp_eh_build_move(msg, sizeof(msg), BUF, 3, SCR, r, 2), 0);   /* scratch overflow */
    r[0] = (struct dp_eh_run){.src = 0x10001, .npages = 1};
    assert_int_equal(dp_eh_build_move(msg, sizeof(msg), BUF, 3, SCR, r, 1), 0);   /* unaligned */
    r[0] = (struct dp_eh_run){.src = 0x10000, .npages = 0};
    assert_int_equal(dp_eh_build_move(msg, sizeof(msg), BUF, 3, SCR, r, 1), 0);
    assert_int_equal(dp_eh_build_move(msg, sizeof(msg), BUF, 3, SCR, r, 0), 0);
    static struct dp_eh_run many[400];
    for (size_t i = 0; i < 400; i++)
        many[i] = (struct dp_eh_run){.src = 0x10000 + i * 2 * PG, .npages = 1};
    assert_int_equal(dp_eh_build_move(msg, sizeof(msg), BUF, 3, SCR, many, 400), 0);  /* buffer */
    assert_int_equal(dp_eh_build_move(msg, 100, BUF, 3, SCR, many, 2), 0);             /* cap */
}

/* All moved; the second run refused (EBUSY); the third moved one page then
 * EBUSY: moved counts and errors come out per run. */
static void reply_outcomes(void **state)
{
    (void)state;
    uint8_t msg[DP_EH_BUF_BYTES], rep[DP_EH_BUF_BYTES];
    struct dp_eh_run r[3];
    size_t len = build3(msg, r);
    memcpy(rep, msg, len);
    answer(rep, 0, 3, 0, 4 * PG);
    answer(rep, 1, 3, -EBUSY, -EBUSY);
    answer(rep, 2, 3, -EAGAIN, PG);
    assert_int_equal(dp_eh_parse_move(rep, len, msg, len, r, 3), 0);
    assert_int_equal(r[0].moved, 4);
    assert_int_equal(r[0].err, 0);
    assert_int_equal(r[1].moved, 0);
    assert_int_equal(r[1].err, EBUSY);
    assert_int_equal(r[2].moved, 1);
    assert_int_equal(r[2].err, EAGAIN);
}

/* Anything the helper could not have written is refused. */
static void reply_garbage_refused(void **state)
{
    (void)state;
    uint8_t msg[DP_EH_BUF_BYTES], rep[DP_EH_BUF_BYTES];
    struct dp_eh_run r[3];
    size_t len = build3(msg, r);
    struct {
        size_t i;
        int64_t ret, move;
    } bad[] = {
        {0, 0, 3 * PG},          /* success but not the whole run */
        {0, 5, 4 * PG},          /* positive ret */
        {0, -5000, 0},           /* not an errno */
        {0, -EBUSY, 4 * PG},     /* failure claiming everything moved */
        {0, -EBUSY, 100},        /* not a page multiple */
        {0, -EBUSY, -9000},
    };
    for (size_t k = 0; k < DP_ARRAY_LEN(bad); k++) {
        memcpy(rep, msg, len);
        answer(rep, 0, 3, 0, 4 * PG);
        answer(rep, 1, 3, 0, PG);
        answer(rep, 2, 3, 0, 2 * PG);
        answer(rep, bad[k].i, 3, bad[k].ret, bad[k].move);
        assert_int_equal(dp_eh_parse_move(rep, len, msg, len, r, 3), -1);
    }
    memcpy(rep, msg, len);
    answer(rep, 0, 3, 0, 4 * PG);
    answer(rep, 1, 3, 0, PG);
    answer(rep, 2, 3, 0, 2 * PG);
    assert_int_equal(dp_eh_parse_move(rep, len, msg, len, r, 3), 0);
    assert_int_equal(dp_eh_parse_move(rep, len - 1, msg, len, r, 3), -1);   /* short */
    rep[8 + 8] ^= 1;                                                        /* an argument changed */
    assert_int_equal(dp_eh_parse_move(rep, len, msg, len, r, 3), -1);
    rep[8 + 8] ^= 1;
    rep[len - 40 + 8] ^= 1;                                                 /* a move's src changed */
    assert_int_equal(dp_eh_parse_move(rep, len, msg, len, r, 3), -1);
    rep[len - 40 + 8] ^= 1;
    rep[0] = 2;                                                             /* count */
    assert_int_equal(dp_eh_parse_move(rep, len, msg, len, r, 3), -1);
}

static void seccomp_line(void **state)
{
    (void)state;
    assert_int_equal(dp_eh_seccomp_mode("Name:\tx\nSeccomp:\t0\nSeccomp_filters:\t0\n"), 0);
    assert_int_equal(dp_eh_seccomp_mode("Name:\tx\nSeccomp:\t2\nSeccomp_filters:\t1\n"), 2);
    assert_int_equal(dp_eh_seccomp_mode("Name:\tx\nSeccomp:\t1"), 1);
    assert_int_equal(dp_eh_seccomp_mode("Name:\tx\nSeccomp_filters:\t1\n"), -1);  /* no Seccomp: line */
    assert_int_equal(dp_eh_seccomp_mode("Name:\tx\nSeccomp:\t3\n"), -1);
    assert_int_equal(dp_eh_seccomp_mode("Name:\tx\nSeccomp:\t22\n"), -1);
    assert_int_equal(dp_eh_seccomp_mode("Seccomp:\t0\n"), -1);                    /* never the first line */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(request_layout),
        cmocka_unit_test(request_limits),
        cmocka_unit_test(reply_outcomes),
        cmocka_unit_test(reply_garbage_refused),
        cmocka_unit_test(seccomp_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
