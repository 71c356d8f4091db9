#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "netbound.h"
#include "wbwait.h"

/* A fake clock that advances 1 ms per reading, and a pump that acks after
 * a set number of turns. */
static uint64_t fake_ns;
static uint64_t fake_now(void) { return fake_ns += 1000000ull; }
struct pumpst { int pending, ack_after, turns, gone_after; };
static int pump(void *arg)
{
    struct pumpst *p = arg;
    p->turns++;
    if (p->gone_after && p->turns >= p->gone_after)
        return -1;
    if (p->ack_after && p->turns >= p->ack_after)
        p->pending = 0;
    return 0;
}

/* Acks in time: done; never: timed out after about ms (not later); the
 * process leaving: gone. */
static void wait_bounded(void **state)
{
    (void)state;
    struct pumpst p = {.pending = 2, .ack_after = 5};
    assert_int_equal(dp_wait_bounded(pump, &p, &p.pending, 100, fake_now), DP_WAIT_DONE);
    p = (struct pumpst){.pending = 1};
    assert_int_equal(dp_wait_bounded(pump, &p, &p.pending, 100, fake_now), DP_WAIT_TIMEOUT);
    assert_true(p.turns >= 90 && p.turns <= 100);
    p = (struct pumpst){.pending = 1};
    assert_int_equal(dp_wait_bounded(pump, &p, &p.pending, 0, fake_now), DP_WAIT_TIMEOUT);
    assert_true(p.turns >= DP_WAIT_DEFAULT_MS - 10 && p.turns <= DP_WAIT_DEFAULT_MS);
    p = (struct pumpst){.pending = 1, .gone_after = 3};
    assert_int_equal(dp_wait_bounded(pump, &p, &p.pending, 100, fake_now), DP_WAIT_GONE);
    p = (struct pumpst){.pending = 0};
    assert_int_equal(dp_wait_bounded(pump, &p, &p.pending, 100, fake_now), DP_WAIT_DONE);
    assert_int_equal(p.turns, 0);
}

/* Each flag parses into its field; bad values are refused with the flag's name. */
static void flags(void **state)
{
    (void)state;
    struct dp_netbound b = *dp_netbound_get();
    struct dp_err err;
    assert_int_equal(b.user_timeout_ms, DP_NB_USER_TIMEOUT_MS);
    assert_int_equal(b.request_timeout_ms, DP_NB_REQUEST_TIMEOUT_MS);
    assert_int_equal(dp_netbound_parse_flag(&b, "request-timeout", "2500", &err), 0);
    assert_int_equal(b.request_timeout_ms, 2500);
    assert_int_equal(dp_netbound_parse_flag(&b, "tcp-user-timeout", "0", &err), 0);
    assert_int_equal(b.user_timeout_ms, 0);
    assert_int_equal(dp_netbound_parse_flag(&b, "max-skeleton", "1G", &err), 0);
    assert_int_equal(b.max_skeleton_bytes, 1ull << 30);
    assert_int_equal(dp_netbound_parse_flag(&b, "auth-retry", "-5", &err), -1);
    assert_non_null(strstr(err.msg, "--auth-retry"));
    assert_int_equal(dp_netbound_parse_flag(&b, "max-reply", "12", &err), -1);
    assert_non_null(strstr(err.msg, "--max-reply"));
    assert_int_equal(dp_netbound_parse_flag(&b, "nope", "1", &err), -1);
    dp_netbound_set(&b);
    assert_int_equal(dp_netbound_get()->request_timeout_ms, 2500);
}

/* A deadline passes only after ms; 0 or an unset start never. */
/* --writeback-timeout: whole milliseconds 1..3600000, nothing else. */
static void writeback_timeout_flag(void **state)
{
    (void)state;
    int ms = 7;
    assert_int_equal(dp_wait_parse_ms("1", &ms), 0);
    assert_int_equal(ms, 1);
    assert_int_equal(dp_wait_parse_ms("3600000", &ms), 0);
    assert_int_equal(ms, 3600000);
    static const char *bad[] = {"0", "3600001", "-5", "", "5s", "1e3", "99999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(dp_wait_parse_ms(bad[i], &ms), -1);
    assert_int_equal(ms, 3600000);
}

static void expired(void **state)
{
    (void)state;
    assert_false(dp_netbound_expired(1000000, 11000000, 10));
    assert_true(dp_netbound_expired(1000000, 11000001, 10));
    assert_false(dp_netbound_expired(1000000, UINT64_MAX, 0));
    assert_false(dp_netbound_expired(0, UINT64_MAX, 10));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(wait_bounded),
        cmocka_unit_test(flags),
        cmocka_unit_test(expired),
        cmocka_unit_test(writeback_timeout_flag),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
