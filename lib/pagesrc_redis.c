/* pagesrc_redis: see pagesrc_redis.h. */
#include "pagesrc_redis.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include "image.h"
#include "pagesrc_file.h"

#define FETCH_TIMEOUT_MS 30000   /* one batch, a failover included */

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

/* A write-back's completion, run from process() on the daemon's thread
 * (the daemon counts a put as pending only after put() returns). */
struct put_done {
    dp_pagesrc_put_cb cb;
    void *cookie;
    int status;
    char msg[sizeof(((struct dp_err *)0)->msg)];
    struct put_done *next;
};

struct redis_src {
    struct dp_pagesrc base;
    struct dp_store *st;
    struct dp_checkpoint *cp;
    int efd;
    struct dp_fetch *head, *tail;     /* submitted, not yet sent */
    struct wset written;
    char writer[DP_STORE_WRITER_MAX + 1];
    uint64_t epoch;
    int fenced, healthy, used;
    int in_process;                   /* completions running: submit queues only */
    struct put_done *puts, *puts_tail;  /* write-back completions to run */
    char fenced_why[256];
    struct dp_rcmd *cmds;             /* the batch being built */
    struct dp_store_read *plan;
    struct dp_fetch **owner;
    size_t cap;
};

static const struct dp_pagesrc_ops redis_ops;
static void redis_run(struct redis_src *r);

static int redis_task_map(struct dp_pagesrc *s, int32_t pid, struct dp_lazymap *map, struct dp_err *err)
{
    struct redis_src *r = (struct redis_src *)s;
    r->used = 1; /* only the daemon asks: it owns the lease from here on */
    return dp_checkpoint_lazymap(r->cp, pid, map, err);
}

static int redis_submit(struct dp_pagesrc *s, struct dp_fetch *f)
{
    struct redis_src *r = (struct redis_src *)s;
    f->src_next = NULL;
    if (r->tail)
        r->tail->src_next = f;
    else
        r->head = f;
    r->tail = f;
    if (!r->in_process) {
        /* out now: a fault waits for exactly this; what the daemon submits
         * while the batch runs (prefetch) goes into the next batch */
        redis_run(r);
        return 0;
    }
    uint64_t one = 1;
    if (write(r->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        dp_warn("store source: eventfd write failed: %s", strerror(errno));
    return 0;
}

/* Room for n more reads in the batch. */
static int reserve(struct redis_src *r, size_t need)
{
    if (need <= r->cap)
        return 0;
    size_t cap = r->cap ? r->cap : 256;
    while (cap < need)
        cap *= 2;
    struct dp_rcmd *c = realloc(r->cmds, cap * sizeof(*c));
    if (c)
        r->cmds = c;
    struct dp_store_read *p = realloc(r->plan, cap * sizeof(*p));
    if (p)
        r->plan = p;
    struct dp_fetch **o = realloc(r->owner, cap * sizeof(*o));
    if (o)
        r->owner = o;
    if (!c || !p || !o)
        return -1;
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
            r->owner[at + n] = f;
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

/* Sends every submitted fetch as one pipelined batch and completes them;
 * what done() submits meanwhile waits for the next batch (eventfd). */
static void redis_run(struct redis_src *r)
{
    struct dp_pagesrc *s = &r->base;
    struct dp_fetch *list = r->head;
    r->head = r->tail = NULL;
    if (!list)
        return;
    size_t n = 0;
    int failed = 0;
    for (struct dp_fetch *f = list; f; f = f->src_next) {
        f->status = 0;
        f->wire_bytes = 0;
        long k = plan_fetch(r, f, n);
        if (k < 0) {
            f->status = -ENOMEM;
            failed = 1;
            break;
        }
        n += (size_t)k;
    }
    char *nums = failed ? NULL : malloc(n * 48 + 1);
    struct dp_err err = {{0}};
    int rc = -1;
    if (nums) {
        for (size_t i = 0; i < n; i++)
            build_cmd(&r->cmds[i], &r->plan[i], nums + i * 48);
        uint64_t t0 = dp_now_ns();
        rc = dp_rcluster_exec(r->st->cl, r->cmds, n, FETCH_TIMEOUT_MS, &err);
        dp_debug("store: batch of %zu reads (first %u bytes) in %.1f us", n, n ? r->plan[0].len : 0,
                 (double)(dp_now_ns() - t0) / 1e3);
    }
    r->healthy = rc == 0;
    for (size_t i = 0; i < n && nums; i++) {
        struct dp_fetch *f = r->owner[i];
        redisReply *rep = r->cmds[i].reply;
        if (rc < 0 || !rep) {
            f->status = -EIO;
        } else if (rep->type != REDIS_REPLY_STRING || rep->len != r->plan[i].len) {
            /* never hand out made-up data: a missing extent or a short value */
            if (f->status == 0)
                dp_error("store: %s answered %s of %zu bytes, expected %u: the checkpoint's pages are incomplete",
                         r->plan[i].key, rep->type == REDIS_REPLY_STRING ? "a string" : "a non-string", rep->len,
                         r->plan[i].len);
            f->status = -EIO;
        } else if (f->status == 0) {
            memcpy(f->buf + r->plan[i].buf_off, rep->str, rep->len);
            f->wire_bytes += rep->len + r->plan[i].keylen + 40;
        }
        dp_rcmd_reset(&r->cmds[i]);
    }
    free(nums);
    if (rc < 0)
        dp_error("%s: %s; faults it cannot serve end by --fault-timeout", s->desc, err.msg);
    r->in_process = 1;
    for (struct dp_fetch *f = list; f;) {
        struct dp_fetch *next = f->src_next;
        if (!nums && f->status == 0)
            f->status = -ENOMEM;
        f->src_next = NULL;
        f->done(f);
        f = next;
    }
    r->in_process = 0;
}

/* Runs the write-back completions queued by redis_put. */
static void run_puts(struct redis_src *r)
{
    struct put_done *p = r->puts;
    r->puts = r->puts_tail = NULL;
    while (p) {
        struct put_done *next = p->next;
        p->cb(p->cookie, p->status, p->status ? p->msg : NULL);
        free(p);
        p = next;
    }
}

/* The eventfd: fetches queued while a batch completed, write-backs done. */
static void redis_process(struct dp_pagesrc *s)
{
    struct redis_src *r = (struct redis_src *)s;
    uint64_t v;
    if (read(r->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        dp_warn("store source: eventfd read failed: %s", strerror(errno));
    redis_run(r);
    run_puts(r);
}

static int redis_fd(struct dp_pagesrc *s) { return ((struct redis_src *)s)->efd; }
static int redis_healthy(struct dp_pagesrc *s) { return ((struct redis_src *)s)->healthy; }

static const char *redis_fenced(struct dp_pagesrc *s)
{
    struct redis_src *r = (struct redis_src *)s;
    return r->fenced ? r->fenced_why : NULL;
}

static void redis_close(struct dp_pagesrc *s)
{
    struct redis_src *r = (struct redis_src *)s;
    r->in_process = 1;
    for (struct put_done *p = r->puts; p;) { /* never run after close: the daemon is gone */
        struct put_done *next = p->next;
        free(p);
        p = next;
    }
    close(r->efd);
    dp_store_close(r->st);
    dp_checkpoint_close(r->cp);
    free(r->written.k);
    free(r->cmds);
    free(r->plan);
    free(r->owner);
    free(r);
}

/* The budget's write-back: the pages go to the store under this restore's
 * fence and are acknowledged by >= 1 replica (WAIT) before the completion
 * says 0; the store is synchronous, so the write happens here and only the
 * completion waits for process(). Later fetches read these pages back from
 * this writer's keys. */
static int redis_put(struct dp_pagesrc *s, int32_t pid, const uint64_t *img, const uint8_t *const *data, uint32_t n,
                     dp_pagesrc_put_cb cb, void *cookie, struct dp_err *err)
{
    struct redis_src *r = (struct redis_src *)s;
    if (r->fenced) {
        dp_err_set(err, "%s", r->fenced_why);
        return -1;
    }
    struct put_done *pd = calloc(1, sizeof(*pd));
    struct dp_store_page *pg = calloc(n ? n : 1, sizeof(*pg));
    if (!pd || !pg) {
        free(pd);
        free(pg);
        dp_err_set(err, "out of memory");
        return -1;
    }
    for (uint32_t i = 0; i < n; i++)
        pg[i] = (struct dp_store_page){.pid = pid, .img = img[i], .data = data[i]};
    int fenced = 0;
    struct dp_err perr = {{0}};
    pd->status = dp_store_put_pages(r->st, r->writer, r->epoch, pg, n, &fenced, &perr) < 0 ? -EIO : 0;
    free(pg);
    if (fenced) {
        r->fenced = 1;
        pd->status = -EPERM;
        snprintf(r->fenced_why, sizeof(r->fenced_why),
                 "writer '%s' of this checkpoint was taken over by a newer restore (epoch > %" PRIu64 ")", r->writer,
                 r->epoch);
    }
    for (uint32_t i = 0; pd->status == 0 && i < n; i++)
        if (wset_add(&r->written, wkey(pid, img[i])) < 0) {
            dp_err_set(&perr, "out of memory");
            pd->status = -ENOMEM;
        }
    memcpy(pd->msg, perr.msg, sizeof(pd->msg));
    pd->cb = cb;
    pd->cookie = cookie;
    if (r->puts_tail)
        r->puts_tail->next = pd;
    else
        r->puts = pd;
    r->puts_tail = pd;
    uint64_t one = 1;
    if (write(r->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        dp_warn("store source: eventfd write failed: %s", strerror(errno));
    return 0;
}

/* Pages per write-back: one eviction batch. */
static uint32_t redis_put_max(struct dp_pagesrc *s)
{
    (void)s;
    return 256;
}

static const struct dp_pagesrc_ops redis_ops = {
    .name = "redis", .task_map = redis_task_map, .submit = redis_submit, .put = redis_put,
    .put_max = redis_put_max, .fd = redis_fd,
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
    r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (r->efd < 0 || dp_checkpoint_open(images_dir, &r->cp, err) < 0) {
        if (r->efd < 0)
            dp_err_set(err, "eventfd: %s", strerror(errno));
        if (r->efd >= 0)
            close(r->efd);
        free(r);
        return NULL;
    }
    r->st = st;
    /* a write-back blocks the daemon's loop while it waits for its replica:
     * bounded well inside --writeback-timeout's default (5 s); a failed one
     * leaves the pages resident, to be written again */
    st->timeout_ms = 3000;
    st->wait_ms = 1000;
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
