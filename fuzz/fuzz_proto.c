/* libFuzzer target for the page-server protocol's plain decoders (lib/proto.h,
 * lib/proto_hotset.h): the header, every request type as the server decodes
 * it, and every reply as the client decodes it. The first input byte picks
 * the decoder, the rest is what it reads (fuzz/gen_seeds.c writes one valid
 * seed per case from the real encoders). A GET reply is checked against a
 * request carried in the same input (u16 length, GET request payload, then
 * the reply), so the fuzzer can reach the segment walk, not only the reply
 * header; what decodes must re-encode to the same bytes where an encoder
 * exists. The sealed records around these messages: fuzz/fuzz_chan.c. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "proto_hotset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Cases of the selector byte (kept in step with fuzz/gen_seeds.c). */
enum {
    C_HDR, C_REQUEST, C_GET_REPLY, C_PUT_REPLY, C_SKEL_CHUNK, C_TASK_MAP, C_HELLO_REPLY,
    C_AUTH_REPLY, C_ERROR, C_HOTSET_REPLIES, C_COUNT
};

/* Re-encodes a decoded message and aborts if the payload differs. */
static void same_payload(const struct dp_buf *b, const uint8_t *p, size_t len)
{
    if (b->len != DP_HDR_SIZE + len || memcmp(b->data + DP_HDR_SIZE, p, len) != 0)
        abort();
}

/* A request of the type in the second byte, as dispatch() decodes it. */
static void fuzz_request(const uint8_t *p, size_t len)
{
    static struct dp_request req; /* large (PUT ranges): off the stack */
    struct dp_err err;
    if (len < 1)
        return;
    struct dp_hdr h = {.version = 1, .type = p[0], .id = 1, .len = (uint32_t)(len - 1)};
    p++;
    len--;
    if (h.len > dp_request_max_len(h.type) && dp_request_type_known(h.type))
        return; /* the header check refuses it before the payload is read */
    if (dp_dec_request(&h, p, len, &req, &err) != DP_E_OK)
        return;
    struct dp_buf b = {0};
    int rc = 0;
    switch (h.type) {
    case DP_MSG_GET_PAGES:
        if (req.u.get.nr_ranges == 0 || req.u.get.nr_ranges > DP_MAX_GET_RANGES)
            abort();
        rc = dp_enc_get_req(&b, 1, req.u.get.ranges, req.u.get.nr_ranges);
        break;
    case DP_MSG_PUT_PAGES: {
        uint64_t pages = 0;
        for (uint32_t i = 0; i < req.u.put.nr_ranges; i++) {
            const struct dp_put_range *r = &req.u.put.ranges[i];
            if (r->data < p || r->data + (size_t)r->count * DP_PAGE_SIZE > p + len)
                abort(); /* page data must lie inside the payload */
            pages += r->count;
        }
        if (pages != req.u.put.total_pages || pages > DP_MAX_PUT_PAGES)
            abort();
        rc = dp_enc_put_req(&b, 1, req.u.put.ranges, req.u.put.nr_ranges);
        break;
    }
    case DP_MSG_HELLO:
        if (!req.u.hello.legacy)
            rc = dp_enc_hello(&b, 1, &req.u.hello);
        break;
    case DP_MSG_AUTH: rc = dp_enc_auth(&b, 1, &req.u.auth); break;
    }
    if (rc < 0)
        abort();
    if (b.len)
        same_payload(&b, p, len);
    dp_buf_free(&b);
}

/* A GET reply against the GET request in front of it. */
static void fuzz_get_reply(const uint8_t *p, size_t len)
{
    static struct dp_get_req req;
    static struct dp_seg segs[DP_MAX_GET_PAGES];
    struct dp_err err;
    if (len < 2)
        return;
    size_t rlen = dp_get_u16(p);
    if (rlen > len - 2)
        return;
    if (dp_dec_get_req(p + 2, rlen, &req, &err) != DP_E_OK)
        return;
    const uint8_t *r = p + 2 + rlen;
    size_t n = len - 2 - rlen;
    uint32_t nr = 0;
    if (dp_dec_get_reply(r, n, req.ranges, req.nr_ranges, segs, DP_MAX_GET_PAGES, &nr, &err) != DP_E_OK)
        return;
    /* A valid reply covers every requested page once, in order, inside the input. */
    uint64_t want = 0, got = 0;
    for (uint32_t i = 0; i < req.nr_ranges; i++)
        want += req.ranges[i].count;
    for (uint32_t i = 0; i < nr; i++) {
        got += segs[i].count;
        if ((segs[i].kind == DP_SEG_DATA) != (segs[i].data != NULL))
            abort();
        if (segs[i].data && (segs[i].data < r || segs[i].data + (size_t)segs[i].count * DP_PAGE_SIZE > r + n))
            abort();
    }
    if (got != want)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const uint8_t *p = data + 1;
    size_t len = size - 1;
    struct dp_err err;
    struct dp_buf b = {0};
    switch (data[0] % C_COUNT) {
    case C_HDR: {
        struct dp_hdr h;
        if (len >= DP_HDR_SIZE && dp_hdr_decode(p, DP_MAX_PAYLOAD, &h, &err) == DP_E_OK) {
            uint8_t out[DP_HDR_SIZE];
            dp_hdr_encode(out, &h);
            if (memcmp(out, p, DP_HDR_SIZE) != 0)
                abort();
        }
        break;
    }
    case C_REQUEST: fuzz_request(p, len); break;
    case C_GET_REPLY: fuzz_get_reply(p, len); break;
    case C_PUT_REPLY: {
        uint32_t pages;
        if (dp_dec_put_reply(p, len, &pages, &err) == DP_E_OK) {
            if (dp_enc_put_reply(&b, 1, pages) < 0)
                abort();
            same_payload(&b, p, len);
        }
        break;
    }
    case C_SKEL_CHUNK: {
        static struct dp_skel_chunk c;
        if (dp_dec_skel_chunk(p, len, &c, &err) == DP_E_OK) {
            if (c.name_len > DP_MAX_NAME || strlen(c.name) != c.name_len)
                abort();
            if (c.kind == DP_SKEL_DATA && (c.data < p || c.data + c.data_len > p + len))
                abort();
        }
        (void)dp_dec_skel_req(p, len, &err);
        break;
    }
    case C_TASK_MAP: {
        struct dp_task_map m;
        if (dp_dec_task_map_reply(p, len, &m, &err) == DP_E_OK) {
            if (dp_enc_task_map_reply(&b, 1, &m) < 0)
                abort();
            same_payload(&b, p, len);
            dp_task_map_free(&m);
        }
        (void)dp_dec_empty(p, len, &err);
        break;
    }
    case C_HELLO_REPLY: {
        struct dp_hello_reply r;
        if (dp_dec_hello_reply(p, len, &r, &err) == DP_E_OK) {
            if (dp_enc_hello_reply(&b, 1, &r) < 0)
                abort();
            same_payload(&b, p, len);
        }
        break;
    }
    case C_AUTH_REPLY: {
        struct dp_auth_reply r;
        if (dp_dec_auth_reply(p, len, &r, &err) == DP_E_OK) {
            if (dp_enc_auth_reply(&b, 1, &r) < 0)
                abort();
            same_payload(&b, p, len);
        }
        break;
    }
    case C_ERROR: {
        static struct dp_error_msg e;
        if (dp_dec_error(p, len, &e, &err) == DP_E_OK && strlen(e.msg) > DP_MAX_ERROR_MSG)
            abort();
        (void)dp_errcode_name(len >= 4 ? dp_get_u32(p) : 0);
        break;
    }
    case C_HOTSET_REPLIES: {
        uint32_t which, runs;
        uint64_t pages;
        (void)dp_dec_get_hotset_req(p, len, &which, &err);
        (void)dp_dec_put_trace_reply(p, len, &pages, &runs, &err);
        break;
    }
    }
    dp_buf_free(&b);
    return 0;
}
