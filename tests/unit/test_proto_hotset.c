/* Unit tests of the protocol-version-2 messages (lib/proto_hotset.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "proto_hotset.h"

static void get_hotset_request(void **state)
{
    (void)state;
    struct dp_buf b = {0};
    struct dp_err err;
    struct dp_hdr h;
    assert_int_equal(dp_enc_get_hotset_req(&b, 77, DP_HOTSET_MERGED), 0);
    assert_int_equal(b.len, DP_HDR_SIZE + DP_GET_HOTSET_REQ_LEN);
    assert_int_equal(dp_hdr_decode(b.data, DP_MAX_PAYLOAD, &h, &err), DP_E_OK);
    assert_int_equal(h.type, DP_MSG_GET_HOTSET);
    assert_int_equal(h.id, 77);
    uint32_t which;
    const uint8_t *p = b.data + DP_HDR_SIZE;
    assert_int_equal(dp_dec_get_hotset_req(p, 8, &which, &err), DP_E_OK);
    assert_int_equal(which, DP_HOTSET_MERGED);
    assert_int_equal(dp_dec_get_hotset_req(p, 7, &which, &err), DP_E_MALFORMED);
    assert_int_equal(dp_dec_get_hotset_req(p, 9, &which, &err), DP_E_MALFORMED);
    uint8_t bad[8] = {4};
    assert_int_equal(dp_dec_get_hotset_req(bad, 8, &which, &err), DP_E_MALFORMED);
    uint8_t res[8] = {0, 0, 0, 0, 1};
    assert_int_equal(dp_dec_get_hotset_req(res, 8, &which, &err), DP_E_MALFORMED);
    dp_buf_free(&b);
}

static void put_trace_reply(void **state)
{
    (void)state;
    struct dp_buf b = {0};
    struct dp_err err;
    assert_int_equal(dp_enc_put_trace_reply(&b, 5, 1ull << 33, 12345), 0);
    uint64_t pages;
    uint32_t runs;
    const uint8_t *p = b.data + DP_HDR_SIZE;
    assert_int_equal(b.data[5], DP_MSG_PUT_TRACE | DP_MSG_REPLY);
    assert_int_equal(dp_dec_put_trace_reply(p, 16, &pages, &runs, &err), DP_E_OK);
    assert_int_equal(pages, 1ull << 33);
    assert_int_equal(runs, 12345);
    assert_int_equal(dp_dec_put_trace_reply(p, 15, &pages, &runs, &err), DP_E_MALFORMED);
    b.data[DP_HDR_SIZE + 12] = 1;
    assert_int_equal(dp_dec_put_trace_reply(p, 16, &pages, &runs, &err), DP_E_MALFORMED);
    dp_buf_free(&b);
}

static void names(void **state)
{
    (void)state;
    uint32_t w;
    assert_int_equal(dp_hotset_which_parse("auto", &w), 0);
    assert_int_equal(w, DP_HOTSET_AUTO);
    assert_int_equal(dp_hotset_which_parse("trace", &w), 0);
    assert_int_equal(w, DP_HOTSET_TRACE);
    assert_int_equal(dp_hotset_which_parse("Trace", &w), -1);
    assert_string_equal(dp_hotset_which_name(9), "unknown");
    assert_string_equal(dp_errcode_name(DP_E_WRONG_CHECKPOINT), "WRONG_CHECKPOINT");
    assert_string_equal(dp_errcode_name(DP_E_NO_HOTSET), "NO_HOTSET");
    assert_true(DP_PROTO_VERSION_MAX >= DP_PROTO_VERSION_HOTSET);
    assert_int_equal(dp_hotset_request_max_len(DP_MSG_PUT_TRACE), DP_MAX_PAYLOAD);
    assert_int_equal(dp_hotset_request_max_len(DP_MSG_GET_HOTSET), DP_GET_HOTSET_REQ_LEN);
    assert_int_equal(dp_hotset_request_max_len(DP_MSG_GET_PAGES), 0);
    /* the header gate knows them whatever the version; the server then
     * refuses them on a version-1 connection */
    assert_true(dp_request_type_known(DP_MSG_PUT_TRACE));
    assert_int_equal(dp_request_max_len(DP_MSG_PUT_TRACE), dp_hotset_request_max_len(DP_MSG_PUT_TRACE));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(get_hotset_request),
        cmocka_unit_test(put_trace_reply),
        cmocka_unit_test(names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
