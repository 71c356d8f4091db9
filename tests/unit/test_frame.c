/* Unit tests for lib/frame.c: cutting a connection's input into messages
 * (the page server's conn_process_input runs it; fuzz/fuzz_conn.c fuzzes it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "channel.h"
#include "frame.h"
#include "proto.h"

/* The server's header rules for an authenticated version-3 connection. */
static int ready_rules(const struct dp_hdr *h, void *arg, struct dp_err *err)
{
    (void)arg;
    return dp_frame_check_request(h, true, DP_PROTO_VERSION_MAX, err);
}

/* A GET request delivered a byte at a time comes out once, whole, and only
 * when its last byte arrived; the bytes consumed add up to the message. */
static void plain_message_byte_by_byte(void **state)
{
    (void)state;
    struct dp_buf b = {0};
    struct dp_get_range r = {.pid = 5, .count = 2, .addr = 0x10000};
    assert_int_equal(dp_enc_get_req(&b, 42, &r, 1), 0);
    struct dp_chan plain = {0};
    struct dp_frame_rx rx = {0};
    struct dp_frame f;
    struct dp_err err;
    size_t off = 0, msgs = 0;
    for (size_t have = 1; have <= b.len; have++) {
        enum dp_frame_verdict v = dp_frame_next(&rx, &plain, b.data + off, have - off, DP_MAX_PAYLOAD, ready_rules,
                                                NULL, &f, &err);
        off += f.used;
        if (v == DP_FRAME_MSG) {
            msgs++;
            assert_int_equal(have, b.len);
            assert_int_equal(f.hdr.id, 42);
            assert_int_equal(f.hdr.type, DP_MSG_GET_PAGES);
            assert_ptr_equal(f.payload, b.data + DP_HDR_SIZE);
        } else {
            assert_int_equal(v, DP_FRAME_MORE);
            assert_true(f.need > have - off);
        }
    }
    assert_int_equal(msgs, 1);
    assert_int_equal(off, b.len);
    dp_buf_free(&b);
}

/* The server's header rules: before authentication only HELLO and AUTH;
 * a too-long request is refused from its header, with its id. */
static void header_rules(void **state)
{
    (void)state;
    struct dp_err err;
    struct dp_hdr h = {.version = 1, .type = DP_MSG_GET_PAGES, .id = 7, .len = 24};
    assert_int_equal(dp_frame_check_request(&h, false, 3, &err), DP_E_UNAUTHENTICATED);
    assert_int_equal(dp_frame_check_request(&h, true, 3, &err), DP_E_OK);
    h.len = dp_request_max_len(DP_MSG_GET_PAGES) + 1;
    assert_int_equal(dp_frame_check_request(&h, true, 3, &err), DP_E_TOO_LARGE);
    h.type = 0x55;
    h.len = 0;
    assert_int_equal(dp_frame_check_request(&h, true, 3, &err), DP_E_UNKNOWN_TYPE);
    h.type = DP_MSG_GET_HOTSET;
    h.len = 4;
    assert_int_equal(dp_frame_check_request(&h, true, 1, &err), DP_E_UNKNOWN_TYPE);

    uint8_t hdr[DP_HDR_SIZE];
    h = (struct dp_hdr){.version = 1, .type = DP_MSG_STATS, .id = 99, .len = 0};
    dp_hdr_encode(hdr, &h);
    struct dp_chan plain = {0};
    struct dp_frame_rx rx = {0};
    struct dp_frame f;
    /* no rules: any valid header is a message */
    assert_int_equal(dp_frame_next(&rx, &plain, hdr, sizeof(hdr), DP_MAX_PREAUTH_PAYLOAD, NULL, NULL, &f, &err),
                     DP_FRAME_MSG);
    rx = (struct dp_frame_rx){0};
    /* the server's rules: a GET of 1 MiB is refused from its header, answered to id 99 */
    h.type = DP_MSG_GET_PAGES;
    h.len = 1u << 20;
    dp_hdr_encode(hdr, &h);
    assert_int_equal(dp_frame_next(&rx, &plain, hdr, sizeof(hdr), DP_MAX_PAYLOAD, ready_rules, NULL, &f, &err),
                     DP_FRAME_REFUSE);
    assert_int_equal(f.code, DP_E_TOO_LARGE);
    assert_int_equal(f.id, 99);
    assert_int_equal(f.used, 0);
}

/* Sealed records: a whole session opens in order; one flipped bit in a
 * payload record makes that message FORGED and none of it is returned. */
static void sealed_records(void **state)
{
    (void)state;
    uint8_t psk[32] = {1}, csk[32] = {2}, ssk[32] = {3}, cpk[32], spk[32], th[32] = {4}, m1[32], m2[32];
    struct dp_chan cli, srv;
    struct dp_err err;
    assert_true(sodium_init() >= 0);
    crypto_scalarmult_base(cpk, csk);
    crypto_scalarmult_base(spk, ssk);
    assert_int_equal(dp_chan_derive(psk, 32, csk, spk, th, DP_CIPHER_CHACHA20POLY1305, false, true, &cli, m1, m2,
                                    &err), 0);
    assert_int_equal(dp_chan_derive(psk, 32, ssk, cpk, th, DP_CIPHER_CHACHA20POLY1305, true, true, &srv, m1, m2,
                                    &err), 0);
    struct dp_buf plain = {0}, wire = {0};
    struct dp_get_range r = {.pid = 5, .count = 1, .addr = 0x10000};
    assert_int_equal(dp_enc_get_req(&plain, 1, &r, 1), 0);
    assert_int_equal(dp_chan_append(&cli, &wire, plain.data, plain.len), 0);
    assert_int_equal(dp_chan_append(&cli, &wire, plain.data, plain.len), 0);
    size_t one = wire.len / 2;
    wire.data[one + DP_CHAN_HDR_REC + 3] ^= 0x10; /* the second message's payload record */
    struct dp_frame_rx rx = {0};
    struct dp_frame f;
    assert_int_equal(dp_frame_next(&rx, &srv, wire.data, wire.len, DP_MAX_PAYLOAD, ready_rules, NULL, &f, &err),
                     DP_FRAME_MSG);
    assert_int_equal(f.used, one);
    assert_memory_equal(f.payload, plain.data + DP_HDR_SIZE, plain.len - DP_HDR_SIZE);
    assert_int_equal(dp_frame_next(&rx, &srv, wire.data + one, wire.len - one, DP_MAX_PAYLOAD, ready_rules, NULL,
                                   &f, &err),
                     DP_FRAME_FORGED);
    dp_buf_free(&plain);
    dp_buf_free(&wire);
    dp_chan_free(&cli);
    dp_chan_free(&srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain_message_byte_by_byte),
        cmocka_unit_test(header_rules),
        cmocka_unit_test(sealed_records),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
