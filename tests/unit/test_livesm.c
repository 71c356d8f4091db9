/* livesm: every transition of the commit/rollback machine, recovery after a
 * serve restart, verdict decoding and the persisted record. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "livesm.h"

#define S(x) DP_LIVE_##x
#define EV(x) DP_LIVE_EV_##x
#define A(x) DP_LIVE_ACT_##x

/* The whole table, written out: each (state, event) pair is either one of
 * these edges or refused. */
static const struct { int st, ev, next, act; } edges[] = {
    {S(FREEZING), EV(DUMP_OK), S(SERVING), A(NONE)},
    {S(FREEZING), EV(DUMP_FAILED), S(ROLLED_BACK), A(THAW)},
    {S(FREEZING), EV(STOPPED), S(ROLLED_BACK), A(THAW)},
    {S(SERVING), EV(RESTORE_OK), S(COMMITTED), A(NONE)},
    {S(SERVING), EV(RESTORE_FAILED), S(ROLLED_BACK), A(THAW)},
    {S(SERVING), EV(CONNECT_TIMEOUT), S(ROLLED_BACK), A(THAW)},
    {S(SERVING), EV(STOPPED), S(ROLLED_BACK), A(THAW)},
    {S(SERVING), EV(ABORTED), S(ROLLED_BACK), A(THAW)},
    {S(COMMITTED), EV(RESTORE_OK), S(COMMITTED), A(NONE)},
    {S(COMMITTED), EV(RELEASED), S(RELEASED), A(KILL_THAW)},
    {S(COMMITTED), EV(STOPPED), S(RELEASED), A(KILL_THAW)},
    {S(COMMITTED), EV(ABORTED), S(ROLLED_BACK), A(THAW)},
};

static void every_transition(void **state)
{
    (void)state;
    for (int st = 0; st < DP_LIVE_NSTATES; st++)
        for (int ev = 0; ev < DP_LIVE_NEVENTS; ev++) {
            enum dp_live_state next = (enum dp_live_state)99;
            enum dp_live_action act = (enum dp_live_action)99;
            int rc = dp_live_step((enum dp_live_state)st, (enum dp_live_event)ev, &next, &act);
            int want = -1;
            for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++)
                if (edges[i].st == st && edges[i].ev == ev)
                    want = (int)i;
            if (want < 0) {
                assert_int_equal(rc, -1);
                assert_int_equal(next, 99); /* refused: nothing written */
            } else {
                assert_int_equal(rc, 0);
                assert_int_equal(next, edges[want].next);
                assert_int_equal(act, edges[want].act);
            }
        }
    enum dp_live_state n;
    enum dp_live_action a;
    assert_int_equal(dp_live_step(DP_LIVE_NSTATES, EV(DUMP_OK), &n, &a), -1);
    assert_int_equal(dp_live_step(S(SERVING), DP_LIVE_NEVENTS, &n, &a), -1);
}

/* The safety rules, checked over the table: the source is killed only from
 * COMMITTED (after a destination reported its restore), and once committed
 * no event resumes it but the destination's own word that its copy is gone
 * (ABORTED); released is final. */
static void never_both_never_neither(void **state)
{
    (void)state;
    for (int st = 0; st < DP_LIVE_NSTATES; st++)
        for (int ev = 0; ev < DP_LIVE_NEVENTS; ev++) {
            enum dp_live_state n;
            enum dp_live_action a;
            if (dp_live_step((enum dp_live_state)st, (enum dp_live_event)ev, &n, &a) < 0)
                continue;
            if (a == A(KILL_THAW))
                assert_int_equal(st, S(COMMITTED));
            if ((st == S(COMMITTED) && ev != EV(ABORTED)) || st == S(RELEASED))
                assert_int_not_equal(a, A(THAW));
            if (st == S(ROLLED_BACK))
                fail(); /* final */
        }
}

static void recovery(void **state)
{
    (void)state;
    enum dp_live_state n;
    enum dp_live_action a;
    dp_live_recover(S(FREEZING), &n, &a);
    assert_int_equal(n, S(ROLLED_BACK));
    assert_int_equal(a, A(THAW));
    dp_live_recover(S(SERVING), &n, &a);
    assert_int_equal(n, S(SERVING));
    assert_int_equal(a, A(NONE));
    dp_live_recover(S(COMMITTED), &n, &a);
    assert_int_equal(n, S(COMMITTED));
    assert_int_equal(a, A(NONE));
    dp_live_recover(S(ROLLED_BACK), &n, &a);
    assert_int_equal(n, S(ROLLED_BACK));
    assert_int_equal(a, A(THAW));
    dp_live_recover(S(RELEASED), &n, &a);
    assert_int_equal(n, S(RELEASED));
    assert_int_equal(a, A(KILL_THAW));
    assert_true(dp_live_serving(S(SERVING)) && dp_live_serving(S(COMMITTED)));
    assert_false(dp_live_serving(S(FREEZING)) || dp_live_serving(S(ROLLED_BACK)) || dp_live_serving(S(RELEASED)));
}

static void verdicts(void **state)
{
    (void)state;
    struct dp_err err;
    uint32_t v;
    uint8_t ok[4] = {1, 0, 0, 0}, rel[4] = {3, 0, 0, 0}, q[4] = {4, 0, 0, 0};
    assert_int_equal(dp_live_verdict_decode(ok, 4, &v, &err), 0);
    assert_int_equal(v, DP_LIVE_VERDICT_RESTORED);
    assert_int_equal(dp_live_verdict_decode(rel, 4, &v, &err), 0);
    assert_int_equal(v, DP_LIVE_VERDICT_RELEASE);
    assert_int_equal(dp_live_verdict_decode(q, 4, &v, &err), 0);
    uint8_t zero[4] = {0}, five[4] = {5, 0, 0, 0}, six[4] = {6, 0, 0, 0}, high[4] = {1, 0, 0, 1};
    assert_int_equal(dp_live_verdict_decode(five, 4, &v, &err), 0);
    assert_int_equal(v, DP_LIVE_VERDICT_ABORTED);
    assert_int_equal(dp_live_verdict_decode(zero, 4, &v, &err), -1);
    assert_int_equal(dp_live_verdict_decode(six, 4, &v, &err), -1);
    assert_int_equal(dp_live_verdict_decode(high, 4, &v, &err), -1);
    assert_int_equal(dp_live_verdict_decode(ok, 3, &v, &err), -1);
    assert_int_equal(dp_live_verdict_decode(ok, 5, &v, &err), -1);
    enum dp_live_event ev;
    assert_int_equal(dp_live_verdict_event(DP_LIVE_VERDICT_RESTORED, &ev), 0);
    assert_int_equal(ev, EV(RESTORE_OK));
    assert_int_equal(dp_live_verdict_event(DP_LIVE_VERDICT_FAILED, &ev), 0);
    assert_int_equal(ev, EV(RESTORE_FAILED));
    assert_int_equal(dp_live_verdict_event(DP_LIVE_VERDICT_RELEASE, &ev), 0);
    assert_int_equal(ev, EV(RELEASED));
    assert_int_equal(dp_live_verdict_event(DP_LIVE_VERDICT_ABORTED, &ev), 0);
    assert_int_equal(ev, EV(ABORTED));
    assert_int_equal(dp_live_verdict_event(DP_LIVE_VERDICT_QUERY, &ev), -1);
}

static void record_round_trip(void **state)
{
    (void)state;
    struct dp_live_record r = {.state = S(COMMITTED), .root_pid = 4242, .root_start = 987654321ULL,
                               .deadline_boot = 1700000000.25, .connected = 1};
    strcpy(r.cgroup, "/sys/fs/cgroup/freezer/distriproc-live/lv-4242");
    char buf[1024];
    int n = dp_live_record_format(&r, buf, sizeof(buf));
    assert_true(n > 0);
    struct dp_live_record back;
    struct dp_err err;
    assert_int_equal(dp_live_record_parse(buf, (size_t)n, &back, &err), 0);
    assert_int_equal(back.state, r.state);
    assert_int_equal(back.root_pid, 4242);
    assert_true(back.root_start == 987654321ULL);
    assert_string_equal(back.cgroup, r.cgroup);
    assert_true(back.deadline_boot == 1700000000.25);
    assert_int_equal(back.connected, 1);
    assert_int_equal(dp_live_record_format(&r, buf, 20), -1);

    const char *bad[] = {
        "",
        "state frozen\nroot 1 2\ncgroup /x\ndeadline 0\nconnected 0\n",
        "state serving\nroot 0 2\ncgroup /x\ndeadline 0\nconnected 0\n",
        "state serving\nroot 1\ncgroup /x\ndeadline 0\nconnected 0\n",
        "state serving\nroot 1 2x\ncgroup /x\ndeadline 0\nconnected 0\n",
        "state serving\nroot 1 2\ncgroup x\ndeadline 0\nconnected 0\n",
        "state serving\nroot 1 2\ncgroup /a/../b\ndeadline 0\nconnected 0\n",
        "state serving\nroot 1 2\ncgroup /x\ndeadline -1\nconnected 0\n",
        "state serving\nroot 1 2\ncgroup /x\ndeadline 0\nconnected 2\n",
        "state serving\nroot 1 2\ncgroup /x\ndeadline 0\n",
        "state serving\nroot 99999999999 2\ncgroup /x\ndeadline 0\nconnected 0\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(dp_live_record_parse(bad[i], strlen(bad[i]), &back, &err), -1);
    const char *good = "state serving\nroot 1 2\ncgroup /x\ndeadline 0\nconnected 0";
    assert_int_equal(dp_live_record_parse(good, strlen(good), &back, &err), 0);
    assert_int_equal(back.state, S(SERVING));
    assert_string_equal(back.runc_id, "");
    assert_string_equal(back.runc_root, "");
}

/* A runc container's record: its ID and runc root survive a round trip;
 * a bad ID or root is refused. */
static void record_runc(void **state)
{
    (void)state;
    struct dp_live_record r = {.state = S(SERVING), .root_pid = 77, .root_start = 5};
    strcpy(r.cgroup, "/sys/fs/cgroup/freezer/ct1");
    strcpy(r.runc_id, "ct1");
    strcpy(r.runc_root, "/tmp/runc-root");
    char buf[1024];
    int n = dp_live_record_format(&r, buf, sizeof(buf));
    assert_true(n > 0);
    struct dp_live_record back;
    struct dp_err err;
    assert_int_equal(dp_live_record_parse(buf, (size_t)n, &back, &err), 0);
    assert_string_equal(back.runc_id, "ct1");
    assert_string_equal(back.runc_root, "/tmp/runc-root");
    assert_string_equal(back.cgroup, r.cgroup);
    r.runc_root[0] = '\0'; /* runc's own root: no line */
    n = dp_live_record_format(&r, buf, sizeof(buf));
    assert_null(strstr(buf, "runc-root"));
    assert_int_equal(dp_live_record_parse(buf, (size_t)n, &back, &err), 0);
    assert_string_equal(back.runc_id, "ct1");
    assert_string_equal(back.runc_root, "");
    const char *base = "state serving\nroot 1 2\ncgroup /x\ndeadline 0\nconnected 0\n";
    const char *bad[] = {"runc ../etc\n", "runc a b\n", "runc-root /r\n", "runc ct1\nrunc-root rel\n",
                         "runc ct1\nrunc-root /a/../b\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char text[256];
        snprintf(text, sizeof(text), "%s%s", base, bad[i]);
        assert_int_equal(dp_live_record_parse(text, strlen(text), &back, &err), -1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_transition),
        cmocka_unit_test(never_both_never_neither),
        cmocka_unit_test(recovery),
        cmocka_unit_test(verdicts),
        cmocka_unit_test(record_round_trip),
        cmocka_unit_test(record_runc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
