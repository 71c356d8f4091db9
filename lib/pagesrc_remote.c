/* pagesrc_remote: pages from the page server (lib/client.h). Every fetch is
 * one pipelined GET; the client reconnects with backoff and resubmits what
 * was in flight, so a fault simply waits while the server is unreachable.
 *
 * Two lanes: faults and their prefetch on the first connection; fetches
 * marked bulk (the warm-up) on a second one, opened at the first such
 * fetch and announced as bulk (DP_HELLO_FLAG_BULK), so the server serves
 * it after the first and keeps little of it queued, and no warm-up byte
 * waits in the first connection's socket buffers ahead of a fault's reply
 * (QEMU's postcopy-preempt channel, the other way round: the faults keep
 * the first connection). The bulk lane reads a bounded amount per turn:
 * the daemon handles faults between its turns. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include <sodium.h>

#include "client.h"
#include "key.h"
#include "pagesrc.h"

#define CONNECT_TIMEOUT_MS 10000
#define TASK_MAP_TIMEOUT_MS 30000
#define BULK_CONNECT_TIMEOUT_MS 2000 /* the bulk lane's connect blocks the daemon's loop once */
#define BULK_READ_BUDGET (256u << 10) /* bulk bytes received per process() */

struct remote_src {
    struct dp_pagesrc base;
    struct dp_client *c;
    struct dp_client *bulk;   /* the bulk lane, NULL until the first bulk fetch */
    int bulk_off;             /* it could not be opened or failed: bulk fetches use c */
    struct dp_client_opts o;  /* for the bulk lane's connect */
    uint8_t key[1024];
    struct dp_task_map map;
    struct dp_fetch *done_head, *done_tail; /* completions run after process() */
    int in_process;
    int failed_said;  /* the client's failure was logged */
};

/* A completion that arrives inside the client's processing waits here:
 * the daemon's done() may submit again, which must not re-enter the client. */
static void queue_done(struct remote_src *r, struct dp_fetch *f)
{
    f->src_next = NULL;
    if (r->done_tail)
        r->done_tail->src_next = f;
    else
        r->done_head = f;
    r->done_tail = f;
}

/* Runs the queued completions, in arrival order, once the client is idle. */
static void run_done(struct remote_src *r)
{
    while (r->done_head) {
        struct dp_fetch *f = r->done_head;
        r->done_head = f->src_next;
        if (!r->done_head)
            r->done_tail = NULL;
        f->done(f);
    }
}

/* The task's lazy ranges as the server's task map (read once at open) has them. */
static int remote_task_map(struct dp_pagesrc *s, int32_t pid, struct dp_lazymap *map, struct dp_err *err)
{
    struct remote_src *r = (struct remote_src *)s;
    for (uint32_t i = 0; i < r->map.nr_tasks; i++) {
        const struct dp_tm_task *t = &r->map.tasks[i];
        if (t->pid != pid)
            continue;
        for (uint32_t k = 0; k < t->nr_ranges; k++) {
            /* The task map does not say which pages are holes: all are
             * remote; the server answers holes with ZERO segments. */
            if (dp_lazymap_add(map, t->ranges[k].start, t->ranges[k].end, t->ranges[k].start, DP_PG_REMOTE)) {
                dp_err_set(err, "pid %d: lazy range 0x%llx-0x%llx from the page server is invalid", pid,
                           (unsigned long long)t->ranges[k].start, (unsigned long long)t->ranges[k].end);
                return -1;
            }
        }
        return 0;
    }
    dp_err_set(err, "pid %d is not in the page server's task map", pid);
    return -1;
}

/* A GET's reply: every byte is checked against what was asked (segments
 * must cover the request exactly) before the fetch completes. */
static void get_done(void *cookie, int status, const struct dp_seg *segs, uint32_t nr, const char *errmsg)
{
    struct dp_fetch *f = cookie;
    struct remote_src *r = f->src_next ? (struct remote_src *)f->src_next : NULL;
    f->src_next = NULL;
    f->status = status;
    if (status == 0) {
        uint64_t off = 0, want = (uint64_t)f->npages * DP_PAGE_SIZE;
        uint64_t wire = DP_HDR_SIZE + DP_GET_REPLY_HDR;
        for (uint32_t i = 0; i < nr && f->status == 0; i++) {
            uint64_t len = (uint64_t)segs[i].count * DP_PAGE_SIZE;
            wire += DP_SEG_HDR;
            if (off + len > want) {
                f->status = -EPROTO;
            } else if (segs[i].kind == DP_SEG_DATA) {
                memcpy(f->buf + off, segs[i].data, len);
                wire += len;
            } else if (segs[i].kind == DP_SEG_ZERO) {
                memset(f->buf + off, 0, len);
            } else {
                f->status = -EINVAL; /* the server says: not lazy memory */
            }
            off += len;
        }
        if (f->status == 0 && off != want)
            f->status = -EPROTO;
        f->wire_bytes = wire + DP_HDR_SIZE + 16; /* plus the request */
    } else if (errmsg && *errmsg) {
        dp_debug("GET 0x%llx x%u: %s", (unsigned long long)f->img, f->npages, errmsg);
    }
    if (r)
        queue_done(r, f);
    else
        f->done(f);
}

/* The bulk lane's client: opened at the first bulk fetch (a connect and
 * handshake, bounded); NULL when it cannot be had (then bulk fetches share
 * the first connection, said once). */
static struct dp_client *bulk_lane(struct remote_src *r)
{
    if (r->bulk || r->bulk_off)
        return r->bulk;
    struct dp_client_opts o = r->o;
    struct dp_err err = {{0}};
    o.key = r->key;
    o.bulk = true;
    o.read_budget = BULK_READ_BUDGET;
    o.connect_timeout_ms = BULK_CONNECT_TIMEOUT_MS;
    o.expect_cpid = dp_client_cpid(r->c); /* the same checkpoint, or no lane */
    if (dp_client_connect(&o, &r->bulk, &err) < 0) {
        r->bulk_off = 1;
        r->bulk = NULL;
        dp_warn("%s: no second connection for the warm-up (%s); it shares the faults' connection, "
                "where faults may wait behind it", r->base.desc, err.msg);
    }
    return r->bulk;
}

/* Sends and receives on client c; its completions run once it is idle. */
static void client_turn(struct remote_src *r, struct dp_client *c)
{
    struct dp_err err = {{0}};
    r->in_process = 1;
    if (dp_client_process(c, &err) < 0) {
        if (c == r->bulk && !r->bulk_off) {
            r->bulk_off = 1; /* its requests failed back to the daemon, which resubmits them */
            dp_warn("%s: the warm-up's connection failed (%s); the warm-up goes on on the faults' connection",
                    r->base.desc, err.msg);
        } else if (c == r->c && !r->failed_said) {
            r->failed_said = 1; /* once: process() runs every loop turn */
            dp_error("%s: %s; faults it cannot serve end by --fault-timeout", r->base.desc, err.msg);
        }
    }
    r->in_process = 0;
    run_done(r);
}

/* One pipelined GET per fetch, pushed out at once (a faulting thread
 * waits); bulk fetches on the bulk lane when there is one. */
static int remote_submit(struct dp_pagesrc *s, struct dp_fetch *f)
{
    struct remote_src *r = (struct remote_src *)s;
    struct dp_get_range g = {.pid = f->pid, .count = f->npages, .addr = f->img};
    struct dp_err err = {{0}};
    struct dp_client *c = r->c;
    if (f->bulk && !r->bulk_off && (r->bulk || !r->in_process) && bulk_lane(r))
        c = r->bulk;
    f->src_next = (struct dp_fetch *)r; /* get_done finds its source through it */
    if (dp_client_submit_get(c, &g, 1, get_done, f, &err) == 0) {
        f->src_next = NULL;
        dp_debug("GET not queued: %s", err.msg);
        return -1;
    }
    if (!r->in_process)
        client_turn(r, c); /* push it out now rather than at the next loop turn */
    return 0;
}

/* One PUT_PAGES of single-page ranges; the client copies the data and
 * resends it across reconnects, and calls cb on the durable ack. */
static int remote_put(struct dp_pagesrc *s, int32_t pid, const uint64_t *img, const uint8_t *const *data, uint32_t n,
                      dp_pagesrc_put_cb cb, void *cookie, struct dp_err *err)
{
    struct remote_src *r = (struct remote_src *)s;
    struct dp_put_range pr[DP_MAX_PUT_PAGES];
    if (n == 0 || n > DP_MAX_PUT_PAGES) {
        dp_err_set(err, "a write-back of %u pages: one request carries 1 to %u", n, DP_MAX_PUT_PAGES);
        return -1;
    }
    for (uint32_t i = 0; i < n; i++)
        pr[i] = (struct dp_put_range){.pid = pid, .count = 1, .addr = img[i], .data = data[i]};
    return dp_client_submit_put(r->c, pr, n, cb, cookie, err) ? 0 : -1;
}

/* What the server said in its hello; 0 before it did. */
static uint32_t remote_put_max(struct dp_pagesrc *s)
{
    const struct dp_hello_reply *lim = dp_client_limits(((struct remote_src *)s)->c);
    return lim ? lim->max_put_pages : 0;
}

/* The client's socket; it changes across reconnects (the daemon follows). */
static int remote_fd(struct dp_pagesrc *s) { return dp_client_fd(((struct remote_src *)s)->c); }

/* What c waits for, as epoll events: EPOLLOUT only while it has bytes queued. */
static short client_events(const struct dp_client *c)
{
    short ev = dp_client_events(c);
    short out = 0;
    if (ev & POLLIN)
        out |= EPOLLIN;
    if (ev & POLLOUT)
        out |= EPOLLOUT;
    return out ? out : EPOLLIN;
}

static short remote_events(struct dp_pagesrc *s) { return client_events(((struct remote_src *)s)->c); }

/* The client's next deadline (reconnect backoff, request timeouts). */
static int remote_timeout(struct dp_pagesrc *s) { return dp_client_timeout_ms(((struct remote_src *)s)->c); }

/* Reads replies, writes requests, reconnects; its failure is said once. */
static void remote_process(struct dp_pagesrc *s)
{
    client_turn((struct remote_src *)s, ((struct remote_src *)s)->c);
}

/* The bulk lane's socket (-1: none, or being reconnected). */
static int remote_bulk_fd(struct dp_pagesrc *s)
{
    struct remote_src *r = (struct remote_src *)s;
    return r->bulk && !r->bulk_off ? dp_client_fd(r->bulk) : -1;
}

/* As remote_events, for the bulk lane. */
static short remote_bulk_events(struct dp_pagesrc *s)
{
    struct remote_src *r = (struct remote_src *)s;
    return r->bulk ? client_events(r->bulk) : EPOLLIN;
}

/* As remote_process, for the bulk lane (a bounded read: see BULK_READ_BUDGET). */
static void remote_bulk_process(struct dp_pagesrc *s)
{
    struct remote_src *r = (struct remote_src *)s;
    if (r->bulk && !r->bulk_off)
        client_turn(r, r->bulk);
}

static int remote_healthy(struct dp_pagesrc *s) { return dp_client_connected(((struct remote_src *)s)->c); }

/* The client knows when the server refused our write lease. */
static const char *remote_fenced(struct dp_pagesrc *s) { return dp_client_fenced(((struct remote_src *)s)->c); }

/* Cancels what is in flight (completions are dropped) and frees the source. */
static void remote_close(struct dp_pagesrc *s)
{
    struct remote_src *r = (struct remote_src *)s;
    r->in_process = 1; /* cancelled completions are queued, then dropped */
    dp_client_close(r->bulk);
    dp_client_close(r->c);
    sodium_memzero(r->key, sizeof(r->key));
    r->done_head = r->done_tail = NULL;
    dp_task_map_free(&r->map);
    free(r);
}

static const struct dp_pagesrc_ops remote_ops = {
    .name = "remote", .task_map = remote_task_map, .submit = remote_submit, .put = remote_put,
    .put_max = remote_put_max, .fd = remote_fd,
    .events = remote_events, .timeout_ms = remote_timeout, .process = remote_process,
    .bulk_fd = remote_bulk_fd, .bulk_events = remote_bulk_events, .bulk_process = remote_bulk_process,
    .healthy = remote_healthy, .fenced = remote_fenced, .close = remote_close,
};

/* Connects and authenticates (bounded), then reads the task map: a server
 * that cannot be reached or authenticated fails here, not at a first fault. */
struct dp_pagesrc *dp_pagesrc_remote_open(const char *hostport, const char *key_file, struct dp_err *err)
{
    struct dp_client_opts o;
    memset(&o, 0, sizeof(o));
    if (dp_parse_hostport(hostport, &o.addr) < 0) {
        dp_err_set(err, "bad --source '%s': expected ADDR:PORT", hostport);
        return NULL;
    }
    uint8_t key[1024];
    size_t key_len = 0;
    if (dp_key_load(key_file, key, &key_len, err) < 0)
        return NULL;
    o.key = key;
    o.key_len = key_len;
    o.connect_timeout_ms = CONNECT_TIMEOUT_MS;
    o.max_inflight = 4096;
    struct remote_src *r = calloc(1, sizeof(*r));
    if (!r) {
        dp_err_set(err, "out of memory");
        return NULL;
    }
    if (dp_client_connect(&o, &r->c, err) < 0) {
        free(r);
        return NULL;
    }
    r->o = o; /* the bulk lane connects the same way */
    memcpy(r->key, key, key_len);
    r->o.key = NULL;
    memset(key, 0, sizeof(key));
    if (dp_client_task_map(r->c, &r->map, TASK_MAP_TIMEOUT_MS, err) < 0) {
        dp_client_close(r->c);
        free(r);
        return NULL;
    }
    r->base.ops = &remote_ops;
    snprintf(r->base.desc, sizeof(r->base.desc), "page server %s", hostport);
    return &r->base;
}

/* The client behind a remote source (NULL for any other source). */
struct dp_client *dp_pagesrc_remote_client(struct dp_pagesrc *s)
{
    return s && s->ops == &remote_ops ? ((struct remote_src *)s)->c : NULL;
}
