/* lease: the write-lease state machine and the lease file codec (see
 * lease.h). Pure. */
#include "lease.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "proto.h"

#define LEASE_MAGIC  0x454c5044u /* "DPLE" */
#define LEASE_FORMAT 1u

/* ---- holder names ---------------------------------------------------- */

/* Printable ASCII only: the name goes into log lines and error messages. */
bool dp_lease_holder_ok(const char *s, size_t len)
{
    if (len == 0 || len > DP_LEASE_HOLDER_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

/* "holder H (epoch N, granted 2026-12-03 11:40:00 UTC)" for messages. */
static void describe(const struct dp_lease *l, char *out, size_t n)
{
    char when[40] = "an unknown time";
    time_t t = (time_t)(l->granted_us / 1000000u);
    struct tm tm;
    if (l->granted_us && gmtime_r(&t, &tm))
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
    snprintf(out, n, "'%s' (epoch %" PRIu64 ", granted %s)", l->holder, l->epoch, when);
}

/* ---- the state machine ----------------------------------------------- */

/* A new epoch for ask's holder; the log generation changes with it
 * (log_epoch stays until lease_store has moved the old log aside). */
static void grant(const struct dp_lease *cur, const struct dp_lease_ask *ask, uint64_t now_us, struct dp_lease *next)
{
    *next = *cur;
    next->epoch = cur->epoch + 1;
    next->held = true;
    next->granted_us = now_us;
    snprintf(next->holder, sizeof(next->holder), "%s", ask->holder);
}

/* See lease.h. */
enum dp_lease_verdict dp_lease_decide(const struct dp_lease *cur, const struct dp_lease_ask *ask, uint64_t now_us,
                                      struct dp_lease *next, char *why, size_t why_len)
{
    char holder[160];
    describe(cur, holder, sizeof(holder));
    *next = *cur;
    if (ask->epoch == 0 && cur->epoch >= DP_LEASE_EPOCH_MAX) {
        /* a next epoch would leave the range the file accepts (and wrap
         * at 2^64): refused, state unchanged */
        snprintf(why, why_len, "the write lease of this checkpoint cannot be granted: its epoch %" PRIu64 " is at "
                 "the maximum (the lease file was damaged or replaced); move DIR/%s aside and restore again "
                 "from the source", cur->epoch, DP_LEASE_FILE_NAME);
        return DP_LEASE_HELD;
    }
    if (ask->epoch == 0) {
        if (!cur->held) {
            grant(cur, ask, now_us, next);
            snprintf(why, why_len, "write lease granted to '%s' at epoch %" PRIu64 " (a new write-back generation, "
                     "starting from the checkpoint's memory)", ask->holder, next->epoch);
            return DP_LEASE_GRANTED;
        }
        if (!(ask->flags & DP_LEASE_TAKE_OVER)) {
            snprintf(why, why_len, "the write lease of this checkpoint is held by %s: another restore is running "
                     "(or was cut off or crashed). If it is gone for good, take over with 'distriproc restore "
                     "--take-over': its writes are then refused and its daemon kills its process tree", holder);
            return DP_LEASE_HELD;
        }
        grant(cur, ask, now_us, next);
        snprintf(why, why_len, "write lease taken over by '%s' at epoch %" PRIu64 " from %s: the old holder is "
                 "fenced (its requests are refused), the new writer starts from the checkpoint's memory",
                 ask->holder, next->epoch, holder);
        return DP_LEASE_GRANTED;
    }
    if (ask->epoch == cur->epoch && cur->held) {
        if (ask->flags & DP_LEASE_RELEASE) {
            next->held = false;
            snprintf(why, why_len, "write lease epoch %" PRIu64 " released by '%s'", cur->epoch, ask->holder);
            return DP_LEASE_RELEASED;
        }
        snprintf(why, why_len, "write lease epoch %" PRIu64 " resumed by '%s'", cur->epoch, ask->holder);
        return DP_LEASE_RESUMED;
    }
    if (ask->epoch > cur->epoch)
        snprintf(why, why_len, "write lease epoch %" PRIu64 " was never granted by this server (its last is %" PRIu64
                 "): its lease file was replaced or lost, so this writer cannot be told apart from a stale one; "
                 "restore again from the source", ask->epoch, cur->epoch);
    else if (cur->held)
        snprintf(why, why_len, "write lease epoch %" PRIu64 " is stale: it was taken over, now held by %s; this "
                 "writer is fenced and must stop", ask->epoch, holder);
    else
        snprintf(why, why_len, "write lease epoch %" PRIu64 " is stale: it was released (last epoch %" PRIu64 "); "
                 "this writer is fenced and must stop", ask->epoch, cur->epoch);
    return DP_LEASE_STALE;
}

/* See lease.h. */
int dp_lease_may_write(const struct dp_lease *cur, uint64_t conn_epoch, char *why, size_t why_len)
{
    char holder[160];
    if (conn_epoch == 0) {
        if (!cur->held)
            return DP_E_OK;
        describe(cur, holder, sizeof(holder));
        snprintf(why, why_len, "write-back refused: the write lease is held by %s and only its holder writes (take "
                 "the lease first, or stop that restore)", holder);
        return DP_E_LEASE_HELD;
    }
    return dp_lease_may_read(cur, conn_epoch, why, why_len);
}

/* See lease.h. */
int dp_lease_may_read(const struct dp_lease *cur, uint64_t conn_epoch, char *why, size_t why_len)
{
    if (conn_epoch == 0 || (cur->held && conn_epoch == cur->epoch))
        return DP_E_OK;
    char holder[160];
    describe(cur, holder, sizeof(holder));
    snprintf(why, why_len, "fenced: this connection's write lease (epoch %" PRIu64 ") is no longer current (%s %s); "
             "its restore must stop", conn_epoch, cur->held ? "now held by" : "released; last was", holder);
    return DP_E_FENCED;
}

/* ---- lease file ------------------------------------------------------ */

/* BLAKE2b-128 of the file's first 112 bytes: a torn or flipped file is
 * refused, never read as some other lease. */
static void file_checksum(const uint8_t *p, uint8_t out[16])
{
    crypto_generichash(out, 16, p, 112, NULL, 0);
}

/* See lease.h (the layout is in its leading comment). */
void dp_lease_encode(const struct dp_lease *l, uint8_t out[DP_LEASE_FILE_SIZE])
{
    size_t n = strnlen(l->holder, DP_LEASE_HOLDER_MAX);
    memset(out, 0, DP_LEASE_FILE_SIZE);
    dp_put_u32(out, LEASE_MAGIC);
    dp_put_u32(out + 4, LEASE_FORMAT);
    dp_put_u64(out + 8, l->epoch);
    dp_put_u64(out + 16, l->log_epoch);
    dp_put_u32(out + 24, l->held ? 1 : 0);
    dp_put_u16(out + 28, (uint16_t)n);
    dp_put_u64(out + 32, l->granted_us);
    memcpy(out + 40, l->holder, n);
    file_checksum(out, out + 112);
}

/* See lease.h. Every field is checked: the file decides who may write. */
int dp_lease_decode(const uint8_t *in, size_t len, struct dp_lease *l, struct dp_err *err)
{
    static const uint8_t zeros[DP_LEASE_HOLDER_MAX];
    uint8_t sum[16];
    if (len != DP_LEASE_FILE_SIZE) {
        dp_err_set(err, "is %zu bytes, expected %u", len, DP_LEASE_FILE_SIZE);
        return -1;
    }
    if (dp_get_u32(in) != LEASE_MAGIC || dp_get_u32(in + 4) != LEASE_FORMAT) {
        dp_err_set(err, "has magic 0x%08x format %u, expected 0x%08x format %u", dp_get_u32(in), dp_get_u32(in + 4),
                   LEASE_MAGIC, LEASE_FORMAT);
        return -1;
    }
    file_checksum(in, sum);
    if (sodium_memcmp(sum, in + 112, 16) != 0) {
        dp_err_set(err, "fails its checksum (damaged)");
        return -1;
    }
    uint32_t held = dp_get_u32(in + 24);
    uint16_t n = dp_get_u16(in + 28);
    l->epoch = dp_get_u64(in + 8);
    l->log_epoch = dp_get_u64(in + 16);
    l->granted_us = dp_get_u64(in + 32);
    if (held > 1 || dp_get_u16(in + 30) || l->log_epoch > l->epoch || (held && l->epoch == 0) ||
        (n && !dp_lease_holder_ok((const char *)in + 40, n)) || (held && !n) || n > DP_LEASE_HOLDER_MAX || l->epoch > DP_LEASE_EPOCH_MAX ||
        memcmp(in + 40 + n, zeros, DP_LEASE_HOLDER_MAX - n) != 0 || memcmp(in + 104, zeros, 8) != 0) {
        dp_err_set(err, "has inconsistent fields (held %u, epoch %llu, log epoch %llu, holder length %u)", held,
                   (unsigned long long)l->epoch, (unsigned long long)l->log_epoch, n);
        return -1;
    }
    l->held = held == 1;
    memcpy(l->holder, in + 40, n);
    l->holder[n] = '\0';
    return 0;
}
