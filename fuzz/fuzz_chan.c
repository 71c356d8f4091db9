/* libFuzzer target for the version-3 secure channel (lib/channel.h) with
 * fixed keys on both ends. The first input byte picks the mode:
 *  - even: the rest is a stream of plain messages (24-byte header, payload)
 *    the client seals; the server side opens each record, decodes the header
 *    and the request as pageserver.c does, so the fuzzer reaches the
 *    decrypted payload decoding. One byte of the sealed stream, chosen by the
 *    input, is flipped on a second pass: that record must never open.
 *  - odd: the rest is what a forger without the key put on the wire: as
 *    header records and payload records it must never open.
 * The plain decoders alone: fuzz/fuzz_proto.c. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "channel.h"
#include "proto.h"
#include "proto_hotset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct dp_chan client, server;

/* Both ends of one handshake with fixed keys (the handshake's own code). */
static void setup(void)
{
    static bool done;
    if (done)
        return;
    uint8_t psk[32] = {7}, csk[32] = {9}, ssk[32] = {11}, cpk[32], spk[32], th[32] = {1};
    uint8_t cm[32], sm[32], cm2[32], sm2[32];
    struct dp_err err;
    if (sodium_init() < 0)
        abort();
    crypto_scalarmult_base(cpk, csk);
    crypto_scalarmult_base(spk, ssk);
    uint32_t cipher = dp_chan_pick_cipher(dp_chan_ciphers_local());
    if (dp_chan_derive(psk, 32, csk, spk, th, cipher, false, true, &client, cm, sm, &err) < 0 ||
        dp_chan_derive(psk, 32, ssk, cpk, th, cipher, true, true, &server, cm2, sm2, &err) < 0 ||
        memcmp(cm, cm2, 32) != 0 || memcmp(sm, sm2, 32) != 0)
        abort();
    done = true;
}

/* The server's receive path on sealed bytes: header record, limits from the
 * header alone, payload record, request decoder. Returns the number of
 * messages opened; stops at the first record that does not open. */
static size_t receive(uint8_t *w, size_t n)
{
    static struct dp_request req;
    size_t off = 0, opened = 0;
    server.rx.counter = 0;
    while (n - off >= DP_CHAN_HDR_REC) {
        if (dp_chan_open_hdr(&server, w + off) < 0)
            break;
        struct dp_hdr h;
        struct dp_err err;
        if (dp_hdr_decode(w + off, DP_MAX_PAYLOAD, &h, &err) != DP_E_OK)
            abort(); /* the sender sealed only headers that decode */
        off += DP_CHAN_HDR_REC;
        if (h.len) {
            if (n - off < (size_t)h.len + DP_CHAN_TAG || dp_chan_open_payload(&server, w + off, h.len) < 0)
                break;
        }
        opened++;
        if (dp_request_type_known(h.type) && h.len <= dp_request_max_len(h.type)) {
            if (dp_hotset_request_max_len(h.type)) {
                uint32_t which;
                (void)dp_dec_get_hotset_req(w + off, h.len, &which, &err);
            } else {
                (void)dp_dec_request(&h, w + off, h.len, &req, &err);
            }
        }
        off += h.len ? (size_t)h.len + DP_CHAN_TAG : 0;
    }
    return opened;
}

/* Seals each plain message of the input that has a valid header, opens it
 * again, then flips one byte and checks that record fails. */
static void roundtrip(const uint8_t *p, size_t len, uint32_t flip)
{
    struct dp_buf wire = {0};
    size_t off = 0, sealed = 0;
    client.tx.counter = 0;
    while (len - off >= DP_HDR_SIZE && sealed < 64) {
        struct dp_hdr h;
        struct dp_err err;
        if (dp_hdr_decode(p + off, DP_MAX_PAYLOAD, &h, &err) != DP_E_OK || h.len > len - off - DP_HDR_SIZE)
            break;
        if (dp_chan_append(&client, &wire, p + off, DP_HDR_SIZE + h.len) < 0)
            abort();
        off += DP_HDR_SIZE + h.len;
        sealed++;
    }
    if (receive(wire.data, wire.len) != sealed)
        abort(); /* every sealed record opens, in order */
    if (wire.len) {
        /* Reseal (the records above were opened in place) and damage one byte. */
        wire.len = 0;
        client.tx.counter = 0;
        for (size_t o = 0, i = 0; i < sealed; i++) {
            uint32_t l = dp_get_u32(p + o + 16);
            if (dp_chan_append(&client, &wire, p + o, DP_HDR_SIZE + l) < 0)
                abort();
            o += DP_HDR_SIZE + l;
        }
        size_t at = flip % wire.len;
        wire.data[at] ^= (uint8_t)(1u << (flip >> 24 & 7));
        /* The records before the damaged one open; that one and later do not. */
        size_t before = 0, rec = 0;
        for (size_t o = 0; o < wire.len; rec++) {
            /* record boundaries from the plain lengths */
            size_t i = 0, po = 0;
            for (; i < rec; i++)
                po += DP_HDR_SIZE + dp_get_u32(p + po + 16);
            uint32_t l = dp_get_u32(p + po + 16);
            size_t end = o + dp_chan_sealed_len(l);
            if (at < end)
                break;
            before++;
            o = end;
        }
        if (receive(wire.data, wire.len) != before)
            abort();
    }
    dp_buf_free(&wire);
}

/* Bytes from a forger: no header or payload record may open. */
static void forged(const uint8_t *p, size_t len)
{
    static uint8_t rec[DP_CHAN_HDR_REC + 65536];
    size_t n = len < sizeof(rec) ? len : sizeof(rec);
    memcpy(rec, p, n);
    if (n >= DP_CHAN_HDR_REC) {
        server.rx.counter = 0;
        if (dp_chan_open_hdr(&server, rec) == 0)
            abort();
    }
    memcpy(rec, p, n);
    server.rx.counter = 0;
    if (n > DP_CHAN_TAG && dp_chan_open_payload(&server, rec, (uint32_t)(n - DP_CHAN_TAG)) == 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    if (size < 5)
        return 0;
    uint32_t flip = dp_get_u32(data + 1);
    if (data[0] & 1)
        forged(data + 1, size - 1);
    else
        roundtrip(data + 5, size - 5, flip);
    return 0;
}
