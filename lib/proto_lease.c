/* proto_lease: LEASE request and reply codec (see proto_lease.h). */
#include "proto_lease.h"

#include <string.h>

/* ---- helpers --------------------------------------------------------- */

/* A holder field: len printable bytes, then zeros up to 64. */
static int dec_holder(const uint8_t *p, uint16_t len, char *out, bool may_be_empty, const char *what,
                      struct dp_err *err)
{
    if ((len == 0 && !may_be_empty) || len > DP_LEASE_HOLDER_MAX || (len && !dp_lease_holder_ok((const char *)p, len))) {
        dp_err_set(err, "%s: holder name of %u bytes; 1..%u printable ASCII bytes allowed", what, len,
                   DP_LEASE_HOLDER_MAX);
        return DP_E_MALFORMED;
    }
    for (size_t i = len; i < DP_LEASE_HOLDER_MAX; i++)
        if (p[i]) {
            dp_err_set(err, "%s: bytes after the holder name are not zero", what);
            return DP_E_MALFORMED;
        }
    memcpy(out, p, len);
    out[len] = '\0';
    return DP_E_OK;
}

/* ---- request --------------------------------------------------------- */

/* Encodes a LEASE request (holder truncated to 64 bytes). */
int dp_enc_lease_req(struct dp_buf *b, uint64_t id, const struct dp_lease_ask *a)
{
    uint8_t p[DP_LEASE_REQ_LEN] = {0};
    size_t n = strnlen(a->holder, DP_LEASE_HOLDER_MAX);
    dp_put_u64(p, a->epoch);
    dp_put_u32(p + 8, a->flags);
    dp_put_u16(p + 12, (uint16_t)n);
    memcpy(p + 16, a->holder, n);
    return dp_msg_append(b, DP_MSG_LEASE, 0, id, p, sizeof(p));
}

/* Decodes and checks a LEASE request: the flag combinations that make sense
 * (take-over only for a new epoch, release only of one's own). */
int dp_dec_lease_req(const uint8_t *p, size_t len, struct dp_lease_ask *a, struct dp_err *err)
{
    if (len != DP_LEASE_REQ_LEN) {
        dp_err_set(err, "LEASE request is %zu bytes, expected %u", len, DP_LEASE_REQ_LEN);
        return DP_E_MALFORMED;
    }
    a->epoch = dp_get_u64(p);
    a->flags = dp_get_u32(p + 8);
    if (a->flags & ~DP_LEASE_FLAGS_KNOWN || dp_get_u16(p + 14) != 0) {
        dp_err_set(err, "LEASE request has unknown flags 0x%x or a reserved field set", a->flags);
        return DP_E_MALFORMED;
    }
    if ((a->flags & DP_LEASE_TAKE_OVER) && a->epoch != 0) {
        dp_err_set(err, "LEASE: take-over asks for a new epoch (epoch 0), got epoch %llu",
                   (unsigned long long)a->epoch);
        return DP_E_MALFORMED;
    }
    if ((a->flags & DP_LEASE_RELEASE) && a->epoch == 0) {
        dp_err_set(err, "LEASE: release names the epoch to give back (got 0)");
        return DP_E_MALFORMED;
    }
    return dec_holder(p + 16, dp_get_u16(p + 12), a->holder, false, "LEASE request", err);
}

/* ---- reply ----------------------------------------------------------- */

/* Encodes a LEASE reply (previous holder truncated to 64 bytes). */
int dp_enc_lease_reply(struct dp_buf *b, uint64_t id, const struct dp_lease_reply *r)
{
    uint8_t p[DP_LEASE_REPLY_LEN] = {0};
    size_t n = strnlen(r->prev_holder, DP_LEASE_HOLDER_MAX);
    dp_put_u64(p, r->epoch);
    dp_put_u32(p + 8, r->verdict);
    dp_put_u64(p + 16, r->prev_epoch);
    dp_put_u16(p + 24, (uint16_t)n);
    memcpy(p + 32, r->prev_holder, n);
    return dp_msg_append(b, DP_MSG_LEASE | DP_MSG_REPLY, 0, id, p, sizeof(p));
}

/* Decodes a reply; the caller checks it against what it asked (epoch). */
int dp_dec_lease_reply(const uint8_t *p, size_t len, struct dp_lease_reply *r, struct dp_err *err)
{
    if (len != DP_LEASE_REPLY_LEN) {
        dp_err_set(err, "LEASE reply is %zu bytes, expected %u", len, DP_LEASE_REPLY_LEN);
        return DP_E_MALFORMED;
    }
    r->epoch = dp_get_u64(p);
    r->verdict = dp_get_u32(p + 8);
    r->prev_epoch = dp_get_u64(p + 16);
    if (r->epoch == 0 || r->verdict < DP_LEASE_GRANTED || r->verdict > DP_LEASE_RELEASED || dp_get_u32(p + 12) ||
        dp_get_u16(p + 26) || dp_get_u32(p + 28)) {
        dp_err_set(err, "LEASE reply: epoch %llu, verdict %u or a reserved field is invalid",
                   (unsigned long long)r->epoch, r->verdict);
        return DP_E_MALFORMED;
    }
    return dec_holder(p + 32, dp_get_u16(p + 24), r->prev_holder, true, "LEASE reply", err);
}
