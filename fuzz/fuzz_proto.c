/* libFuzzer target for the request decoder (what the server runs on every
 * byte a client sends), plus the reply decoders the client runs. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct dp_request req; /* large (PUT ranges): keep it off the stack */
    struct dp_err err;
    struct dp_hdr h;
    if (size < DP_HDR_SIZE)
        return 0;
    if (dp_hdr_decode(data, DP_MAX_PAYLOAD, &h, &err) != DP_E_OK)
        return 0;
    const uint8_t *p = data + DP_HDR_SIZE;
    size_t len = size - DP_HDR_SIZE;
    /* The server only decodes once len bytes arrived; feed what we have and
     * pretend the header said so, so every length path is reachable. */
    h.len = (uint32_t)len;
    if (dp_dec_request(&h, p, len, &req, &err) == DP_E_OK && h.type == DP_MSG_GET_PAGES) {
        /* A valid GET doubles as the request against which to check a reply. */
        static struct dp_seg segs[DP_MAX_GET_PAGES];
        uint32_t n;
        size_t used = 8 + (size_t)req.u.get.nr_ranges * 16;
        (void)dp_dec_get_reply(p + used, len - used, req.u.get.ranges, req.u.get.nr_ranges, segs,
                               DP_MAX_GET_PAGES, &n, &err);
    }
    switch (h.type & 0x7f) {
    case DP_MSG_TASK_MAP: {
        struct dp_task_map m;
        if (dp_dec_task_map_reply(p, len, &m, &err) == DP_E_OK)
            dp_task_map_free(&m);
        break;
    }
    case DP_MSG_GET_SKELETON: {
        struct dp_skel_chunk c;
        (void)dp_dec_skel_chunk(p, len, &c, &err);
        break;
    }
    case DP_MSG_HELLO: {
        struct dp_hello_reply r;
        (void)dp_dec_hello_reply(p, len, &r, &err);
        break;
    }
    case 0x7f: {
        struct dp_error_msg e;
        (void)dp_dec_error(p, len, &e, &err);
        break;
    }
    }
    return 0;
}
