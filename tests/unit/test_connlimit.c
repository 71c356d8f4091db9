#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "connlimit.h"

#define IP_A 0x0100007fu /* 127.0.0.1 in network order */
#define IP_B 0x0200007fu

static void setup(struct dp_connlimit *l, uint32_t conns, uint32_t preauth, uint32_t per_peer, uint64_t buffered)
{
    struct dp_connlimit_cfg cfg = {.max_conns = conns, .max_preauth = preauth, .max_per_peer = per_peer,
                                   .max_buffered = buffered, .idle_ns = 1000};
    dp_connlimit_init(l, &cfg);
}

/* Unset limits get the stated defaults; nonsense combinations are refused. */
static void defaults_and_checks(void **state)
{
    (void)state;
    struct dp_connlimit_cfg cfg = {0};
    struct dp_err err;
    dp_connlimit_cfg_defaults(&cfg);
    assert_int_equal(cfg.max_conns, DP_LIMIT_MAX_CONNS_DEFAULT);
    assert_int_equal(cfg.max_preauth, DP_LIMIT_MAX_PREAUTH_DEFAULT);
    assert_int_equal(cfg.max_per_peer, DP_LIMIT_MAX_PER_PEER_DEFAULT);
    assert_int_equal(cfg.max_buffered, DP_LIMIT_MAX_BUFFERED_DEFAULT);
    assert_int_equal(cfg.idle_ns, 0);
    assert_int_equal(dp_connlimit_cfg_check(&cfg, &err), 0);
    struct dp_connlimit_cfg small = {.max_conns = 10};
    dp_connlimit_cfg_defaults(&small);
    assert_true(small.max_preauth < small.max_conns);
    assert_int_equal(dp_connlimit_cfg_check(&small, &err), 0);
    cfg.max_preauth = cfg.max_conns;
    assert_int_equal(dp_connlimit_cfg_check(&cfg, &err), -1);
    assert_non_null(strstr(err.msg, "--max-preauth"));
    cfg.max_preauth = 8;
    cfg.max_buffered = 4096;
    assert_int_equal(dp_connlimit_cfg_check(&cfg, &err), -1);
    assert_non_null(strstr(err.msg, "--max-buffered"));
}

/* Keyless connections take at most max_preauth slots: the next one pushes
 * one of them out, never an authenticated peer, and the slots beyond stay
 * for authenticated peers. */
static void preauth_flood_keeps_slots_for_key_holders(void **state)
{
    (void)state;
    struct dp_connlimit l;
    setup(&l, 8, 3, 100, 1 << 20);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(dp_connlimit_admit(&l, IP_A, NULL), DP_ADMIT_OK);
        assert_int_equal(dp_connlimit_add(&l, IP_A), 0);
    }
    const char *why = NULL;
    assert_int_equal(dp_connlimit_admit(&l, IP_A, &why), DP_ADMIT_EVICT_PEER);
    assert_string_equal(why, "--max-preauth");
    /* a second peer meets the limit too, and pushes out one of the flooder's */
    assert_int_equal(dp_connlimit_admit(&l, IP_B, NULL), DP_ADMIT_EVICT_ANY);
    /* the server evicts, then adds, then the newcomer authenticates */
    dp_connlimit_remove(&l, IP_A, false);
    assert_int_equal(dp_connlimit_add(&l, IP_B), 0);
    dp_connlimit_authed(&l, IP_B);
    assert_int_equal(l.conns, 3);
    assert_int_equal(l.preauth, 2);
    /* authenticated peers fill the other slots */
    for (int i = 0; i < 5; i++) {
        assert_int_equal(dp_connlimit_admit(&l, IP_B, NULL), DP_ADMIT_OK);
        assert_int_equal(dp_connlimit_add(&l, IP_B), 0);
        dp_connlimit_authed(&l, IP_B);
    }
    assert_int_equal(l.conns, 8);
    /* all slots in use: a new one may only push out a keyless connection */
    assert_int_equal(dp_connlimit_admit(&l, IP_B, &why), DP_ADMIT_EVICT_ANY);
    assert_string_equal(why, "--max-conns");
    dp_connlimit_remove(&l, IP_A, false);
    dp_connlimit_remove(&l, IP_A, false);
    assert_int_equal(l.preauth, 0);
    assert_int_equal(dp_connlimit_add(&l, IP_A), 0);
    dp_connlimit_authed(&l, IP_A);
    assert_int_equal(dp_connlimit_add(&l, IP_A), 0);
    dp_connlimit_authed(&l, IP_A);
    /* every slot authenticated: refused */
    assert_int_equal(dp_connlimit_admit(&l, IP_B, NULL), DP_ADMIT_REFUSE);
    dp_connlimit_free(&l);
}

/* One address holds at most max_per_peer connections; beyond it, its own
 * keyless ones go first, and when all are authenticated it is refused while
 * another peer is still let in. */
static void per_peer_limit(void **state)
{
    (void)state;
    struct dp_connlimit l;
    setup(&l, 100, 50, 3, 1 << 20);
    for (int i = 0; i < 3; i++)
        assert_int_equal(dp_connlimit_add(&l, IP_A), 0);
    const char *why = NULL;
    assert_int_equal(dp_connlimit_admit(&l, IP_A, &why), DP_ADMIT_EVICT_PEER);
    assert_string_equal(why, "--max-per-peer");
    for (int i = 0; i < 3; i++)
        dp_connlimit_authed(&l, IP_A);
    assert_int_equal(dp_connlimit_admit(&l, IP_A, NULL), DP_ADMIT_REFUSE);
    assert_int_equal(dp_connlimit_admit(&l, IP_B, NULL), DP_ADMIT_OK);
    /* closing frees the slot, and the peer entry once it holds none */
    dp_connlimit_remove(&l, IP_A, true);
    assert_int_equal(dp_connlimit_admit(&l, IP_A, NULL), DP_ADMIT_OK);
    dp_connlimit_remove(&l, IP_A, true);
    dp_connlimit_remove(&l, IP_A, true);
    assert_int_equal(l.nr_peers, 0);
    assert_int_equal(l.conns, 0);
    /* removing what is not there changes nothing */
    dp_connlimit_remove(&l, IP_A, true);
    dp_connlimit_authed(&l, IP_B);
    assert_int_equal(l.conns, 0);
    assert_int_equal(l.preauth, 0);
    dp_connlimit_free(&l);
}

/* The victim: the least advanced keyless connection, then the oldest; only
 * of the given peer when asked. */
static void pick_victim(void **state)
{
    (void)state;
    struct dp_connlimit_cand c[] = {
        {.ip = IP_B, .stage = 1, .since_ns = 1},  /* a peer half way through the handshake */
        {.ip = IP_A, .stage = 0, .since_ns = 50}, /* idle sockets */
        {.ip = IP_A, .stage = 0, .since_ns = 20},
        {.ip = IP_B, .stage = 0, .since_ns = 30},
    };
    assert_int_equal(dp_connlimit_pick(c, 4, false, 0), 2);
    assert_int_equal(dp_connlimit_pick(c, 4, true, IP_B), 3);
    c[3].stage = 1;
    assert_int_equal(dp_connlimit_pick(c, 4, true, IP_B), 0);
    assert_int_equal(dp_connlimit_pick(c, 4, true, 0x0300007fu), -1);
    assert_int_equal(dp_connlimit_pick(c, 0, false, 0), -1);
}

/* Input buffers over all connections stay under the cap; shrinking always
 * works and gives the room back. */
static void buffered_input_cap(void **state)
{
    (void)state;
    struct dp_connlimit l;
    const size_t F = DP_LIMIT_INPUT_FREE;
    setup(&l, 10, 5, 5, 4u << 20);
    /* every connection's first bytes are free: a full cap never blocks a HELLO */
    assert_int_equal(dp_connlimit_buffer(&l, 0, F), 0);
    assert_int_equal(l.buffered, 0);
    assert_int_equal(dp_connlimit_buffer(&l, 0, F + (2u << 20)), 0);
    assert_int_equal(dp_connlimit_buffer(&l, F, F + (2u << 20)), 0);
    assert_int_equal(l.buffered, 4u << 20);
    assert_int_equal(dp_connlimit_buffer(&l, 0, F), 0);
    assert_int_equal(dp_connlimit_buffer(&l, F, F + 1), -1);
    assert_int_equal(l.buffered, 4u << 20);
    assert_int_equal(l.buffer_refusals, 1);
    assert_int_equal(dp_connlimit_buffer(&l, F + (2u << 20), F), 0);
    assert_int_equal(dp_connlimit_buffer(&l, F, F + (2u << 20)), 0);
    assert_int_equal(l.buffered, 4u << 20);
    /* never below zero */
    assert_int_equal(dp_connlimit_buffer(&l, 64u << 20, 0), 0);
    assert_int_equal(l.buffered, 0);
    dp_connlimit_free(&l);
}

/* Idle only after the configured time; 0 never. */
static void idle(void **state)
{
    (void)state;
    struct dp_connlimit l;
    setup(&l, 10, 5, 5, 1 << 20);
    assert_false(dp_connlimit_idle(&l, 100, 1100));
    assert_true(dp_connlimit_idle(&l, 100, 1101));
    assert_false(dp_connlimit_idle(&l, 2000, 1000)); /* active after now: not idle */
    l.cfg.idle_ns = 0;
    assert_false(dp_connlimit_idle(&l, 0, UINT64_MAX));
    dp_connlimit_free(&l);
}

/* --handshake-timeout: whole milliseconds in a stated range, default 10 s;
 * a connection is closed only once strictly more than the bound has passed,
 * and a clock read before it connected counts as no time. */
static void handshake_timeout(void **state)
{
    (void)state;
    struct dp_connlimit_cfg cfg = {0};
    struct dp_err err;
    dp_connlimit_cfg_defaults(&cfg);
    assert_int_equal(cfg.handshake_ns, 10000ull * 1000000);
    assert_int_equal(dp_connlimit_parse_flag(&cfg, "handshake-timeout", "250", &err), 0);
    assert_int_equal(cfg.handshake_ns, 250ull * 1000000);
    static const char *bad[] = {"99", "600001", "-1", "1e3", "", "10s"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(dp_connlimit_parse_flag(&cfg, "handshake-timeout", bad[i], &err), -1);
        assert_non_null(strstr(err.msg, "--handshake-timeout"));
    }
    assert_int_equal(cfg.handshake_ns, 250ull * 1000000); /* a refused value changes nothing */
    struct dp_connlimit l;
    dp_connlimit_init(&l, &cfg);
    assert_false(dp_connlimit_handshake_expired(&l, 1000, 1000 + 250000000));
    assert_true(dp_connlimit_handshake_expired(&l, 1000, 1000 + 250000001));
    assert_false(dp_connlimit_handshake_expired(&l, 5000, 1000));
    dp_connlimit_free(&l);
}

/* Queued replies share --max-buffered with partial requests: past the cap a
 * connection with output queued gets no new reply (counted), one with
 * nothing queued always does, and input cannot grow into the output's share. */
static void output_shares_the_buffer_cap(void **state)
{
    (void)state;
    struct dp_connlimit l;
    setup(&l, 8, 3, 100, 1 << 20);
    assert_true(dp_connlimit_may_reply(&l, 4096));
    dp_connlimit_output(&l, 0, 900 << 10);
    assert_true(dp_connlimit_may_reply(&l, 900 << 10));
    dp_connlimit_output(&l, 0, 200 << 10); /* a second connection: 1.1 MiB in all */
    assert_false(dp_connlimit_may_reply(&l, 200 << 10));
    assert_true(dp_connlimit_may_reply(&l, 0));
    assert_int_equal(l.output_pauses, 1);
    /* input growth beyond the free part counts the output too */
    assert_int_equal(dp_connlimit_buffer(&l, 0, DP_LIMIT_INPUT_FREE + 4096), -1);
    dp_connlimit_output(&l, 900 << 10, 0); /* the first reader caught up */
    assert_true(dp_connlimit_may_reply(&l, 200 << 10));
    assert_int_equal(dp_connlimit_buffer(&l, 0, DP_LIMIT_INPUT_FREE + 4096), 0);
    dp_connlimit_output(&l, 300 << 10, 0); /* more than counted: clamps at 0 */
    assert_int_equal(l.out_buffered, 0);
    dp_connlimit_free(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_and_checks),
        cmocka_unit_test(preauth_flood_keeps_slots_for_key_holders),
        cmocka_unit_test(per_peer_limit),
        cmocka_unit_test(pick_victim),
        cmocka_unit_test(buffered_input_cap),
        cmocka_unit_test(idle),
        cmocka_unit_test(handshake_timeout),
        cmocka_unit_test(output_shares_the_buffer_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
