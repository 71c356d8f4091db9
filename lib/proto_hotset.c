/* proto_hotset: codec of PUT_TRACE and GET_HOTSET (see proto_hotset.h). */
#include <string.h>

#include "proto_hotset.h"

const char *dp_hotset_which_name(uint32_t which)
{
    static const char *names[] = {"auto", "classify", "trace", "merged"};
    return which < DP_ARRAY_LEN(names) ? names[which] : "unknown";
}

int dp_hotset_which_parse(const char *text, uint32_t *which)
{
    for (uint32_t i = 0; i <= DP_HOTSET_MERGED; i++)
        if (strcmp(text, dp_hotset_which_name(i)) == 0) {
            *which = i;
            return 0;
        }
    return -1;
}

uint32_t dp_hotset_request_max_len(uint8_t type)
{
    switch (type) {
    case DP_MSG_PUT_TRACE: return DP_MAX_PAYLOAD;
    case DP_MSG_GET_HOTSET: return DP_GET_HOTSET_REQ_LEN;
    default: return 0;
    }
}

int dp_enc_get_hotset_req(struct dp_buf *b, uint64_t id, uint32_t which)
{
    uint8_t p[DP_GET_HOTSET_REQ_LEN] = {0};
    dp_put_u32(p, which);
    return dp_msg_append(b, DP_MSG_GET_HOTSET, 0, id, p, sizeof(p));
}

int dp_dec_get_hotset_req(const uint8_t *p, size_t len, uint32_t *which, struct dp_err *err)
{
    if (len != DP_GET_HOTSET_REQ_LEN) {
        dp_err_set(err, "GET_HOTSET payload is %zu bytes, must be %d", len, DP_GET_HOTSET_REQ_LEN);
        return DP_E_MALFORMED;
    }
    if (dp_get_u32(p + 4)) {
        dp_err_set(err, "GET_HOTSET reserved field is not zero");
        return DP_E_MALFORMED;
    }
    *which = dp_get_u32(p);
    if (*which > DP_HOTSET_MERGED) {
        dp_err_set(err, "GET_HOTSET asks for kind %u (0 auto, 1 classify, 2 trace, 3 merged)", *which);
        return DP_E_MALFORMED;
    }
    return DP_E_OK;
}

int dp_enc_put_trace_reply(struct dp_buf *b, uint64_t id, uint64_t pages, uint32_t runs)
{
    uint8_t p[DP_PUT_TRACE_REPLY_LEN] = {0};
    dp_put_u64(p, pages);
    dp_put_u32(p + 8, runs);
    return dp_msg_append(b, DP_MSG_PUT_TRACE | DP_MSG_REPLY, 0, id, p, sizeof(p));
}

int dp_dec_put_trace_reply(const uint8_t *p, size_t len, uint64_t *pages, uint32_t *runs, struct dp_err *err)
{
    if (len != DP_PUT_TRACE_REPLY_LEN || dp_get_u32(p + 12)) {
        dp_err_set(err, "PUT_TRACE reply of %zu bytes (must be %d, reserved zero)", len, DP_PUT_TRACE_REPLY_LEN);
        return DP_E_MALFORMED;
    }
    *pages = dp_get_u64(p);
    *runs = dp_get_u32(p + 8);
    return DP_E_OK;
}
