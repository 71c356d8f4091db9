/* storedrv: drives lib/store_redis's write-back and fence against a real
 * cluster, for tests/integration/test_store_redis.py (the lazy-pages daemon's
 * use of it comes with the page source's write operation).
 *
 *   storedrv URL CA PASSFILE lease WRITER [take]    -> {"epoch": E}
 *   storedrv URL CA PASSFILE put WRITER EPOCH PID ADDR NPAGES SEED
 *       writes NPAGES pages at ADDR (a pattern from SEED) under the fence and
 *       waits for >= 1 replica -> {"acked": true, "sha256": ...}; exit 3 when
 *       fenced, 1 on any other failure
 *   storedrv URL CA PASSFILE get WRITER PID ADDR NPAGES
 *       reads them back -> {"sha256": ...} (exit 1 if one is missing)
 *   storedrv URL CA PASSFILE rtt|artt WRITER [N]
 *       p50/p99 of N GETs of one page through the blocking client (rtt) or
 *       the asynchronous one driven by poll on its descriptor (artt)
 * URL is redis[s]://ADDR:PORT/ID (ID: 32 hex digits). */
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "redis_async.h"
#include "store_redis.h"

/* Hex SHA-256 of n bytes. */
static void sha256_hex(const uint8_t *p, size_t n, char out[65])
{
    uint8_t md[32];
    unsigned ml = 0;
    EVP_Digest(p, n, md, &ml, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* Page i's bytes: a function of seed and i only. */
static void fill(uint8_t *page, uint64_t seed, uint64_t i)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + i + 1;
    for (size_t k = 0; k < 4096; k += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(page + k, &x, 8);
    }
}

/* artt: one GET answered (1) or failed (-1). */
static void artt_done(struct dp_racmd *a, int status) { *(int *)a->opaque = status == 0 ? 1 : -1; }

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: see the comment at the top of tests/helpers/storedrv.c\n");
        return 2;
    }
    struct dp_store_cli c = {.url = argv[1], .ca = argv[2][0] ? argv[2] : NULL, .pass_file = argv[3]};
    struct dp_err err = {{0}};
    struct dp_store *st = dp_store_open_cli(&c, &err);
    if (!st) {
        fprintf(stderr, "storedrv: %s\n", err.msg);
        return 1;
    }
    const char *op = argv[4], *writer = argv[5];
    if (getenv("STOREDRV_TIMEOUT_MS")) /* how long a write may wait for its replica */
        st->timeout_ms = atoi(getenv("STOREDRV_TIMEOUT_MS"));
    int rc = 1;
    if (strcmp(op, "lease") == 0) {
        uint64_t epoch;
        if (dp_store_lease(st, writer, "storedrv", argc > 6 && strcmp(argv[6], "take") == 0, &epoch, &err) == 0) {
            printf("{\"epoch\": %" PRIu64 "}\n", epoch);
            rc = 0;
        }
    } else if ((strcmp(op, "put") == 0 && argc == 11) || (strcmp(op, "get") == 0 && argc == 9)) {
        int put = op[0] == 'p';
        int a = put ? 7 : 6;
        uint64_t epoch = put ? strtoull(argv[6], NULL, 10) : 0;
        int32_t pid = (int32_t)strtol(argv[a], NULL, 10);
        uint64_t addr = strtoull(argv[a + 1], NULL, 0);
        size_t n = strtoull(argv[a + 2], NULL, 10);
        uint8_t *buf = calloc(n ? n : 1, 4096);
        char hex[65];
        if (!buf || n == 0 || n > 4096) {
            fprintf(stderr, "storedrv: 1..4096 pages\n");
            return 2;
        }
        if (put) {
            struct dp_store_page *pg = calloc(n, sizeof(*pg));
            uint64_t seed = strtoull(argv[10], NULL, 10);
            for (size_t i = 0; i < n; i++) {
                fill(buf + i * 4096, seed, i);
                pg[i] = (struct dp_store_page){.pid = pid, .img = addr + i * 4096, .data = buf + i * 4096};
            }
            int fenced = 0;
            if (dp_store_put_pages(st, writer, epoch, pg, n, &fenced, &err) == 0) {
                sha256_hex(buf, n * 4096, hex);
                printf("{\"acked\": true, \"sha256\": \"%s\"}\n", hex);
                rc = 0;
            } else if (fenced) {
                rc = 3;
            }
            free(pg);
        } else {
            struct dp_rcmd *cmds = calloc(n, sizeof(*cmds));
            char (*keys)[DP_STORE_KEY_MAX] = calloc(n, sizeof(*keys));
            for (size_t i = 0; i < n; i++) {
                int kl = dp_store_key_page(keys[i], DP_STORE_KEY_MAX, st->id, writer, pid, addr + i * 4096);
                dp_rcmd_init(&cmds[i], 1);
                dp_rcmd_arg(&cmds[i], "GET", 3);
                dp_rcmd_arg(&cmds[i], keys[i], (size_t)(kl > 0 ? kl : 0));
            }
            if (dp_rcluster_exec(st->cl, cmds, n, 30000, &err) == 0) {
                rc = 0;
                for (size_t i = 0; i < n; i++) {
                    redisReply *r = cmds[i].reply;
                    if (r->type != REDIS_REPLY_STRING || r->len != 4096) {
                        dp_err_set(&err, "page %zu (%s) is missing or not 4096 bytes", i, keys[i]);
                        rc = 1;
                        break;
                    }
                    memcpy(buf + i * 4096, r->str, 4096);
                }
                if (rc == 0) {
                    sha256_hex(buf, n * 4096, hex);
                    printf("{\"sha256\": \"%s\"}\n", hex);
                }
            }
            for (size_t i = 0; i < n; i++)
                dp_rcmd_reset(&cmds[i]);
            free(cmds);
            free(keys);
        }
        free(buf);
    } else if (strcmp(op, "rtt") == 0 || strcmp(op, "artt") == 0) {
        /* p50 of one GET, N times: through the blocking client (rtt) or the
         * asynchronous one the daemon uses, driven by poll on its one
         * descriptor as the daemon's loop does (artt) */
        int n = argc > 6 ? atoi(argv[6]) : 1000;
        double *us = calloc((size_t)n, sizeof(double));
        char key[DP_STORE_KEY_MAX];
        int kl = dp_store_key_page(key, sizeof(key), st->id, writer, 7, 0x7f0000000000ull);
        struct dp_rasync *as = op[0] == 'a' ? dp_rasync_new(st->cl, &err) : NULL;
        for (int i = 0; i < n; i++) {
            struct dp_rcmd cmd;
            dp_rcmd_init(&cmd, 1);
            dp_rcmd_arg(&cmd, "GET", 3);
            dp_rcmd_arg(&cmd, key, (size_t)kl);
            uint64_t t0 = dp_now_ns();
            if (as) {
                int done = 0;
                struct dp_racmd a = {.c = &cmd, .force_node = -1, .deadline_ns = t0 + 5000000000ull,
                                     .done = artt_done, .opaque = &done};
                if (dp_rasync_submit(as, &a) < 0)
                    break;
                while (!done) {
                    struct pollfd p = {.fd = dp_rasync_fd(as), .events = POLLIN};
                    poll(&p, 1, 1000);
                    dp_rasync_process(as);
                }
                if (done < 0)
                    break;
            } else if (dp_rcluster_exec(st->cl, &cmd, 1, 5000, &err) < 0) {
                break;
            }
            us[i] = (double)(dp_now_ns() - t0) / 1e3;
            dp_rcmd_reset(&cmd);
        }
        dp_rasync_free(as);
        for (int i = 1; i < n; i++)
            for (int k = i; k > 0 && us[k - 1] > us[k]; k--) {
                double t = us[k];
                us[k] = us[k - 1];
                us[k - 1] = t;
            }
        printf("{\"p50_us\": %.1f, \"p99_us\": %.1f}\n", us[n / 2], us[n * 99 / 100]);
        free(us);
        rc = 0;
    } else {
        fprintf(stderr, "storedrv: unknown operation or wrong arguments\n");
        rc = 2;
    }
    if (rc == 1 || rc == 3)
        fprintf(stderr, "storedrv: %s\n", err.msg);
    dp_store_close(st);
    return rc;
}
