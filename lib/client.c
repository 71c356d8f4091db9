/* client: connection state machine, pipelined requests, reconnect with
 * backoff and resubmission (see client.h). */
#include "client.h"
#include "channel.h"
#include "cpid.h"
#include "netbound.h"
#include "frame.h"
#include "hotset.h"
#include "proto_hotset.h"
#include "proto_lease.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

enum cstate { CS_IDLE, CS_CONNECTING, CS_HELLO, CS_AUTH, CS_READY, CS_FAILED };

struct req;
/* Called for every reply message with this request's id. Returns true when
 * the request is complete. status: 0, or an error (then h/p are NULL). */
typedef bool (*reply_fn)(struct dp_client *c, struct req *r, int status, const struct dp_hdr *h, const uint8_t *p,
                         const char *errmsg);

struct req {
    struct req *next;
    uint64_t id;
    uint8_t type;
    uint8_t *wire;
    size_t wire_len;
    bool sent;
    reply_fn on_reply;
    /* GET */
    struct dp_get_range *ranges;
    uint32_t nr_ranges;
    dp_get_cb get_cb;
    dp_put_cb put_cb;
    uint32_t put_pages;   /* PUT: pages sent, which the reply must acknowledge */
    void *cookie;
    /* blocking helpers */
    bool done;
    int status;
    char errmsg[DP_MAX_ERROR_MSG + 1];
    struct dp_buf accum;           /* multi-message replies */
    void *ctx;
    void (*on_restart)(struct req *r); /* resubmitted after a reconnect */
};

struct dp_client {
    struct dp_client_opts o;
    uint8_t key[DP_KEY_MAX];
    int fd;
    enum cstate state;
    uint64_t next_id;
    struct req *reqs, *reqs_tail;  /* in flight, submission order */
    uint32_t nr_reqs;
    struct dp_buf out;
    size_t out_off;
    uint8_t *in;
    size_t in_off, in_len, in_cap;
    struct dp_hello_reply hello;
    struct dp_chan chan;                  /* keys of the current connection */
    uint8_t eph_sk[32];                   /* our ephemeral secret, until the HELLO reply */
    uint8_t hello_payload[DP_HELLO_LEN];  /* what we sent, for the transcript */
    uint8_t want_smac[DP_MAC_SIZE];
    struct dp_frame_rx rx;                /* an opened header whose payload is still arriving */
    bool cpid_known;                      /* pinned: from opts, or the first connection */
    uint8_t cpid[DP_CPID_BYTES];
    uint64_t next_attempt_ns, deadline_ns, down_since_ns;
    uint64_t progress_ns;                 /* last reply byte, or the first request sent after a quiet spell */
    uint64_t auth_refused_since_ns;       /* reconnects refused (AUTH) since then; 0: not refused */
    int backoff_ms;
    bool ever_connected;
    char last_error[1200];
    uint64_t lease_epoch;                 /* the write lease we hold (0: none); resumed on every reconnect */
    char lease_holder[DP_LEASE_HOLDER_MAX + 1];
    bool fenced;                          /* the server says our epoch is stale: failed for good */
    struct dp_seg segs[DP_MAX_GET_PAGES];
};

static void lease_queue_resume(struct dp_client *c);
static void client_fence(struct dp_client *c, const char *why);

static uint64_t ms_to_ns(int ms) { return (uint64_t)ms * 1000000ULL; }

static char *addr_str(const struct dp_client *c, char *buf, size_t len)
{
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &c->o.addr.sin_addr, ip, sizeof(ip));
    snprintf(buf, len, "%s:%u", ip, ntohs(c->o.addr.sin_port));
    return buf;
}

static void set_last_error(struct dp_client *c, const char *why)
{
    snprintf(c->last_error, sizeof(c->last_error), "%s", why);
}

static void req_free(struct req *r)
{
    free(r->wire);
    free(r->ranges);
    dp_buf_free(&r->accum);
    free(r);
}

static void req_unlink(struct dp_client *c, struct req *r)
{
    struct req **pp = &c->reqs, *prev = NULL;
    while (*pp && *pp != r) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp)
        return;
    *pp = r->next;
    if (c->reqs_tail == r)
        c->reqs_tail = prev;
    c->nr_reqs--;
}

/* Completes a request with an error (no reply will come). */
static void req_fail(struct dp_client *c, struct req *r, int status, const char *msg)
{
    req_unlink(c, r);
    r->on_reply(c, r, status, NULL, NULL, msg);
    req_free(r);
}

static void drop_connection(struct dp_client *c, const char *why)
{
    char a[64];
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    bool was_ready = c->state == CS_READY;
    snprintf(c->last_error, sizeof(c->last_error), "%s", why);
    c->out.len = 0;
    c->out_off = 0;
    c->in_len = c->in_off = 0;
    c->rx.have_hdr = false;
    dp_chan_free(&c->chan); /* a new connection gets new keys */
    sodium_memzero(c->eph_sk, sizeof(c->eph_sk));
    if (c->state == CS_FAILED)
        return;
    uint64_t now = dp_now_ns();
    if (was_ready || !c->down_since_ns)
        c->down_since_ns = now;
    c->state = CS_IDLE;
    c->next_attempt_ns = now + ms_to_ns(c->backoff_ms);
    if (c->ever_connected) /* an idle connection closed (server --idle-timeout) is no cause for alarm */
        dp_log(c->nr_reqs ? DP_LOG_WARN : DP_LOG_INFO,
               "connection to page server %s lost: %s; %u requests in flight, retrying in %d ms",
               addr_str(c, a, sizeof(a)), why, c->nr_reqs, c->backoff_ms);
    c->backoff_ms = c->backoff_ms * 2 > c->o.backoff_max_ms ? c->o.backoff_max_ms : c->backoff_ms * 2;
    /* Everything goes again after the reconnect; partial multi-part replies restart. */
    for (struct req *r = c->reqs; r; r = r->next) {
        r->sent = false;
        r->accum.len = 0;
        if (r->on_restart)
            r->on_restart(r);
    }
}

static void fail_all(struct dp_client *c, int status, const char *msg)
{
    while (c->reqs)
        req_fail(c, c->reqs, status, msg);
}

static void set_failed(struct dp_client *c, const char *why)
{
    drop_connection(c, why);
    c->state = CS_FAILED;
    snprintf(c->last_error, sizeof(c->last_error), "%s", why);
    fail_all(c, -ECONNREFUSED, why);
}

static int start_connect(struct dp_client *c)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        drop_connection(c, strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    dp_netbound_socket(c->fd, dp_netbound_get()->user_timeout_ms);
    c->deadline_ns = dp_now_ns() + ms_to_ns(c->o.connect_timeout_ms);
    if (connect(c->fd, (const struct sockaddr *)&c->o.addr, sizeof(c->o.addr)) < 0 && errno != EINPROGRESS) {
        char why[128];
        snprintf(why, sizeof(why), "connect: %s", strerror(errno));
        drop_connection(c, why);
        return -1;
    }
    c->state = CS_CONNECTING;
    return 0;
}

/* Set once by a command's --insecure-plaintext, before any client exists
 * (restore's forked daemon and trace uploader inherit it). */
static bool plaintext_default;

/* See client.h. */
void dp_client_set_insecure_plaintext(bool on) { plaintext_default = on; }

/* HELLO: our version range, mode, ciphers and a fresh ephemeral key. */
static void send_hello(struct dp_client *c)
{
    struct dp_hello h = {.min_version = DP_PROTO_VERSION_MIN, .max_version = DP_PROTO_VERSION_MAX,
                         .flags = (c->o.insecure_plaintext ? DP_HELLO_FLAG_PLAINTEXT : 0) |
                                  (c->o.bulk ? DP_HELLO_FLAG_BULK : 0),
                         .ciphers = dp_chan_ciphers_local()};
    randombytes_buf(c->eph_sk, sizeof(c->eph_sk));
    crypto_scalarmult_base(h.eph_pk, c->eph_sk);
    randombytes_buf(h.nonce, sizeof(h.nonce));
    c->out.len = 0;
    c->out_off = 0;
    if (dp_enc_hello(&c->out, 0, &h) < 0) {
        drop_connection(c, "out of memory");
        return;
    }
    memcpy(c->hello_payload, c->out.data + DP_HDR_SIZE, DP_HELLO_LEN);
    c->state = CS_HELLO;
}

/* Queues one plain message for the wire, sealed when the channel is. */
static int queue_msg(struct dp_client *c, const uint8_t *msg, size_t len)
{
    return dp_chan_append(&c->chan, &c->out, msg, len);
}

static void queue_unsent(struct dp_client *c)
{
    for (struct req *r = c->reqs; r; r = r->next) {
        if (r->sent)
            continue;
        if (queue_msg(c, r->wire, r->wire_len) < 0) {
            drop_connection(c, "out of memory");
            return;
        }
        r->sent = true;
    }
}

/* HELLO reply: checks the server's choices and its checkpoint against what
 * we asked for and know, derives the keys and sends our proof. */
static void on_hello_reply(struct dp_client *c, const struct dp_hdr *h, const uint8_t *p)
{
    struct dp_err err = {{0}};
    int rc = dp_dec_hello_reply(p, h->len, &c->hello, &err);
    if (rc != DP_E_OK) {
        if (rc == DP_E_VERSION)
            set_failed(c, err.msg);
        else
            drop_connection(c, err.msg);
        return;
    }
    if (c->hello.flags != dp_get_u32(c->hello_payload + 4)) {
        drop_connection(c, "the server's HELLO reply does not echo our mode flags");
        return;
    }
    if (c->cpid_known && sodium_memcmp(c->cpid, c->hello.cpid, DP_CPID_BYTES) != 0) {
        char want[DP_CPID_HEX], got[DP_CPID_HEX], why[300];
        dp_cpid_hex(c->cpid, want);
        dp_cpid_hex(c->hello.cpid, got);
        snprintf(why, sizeof(why), "the page server serves checkpoint %.16s, not %.16s (this client's): pages of "
                 "another checkpoint must not mix in; restart the restore against the right server", got, want);
        set_failed(c, why);
        return;
    }
    uint8_t th[32], cmac[DP_MAC_SIZE];
    dp_chan_transcript(c->hello_payload, DP_HELLO_LEN, p, h->len, th);
    rc = dp_chan_derive(c->key, c->o.key_len, c->eph_sk, c->hello.eph_pk, th, c->hello.cipher, false, false,
                        &c->chan, cmac, c->want_smac, &err);
    sodium_memzero(c->eph_sk, sizeof(c->eph_sk));
    if (rc < 0) {
        drop_connection(c, err.msg);
        return;
    }
    struct dp_auth au;
    memcpy(au.mac, cmac, DP_MAC_SIZE);
    if (dp_enc_auth(&c->out, 0, &au) < 0) {
        drop_connection(c, "out of memory");
        return;
    }
    c->state = CS_AUTH;
}

/* A refusal of our key (or of our version or mode) on a reconnect, by a
 * server that accepted us before. It comes before the keys exist, so anyone
 * on the path can forge it: retried like a dropped connection, but believed
 * once every reconnect for --auth-retry has been refused. */
static void refused_on_reconnect(struct dp_client *c, const char *why)
{
    uint64_t now = dp_now_ns();
    int bound = dp_netbound_get()->auth_retry_ms;
    if (!c->auth_refused_since_ns)
        c->auth_refused_since_ns = now;
    if (dp_netbound_expired(c->auth_refused_since_ns, now, bound)) {
        char msg[sizeof(c->last_error)];
        snprintf(msg, sizeof(msg), "every reconnect for %d ms was refused (%.900s): the page server's key or "
                 "version changed, or someone on the path forges the refusal; check the server and restore "
                 "again with the right --key (--auth-retry sets this bound)", bound, why);
        set_failed(c, msg);
        return;
    }
    drop_connection(c, why);
}

static void on_handshake(struct dp_client *c, const struct dp_hdr *h, const uint8_t *p)
{
    struct dp_err err = {{0}};
    char a[64];
    if (h->type == DP_MSG_ERROR) {
        struct dp_error_msg e;
        if (dp_dec_error(p, h->len, &e, &err) != DP_E_OK) {
            drop_connection(c, err.msg);
            return;
        }
        char why[DP_MAX_ERROR_MSG + 64];
        snprintf(why, sizeof(why), "server refused the handshake: %s: %s", dp_errcode_name(e.code), e.msg);
        /* Before the keys exist an ERROR is unauthenticated: anyone on the
         * path can send one. On the first connection it most likely tells
         * the truth (wrong key, version, mode) and retrying cannot help; once
         * this server has accepted us, it is a forgery or a passing state,
         * and the client retries as for a dropped connection. */
        bool refusal = e.code == DP_E_AUTH_FAILED || e.code == DP_E_VERSION || e.code == DP_E_PLAINTEXT_MISMATCH;
        if (!c->ever_connected && refusal)
            set_failed(c, why);
        else if (refusal)
            refused_on_reconnect(c, why);
        else
            drop_connection(c, why);
        return;
    }
    if (c->state == CS_HELLO && h->type == (DP_MSG_HELLO | DP_MSG_REPLY)) {
        on_hello_reply(c, h, p);
        return;
    }
    if (c->state == CS_AUTH && h->type == (DP_MSG_AUTH | DP_MSG_REPLY)) {
        struct dp_auth_reply ar;
        if (dp_dec_auth_reply(p, h->len, &ar, &err) != DP_E_OK) {
            drop_connection(c, err.msg);
            return;
        }
        if (!dp_auth_mac_equal(c->want_smac, ar.mac)) {
            const char *why = "the server could not prove it knows the key (wrong key on the server, not our "
                              "server, or the handshake was altered on the path)";
            if (c->ever_connected)
                refused_on_reconnect(c, why); /* it did before: an attacker, retry (bounded) */
            else
                set_failed(c, why);
            return;
        }
        c->chan.secure = !c->o.insecure_plaintext;
        memcpy(c->cpid, c->hello.cpid, DP_CPID_BYTES);
        c->cpid_known = true;
        c->state = CS_READY;
        c->backoff_ms = c->o.backoff_min_ms;
        c->down_since_ns = 0;
        c->auth_refused_since_ns = 0;
        c->progress_ns = dp_now_ns();
        if (c->ever_connected)
            dp_info("reconnected to page server %s; resubmitting %u requests", addr_str(c, a, sizeof(a)), c->nr_reqs);
        if (c->ever_connected && c->lease_epoch)
            lease_queue_resume(c); /* first on the new connection: our writes are ours only while it holds */
        c->ever_connected = true;
        queue_unsent(c);
        return;
    }
    drop_connection(c, "unexpected message during the handshake");
}

static void on_message(struct dp_client *c, const struct dp_hdr *h, const uint8_t *p)
{
    if (c->state != CS_READY) {
        on_handshake(c, h, p);
        return;
    }
    struct req *r = c->reqs;
    while (r && r->id != h->id)
        r = r->next;
    bool fatal = h->type == DP_MSG_ERROR && (h->flags & DP_FLAG_FATAL);
    if (!r) {
        if (h->type == DP_MSG_ERROR) {
            struct dp_error_msg e;
            struct dp_err err;
            if (dp_dec_error(p, h->len, &e, &err) == DP_E_OK) {
                dp_warn("page server error for request %" PRIu64 ": %s: %s", h->id, dp_errcode_name(e.code), e.msg);
                if (e.code == DP_E_FENCED && c->lease_epoch) {
                    client_fence(c, e.msg);
                    return;
                }
            }
            if (fatal)
                drop_connection(c, "server closed the connection after an error");
        } else {
            drop_connection(c, "reply to an unknown request id");
        }
        return;
    }
    if (h->type == DP_MSG_ERROR) {
        struct dp_error_msg e;
        struct dp_err err;
        if (dp_dec_error(p, h->len, &e, &err) != DP_E_OK) {
            drop_connection(c, err.msg);
            return;
        }
        req_unlink(c, r);
        r->on_reply(c, r, DP_CLIENT_SERVER_ERROR(e.code), NULL, NULL, e.msg);
        req_free(r);
        if (e.code == DP_E_FENCED && c->lease_epoch) {
            client_fence(c, e.msg);
            return;
        }
        if (fatal)
            drop_connection(c, "server closed the connection after an error");
        return;
    }
    if (h->type != (r->type | DP_MSG_REPLY)) {
        drop_connection(c, "reply type does not match the request");
        return;
    }
    /* Unlink first so the callback may submit new requests (it must not close the client). */
    bool more = h->flags & DP_FLAG_MORE;
    if (!more)
        req_unlink(c, r);
    bool complete = r->on_reply(c, r, 0, h, p, NULL);
    if (!more) {
        (void)complete;
        req_free(r);
    }
}

/* block: wait in the first recv (bounded by SO_RCVTIMEO) instead of a poll. */
/* Sends queued output until the socket would block. Returns -1 (connection
 * dropped) on a send error. */
static int send_pending(struct dp_client *c)
{
    while (c->fd >= 0 && c->out_off < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            char why[128];
            snprintf(why, sizeof(why), "send: %s", strerror(errno));
            drop_connection(c, why);
            return -1;
        }
        c->out_off += (size_t)n;
    }
    return 0;
}

/* A record that does not open: nothing of it is used; the connection is
 * dropped and the client reconnects with fresh keys and resubmits. */
static void refuse_record(struct dp_client *c)
{
    drop_connection(c, "a record from the page server failed authentication (altered, replayed, reordered or "
                       "forged on the path); reconnecting");
}

/* Takes the next complete message off the input (opening its records on a
 * secure connection: lib/frame.c, pure and fuzzed) and handles it. Returns
 * false when more bytes are needed or the connection was dropped. */
static bool take_message(struct dp_client *c)
{
    struct dp_err err = {{0}};
    struct dp_frame f;
    /* Before the keys exist a reply is small; a huge len is a forgery. */
    uint32_t max = c->state == CS_READY ? DP_MAX_PAYLOAD : DP_MAX_PREAUTH_PAYLOAD + 1024;
    enum dp_frame_verdict v =
        dp_frame_next(&c->rx, &c->chan, c->in + c->in_off, c->in_len - c->in_off, max, NULL, NULL, &f, &err);
    c->in_off += f.used;
    if (v == DP_FRAME_FORGED) {
        refuse_record(c);
        return false;
    }
    if (v == DP_FRAME_REFUSE) {
        drop_connection(c, err.msg);
        return false;
    }
    if (v == DP_FRAME_MORE)
        return false;
    on_message(c, &f.hdr, f.payload);
    return true;
}

static int do_io(struct dp_client *c, bool block)
{
    if (send_pending(c) < 0)
        return -1;
    if (c->out_off == c->out.len)
        c->out.len = c->out_off = 0;
    /* receive: parse in place; move a partial message to the front only
     * when the buffer runs out of room behind it */
    size_t got = 0;
    for (int rounds = 0; rounds < 64 && c->fd >= 0 && !(c->o.read_budget && got >= c->o.read_budget); rounds++) {
        if (c->in_cap - c->in_len < (256u << 10)) {
            if (c->in_off) {
                memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
                c->in_len -= c->in_off;
                c->in_off = 0;
            }
            if (c->in_cap - c->in_len < (256u << 10)) {
                /* Big enough that a partial reply is moved to the front rarely. */
                size_t cap = c->in_cap ? c->in_cap * 2 : (8u << 20);
                if (cap > c->in_len + 65536 + DP_HDR_SIZE + DP_MAX_PAYLOAD)
                    cap = c->in_len + 65536 + DP_HDR_SIZE + DP_MAX_PAYLOAD;
                uint8_t *n = realloc(c->in, cap);
                if (!n) {
                    drop_connection(c, "out of memory");
                    return -1;
                }
                c->in = n;
                c->in_cap = cap;
            }
        }
        size_t room = c->in_cap - c->in_len;
        if (c->o.read_budget && room > c->o.read_budget - got)
            room = c->o.read_budget - got;
        ssize_t n = recv(c->fd, c->in + c->in_len, room, block && rounds == 0 ? 0 : MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            char why[128];
            snprintf(why, sizeof(why), "receive: %s", strerror(errno));
            drop_connection(c, why);
            return -1;
        }
        if (n == 0) {
            drop_connection(c, "connection closed by the server");
            return -1;
        }
        c->in_len += (size_t)n;
        got += (size_t)n;
        c->progress_ns = dp_now_ns();
        while (c->fd >= 0 && take_message(c))
            ;
        if (c->fd < 0)
            return -1;
        if (c->in_off == c->in_len)
            c->in_off = c->in_len = 0;
        if ((size_t)n < room)
            break; /* drained */
    }
    /* Replies may have queued more output (AUTH after HELLO, resubmissions). */
    if (send_pending(c) < 0)
        return -1;
    return 0;
}

/* The request deadline: requests on the wire and no byte from the server
 * for --request-timeout (a stopped server or a partition looks like this;
 * TCP alone would wait for its retransmissions to give up). */
static bool request_overdue(const struct dp_client *c, uint64_t now)
{
    bool waiting = false;
    for (const struct req *r = c->reqs; r && !waiting; r = r->next)
        waiting = r->sent;
    return waiting && dp_netbound_expired(c->progress_ns, now, dp_netbound_get()->request_timeout_ms);
}

/* Drops an overdue connection (the client reconnects and resubmits). */
static void check_deadline(struct dp_client *c)
{
    if (c->state != CS_READY || !request_overdue(c, dp_now_ns()))
        return;
    char why[300];
    snprintf(why, sizeof(why), "no reply for %d ms with %u requests waiting (the server is stopped or "
             "overloaded, or the link is partitioned; --request-timeout)",
             dp_netbound_get()->request_timeout_ms, c->nr_reqs);
    drop_connection(c, why);
}

int dp_client_process(struct dp_client *c, struct dp_err *err)
{
    uint64_t now = dp_now_ns();
    if (c->state == CS_FAILED) {
        dp_err_set(err, "%s", c->last_error);
        return -1;
    }
    if (c->state == CS_IDLE) {
        if (c->o.give_up_ms > 0 && c->down_since_ns && now - c->down_since_ns > ms_to_ns(c->o.give_up_ms)) {
            char why[1000];
            snprintf(why, sizeof(why), "page server unreachable for %d ms (last error: %.900s)", c->o.give_up_ms,
                     c->last_error);
            c->state = CS_FAILED;
            set_last_error(c, why);
            fail_all(c, -ETIMEDOUT, why);
            dp_err_set(err, "%s", why);
            return -1;
        }
        if (now < c->next_attempt_ns || start_connect(c) < 0)
            return 0;
    }
    if (c->state == CS_CONNECTING) {
        struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
        if (poll(&pfd, 1, 0) == 1) {
            int soerr = 0;
            socklen_t sl = sizeof(soerr);
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
            if (soerr) {
                char why[128];
                snprintf(why, sizeof(why), "connect: %s", strerror(soerr));
                drop_connection(c, why);
                return 0;
            }
            /* From here on the socket is blocking and every call says
             * MSG_DONTWAIT, except the blocking helpers' wait for a reply,
             * which is then one recv instead of poll + recv. */
            int fl = fcntl(c->fd, F_GETFL);
            if (fl >= 0)
                fcntl(c->fd, F_SETFL, fl & ~O_NONBLOCK);
            struct timeval tv = {.tv_sec = 0, .tv_usec = 100000};
            setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
            send_hello(c);
        }
    }
    if (c->state != CS_READY && c->state != CS_IDLE && dp_now_ns() > c->deadline_ns) {
        drop_connection(c, "connect/handshake timed out");
        return 0;
    }
    if (c->fd >= 0 && c->state != CS_CONNECTING)
        do_io(c, false);
    check_deadline(c);
    if (c->state == CS_FAILED) {
        dp_err_set(err, "%s", c->last_error);
        return -1;
    }
    return 0;
}

int dp_client_fd(const struct dp_client *c) { return c->fd; }

short dp_client_events(const struct dp_client *c)
{
    if (c->fd < 0)
        return 0;
    if (c->state == CS_CONNECTING)
        return POLLOUT;
    return (short)(POLLIN | (c->out_off < c->out.len ? POLLOUT : 0));
}

int dp_client_timeout_ms(const struct dp_client *c)
{
    uint64_t now = dp_now_ns(), at;
    if (c->state == CS_IDLE)
        at = c->next_attempt_ns;
    else if (c->state == CS_CONNECTING || c->state == CS_HELLO || c->state == CS_AUTH)
        at = c->deadline_ns;
    else if (c->state == CS_READY && c->nr_reqs && dp_netbound_get()->request_timeout_ms > 0)
        at = c->progress_ns + ms_to_ns(dp_netbound_get()->request_timeout_ms) + 1000000ULL;
    else
        return -1;
    return at <= now ? 0 : (int)((at - now) / 1000000ULL) + 1;
}

bool dp_client_connected(const struct dp_client *c) { return c->state == CS_READY; }
uint32_t dp_client_inflight(const struct dp_client *c) { return c->nr_reqs; }
const struct dp_hello_reply *dp_client_limits(const struct dp_client *c) { return &c->hello; }
const uint8_t *dp_client_cpid(const struct dp_client *c) { return c->cpid_known ? c->cpid : NULL; }
/* For logs and bench output: which AEAD protects this connection. */
const char *dp_client_cipher(const struct dp_client *c)
{
    return c->chan.secure ? dp_chan_cipher_name(c->chan.cipher) : "plaintext";
}

/* One poll + process round, bounded by timeout_ms (-1: the client's own timeout). */
static int run_once(struct dp_client *c, int timeout_ms, struct dp_err *err)
{
    if (c->state == CS_READY && c->out_off == c->out.len && c->nr_reqs) {
        do_io(c, true); /* replies are all we wait for: block in recv */
        check_deadline(c);
        if (c->state == CS_FAILED) {
            dp_err_set(err, "%s", c->last_error);
            return -1;
        }
        return 0;
    }
    int t = dp_client_timeout_ms(c);
    if (t < 0 || (timeout_ms >= 0 && timeout_ms < t))
        t = timeout_ms;
    if (c->fd >= 0) {
        struct pollfd pfd = {.fd = c->fd, .events = dp_client_events(c)};
        if (poll(&pfd, 1, t) < 0 && errno != EINTR) {
            dp_err_set(err, "poll: %s", strerror(errno));
            return -1;
        }
    } else if (t > 0) {
        poll(NULL, 0, t);
    }
    return dp_client_process(c, err);
}

int dp_client_connect(const struct dp_client_opts *opts, struct dp_client **out, struct dp_err *err)
{
    if (opts->key_len < DP_KEY_MIN || opts->key_len > DP_KEY_MAX) {
        dp_err_set(err, "key must be %d..%d bytes", DP_KEY_MIN, DP_KEY_MAX);
        return -1;
    }
    if (sodium_init() < 0) {
        dp_err_set(err, "libsodium failed to initialise");
        return -1;
    }
    struct dp_client *c = calloc(1, sizeof(*c));
    if (!c) {
        dp_err_set(err, "out of memory");
        return -1;
    }
    c->o = *opts;
    memcpy(c->key, opts->key, opts->key_len);
    c->o.key = NULL;
    c->o.insecure_plaintext = opts->insecure_plaintext || plaintext_default;
    if (c->o.insecure_plaintext)
        dp_warn("--insecure-plaintext: page contents and requests to %s cross the network IN CLEAR and can be "
                "read and rewritten on the path", "the page server");
    if (opts->expect_cpid) {
        memcpy(c->cpid, opts->expect_cpid, DP_CPID_BYTES);
        c->cpid_known = true;
    }
    if (!c->o.connect_timeout_ms)
        c->o.connect_timeout_ms = 5000;
    if (!c->o.backoff_min_ms)
        c->o.backoff_min_ms = 50;
    if (!c->o.backoff_max_ms)
        c->o.backoff_max_ms = 2000;
    if (!c->o.max_inflight)
        c->o.max_inflight = 256;
    c->backoff_ms = c->o.backoff_min_ms;
    c->fd = -1;
    c->next_id = 1;
    c->state = CS_IDLE;
    uint64_t deadline = dp_now_ns() + ms_to_ns(c->o.connect_timeout_ms);
    while (c->state != CS_READY) {
        if (dp_now_ns() > deadline) {
            char a[64];
            dp_err_set(err, "cannot connect to page server %s within %d ms: %s", addr_str(c, a, sizeof(a)),
                       c->o.connect_timeout_ms, c->last_error[0] ? c->last_error : "no answer");
            dp_client_close(c);
            return -1;
        }
        int left = (int)((deadline - dp_now_ns()) / 1000000ULL) + 1;
        if (run_once(c, left, err) < 0) {
            char a[64];
            char msg[sizeof(err->msg)];
            snprintf(msg, sizeof(msg), "%s", err->msg);
            dp_err_set(err, "page server %s: %s", addr_str(c, a, sizeof(a)), msg);
            dp_client_close(c);
            return -1;
        }
    }
    *out = c;
    return 0;
}

void dp_client_close(struct dp_client *c)
{
    if (!c)
        return;
    c->state = CS_FAILED;
    fail_all(c, -ECANCELED, "client closed");
    if (c->fd >= 0)
        close(c->fd);
    dp_chan_free(&c->chan);
    dp_buf_free(&c->out);
    free(c->in);
    sodium_memzero(c->key, sizeof(c->key));
    free(c);
}

/* ---- submitting ------------------------------------------------------------- */
static struct req *req_new(struct dp_client *c, uint8_t type, struct dp_err *err)
{
    if (c->state == CS_FAILED) {
        dp_err_set(err, "client has failed: %s", c->last_error);
        return NULL;
    }
    if (c->nr_reqs >= c->o.max_inflight) {
        dp_err_set(err, "too many requests in flight (%u)", c->nr_reqs);
        return NULL;
    }
    struct req *r = calloc(1, sizeof(*r));
    if (!r) {
        dp_err_set(err, "out of memory");
        return NULL;
    }
    r->id = c->next_id++;
    r->type = type;
    return r;
}

/* Takes the encoded request from b; queues it and sends when connected. */
static uint64_t req_submit(struct dp_client *c, struct req *r, struct dp_buf *b)
{
    r->wire = b->data;
    r->wire_len = b->len;
    memset(b, 0, sizeof(*b));
    if (c->reqs_tail)
        c->reqs_tail->next = r;
    else
        c->reqs = r;
    c->reqs_tail = r;
    c->nr_reqs++;
    if (c->nr_reqs == 1)
        c->progress_ns = dp_now_ns(); /* the deadline runs from here, not from the last reply */
    if (c->state == CS_READY) {
        if (queue_msg(c, r->wire, r->wire_len) < 0) {
            drop_connection(c, "out of memory");
        } else {
            r->sent = true;
            /* Try to send now: pipelining wants requests on the wire early. */
            while (c->out_off < c->out.len) {
                ssize_t n = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n <= 0)
                    break;
                c->out_off += (size_t)n;
            }
            if (c->out_off == c->out.len)
                c->out.len = c->out_off = 0;
        }
    }
    return r->id;
}

static bool get_reply(struct dp_client *c, struct req *r, int status, const struct dp_hdr *h, const uint8_t *p,
                      const char *errmsg)
{
    if (status) {
        r->get_cb(r->cookie, status, NULL, 0, errmsg);
        return true;
    }
    uint32_t n;
    struct dp_err err;
    if (dp_dec_get_reply(p, h->len, r->ranges, r->nr_ranges, c->segs, DP_MAX_GET_PAGES, &n, &err) != DP_E_OK) {
        r->get_cb(r->cookie, DP_CLIENT_SERVER_ERROR(DP_E_MALFORMED), NULL, 0, err.msg);
        return true;
    }
    r->get_cb(r->cookie, 0, c->segs, n, NULL);
    return true;
}

uint64_t dp_client_submit_get(struct dp_client *c, const struct dp_get_range *ranges, uint32_t n, dp_get_cb cb,
                              void *cookie, struct dp_err *err)
{
    uint32_t pages = 0;
    for (uint32_t i = 0; i < n && i <= DP_MAX_GET_RANGES; i++)
        pages += ranges[i].count > DP_MAX_GET_PAGES ? DP_MAX_GET_PAGES + 1 : ranges[i].count;
    if (n == 0 || n > DP_MAX_GET_RANGES || pages > DP_MAX_GET_PAGES) {
        dp_err_set(err, "GET of %u ranges / %u pages exceeds the limits (%u ranges, %u pages)", n, pages,
                   DP_MAX_GET_RANGES, DP_MAX_GET_PAGES);
        return 0;
    }
    struct req *r = req_new(c, DP_MSG_GET_PAGES, err);
    if (!r)
        return 0;
    struct dp_buf b = {0};
    r->ranges = malloc(n * sizeof(*r->ranges));
    if (!r->ranges || dp_enc_get_req(&b, r->id, ranges, n) < 0) {
        dp_buf_free(&b);
        req_free(r);
        dp_err_set(err, "out of memory");
        return 0;
    }
    memcpy(r->ranges, ranges, n * sizeof(*r->ranges));
    r->nr_ranges = n;
    r->get_cb = cb;
    r->cookie = cookie;
    r->on_reply = get_reply;
    return req_submit(c, r, &b);
}

static bool put_reply(struct dp_client *c, struct req *r, int status, const struct dp_hdr *h, const uint8_t *p,
                      const char *errmsg)
{
    (void)c;
    if (status) {
        r->put_cb(r->cookie, status, errmsg);
        return true;
    }
    uint32_t pages;
    struct dp_err err;
    if (dp_dec_put_reply(p, h->len, &pages, &err) != DP_E_OK) {
        r->put_cb(r->cookie, DP_CLIENT_SERVER_ERROR(DP_E_MALFORMED), err.msg);
        return true;
    }
    /* The acknowledgement must be for exactly what we sent: a reply for
     * fewer pages is not a durable write of this request. */
    if (pages != r->put_pages) {
        char msg[160];
        snprintf(msg, sizeof(msg), "PUT reply acknowledges %u pages, the request wrote %u: not believed", pages,
                 r->put_pages);
        r->put_cb(r->cookie, DP_CLIENT_SERVER_ERROR(DP_E_MALFORMED), msg);
        return true;
    }
    r->put_cb(r->cookie, 0, NULL);
    return true;
}

uint64_t dp_client_submit_put(struct dp_client *c, const struct dp_put_range *ranges, uint32_t n, dp_put_cb cb,
                              void *cookie, struct dp_err *err)
{
    uint64_t pages = 0;
    for (uint32_t i = 0; i < n; i++)
        pages += ranges[i].count;
    if (n == 0 || n > DP_MAX_PUT_PAGES || pages > DP_MAX_PUT_PAGES) {
        dp_err_set(err, "PUT of %u ranges / %" PRIu64 " pages exceeds the limit of %u pages", n, pages,
                   DP_MAX_PUT_PAGES);
        return 0;
    }
    struct req *r = req_new(c, DP_MSG_PUT_PAGES, err);
    if (!r)
        return 0;
    struct dp_buf b = {0};
    if (dp_enc_put_req(&b, r->id, ranges, n) < 0) {
        dp_buf_free(&b);
        req_free(r);
        dp_err_set(err, "out of memory");
        return 0;
    }
    r->put_cb = cb;
    r->cookie = cookie;
    r->put_pages = (uint32_t)pages;
    r->on_reply = put_reply;
    return req_submit(c, r, &b);
}

/* ---- blocking helpers ----------------------------------------------------------- */
static int wait_done(struct dp_client *c, bool *done, int timeout_ms, struct dp_err *err)
{
    uint64_t deadline = timeout_ms > 0 ? dp_now_ns() + ms_to_ns(timeout_ms) : UINT64_MAX;
    while (!*done) {
        uint64_t now = dp_now_ns();
        if (now >= deadline) {
            dp_err_set(err, "no reply from the page server within %d ms%s%.300s%s", timeout_ms,
                       c->last_error[0] ? " (last error: " : "", c->last_error, c->last_error[0] ? ")" : "");
            return -1;
        }
        int left = deadline == UINT64_MAX ? -1 : (int)((deadline - now) / 1000000ULL) + 1;
        if (run_once(c, left > 1000 || left < 0 ? 1000 : left, err) < 0 && !*done)
            return -1;
    }
    return 0;
}

/* Shared state of one blocking call; lives on the caller's stack. If the call
 * times out, the request is detached (ctx cleared) and later replies are dropped. */
struct sync_call {
    bool done;
    int status;
    char errmsg[DP_MAX_ERROR_MSG + 1];
    struct dp_buf data;      /* accumulated payloads */
    /* GET */
    uint8_t *buf, *kinds;
    const struct dp_get_range *ranges;
    uint32_t nr_ranges;
    /* skeleton */
    int dirfd;
    int filefd;
    char filename[DP_MAX_NAME + 1];
    struct dp_skel_result *skel;
    uint32_t files_seen;
};

static struct req *find_req(struct dp_client *c, uint64_t id)
{
    for (struct req *r = c->reqs; r; r = r->next)
        if (r->id == id)
            return r;
    return NULL;
}

static int sync_wait(struct dp_client *c, uint64_t id, struct sync_call *sc, int timeout_ms, struct dp_err *err)
{
    if (wait_done(c, &sc->done, timeout_ms, err) < 0) {
        struct req *r = find_req(c, id);
        if (r)
            r->ctx = NULL; /* detach: the reply, if it comes, is dropped */
        return -1;
    }
    if (sc->status) {
        dp_err_set(err, "%s", sc->errmsg[0] ? sc->errmsg : strerror(-sc->status));
        return -1;
    }
    return 0;
}

static void sync_finish(struct sync_call *sc, int status, const char *errmsg)
{
    sc->done = true;
    sc->status = status;
    if (errmsg)
        snprintf(sc->errmsg, sizeof(sc->errmsg), "%s", errmsg);
}

/* Collects the payloads of a (possibly multi-message) reply. */
static bool collect_reply(struct dp_client *c, struct req *r, int status, const struct dp_hdr *h, const uint8_t *p,
                          const char *errmsg)
{
    (void)c;
    struct sync_call *sc = r->ctx;
    if (!sc)
        return true;
    if (status) {
        sync_finish(sc, status, errmsg);
        return true;
    }
    if (r->accum.len + h->len > dp_netbound_get()->max_reply_bytes) {
        char msg[160];
        snprintf(msg, sizeof(msg), "the page server's reply passed %llu bytes (--max-reply); refused",
                 (unsigned long long)dp_netbound_get()->max_reply_bytes);
        sync_finish(sc, -EFBIG, msg);
        return true;
    }
    if (dp_buf_put(&r->accum, p, h->len) < 0) {
        sync_finish(sc, -ENOMEM, "out of memory");
        return true;
    }
    if (h->flags & DP_FLAG_MORE)
        return false;
    sc->data = r->accum;
    memset(&r->accum, 0, sizeof(r->accum));
    sync_finish(sc, 0, NULL);
    return true;
}

static uint64_t submit_simple(struct dp_client *c, uint8_t type, const void *payload, uint32_t len, reply_fn fn,
                              struct sync_call *sc, struct dp_err *err)
{
    struct req *r = req_new(c, type, err);
    if (!r)
        return 0;
    struct dp_buf b = {0};
    if (dp_msg_append(&b, type, 0, r->id, payload, len) < 0) {
        dp_buf_free(&b);
        req_free(r);
        dp_err_set(err, "out of memory");
        return 0;
    }
    r->on_reply = fn;
    r->ctx = sc;
    return req_submit(c, r, &b);
}

int dp_client_task_map(struct dp_client *c, struct dp_task_map *out, int timeout_ms, struct dp_err *err)
{
    struct sync_call sc = {0};
    uint64_t id = submit_simple(c, DP_MSG_TASK_MAP, NULL, 0, collect_reply, &sc, err);
    if (!id || sync_wait(c, id, &sc, timeout_ms, err) < 0) {
        dp_buf_free(&sc.data);
        return -1;
    }
    int rc = dp_dec_task_map_reply(sc.data.data, sc.data.len, out, err);
    dp_buf_free(&sc.data);
    return rc == DP_E_OK ? 0 : -1;
}

static int json_call(struct dp_client *c, uint8_t type, char **json, int timeout_ms, struct dp_err *err)
{
    struct sync_call sc = {0};
    uint64_t id = submit_simple(c, type, NULL, 0, collect_reply, &sc, err);
    if (!id || sync_wait(c, id, &sc, timeout_ms, err) < 0 || dp_buf_put(&sc.data, "", 1) < 0) {
        dp_buf_free(&sc.data);
        return -1;
    }
    *json = (char *)sc.data.data;
    return 0;
}

int dp_client_stats(struct dp_client *c, char **json, int timeout_ms, struct dp_err *err)
{
    return json_call(c, DP_MSG_STATS, json, timeout_ms, err);
}

int dp_client_access_log(struct dp_client *c, char **json, int timeout_ms, struct dp_err *err)
{
    return json_call(c, DP_MSG_ACCESS_LOG, json, timeout_ms, err);
}

/* Memory mode: the destination's verdict (lib/livesm.h); the reply is JSON. */
int dp_client_migration(struct dp_client *c, uint32_t verdict, char **json, int timeout_ms, struct dp_err *err)
{
    uint8_t p[4];
    dp_put_u32(p, verdict);
    struct sync_call sc = {0};
    uint64_t id = submit_simple(c, DP_MSG_MIGRATION, p, sizeof(p), collect_reply, &sc, err);
    if (!id || sync_wait(c, id, &sc, timeout_ms, err) < 0 || dp_buf_put(&sc.data, "", 1) < 0) {
        dp_buf_free(&sc.data);
        return -1;
    }
    *json = (char *)sc.data.data;
    return 0;
}

/* ---- protocol version 2: traces and hot sets ---- */
static int need_v2(struct dp_client *c, const char *what, struct dp_err *err)
{
    if (c->state == CS_READY && c->hello.version < DP_PROTO_VERSION_HOTSET) {
        dp_err_set(err, "the page server speaks protocol version %u, which has no %s (version %d); upgrade "
                   "distriproc on the source", c->hello.version, what, DP_PROTO_VERSION_HOTSET);
        return -1;
    }
    return 0;
}

int dp_client_put_trace(struct dp_client *c, const uint8_t *file, size_t len, uint64_t *pages, uint32_t *runs,
                        int timeout_ms, struct dp_err *err)
{
    if (need_v2(c, "fault-trace upload", err) < 0)
        return -1;
    if (len > DP_MAX_PAYLOAD) {
        dp_err_set(err, "the trace is %zu bytes, more than one message carries (%u)", len, DP_MAX_PAYLOAD);
        return -1;
    }
    struct sync_call sc = {0};
    uint64_t id = submit_simple(c, DP_MSG_PUT_TRACE, file, (uint32_t)len, collect_reply, &sc, err);
    if (!id || sync_wait(c, id, &sc, timeout_ms, err) < 0) {
        dp_buf_free(&sc.data);
        return -1;
    }
    int rc = dp_dec_put_trace_reply(sc.data.data, sc.data.len, pages, runs, err);
    dp_buf_free(&sc.data);
    if (rc != DP_E_OK)
        return -1;
    /* The acknowledgement must give the trace's own page and run counts (the
     * server checks the trace; a file it would refuse never gets here). */
    struct dp_hotset hs;
    struct dp_err derr;
    if (dp_hotset_decode("the uploaded trace", file, len, &hs, &derr) < 0) {
        dp_err_set(err, "the page server acknowledged a trace this client cannot decode (%s): not believed",
                   derr.msg);
        return -1;
    }
    uint64_t want_pages = hs.total_pages;
    uint32_t want_runs = hs.nr_runs;
    dp_hotset_free(&hs);
    if (*pages != want_pages || *runs != want_runs) {
        dp_err_set(err, "the page server acknowledged a trace of %" PRIu64 " pages in %u runs, the upload had %"
                   PRIu64 " in %u: not believed", *pages, *runs, want_pages, want_runs);
        return -1;
    }
    return 0;
}

int dp_client_get_hotset(struct dp_client *c, uint32_t which, uint8_t **file, size_t *len, int timeout_ms,
                         struct dp_err *err)
{
    if (need_v2(c, "hot sets", err) < 0)
        return -1;
    uint8_t p[DP_GET_HOTSET_REQ_LEN] = {0};
    dp_put_u32(p, which);
    struct sync_call sc = {0};
    uint64_t id = submit_simple(c, DP_MSG_GET_HOTSET, p, sizeof(p), collect_reply, &sc, err);
    if (!id || sync_wait(c, id, &sc, timeout_ms, err) < 0) {
        dp_buf_free(&sc.data);
        return -1;
    }
    *file = sc.data.data;
    *len = sc.data.len;
    return 0;
}

static void get_sync_cb(void *cookie, int status, const struct dp_seg *segs, uint32_t n, const char *errmsg)
{
    struct sync_call *sc = cookie;
    if (!sc)
        return;
    if (status) {
        sync_finish(sc, status, errmsg);
        return;
    }
    size_t page = 0;
    for (uint32_t i = 0; i < n; i++) {
        const struct dp_seg *s = &segs[i];
        if (s->kind == DP_SEG_NOT_LAZY) {
            char msg[128];
            snprintf(msg, sizeof(msg), "page 0x%" PRIx64 " of pid %d is not lazy memory of the checkpoint", s->addr,
                     s->pid);
            sync_finish(sc, DP_CLIENT_SERVER_ERROR(DP_E_NOT_LAZY), msg);
            return;
        }
        for (uint32_t k = 0; k < s->count; k++, page++) {
            uint8_t *dst = sc->buf + page * DP_PAGE_SIZE;
            if (s->kind == DP_SEG_DATA)
                memcpy(dst, s->data + (size_t)k * DP_PAGE_SIZE, DP_PAGE_SIZE);
            else
                memset(dst, 0, DP_PAGE_SIZE);
            if (sc->kinds)
                sc->kinds[page] = (uint8_t)s->kind;
        }
    }
    sync_finish(sc, 0, NULL);
}

/* GET and PUT callbacks get a cookie; on timeout we must stop them from
 * touching the caller's stack, so the cookie is the request's ctx holder. */
struct cookie_box { struct sync_call *sc; };

static void get_box_cb(void *cookie, int status, const struct dp_seg *segs, uint32_t n, const char *errmsg)
{
    struct cookie_box *box = cookie;
    get_sync_cb(box->sc, status, segs, n, errmsg);
    free(box);
}

static void put_box_cb(void *cookie, int status, const char *errmsg)
{
    struct cookie_box *box = cookie;
    if (box->sc)
        sync_finish(box->sc, status, errmsg);
    free(box);
}

static int box_wait(struct dp_client *c, uint64_t id, struct cookie_box *box, struct sync_call *sc, int timeout_ms,
                    struct dp_err *err)
{
    if (wait_done(c, &sc->done, timeout_ms, err) < 0) {
        struct req *r = find_req(c, id);
        if (r)
            box->sc = NULL;
        return -1;
    }
    if (sc->status) {
        dp_err_set(err, "%s", sc->errmsg[0] ? sc->errmsg : strerror(-sc->status));
        return -1;
    }
    return 0;
}

int dp_client_get_pages(struct dp_client *c, const struct dp_get_range *ranges, uint32_t n, uint8_t *buf,
                        uint8_t *kinds, int timeout_ms, struct dp_err *err)
{
    struct sync_call sc = {.buf = buf, .kinds = kinds};
    struct cookie_box *box = malloc(sizeof(*box));
    if (!box) {
        dp_err_set(err, "out of memory");
        return -1;
    }
    box->sc = &sc;
    uint64_t id = dp_client_submit_get(c, ranges, n, get_box_cb, box, err);
    if (!id) {
        free(box);
        return -1;
    }
    return box_wait(c, id, box, &sc, timeout_ms, err);
}

int dp_client_put_pages(struct dp_client *c, int32_t pid, uint64_t addr, uint32_t count, const uint8_t *data,
                        int timeout_ms, struct dp_err *err)
{
    for (uint32_t done = 0; done < count;) {
        uint32_t n = count - done < DP_MAX_PUT_PAGES ? count - done : DP_MAX_PUT_PAGES;
        struct dp_put_range r = {.pid = pid, .count = n, .addr = addr + (uint64_t)done * DP_PAGE_SIZE,
                                 .data = data + (size_t)done * DP_PAGE_SIZE};
        struct sync_call sc = {0};
        struct cookie_box *box = malloc(sizeof(*box));
        if (!box) {
            dp_err_set(err, "out of memory");
            return -1;
        }
        box->sc = &sc;
        uint64_t id = dp_client_submit_put(c, &r, 1, put_box_cb, box, err);
        if (!id) {
            free(box);
            return -1;
        }
        if (box_wait(c, id, box, &sc, timeout_ms, err) < 0)
            return -1;
        done += n;
    }
    return 0;
}

/* ---- skeleton download ------------------------------------------------------------ */
/* Opens dir-relative path rel for writing, creating directories, never
 * following a symlink (the names come from the network). */
int dp_skel_open_rel(int dirfd, const char *rel, uint32_t mode)
{
    char tmp[DP_MAX_NAME + 1];
    snprintf(tmp, sizeof(tmp), "%s", rel);
    int cur = dup(dirfd);
    char *p = tmp;
    for (char *slash; cur >= 0 && (slash = strchr(p, '/'));) {
        *slash = '\0';
        if (mkdirat(cur, p, 0700) < 0 && errno != EEXIST) {
            close(cur);
            return -1;
        }
        int next = openat(cur, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        close(cur);
        cur = next;
        p = slash + 1;
    }
    if (cur < 0)
        return -1;
    int fd = openat(cur, p, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode ? mode : 0600);
    close(cur);
    return fd;
}

/* The skeleton is written to disk as it arrives: a peer must not fill the
 * destination's disk or create files without end (--max-skeleton). Sparse
 * files may be up to 64 times the cap in apparent size. Returns true (and
 * finishes the call with an error) when ch would pass a cap. */
static bool skel_over_cap(struct sync_call *sc, const struct dp_skel_chunk *ch)
{
    const struct dp_netbound *b = dp_netbound_get();
    bool new_file = sc->filefd < 0 || strcmp(sc->filename, ch->name) != 0;
    uint64_t apparent = sc->skel->bytes_apparent + (new_file ? ch->file_size : 0);
    if (sc->skel->bytes_received + ch->data_len <= b->max_skeleton_bytes &&
        apparent / 64 <= b->max_skeleton_bytes && (!new_file || sc->files_seen < b->max_skeleton_files))
        return false;
    char msg[300];
    snprintf(msg, sizeof(msg), "the skeleton from the page server passed its cap (%llu bytes of data, %llu "
             "apparent, %u files; --max-skeleton %llu): refused, nothing restored from it",
             (unsigned long long)(sc->skel->bytes_received + ch->data_len), (unsigned long long)apparent,
             sc->files_seen + (new_file ? 1 : 0), (unsigned long long)b->max_skeleton_bytes);
    sync_finish(sc, -EFBIG, msg);
    return true;
}

static bool skel_reply(struct dp_client *c, struct req *r, int status, const struct dp_hdr *h, const uint8_t *p,
                       const char *errmsg)
{
    (void)c;
    struct sync_call *sc = r->ctx;
    if (!sc)
        return true;
    if (status) {
        sync_finish(sc, status, errmsg);
        return true;
    }
    struct dp_skel_chunk ch;
    struct dp_err err;
    if (dp_dec_skel_chunk(p, h->len, &ch, &err) != DP_E_OK) {
        sync_finish(sc, DP_CLIENT_SERVER_ERROR(DP_E_MALFORMED), err.msg);
        return true;
    }
    bool more = h->flags & DP_FLAG_MORE;
    if (ch.kind == DP_SKEL_END) {
        if (sc->filefd >= 0)
            close(sc->filefd);
        sc->filefd = -1;
        if (more || ch.file_size != sc->files_seen || ch.offset != sc->skel->bytes_received) {
            char msg[200];
            snprintf(msg, sizeof(msg), "skeleton ended with %u files / %" PRIu64 " bytes, server says %" PRIu64
                     " / %" PRIu64, sc->files_seen, sc->skel->bytes_received, ch.file_size, ch.offset);
            sync_finish(sc, DP_CLIENT_SERVER_ERROR(DP_E_MALFORMED), msg);
            return true;
        }
        sc->skel->files = sc->files_seen;
        sync_finish(sc, 0, NULL);
        return true;
    }
    if (!more) {
        sync_finish(sc, DP_CLIENT_SERVER_ERROR(DP_E_MALFORMED), "skeleton stream ended without its end chunk");
        return true;
    }
    if (skel_over_cap(sc, &ch))
        return true;
    /* A resubmitted request after a reconnect restarts the stream: files are
     * recreated from the first chunk on, so the restart is harmless. */
    if (sc->filefd < 0 || strcmp(sc->filename, ch.name) != 0) {
        if (sc->filefd >= 0)
            close(sc->filefd);
        sc->filefd = dp_skel_open_rel(sc->dirfd, ch.name, ch.mode);
        if (sc->filefd < 0 || ftruncate(sc->filefd, (off_t)ch.file_size) < 0) {
            char msg[400];
            snprintf(msg, sizeof(msg), "cannot create %s in the skeleton directory: %s", ch.name, strerror(errno));
            sync_finish(sc, -errno, msg);
            return true;
        }
        snprintf(sc->filename, sizeof(sc->filename), "%s", ch.name);
        sc->files_seen++;
        sc->skel->bytes_apparent += ch.file_size;
    }
    if (ch.data_len) {
        size_t done = 0;
        while (done < ch.data_len) {
            ssize_t w = pwrite(sc->filefd, ch.data + done, ch.data_len - done, (off_t)(ch.offset + done));
            if (w <= 0) {
                char msg[400];
                snprintf(msg, sizeof(msg), "writing %s: %s", ch.name, w < 0 ? strerror(errno) : "short write");
                sync_finish(sc, -EIO, msg);
                return true;
            }
            done += (size_t)w;
        }
        sc->skel->bytes_received += ch.data_len;
    }
    return false;
}

static void skel_restart(struct req *r)
{
    struct sync_call *sc = r->ctx;
    if (!sc)
        return;
    if (sc->filefd >= 0)
        close(sc->filefd);
    sc->filefd = -1;
    sc->filename[0] = '\0';
    sc->files_seen = 0;
    memset(sc->skel, 0, sizeof(*sc->skel));
}

int dp_client_get_skeleton(struct dp_client *c, const char *dir, struct dp_skel_result *res, int timeout_ms,
                           struct dp_err *err)
{
    memset(res, 0, sizeof(*res));
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        dp_err_set(err, "cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    struct sync_call sc = {.filefd = -1, .skel = res};
    sc.dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sc.dirfd < 0) {
        dp_err_set(err, "cannot open %s: %s", dir, strerror(errno));
        return -1;
    }
    uint8_t payload[DP_SKEL_REQ_LEN] = {0};
    uint64_t id = submit_simple(c, DP_MSG_GET_SKELETON, payload, sizeof(payload), skel_reply, &sc, err);
    struct req *r = id ? find_req(c, id) : NULL;
    if (r)
        r->on_restart = skel_restart;
    int rc = id ? sync_wait(c, id, &sc, timeout_ms, err) : -1;
    if (sc.filefd >= 0)
        close(sc.filefd);
    close(sc.dirfd);
    return rc;
}

/* ---- write lease (protocol version 4; lib/lease.h) ---------------------------- */

/* Our epoch is stale: another restore took over. Nothing more may be read or
 * written for this tree; every request fails with FENCED and the owner
 * (the lazy-pages daemon) stops the tree (dp_client_fenced). */
static void client_fence(struct dp_client *c, const char *why)
{
    if (c->fenced)
        return;
    c->fenced = true;
    dp_error("page server: this restore is fenced: %s", why);
    drop_connection(c, why);
    c->state = CS_FAILED;
    snprintf(c->last_error, sizeof(c->last_error), "%s", why);
    fail_all(c, DP_CLIENT_SERVER_ERROR(DP_E_FENCED), why);
}

/* The answer to a resume sent after a reconnect: anything but our epoch
 * back means we are no longer the writer. */
static bool lease_resume_reply(struct dp_client *c, struct req *r, int status, const struct dp_hdr *h,
                               const uint8_t *p, const char *errmsg)
{
    (void)r;
    struct dp_lease_reply lr;
    struct dp_err err = {{0}};
    if (status <= -1000) {
        client_fence(c, errmsg && *errmsg ? errmsg : "the page server refused to resume our write lease");
    } else if (status == 0 && (dp_dec_lease_reply(p, h->len, &lr, &err) != DP_E_OK || lr.epoch != c->lease_epoch ||
                               lr.verdict != DP_LEASE_RESUMED)) {
        char why[700];
        snprintf(why, sizeof(why), "the page server answered our lease resume (epoch %" PRIu64 ") with %s",
                 c->lease_epoch, err.msg[0] ? err.msg : "another epoch");
        client_fence(c, why);
    }
    return true;
}

/* Queues LEASE(resume our epoch) at the head of the requests, so that it is
 * the first message of a new connection. */
static void lease_queue_resume(struct dp_client *c)
{
    struct req *r = calloc(1, sizeof(*r));
    struct dp_buf b = {0};
    struct dp_lease_ask a = {.epoch = c->lease_epoch};
    snprintf(a.holder, sizeof(a.holder), "%s", c->lease_holder);
    if (!r || (r->id = c->next_id++, dp_enc_lease_req(&b, r->id, &a) < 0)) {
        free(r);
        dp_buf_free(&b);
        client_fence(c, "out of memory resuming the write lease");
        return;
    }
    r->type = DP_MSG_LEASE;
    r->wire = b.data;
    r->wire_len = b.len;
    r->on_reply = lease_resume_reply;
    r->next = c->reqs;
    c->reqs = r;
    if (!c->reqs_tail)
        c->reqs_tail = r;
    c->nr_reqs++;
}

/* One blocking LEASE round trip: ask, then the decoded reply. */
static int lease_call(struct dp_client *c, const struct dp_lease_ask *a, struct dp_lease_reply *out, int timeout_ms,
                      struct dp_err *err)
{
    if (c->state == CS_READY && c->hello.version < DP_PROTO_VERSION_LEASE) {
        dp_err_set(err, "the page server speaks protocol version %u, without write leases (version %d): upgrade "
                   "distriproc on the source", c->hello.version, DP_PROTO_VERSION_LEASE);
        return -1;
    }
    struct sync_call sc = {0};
    struct req *r = req_new(c, DP_MSG_LEASE, err);
    if (!r)
        return -1;
    struct dp_buf b = {0};
    if (dp_enc_lease_req(&b, r->id, a) < 0) {
        dp_buf_free(&b);
        req_free(r);
        dp_err_set(err, "out of memory");
        return -1;
    }
    r->on_reply = collect_reply;
    r->ctx = &sc;
    uint64_t id = req_submit(c, r, &b);
    int rc = sync_wait(c, id, &sc, timeout_ms, err);
    if (rc == 0 && dp_dec_lease_reply(sc.data.data, sc.data.len, out, err) != DP_E_OK)
        rc = -1;
    dp_buf_free(&sc.data);
    return rc;
}

/* See client.h. */
int dp_client_lease(struct dp_client *c, const char *holder, bool take_over, struct dp_lease_reply *out,
                    int timeout_ms, struct dp_err *err)
{
    struct dp_lease_ask a = {.epoch = 0, .flags = take_over ? DP_LEASE_TAKE_OVER : 0};
    snprintf(a.holder, sizeof(a.holder), "%s", holder);
    if (!dp_lease_holder_ok(a.holder, strlen(a.holder))) {
        dp_err_set(err, "lease holder name '%s' is not 1..%d printable characters", a.holder, DP_LEASE_HOLDER_MAX);
        return -1;
    }
    if (lease_call(c, &a, out, timeout_ms, err) < 0)
        return -1;
    if (out->verdict != DP_LEASE_GRANTED) {
        dp_err_set(err, "the page server answered a request for a new lease with verdict %u", out->verdict);
        return -1;
    }
    c->lease_epoch = out->epoch;
    snprintf(c->lease_holder, sizeof(c->lease_holder), "%s", a.holder);
    return 0;
}

/* See client.h. */
int dp_client_lease_release(struct dp_client *c, int timeout_ms, struct dp_err *err)
{
    if (!c->lease_epoch || c->fenced)
        return 0;
    struct dp_lease_ask a = {.epoch = c->lease_epoch, .flags = DP_LEASE_RELEASE};
    snprintf(a.holder, sizeof(a.holder), "%s", c->lease_holder);
    struct dp_lease_reply lr;
    if (lease_call(c, &a, &lr, timeout_ms, err) < 0)
        return -1;
    c->lease_epoch = 0;
    return 0;
}

/* See client.h. */
const char *dp_client_fenced(const struct dp_client *c) { return c->fenced ? c->last_error : NULL; }
