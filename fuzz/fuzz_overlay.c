/* libFuzzer target for the write-back log's replay (lib/overlay.c): the input
 * is written as DIR/distriproc-overlay.log and opened as the page server
 * does at start. Odd first byte: the record and commit checksums are
 * recomputed first (as tools writing a log would), so mutations reach the
 * group, sequence and torn-tail logic behind them instead of stopping at a
 * checksum. A log that opens must answer lookups and take a new append and
 * sync, and reopen to the same pages. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "overlay.h"
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REC_MAGIC    0x564f5044u
#define COMMIT_MAGIC 0x434f5044u

static char dir[64];
static char path[128];

/* The run's scratch directory goes when libFuzzer exits. */
static void cleanup(void)
{
    unlink(path);
    rmdir(dir);
}

/* BLAKE2b-128 over two pieces (the log's checksum, docs in overlay.h). */
static void sum2(const uint8_t *a, size_t an, const uint8_t *b, size_t bn, uint8_t out[16])
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, 16);
    crypto_generichash_update(&st, a, an);
    crypto_generichash_update(&st, b, bn);
    crypto_generichash_final(&st, out, 16);
}

/* Recomputes every record's checksum and every commit record's group hash
 * and checksum, walking the log as it is laid out (overlay.h). */
static void reseal(uint8_t *log, size_t size)
{
    crypto_generichash_state group;
    crypto_generichash_init(&group, NULL, 0, 16);
    for (size_t off = 0; off + 4 <= size;) {
        uint32_t magic = dp_get_u32(log + off);
        if (magic == REC_MAGIC && size - off >= DP_OVERLAY_REC_SIZE) {
            sum2(log + off, 32, log + off + DP_OVERLAY_REC_HDR, DP_PAGE_SIZE, log + off + 32);
            crypto_generichash_update(&group, log + off + 32, 16);
            off += DP_OVERLAY_REC_SIZE;
        } else if (magic == COMMIT_MAGIC && size - off >= DP_OVERLAY_COMMIT_SIZE) {
            crypto_generichash_final(&group, log + off + 48, 16);
            sum2(log + off, 32, log + off + 48, 16, log + off + 32);
            crypto_generichash_init(&group, NULL, 0, 16);
            off += DP_OVERLAY_COMMIT_SIZE;
        } else {
            off += DP_OVERLAY_COMMIT_SIZE;
        }
    }
}

static int write_log(const uint8_t *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        abort();
    if (n && fwrite(p, 1, n, f) != n)
        abort();
    return fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(dir, sizeof(dir), "%s/fuzz-overlay-XXXXXX", t && strlen(t) < 32 ? t : "/tmp");
        if (!mkdtemp(dir) || sodium_init() < 0)
            abort();
        snprintf(path, sizeof(path), "%s/%s", dir, DP_OVERLAY_NAME);
        dp_log_set_level(DP_LOG_ERROR);
        atexit(cleanup);
    }
    if (size < 1 || size > (8u << 20))
        return 0;
    uint8_t *log = malloc(size);
    if (!log)
        abort();
    memcpy(log, data + 1, size - 1);
    if (data[0] & 1)
        reseal(log, size - 1);
    write_log(log, size - 1);
    free(log);

    struct dp_overlay *o;
    struct dp_err err;
    if (dp_overlay_open(dir, &o, &err) == 0) {
        static uint8_t page[DP_PAGE_SIZE];
        struct dp_overlay_stats st, again;
        dp_overlay_get_stats(o, &st);
        uint64_t off;
        (void)dp_overlay_lookup(o, 1, 0x1000, &off);
        page[0]++;
        if (dp_overlay_append(o, 7, 0x7000, 1, page, &err) < 0 || dp_overlay_sync(o, &err) < 0)
            abort(); /* a log that opened takes appends */
        dp_overlay_close(o);
        if (dp_overlay_open(dir, &o, &err) < 0)
            abort(); /* what we just synced reopens */
        dp_overlay_get_stats(o, &again);
        if (!dp_overlay_lookup(o, 7, 0x7000, &off) || again.live_pages < st.live_pages)
            abort();
        dp_overlay_close(o);
    }
    unlink(path);
    char compact[160];
    snprintf(compact, sizeof(compact), "%s.compact", path);
    unlink(compact); /* a failed compaction's leftover, if any */
    return 0;
}
