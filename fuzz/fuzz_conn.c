/* libFuzzer target for the page server's per-connection input handling
 * without sockets: the byte stream a client sends, delivered in pieces of
 * fuzzed sizes into a growing input buffer, cut into messages by
 * dp_frame_next with the server's header rules (dp_frame_check_request), as
 * pageserver.c's conn_process_input does, and each message decoded by the
 * request decoder dispatch() runs. The connection's state moves as the
 * server's does: HELLO, then AUTH, then requests; the first byte picks
 * whether the records after the handshake are sealed (the v3 channel, fixed
 * keys; the stream's later messages are then sealed by the client side
 * before delivery) or plain (--insecure-plaintext), and the negotiated
 * version. Checks: a refused or forged input ends the connection, a message
 * is never larger than the limit, the buffer never grows past the limit. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "channel.h"
#include "frame.h"
#include "proto.h"
#include "proto_hotset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { ST_HELLO, ST_AUTH, ST_READY };

/* The connection as the server keeps it (pageserver.c's struct conn, input side). */
struct conn {
    int state;
    uint16_t version;
    struct dp_chan chan;
    struct dp_frame_rx rx;
    uint8_t *in;
    size_t in_len, in_off, in_cap;
    bool closing;
};

static struct dp_chan client_keys, server_keys;

/* Both ends of one handshake with fixed keys. */
static void setup(void)
{
    static bool done;
    if (done)
        return;
    uint8_t psk[32] = {7}, csk[32] = {9}, ssk[32] = {11}, cpk[32], spk[32], th[32] = {1}, m1[32], m2[32];
    struct dp_err err;
    if (sodium_init() < 0)
        abort();
    crypto_scalarmult_base(cpk, csk);
    crypto_scalarmult_base(spk, ssk);
    if (dp_chan_derive(psk, 32, csk, spk, th, DP_CIPHER_CHACHA20POLY1305, false, true, &client_keys, m1, m2, &err) < 0 ||
        dp_chan_derive(psk, 32, ssk, cpk, th, DP_CIPHER_CHACHA20POLY1305, true, true, &server_keys, m1, m2, &err) < 0)
        abort();
    done = true;
}

static int check_header(const struct dp_hdr *h, void *arg, struct dp_err *err)
{
    const struct conn *c = arg;
    return dp_frame_check_request(h, c->state == ST_READY, c->version, err);
}

/* dispatch()'s decoding and state moves for one message. */
static void dispatch(struct conn *c, const struct dp_hdr *h, const uint8_t *p, bool sealed)
{
    static struct dp_request req;
    struct dp_err err;
    if (h->type == DP_MSG_PUT_TRACE || h->type == DP_MSG_GET_HOTSET) {
        uint32_t which;
        if (h->type == DP_MSG_GET_HOTSET && dp_dec_get_hotset_req(p, h->len, &which, &err) == DP_E_MALFORMED)
            c->closing = true;
        return;
    }
    if (dp_dec_request(h, p, h->len, &req, &err) != DP_E_OK) {
        c->closing = true;
        return;
    }
    if (h->type == DP_MSG_HELLO) {
        if (c->state != ST_HELLO) {
            c->closing = true;
            return;
        }
        c->state = ST_AUTH;
    } else if (h->type == DP_MSG_AUTH) {
        if (c->state != ST_AUTH) {
            c->closing = true;
            return;
        }
        c->state = ST_READY;
        if (sealed) {
            /* handle_auth keys the connection: later records are sealed */
            c->chan = server_keys;
            c->chan.rx.counter = 0;
        }
    }
}

/* conn_process_input on what has arrived. */
static void process(struct conn *c, bool sealed)
{
    while (!c->closing) {
        struct dp_frame f;
        struct dp_err err;
        uint32_t max = c->state == ST_READY ? DP_MAX_PAYLOAD : DP_MAX_PREAUTH_PAYLOAD;
        enum dp_frame_verdict v = dp_frame_next(&c->rx, &c->chan, c->in + c->in_off, c->in_len - c->in_off, max,
                                                check_header, c, &f, &err);
        if (f.used > c->in_len - c->in_off)
            abort();
        c->in_off += f.used;
        if (v == DP_FRAME_FORGED || v == DP_FRAME_REFUSE) {
            c->closing = true;
            break;
        }
        if (v == DP_FRAME_MORE) {
            if (f.need > DP_CHAN_HDR_REC + DP_MAX_PAYLOAD + DP_CHAN_TAG)
                abort(); /* the header limit bounds what the server buffers */
            size_t avail = c->in_len - c->in_off;
            memmove(c->in, c->in + c->in_off, avail);
            c->in_len = avail;
            c->in_off = 0;
            if (f.need > c->in_cap) {
                uint8_t *n = realloc(c->in, f.need);
                if (!n)
                    abort();
                c->in = n;
                c->in_cap = f.need;
            }
            break;
        }
        if (f.hdr.len > max || f.payload < c->in || f.payload + f.hdr.len > c->in + c->in_len)
            abort();
        dispatch(c, &f.hdr, f.payload, sealed);
    }
}

/* Appends bytes that arrived. */
static void arrive(struct conn *c, const uint8_t *p, size_t n)
{
    if (c->in_len + n > c->in_cap) {
        size_t cap = c->in_len + n;
        uint8_t *m = realloc(c->in, cap);
        if (!m)
            abort();
        c->in = m;
        c->in_cap = cap;
    }
    memcpy(c->in + c->in_len, p, n);
    c->in_len += n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    if (size < 2)
        return 0;
    bool sealed = data[0] & 1;
    struct conn c = {.state = ST_HELLO, .version = (data[0] & 2) ? DP_PROTO_VERSION_MAX : DP_PROTO_VERSION_HOTSET};
    uint8_t piece = (uint8_t)(data[1] | 1); /* bytes per delivery */
    const uint8_t *p = data + 2;
    size_t len = size - 2;

    /* The client's view: the plain stream, sealed message by message once
     * the AUTH went out (a sealed session); what does not parse as a
     * message is delivered as it is, as a forger's bytes would be. */
    struct dp_buf wire = {0};
    struct dp_chan tx = client_keys;
    tx.tx.counter = 0;
    bool keyed = false;
    size_t off = 0;
    while (off < len) {
        struct dp_hdr h;
        struct dp_err err;
        if (len - off < DP_HDR_SIZE || dp_hdr_decode(p + off, DP_MAX_PAYLOAD, &h, &err) != DP_E_OK ||
            h.len > len - off - DP_HDR_SIZE) {
            if (dp_buf_put(&wire, p + off, len - off) < 0)
                abort();
            break;
        }
        size_t n = DP_HDR_SIZE + h.len;
        struct dp_chan plain = {0};
        if (dp_chan_append(sealed && keyed ? &tx : &plain, &wire, p + off, n) < 0)
            abort();
        if (h.type == DP_MSG_AUTH)
            keyed = true;
        off += n;
    }

    for (size_t o = 0; o < wire.len && !c.closing; o += piece) {
        size_t n = wire.len - o < piece ? wire.len - o : piece;
        arrive(&c, wire.data + o, n);
        process(&c, sealed);
    }
    free(c.in);
    dp_buf_free(&wire);
    return 0;
}
