/* libFuzzer target for the client's receive path (lib/client.c): a real
 * dp_client connects over loopback to a server played by this harness, which
 * runs the real v3 handshake (lib/channel.h, fixed pre-shared key), then
 * answers the client's pipelined GET, PUT and STATS requests with the input:
 * a stream of plain server messages (24-byte header, payload), each sealed
 * before it is sent, with its id replaced by the id of one of the requests
 * (header id modulo their number), so mutations reach the reply handlers,
 * not only the unknown-id check. The client must complete or fail each
 * request and drop the connection on anything invalid, never crash; a GET
 * that completes with success must have received exactly what was asked. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "channel.h"
#include "client.h"
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t psk[32] = {7, 7, 7};
static int lfd = -1;
static struct sockaddr_in addr;

struct server_side {
    int fd;
    struct dp_chan chan;
    int ok;
};

/* Reads exactly n bytes (the handshake's messages), 0 or -1. */
static int read_full(int fd, uint8_t *p, size_t n)
{
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* The server's half of the handshake (what pageserver.c's handle_hello and
 * handle_auth do), on the accepted connection. */
static void handshake(struct server_side *s);

/* Accepts until one connection completes the handshake: the listen queue
 * may hold connections an earlier client opened while reconnecting and
 * closed since. */
static void *serve_handshake(void *arg)
{
    struct server_side *s = arg;
    for (int i = 0; i < 64 && !s->ok; i++) {
        if (s->fd >= 0)
            close(s->fd);
        s->fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (s->fd < 0)
            return NULL;
        handshake(s);
    }
    return NULL;
}

static void handshake(struct server_side *s)
{
    uint8_t msg[DP_HDR_SIZE + DP_HELLO_LEN];
    struct dp_hdr h;
    struct dp_err err;
    struct dp_hello hello;
    if (read_full(s->fd, msg, sizeof(msg)) < 0 || dp_hdr_decode(msg, DP_MAX_PREAUTH_PAYLOAD, &h, &err) != DP_E_OK ||
        dp_dec_hello(msg + DP_HDR_SIZE, DP_HELLO_LEN, &hello, &err) != DP_E_OK)
        return;
    uint8_t sk[32] = {11};
    struct dp_hello_reply hr = {.version = DP_PROTO_VERSION_MAX, .max_payload = DP_MAX_PAYLOAD,
                                .max_get_pages = DP_MAX_GET_PAGES, .max_put_pages = DP_MAX_PUT_PAGES,
                                .max_get_ranges = DP_MAX_GET_RANGES, .flags = hello.flags,
                                .cipher = dp_chan_pick_cipher(hello.ciphers)};
    crypto_scalarmult_base(hr.eph_pk, sk);
    memset(hr.cpid, 0x23, sizeof(hr.cpid));
    struct dp_buf b = {0};
    if (dp_enc_hello_reply(&b, h.id, &hr) < 0)
        return;
    uint8_t th[32], cmac[32], smac[32];
    dp_chan_transcript(msg + DP_HDR_SIZE, DP_HELLO_LEN, b.data + DP_HDR_SIZE, DP_HELLO_REPLY_LEN, th);
    if (dp_chan_derive(psk, sizeof(psk), sk, hello.eph_pk, th, hr.cipher, true, true, &s->chan, cmac, smac, &err) < 0 ||
        write(s->fd, b.data, b.len) != (ssize_t)b.len) {
        dp_buf_free(&b);
        return;
    }
    uint8_t auth[DP_HDR_SIZE + DP_AUTH_LEN];
    if (read_full(s->fd, auth, sizeof(auth)) < 0 || !dp_auth_mac_equal(auth + DP_HDR_SIZE, cmac)) {
        dp_buf_free(&b);
        return;
    }
    b.len = 0;
    struct dp_auth_reply ar;
    memcpy(ar.mac, smac, sizeof(ar.mac));
    if (dp_enc_auth_reply(&b, 0, &ar) < 0 || write(s->fd, b.data, b.len) != (ssize_t)b.len) {
        dp_buf_free(&b);
        return;
    }
    dp_buf_free(&b);
    s->ok = 1;
}

static void setup(void)
{
    if (lfd >= 0)
        return;
    if (sodium_init() < 0)
        abort();
    dp_log_set_level(DP_LOG_ERROR);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof(addr);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(lfd, 4) < 0 ||
        getsockname(lfd, (struct sockaddr *)&addr, &al) < 0)
        abort();
}

static int done_gets, done_puts;
static const struct dp_get_range want[2] = {{100, 2, 0x10000}, {101, 1, 0x7f0000}};

/* A GET that succeeds got every page it asked for, in order. */
static void get_cb(void *cookie, int status, const struct dp_seg *segs, uint32_t n, const char *errmsg)
{
    (void)cookie;
    (void)errmsg;
    done_gets++;
    if (status != 0)
        return;
    uint64_t pages = 0;
    for (uint32_t i = 0; i < n; i++)
        pages += segs[i].count;
    if (pages != want[0].count + want[1].count)
        abort();
}

static void put_cb(void *cookie, int status, const char *errmsg)
{
    (void)cookie;
    (void)status;
    (void)errmsg;
    done_puts++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    if (size > (256u << 10))
        return 0; /* the harness writes it all before the client reads: stay below the socket buffer */
    struct server_side s = {.fd = -1};
    pthread_t t;
    if (pthread_create(&t, NULL, serve_handshake, &s) != 0)
        abort();
    struct dp_client_opts o = {.addr = addr, .key = psk, .key_len = sizeof(psk), .connect_timeout_ms = 10000,
                               .backoff_min_ms = 1, .backoff_max_ms = 1, .give_up_ms = 1};
    struct dp_client *c = NULL;
    struct dp_err err;
    int rc = dp_client_connect(&o, &c, &err);
    pthread_join(t, NULL);
    if (rc < 0 || !s.ok)
        abort(); /* the harness's handshake must succeed */

    static uint8_t page[DP_PAGE_SIZE];
    struct dp_put_range pr = {100, 1, 0x10000, page};
    uint64_t ids[3];
    done_gets = done_puts = 0;
    ids[0] = dp_client_submit_get(c, want, 2, get_cb, NULL, &err);
    ids[1] = dp_client_submit_put(c, &pr, 1, put_cb, NULL, &err);
    ids[2] = ids[0];
    if (!ids[0] || !ids[1])
        abort();
    dp_client_process(c, &err); /* sends the requests */

    /* The replies: the input's messages, ids mapped onto the requests, sealed. */
    struct dp_buf wire = {0};
    size_t off = 0;
    while (size - off >= DP_HDR_SIZE) {
        uint8_t hdr[DP_HDR_SIZE];
        memcpy(hdr, data + off, DP_HDR_SIZE);
        uint32_t len = dp_get_u32(hdr + 16);
        if (len > size - off - DP_HDR_SIZE)
            len = (uint32_t)(size - off - DP_HDR_SIZE);
        dp_put_u32(hdr + 16, len);
        dp_put_u64(hdr + 8, ids[dp_get_u64(hdr + 8) % 3]);
        size_t at = wire.len;
        if (dp_buf_put(&wire, hdr, DP_HDR_SIZE) < 0 || dp_buf_put(&wire, data + off + DP_HDR_SIZE, len) < 0)
            abort();
        /* seal in place of the plain copy */
        struct dp_buf sealed = {0};
        if (dp_chan_append(&s.chan, &sealed, wire.data + at, DP_HDR_SIZE + len) < 0) {
            /* a header the channel refuses to seal (bad length field): send as is */
            dp_buf_free(&sealed);
        } else {
            wire.len = at;
            if (dp_buf_put(&wire, sealed.data, sealed.len) < 0)
                abort();
            dp_buf_free(&sealed);
        }
        off += DP_HDR_SIZE + len;
    }
    if (off < size && dp_buf_put(&wire, data + off, size - off) < 0)
        abort();
    size_t sent = 0;
    while (sent < wire.len) {
        ssize_t w = send(s.fd, wire.data + sent, wire.len - sent, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        sent += (size_t)w;
    }
    shutdown(s.fd, SHUT_WR);
    /* Let the client read all of it (bounded): it ends dropped or done. */
    for (int i = 0; i < 50 && dp_client_connected(c) && (done_gets < 1 || done_puts < 1); i++)
        dp_client_process(c, &err);
    dp_client_close(c);
    close(s.fd);
    dp_chan_free(&s.chan);
    dp_buf_free(&wire);
    return 0;
}
