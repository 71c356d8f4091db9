/* pagesrc_redis: see pagesrc_redis.h. */
#include "pagesrc_redis.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>

#include "image.h"
#include "pagesrc_file.h"
#include "redis_async.h"

#define FETCH_TIMEOUT_MS 30000   /* one fetch, a failover included */
#define PUT_TIMEOUT_MS 3000      /* one write-back, WAIT included: within --writeback-timeout */
#define WAIT_MS 1000             /* WAIT's own timeout */

/* ---- pages this restore wrote back (open addressing, key 0 = empty) ---- */

struct wset {
    uint64_t *k;
    size_t cap, n;
};

/* pid and page number in one non-zero word (pids < 2^22, pages < 2^36). */
static uint64_t wkey(int32_t pid, uint64_t img) { return ((uint64_t)(uint32_t)pid << 40) | (img >> 12); }

static size_t wslot(const struct wset *w, uint64_t k)
{
    size_t i = (size_t)((k * 0x9e3779b97f4a7c15ull) >> 20) & (w->cap - 1);
    while (w->k[i] && w->k[i] != k)
        i = (i + 1) & (w->cap - 1);
    return i;
}

static int wset_has(const struct wset *w, uint64_t k) { return w->cap && w->k[wslot(w, k)] == k; }

/* Adds k, growing at half full; -1 if out of memory. */
static int wset_add(struct wset *w, uint64_t k)
{
    if (2 * (w->n + 1) > w->cap) {
        struct wset nw = {.cap = w->cap ? 2 * w->cap : 1024};
        nw.k = calloc(nw.cap, sizeof(uint64_t));
        if (!nw.k)
            return -1;
        for (size_t i = 0; i < w->cap; i++)
            if (w->k[i]) {
                nw.k[wslot(&nw, w->k[i])] = w->k[i];
                nw.n++;
            }
        free(w->k);
        *w = nw;
    }
    size_t i = wslot(w, k);
    if (!w->k[i]) {
        w->k[i] = k;
        w->n++;
    }
    return 0;
}

/* ---- the source ---- */

struct redis_src {
    struct dp_pagesrc base;
    struct dp_store *st;
    struct dp_checkpoint *cp;
    struct dp_rasync *as;             /* the node connections, on the daemon's loop */
    struct wset written;
    char writer[DP_STORE_WRITER_MAX + 1];
    uint64_t epoch;
    int fenced, healthy, used, as_failed;
    char fenced_why[256];
    struct dp_store_read *plan;       /* planning scratch */
    size_t cap;
};

static const struct dp_pagesrc_ops redis_ops;

/* The node connections, made in the process that uses them (the daemon is
 * forked after the source is opened: no epoll set or TLS state is shared);
 * NULL if they cannot be (said once). */
static struct dp_rasync *as_of(struct redis_src *r)
{
    if (!r->as && !r->as_failed) {
        struct dp_err err = {{0}};
        r->as = dp_rasync_new(r->st->cl, &err);
        if (!r->as) {
            r->as_failed = 1;
            r->healthy = 0;
            dp_error("%s: %s", r->base.desc, err.msg);
        }
    }
    return r->as;
}

static int redis_task_map(struct dp_pagesrc *s, int32_t pid, struct dp_lazymap *map, struct dp_err *err)
{
    struct redis_src *r = (struct redis_src *)s;
    r->used = 1; /* only the daemon asks: it owns the lease from here on */
    return dp_checkpoint_lazymap(r->cp, pid, map, err);
}

/* Room for need planned reads. */
static int reserve(struct redis_src *r, size_t need)
{
    if (need <= r->cap)
        return 0;
    size_t cap = r->cap ? r->cap : 256;
    while (cap < need)
        cap *= 2;
    struct dp_store_read *p = realloc(r->plan, cap * sizeof(*p));
    if (!p)
        return -1;
    r->plan = p;
    r->cap = cap;
    return 0;
}

/* Plans the reads of fetch f: one GETRANGE per run of pages with data in
 * an extent, one GET per page this restore wrote back; holes are zeroed
 * here. Returns the number added (f->status set if f is refused), -1. */
static long plan_fetch(struct redis_src *r, struct dp_fetch *f, size_t at)
{
    size_t n = 0;
    const struct dp_task_image *t = dp_checkpoint_find_task(r->cp, f->pid);
    uint64_t a = f->img, end = f->img + (uint64_t)f->npages * 4096;
    while (a < end) {
        uint64_t ext = a - a % DP_STORE_EXT_BYTES;
        uint64_t pe = ext + DP_STORE_EXT_BYTES < end ? ext + DP_STORE_EXT_BYTES : end;
        for (uint64_t p = a; p < pe;) {
            /* what the checkpoint holds here: a page it has no data for
             * (a hole, never uploaded) that this restore did not write back
             * is zero, as the page server answers it; not lazy memory at
             * all is refused as by the local source */
            int written = wset_has(&r->written, wkey(f->pid, p));
            struct dp_page_loc loc = {.kind = DP_PAGE_DATA};
            if (!written && t)
                dp_task_locate(t, p, &loc);
            if (!written && (!t || loc.kind == DP_PAGE_NOT_LAZY)) {
                f->status = -EINVAL;
                return (long)n;
            }
            if (!written && loc.kind == DP_PAGE_ZERO) {
                memset(f->buf + (p - f->img), 0, 4096);
                p += 4096;
                continue;
            }
            if (reserve(r, at + n + 1) < 0)
                return -1;
            struct dp_store_read *rd = &r->plan[at + n];
            memset(rd, 0, sizeof(*rd));
            rd->buf_off = (uint32_t)(p - f->img);
            int kl;
            uint64_t q = p + 4096;
            if (written) {
                kl = dp_store_key_page(rd->key, sizeof(rd->key), r->st->id, r->writer, f->pid, p);
                rd->whole = 1;
                rd->len = 4096;
            } else {
                /* a run of pages with data and not written back: one GETRANGE */
                while (q < pe && !wset_has(&r->written, wkey(f->pid, q))) {
                    struct dp_page_loc nl;
                    dp_task_locate(t, q, &nl);
                    if (nl.kind != DP_PAGE_DATA)
                        break;
                    q += 4096;
                }
                kl = dp_store_key_extent(rd->key, sizeof(rd->key), r->st->id, f->pid, ext);
                rd->off = p - ext;
                rd->len = (uint32_t)(q - p);
            }
            if (kl < 0)
                return -1;
            rd->keylen = (size_t)kl;
            n++;
            p = q;
        }
        a = pe;
    }
    return (long)n;
}

/* The command of one planned read. */
static void build_cmd(struct dp_rcmd *c, struct dp_store_read *rd, char *nums)
{
    dp_rcmd_init(c, 1);
    if (rd->whole) {
        dp_rcmd_arg(c, "GET", 3);
        dp_rcmd_arg(c, rd->key, rd->keylen);
        return;
    }
    int l1 = snprintf(nums, 24, "%" PRIu64, rd->off);
    int l2 = snprintf(nums + 24, 24, "%" PRIu64, rd->off + rd->len - 1);
    dp_rcmd_arg(c, "GETRANGE", 8);
    dp_rcmd_arg(c, rd->key, rd->keylen);
    dp_rcmd_arg(c, nums, (size_t)l1);
    dp_rcmd_arg(c, nums + 24, (size_t)l2);
}

/* ---- fetches: one command per planned read, completed reply by reply ---- */

/* A fetch in flight: its reads, their commands, and how many still owe a
 * reply (one allocation). */
struct rfetch {
    struct redis_src *r;
    struct dp_fetch *f;
    size_t n, left;
    struct dp_store_read *plan;
    struct dp_rcmd *cmds;
    struct dp_racmd *ac;
    char *nums;
};

/* One read's reply: its bytes go where the fetch wants them, after they are
 * checked; the last one completes the fetch. */
static void read_done(struct dp_racmd *a, int status)
{
    struct rfetch *x = a->opaque;
    struct redis_src *r = x->r;
    struct dp_fetch *f = x->f;
    struct dp_store_read *rd = &x->plan[a - x->ac];
    redisReply *rep = a->c->reply;
    if (status < 0) {
        if (f->status == 0)
            dp_error("%s: %s unanswered: %s; faults it cannot serve end by --fault-timeout", r->base.desc, rd->key,
                     dp_rasync_error(r->as));
        f->status = -EIO;
        r->healthy = 0;
    } else if (rep->type != REDIS_REPLY_STRING || rep->len != rd->len) {
        /* never hand out made-up data: a missing extent or a short value */
        if (f->status == 0)
            dp_error("store: %s answered %s of %zu bytes, expected %u: the checkpoint's pages are incomplete", rd->key,
                     rep->type == REDIS_REPLY_STRING ? "a string" : rep->type == REDIS_REPLY_ERROR ? rep->str
                                                                                            : "a non-string",
                     rep->len, rd->len);
        f->status = -EIO;
    } else if (f->status == 0) {
        memcpy(f->buf + rd->buf_off, rep->str, rep->len);
        f->wire_bytes += rep->len + rd->keylen + 40;
        r->healthy = 1;
    }
    dp_rcmd_reset(a->c);
    if (--x->left)
        return;
    free(x);
    f->src_next = NULL;
    f->done(f);
}

/* Plans fetch f and sends its reads at once (pipelined with everything else
 * in flight); holes are zeroed here. A fetch with nothing to read (all holes,
 * or refused) completes before this returns, as the local source does. */
static int redis_submit(struct dp_pagesrc *s, struct dp_fetch *f)
{
    struct redis_src *r = (struct redis_src *)s;
    struct dp_rasync *as = as_of(r);
    if (!as)
        return -1;
    f->status = 0;
    f->wire_bytes = 0;
    f->src_next = NULL;
    long k = plan_fetch(r, f, 0);
    if (k < 0)
        return -1;
    size_t n = (size_t)k;
    if (n == 0 || f->status) {
        f->done(f);
        return 0;
    }
    struct rfetch *x = calloc(1, sizeof(*x) + n * (sizeof(struct dp_store_read) + sizeof(struct dp_rcmd) +
                                                   sizeof(struct dp_racmd) + 48));
    if (!x)
        return -1;
    x->r = r;
    x->f = f;
    x->n = x->left = n;
    x->plan = (struct dp_store_read *)(x + 1);
    x->cmds = (struct dp_rcmd *)(x->plan + n);
    x->ac = (struct dp_racmd *)(x->cmds + n);
    x->nums = (char *)(x->ac + n);
    memcpy(x->plan, r->plan, n * sizeof(*x->plan));
    uint64_t deadline = dp_now_ns() + (uint64_t)FETCH_TIMEOUT_MS * 1000000ull;
    for (size_t i = 0; i < n; i++) {
        build_cmd(&x->cmds[i], &x->plan[i], x->nums + i * 48);
        x->ac[i] = (struct dp_racmd){.c = &x->cmds[i], .force_node = -1, .deadline_ns = deadline,
                                     .done = read_done, .opaque = x};
    }
    for (size_t i = 0; i < n; i++)
        if (dp_rasync_submit(as, &x->ac[i]) < 0) {
            /* the ones already queued complete (and free x) later */
            f->status = -ENOMEM;
            for (size_t j = i; j < n; j++)
                if (--x->left == 0) {
                    free(x);
                    f->done(f);
                    return 0;
                }
            return 0;
        }
    return 0;
}

/* ---- write-back: fenced scripts, then WAIT on every master written ---- */

/* A write-back in flight: its pages (copied), its scripts, then one WAIT per
 * master they went to; sent again whole after a lost connection or a short
 * WAIT, until its deadline. */
struct rput {
    struct redis_src *r;
    dp_pagesrc_put_cb cb;
    void *cookie;
    int32_t pid;
    uint32_t npages;
    uint64_t *img;
    uint8_t *data;
    struct dp_store_putplan plan;
    struct dp_racmd *ac;
    struct dp_rcmd wcmd[DP_REDIS_MAX_NODES];
    struct dp_racmd wac[DP_REDIS_MAX_NODES];
    char nr[16], to[16];
    size_t left;
    int waiting, resend;
    uint64_t deadline;
    struct dp_err why;
};

static void put_send(struct rput *p);

/* The write-back is over: the daemon hears it (and the pages are read back
 * from this writer's keys from now on, if it succeeded). */
static void put_finish(struct rput *p, int status)
{
    struct redis_src *r = p->r;
    for (uint32_t i = 0; status == 0 && i < p->npages; i++)
        if (wset_add(&r->written, wkey(p->pid, p->img[i])) < 0) {
            dp_err_set(&p->why, "out of memory");
            status = -ENOMEM;
        }
    p->cb(p->cookie, status, status ? p->why.msg : NULL);
    for (size_t i = 0; i < DP_REDIS_MAX_NODES; i++)
        dp_rcmd_reset(&p->wcmd[i]);
    dp_store_put_plan_free(&p->plan);
    free(p->ac);
    free(p->img);
    free(p->data);
    free(p);
}

/* One WAIT's answer; when all are in: done, or everything again. */
static void wait_done(struct dp_racmd *a, int status)
{
    struct rput *p = a->opaque;
    struct redis_src *r = p->r;
    redisReply *rep = a->c->reply;
    if (status < 0) {
        dp_err_set(&p->why, "%s", dp_rasync_error(r->as));
        p->resend = 1;
    } else if (rep->type != REDIS_REPLY_INTEGER || rep->integer < r->st->min_replicas) {
        dp_err_set(&p->why, "%s: %lld of %d replicas acknowledged within %d ms",
                   dp_rcluster_node_name(r->st->cl, a->force_node),
                   rep->type == REDIS_REPLY_INTEGER ? rep->integer : -1, r->st->min_replicas, WAIT_MS);
        p->resend = 1;
    }
    if (--p->left)
        return;
    if (!p->resend) {
        put_finish(p, 0);
    } else if (dp_now_ns() >= p->deadline) {
        struct dp_err e = p->why;
        dp_err_set(&p->why, "writes not acknowledged by %d replica(s) within %d ms: %s", r->st->min_replicas,
                   PUT_TIMEOUT_MS, e.msg);
        put_finish(p, -EIO);
    } else {
        dp_debug("store: sending %u written pages again: %s", p->npages, p->why.msg);
        put_send(p);
    }
}

/* One fenced script's answer; when all are in: WAIT on every master used. */
static void script_done(struct dp_racmd *a, int status)
{
    struct rput *p = a->opaque;
    struct redis_src *r = p->r;
    if (status < 0) {
        dp_err_set(&p->why, "%s", dp_rasync_error(r->as));
        p->resend = -1;
    }
    if (--p->left)
        return;
    if (p->resend < 0) {
        put_finish(p, -EIO);
        return;
    }
    int fenced = 0;
    if (dp_store_replies_ok(p->plan.cmds, p->plan.n, &fenced, &p->why) < 0) {
        if (fenced) {
            r->fenced = 1;
            snprintf(r->fenced_why, sizeof(r->fenced_why),
                     "writer '%s' of this checkpoint was taken over by a newer restore (epoch > %" PRIu64 ")",
                     r->writer, r->epoch);
        }
        put_finish(p, fenced ? -EPERM : -EIO);
        return;
    }
    uint8_t used[DP_REDIS_MAX_NODES] = {0};
    size_t nw = 0;
    for (size_t i = 0; i < p->plan.n; i++) {
        int node = p->plan.cmds[i].node;
        if (node < 0 || node >= DP_REDIS_MAX_NODES || used[node])
            continue;
        used[node] = 1;
        struct dp_rcmd *w = &p->wcmd[nw];
        dp_rcmd_reset(w);
        dp_rcmd_init(w, -1);
        dp_rcmd_arg(w, "WAIT", 4);
        dp_rcmd_arg(w, p->nr, strlen(p->nr));
        dp_rcmd_arg(w, p->to, strlen(p->to));
        p->wac[nw] = (struct dp_racmd){.c = w, .force_node = node, .deadline_ns = p->deadline + 2000000000ull,
                                       .done = wait_done, .opaque = p};
        nw++;
    }
    p->left = nw;
    p->resend = 0;
    if (nw == 0 || r->st->min_replicas <= 0) {
        put_finish(p, 0);
        return;
    }
    for (size_t i = 0; i < nw; i++)
        if (dp_rasync_submit(as_of(r), &p->wac[i]) < 0) /* cannot be queued: a lost WAIT, as the layer's */
            wait_done(&p->wac[i], -1);
}

/* Sends (again) every script of the write-back. */
static void put_send(struct rput *p)
{
    p->left = p->plan.n;
    p->resend = 0;
    for (size_t i = 0; i < p->plan.n; i++) {
        p->ac[i] = (struct dp_racmd){.c = &p->plan.cmds[i], .force_node = -1, .deadline_ns = p->deadline,
                                     .done = script_done, .opaque = p};
        if (dp_rasync_submit(as_of(p->r), &p->ac[i]) < 0) {
            dp_err_set(&p->why, "out of memory");
            script_done(&p->ac[i], -1);
        }
    }
}

/* The budget's write-back: the pages go to the store under this restore's
 * fence and are acknowledged by >= 1 replica (WAIT) before the completion
 * says 0; nothing here waits: the completion runs from process(). Later
 * fetches read these pages back from this writer's keys. */
static int redis_put(struct dp_pagesrc *s, int32_t pid, const uint64_t *img, const uint8_t *const *data, uint32_t n,
                     dp_pagesrc_put_cb cb, void *cookie, struct dp_err *err)
{
    struct redis_src *r = (struct redis_src *)s;
    if (r->fenced) {
        dp_err_set(err, "%s", r->fenced_why);
        return -1;
    }
    if (n == 0 || n > 256) {
        dp_err_set(err, "a write-back of %u pages: one carries 1 to 256", n);
        return -1;
    }
    if (!as_of(r)) {
        dp_err_set(err, "%s: no connections to the store's nodes", s->desc);
        return -1;
    }
    struct rput *p = calloc(1, sizeof(*p));
    struct dp_store_page *pg = calloc(n, sizeof(*pg));
    if (p) {
        p->img = malloc(n * sizeof(*p->img));
        p->data = malloc((size_t)n * 4096);
    }
    if (!p || !pg || !p->img || !p->data) {
        dp_err_set(err, "out of memory");
        goto fail;
    }
    for (uint32_t i = 0; i < n; i++) {
        p->img[i] = img[i];
        memcpy(p->data + (size_t)i * 4096, data[i], 4096);
        pg[i] = (struct dp_store_page){.pid = pid, .img = img[i], .data = p->data + (size_t)i * 4096};
    }
    if (dp_store_put_plan(r->st, r->writer, r->epoch, pg, n, &p->plan, err) < 0)
        goto fail;
    p->ac = calloc(p->plan.n, sizeof(*p->ac));
    if (!p->ac) {
        dp_err_set(err, "out of memory");
        dp_store_put_plan_free(&p->plan);
        goto fail;
    }
    free(pg);
    p->r = r;
    p->cb = cb;
    p->cookie = cookie;
    p->pid = pid;
    p->npages = n;
    p->deadline = dp_now_ns() + (uint64_t)PUT_TIMEOUT_MS * 1000000ull;
    snprintf(p->nr, sizeof(p->nr), "%d", r->st->min_replicas);
    snprintf(p->to, sizeof(p->to), "%d", WAIT_MS);
    put_send(p);
    return 0;
fail:
    free(pg);
    if (p) {
        free(p->img);
        free(p->data);
        free(p);
    }
    return -1;
}

/* Pages per write-back: one eviction batch. */
static uint32_t redis_put_max(struct dp_pagesrc *s)
{
    (void)s;
    return 256;
}

/* ---- the daemon's side ---- */

/* Replies arrived, connections progressed, retries and deadlines are due. */
static void redis_process(struct dp_pagesrc *s)
{
    struct dp_rasync *as = as_of((struct redis_src *)s);
    if (as)
        dp_rasync_process(as);
}

/* One descriptor for every node connection (lib/redis_async.h). */
static int redis_fd(struct dp_pagesrc *s)
{
    struct dp_rasync *as = as_of((struct redis_src *)s);
    return as ? dp_rasync_fd(as) : -1;
}
/* Readable only: the node connections' own EPOLLOUT is inside the set. */
static short redis_events(struct dp_pagesrc *s)
{
    (void)s;
    return EPOLLIN;
}
static int redis_healthy(struct dp_pagesrc *s) { return ((struct redis_src *)s)->healthy; }

static const char *redis_fenced(struct dp_pagesrc *s)
{
    struct redis_src *r = (struct redis_src *)s;
    return r->fenced ? r->fenced_why : NULL;
}

/* What is in flight is dropped with the connections: the daemon is gone. */
static void redis_close(struct dp_pagesrc *s)
{
    struct redis_src *r = (struct redis_src *)s;
    dp_rasync_free(r->as);
    dp_store_close(r->st);
    dp_checkpoint_close(r->cp);
    free(r->written.k);
    free(r->plan);
    free(r);
}

static const struct dp_pagesrc_ops redis_ops = {
    .name = "redis", .task_map = redis_task_map, .submit = redis_submit, .put = redis_put,
    .put_max = redis_put_max, .fd = redis_fd, .events = redis_events,
    .process = redis_process, .healthy = redis_healthy, .fenced = redis_fenced, .close = redis_close,
};

int dp_pagesrc_is_redis(const struct dp_pagesrc *s) { return s && s->ops == &redis_ops; }

struct dp_store *dp_pagesrc_redis_store(struct dp_pagesrc *s)
{
    return dp_pagesrc_is_redis(s) ? ((struct redis_src *)s)->st : NULL;
}

struct dp_pagesrc *dp_pagesrc_redis_open(struct dp_store *st, const char *images_dir, const char *writer,
                                         uint64_t epoch, struct dp_err *err)
{
    struct redis_src *r = calloc(1, sizeof(*r));
    if (!r) {
        dp_err_set(err, "out of memory");
        return NULL;
    }
    if (dp_checkpoint_open(images_dir, &r->cp, err) < 0) {
        free(r);
        return NULL;
    }
    r->st = st;
    /* what still runs blocking (the slot map read again after a failover,
     * the lease's release) is bounded well inside --writeback-timeout */
    st->timeout_ms = PUT_TIMEOUT_MS;
    st->wait_ms = WAIT_MS;
    r->healthy = 1;
    snprintf(r->writer, sizeof(r->writer), "%s", writer);
    r->epoch = epoch;
    r->base.ops = &redis_ops;
    snprintf(r->base.desc, sizeof(r->base.desc), "store %.200s", st->url);
    return &r->base;
}

int dp_pagesrc_redis_release(struct dp_pagesrc *s)
{
    if (!dp_pagesrc_is_redis(s))
        return 0;
    struct redis_src *r = (struct redis_src *)s;
    if (!r->fenced)
        dp_store_lease_release(r->st, r->writer, r->epoch);
    return 1;
}
