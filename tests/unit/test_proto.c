#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "proto_hotset.h"

/* Decodes the header of the message at b->data + at, returns its payload. */
static const uint8_t *payload_of(const struct dp_buf *b, size_t at, struct dp_hdr *h)
{
    struct dp_err err;
    assert_true(b->len >= at + DP_HDR_SIZE);
    assert_int_equal(dp_hdr_decode(b->data + at, DP_MAX_PAYLOAD, h, &err), DP_E_OK);
    assert_int_equal(b->len - at - DP_HDR_SIZE >= h->len, 1);
    return b->data + at + DP_HDR_SIZE;
}

static void header_layout_is_little_endian(void **state)
{
    (void)state;
    uint8_t out[DP_HDR_SIZE];
    struct dp_hdr h = {.version = 1, .type = DP_MSG_GET_PAGES, .flags = DP_FLAG_MORE, .id = 0x0102030405060708ULL,
                       .len = 0x11223344};
    dp_hdr_encode(out, &h);
    static const uint8_t want[DP_HDR_SIZE] = {'D', 'P', 'P', 'S', 1, 4, 1, 0, 8, 7, 6, 5, 4, 3, 2, 1,
                                              0x44, 0x33, 0x22, 0x11, 0, 0, 0, 0};
    assert_memory_equal(out, want, DP_HDR_SIZE);
    struct dp_hdr back;
    struct dp_err err;
    assert_int_equal(dp_hdr_decode(out, 0xffffffffu, &back, &err), DP_E_OK);
    assert_int_equal(back.id, h.id);
    assert_int_equal(back.len, h.len);
    assert_int_equal(back.flags, DP_FLAG_MORE);
}

static void header_rejects_bad_fields(void **state)
{
    (void)state;
    uint8_t out[DP_HDR_SIZE];
    struct dp_hdr h = {.version = 1, .type = 1, .id = 1, .len = 100}, back;
    struct dp_err err;
    dp_hdr_encode(out, &h);
    assert_int_equal(dp_hdr_decode(out, 99, &back, &err), DP_E_TOO_LARGE);
    assert_non_null(strstr(err.msg, "exceeds"));
    out[0] = 'X';
    assert_int_equal(dp_hdr_decode(out, DP_MAX_PAYLOAD, &back, &err), DP_E_MALFORMED);
    dp_hdr_encode(out, &h);
    out[4] = 2;
    assert_int_equal(dp_hdr_decode(out, DP_MAX_PAYLOAD, &back, &err), DP_E_VERSION);
    dp_hdr_encode(out, &h);
    out[7] = 0x80; /* unknown flag */
    assert_int_equal(dp_hdr_decode(out, DP_MAX_PAYLOAD, &back, &err), DP_E_MALFORMED);
    dp_hdr_encode(out, &h);
    out[23] = 1; /* reserved */
    assert_int_equal(dp_hdr_decode(out, DP_MAX_PAYLOAD, &back, &err), DP_E_MALFORMED);
}

static void hello_and_auth_roundtrip(void **state)
{
    (void)state;
    struct dp_buf b = {0};
    struct dp_hdr h;
    struct dp_err err;
    struct dp_hello hello = {.min_version = 3, .max_version = 4, .flags = DP_HELLO_FLAG_PLAINTEXT, .ciphers = 3}, hb;
    memset(hello.eph_pk, 0x42, sizeof(hello.eph_pk));
    memset(hello.nonce, 0x43, sizeof(hello.nonce));
    assert_int_equal(dp_enc_hello(&b, 7, &hello), 0);
    const uint8_t *p = payload_of(&b, 0, &h);
    assert_int_equal(h.type, DP_MSG_HELLO);
    assert_int_equal(h.id, 7);
    assert_int_equal(h.len, DP_HELLO_LEN);
    assert_int_equal(dp_dec_hello(p, h.len, &hb, &err), DP_E_OK);
    assert_int_equal(hb.max_version, 4);
    assert_int_equal(hb.flags, DP_HELLO_FLAG_PLAINTEXT);
    assert_int_equal(hb.ciphers, 3);
    assert_false(hb.legacy);
    assert_memory_equal(hb.eph_pk, hello.eph_pk, 32);
    assert_memory_equal(hb.nonce, hello.nonce, 32);
    /* A version-1/2 HELLO decodes as legacy (the server answers VERSION). */
    uint8_t old[DP_HELLO_LEGACY_LEN] = {1, 0, 2, 0, 0, 0, 0, 0};
    assert_int_equal(dp_dec_hello(old, sizeof(old), &hb, &err), DP_E_OK);
    assert_true(hb.legacy);
    /* An empty range, a wrong length, unknown flags, reserved bits: malformed. */
    uint8_t bad[DP_HELLO_LEN];
    memcpy(bad, p, DP_HELLO_LEN);
    bad[0] = 5;
    assert_int_equal(dp_dec_hello(bad, sizeof(bad), &hb, &err), DP_E_MALFORMED);
    assert_int_equal(dp_dec_hello(p, 79, &hb, &err), DP_E_MALFORMED);
    memcpy(bad, p, DP_HELLO_LEN);
    bad[4] = 0x4; /* the first flag no version knows */
    assert_int_equal(dp_dec_hello(bad, sizeof(bad), &hb, &err), DP_E_MALFORMED);
    memcpy(bad, p, DP_HELLO_LEN);
    bad[4] = DP_HELLO_FLAG_BULK; /* the warm-up's connection */
    assert_int_equal(dp_dec_hello(bad, sizeof(bad), &hb, &err), DP_E_OK);
    assert_int_equal(hb.flags, DP_HELLO_FLAG_BULK);
    memcpy(bad, p, DP_HELLO_LEN);
    bad[12] = 1;
    assert_int_equal(dp_dec_hello(bad, sizeof(bad), &hb, &err), DP_E_MALFORMED);

    struct dp_hello_reply hr = {.version = 3, .max_payload = DP_MAX_PAYLOAD, .max_get_pages = 1024,
                                .max_put_pages = 256, .max_get_ranges = 256, .flags = 0, .cipher = 2}, hrb;
    memset(hr.server_nonce, 0xaa, DP_NONCE_SIZE);
    memset(hr.eph_pk, 0xbb, 32);
    memset(hr.cpid, 0xcc, 32);
    size_t at = b.len;
    assert_int_equal(dp_enc_hello_reply(&b, 7, &hr), 0);
    p = payload_of(&b, at, &h);
    assert_int_equal(h.type, DP_MSG_HELLO | DP_MSG_REPLY);
    assert_int_equal(h.len, DP_HELLO_REPLY_LEN);
    assert_int_equal(dp_dec_hello_reply(p, h.len, &hrb, &err), DP_E_OK);
    assert_memory_equal(hrb.server_nonce, hr.server_nonce, DP_NONCE_SIZE);
    assert_memory_equal(hrb.eph_pk, hr.eph_pk, 32);
    assert_memory_equal(hrb.cpid, hr.cpid, 32);
    assert_int_equal(hrb.cipher, 2);
    hr.version = 2; /* versions 1 and 2 sent frames in clear: refused */
    at = b.len;
    assert_int_equal(dp_enc_hello_reply(&b, 7, &hr), 0);
    p = payload_of(&b, at, &h);
    assert_int_equal(dp_dec_hello_reply(p, h.len, &hrb, &err), DP_E_VERSION);

    struct dp_auth a, ab;
    memset(a.mac, 0x11, DP_MAC_SIZE);
    at = b.len;
    assert_int_equal(dp_enc_auth(&b, 8, &a), 0);
    p = payload_of(&b, at, &h);
    assert_int_equal(h.len, DP_AUTH_LEN);
    assert_int_equal(dp_dec_auth(p, h.len, &ab, &err), DP_E_OK);
    assert_memory_equal(ab.mac, a.mac, DP_MAC_SIZE);
    assert_true(dp_auth_mac_equal(ab.mac, a.mac));
    ab.mac[31] ^= 1;
    assert_false(dp_auth_mac_equal(ab.mac, a.mac));
    dp_buf_free(&b);
}

static void get_request_roundtrip_and_limits(void **state)
{
    (void)state;
    static struct dp_get_req req;
    struct dp_buf b = {0};
    struct dp_hdr h;
    struct dp_err err;
    struct dp_get_range r[2] = {{.pid = 42, .count = 3, .addr = 0x7f0000001000ULL},
                                {.pid = 43, .count = 1, .addr = 0x1000}};
    assert_int_equal(dp_enc_get_req(&b, 9, r, 2), 0);
    const uint8_t *p = payload_of(&b, 0, &h);
    assert_int_equal(h.len, 8 + 2 * 16);
    assert_int_equal(dp_dec_get_req(p, h.len, &req, &err), DP_E_OK);
    assert_int_equal(req.nr_ranges, 2);
    assert_int_equal(req.total_pages, 4);
    assert_int_equal(req.ranges[0].addr, r[0].addr);
    assert_int_equal(req.ranges[1].pid, 43);
    /* Length that does not match the count. */
    assert_int_equal(dp_dec_get_req(p, h.len - 1, &req, &err), DP_E_MALFORMED);
    dp_buf_free(&b);

    struct dp_get_range bad = {.pid = 1, .count = 1, .addr = 0x1001};
    assert_int_equal(dp_enc_get_req(&b, 1, &bad, 1), 0);
    p = payload_of(&b, 0, &h);
    assert_int_equal(dp_dec_get_req(p, h.len, &req, &err), DP_E_MALFORMED);
    assert_non_null(strstr(err.msg, "aligned"));
    dp_buf_free(&b);

    bad = (struct dp_get_range){.pid = 1, .count = 2, .addr = UINT64_MAX - 4095};
    assert_int_equal(dp_enc_get_req(&b, 1, &bad, 1), 0);
    p = payload_of(&b, 0, &h);
    assert_int_equal(dp_dec_get_req(p, h.len, &req, &err), DP_E_MALFORMED);
    dp_buf_free(&b);

    bad = (struct dp_get_range){.pid = 1, .count = DP_MAX_GET_PAGES + 1, .addr = 0};
    assert_int_equal(dp_enc_get_req(&b, 1, &bad, 1), 0);
    p = payload_of(&b, 0, &h);
    assert_int_equal(dp_dec_get_req(p, h.len, &req, &err), DP_E_TOO_LARGE);
    dp_buf_free(&b);

    bad = (struct dp_get_range){.pid = 0, .count = 1, .addr = 0};
    assert_int_equal(dp_enc_get_req(&b, 1, &bad, 1), 0);
    p = payload_of(&b, 0, &h);
    assert_int_equal(dp_dec_get_req(p, h.len, &req, &err), DP_E_MALFORMED);
    dp_buf_free(&b);

    /* A count field claiming many ranges is rejected before anything is read. */
    uint8_t many[8] = {0};
    dp_put_u32(many, DP_MAX_GET_RANGES + 1);
    assert_int_equal(dp_dec_get_req(many, sizeof(many), &req, &err), DP_E_TOO_LARGE);
    dp_put_u32(many, 0);
    assert_int_equal(dp_dec_get_req(many, sizeof(many), &req, &err), DP_E_MALFORMED);
}

/* Builds a GET reply payload by hand from segments. */
static size_t build_reply(uint8_t *out, const struct dp_seg *segs, uint32_t n)
{
    size_t off = DP_GET_REPLY_HDR;
    dp_enc_get_reply_hdr(out, n);
    for (uint32_t i = 0; i < n; i++) {
        dp_enc_seg_hdr(out + off, &segs[i]);
        off += DP_SEG_HDR;
        if (segs[i].kind == DP_SEG_DATA) {
            memset(out + off, (int)(0x40 + i), segs[i].count * DP_PAGE_SIZE);
            off += segs[i].count * DP_PAGE_SIZE;
        }
    }
    return off;
}

static void get_reply_must_cover_request(void **state)
{
    (void)state;
    static uint8_t buf[8 * 4096 + 1024];
    struct dp_seg out[16];
    uint32_t n;
    struct dp_err err;
    struct dp_get_range req[2] = {{.pid = 5, .count = 3, .addr = 0x10000}, {.pid = 6, .count = 1, .addr = 0x20000}};
    struct dp_seg segs[3] = {
        {.kind = DP_SEG_DATA, .pid = 5, .count = 1, .addr = 0x10000},
        {.kind = DP_SEG_ZERO, .pid = 5, .count = 2, .addr = 0x11000},
        {.kind = DP_SEG_DATA, .pid = 6, .count = 1, .addr = 0x20000},
    };
    size_t len = build_reply(buf, segs, 3);
    assert_int_equal(len, 8 + 3 * 24 + 2 * 4096);
    assert_int_equal(dp_dec_get_reply(buf, len, req, 2, out, 16, &n, &err), DP_E_OK);
    assert_int_equal(n, 3);
    assert_int_equal(out[1].kind, DP_SEG_ZERO);
    assert_null(out[1].data);
    assert_int_equal(out[2].data[0], 0x42);
    /* Truncated data. */
    assert_int_equal(dp_dec_get_reply(buf, len - 1, req, 2, out, 16, &n, &err), DP_E_MALFORMED);
    /* Trailing bytes. */
    assert_int_equal(dp_dec_get_reply(buf, len + 1, req, 2, out, 16, &n, &err), DP_E_MALFORMED);
    /* A segment at the wrong address. */
    segs[1].addr = 0x12000;
    len = build_reply(buf, segs, 3);
    assert_int_equal(dp_dec_get_reply(buf, len, req, 2, out, 16, &n, &err), DP_E_MALFORMED);
    /* A segment overrunning its range. */
    segs[1].addr = 0x11000;
    segs[1].count = 3;
    len = build_reply(buf, segs, 3);
    assert_int_equal(dp_dec_get_reply(buf, len, req, 2, out, 16, &n, &err), DP_E_MALFORMED);
    /* Missing the last range. */
    segs[1].count = 2;
    len = build_reply(buf, segs, 2);
    assert_int_equal(dp_dec_get_reply(buf, len, req, 2, out, 16, &n, &err), DP_E_MALFORMED);
    /* More segments than the caller can hold. */
    len = build_reply(buf, segs, 3);
    assert_int_equal(dp_dec_get_reply(buf, len, req, 2, out, 2, &n, &err), DP_E_MALFORMED);
}

static void put_roundtrip_and_limits(void **state)
{
    (void)state;
    static struct dp_put_req req;
    static uint8_t pages[3 * 4096];
    struct dp_buf b = {0};
    struct dp_hdr h;
    struct dp_err err;
    for (size_t i = 0; i < sizeof(pages); i++)
        pages[i] = (uint8_t)(i * 7);
    struct dp_put_range r[2] = {{.pid = 9, .count = 2, .addr = 0x4000, .data = pages},
                                {.pid = 9, .count = 1, .addr = 0x9000, .data = pages + 8192}};
    assert_int_equal(dp_enc_put_req(&b, 3, r, 2), 0);
    const uint8_t *p = payload_of(&b, 0, &h);
    assert_int_equal(dp_dec_put_req(p, h.len, &req, &err), DP_E_OK);
    assert_int_equal(req.total_pages, 3);
    assert_memory_equal(req.ranges[0].data, pages, 8192);
    assert_memory_equal(req.ranges[1].data, pages + 8192, 4096);
    assert_int_equal(dp_dec_put_req(p, h.len - 4096, &req, &err), DP_E_MALFORMED);
    assert_int_equal(dp_dec_put_req(p, h.len + 1, &req, &err), DP_E_MALFORMED);
    dp_buf_free(&b);
    /* A range claiming more pages than allowed is refused before reading data. */
    uint8_t hdr[24] = {0};
    dp_put_u32(hdr, 1);
    dp_put_u32(hdr + 8, 1);
    dp_put_u32(hdr + 12, DP_MAX_PUT_PAGES + 1);
    assert_int_equal(dp_dec_put_req(hdr, sizeof(hdr), &req, &err), DP_E_TOO_LARGE);

    assert_int_equal(dp_enc_put_reply(&b, 3, 3), 0);
    p = payload_of(&b, 0, &h);
    uint32_t pages_acked;
    assert_int_equal(dp_dec_put_reply(p, h.len, &pages_acked, &err), DP_E_OK);
    assert_int_equal(pages_acked, 3);
    /* The reply's reserved field must be zero (found by fuzz/fuzz_proto.c). */
    uint8_t bad[DP_PUT_REPLY_LEN];
    memcpy(bad, p, sizeof(bad));
    bad[4] = 3;
    assert_int_equal(dp_dec_put_reply(bad, sizeof(bad), &pages_acked, &err), DP_E_MALFORMED);
    dp_buf_free(&b);
}

static void task_map_roundtrip_and_bounds(void **state)
{
    (void)state;
    struct dp_tm_range ra[3] = {{0x1000, 0x3000}, {0x8000, 0x9000}, {0x10000, 0x20000}};
    struct dp_tm_task tasks[2] = {{.pid = 1, .ppid = 0, .nr_ranges = 2, .ranges = ra},
                                  {.pid = 2, .ppid = 1, .nr_ranges = 1, .ranges = ra + 2}};
    struct dp_task_map m = {.nr_tasks = 2, .tasks = tasks}, back;
    struct dp_buf b = {0};
    struct dp_hdr h;
    struct dp_err err;
    assert_int_equal(dp_enc_task_map_reply(&b, 4, &m), 0);
    const uint8_t *p = payload_of(&b, 0, &h);
    assert_int_equal(h.len, 8 + 2 * 16 + 3 * 16);
    assert_int_equal(dp_dec_task_map_reply(p, h.len, &back, &err), DP_E_OK);
    assert_int_equal(back.nr_tasks, 2);
    assert_int_equal(back.tasks[1].ppid, 1);
    assert_int_equal(back.tasks[0].ranges[1].end, 0x9000);
    assert_int_equal(back.tasks[1].ranges[0].start, 0x10000);
    dp_task_map_free(&back);
    /* Reserved fields must be zero, in the header and in each task (found by
     * fuzz/fuzz_proto.c: the decoder took any value). */
    uint8_t bad[8 + 2 * 16 + 3 * 16];
    memcpy(bad, p, sizeof(bad));
    bad[4] = 0x11;
    assert_int_equal(dp_dec_task_map_reply(bad, sizeof(bad), &back, &err), DP_E_MALFORMED);
    memcpy(bad, p, sizeof(bad));
    bad[8 + 12] = 1;
    assert_int_equal(dp_dec_task_map_reply(bad, sizeof(bad), &back, &err), DP_E_MALFORMED);
    dp_task_map_free(&back);
    assert_int_equal(dp_dec_task_map_reply(p, h.len - 1, &back, &err), DP_E_MALFORMED);
    /* A task claiming a billion ranges in a short payload: no allocation, an error. */
    uint8_t lie[24] = {0};
    dp_put_u32(lie, 1);
    dp_put_u32(lie + 16, 1000000000u);
    assert_int_not_equal(dp_dec_task_map_reply(lie, sizeof(lie), &back, &err), DP_E_OK);
    dp_put_u32(lie, 0xffffffffu);
    assert_int_equal(dp_dec_task_map_reply(lie, sizeof(lie), &back, &err), DP_E_TOO_LARGE);
    /* Unsorted ranges. */
    ra[1].start = 0x2000;
    b.len = 0;
    assert_int_equal(dp_enc_task_map_reply(&b, 4, &m), 0);
    p = payload_of(&b, 0, &h);
    assert_int_equal(dp_dec_task_map_reply(p, h.len, &back, &err), DP_E_MALFORMED);
    dp_buf_free(&b);
}

static void skeleton_chunk_names_are_safe(void **state)
{
    (void)state;
    struct dp_buf b = {0};
    struct dp_skel_chunk c = {.kind = DP_SKEL_DATA, .mode = 0600, .file_size = 100, .offset = 90, .data_len = 10},
                         back;
    struct dp_err err;
    strcpy(c.name, "pages-1.img");
    c.name_len = (uint16_t)strlen(c.name);
    assert_int_equal(dp_enc_skel_chunk_hdr(&b, &c), 0);
    assert_int_equal(dp_buf_put(&b, "0123456789", 10), 0);
    assert_int_equal(dp_dec_skel_chunk(b.data, b.len, &back, &err), DP_E_OK);
    assert_string_equal(back.name, "pages-1.img");
    assert_memory_equal(back.data, "0123456789", 10);
    /* data beyond the file size */
    dp_put_u64(b.data + 16, 95);
    assert_int_equal(dp_dec_skel_chunk(b.data, b.len, &back, &err), DP_E_MALFORMED);
    dp_buf_free(&b);
    const char *bad[] = {"..", ".", "a/../b", "/etc", "a//b", "a/", "parent/./x"};
    for (size_t i = 0; i < DP_ARRAY_LEN(bad); i++) {
        strcpy(c.name, bad[i]);
        c.name_len = (uint16_t)strlen(bad[i]);
        c.offset = 0;
        c.data_len = 0;
        assert_int_equal(dp_enc_skel_chunk_hdr(&b, &c), 0);
        assert_int_equal(dp_dec_skel_chunk(b.data, b.len, &back, &err), DP_E_MALFORMED);
        dp_buf_free(&b);
    }
    assert_false(dp_skel_name_ok("a\0b", 3));
    assert_true(dp_skel_name_ok("parent/pages-1.img", 18));
    assert_true(dp_skel_name_ok("..a", 3));
    struct dp_skel_chunk end = {.kind = DP_SKEL_END, .file_size = 3, .offset = 1234};
    assert_int_equal(dp_enc_skel_chunk_hdr(&b, &end), 0);
    assert_int_equal(dp_dec_skel_chunk(b.data, b.len, &back, &err), DP_E_OK);
    assert_int_equal(back.kind, DP_SKEL_END);
    assert_int_equal(back.offset, 1234);
    dp_buf_free(&b);
}

static void error_roundtrip_sanitises_text(void **state)
{
    (void)state;
    struct dp_buf b = {0};
    struct dp_hdr h;
    struct dp_err err;
    static struct dp_error_msg e;
    assert_int_equal(dp_enc_error(&b, 11, true, DP_E_AUTH_FAILED, "bad\x1b[2Jkey"), 0);
    const uint8_t *p = payload_of(&b, 0, &h);
    assert_int_equal(h.type, DP_MSG_ERROR);
    assert_int_equal(h.flags, DP_FLAG_FATAL);
    assert_int_equal(h.id, 11);
    assert_int_equal(dp_dec_error(p, h.len, &e, &err), DP_E_OK);
    assert_int_equal(e.code, DP_E_AUTH_FAILED);
    assert_string_equal(e.msg, "bad?[2Jkey");
    assert_string_equal(dp_errcode_name(e.code), "AUTH_FAILED");
    assert_int_equal(dp_dec_error(p, h.len - 1, &e, &err), DP_E_MALFORMED);
    dp_buf_free(&b);
}

static void request_dispatch(void **state)
{
    (void)state;
    static struct dp_request req;
    struct dp_err err;
    struct dp_hdr h = {.version = 1, .type = DP_MSG_STATS, .len = 0};
    assert_int_equal(dp_dec_request(&h, NULL, 0, &req, &err), DP_E_OK);
    h.type = 0x09; /* reserved for RECORD */
    assert_int_equal(dp_dec_request(&h, NULL, 0, &req, &err), DP_E_UNKNOWN_TYPE);
    h.type = DP_MSG_STATS;
    h.flags = DP_FLAG_MORE;
    assert_int_equal(dp_dec_request(&h, NULL, 0, &req, &err), DP_E_MALFORMED);
    h.flags = 0;
    h.len = 1;
    uint8_t x = 0;
    assert_int_equal(dp_dec_request(&h, &x, 1, &req, &err), DP_E_MALFORMED);
}

static void request_length_limits(void **state)
{
    (void)state;
    assert_int_equal(dp_request_max_len(DP_MSG_GET_PAGES), 8 + 256 * 16);
    assert_int_equal(dp_request_max_len(DP_MSG_PUT_PAGES), 8 + 256 * (16 + 4096));
    assert_int_equal(dp_request_max_len(DP_MSG_STATS), 0);
    assert_int_equal(dp_request_max_len(DP_MSG_GET_HOTSET), DP_GET_HOTSET_REQ_LEN);
    assert_int_equal(dp_request_max_len(DP_MSG_MIGRATION), 4);
    assert_int_equal(dp_request_max_len(DP_MSG_LEASE), 80); /* version 4 (lib/proto_lease.h) */
    assert_int_equal(dp_request_max_len(0x0d), 0);
    assert_true(dp_request_type_known(DP_MSG_ACCESS_LOG));
    assert_true(dp_request_type_known(DP_MSG_PUT_TRACE));
    assert_true(dp_request_type_known(DP_MSG_GET_HOTSET));
    assert_true(dp_request_type_known(DP_MSG_MIGRATION));
    assert_true(dp_request_type_known(DP_MSG_LEASE));
    assert_false(dp_request_type_known(0x0d));
    assert_false(dp_request_type_known(DP_MSG_GET_PAGES | DP_MSG_REPLY));
    /* The largest valid PUT fits the limit exactly and the payload limit too. */
    static uint8_t pages[256 * 4096];
    struct dp_put_range r[256];
    for (int i = 0; i < 256; i++)
        r[i] = (struct dp_put_range){.pid = 1, .count = 1, .addr = (uint64_t)i * 4096, .data = pages + i * 4096};
    struct dp_buf b = {0};
    assert_int_equal(dp_enc_put_req(&b, 1, r, 256), 0);
    assert_int_equal(b.len - DP_HDR_SIZE, dp_request_max_len(DP_MSG_PUT_PAGES));
    assert_true(dp_request_max_len(DP_MSG_PUT_PAGES) <= DP_MAX_PAYLOAD);
    dp_buf_free(&b);
}

/* The example in docs/protocol.md section 8, byte for byte. */
static void doc_example_get_request(void **state)
{
    (void)state;
    static const uint8_t want[48] = {
        0x44, 0x50, 0x50, 0x53, 0x01, 0x04, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x18, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00};
    struct dp_buf b = {0};
    struct dp_get_range r = {.pid = 1, .count = 1, .addr = 0x100000000000ULL};
    assert_int_equal(dp_enc_get_req(&b, 3, &r, 1), 0);
    assert_int_equal(b.len, sizeof(want));
    assert_memory_equal(b.data, want, sizeof(want));
    dp_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(header_layout_is_little_endian),
        cmocka_unit_test(header_rejects_bad_fields),
        cmocka_unit_test(hello_and_auth_roundtrip),
        cmocka_unit_test(get_request_roundtrip_and_limits),
        cmocka_unit_test(get_reply_must_cover_request),
        cmocka_unit_test(put_roundtrip_and_limits),
        cmocka_unit_test(task_map_roundtrip_and_bounds),
        cmocka_unit_test(skeleton_chunk_names_are_safe),
        cmocka_unit_test(error_roundtrip_sanitises_text),
        cmocka_unit_test(request_dispatch),
        cmocka_unit_test(doc_example_get_request),
        cmocka_unit_test(request_length_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
