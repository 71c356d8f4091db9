/* libFuzzer target for the request decoder (what the server runs on every
 * byte a client sends), plus the reply decoders the client runs, and the
 * secure channel's record opening (lib/channel.h), which both run on every
 * byte after the handshake: a record the fuzzer did not seal must never
 * open, and nothing may read outside the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "channel.h"
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct dp_request req; /* large (PUT ranges): keep it off the stack */
    struct dp_err err;
    struct dp_hdr h;
    /* Channel: fixed keys; the input as a header record then a payload record. */
    static struct dp_chan chan;
    static bool keyed;
    if (!keyed) {
        uint8_t psk[32] = {7}, sk[32] = {9}, pk[32], th[32] = {1}, a[32], b[32];
        if (sodium_init() < 0)
            abort();
        crypto_scalarmult_base(pk, sk);
        if (dp_chan_derive(psk, 32, sk, pk, th, DP_CIPHER_CHACHA20POLY1305, true, true, &chan, a, b, &err) < 0)
            abort();
        keyed = true;
    }
    if (size >= DP_CHAN_HDR_REC) {
        static uint8_t rec[DP_CHAN_HDR_REC + 65536];
        size_t n = size < sizeof(rec) ? size : sizeof(rec);
        memcpy(rec, data, n);
        chan.rx.counter = 0;
        if (dp_chan_open_hdr(&chan, rec) == 0)
            abort(); /* forged without the key */
        uint32_t plen = (uint32_t)(n - DP_CHAN_HDR_REC) >= DP_CHAN_TAG ? (uint32_t)(n - DP_CHAN_HDR_REC) - DP_CHAN_TAG : 0;
        if (plen && dp_chan_open_payload(&chan, rec + DP_CHAN_HDR_REC, plen) == 0)
            abort();
    }
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
        struct dp_hello hh;
        (void)dp_dec_hello(p, len, &hh, &err);
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
