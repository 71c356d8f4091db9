/* frame: a connection's input cut into messages (see frame.h). */
#include "frame.h"

#include "proto_hotset.h"
#include "proto_lease.h"

/* ---- messages ----------------------------------------------------------- */

enum dp_frame_verdict dp_frame_next(struct dp_frame_rx *rx, struct dp_chan *chan, uint8_t *in, size_t avail,
                                    uint32_t max_payload, dp_frame_check_fn check, void *arg, struct dp_frame *out,
                                    struct dp_err *err)
{
    *out = (struct dp_frame){0};
    if (!rx->have_hdr) {
        size_t hsz = chan->secure ? DP_CHAN_HDR_REC : DP_HDR_SIZE;
        if (avail < hsz) {
            out->need = hsz;
            return DP_FRAME_MORE;
        }
        if (chan->secure && dp_chan_open_hdr(chan, in) < 0)
            return DP_FRAME_FORGED;
        struct dp_hdr h;
        int rc = dp_hdr_decode(in, max_payload, &h, err);
        if (rc == DP_E_OK && check)
            rc = check(&h, arg, err);
        if (rc != DP_E_OK) {
            out->code = (uint32_t)rc;
            out->id = dp_get_u64(in + 8);
            return DP_FRAME_REFUSE;
        }
        rx->hdr = h;
        rx->have_hdr = true;
        out->used = hsz;
        in += hsz;
        avail -= hsz;
    }
    size_t need = (size_t)rx->hdr.len + (chan->secure && rx->hdr.len ? DP_CHAN_TAG : 0);
    if (avail < need) {
        out->need = need;
        return DP_FRAME_MORE;
    }
    if (chan->secure && rx->hdr.len && dp_chan_open_payload(chan, in, rx->hdr.len) < 0)
        return DP_FRAME_FORGED;
    out->used += need;
    out->hdr = rx->hdr;
    out->payload = in;
    rx->have_hdr = false;
    return DP_FRAME_MSG;
}

/* ---- the server's header rules -------------------------------------------- */

int dp_frame_check_request(const struct dp_hdr *h, bool authenticated, uint16_t version, struct dp_err *err)
{
    if (!authenticated && h->type != DP_MSG_HELLO && h->type != DP_MSG_AUTH) {
        dp_err_set(err, "authenticate (HELLO, AUTH) before any other request");
        return DP_E_UNAUTHENTICATED;
    }
    /* version-2 types (issue 7) only on a connection that negotiated 2, the
     * version-4 ones (LEASE, MIGRATION) only on 4: refused from the header,
     * before a 16 MiB upload is buffered */
    if (!dp_request_type_known(h->type) || (dp_hotset_request_max_len(h->type) && version < DP_PROTO_VERSION_HOTSET) ||
        ((h->type == DP_MSG_LEASE || h->type == DP_MSG_MIGRATION) && version < DP_PROTO_VERSION_LEASE)) {
        dp_err_set(err, "unknown request type 0x%02x", h->type);
        return DP_E_UNKNOWN_TYPE;
    }
    if (h->len > dp_request_max_len(h->type)) {
        dp_err_set(err, "request type 0x%02x with %u payload bytes; at most %u", h->type, h->len,
                   dp_request_max_len(h->type));
        return DP_E_TOO_LARGE;
    }
    return DP_E_OK;
}
