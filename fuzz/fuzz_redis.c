/* libFuzzer target for what the store's client reads from the network
 * (lib/redis_conn.h, lib/redis_cluster.h): RESP replies through the bounded
 * reader, fed in two pieces (the first byte picks the split), then every
 * reply through the CLUSTER SLOTS parser and every error line through the
 * MOVED/ASK parser; the input as a store URL too. Invariants checked: a
 * parsed slot range lies in 0..16383 with start <= end and a port > 0; a
 * redirect's slot is < 16384 with a non-empty IPv4 host and a port > 0. */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "redis_cluster.h"
#include "redis_conn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Checks one reply (and, for arrays, its elements' error lines). */
static void check_reply(const redisReply *r)
{
    struct dp_err err;
    if (r->type == REDIS_REPLY_ERROR || r->type == REDIS_REPLY_STATUS) {
        struct dp_redirect rd;
        int k = dp_redis_parse_redirect(r->str, r->len, &rd);
        if (k > 0) {
            struct in_addr a;
            if (rd.slot >= DP_REDIS_SLOTS || rd.port == 0 || inet_pton(AF_INET, rd.host, &a) != 1)
                abort();
        }
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY)
        return;
    struct dp_slot_range *v = NULL;
    size_t n = 0;
    if (dp_redis_parse_slots(r, "10.0.0.1", &v, &n, &err) == 0) {
        for (size_t i = 0; i < n; i++)
            if (v[i].start > v[i].end || v[i].end >= DP_REDIS_SLOTS || v[i].port == 0 || !v[i].host[0])
                abort();
        free(v);
    }
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i])
            check_reply(r->element[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    char *url = malloc(size + 1);
    if (!url)
        return 0;
    memcpy(url, data, size);
    url[size] = '\0';
    struct dp_redis_url u;
    struct dp_err err;
    if (dp_redis_parse_url(url, &u, &err) == 0 && (u.nseeds == 0 || u.nseeds > DP_REDIS_MAX_SEEDS))
        abort();
    free(url);

    redisReader *rd = dp_redis_reader_new();
    if (!rd)
        return 0;
    size_t split = 1 + (size > 1 ? data[0] % (size - 1) : 0);
    const uint8_t *p = data + 1;
    size_t len = size - 1;
    if (split > len)
        split = len;
    int fed_second = 0;
    redisReaderFeed(rd, (const char *)p, split);
    for (int turns = 0; turns < 10000; turns++) {
        void *r = NULL;
        if (redisReaderGetReply(rd, &r) != REDIS_OK)
            break;
        if (!r) {
            if (fed_second)
                break;
            fed_second = 1;
            redisReaderFeed(rd, (const char *)p + split, len - split);
            continue;
        }
        check_reply(r);
        freeReplyObject(r);
    }
    redisReaderFree(rd);
    return 0;
}
