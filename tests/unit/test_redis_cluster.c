/* lib/redis_cluster's pure parts (slots, redirects, CLUSTER SLOTS, URLs),
 * lib/redis_conn's bounded reply reader, and lib/store_redis's key naming.
 * Slot values are the ones `redis-cli cluster keyslot KEY` printed on the lab
 * cluster (redis-server 7.0.15). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_cluster.h"
#include "redis_conn.h"
#include "store_redis.h"

/* ---- slots ---------------------------------------------------------------- */

static void test_keyslot_matches_redis(void **state)
{
    (void)state;
    static const struct { const char *key; unsigned slot; } v[] = {
        {"foo", 12182},
        {"123456789", 12739},
        {"{user1000}.following", 3443},
        {"a{}b", 13694},     /* empty tag: the whole key */
        {"{}{x}", 3257},     /* first '{' then first '}': empty, whole key */
        {"x{y}z{w}", 12222}, /* only the first tag counts */
        {"", 0},
        {"dp:{0123abcd:17}:p:42:7f0000001000", 2095},
        {"dp:{abc:1}:x", 2336},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        assert_int_equal(dp_redis_keyslot(v[i].key, strlen(v[i].key)), v[i].slot);
}

static void test_keyslot_tag_groups_keys(void **state)
{
    (void)state;
    const char *a = "dp:{id:5}:p:1:0", *b = "dp:{id:5}:f:writer";
    assert_int_equal(dp_redis_keyslot(a, strlen(a)), dp_redis_keyslot(b, strlen(b)));
    assert_int_equal(dp_redis_keyslot("{id:5}", 6), dp_redis_keyslot("id:5", 4));
}

/* ---- redirects ------------------------------------------------------------ */

static void test_redirect_moved_and_ask(void **state)
{
    (void)state;
    struct dp_redirect r;
    const char *m = "MOVED 3999 10.250.0.2:7004";
    assert_int_equal(dp_redis_parse_redirect(m, strlen(m), &r), DP_REDIRECT_MOVED);
    assert_int_equal(r.slot, 3999);
    assert_string_equal(r.host, "10.250.0.2");
    assert_int_equal(r.port, 7004);
    const char *k = "ASK 16383 127.0.0.1:1";
    assert_int_equal(dp_redis_parse_redirect(k, strlen(k), &r), DP_REDIRECT_ASK);
    assert_int_equal(r.slot, 16383);
    assert_int_equal(r.port, 1);
    const char *o = "ERR unknown command";
    assert_int_equal(dp_redis_parse_redirect(o, strlen(o), &r), DP_REDIRECT_NONE);
    const char *t = "TRYAGAIN Multiple keys request during rehashing of slot";
    assert_int_equal(dp_redis_parse_redirect(t, strlen(t), &r), DP_REDIRECT_NONE);
}

static void test_redirect_malformed_refused(void **state)
{
    (void)state;
    static const char *bad[] = {
        "MOVED", "MOVED ", "MOVED 16384 10.0.0.1:7000", "MOVED 99999999 10.0.0.1:7000", "MOVED 1 10.0.0.1",
        "MOVED 1 10.0.0.1:0", "MOVED 1 10.0.0.1:65536", "MOVED 1 host.example:7000", "MOVED 1 :7000",
        "MOVED x 10.0.0.1:7000", "MOVED 1 10.0.0.1:70a0", "ASK 1  10.0.0.1:7000", "MOVED 1 10.0.0.1:7000 extra",
        "MOVED 1 10.0.0.256:7000",
    };
    struct dp_redirect r;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int k = dp_redis_parse_redirect(bad[i], strlen(bad[i]), &r);
        if (k != -1)
            fail_msg("'%s' parsed as %d", bad[i], k);
    }
    /* a NUL inside the message is never part of an address */
    const char nul[] = "MOVED 1 10.0.0.1:70\0" "00";
    assert_int_equal(dp_redis_parse_redirect(nul, sizeof(nul) - 1, &r), -1);
}

/* ---- the reader and CLUSTER SLOTS ---------------------------------------- */

/* Feeds text to a bounded reader; the parsed reply or NULL (error). */
static redisReply *parse(const char *text, size_t len)
{
    redisReader *rd = dp_redis_reader_new();
    assert_non_null(rd);
    void *r = NULL;
    int ok = redisReaderFeed(rd, text, len) == REDIS_OK && redisReaderGetReply(rd, &r) == REDIS_OK;
    redisReaderFree(rd);
    if (!ok) {
        if (r)
            freeReplyObject(r);
        return NULL;
    }
    return r;
}

static const char SLOTS[] =
    "*2\r\n"
    "*4\r\n:0\r\n:5460\r\n*3\r\n$10\r\n10.250.0.1\r\n:7001\r\n$3\r\nabc\r\n*3\r\n$10\r\n10.250.0.2\r\n:7005\r\n$1\r\nx\r\n"
    "*3\r\n:5461\r\n:16383\r\n*2\r\n$0\r\n\r\n:7004\r\n";

static void test_slots_parsed(void **state)
{
    (void)state;
    redisReply *r = parse(SLOTS, sizeof(SLOTS) - 1);
    assert_non_null(r);
    struct dp_slot_range *v;
    size_t n;
    struct dp_err err;
    assert_int_equal(dp_redis_parse_slots(r, "10.250.0.9", &v, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_int_equal(v[0].start, 0);
    assert_int_equal(v[0].end, 5460);
    assert_string_equal(v[0].host, "10.250.0.1");
    assert_int_equal(v[0].port, 7001);
    assert_string_equal(v[1].host, "10.250.0.9"); /* empty address: the node asked */
    assert_int_equal(v[1].port, 7004);
    free(v);
    freeReplyObject(r);
}

static void test_slots_malformed_refused(void **state)
{
    (void)state;
    static const char *bad[] = {
        "+OK\r\n",
        "*0\r\n",
        "*1\r\n*3\r\n:10\r\n:5\r\n*2\r\n$9\r\n127.0.0.1\r\n:1\r\n",        /* end < start */
        "*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$9\r\n127.0.0.1\r\n:1\r\n",     /* end out of range */
        "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$9\r\n127.0.0.1\r\n:0\r\n",         /* port 0 */
        "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$9\r\nlocalhost\r\n:1\r\n",         /* not IPv4 */
        "*1\r\n*2\r\n:0\r\n:1\r\n",                                        /* no master */
        "*1\r\n*3\r\n:0\r\n:1\r\n*1\r\n$9\r\n127.0.0.1\r\n",              /* master without port */
        "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n:1\r\n:1\r\n",                     /* address not a string */
        "*1\r\n*3\r\n:-1\r\n:1\r\n*2\r\n$9\r\n127.0.0.1\r\n:1\r\n",        /* negative start */
        "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$10\r\n127.0.0.1\0\r\n:1\r\n",      /* NUL in address */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t len = strlen(bad[i]);
        if (i == 10)
            len = sizeof("*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$10\r\n127.0.0.1\0\r\n:1\r\n") - 1;
        redisReply *r = parse(bad[i], len);
        assert_non_null(r);
        struct dp_slot_range *v = NULL;
        size_t n = 0;
        struct dp_err err;
        if (dp_redis_parse_slots(r, "10.0.0.1", &v, &n, &err) != -1)
            fail_msg("case %zu accepted", i);
        freeReplyObject(r);
    }
}

static void test_reader_bounds(void **state)
{
    (void)state;
    char hdr[64];
    /* an array header beyond DP_REDIS_MAX_ARRAY is refused at once */
    int l = snprintf(hdr, sizeof(hdr), "*%d\r\n", DP_REDIS_MAX_ARRAY + 1);
    assert_null(parse(hdr, (size_t)l));
    l = snprintf(hdr, sizeof(hdr), "*2147483647\r\n");
    assert_null(parse(hdr, (size_t)l));
    /* a protocol error is an error, not a reply */
    assert_null(parse("?what\r\n", 7));
    /* within bounds: fine */
    redisReply *r = parse("*2\r\n:1\r\n$2\r\nab\r\n", 16);
    assert_non_null(r);
    assert_int_equal(r->elements, 2);
    assert_int_equal(r->element[1]->len, 2);
    freeReplyObject(r);
}

/* ---- URLs --------------------------------------------------------------------- */

static void test_url(void **state)
{
    (void)state;
    struct dp_redis_url u;
    struct dp_err err;
    assert_int_equal(dp_redis_parse_url("redis://10.0.0.1:7001,10.0.0.2:7004/00ff", &u, &err), 0);
    assert_int_equal(u.tls, 0);
    assert_int_equal(u.nseeds, 2);
    assert_string_equal(u.host[1], "10.0.0.2");
    assert_int_equal(u.port[1], 7004);
    assert_string_equal(u.id, "00ff");
    assert_int_equal(dp_redis_parse_url("rediss://127.0.0.1:1", &u, &err), 0);
    assert_int_equal(u.tls, 1);
    assert_string_equal(u.id, "");
    static const char *bad[] = {"http://1.2.3.4:5", "redis://", "redis://1.2.3.4", "redis://1.2.3.4:5,",
                                "redis://1.2.3.4:5/XYZ", "redis://h:5", "redis://1.2.3.4:5,,1.2.3.4:6",
                                "redis://1.2.3.4:99999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (dp_redis_parse_url(bad[i], &u, &err) != -1)
            fail_msg("'%s' accepted", bad[i]);
}

/* ---- store keys ----------------------------------------------------------------- */

#define ID "0123456789abcdef0123456789abcdef"

static void test_store_keys(void **state)
{
    (void)state;
    char k[DP_STORE_KEY_MAX], f[DP_STORE_KEY_MAX], p[DP_STORE_KEY_MAX];
    unsigned g = dp_store_group(42, 0x7f0000010000ull);
    assert_true(g < DP_STORE_GROUPS);
    assert_true(dp_store_key_extent(k, sizeof(k), ID, 42, 0x7f0000010000ull) > 0);
    char want[DP_STORE_KEY_MAX];
    snprintf(want, sizeof(want), "dp:{" ID ":%u}:p:42:7f0000010000", g);
    assert_string_equal(k, want);
    /* a written page and the fence of its group share the extent's slot */
    assert_true(dp_store_key_page(p, sizeof(p), ID, "w1", 42, 0x7f0000013000ull) > 0);
    assert_true(dp_store_key_fence(f, sizeof(f), ID, g, "w1") > 0);
    assert_int_equal(dp_redis_keyslot(k, strlen(k)), dp_redis_keyslot(p, strlen(p)));
    assert_int_equal(dp_redis_keyslot(k, strlen(k)), dp_redis_keyslot(f, strlen(f)));
    /* the identity is in every key */
    assert_non_null(strstr(p, ID));
    assert_non_null(strstr(f, ID));
    /* refusals */
    assert_int_equal(dp_store_key_extent(k, sizeof(k), "0123", 42, 0), -1);
    assert_int_equal(dp_store_key_extent(k, sizeof(k), ID, 42, 4096), -1);
    assert_int_equal(dp_store_key_extent(k, sizeof(k), ID, 0, 0), -1);
    assert_int_equal(dp_store_key_page(k, sizeof(k), ID, "bad writer", 1, 0), -1);
    assert_int_equal(dp_store_key_page(k, sizeof(k), ID, "w", 1, 100), -1);
    assert_int_equal(dp_store_key_fence(k, sizeof(k), ID, DP_STORE_GROUPS, "w"), -1);
    assert_int_equal(dp_store_key_extent(k, 20, ID, 42, 0), -1); /* truncation */
    assert_false(dp_store_writer_ok(""));
    assert_false(dp_store_writer_ok("a/b"));
    assert_true(dp_store_writer_ok("dest-1.a_B"));
}

static void test_store_groups_spread(void **state)
{
    (void)state;
    /* 1024 consecutive extents of one task touch most groups, none too often */
    unsigned count[DP_STORE_GROUPS] = {0}, used = 0, max = 0;
    for (uint64_t i = 0; i < 1024; i++)
        count[dp_store_group(7, 0x7f0000000000ull + i * DP_STORE_EXT_BYTES)]++;
    for (unsigned g = 0; g < DP_STORE_GROUPS; g++) {
        used += count[g] > 0;
        max = count[g] > max ? count[g] : max;
    }
    assert_true(used > 200);
    assert_true(max < 16);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keyslot_matches_redis), cmocka_unit_test(test_keyslot_tag_groups_keys),
        cmocka_unit_test(test_redirect_moved_and_ask), cmocka_unit_test(test_redirect_malformed_refused),
        cmocka_unit_test(test_slots_parsed),           cmocka_unit_test(test_slots_malformed_refused),
        cmocka_unit_test(test_reader_bounds),          cmocka_unit_test(test_url),
        cmocka_unit_test(test_store_keys),             cmocka_unit_test(test_store_groups_spread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
