/* pageserver: the source side's epoll loop (see pageserver.h). */
#include "pageserver.h"
#include "pageserver_hotset.h"
#include "proto_hotset.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <math.h>
#include <linux/pkt_sched.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "channel.h"
#include "cpid.h"
#include "frame.h"
#include "image.h"
#include "jsonout.h"
#include "livesm.h"
#include "overlay.h"
#include "lease_store.h"
#include "proto_lease.h"
#include "pmap.h"
#include "rttdelay.h"
#include "hotset.h"
#include "metrics.h"
#include "metrics_http.h"
#include "skeleton.h"

#define HIGH_WATER  (8u << 20)   /* stop reading a client with this much output queued */
#define LOW_WATER   (1u << 20)   /* resume below this */
/* A bulk connection (DP_HELLO_FLAG_BULK: the warm-up) keeps little queued,
 * in our buffers and in the kernel's, so the next reply it builds is read
 * from the images when the link has room for it, never far ahead of a fault
 * another connection sends. */
#define BULK_HIGH_WATER (256u << 10)
#define BULK_LOW_WATER  (128u << 10)
#define BULK_NOTSENT    (128u << 10) /* TCP_NOTSENT_LOWAT */
#define SKEL_CHUNK  (256u << 10)
#define READ_BUDGET (1u << 20)   /* bytes read per readiness event, for fairness */
#define MAX_IOV     64
#define INPUT_KEEP  (4u << 20)   /* an emptied input buffer larger than this is shrunk back */

enum tag { TAG_LISTEN = 1, TAG_SIGNAL, TAG_TIMER, TAG_CONN, TAG_METRICS };

/* ---- output items: bytes we own, or a range of a file to sendfile ---- */
struct out_item {
    struct out_item *next;
    bool sealed;      /* buffer already holds sealed records (a GET reply sealed in place) */
    int fd;           /* -1: buffer item */
    uint8_t *buf;
    size_t len, off;  /* buffer: bytes and progress; file: bytes left */
    uint64_t foff;    /* file: next offset */
};

struct resp {
    struct out_item *head, *tail;
    size_t bytes;
};

/* Skeleton plan: files to send and the extents of each (lazy data left out). */
struct skel_extent { uint64_t off, len; };
struct skel_file {
    char name[DP_MAX_NAME + 1];
    uint64_t size;
    uint32_t mode;
    struct skel_extent *ext;
    size_t nr_ext;
};

struct skel_cursor {
    uint64_t id;
    size_t file, ext;
    uint64_t done_in_ext;
    bool file_started;
    uint64_t bytes;
};

struct conn {
    enum tag tag;
    struct conn *next, *prev;
    int fd;
    uint64_t cid;
    char peer[64];
    int refs;                 /* delayed replies and pending acks pointing here */
    bool closed;              /* fd closed, waiting for refs to drop */
    bool closing;             /* flush then close (after a fatal error) */
    uint64_t since_ns;        /* accepted, or closing since */
    uint64_t active_ns;       /* last byte received or sent (idle timeout) */
    uint32_t ip;              /* peer address, network order (connection limits) */
    bool paused;              /* reading stopped by backpressure */
    uint32_t ep_events;
    enum { ST_HELLO, ST_AUTH, ST_READY } state;
    uint16_t version;
    struct dp_chan chan;      /* traffic keys; chan.secure once AUTH is answered */
    uint8_t want_mac[DP_MAC_SIZE], server_mac[DP_MAC_SIZE]; /* the handshake's two proofs */
    struct dp_frame_rx rx;    /* an opened header whose payload has not fully arrived */
    uint8_t *in;
    size_t in_len, in_off, in_cap;
    struct resp out;
    size_t delayed_bytes;
    uint64_t out_acct;        /* out.bytes + delayed_bytes as last counted in the global cap */
    struct skel_cursor *skel;
    uint64_t requests, pages_sent;
    uint64_t lease_epoch;     /* the write lease this connection took (0: none); lib/lease.h */
    bool bulk;                /* DP_HELLO_FLAG_BULK: served after the others, little queued */
    char close_reason[200];
};

struct delayed {
    struct delayed *next;
    struct conn *c;
    struct resp r;
    uint64_t due;
};

struct pending_put {
    struct pending_put *next;
    struct conn *c;
    uint64_t id, recv_ns;
    uint32_t pages;
};

struct seg_build {
    struct dp_seg s;
    uint32_t first_piece, nr_pieces;
};
struct piece { int fd; uint64_t off; uint32_t len; };

/* A read-only mapping of a pages file: copying a page from it costs no
 * system call (the image files are ours and never change while served). */
struct file_map { int fd; const uint8_t *base; uint64_t size; };

struct server {
    struct file_map *maps;
    size_t nr_maps;
    const struct dp_server_opts *o;
    struct dp_checkpoint *cp;
    struct dp_overlay *ov;
    struct dp_lease_store *leases;    /* the one-writer rule (lib/lease.h) */
    struct dp_hotset_store *hotsets;  /* traces and GET_HOTSET (issue 7) */
    uint8_t cpid[DP_CPID_SIZE];       /* bound into every handshake */
    int ep, lfd, sfd, tfd;
    enum tag tag_listen, tag_signal, tag_timer, tag_metrics;
    struct dp_metrics_http *metrics;  /* --metrics endpoint, or NULL */
    struct dp_hist wb_lat;            /* PUT received -> durable (stats writeback_latency) */
    struct conn *conns;
    struct conn *graveyard;
    uint64_t next_cid;
    struct delayed *dq_head, *dq_tail;
    uint64_t dq_last_due;
    struct pending_put *puts_head, *puts_tail;
    struct dp_connlimit lim;          /* connection and input-memory limits (connlimit.h) */
    struct dp_buf task_map_payload;
    struct skel_file *skel;
    size_t nr_skel;
    struct dp_pmap access;
    uint64_t start_ns;
    double start_unix;
    bool stopping;
    struct dp_request req;        /* large: decoded into here */
    struct seg_build segs[DP_MAX_GET_PAGES];
    struct piece pieces[DP_MAX_GET_PAGES];
    struct {
        uint64_t connections, auth_failures, protocol_errors, disconnects;
        uint64_t requests[16];
        uint64_t pages_data, pages_zero, pages_not_lazy, pages_from_overlay;
        uint64_t bytes_out, bytes_in, sendfile_bytes, copied_bytes;
        uint64_t pages_written, put_requests, skeleton_bytes, puts_refused;
        uint64_t records_rejected, fenced_requests;
        uint64_t bulk_connections;
    } st;
};

static void conn_close(struct server *s, struct conn *c, const char *why);
static void conn_flush(struct server *s, struct conn *c);
static void conn_process_input(struct server *s, struct conn *c);
static bool lease_refuses(struct server *s, struct conn *c, uint64_t id, uint64_t recv_ns, bool write);

/* ---- responses ------------------------------------------------------- */
static struct out_item *resp_add_buf(struct resp *r, struct dp_buf *b)
{
    struct out_item *it = calloc(1, sizeof(*it));
    if (!it)
        return NULL;
    it->fd = -1;
    it->buf = b->data;
    it->len = b->len;
    r->bytes += b->len;
    memset(b, 0, sizeof(*b));
    if (r->tail)
        r->tail->next = it;
    else
        r->head = it;
    r->tail = it;
    return it;
}

static struct out_item *resp_add_file(struct resp *r, int fd, uint64_t off, size_t len)
{
    struct out_item *it = calloc(1, sizeof(*it));
    if (!it)
        return NULL;
    it->fd = fd;
    it->foff = off;
    it->len = len;
    r->bytes += len;
    if (r->tail)
        r->tail->next = it;
    else
        r->head = it;
    r->tail = it;
    return it;
}

static void resp_free(struct resp *r)
{
    for (struct out_item *it = r->head, *next; it; it = next) {
        next = it->next;
        free(it->buf);
        free(it);
    }
    memset(r, 0, sizeof(*r));
}

static void resp_append(struct resp *to, struct resp *from)
{
    if (!from->head)
        return;
    if (to->tail)
        to->tail->next = from->head;
    else
        to->head = from->head;
    to->tail = from->tail;
    to->bytes += from->bytes;
    memset(from, 0, sizeof(*from));
}

/* The timer follows the head of the delayed-reply FIFO (rttdelay: the same
 * timer the benchmarks' raw baseline waits on). */
static void arm_timer(struct server *s)
{
    if (s->dq_head)
        dp_rtt_timer_arm(s->tfd, s->dq_head->due);
    else
        dp_rtt_timer_disarm(s->tfd);
}

/* Keeps the global cap's count of queued output (connlimit.h) in step with
 * c's queue; a closed connection holds nothing any more. */
static void out_account(struct server *s, struct conn *c)
{
    uint64_t now = c->closed ? 0 : (uint64_t)c->out.bytes + c->delayed_bytes;
    dp_connlimit_output(&s->lim, c->out_acct, now);
    c->out_acct = now;
}

/* Hands a finished reply to the connection, now or after the emulated RTT.
 * The delay is the same for every reply, so a FIFO is ordered by due time. */
static void deliver(struct server *s, struct conn *c, struct resp *r, uint64_t recv_ns)
{
    if (c->closed) {
        resp_free(r);
        return;
    }
    if (!s->o->emulate_rtt_us) {
        resp_append(&c->out, r);
        out_account(s, c);
        return;
    }
    struct delayed *d = calloc(1, sizeof(*d));
    if (!d) {
        resp_free(r);
        conn_close(s, c, "out of memory queueing a delayed reply");
        return;
    }
    d->c = c;
    d->r = *r;
    memset(r, 0, sizeof(*r));
    d->due = dp_rtt_due_in_order(recv_ns, s->o->emulate_rtt_us, &s->dq_last_due);
    c->refs++;
    c->delayed_bytes += d->r.bytes;
    if (s->dq_tail)
        s->dq_tail->next = d;
    else
        s->dq_head = d;
    s->dq_tail = d;
    if (s->dq_head == d)
        arm_timer(s);
    out_account(s, c);
}

static void release_conn_ref(struct server *s, struct conn *c)
{
    (void)s;
    c->refs--;
}

static void on_timer(struct server *s)
{
    uint64_t ticks;
    ssize_t r = read(s->tfd, &ticks, sizeof(ticks));
    (void)r;
    uint64_t now = dp_now_ns();
    while (s->dq_head && dp_rtt_is_due(s->dq_head->due, now)) {
        struct delayed *d = s->dq_head;
        s->dq_head = d->next;
        if (!s->dq_head)
            s->dq_tail = NULL;
        struct conn *c = d->c;
        c->delayed_bytes -= d->r.bytes;
        release_conn_ref(s, c);
        if (c->closed) {
            resp_free(&d->r);
        } else {
            resp_append(&c->out, &d->r);
            out_account(s, c);
            conn_flush(s, c);
        }
        free(d);
    }
    arm_timer(s);
}

/* ---- sealing ------------------------------------------------------------ */
/* Replaces every buffer of a finished reply by its sealed records, in the
 * order the messages will reach the wire (deliver keeps that order, also
 * under --emulate-rtt), so the record counters match the receiver's. A
 * secure connection never has file items (handle_get copies instead). */
static int seal_resp(struct conn *c, struct resp *r)
{
    if (!c->chan.secure)
        return 0;
    size_t bytes = 0;
    for (struct out_item *it = r->head; it; it = it->next) {
        if (it->fd >= 0)
            return -1;
        if (it->sealed) {
            bytes += it->len;
            continue;
        }
        struct dp_buf sealed = {0};
        for (size_t off = 0; off < it->len;) {
            size_t left = it->len - off;
            size_t msg = left >= DP_HDR_SIZE ? DP_HDR_SIZE + (size_t)dp_get_u32(it->buf + off + 16) : SIZE_MAX;
            if (msg > left || dp_chan_append(&c->chan, &sealed, it->buf + off, msg) < 0) {
                dp_buf_free(&sealed);
                return -1;
            }
            off += msg;
        }
        free(it->buf);
        it->buf = sealed.data;
        it->len = sealed.len;
        it->off = 0;
        bytes += sealed.len;
    }
    r->bytes = bytes;
    return 0;
}

/* Every reply goes through here: sealed (secure connections), then handed
 * to deliver. */
static void queue_resp(struct server *s, struct conn *c, struct resp *r, uint64_t recv_ns)
{
    if (!c->closed && seal_resp(c, r) < 0) {
        resp_free(r);
        conn_close(s, c, "out of memory sealing a reply");
        return;
    }
    deliver(s, c, r, recv_ns);
}

/* ---- errors ------------------------------------------------------------ */
static void send_error(struct server *s, struct conn *c, uint64_t id, bool fatal, uint32_t code, const char *msg,
                       uint64_t recv_ns)
{
    struct dp_buf b = {0};
    struct resp r = {0};
    if (dp_enc_error(&b, id, fatal, code, msg) == 0 && resp_add_buf(&r, &b))
        queue_resp(s, c, &r, recv_ns);
    else
        dp_buf_free(&b);
    if (fatal) {
        s->st.protocol_errors++;
        dp_warn("client %s: %s: %s; closing the connection", c->peer, dp_errcode_name(code), msg);
        snprintf(c->close_reason, sizeof(c->close_reason), "%s: %s", dp_errcode_name(code), msg);
        c->closing = true;
        c->since_ns = dp_now_ns();
    } else {
        dp_info("client %s: request %" PRIu64 " refused: %s: %s", c->peer, id, dp_errcode_name(code), msg);
    }
}

/* ---- access log ----------------------------------------------------------- */
static void access_note(struct server *s, int32_t pid, uint64_t addr, uint32_t count, uint64_t now_us)
{
    for (uint32_t i = 0; i < count; i++) {
        bool created;
        struct dp_pmap_entry *e = dp_pmap_get(&s->access, pid, addr + (uint64_t)i * DP_PAGE_SIZE, &created);
        if (!e)
            return; /* out of memory: the log is advisory, serving goes on */
        if (created)
            e->value = now_us;
        if (e->aux != UINT32_MAX)
            e->aux++;
        e->value2 = now_us;
    }
}

static int cmp_access(const void *a, const void *b)
{
    const struct dp_pmap_entry *x = a, *y = b;
    if (x->pid != y->pid)
        return x->pid < y->pid ? -1 : 1;
    return x->addr < y->addr ? -1 : x->addr > y->addr;
}

/* Appends o as one line of JSON text (jansson's ", " and ": " separators, as
 * the hand-built replies had) to b; takes o. Reals keep prec significant
 * digits, enough for the microseconds of a Unix time. */
static int json_to_buf(json_t *o, size_t prec, struct dp_buf *b)
{
    char *t = o ? json_dumps(o, JSON_REAL_PRECISION(prec)) : NULL;
    int rc = t && dp_buf_put(b, t, strlen(t)) == 0 && dp_buf_put(b, "\n", 1) == 0 ? 0 : -1;
    free(t);
    json_decref(o);
    return rc;
}

/* The access log as the JSON that `query access-log`, --access-log and
 * `distriproc replay` (lib/accesslog.c) read: pages sorted by pid, address.
 * The whole tree is built at once (a few hundred bytes per touched page,
 * freed right after). */
static int access_log_json(struct server *s, struct dp_buf *b)
{
    size_t n = 0;
    struct dp_pmap_entry *v = malloc((s->access.len ? s->access.len : 1) * sizeof(*v));
    json_t *pages = json_array();
    if (!v || !pages) {
        free(v);
        json_decref(pages);
        return -1;
    }
    for (size_t i = 0; i < s->access.cap; i++)
        if (s->access.slots[i].addr != UINT64_MAX)
            v[n++] = s->access.slots[i];
    qsort(v, n, sizeof(*v), cmp_access);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        char addr[24];
        snprintf(addr, sizeof(addr), "0x%" PRIx64, v[i].addr);
        rc = json_array_append_new(pages, json_pack("{s:i, s:s, s:I, s:I, s:I}", "pid", (int)v[i].pid, "addr", addr,
                                                    "count", (json_int_t)v[i].aux, "first", (json_int_t)v[i].value,
                                                    "last", (json_int_t)v[i].value2));
    }
    free(v);
    if (rc < 0) {
        json_decref(pages);
        return -1;
    }
    return json_to_buf(json_pack("{s:f, s:s, s:I, s:o}", "start_unix", round(s->start_unix * 1e6) / 1e6,
                                 "time_unit", "us since start", "pages_touched", (json_int_t)n, "pages", pages),
                       16, b);
}

/* ---- request handlers ------------------------------------------------------ */
static void reply_simple(struct server *s, struct conn *c, struct dp_buf *b, uint64_t recv_ns)
{
    struct resp r = {0};
    if (!resp_add_buf(&r, b)) {
        dp_buf_free(b);
        conn_close(s, c, "out of memory");
        return;
    }
    queue_resp(s, c, &r, recv_ns);
}

/* HELLO: version, plaintext mode and cipher are settled, both ephemeral keys
 * are known, so the traffic keys and both proofs are derived here
 * (lib/channel.h); the reply carries the checkpoint's identity, which the
 * transcript binds. */
static void handle_hello(struct server *s, struct conn *c, const uint8_t *payload, uint32_t len, uint64_t id,
                         uint64_t recv_ns)
{
    const struct dp_hello *h = &s->req.u.hello;
    uint16_t lo = h->min_version > DP_PROTO_VERSION_MIN ? h->min_version : DP_PROTO_VERSION_MIN;
    uint16_t hi = h->max_version < DP_PROTO_VERSION_MAX ? h->max_version : DP_PROTO_VERSION_MAX;
    char msg[256];
    if (lo > hi || h->legacy) {
        snprintf(msg, sizeof(msg), "client speaks versions %u..%u, this server %u..%u (version 3 encrypts every "
                 "frame): upgrade distriproc on the destination", h->min_version, h->max_version,
                 DP_PROTO_VERSION_MIN, DP_PROTO_VERSION_MAX);
        send_error(s, c, id, true, DP_E_VERSION, msg, recv_ns);
        return;
    }
    bool plain = h->flags & DP_HELLO_FLAG_PLAINTEXT;
    if (plain != s->o->insecure_plaintext) {
        snprintf(msg, sizeof(msg), "%s: run both serve and the client with --insecure-plaintext, or neither",
                 plain ? "the client asks for plaintext frames but this server encrypts"
                       : "this server runs with --insecure-plaintext but the client encrypts");
        send_error(s, c, id, true, DP_E_PLAINTEXT_MISMATCH, msg, recv_ns);
        return;
    }
    uint32_t cipher = dp_chan_pick_cipher(h->ciphers);
    if (!cipher) {
        snprintf(msg, sizeof(msg), "no common cipher (client offers 0x%x, this server runs 0x%x)", h->ciphers,
                 dp_chan_ciphers_local());
        send_error(s, c, id, true, DP_E_VERSION, msg, recv_ns);
        return;
    }
    c->version = hi;
    if ((h->flags & DP_HELLO_FLAG_BULK) && !c->bulk) {
        c->bulk = true;
        s->st.bulk_connections++;
        int lowat = BULK_NOTSENT, prio = TC_PRIO_BULK; /* a priority qdisc's last band (pfifo_fast) */
        setsockopt(c->fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof(lowat));
        setsockopt(c->fd, SOL_SOCKET, SO_PRIORITY, &prio, sizeof(prio));
    }
    uint8_t sk[32];
    struct dp_hello_reply hr = {.version = hi, .max_payload = DP_MAX_PAYLOAD, .max_get_pages = DP_MAX_GET_PAGES,
                                .max_put_pages = DP_MAX_PUT_PAGES, .max_get_ranges = DP_MAX_GET_RANGES,
                                .flags = h->flags, .cipher = cipher};
    randombytes_buf(hr.server_nonce, sizeof(hr.server_nonce));
    randombytes_buf(sk, sizeof(sk));
    crypto_scalarmult_base(hr.eph_pk, sk);
    memcpy(hr.cpid, s->cpid, DP_CPID_SIZE);
    struct dp_buf b = {0};
    if (dp_enc_hello_reply(&b, id, &hr) < 0) {
        sodium_memzero(sk, sizeof(sk));
        dp_buf_free(&b);
        conn_close(s, c, "out of memory");
        return;
    }
    uint8_t th[32];
    struct dp_err err = {{0}};
    dp_chan_transcript(payload, len, b.data + DP_HDR_SIZE, DP_HELLO_REPLY_LEN, th);
    int rc = dp_chan_derive(s->o->key, s->o->key_len, sk, h->eph_pk, th, cipher, true, false, &c->chan,
                            c->want_mac, c->server_mac, &err);
    sodium_memzero(sk, sizeof(sk));
    if (rc < 0) {
        dp_buf_free(&b);
        send_error(s, c, id, true, DP_E_MALFORMED, err.msg, recv_ns);
        return;
    }
    c->state = ST_AUTH;
    reply_simple(s, c, &b, recv_ns);
}

/* AUTH: the client's proof; then ours, the last frame in clear. */
static void handle_auth(struct server *s, struct conn *c, uint64_t id, uint64_t recv_ns)
{
    const struct dp_auth *a = &s->req.u.auth;
    if (!dp_auth_mac_equal(c->want_mac, a->mac)) {
        s->st.auth_failures++;
        dp_warn("client %s: authentication failed (wrong key, or the handshake was altered on the path)", c->peer);
        send_error(s, c, id, true, DP_E_AUTH_FAILED,
                   "authentication failed: the client's key differs, or the handshake was altered on the path",
                   recv_ns);
        return;
    }
    struct dp_auth_reply ar;
    memcpy(ar.mac, c->server_mac, DP_MAC_SIZE);
    struct dp_buf b = {0};
    if (dp_enc_auth_reply(&b, id, &ar) < 0) {
        dp_buf_free(&b);
        conn_close(s, c, "out of memory");
        return;
    }
    c->state = ST_READY;
    dp_connlimit_authed(&s->lim, c->ip);
    reply_simple(s, c, &b, recv_ns);
    if (s->o->live)
        s->o->live->authenticated(s->o->live->ctx);
    /* From the next frame on, both directions are sealed records. */
    c->chan.secure = !s->o->insecure_plaintext;
    dp_info("client %s authenticated (protocol version %u, %s)", c->peer, c->version,
            c->chan.secure ? dp_chan_cipher_name(c->chan.cipher) : "PLAINTEXT: --insecure-plaintext");
}

static void handle_task_map(struct server *s, struct conn *c, uint64_t id, uint64_t recv_ns)
{
    if (s->task_map_payload.len > DP_MAX_PAYLOAD) {
        send_error(s, c, id, false, DP_E_TOO_LARGE, "task map exceeds the maximum payload", recv_ns);
        return;
    }
    struct dp_buf b = {0};
    if (dp_msg_append(&b, DP_MSG_TASK_MAP | DP_MSG_REPLY, 0, id, s->task_map_payload.data,
                      (uint32_t)s->task_map_payload.len) < 0) {
        dp_buf_free(&b);
        conn_close(s, c, "out of memory");
        return;
    }
    reply_simple(s, c, &b, recv_ns);
}

/* Where one page comes from: the overlay shadows the pages image. */
static void locate(struct server *s, const struct dp_task_image *t, int32_t pid, uint64_t addr,
                   struct dp_page_loc *loc)
{
    uint64_t off;
    if (t) {
        dp_task_locate(t, addr, loc);
        if (loc->kind != DP_PAGE_NOT_LAZY && dp_overlay_lookup(s->ov, pid, addr, &off)) {
            loc->kind = DP_PAGE_DATA;
            loc->fd = dp_overlay_fd(s->ov);
            loc->offset = off;
            loc->run_pages_left = 1;
            s->st.pages_from_overlay++;
        }
    } else {
        loc->kind = DP_PAGE_NOT_LAZY;
        loc->run_pages_left = UINT32_MAX;
    }
}

static uint32_t seg_kind(enum dp_page_kind k)
{
    return k == DP_PAGE_DATA ? DP_SEG_DATA : k == DP_PAGE_ZERO ? DP_SEG_ZERO : DP_SEG_NOT_LAZY;
}

static void handle_get(struct server *s, struct conn *c, uint64_t id, uint64_t recv_ns)
{
    const struct dp_get_req *g = &s->req.u.get;
    if (lease_refuses(s, c, id, recv_ns, false))
        return;
    uint32_t nsegs = 0, npieces = 0, data_pages = 0;
    uint64_t now_us = (dp_now_ns() - s->start_ns) / 1000;
    for (uint32_t i = 0; i < g->nr_ranges; i++) {
        const struct dp_get_range *r = &g->ranges[i];
        const struct dp_task_image *t = dp_checkpoint_find_task(s->cp, r->pid);
        struct seg_build *cur = NULL;
        for (uint32_t p = 0; p < r->count; p++) {
            uint64_t addr = r->addr + (uint64_t)p * DP_PAGE_SIZE;
            struct dp_page_loc loc;
            locate(s, t, r->pid, addr, &loc);
            uint32_t kind = seg_kind(loc.kind);
            if (!cur || cur->s.kind != kind) {
                cur = &s->segs[nsegs++];
                cur->s = (struct dp_seg){.kind = kind, .pid = r->pid, .count = 0, .addr = addr};
                cur->first_piece = npieces;
                cur->nr_pieces = 0;
            }
            cur->s.count++;
            if (kind == DP_SEG_DATA) {
                struct piece *last = cur->nr_pieces ? &s->pieces[npieces - 1] : NULL;
                if (last && last->fd == loc.fd && last->off + last->len == loc.offset) {
                    last->len += DP_PAGE_SIZE;
                } else {
                    s->pieces[npieces++] = (struct piece){.fd = loc.fd, .off = loc.offset, .len = DP_PAGE_SIZE};
                    cur->nr_pieces++;
                }
                data_pages++;
                s->st.pages_data++;
            } else if (kind == DP_SEG_ZERO) {
                s->st.pages_zero++;
            } else {
                s->st.pages_not_lazy++;
            }
            if (kind != DP_SEG_NOT_LAZY)
                access_note(s, r->pid, addr, 1, now_us);
        }
    }
    size_t payload = DP_GET_REPLY_HDR + (size_t)nsegs * DP_SEG_HDR + (size_t)data_pages * DP_PAGE_SIZE;
    struct dp_buf b = {0};
    struct resp out = {0};
    /* A sealed reply is one message sealed in place: its data is copied in,
     * never sendfile'd, with room for the header record's tag after the
     * header and the payload record's tag at the end (no second copy). */
    bool secure = c->chan.secure;
    size_t gap = secure ? DP_CHAN_TAG : 0;
    uint64_t sendfile_min = secure ? UINT64_MAX : s->o->sendfile_min;
    /* One allocation for the whole reply when the data is copied in. */
    if (dp_buf_reserve(&b, DP_HDR_SIZE + 2 * gap + (sendfile_min > DP_PAGE_SIZE * (uint64_t)DP_MAX_GET_PAGES
                                                        ? payload : DP_GET_REPLY_HDR + DP_SEG_HDR)) < 0)
        goto oom;
    struct dp_hdr h = {.version = 1, .type = DP_MSG_GET_PAGES | DP_MSG_REPLY, .id = id, .len = (uint32_t)payload};
    dp_hdr_encode(b.data, &h);
    dp_enc_get_reply_hdr(b.data + DP_HDR_SIZE + gap, nsegs);
    b.len = DP_HDR_SIZE + gap + DP_GET_REPLY_HDR;
    for (uint32_t i = 0; i < nsegs; i++) {
        struct seg_build *sb = &s->segs[i];
        if (dp_buf_reserve(&b, DP_SEG_HDR) < 0)
            goto oom;
        dp_enc_seg_hdr(b.data + b.len, &sb->s);
        b.len += DP_SEG_HDR;
        for (uint32_t k = 0; k < sb->nr_pieces; k++) {
            struct piece *pc = &s->pieces[sb->first_piece + k];
            /* Write-back pages are always copied: the log may be compacted
             * (new file, new offsets) while a reply waits in a queue. */
            if (pc->len >= sendfile_min && pc->fd != dp_overlay_fd(s->ov)) {
                if (!resp_add_buf(&out, &b) || !resp_add_file(&out, pc->fd, pc->off, pc->len))
                    goto oom;
                s->st.sendfile_bytes += pc->len;
                continue;
            }
            if (dp_buf_reserve(&b, pc->len) < 0)
                goto oom;
            const struct file_map *fm = NULL;
            for (size_t m = 0; m < s->nr_maps; m++)
                if (s->maps[m].fd == pc->fd) {
                    fm = &s->maps[m];
                    break;
                }
            if (fm && pc->off + pc->len <= fm->size) {
                memcpy(b.data + b.len, fm->base + pc->off, pc->len);
                b.len += pc->len;
                s->st.copied_bytes += pc->len;
                continue;
            }
            ssize_t n = pread(pc->fd, b.data + b.len, pc->len, (off_t)pc->off);
            if (n != (ssize_t)pc->len) {
                char msg[160];
                snprintf(msg, sizeof(msg), "reading %u bytes of page data at offset %" PRIu64 " failed: %s",
                         pc->len, pc->off, n < 0 ? strerror(errno) : "short read (image truncated?)");
                dp_error("%s", msg);
                dp_buf_free(&b);
                resp_free(&out);
                send_error(s, c, id, false, DP_E_IO, msg, recv_ns);
                return;
            }
            b.len += pc->len;
            s->st.copied_bytes += pc->len;
        }
    }
    if (secure) {
        if (dp_buf_reserve(&b, DP_CHAN_TAG) < 0 || dp_chan_seal_inplace(&c->chan, b.data) < 0)
            goto oom;
        b.len += DP_CHAN_TAG;
    }
    struct out_item *item = b.len ? resp_add_buf(&out, &b) : NULL;
    if (b.len && !item)
        goto oom;
    if (item)
        item->sealed = secure;
    c->pages_sent += g->total_pages;
    queue_resp(s, c, &out, recv_ns);
    return;
oom:
    dp_buf_free(&b);
    resp_free(&out);
    conn_close(s, c, "out of memory building a GET reply");
}

static void handle_put(struct server *s, struct conn *c, uint64_t id, uint64_t recv_ns)
{
    const struct dp_put_req *p = &s->req.u.put;
    const char *failure = dp_overlay_failure(s->ov);
    if (failure) {
        /* Never again a durable acknowledgement from this log (see commit_puts). */
        char msg[DP_MAX_ERROR_MSG];
        snprintf(msg, sizeof(msg), "write-back refused: this server takes no more write-backs since %s; "
                 "keep the pages, and restart the server once its disk is checked", failure);
        s->st.puts_refused++;
        send_error(s, c, id, false, DP_E_IO, msg, recv_ns);
        return;
    }
    if (lease_refuses(s, c, id, recv_ns, true))
        return;
    /* Validate every page before writing any. */
    for (uint32_t i = 0; i < p->nr_ranges; i++) {
        const struct dp_put_range *r = &p->ranges[i];
        const struct dp_task_image *t = dp_checkpoint_find_task(s->cp, r->pid);
        char msg[160];
        if (!t) {
            snprintf(msg, sizeof(msg), "PUT range %u: no task with pid %d in the checkpoint", i, r->pid);
            send_error(s, c, id, false, DP_E_NO_TASK, msg, recv_ns);
            return;
        }
        for (uint32_t k = 0; k < r->count; k++) {
            struct dp_page_loc loc;
            uint64_t addr = r->addr + (uint64_t)k * DP_PAGE_SIZE;
            dp_task_locate(t, addr, &loc);
            if (loc.kind == DP_PAGE_NOT_LAZY) {
                snprintf(msg, sizeof(msg), "PUT: page 0x%" PRIx64 " of pid %d is not lazy memory", addr, r->pid);
                send_error(s, c, id, false, DP_E_NOT_LAZY, msg, recv_ns);
                return;
            }
        }
    }
    for (uint32_t i = 0; i < p->nr_ranges; i++) {
        const struct dp_put_range *r = &p->ranges[i];
        struct dp_err err;
        if (dp_overlay_append(s->ov, r->pid, r->addr, r->count, r->data, &err) < 0) {
            dp_error("write-back failed: %s", err.msg);
            send_error(s, c, id, false, DP_E_IO, err.msg, recv_ns);
            return;
        }
    }
    struct pending_put *pp = calloc(1, sizeof(*pp));
    if (!pp) {
        conn_close(s, c, "out of memory");
        return;
    }
    *pp = (struct pending_put){.c = c, .id = id, .recv_ns = recv_ns, .pages = p->total_pages};
    c->refs++;
    if (s->puts_tail)
        s->puts_tail->next = pp;
    else
        s->puts_head = pp;
    s->puts_tail = pp;
    s->st.put_requests++;
    s->st.pages_written += p->total_pages;
}

static void maybe_compact(struct server *s)
{
    if (!dp_overlay_wants_compaction(s->ov))
        return;
    struct dp_overlay_stats before, after;
    struct dp_err err;
    dp_overlay_get_stats(s->ov, &before);
    uint64_t t0 = dp_now_ns();
    if (dp_overlay_compact(s->ov, &err) < 0) {
        dp_warn("write-back log compaction failed (the log keeps growing): %s", err.msg);
        return;
    }
    dp_overlay_get_stats(s->ov, &after);
    dp_info("write-back log compacted: %" PRIu64 " -> %" PRIu64 " bytes (%" PRIu64 " live pages) in %.1f ms",
            before.log_bytes, after.log_bytes, after.live_pages, (double)(dp_now_ns() - t0) / 1e6);
}

/* Called once per loop iteration: one fdatasync covers every PUT since the
 * last. If it fails the waiting PUTs get an IO error, and so does every later
 * one (handle_put): the overlay log is failed for good, since a later sync
 * could succeed without the pages the failed one lost. Reads go on, served
 * from what was synced before. */
static int commit_puts(struct server *s)
{
    if (!s->puts_head)
        return 0;
    struct dp_err err;
    char msg[DP_MAX_ERROR_MSG];
    int rc = dp_overlay_sync(s->ov, &err);
    if (rc < 0) {
        size_t waiting = 0;
        for (struct pending_put *pp = s->puts_head; pp; pp = pp->next)
            waiting++;
        dp_error("%s: write-backs can no longer be made durable. The %zu PUT(s) waiting for this sync get an IO "
                 "error and every later PUT is refused; pages written back before are still served. Check the "
                 "disk under %s (dmesg), then restart the server: it replays what reached the disk",
                 err.msg, waiting, s->o->images_dir);
        snprintf(msg, sizeof(msg), "write-back not durable: %s; this server takes no more write-backs: keep the "
                 "pages, and restart the server once its disk is checked", err.msg);
        s->st.puts_refused += waiting;
    }
    while (s->puts_head) {
        struct pending_put *pp = s->puts_head;
        s->puts_head = pp->next;
        struct conn *c = pp->c;
        release_conn_ref(s, c);
        if (rc < 0)
            s->st.pages_written -= pp->pages; /* counted as written back when queued */
        else
            dp_hist_add(&s->wb_lat, dp_now_ns() - pp->recv_ns);
        if (!c->closed) {
            if (rc < 0) {
                send_error(s, c, pp->id, false, DP_E_IO, msg, pp->recv_ns);
            } else {
                struct dp_buf b = {0};
                if (dp_enc_put_reply(&b, pp->id, pp->pages) == 0)
                    reply_simple(s, c, &b, pp->recv_ns);
                else
                    dp_buf_free(&b);
            }
            conn_flush(s, c);
        }
        free(pp);
    }
    s->puts_tail = NULL;
    if (rc == 0)
        maybe_compact(s);
    return rc;
}

/* The STATS reply: the counters `distriproc query stats` prints and the tests
 * and benches read by name (the metrics exposition reads the same ones). */
static void handle_stats(struct server *s, struct conn *c, uint64_t id, uint64_t recv_ns)
{
    struct dp_overlay_stats os;
    dp_overlay_get_stats(s->ov, &os);
    size_t nconn = 0;
    for (struct conn *k = s->conns; k; k = k->next)
        nconn++;
    const struct dp_lease *lease = dp_lease_store_get(s->leases);
    json_t *o = json_object(), *req = json_object();
    const char *const *names = dp_server_request_names; /* shared with the metrics */
    for (size_t i = 1; req && names[i]; i++)
        json_object_set_new(req, names[i], json_integer((json_int_t)s->st.requests[i]));
    const struct {
        const char *k;
        uint64_t v;
    } kv[] = {
        {"emulate_rtt_us", s->o->emulate_rtt_us},
        {"sendfile_min", s->o->sendfile_min},
        {"tasks", s->cp->nr_tasks},
        {"lazy_bytes", s->cp->lazy_bytes},
        {"clients", nconn},
        {"connections", s->st.connections},
        {"auth_failures", s->st.auth_failures},
        {"protocol_errors", s->st.protocol_errors},
        {NULL, 0}, /* "requests" goes here */
        {"pages_data", s->st.pages_data},
        {"pages_zero", s->st.pages_zero},
        {"pages_not_lazy", s->st.pages_not_lazy},
        {"pages_from_overlay", s->st.pages_from_overlay},
        {"bytes_in", s->st.bytes_in},
        {"bytes_out", s->st.bytes_out},
        {"sendfile_bytes", s->st.sendfile_bytes},
        {"copied_bytes", s->st.copied_bytes},
        {"skeleton_bytes", s->st.skeleton_bytes},
        {"put_requests", s->st.put_requests},
        {"pages_written_back", s->st.pages_written},
        {"overlay_pages", os.live_pages},
        {"overlay_records", os.records},
        {"overlay_log_bytes", os.log_bytes},
        {"overlay_torn_bytes_dropped", os.torn_bytes},
        {"overlay_syncs", os.syncs},
        {"overlay_compactions", os.compactions},
        {"writeback_failed", dp_overlay_failure(s->ov) != NULL},
        {"lease_epoch", lease->epoch},
        {"lease_held", lease->held},
        {"fenced_requests", s->st.fenced_requests},
        {"bulk_connections", s->st.bulk_connections},
        {"puts_refused", s->st.puts_refused},
        {"records_rejected", s->st.records_rejected},
        {"insecure_plaintext", s->o->insecure_plaintext},
        {"conns_refused", s->lim.refused},
        {"conns_pushed_out", s->lim.evicted},
        {"conns_idle_closed", s->lim.idle_closed},
        {"input_buffered_bytes", s->lim.buffered},
        {"input_buffer_refusals", s->lim.buffer_refusals},
        {"output_buffered_bytes", s->lim.out_buffered},
        {"output_pauses", s->lim.output_pauses},
        {"pages_touched", s->access.len},
    };
    double up_ms = round((double)(dp_now_ns() - s->start_ns) / 1e6);
    int bad = !o || !req || json_object_set_new(o, "uptime_s", json_real(up_ms / 1e3)) < 0;
    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]) && !bad; i++)
        bad = kv[i].k ? json_object_set_new(o, kv[i].k, json_integer((json_int_t)kv[i].v))
                      : json_object_set(o, "requests", req);
    if (!bad)
        /* the histogram as the daemon's stats print it (lib/lazystats.c), so the two replies agree */
        bad = json_object_set_new(o, "writeback_latency", dp_hist_jobj(&s->wb_lat)) < 0 ||
              json_object_set_new(o, "writeback_latency_buckets_us", dp_hist_jbuckets(&s->wb_lat)) < 0;
    json_decref(req);
    struct dp_buf j = {0}, b = {0};
    int rc = bad ? (json_decref(o), -1) : json_to_buf(o, 15, &j);
    if (rc == 0)
        rc = dp_msg_append(&b, DP_MSG_STATS | DP_MSG_REPLY, 0, id, j.data, (uint32_t)j.len);
    dp_buf_free(&j);
    if (rc < 0) {
        dp_buf_free(&b);
        conn_close(s, c, "out of memory");
        return;
    }
    reply_simple(s, c, &b, recv_ns);
}

/* The --metrics exposition: the counters handle_stats prints, read the same
 * way, so a scrape and `distriproc query stats` cannot disagree. */
static void metrics_render(void *ctx, struct dp_sbuf *out)
{
    struct server *s = ctx;
    struct dp_overlay_stats os;
    dp_overlay_get_stats(s->ov, &os);
    struct dp_server_metrics m = {
        .uptime_ms = (dp_now_ns() - s->start_ns) / 1000000,
        .tasks = s->cp->nr_tasks,
        .lazy_bytes = s->cp->lazy_bytes,
        .connections = s->st.connections,
        .auth_failures = s->st.auth_failures,
        .protocol_errors = s->st.protocol_errors,
        .records_rejected = s->st.records_rejected,
        .pages_data = s->st.pages_data,
        .pages_zero = s->st.pages_zero,
        .pages_not_lazy = s->st.pages_not_lazy,
        .pages_from_overlay = s->st.pages_from_overlay,
        .bytes_in = s->st.bytes_in,
        .bytes_out = s->st.bytes_out,
        .put_requests = s->st.put_requests,
        .pages_written_back = s->st.pages_written,
        .puts_refused = s->st.puts_refused,
        .writeback_failed = dp_overlay_failure(s->ov) != NULL,
        .overlay_pages = os.live_pages,
        .pages_touched = s->access.len,
        .writeback_latency = &s->wb_lat,
    };
    for (struct conn *k = s->conns; k; k = k->next)
        m.clients++;
    _Static_assert(sizeof(m.requests) == sizeof(s->st.requests), "one request table");
    memcpy(m.requests, s->st.requests, sizeof(m.requests));
    dp_metrics_server_text(out, &m);
}

static void handle_access_log(struct server *s, struct conn *c, uint64_t id, uint64_t recv_ns)
{
    struct dp_buf j = {0};
    struct resp r = {0};
    if (access_log_json(s, &j) < 0)
        goto oom;
    /* Chunks of at most 1 MiB; all but the last carry MORE. */
    for (size_t off = 0; off < j.len || off == 0;) {
        size_t n = j.len - off < DP_MAX_CHUNK_DATA ? j.len - off : DP_MAX_CHUNK_DATA;
        bool more = off + n < j.len;
        struct dp_buf b = {0};
        if (dp_msg_append(&b, DP_MSG_ACCESS_LOG | DP_MSG_REPLY, more ? DP_FLAG_MORE : 0, id, j.data + off,
                          (uint32_t)n) < 0 ||
            !resp_add_buf(&r, &b)) {
            dp_buf_free(&b);
            goto oom;
        }
        off += n;
        if (!more)
            break;
    }
    dp_buf_free(&j);
    queue_resp(s, c, &r, recv_ns);
    return;
oom:
    dp_buf_free(&j);
    resp_free(&r);
    conn_close(s, c, "out of memory building the access log");
}

/* ---- skeleton ------------------------------------------------------------ */

/* The skeleton plan (lib/skeleton.h) in the form the streamer walks. */
static int skel_plan(struct server *s, struct dp_err *err)
{
    struct dp_skeleton_file *plan;
    size_t n;
    if (dp_skeleton_plan(s->cp, &plan, &n, err) < 0)
        return -1;
    s->skel = calloc(n ? n : 1, sizeof(*s->skel));
    if (!s->skel) {
        dp_skeleton_free(plan, n);
        dp_err_set(err, "out of memory");
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct dp_skeleton_file *pf = &plan[i];
        struct skel_file *f = &s->skel[s->nr_skel];
        size_t len = strlen(pf->name);
        if (len > DP_MAX_NAME || !dp_skel_name_ok(pf->name, len)) {
            dp_err_set(err, "image file name %s cannot be sent (longer than %u bytes or not a plain relative path)",
                       pf->name, DP_MAX_NAME);
            rc = -1;
            break;
        }
        memcpy(f->name, pf->name, len + 1);
        f->size = pf->size;
        char path[8400];
        struct stat sb;
        snprintf(path, sizeof(path), "%s/%s", s->o->images_dir, pf->name);
        f->mode = stat(path, &sb) == 0 ? (sb.st_mode & 0777) : 0600;
        f->ext = calloc(pf->nr_extents ? pf->nr_extents : 1, sizeof(*f->ext));
        if (!f->ext) {
            dp_err_set(err, "out of memory");
            rc = -1;
            break;
        }
        for (size_t k = 0; k < pf->nr_extents; k++)
            f->ext[k] = (struct skel_extent){pf->extents[k].offset, pf->extents[k].length};
        f->nr_ext = pf->nr_extents;
        s->nr_skel++;
    }
    uint64_t send = 0, total = 0;
    dp_skeleton_totals(plan, n, &send, &total);
    dp_skeleton_free(plan, n);
    if (rc == 0) {
        char a[32], b[32];
        dp_format_bytes(send, a, sizeof(a));
        dp_format_bytes(total, b, sizeof(b));
        dp_info("skeleton: %zu files, %s to send of %s", s->nr_skel, a, b);
    }
    return rc;
}

/* Queues skeleton chunks while the connection's output is below the low
 * mark and the global cap allows (connlimit.h). */
static void skel_pump(struct server *s, struct conn *c)
{
    struct skel_cursor *k = c->skel;
    while (k && !c->closed && !c->closing && c->out.bytes + c->delayed_bytes < LOW_WATER &&
           dp_connlimit_may_reply(&s->lim, (uint64_t)c->out.bytes + c->delayed_bytes)) {
        struct dp_buf b = {0};
        struct dp_skel_chunk ch = {0};
        bool end = k->file >= s->nr_skel;
        uint64_t recv_ns = dp_now_ns();
        if (end) {
            ch.kind = DP_SKEL_END;
            ch.file_size = s->nr_skel;
            ch.offset = k->bytes;
        } else {
            const struct skel_file *f = &s->skel[k->file];
            ch.kind = DP_SKEL_DATA;
            ch.mode = f->mode;
            ch.file_size = f->size;
            ch.name_len = (uint16_t)strlen(f->name);
            memcpy(ch.name, f->name, ch.name_len);
            if (k->ext < f->nr_ext) {
                const struct skel_extent *e = &f->ext[k->ext];
                uint64_t left = e->len - k->done_in_ext;
                ch.offset = e->off + k->done_in_ext;
                ch.data_len = (uint32_t)(left < SKEL_CHUNK ? left : SKEL_CHUNK);
            } else {
                ch.offset = 0; /* an empty file, or one that is all lazy: create it */
                ch.data_len = 0;
            }
        }
        size_t at = b.len;
        if (dp_msg_append(&b, DP_MSG_GET_SKELETON | DP_MSG_REPLY, end ? 0 : DP_FLAG_MORE, k->id, NULL, 0) < 0 ||
            dp_enc_skel_chunk_hdr(&b, &ch) < 0 || dp_buf_reserve(&b, ch.data_len) < 0) {
            dp_buf_free(&b);
            conn_close(s, c, "out of memory streaming the skeleton");
            return;
        }
        if (ch.data_len) {
            char path[8400];
            snprintf(path, sizeof(path), "%s/%s", s->o->images_dir, ch.name);
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            ssize_t n = fd < 0 ? -1 : pread(fd, b.data + b.len, ch.data_len, (off_t)ch.offset);
            int e = errno;
            if (fd >= 0)
                close(fd);
            if (n != (ssize_t)ch.data_len) {
                char msg[600];
                snprintf(msg, sizeof(msg), "reading %s for the skeleton failed: %s", ch.name,
                         n < 0 ? strerror(e) : "file shrank");
                uint64_t id = k->id;
                dp_buf_free(&b);
                free(c->skel);
                c->skel = NULL;
                send_error(s, c, id, false, DP_E_IO, msg, recv_ns);
                return;
            }
            b.len += ch.data_len;
        }
        dp_put_u32(b.data + at + 16, (uint32_t)(b.len - at - DP_HDR_SIZE));
        k->bytes += ch.data_len;
        s->st.skeleton_bytes += ch.data_len;
        reply_simple(s, c, &b, recv_ns);
        if (end) {
            dp_info("client %s: skeleton sent: %zu files, %" PRIu64 " bytes", c->peer, s->nr_skel, k->bytes);
            free(c->skel);
            c->skel = NULL;
            return;
        }
        /* Advance. */
        const struct skel_file *f = &s->skel[k->file];
        if (k->ext < f->nr_ext) {
            k->done_in_ext += ch.data_len;
            if (k->done_in_ext == f->ext[k->ext].len) {
                k->ext++;
                k->done_in_ext = 0;
            }
        }
        if (k->ext >= f->nr_ext) {
            k->file++;
            k->ext = 0;
            k->done_in_ext = 0;
        }
    }
}

static void handle_skeleton(struct server *s, struct conn *c, uint64_t id, uint64_t recv_ns)
{
    if (c->skel) {
        send_error(s, c, id, false, DP_E_BUSY, "a skeleton download is already running on this connection",
                   recv_ns);
        return;
    }
    c->skel = calloc(1, sizeof(*c->skel));
    if (!c->skel) {
        conn_close(s, c, "out of memory");
        return;
    }
    c->skel->id = id;
    skel_pump(s, c);
}

/* ---- connections ---------------------------------------------------------- */
static void ep_update(struct server *s, struct conn *c)
{
    if (c->closed)
        return;
    uint32_t ev = 0;
    if (!c->paused && !c->closing)
        ev |= EPOLLIN;
    if (c->out.head)
        ev |= EPOLLOUT;
    if (ev == c->ep_events)
        return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    epoll_ctl(s->ep, EPOLL_CTL_MOD, c->fd, &e);
    c->ep_events = ev;
}

static void conn_close(struct server *s, struct conn *c, const char *why)
{
    if (c->closed)
        return;
    dp_info("client %s disconnected: %s (%" PRIu64 " requests, %" PRIu64 " pages sent)", c->peer, why,
            c->requests, c->pages_sent);
    s->st.disconnects++;
    dp_connlimit_remove(&s->lim, c->ip, c->state == ST_READY);
    dp_connlimit_buffer(&s->lim, c->in_cap, 0); /* the buffer itself is freed with c */
    epoll_ctl(s->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->closed = true;
    resp_free(&c->out);
    out_account(s, c);
    free(c->skel);
    c->skel = NULL;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    /* Freed at the end of the loop iteration, once nothing points at it. */
    c->next = s->graveyard;
    c->prev = NULL;
    s->graveyard = c;
}

static void bury(struct server *s)
{
    struct conn **pp = &s->graveyard;
    while (*pp) {
        struct conn *c = *pp;
        if (c->refs == 0) {
            *pp = c->next;
            dp_chan_free(&c->chan);
            free(c->in);
            free(c);
        } else {
            pp = &c->next;
        }
    }
}

static void conn_flush(struct server *s, struct conn *c)
{
    while (!c->closed && c->out.head) {
        struct out_item *it = c->out.head;
        ssize_t n;
        if (it->fd >= 0) {
            off_t off = (off_t)it->foff;
            n = sendfile(c->fd, it->fd, &off, it->len);
            if (n == 0) {
                conn_close(s, c, "page data file ended early (truncated image?)");
                return;
            }
        } else {
            struct iovec iov[MAX_IOV];
            int cnt = 0;
            struct out_item *x = it;
            for (; x && x->fd < 0 && cnt < MAX_IOV; x = x->next, cnt++)
                iov[cnt] = (struct iovec){x->buf + x->off, x->len - x->off};
            struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)cnt};
            /* A file item follows: let the kernel merge our header with it. */
            n = sendmsg(c->fd, &mh, MSG_NOSIGNAL | (x ? MSG_MORE : 0));
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            char why[128];
            snprintf(why, sizeof(why), "send failed: %s", strerror(errno));
            conn_close(s, c, why);
            return;
        }
        s->st.bytes_out += (uint64_t)n;
        c->out.bytes -= (size_t)n;
        c->active_ns = dp_now_ns();
        size_t left = (size_t)n;
        while (left && c->out.head) {
            it = c->out.head;
            size_t avail = it->fd >= 0 ? it->len : it->len - it->off;
            size_t take = left < avail ? left : avail;
            if (it->fd >= 0) {
                it->foff += take;
                it->len -= take;
            } else {
                it->off += take;
            }
            left -= take;
            if ((it->fd >= 0 && it->len == 0) || (it->fd < 0 && it->off == it->len)) {
                c->out.head = it->next;
                if (!c->out.head)
                    c->out.tail = NULL;
                free(it->buf);
                free(it);
            }
        }
    }
    if (c->closed)
        return;
    out_account(s, c);
    if (c->closing && !c->out.head && !c->delayed_bytes && c->refs == 0) {
        conn_close(s, c, c->close_reason[0] ? c->close_reason : "closed after an error");
        return;
    }
    if (c->skel)
        skel_pump(s, c);
    uint64_t queued = (uint64_t)c->out.bytes + c->delayed_bytes;
    if (c->paused && queued < (c->bulk ? BULK_LOW_WATER : LOW_WATER) && (queued == 0 || s->lim.buffered + s->lim.out_buffered <
                                                              s->lim.cfg.max_buffered)) {
        c->paused = false;
        conn_process_input(s, c);
        if (c->closed)
            return;
    }
    ep_update(s, c);
}

/* PUT_TRACE / GET_HOTSET (protocol version 2; lib/pageserver_hotset.h). */
static void handle_hotset(struct server *s, struct conn *c, const struct dp_hdr *h, const uint8_t *payload,
                          uint64_t recv_ns)
{
    struct dp_err err = {{0}};
    if (c->version < DP_PROTO_VERSION_HOTSET) {
        snprintf(err.msg, sizeof(err.msg), "request type 0x%02x needs protocol version %d, this connection "
                 "negotiated %u", h->type, DP_PROTO_VERSION_HOTSET, c->version);
        send_error(s, c, h->id, true, DP_E_UNKNOWN_TYPE, err.msg, recv_ns);
        return;
    }
    if (h->flags) {
        send_error(s, c, h->id, true, DP_E_MALFORMED, "requests carry no flags", recv_ns);
        return;
    }
    struct dp_buf b = {0};
    int rc;
    if (h->type == DP_MSG_PUT_TRACE) {
        uint64_t pages = 0;
        uint32_t runs = 0;
        char name[256] = "";
        rc = dp_hotset_store_put_trace(s->hotsets, payload, h->len, &pages, &runs, name, sizeof(name), &err);
        if (rc == DP_E_OK) {
            dp_info("client %s: stored a fault trace of %" PRIu64 " pages in %u runs as %s", c->peer, pages, runs,
                    name);
            rc = dp_enc_put_trace_reply(&b, h->id, pages, runs) < 0 ? DP_E_INTERNAL : DP_E_OK;
        }
    } else {
        uint32_t which = 0;
        rc = dp_dec_get_hotset_req(payload, h->len, &which, &err);
        if (rc == DP_E_MALFORMED) {
            send_error(s, c, h->id, true, (uint32_t)rc, err.msg, recv_ns);
            return;
        }
        uint8_t *file = NULL;
        size_t len = 0;
        rc = dp_hotset_store_get(s->hotsets, which, &file, &len, &err);
        if (rc == DP_E_OK && dp_msg_append(&b, DP_MSG_GET_HOTSET | DP_MSG_REPLY, 0, h->id, file, (uint32_t)len) < 0)
            rc = DP_E_INTERNAL;
        free(file);
    }
    if (rc != DP_E_OK) {
        dp_buf_free(&b);
        /* a refused upload or a missing hot set is not the client's protocol error */
        send_error(s, c, h->id, rc == DP_E_MALFORMED, (uint32_t)rc, err.msg[0] ? err.msg : "out of memory", recv_ns);
        return;
    }
    reply_simple(s, c, &b, recv_ns);
}

/* MIGRATION: the destination's verdict (lib/livesm.h). Images mode has no
 * source tree to commit or roll back: it answers {"mode": "images"}. */
static void handle_migration(struct server *s, struct conn *c, const struct dp_hdr *h, const uint8_t *payload,
                             uint64_t recv_ns)
{
    struct dp_err err = {{0}};
    uint32_t verdict;
    char out[512];
    if (dp_json_line(json_pack("{s:s}", "mode", "images"), out, sizeof(out)) < 0) {
        conn_close(s, c, "out of memory");
        return;
    }
    if (dp_live_verdict_decode(payload, h->len, &verdict, &err) < 0) {
        send_error(s, c, h->id, true, DP_E_MALFORMED, err.msg, recv_ns);
        return;
    }
    if (s->o->live && s->o->live->verdict(s->o->live->ctx, verdict, out, sizeof(out), &err) < 0) {
        send_error(s, c, h->id, false, DP_E_SEQUENCE, err.msg, recv_ns);
        return;
    }
    struct dp_buf b = {0};
    if (dp_msg_append(&b, DP_MSG_MIGRATION | DP_MSG_REPLY, 0, h->id, out, (uint32_t)strlen(out)) < 0) {
        dp_buf_free(&b);
        conn_close(s, c, "out of memory");
        return;
    }
    reply_simple(s, c, &b, recv_ns);
}

/* ---- write lease (lib/lease.h) ------------------------------------------- */

/* A GET or PUT from a connection whose lease is stale (or, for a PUT,
 * without a lease while someone holds it) is refused, non-fatally, with why.
 * Returns true if refused. */
static bool lease_refuses(struct server *s, struct conn *c, uint64_t id, uint64_t recv_ns, bool write)
{
    char why[DP_MAX_ERROR_MSG];
    const struct dp_lease *l = dp_lease_store_get(s->leases);
    int rc = write ? dp_lease_may_write(l, c->lease_epoch, why, sizeof(why))
                   : dp_lease_may_read(l, c->lease_epoch, why, sizeof(why));
    if (rc == DP_E_OK)
        return false;
    s->st.fenced_requests++;
    if (write)
        s->st.puts_refused++;
    send_error(s, c, id, false, (uint32_t)rc, why, recv_ns);
    return true;
}

/* A new epoch: the pending write-backs are made durable and acknowledged in
 * the generation they were written to, that log is moved aside (kept), the
 * new writer gets an empty one, and connections of older epochs are told
 * they are fenced and closed. -1 if the lease could not be made durable. */
static int lease_new_generation(struct server *s, const struct dp_lease *next, char *archived, size_t len,
                                struct dp_err *err)
{
    commit_puts(s);
    if (dp_overlay_failure(s->ov)) {
        dp_err_set(err, "the write-back log has failed (%s); restart the server before a new writer starts",
                   dp_overlay_failure(s->ov));
        return -1;
    }
    dp_overlay_close(s->ov);
    s->ov = NULL;
    int rc = dp_lease_store_apply(s->leases, next, true, archived, len, err);
    struct dp_err oerr;
    if (dp_overlay_open(s->o->images_dir, &s->ov, &oerr) < 0)
        dp_die("cannot reopen the write-back log after a change of write lease: %s. The lease file and the logs on "
               "disk are consistent: fix the cause and start the server again", oerr.msg);
    return rc;
}

/* Wall-clock microseconds: when a lease was granted, for the messages. */
static uint64_t wall_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

/* LEASE (protocol version 4): grant, resume, release or refuse. */
static void handle_lease(struct server *s, struct conn *c, const struct dp_hdr *h, const uint8_t *payload,
                         uint64_t recv_ns)
{
    struct dp_lease_ask ask;
    struct dp_err err = {{0}};
    if (h->flags || dp_dec_lease_req(payload, h->len, &ask, &err) != DP_E_OK) {
        send_error(s, c, h->id, true, DP_E_MALFORMED, h->flags ? "requests carry no flags" : err.msg, recv_ns);
        return;
    }
    struct dp_lease cur = *dp_lease_store_get(s->leases), next;
    char why[DP_MAX_ERROR_MSG], archived[4400] = "";
    enum dp_lease_verdict v = dp_lease_decide(&cur, &ask, wall_us(), &next, why, sizeof(why));
    if (v == DP_LEASE_HELD || v == DP_LEASE_STALE) {
        if (v == DP_LEASE_STALE)
            c->lease_epoch = ask.epoch; /* what else it asks on this connection is refused too (FENCED) */
        send_error(s, c, h->id, false, v == DP_LEASE_HELD ? DP_E_LEASE_HELD : DP_E_FENCED, why, recv_ns);
        return;
    }
    int rc = 0;
    if (v == DP_LEASE_GRANTED)
        rc = lease_new_generation(s, &next, archived, sizeof(archived), &err);
    else if (v == DP_LEASE_RELEASED)
        rc = dp_lease_store_apply(s->leases, &next, false, archived, sizeof(archived), &err);
    if (rc < 0) {
        dp_error("client %s: write lease not changed: %s", c->peer, err.msg);
        send_error(s, c, h->id, false, DP_E_IO, err.msg, recv_ns);
        return;
    }
    dp_info("client %s: %s%s%s", c->peer, why, archived[0] ? "; the earlier generation's write-back log is kept as "
            : "", archived);
    c->lease_epoch = v == DP_LEASE_RELEASED ? 0 : next.epoch;
    if (v == DP_LEASE_GRANTED && cur.held) {
        char msg[DP_MAX_ERROR_MSG];
        snprintf(msg, sizeof(msg), "fenced: write lease epoch %llu was taken over by '%s' (epoch %llu); this "
                 "restore must stop", (unsigned long long)cur.epoch, next.holder, (unsigned long long)next.epoch);
        for (struct conn *o = s->conns; o; o = o->next)
            if (o != c && !o->closed && !o->closing && o->lease_epoch && o->lease_epoch != next.epoch) {
                send_error(s, o, 0, true, DP_E_FENCED, msg, recv_ns);
                conn_flush(s, o);
            }
    }
    struct dp_lease_reply r = {.epoch = next.epoch, .verdict = (uint32_t)v};
    if (v == DP_LEASE_GRANTED && cur.epoch) {
        r.prev_epoch = cur.epoch;
        snprintf(r.prev_holder, sizeof(r.prev_holder), "%s", cur.holder);
    }
    struct dp_buf b = {0};
    if (dp_enc_lease_reply(&b, h->id, &r) < 0) {
        dp_buf_free(&b);
        conn_close(s, c, "out of memory");
        return;
    }
    reply_simple(s, c, &b, recv_ns);
}

static void dispatch(struct server *s, struct conn *c, const struct dp_hdr *h, const uint8_t *payload)
{
    uint64_t recv_ns = dp_now_ns();
    struct dp_err err = {{0}};
    c->requests++;
    if (h->type < DP_ARRAY_LEN(s->st.requests))
        s->st.requests[h->type]++;
    /* Before authentication only HELLO then AUTH are accepted. */
    if (c->state != ST_READY && h->type != DP_MSG_HELLO && h->type != DP_MSG_AUTH) {
        send_error(s, c, h->id, true, DP_E_UNAUTHENTICATED, "authenticate (HELLO, AUTH) before any other request",
                   recv_ns);
        return;
    }
    if (h->type == DP_MSG_PUT_TRACE || h->type == DP_MSG_GET_HOTSET) {
        handle_hotset(s, c, h, payload, recv_ns);
        return;
    }
    if (h->type == DP_MSG_MIGRATION) {
        handle_migration(s, c, h, payload, recv_ns);
        return;
    }
    if (h->type == DP_MSG_LEASE) {
        handle_lease(s, c, h, payload, recv_ns);
        return;
    }
    int rc = dp_dec_request(h, payload, h->len, &s->req, &err);
    if (rc != DP_E_OK) {
        send_error(s, c, h->id, true, (uint32_t)rc, err.msg, recv_ns);
        return;
    }
    switch (h->type) {
    case DP_MSG_HELLO:
        if (c->state != ST_HELLO) {
            send_error(s, c, h->id, true, DP_E_SEQUENCE, "HELLO may only be the first message", recv_ns);
            return;
        }
        handle_hello(s, c, payload, h->len, h->id, recv_ns);
        return;
    case DP_MSG_AUTH:
        if (c->state != ST_AUTH) {
            send_error(s, c, h->id, true, DP_E_SEQUENCE,
                       c->state == ST_HELLO ? "AUTH before HELLO" : "already authenticated", recv_ns);
            return;
        }
        handle_auth(s, c, h->id, recv_ns);
        return;
    case DP_MSG_TASK_MAP: handle_task_map(s, c, h->id, recv_ns); return;
    case DP_MSG_GET_PAGES: handle_get(s, c, h->id, recv_ns); return;
    case DP_MSG_PUT_PAGES: handle_put(s, c, h->id, recv_ns); return;
    case DP_MSG_GET_SKELETON: handle_skeleton(s, c, h->id, recv_ns); return;
    case DP_MSG_STATS: handle_stats(s, c, h->id, recv_ns); return;
    case DP_MSG_ACCESS_LOG: handle_access_log(s, c, h->id, recv_ns); return;
    }
}

/* A record that does not open was altered, replayed, reordered or forged on
 * the path: nothing of it is used, the peer hears why (sealed: our direction
 * is intact) and the connection ends. */
static void refuse_record(struct server *s, struct conn *c)
{
    s->st.records_rejected++;
    send_error(s, c, 0, true, DP_E_MALFORMED,
               "a record failed authentication (altered, replayed, reordered or forged on the path); reconnect",
               dp_now_ns());
}

/* The server's rules on a request header (lib/frame.h), for this connection. */
static int check_header(const struct dp_hdr *h, void *arg, struct dp_err *err)
{
    const struct conn *c = arg;
    return dp_frame_check_request(h, c->state == ST_READY, c->version, err);
}

/* Handles every complete message in the input buffer (unless paused); the
 * cutting into messages is lib/frame.c's, pure and fuzzed. */
static void conn_process_input(struct server *s, struct conn *c)
{
    while (!c->closed && !c->closing && !c->paused) {
        uint64_t queued = (uint64_t)c->out.bytes + c->delayed_bytes;
        if (queued >= (c->bulk ? BULK_HIGH_WATER : HIGH_WATER) || !dp_connlimit_may_reply(&s->lim, queued)) {
            c->paused = true; /* backpressure: the client is not reading its replies */
            break;
        }
        struct dp_frame f;
        struct dp_err err = {{0}};
        uint32_t max = c->state == ST_READY ? DP_MAX_PAYLOAD : DP_MAX_PREAUTH_PAYLOAD;
        enum dp_frame_verdict v = dp_frame_next(&c->rx, &c->chan, c->in + c->in_off, c->in_len - c->in_off, max,
                                                check_header, c, &f, &err);
        c->in_off += f.used;
        if (v == DP_FRAME_FORGED) {
            refuse_record(s, c);
            break;
        }
        if (v == DP_FRAME_REFUSE) {
            send_error(s, c, f.id, true, f.code, err.msg, dp_now_ns());
            break;
        }
        if (v == DP_FRAME_MORE)
            break; /* conn_read grows the buffer as the bytes arrive, never on the announcement */
        dispatch(s, c, &f.hdr, f.payload);
    }
    if (c->closed)
        return;
    if (c->in_off == c->in_len) {
        c->in_off = c->in_len = 0;
        if (c->in_cap > INPUT_KEEP) { /* after a big upload: give the memory back */
            free(c->in);
            c->in = NULL;
            dp_connlimit_buffer(&s->lim, c->in_cap, 0);
            c->in_cap = 0;
        }
    }
    conn_flush(s, c);
}

/* Doubles c's input buffer (up to one maximal sealed message) within the
 * global --max-buffered cap; a connection the cap refuses is closed with a
 * clear error, its partial request dropped (the client resends it). 0, 1
 * when the buffer is at its maximum already, or -1 when c is closed or
 * closing. */
static int conn_grow_input(struct server *s, struct conn *c)
{
    const size_t most = DP_CHAN_HDR_REC + DP_MAX_PAYLOAD + DP_CHAN_TAG + 65536;
    size_t cap = c->in_cap ? c->in_cap * 2 : 65536;
    if (cap > most)
        cap = most;
    if (cap <= c->in_cap)
        return 1; /* the header check bounds a message below this */
    if (dp_connlimit_buffer(&s->lim, c->in_cap, cap) < 0) {
        char msg[200];
        snprintf(msg, sizeof(msg), "the server's input buffers are full (%llu MiB held by partly received "
                 "requests, --max-buffered); retry later", (unsigned long long)(s->lim.buffered >> 20));
        dp_warn("client %s: %s", c->peer, msg);
        send_error(s, c, 0, true, DP_E_BUSY, msg, dp_now_ns());
        conn_flush(s, c); /* stops reading it (closing) and sends the error */
        return -1;
    }
    uint8_t *n = realloc(c->in, cap);
    if (!n) {
        dp_connlimit_buffer(&s->lim, cap, c->in_cap);
        conn_close(s, c, "out of memory for input");
        return -1;
    }
    c->in = n;
    c->in_cap = cap;
    return 0;
}

static void conn_read(struct server *s, struct conn *c)
{
    size_t budget = READ_BUDGET;
    while (!c->closed && !c->closing && budget) {
        if (c->in_cap - c->in_len < 4096) {
            if (c->in_off) {
                memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
                c->in_len -= c->in_off;
                c->in_off = 0;
            } else {
                int g = conn_grow_input(s, c);
                if (g < 0)
                    return;
                if (g > 0)
                    break;
            }
        }
        ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            char why[128];
            snprintf(why, sizeof(why), "receive failed: %s", strerror(errno));
            conn_close(s, c, why);
            return;
        }
        if (n == 0) {
            conn_close(s, c, c->in_len > c->in_off ? "connection closed mid-message" : "connection closed by client");
            return;
        }
        bool drained = (size_t)n < c->in_cap - c->in_len;
        c->in_len += (size_t)n;
        c->active_ns = dp_now_ns();
        s->st.bytes_in += (uint64_t)n;
        budget = budget > (size_t)n ? budget - (size_t)n : 0;
        /* Process as we go so a large burst cannot outgrow the buffer. */
        conn_process_input(s, c);
        if (c->closed || c->paused || c->closing || drained)
            return; /* a short read: nothing more waiting, skip the EAGAIN read */
    }
}

/* Applies the connection limits (connlimit.h) to a new peer: pushes out the
 * least advanced unauthenticated connection when a limit is met, refuses
 * only when the limit's slots all hold authenticated peers. 0 or -1. */
static int admit(struct server *s, uint32_t ip)
{
    const char *why = NULL;
    enum dp_admit a = dp_connlimit_admit(&s->lim, ip, &why);
    char addr[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &ip, addr, sizeof(addr));
    if (a == DP_ADMIT_OK)
        return 0;
    if (a == DP_ADMIT_REFUSE) {
        s->lim.refused++;
        dp_warn("refusing a connection from %s: %s reached and every slot under it holds an authenticated peer",
                addr, why);
        return -1;
    }
    static struct dp_connlimit_cand cand[4096];
    static struct conn *who[4096];
    size_t n = 0;
    for (struct conn *k = s->conns; k && n < DP_ARRAY_LEN(cand); k = k->next) {
        if (k->state == ST_READY || k->closing)
            continue;
        cand[n] = (struct dp_connlimit_cand){.ip = k->ip, .stage = k->state == ST_HELLO ? 0 : 1,
                                             .since_ns = k->since_ns};
        who[n++] = k;
    }
    long v = dp_connlimit_pick(cand, n, a == DP_ADMIT_EVICT_PEER, ip);
    if (v < 0) {
        s->lim.refused++;
        dp_warn("refusing a connection from %s: %s reached", addr, why);
        return -1;
    }
    s->lim.evicted++;
    char reason[120];
    snprintf(reason, sizeof(reason), "pushed out unauthenticated by a newer connection (%s reached)", why);
    conn_close(s, who[v], reason);
    return dp_connlimit_admit(&s->lim, ip, NULL) == DP_ADMIT_OK ? 0 : admit(s, ip);
}

static void on_accept(struct server *s)
{
    for (;;) {
        struct sockaddr_in sa;
        socklen_t sl = sizeof(sa);
        int fd = accept4(s->lfd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR)
                dp_warn("accept failed: %s", strerror(errno));
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (admit(s, sa.sin_addr.s_addr) < 0) {
            close(fd);
            continue;
        }
        struct conn *c = calloc(1, sizeof(*c));
        if (!c || dp_connlimit_add(&s->lim, sa.sin_addr.s_addr) < 0) {
            free(c);
            close(fd);
            continue;
        }
        c->ip = sa.sin_addr.s_addr;
        c->tag = TAG_CONN;
        c->fd = fd;
        c->since_ns = c->active_ns = dp_now_ns();
        c->cid = ++s->next_cid;
        char ip[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &sa.sin_addr, ip, sizeof(ip));
        snprintf(c->peer, sizeof(c->peer), "#%" PRIu64 " %s:%u", c->cid, ip, ntohs(sa.sin_port));
        c->ep_events = EPOLLIN;
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(s->ep, EPOLL_CTL_ADD, fd, &e) < 0) {
            dp_warn("epoll_ctl: %s", strerror(errno));
            dp_connlimit_remove(&s->lim, c->ip, false);
            close(fd);
            free(c);
            continue;
        }
        c->next = s->conns;
        if (s->conns)
            s->conns->prev = c;
        s->conns = c;
        s->st.connections++;
        dp_log_context(-1, (int64_t)c->cid);
        dp_info("client %s connected", c->peer);
        dp_log_context(-1, -1);
    }
}

/* Connections that have not authenticated, or do not take their fatal ERROR,
 * within --handshake-timeout are closed: without the key a peer holds no
 * resources for long. Authenticated ones that show no traffic for
 * --idle-timeout (and wait for nothing of ours) are closed too: a silent
 * peer, or one cut off by a partition, does not hold its slot and buffers
 * for ever. Returns whether any connection is open (the loop wakes to check). */
static bool sweep(struct server *s)
{
    uint64_t now = dp_now_ns();
    bool pending = false;
    for (struct conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->state == ST_READY && !c->closing) {
            if (dp_connlimit_idle(&s->lim, c->active_ns, now) && c->refs == 0) {
                s->lim.idle_closed++;
                conn_close(s, c, "idle: no traffic for --idle-timeout");
            } else if (s->lim.cfg.idle_ns) {
                pending = true;
            }
            continue;
        }
        if (dp_connlimit_handshake_expired(&s->lim, c->since_ns, now))
            conn_close(s, c, c->closing ? "did not read its error in time" : "did not authenticate in time");
        else
            pending = true;
    }
    return pending;
}

/* ---- setup ------------------------------------------------------------------ */
static int build_task_map(struct server *s)
{
    struct dp_buf *b = &s->task_map_payload;
    if (dp_buf_u32(b, (uint32_t)s->cp->nr_tasks) || dp_buf_u32(b, 0))
        return -1;
    for (size_t i = 0; i < s->cp->nr_tasks; i++) {
        const struct dp_task_image *t = &s->cp->tasks[i];
        if (dp_buf_u32(b, (uint32_t)t->pid) || dp_buf_u32(b, (uint32_t)t->ppid) ||
            dp_buf_u32(b, (uint32_t)t->nr_lazy) || dp_buf_u32(b, 0))
            return -1;
        for (size_t r = 0; r < t->nr_lazy; r++)
            if (dp_buf_u64(b, t->lazy[r].start) || dp_buf_u64(b, t->lazy[r].end))
                return -1;
    }
    return 0;
}

static int listen_on(struct server *s, struct dp_err *err)
{
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->lfd < 0) {
        dp_err_set(err, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &s->o->listen_addr.sin_addr, ip, sizeof(ip));
    if (bind(s->lfd, (const struct sockaddr *)&s->o->listen_addr, sizeof(s->o->listen_addr)) < 0 ||
        listen(s->lfd, 128) < 0) {
        dp_err_set(err, "cannot listen on %s:%u: %s", ip, ntohs(s->o->listen_addr.sin_port), strerror(errno));
        return -1;
    }
    struct sockaddr_in bound;
    socklen_t bl = sizeof(bound);
    getsockname(s->lfd, (struct sockaddr *)&bound, &bl);
    dp_info("listening on %s:%u", ip, ntohs(bound.sin_port));
    return 0;
}

static void write_access_log(struct server *s)
{
    if (!s->o->access_log_path)
        return;
    struct dp_buf j = {0};
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", s->o->access_log_path);
    int fd = -1;
    if (access_log_json(s, &j) < 0 || (fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0 ||
        dp_write_full(fd, j.data, j.len) < 0 || fsync(fd) < 0 || rename(tmp, s->o->access_log_path) < 0) {
        dp_error("cannot write the access log to %s: %s", s->o->access_log_path, strerror(errno));
    } else {
        dp_info("access log (%zu pages) written to %s", s->access.len, s->o->access_log_path);
    }
    if (fd >= 0)
        close(fd);
    dp_buf_free(&j);
}

/* The connection limits, checked against each other and against the
 * descriptors this process may hold (the soft RLIMIT_NOFILE is raised to the
 * hard one): an accept that fails with EMFILE would leave the listening
 * socket readable and the loop spinning. */
static int limits_init(struct server *s, struct dp_err *err)
{
    struct dp_connlimit_cfg cfg = s->o->limits;
    dp_connlimit_cfg_defaults(&cfg);
    if (dp_connlimit_cfg_check(&cfg, err) < 0)
        return -1;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur < rl.rlim_max) {
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
            getrlimit(RLIMIT_NOFILE, &rl);
        }
        if (rl.rlim_cur != RLIM_INFINITY && cfg.max_conns + 64 > rl.rlim_cur) {
            dp_err_set(err, "--max-conns %u needs %u file descriptors but this process may open %llu "
                       "(RLIMIT_NOFILE): lower --max-conns or raise the limit (ulimit -n)", cfg.max_conns,
                       cfg.max_conns + 64, (unsigned long long)rl.rlim_cur);
            return -1;
        }
    }
    dp_connlimit_init(&s->lim, &cfg);
    return 0;
}

int dp_server_run(const struct dp_server_opts *o, struct dp_err *err)
{
    struct server *s = calloc(1, sizeof(*s));
    if (!s) {
        dp_err_set(err, "out of memory");
        return -1;
    }
    s->o = o;
    s->ep = s->lfd = s->sfd = s->tfd = -1;
    if (limits_init(s, err) < 0) {
        free(s);
        return -1;
    }
    s->tag_listen = TAG_LISTEN;
    s->tag_signal = TAG_SIGNAL;
    s->tag_timer = TAG_TIMER;
    s->tag_metrics = TAG_METRICS;
    s->start_ns = dp_now_ns();
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    s->start_unix = (double)rt.tv_sec + (double)rt.tv_nsec / 1e9;
    int ret = -1;
    bool failed = false;
    if (sodium_init() < 0) {
        dp_err_set(err, "libsodium failed to initialise");
        goto out;
    }
    if (dp_checkpoint_open(o->images_dir, &s->cp, err) < 0)
        goto out;
    if (o->live ? o->live->attach(o->live->ctx, s->cp, err) < 0 : dp_checkpoint_check_images_only(s->cp, err) < 0)
        goto out;
    if (dp_lease_store_open(o->images_dir, &s->leases, err) < 0)
        goto out;
    if (dp_overlay_open(o->images_dir, &s->ov, err) < 0)
        goto out;
    const struct dp_lease *lease = dp_lease_store_get(s->leases);
    if (lease->held)
        dp_info("write lease: epoch %" PRIu64 " held by '%s' (it resumes on reconnect; another restore needs "
                "--take-over)", lease->epoch, lease->holder);
    maybe_compact(s);
    if (dp_hotset_store_open(s->cp, &s->hotsets, err) < 0)
        goto out;
    if (dp_checkpoint_identity(s->cp, s->cpid, err) < 0)
        goto out;
    if (o->insecure_plaintext)
        dp_warn("--insecure-plaintext: page contents, the skeleton and every request cross the network IN CLEAR "
                "and can be read and rewritten by anyone on the path; use it only on a link you fully trust");
    struct dp_overlay_stats os;
    dp_overlay_get_stats(s->ov, &os);
    char lazy[32];
    dp_format_bytes(s->cp->lazy_bytes, lazy, sizeof(lazy));
    dp_info("checkpoint %s: %zu tasks, %s lazy memory; write-back log holds %" PRIu64 " pages", o->images_dir,
            s->cp->nr_tasks, lazy, os.live_pages);
    s->maps = calloc(s->cp->nr_files ? s->cp->nr_files : 1, sizeof(*s->maps));
    for (size_t i = 0; s->maps && i < s->cp->nr_files; i++) {
        const struct dp_pages_file *pf = &s->cp->files[i];
        if (pf->fd < 0 || pf->size == 0)
            continue;
        void *base = mmap(NULL, pf->size, PROT_READ, MAP_SHARED, pf->fd, 0);
        if (base == MAP_FAILED)
            continue; /* pread still works */
        s->maps[s->nr_maps++] = (struct file_map){pf->fd, base, pf->size};
    }
    if (build_task_map(s) < 0 || skel_plan(s, err) < 0) {
        if (!err->msg[0])
            dp_err_set(err, "out of memory");
        goto out;
    }
    /* Replies up to 4 MiB are malloc'd and freed at a high rate: keep them on
     * the heap instead of an mmap/munmap (and page faults) per reply. */
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 128 << 20);
    signal(SIGPIPE, SIG_IGN);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    s->sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    s->tfd = dp_rtt_timer_create(1);
    s->ep = epoll_create1(EPOLL_CLOEXEC);
    if (s->sfd < 0 || s->tfd < 0 || s->ep < 0) {
        dp_err_set(err, "cannot create signalfd/timerfd/epoll: %s", strerror(errno));
        goto out;
    }
    if (listen_on(s, err) < 0)
        goto out;
    if (o->metrics_addr && !(s->metrics = dp_metrics_http_open(o->metrics_addr, metrics_render, s, err)))
        goto out;
    struct epoll_event e = {.events = EPOLLIN};
    e.data.ptr = &s->tag_listen;
    epoll_ctl(s->ep, EPOLL_CTL_ADD, s->lfd, &e);
    e.data.ptr = &s->tag_signal;
    epoll_ctl(s->ep, EPOLL_CTL_ADD, s->sfd, &e);
    e.data.ptr = &s->tag_timer;
    epoll_ctl(s->ep, EPOLL_CTL_ADD, s->tfd, &e);
    e.data.ptr = &s->tag_metrics;
    if (s->metrics && epoll_ctl(s->ep, EPOLL_CTL_ADD, dp_metrics_http_fd(s->metrics), &e) < 0) {
        dp_err_set(err, "cannot watch the metrics endpoint: %s", strerror(errno));
        goto out;
    }
    if (o->emulate_rtt_us)
        dp_info("emulating a round trip time of %" PRIu64 " us on every reply", o->emulate_rtt_us);

    struct epoll_event evs[64];
    /* sweep's period: 1 s, or the handshake bound if shorter */
    int sweep_ms = s->lim.cfg.handshake_ns < 1000000000ull ? (int)(s->lim.cfg.handshake_ns / 1000000) : 1000;
    while (!s->stopping) {
        int n = epoll_wait(s->ep, evs, DP_ARRAY_LEN(evs), o->live ? 200 : sweep(s) ? sweep_ms : -1);
        if (o->live) {
            sweep(s);
            if (o->live->tick(o->live->ctx))
                s->stopping = true;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            dp_err_set(err, "epoll_wait: %s", strerror(errno));
            goto out;
        }
        /* Two passes: bulk connections (the warm-up) after the others, so
         * a fault's request ready in the same turn is answered first. */
        for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++) {
            enum tag *tag = evs[i].data.ptr;
            if (pass != (*tag == TAG_CONN && ((struct conn *)tag)->bulk))
                continue;
            if (*tag == TAG_LISTEN) {
                on_accept(s);
            } else if (*tag == TAG_SIGNAL) {
                struct signalfd_siginfo si;
                if (read(s->sfd, &si, sizeof(si)) == sizeof(si)) {
                    dp_info("received %s, shutting down", strsignal((int)si.ssi_signo));
                    s->stopping = true;
                }
            } else if (*tag == TAG_TIMER) {
                on_timer(s);
            } else if (*tag == TAG_METRICS) {
                dp_metrics_http_handle(s->metrics);
            } else {
                struct conn *c = (struct conn *)tag;
                if (c->closed)
                    continue;
                dp_log_context(-1, (int64_t)c->cid);
                if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                    conn_read(s, c);
                if (!c->closed && (evs[i].events & EPOLLOUT))
                    conn_flush(s, c);
                dp_log_context(-1, -1);
            }
        }
        if (commit_puts(s) < 0 && !failed) {
            dp_err_set(err, "write-backs were refused since %s (see above)", dp_overlay_failure(s->ov));
            failed = true;
        }
        bury(s);
    }
    ret = failed ? -1 : 0;
out:
    if (s->ov)
        commit_puts(s);
    while (s->conns)
        conn_close(s, s->conns, "server shutting down");
    while (s->dq_head) {
        struct delayed *d = s->dq_head;
        s->dq_head = d->next;
        d->c->refs--;
        resp_free(&d->r);
        free(d);
    }
    bury(s);
    if (s->cp)
        write_access_log(s);
    if (s->cp)
        dp_info("served %" PRIu64 " data and %" PRIu64 " zero pages to %" PRIu64 " connections; %" PRIu64
                " pages written back",
                s->st.pages_data, s->st.pages_zero, s->st.connections, s->st.pages_written);
    for (size_t i = 0; i < s->nr_skel; i++)
        free(s->skel[i].ext);
    free(s->skel);
    dp_buf_free(&s->task_map_payload);
    dp_pmap_free(&s->access);
    dp_metrics_http_close(s->metrics);
    dp_connlimit_free(&s->lim);
    dp_overlay_close(s->ov);
    dp_lease_store_close(s->leases);
    dp_hotset_store_close(s->hotsets);
    for (size_t i = 0; i < s->nr_maps; i++)
        munmap((void *)s->maps[i].base, s->maps[i].size);
    free(s->maps);
    if (s->cp)
        dp_checkpoint_close(s->cp);
    int fds[] = {s->ep, s->lfd, s->sfd, s->tfd};
    for (size_t i = 0; i < DP_ARRAY_LEN(fds); i++)
        if (fds[i] >= 0)
            close(fds[i]);
    free(s);
    return ret;
}
