/* store_redis: see store_redis.h. */
#include "store_redis.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "client.h"
#include "cpid.h"
#include "hotset.h"
#include "image.h"
#include "pageserver_hotset.h"
#include "perm.h"
#include "pagesrc_file.h"
#include "proto.h"
#include "skeleton.h"

#define BATCH_EXTENTS 64           /* SETs in flight per pipelined batch (4 MiB) */
#define SKEL_CHUNK (8u << 20)      /* bytes per skeleton key */
#define SKEL_MAX (1024u << 20)     /* a skeleton larger than this is refused */
#define PUT_GROUP_PAGES 16         /* pages per fenced write script */

/* ---- names ------------------------------------------------------------------- */

/* splitmix64's finalizer: neighbours in, far apart out. */
static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

unsigned dp_store_group(int32_t pid, uint64_t ext)
{
    return (unsigned)(mix64(((uint64_t)(uint32_t)pid << 40) ^ (ext / DP_STORE_EXT_BYTES)) % DP_STORE_GROUPS);
}

/* 32 lower-case hex digits. */
static int id_ok(const char *id)
{
    return id && strlen(id) == DP_STORE_ID_LEN && strspn(id, "0123456789abcdef") == DP_STORE_ID_LEN;
}

int dp_store_writer_ok(const char *w)
{
    size_t l = w ? strlen(w) : 0;
    return l >= 1 && l <= DP_STORE_WRITER_MAX &&
           strspn(w, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == l;
}

/* snprintf that reports truncation as -1, else the length. */
static int fmt_key(size_t len, int n)
{
    return n < 0 || (size_t)n >= len ? -1 : n;
}

int dp_store_key_extent(char *buf, size_t len, const char *id, int32_t pid, uint64_t ext)
{
    if (!id_ok(id) || pid <= 0 || ext % DP_STORE_EXT_BYTES)
        return -1;
    return fmt_key(len, snprintf(buf, len, "dp:{%s:%u}:p:%d:%" PRIx64, id, dp_store_group(pid, ext), pid, ext));
}

int dp_store_key_page(char *buf, size_t len, const char *id, const char *writer, int32_t pid, uint64_t page)
{
    if (!id_ok(id) || !dp_store_writer_ok(writer) || pid <= 0 || page % 4096)
        return -1;
    uint64_t ext = page - page % DP_STORE_EXT_BYTES;
    return fmt_key(len, snprintf(buf, len, "dp:{%s:%u}:w:%s:%d:%" PRIx64, id, dp_store_group(pid, ext), writer,
                                      pid, page));
}

int dp_store_key_fence(char *buf, size_t len, const char *id, unsigned group, const char *writer)
{
    if (!id_ok(id) || !dp_store_writer_ok(writer) || group >= DP_STORE_GROUPS)
        return -1;
    return fmt_key(len, snprintf(buf, len, "dp:{%s:%u}:f:%s", id, group, writer));
}

int dp_store_key_meta(char *buf, size_t len, const char *id, const char *what)
{
    if (!id_ok(id) || !what || !*what)
        return -1;
    return fmt_key(len, snprintf(buf, len, "dp:{%s}:%s", id, what));
}

/* ---- open / close ---------------------------------------------------------------- */

struct dp_store *dp_store_open(const char *url, const struct dp_redis_opts *o, struct dp_err *err)
{
    struct dp_redis_url u;
    if (dp_redis_parse_url(url, &u, err) < 0)
        return NULL;
    if (u.id[0] && !id_ok(u.id)) {
        dp_err_set(err, "store '%s': the checkpoint ID is the %u hex digits 'checkpoint --store' printed", url,
                   DP_STORE_ID_LEN);
        return NULL;
    }
    struct dp_store *st = calloc(1, sizeof(*st));
    if (!st) {
        dp_err_set(err, "out of memory");
        return NULL;
    }
    st->cl = dp_rcluster_open(&u, o, err);
    if (!st->cl) {
        free(st);
        return NULL;
    }
    memcpy(st->id, u.id, strlen(u.id) + 1); /* empty, or 32 digits (checked above) */
    snprintf(st->url, sizeof(st->url), "%s", url);
    st->timeout_ms = 30000;
    st->wait_ms = 2000;
    st->min_replicas = 1;
    return st;
}

struct dp_store *dp_store_open_cli(const struct dp_store_cli *c, struct dp_err *err)
{
    struct dp_redis_opts o;
    memset(&o, 0, sizeof(o));
    o.timeout_ms = 5000;
    const char *files[3][2] = {{c->ca, o.ca_file}, {c->cert, o.cert_file}, {c->key, o.key_file}};
    for (int i = 0; i < 3; i++)
        if (files[i][0] && snprintf((char *)files[i][1], sizeof(o.ca_file), "%s", files[i][0]) >= (int)sizeof(o.ca_file)) {
            dp_err_set(err, "store: path too long: %s", files[i][0]);
            return NULL;
        }
    if (c->user && snprintf(o.user, sizeof(o.user), "%s", c->user) >= (int)sizeof(o.user)) {
        dp_err_set(err, "--store-user: at most %zu characters", sizeof(o.user) - 1);
        return NULL;
    }
    if (c->pass_file) {
        uint8_t *data = NULL;
        size_t len = 0;
        if (dp_read_file(c->pass_file, &data, &len, err) < 0)
            return NULL;
        size_t l = 0;
        while (l < len && data[l] != '\n' && data[l] != '\r')
            l++;
        int ok = l > 0 && l < sizeof(o.pass);
        for (size_t i = 0; ok && i < l; i++)
            ok = data[i] > 0x20 && data[i] < 0x7f;
        if (ok)
            memcpy(o.pass, data, l);
        sodium_memzero(data, len);
        free(data);
        if (!ok) {
            dp_err_set(err, "--store-pass-file %s: the first line must be 1-%zu printable characters", c->pass_file,
                       sizeof(o.pass) - 1);
            return NULL;
        }
    }
    struct dp_store *st = dp_store_open(c->url, &o, err);
    sodium_memzero(o.pass, sizeof(o.pass));
    return st;
}

void dp_store_close(struct dp_store *st)
{
    if (!st)
        return;
    dp_rcluster_close(st->cl);
    free(st);
}

/* ---- batches ------------------------------------------------------------------ */

int dp_store_replies_ok(struct dp_rcmd *cmds, size_t n, int *fenced, struct dp_err *err)
{
    for (size_t i = 0; i < n; i++) {
        redisReply *r = cmds[i].reply;
        if (r->type == REDIS_REPLY_ERROR) {
            if (fenced && r->len >= 9 && memcmp(r->str, "DPFENCED ", 9) == 0)
                *fenced = 1;
            dp_err_set(err, "the store refused a write: %.200s%s", r->str,
                       strncmp(r->str, "OOM", 3) == 0 ? " (the cluster is full: raise maxmemory or add masters)" : "");
            return -1;
        }
    }
    return 0;
}

/* WAIT for st->min_replicas on every node that answered cmds. 1 = all
 * acknowledged; 0 = some did not (connection lost, too few replicas: send
 * again); *why says which. */
static int wait_replicas(struct dp_store *st, struct dp_rcmd *cmds, size_t n, struct dp_err *why)
{
    uint8_t done[DP_REDIS_MAX_NODES] = {0};
    for (size_t i = 0; i < n; i++) {
        int node = cmds[i].node;
        if (node < 0 || node >= DP_REDIS_MAX_NODES || done[node])
            continue;
        done[node] = 1;
        long long acked = dp_rcluster_wait(st->cl, node, st->min_replicas, st->wait_ms, why);
        if (acked < 0)
            return 0;
        if (acked < st->min_replicas) {
            dp_err_set(why, "%s: %lld of %d replicas acknowledged within %d ms", dp_rcluster_node_name(st->cl, node),
                       acked, st->min_replicas, st->wait_ms);
            return 0;
        }
    }
    return 1;
}

/* Runs a batch of writes until every node that took them has them on
 * min_replicas replicas; resends the whole batch (idempotent writes) after a
 * lost connection or a short WAIT, until st->timeout_ms. */
static int exec_durable(struct dp_store *st, struct dp_rcmd *cmds, size_t n, int *fenced, struct dp_err *err)
{
    uint64_t deadline = dp_now_ns() + (uint64_t)st->timeout_ms * 1000000ull;
    struct dp_err why = {{0}};
    for (;;) {
        for (size_t i = 0; i < n; i++)
            dp_rcmd_reset(&cmds[i]);
        uint64_t now = dp_now_ns();
        if (now >= deadline) {
            dp_err_set(err, "writes not acknowledged by %d replica(s) within %d ms: %s", st->min_replicas,
                       st->timeout_ms, why.msg);
            return -1;
        }
        if (dp_rcluster_exec(st->cl, cmds, n, (int)((deadline - now) / 1000000) + 1, err) < 0)
            return -1;
        if (dp_store_replies_ok(cmds, n, fenced, err) < 0)
            return -1;
        if (st->min_replicas <= 0 || wait_replicas(st, cmds, n, &why))
            return 0;
        dp_debug("store: sending %zu writes again: %s", n, why.msg);
    }
}

static void free_cmds(struct dp_rcmd *cmds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dp_rcmd_reset(&cmds[i]);
}

/* n commands with a key buffer each (the keys live as long as the batch). */
struct cmd_batch {
    struct dp_rcmd *cmds;
    char (*keys)[DP_STORE_KEY_MAX];
    size_t n;
};

static int batch_alloc(struct cmd_batch *b, size_t n, struct dp_err *err)
{
    b->n = n;
    b->cmds = calloc(n ? n : 1, sizeof(*b->cmds));
    b->keys = calloc(n ? n : 1, sizeof(*b->keys));
    if (b->cmds && b->keys)
        return 0;
    free(b->cmds);
    free(b->keys);
    dp_err_set(err, "out of memory");
    return -1;
}

static void batch_free(struct cmd_batch *b)
{
    free_cmds(b->cmds, b->n);
    free(b->cmds);
    free(b->keys);
}

/* ---- checkpoint: pages ------------------------------------------------------------ */

struct ext_batch {
    struct dp_rcmd cmds[BATCH_EXTENTS];
    char keys[BATCH_EXTENTS][DP_STORE_KEY_MAX];
    uint8_t *data[BATCH_EXTENTS];
    size_t n;
};

/* Sends the batch's SETs (durably) and empties it. */
static int flush_extents(struct dp_store *st, struct ext_batch *b, struct dp_err *err)
{
    if (b->n == 0)
        return 0;
    int rc = exec_durable(st, b->cmds, b->n, NULL, err);
    free_cmds(b->cmds, b->n);
    b->n = 0;
    return rc;
}

/* Reads extent ext of task t (only pages with data in its lazy ranges; the
 * rest stays zero) into buf; *pages: how many had data. */
static int read_extent(const struct dp_task_image *t, uint64_t ext, uint8_t *buf, uint32_t *pages,
                       struct dp_err *err)
{
    memset(buf, 0, DP_STORE_EXT_BYTES);
    *pages = 0;
    for (uint32_t i = 0; i < DP_STORE_EXT_PAGES;) {
        struct dp_page_loc loc;
        dp_task_locate(t, ext + (uint64_t)i * 4096, &loc);
        uint32_t run = loc.run_pages_left ? loc.run_pages_left : 1;
        if (run > DP_STORE_EXT_PAGES - i)
            run = DP_STORE_EXT_PAGES - i;
        if (loc.kind == DP_PAGE_DATA) {
            int rc = dp_pread_full(loc.fd, buf + (size_t)i * 4096, (size_t)run * 4096, loc.offset);
            if (rc < 0) {
                dp_err_set(err, "pid %d: reading the pages at 0x%" PRIx64 ": %s", t->pid, ext + (uint64_t)i * 4096,
                           strerror(-rc));
                return -1;
            }
            *pages += run;
        } else if (loc.kind == DP_PAGE_NOT_LAZY) {
            run = 1;
        }
        i += run;
    }
    return 0;
}

/* Every extent of every task's lazy ranges that holds data. */
static int put_pages_of(struct dp_store *st, const struct dp_checkpoint *cp, struct dp_store_put_stats *s,
                        struct dp_err *err)
{
    struct ext_batch *b = calloc(1, sizeof(*b));
    if (!b) {
        dp_err_set(err, "out of memory");
        return -1;
    }
    int rc = -1;
    for (size_t k = 0; k < BATCH_EXTENTS; k++)
        if (!(b->data[k] = malloc(DP_STORE_EXT_BYTES))) {
            dp_err_set(err, "out of memory");
            goto out;
        }
    for (size_t ti = 0; ti < cp->nr_tasks; ti++) {
        const struct dp_task_image *t = &cp->tasks[ti];
        uint64_t last = UINT64_MAX;
        for (size_t li = 0; li < t->nr_lazy; li++) {
            uint64_t a = t->lazy[li].start - t->lazy[li].start % DP_STORE_EXT_BYTES;
            for (; a < t->lazy[li].end; a += DP_STORE_EXT_BYTES) {
                if (a == last)
                    continue; /* shared with the previous range: already sent */
                last = a;
                uint32_t pages;
                if (read_extent(t, a, b->data[b->n], &pages, err) < 0)
                    goto out;
                if (pages == 0)
                    continue;
                struct dp_rcmd *c = &b->cmds[b->n];
                int kl = dp_store_key_extent(b->keys[b->n], DP_STORE_KEY_MAX, st->id, t->pid, a);
                if (kl < 0) {
                    dp_err_set(err, "pid %d: no store key for 0x%" PRIx64, t->pid, a);
                    goto out;
                }
                dp_rcmd_init(c, 1);
                dp_rcmd_arg(c, "SET", 3);
                dp_rcmd_arg(c, b->keys[b->n], (size_t)kl);
                dp_rcmd_arg(c, b->data[b->n], DP_STORE_EXT_BYTES);
                b->n++;
                s->extents++;
                s->pages += pages;
                s->bytes += DP_STORE_EXT_BYTES;
                if (b->n == BATCH_EXTENTS && flush_extents(st, b, err) < 0)
                    goto out;
            }
        }
    }
    rc = flush_extents(st, b, err);
out:
    free_cmds(b->cmds, b->n);
    for (size_t k = 0; k < BATCH_EXTENTS; k++)
        free(b->data[k]);
    free(b);
    return rc;
}

/* ---- checkpoint: skeleton -------------------------------------------------------- */

/* The skeleton as one blob: a sequence of [u32 length][SKELETON chunk as
 * the page server sends it (lib/proto.h)], the END chunk last, so the
 * receiver validates it with the same decoder. */
static int skel_blob(const struct dp_checkpoint *cp, struct dp_buf *b, uint32_t *files, struct dp_err *err)
{
    struct dp_skeleton_file *fl = NULL;
    size_t nf = 0;
    if (dp_skeleton_plan(cp, &fl, &nf, err) < 0)
        return -1;
    uint8_t *tmp = malloc(DP_MAX_CHUNK_DATA);
    uint64_t data_total = 0;
    int rc = -1;
    if (!tmp) {
        dp_err_set(err, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < nf; i++) {
        char path[8192];
        snprintf(path, sizeof(path), "%s/%s", cp->dir, fl[i].name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat sb;
        if (fd < 0 || fstat(fd, &sb) < 0) {
            dp_err_set(err, "skeleton: cannot open %s: %s", path, strerror(errno));
            if (fd >= 0)
                close(fd);
            goto out;
        }
        struct dp_extent none = {0, 0};
        size_t ne = fl[i].nr_extents ? fl[i].nr_extents : 1;
        for (size_t e = 0; e < ne; e++) {
            const struct dp_extent *x = fl[i].nr_extents ? &fl[i].extents[e] : &none;
            uint64_t off = x->offset, left = x->length;
            do { /* a file without extents still gets one (empty) chunk */
                uint32_t n = left > DP_MAX_CHUNK_DATA ? DP_MAX_CHUNK_DATA : (uint32_t)left;
                struct dp_skel_chunk ch = {.kind = DP_SKEL_DATA, .mode = (uint32_t)(sb.st_mode & 0777),
                                           .file_size = fl[i].size, .offset = off, .data_len = n,
                                           .name_len = (uint16_t)strlen(fl[i].name)};
                memcpy(ch.name, fl[i].name, ch.name_len);
                if (n && dp_pread_full(fd, tmp, n, off) < 0) {
                    dp_err_set(err, "skeleton: reading %s: short or failed", path);
                    close(fd);
                    goto out;
                }
                if (dp_buf_u32(b, (uint32_t)(DP_SKEL_CHUNK_HDR + ch.name_len + n)) || dp_enc_skel_chunk_hdr(b, &ch) ||
                    dp_buf_put(b, tmp, n)) {
                    dp_err_set(err, "out of memory");
                    close(fd);
                    goto out;
                }
                off += n;
                left -= n;
                data_total += n;
            } while (left > 0);
        }
        close(fd);
        if (b->len > SKEL_MAX) {
            dp_err_set(err, "the skeleton passes %u MiB: too large for the store", SKEL_MAX >> 20);
            goto out;
        }
    }
    struct dp_skel_chunk end = {.kind = DP_SKEL_END, .file_size = nf, .offset = data_total};
    if (dp_buf_u32(b, DP_SKEL_CHUNK_HDR) || dp_enc_skel_chunk_hdr(b, &end)) {
        dp_err_set(err, "out of memory");
        goto out;
    }
    *files = (uint32_t)nf;
    rc = 0;
out:
    free(tmp);
    dp_skeleton_free(fl, nf);
    return rc;
}

/* SETs the blob as dp:{ID}:skel:N chunks; the chunk count out. */
static int put_skel(struct dp_store *st, const struct dp_buf *b, uint32_t *chunks, struct dp_err *err)
{
    size_t n = (b->len + SKEL_CHUNK - 1) / SKEL_CHUNK;
    struct cmd_batch cb;
    if (batch_alloc(&cb, n, err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char what[32];
        snprintf(what, sizeof(what), "skel:%zu", i);
        int kl = dp_store_key_meta(cb.keys[i], DP_STORE_KEY_MAX, st->id, what);
        size_t off = i * SKEL_CHUNK, len = b->len - off > SKEL_CHUNK ? SKEL_CHUNK : b->len - off;
        dp_rcmd_init(&cb.cmds[i], 1);
        dp_rcmd_arg(&cb.cmds[i], "SET", 3);
        dp_rcmd_arg(&cb.cmds[i], cb.keys[i], (size_t)kl);
        dp_rcmd_arg(&cb.cmds[i], b->data + off, len);
    }
    int rc = exec_durable(st, cb.cmds, n, NULL, err);
    batch_free(&cb);
    *chunks = (uint32_t)n;
    return rc;
}

/* GET key: c gets the reply, whatever its type (reset by the caller). */
static int get_reply(struct dp_store *st, const char *key, struct dp_rcmd *c, struct dp_err *err)
{
    dp_rcmd_init(c, 1);
    dp_rcmd_arg(c, "GET", 3);
    dp_rcmd_arg(c, key, strlen(key));
    return dp_rcluster_exec(st->cl, c, 1, st->timeout_ms, err);
}

int dp_store_put_blob(struct dp_store *st, const char *what, const uint8_t *data, size_t len, struct dp_err *err)
{
    char key[DP_STORE_KEY_MAX];
    int kl = dp_store_key_meta(key, sizeof(key), st->id, what);
    if (kl < 0) {
        dp_err_set(err, "no checkpoint ID");
        return -1;
    }
    if (len > DP_REDIS_MAX_BULK) {
        dp_err_set(err, "the %s is larger than %u MiB", what, DP_REDIS_MAX_BULK >> 20);
        return -1;
    }
    struct dp_rcmd c;
    dp_rcmd_init(&c, 1);
    dp_rcmd_arg(&c, "SET", 3);
    dp_rcmd_arg(&c, key, (size_t)kl);
    dp_rcmd_arg(&c, data, len);
    int rc = exec_durable(st, &c, 1, NULL, err);
    dp_rcmd_reset(&c);
    return rc;
}

/* The hot set 'checkpoint --classify' left beside the images (if any). */
static int put_hotset(struct dp_store *st, const char *dir, uint64_t *bytes, struct dp_err *err)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", dir, DP_HOTSET_FILE);
    *bytes = 0;
    if (access(path, F_OK) < 0)
        return 0;
    uint8_t *data = NULL;
    size_t len = 0;
    if (dp_read_file(path, &data, &len, err) < 0)
        return -1;
    int rc = dp_store_put_blob(st, "hotset", data, len, err);
    free(data);
    *bytes = len;
    return rc;
}

int dp_store_get_blob(struct dp_store *st, const char *what, uint8_t **buf, size_t *len, struct dp_err *err)
{
    char key[DP_STORE_KEY_MAX];
    if (dp_store_key_meta(key, sizeof(key), st->id, what) < 0) {
        dp_err_set(err, "no checkpoint ID");
        return -1;
    }
    struct dp_rcmd c;
    if (get_reply(st, key, &c, err) < 0)
        return -1;
    int rc = 0;
    if (c.reply->type == REDIS_REPLY_NIL) {
        dp_err_set(err, "no %s stored with this checkpoint", what);
        rc = 1;
    } else if (c.reply->type != REDIS_REPLY_STRING || !(*buf = malloc(c.reply->len ? c.reply->len : 1))) {
        dp_err_set(err, "the stored %s is not a string (or out of memory)", what);
        rc = -1;
    } else {
        memcpy(*buf, c.reply->str, c.reply->len);
        *len = c.reply->len;
    }
    dp_rcmd_reset(&c);
    return rc;
}

int dp_store_pull_hotsets(struct dp_store *st, const struct dp_checkpoint *cp, struct dp_err *err)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = dp_store_get_blob(st, "hotset", &buf, &len, err);
    if (rc < 0)
        return -1;
    if (rc == 0) {
        char path[4200];
        snprintf(path, sizeof(path), "%s/%s", cp->dir, DP_HOTSET_FILE);
        FILE *f = dp_fopen_private(path);
        int wr = f && fwrite(buf, 1, len, f) == len;
        if (f && fclose(f) != 0)
            wr = 0;
        free(buf);
        if (!wr) {
            dp_err_set(err, "cannot write %s: %s", path, strerror(errno));
            return -1;
        }
    }
    buf = NULL;
    rc = dp_store_get_blob(st, "trace", &buf, &len, err);
    if (rc < 0)
        return -1;
    if (rc == 0) {
        /* checked against the checkpoint and kept as the page server keeps it */
        struct dp_hotset_store *hs = NULL;
        uint64_t pages;
        uint32_t runs;
        char name[256];
        int k = dp_hotset_store_open(cp, &hs, err) < 0 ? -1
                : dp_hotset_store_put_trace(hs, buf, len, &pages, &runs, name, sizeof(name), err);
        dp_hotset_store_close(hs);
        free(buf);
        if (k != DP_E_OK) {
            dp_err_set(err, "the fault trace in the store: %s", err->msg);
            return -1;
        }
    }
    return 0;
}


int dp_store_put_checkpoint(struct dp_store *st, const char *images_dir, struct dp_store_put_stats *s,
                            struct dp_err *err)
{
    memset(s, 0, sizeof(*s));
    struct dp_checkpoint *cp = NULL;
    uint8_t idb[DP_CPID_SIZE];
    char hex[DP_CPID_HEX];
    if (dp_checkpoint_open(images_dir, &cp, err) < 0 || dp_checkpoint_check_images_only(cp, err) < 0 ||
        dp_checkpoint_identity(cp, idb, err) < 0) {
        dp_checkpoint_close(cp);
        return -1;
    }
    dp_cpid_hex(idb, hex);
    memcpy(st->id, hex, DP_STORE_ID_LEN);
    st->id[DP_STORE_ID_LEN] = '\0';
    struct dp_buf b = {0};
    int rc = -1;
    if (put_pages_of(st, cp, s, err) < 0 || skel_blob(cp, &b, &s->skel_files, err) < 0 ||
        put_skel(st, &b, &s->skel_chunks, err) < 0)
        goto out;
    s->skel_bytes = b.len;
    if (put_hotset(st, images_dir, &s->hotset_bytes, err) < 0)
        goto out;
    /* meta last: its presence says the checkpoint is complete. */
    char key[DP_STORE_KEY_MAX];
    int kl = dp_store_key_meta(key, sizeof(key), st->id, "meta");
    char *meta = NULL;
    json_t *j = json_pack("{s:i, s:s, s:I, s:I, s:i, s:I, s:i, s:i}", "version", 1, "identity", hex, "extents",
                          (json_int_t)s->extents, "pages", (json_int_t)s->pages, "extent_pages", DP_STORE_EXT_PAGES,
                          "skeleton_bytes", (json_int_t)b.len, "skeleton_chunks", (int)s->skel_chunks, "groups",
                          DP_STORE_GROUPS);
    meta = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!meta) {
        dp_err_set(err, "out of memory");
        goto out;
    }
    struct dp_rcmd c;
    dp_rcmd_init(&c, 1);
    dp_rcmd_arg(&c, "SET", 3);
    dp_rcmd_arg(&c, key, (size_t)kl);
    dp_rcmd_arg(&c, meta, strlen(meta));
    rc = exec_durable(st, &c, 1, NULL, err);
    dp_rcmd_reset(&c);
    free(meta);
    s->masters = dp_rcluster_masters(st->cl);
out:
    dp_buf_free(&b);
    dp_checkpoint_close(cp);
    return rc;
}

/* ---- restore: skeleton ------------------------------------------------------------ */

/* GET of one key: the reply (string) or -1 with err; a missing key is an
 * error naming what. */
static int get_string(struct dp_store *st, const char *key, redisReply **out, const char *what, struct dp_err *err)
{
    struct dp_rcmd c;
    if (get_reply(st, key, &c, err) < 0)
        return -1;
    if (c.reply->type != REDIS_REPLY_STRING) {
        dp_err_set(err, "%s (%s) %s", what, key,
                   c.reply->type == REDIS_REPLY_NIL ? "is not in the store: wrong ID, or the checkpoint's upload did "
                                                      "not finish ('checkpoint --store' again)"
                                                    : "is not a string");
        dp_rcmd_reset(&c);
        return -1;
    }
    *out = c.reply;
    return 0;
}

/* Writes the skeleton blob's chunks into dirfd; validates every record. */
static int write_skel_blob(int dirfd, const uint8_t *p, size_t len, uint32_t *files, uint64_t *bytes,
                           struct dp_err *err)
{
    int fd = -1;
    char cur[DP_MAX_NAME + 1] = "";
    uint32_t seen = 0;
    uint64_t got = 0;
    size_t off = 0;
    while (off + 4 <= len) {
        uint32_t rl = dp_get_u32(p + off);
        off += 4;
        struct dp_skel_chunk ch;
        if (rl > len - off || dp_dec_skel_chunk(p + off, rl, &ch, err) != DP_E_OK)
            goto bad;
        off += rl;
        if (ch.kind == DP_SKEL_END) {
            if (off != len || ch.file_size != seen || ch.offset != got) {
                dp_err_set(err, "skeleton in the store ends with %u files / %" PRIu64 " bytes, it says %" PRIu64
                           " / %" PRIu64, seen, got, ch.file_size, ch.offset);
                goto bad;
            }
            if (fd >= 0)
                close(fd);
            *files = seen;
            *bytes = got;
            return 0;
        }
        if (fd < 0 || strcmp(cur, ch.name) != 0) {
            if (fd >= 0)
                close(fd);
            fd = dp_skel_open_rel(dirfd, ch.name, ch.mode);
            if (fd < 0 || ftruncate(fd, (off_t)ch.file_size) < 0) {
                dp_err_set(err, "cannot create %s in the skeleton directory: %s", ch.name, strerror(errno));
                goto fail;
            }
            snprintf(cur, sizeof(cur), "%s", ch.name);
            seen++;
        }
        if (ch.data_len && pwrite(fd, ch.data, ch.data_len, (off_t)ch.offset) != (ssize_t)ch.data_len) {
            dp_err_set(err, "writing %s: %s", ch.name, strerror(errno));
            goto fail;
        }
        got += ch.data_len;
    }
    dp_err_set(err, "skeleton in the store is truncated (no end record)");
bad:;
    char why[sizeof(err->msg)];
    memcpy(why, err->msg, sizeof(why));
    why[sizeof(why) - 100] = '\0';
    dp_err_set(err, "the skeleton in the store is malformed: %s", why);
fail:
    if (fd >= 0)
        close(fd);
    return -1;
}

int dp_store_get_skeleton(struct dp_store *st, const char *dir, uint32_t *files, uint64_t *bytes, struct dp_err *err)
{
    char key[DP_STORE_KEY_MAX];
    redisReply *m = NULL;
    if (dp_store_key_meta(key, sizeof(key), st->id, "meta") < 0) {
        dp_err_set(err, "the store URL names no checkpoint: give redis://ADDR:PORT/ID (ID from 'checkpoint --store')");
        return -1;
    }
    if (get_string(st, key, &m, "the checkpoint's meta record", err) < 0)
        return -1;
    json_error_t je;
    json_t *j = json_loadb(m->str, m->len, 0, &je);
    freeReplyObject(m);
    json_int_t version = 0, chunks = -1, sbytes = -1, ep = 0;
    if (!j || json_unpack(j, "{s:I, s:I, s:I, s:I}", "version", &version, "skeleton_chunks", &chunks,
                          "skeleton_bytes", &sbytes, "extent_pages", &ep) < 0 ||
        version != 1 || ep != DP_STORE_EXT_PAGES || chunks < 1 || sbytes < 0 || sbytes > SKEL_MAX ||
        (json_int_t)((sbytes + SKEL_CHUNK - 1) / SKEL_CHUNK) != chunks) {
        json_decref(j);
        dp_err_set(err, "the checkpoint's meta record in the store is not version 1 with a valid skeleton size");
        return -1;
    }
    json_decref(j);
    uint8_t *blob = malloc((size_t)sbytes + 1);
    if (!blob) {
        dp_err_set(err, "out of memory");
        return -1;
    }
    size_t have = 0;
    for (json_int_t i = 0; i < chunks; i++) {
        char what[32];
        snprintf(what, sizeof(what), "skel:%lld", (long long)i);
        dp_store_key_meta(key, sizeof(key), st->id, what);
        redisReply *r;
        if (get_string(st, key, &r, "a skeleton chunk", err) < 0) {
            free(blob);
            return -1;
        }
        size_t want = (size_t)sbytes - have > SKEL_CHUNK ? SKEL_CHUNK : (size_t)sbytes - have;
        if (r->len != want) {
            dp_err_set(err, "skeleton chunk %lld is %zu bytes, not %zu", (long long)i, r->len, want);
            freeReplyObject(r);
            free(blob);
            return -1;
        }
        memcpy(blob + have, r->str, r->len);
        have += r->len;
        freeReplyObject(r);
    }
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        dp_err_set(err, "cannot create %s: %s", dir, strerror(errno));
        free(blob);
        return -1;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        dp_err_set(err, "cannot open %s: %s", dir, strerror(errno));
        free(blob);
        return -1;
    }
    int rc = write_skel_blob(dfd, blob, have, files, bytes, err);
    close(dfd);
    free(blob);
    return rc;
}

/* EVAL SCRIPT NUMKEYS ...: the command's routing key is its first key (argument
 * 3), which every script here keeps in the slot group it guards; the caller
 * appends the keys and arguments. */
static void eval_init(struct dp_rcmd *c, const char *script, size_t script_len, const char *nkeys, size_t nkeys_len)
{
    dp_rcmd_init(c, 3);
    dp_rcmd_arg(c, "EVAL", 4);
    dp_rcmd_arg(c, script, script_len);
    dp_rcmd_arg(c, nkeys, nkeys_len);
}


/* ---- lease and fence --------------------------------------------------------------- */

/* Lua numbers are doubles: integers are exact only up to 2^53, and Redis's
 * Lua prints numbers with "%.14g" (1e+14 and up in exponent form). Epochs
 * stop at DP_STORE_EPOCH_MAX (14 digits): a lease with more digits does not
 * decode, and a grant at the bound is refused with the lease unchanged, so an
 * epoch never rounds, repeats or prints in a form the next grant cannot read. */
_Static_assert(DP_STORE_EPOCH_MAX == 99999999999999ull, "LEASE_TAKE spells DP_STORE_EPOCH_MAX out");
static const char LEASE_TAKE[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "local e, h = 0, ''\n"
    "if v then local a, b = string.match(v, '^(%d+) (.*)$');"
    " if not a or #a > 14 then return redis.error_reply('DPBADLEASE') end;"
    " e = tonumber(a); h = b end\n"
    "if h == ARGV[1] then return e end\n"
    "if h ~= '' and ARGV[2] ~= '1' then return redis.error_reply('DPHELD ' .. h) end\n"
    "if e >= 99999999999999 then return redis.error_reply('DPEPOCHMAX ' .. e) end\n"
    "e = e + 1\n"
    "redis.call('SET', KEYS[1], string.format('%d', e) .. ' ' .. ARGV[1])\n"
    "return e\n";
static const char LEASE_RELEASE[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "if v and string.match(v, '^(%d+) ') == ARGV[1] then redis.call('SET', KEYS[1], ARGV[1] .. ' ') end\n"
    "return 1\n";
static const char FENCE_RAISE[] =
    "local c = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "local e = tonumber(ARGV[1])\n"
    "if c > e then return redis.error_reply('DPFENCED ' .. c) end\n"
    "if c < e then redis.call('SET', KEYS[1], ARGV[1]) end\n"
    "return 1\n";
static const char FENCED_WRITE[] =
    "local c = redis.call('GET', KEYS[1])\n"
    "if c ~= ARGV[1] then return redis.error_reply('DPFENCED ' .. (c or 'none')) end\n"
    "for i = 2, #KEYS do redis.call('SET', KEYS[i], ARGV[i]) end\n"
    "return #KEYS - 1\n";

int dp_store_lease(struct dp_store *st, const char *writer, const char *holder, int take_over, uint64_t *epoch,
                   struct dp_err *err)
{
    char key[DP_STORE_KEY_MAX], what[64];
    snprintf(what, sizeof(what), "lease:%s", writer);
    if (!dp_store_writer_ok(writer) || dp_store_key_meta(key, sizeof(key), st->id, what) < 0) {
        dp_err_set(err, "--store-writer '%s': 1-%u of A-Z a-z 0-9 _ . -", writer, DP_STORE_WRITER_MAX);
        return -1;
    }
    /* A nonce makes the holder unique, so sending the script again (after a
     * lost connection or a short WAIT) finds the lease already ours. */
    uint8_t nonce[8];
    char who[256], nh[17];
    randombytes_buf(nonce, sizeof(nonce));
    sodium_bin2hex(nh, sizeof(nh), nonce, sizeof(nonce));
    snprintf(who, sizeof(who), "%.200s #%s", holder, nh);
    struct dp_rcmd c;
    eval_init(&c, LEASE_TAKE, sizeof(LEASE_TAKE) - 1, "1", 1);
    dp_rcmd_arg(&c, key, strlen(key));
    dp_rcmd_arg(&c, who, strlen(who));
    dp_rcmd_arg(&c, take_over ? "1" : "0", 1);
    int fenced = 0;
    if (exec_durable(st, &c, 1, &fenced, err) < 0) {
        dp_rcmd_reset(&c);
        if (strstr(err->msg, "DPHELD ")) {
            char h[200];
            snprintf(h, sizeof(h), "%s", strstr(err->msg, "DPHELD ") + 7);
            dp_err_set(err, "writer '%s' of this checkpoint is held by %s; if that restore is gone, take it over "
                       "(--take-over): its writes are fenced from then on", writer, h);
        } else if (strstr(err->msg, "DPEPOCHMAX")) {
            dp_err_set(err, "writer '%s' of this checkpoint has used every lease epoch (up to %llu); restore with "
                       "another --store-writer NAME", writer, (unsigned long long)DP_STORE_EPOCH_MAX);
        } else if (strstr(err->msg, "DPBADLEASE")) {
            dp_err_set(err, "the lease of writer '%s' in the store is not 'EPOCH HOLDER' with at most 14 digits: "
                       "not ours, or damaged; restore with another --store-writer NAME", writer);
        }
        return -1;
    }
    if (c.reply->type != REDIS_REPLY_INTEGER || c.reply->integer < 1 ||
        (unsigned long long)c.reply->integer > DP_STORE_EPOCH_MAX) {
        dp_err_set(err, "the lease script answered a non-epoch");
        dp_rcmd_reset(&c);
        return -1;
    }
    *epoch = (uint64_t)c.reply->integer;
    dp_rcmd_reset(&c);
    /* Raise the fence everywhere before the first read. */
    struct cmd_batch fb;
    char ep[24];
    int el = snprintf(ep, sizeof(ep), "%" PRIu64, *epoch);
    if (batch_alloc(&fb, DP_STORE_GROUPS, err) < 0)
        return -1;
    for (unsigned g = 0; g < DP_STORE_GROUPS; g++) {
        struct dp_rcmd *f = &fb.cmds[g];
        int kl = dp_store_key_fence(fb.keys[g], DP_STORE_KEY_MAX, st->id, g, writer);
        eval_init(f, FENCE_RAISE, sizeof(FENCE_RAISE) - 1, "1", 1);
        dp_rcmd_arg(f, fb.keys[g], (size_t)kl);
        dp_rcmd_arg(f, ep, (size_t)el);
    }
    int rc = exec_durable(st, fb.cmds, DP_STORE_GROUPS, &fenced, err);
    if (rc < 0 && fenced)
        dp_err_set(err, "a newer restore took writer '%s' while this one started (epoch %" PRIu64 "): stopped", writer,
                   *epoch);
    batch_free(&fb);
    return rc;
}

void dp_store_lease_release(struct dp_store *st, const char *writer, uint64_t epoch)
{
    char key[DP_STORE_KEY_MAX], what[64], ep[24];
    snprintf(what, sizeof(what), "lease:%s", writer);
    if (dp_store_key_meta(key, sizeof(key), st->id, what) < 0)
        return;
    int el = snprintf(ep, sizeof(ep), "%" PRIu64, epoch);
    struct dp_rcmd c;
    eval_init(&c, LEASE_RELEASE, sizeof(LEASE_RELEASE) - 1, "1", 1);
    dp_rcmd_arg(&c, key, strlen(key));
    dp_rcmd_arg(&c, ep, (size_t)el);
    struct dp_err err;
    if (dp_rcluster_exec(st->cl, &c, 1, 5000, &err) < 0)
        dp_warn("store: the lease of writer '%s' was not released (%s); the next restore needs --take-over", writer,
                err.msg);
    dp_rcmd_reset(&c);
}

int dp_store_writers(struct dp_store *st, char (*names)[DP_STORE_WRITER_MAX + 1], uint64_t *epochs, int max,
                     struct dp_err *err)
{
    char tag[64], pat[96];
    snprintf(tag, sizeof(tag), "{%s:0}", st->id);
    snprintf(pat, sizeof(pat), "dp:%s:f:*", tag);
    struct dp_rcmd c;
    dp_rcmd_init(&c, -1);
    c.slot = dp_redis_keyslot(tag, strlen(tag));
    dp_rcmd_arg(&c, "KEYS", 4);
    dp_rcmd_arg(&c, pat, strlen(pat));
    if (dp_rcluster_exec(st->cl, &c, 1, st->timeout_ms, err) < 0)
        return -1;
    redisReply *r = c.reply;
    if (r->type != REDIS_REPLY_ARRAY) {
        dp_err_set(err, "KEYS %s answered %s", pat, r->type == REDIS_REPLY_ERROR ? r->str : "a non-array");
        dp_rcmd_reset(&c);
        return -1;
    }
    int n = 0;
    size_t pre = strlen(pat) - 1;
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *k = r->element[i];
        if (k->type != REDIS_REPLY_STRING || k->len <= pre || !dp_store_writer_ok(k->str + pre))
            continue;
        if (n < max && names) {
            snprintf(names[n], sizeof(names[n]), "%s", k->str + pre);
            struct dp_rcmd g;
            dp_rcmd_init(&g, 1);
            dp_rcmd_arg(&g, "GET", 3);
            dp_rcmd_arg(&g, k->str, k->len);
            epochs[n] = 0;
            if (dp_rcluster_exec(st->cl, &g, 1, st->timeout_ms, err) == 0 && g.reply->type == REDIS_REPLY_STRING)
                epochs[n] = strtoull(g.reply->str, NULL, 10);
            dp_rcmd_reset(&g);
        }
        n++;
    }
    dp_rcmd_reset(&c);
    return n;
}

/* ---- write-back ------------------------------------------------------------------- */

void dp_store_put_plan_free(struct dp_store_putplan *p)
{
    if (p->cmds)
        free_cmds(p->cmds, p->n);
    free(p->cmds);
    free(p->pkeys);
    free(p->fkeys);
    free(p->nks);
    memset(p, 0, sizeof(*p));
}

int dp_store_put_plan(struct dp_store *st, const char *writer, uint64_t epoch, const struct dp_store_page *pages,
                      size_t n, struct dp_store_putplan *p, struct dp_err *err)
{
    memset(p, 0, sizeof(*p));
    /* One fenced script per (group, up to PUT_GROUP_PAGES pages): group the
     * pages by their group first. */
    size_t *order = malloc((n ? n : 1) * sizeof(*order));
    unsigned *grp = malloc((n ? n : 1) * sizeof(*grp));
    p->cmds = calloc(n ? n : 1, sizeof(*p->cmds));
    p->pkeys = calloc(n ? n : 1, sizeof(*p->pkeys));
    p->fkeys = calloc(n ? n : 1, sizeof(*p->fkeys));
    p->nks = calloc(n ? n : 1, sizeof(*p->nks));
    int el = snprintf(p->ep, sizeof(p->ep), "%" PRIu64, epoch), rc = -1;
    if (!order || !grp || !p->cmds || !p->pkeys || !p->fkeys || !p->nks) {
        dp_err_set(err, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t ext = pages[i].img - pages[i].img % DP_STORE_EXT_BYTES;
        grp[i] = dp_store_group(pages[i].pid, ext);
        order[i] = i;
        if (dp_store_key_page(p->pkeys[i], DP_STORE_KEY_MAX, st->id, writer, pages[i].pid, pages[i].img) < 0) {
            dp_err_set(err, "no store key for pid %d page 0x%" PRIx64, pages[i].pid, pages[i].img);
            goto out;
        }
    }
    /* insertion sort by group: batches are small (an eviction batch) */
    for (size_t i = 1; i < n; i++)
        for (size_t k = i; k > 0 && grp[order[k - 1]] > grp[order[k]]; k--) {
            size_t t = order[k];
            order[k] = order[k - 1];
            order[k - 1] = t;
        }
    for (size_t i = 0; i < n;) {
        unsigned g = grp[order[i]];
        size_t k = i;
        while (k < n && grp[order[k]] == g && k - i < PUT_GROUP_PAGES)
            k++;
        struct dp_rcmd *c = &p->cmds[p->n];
        int fl = dp_store_key_fence(p->fkeys[p->n], DP_STORE_KEY_MAX, st->id, g, writer);
        char *nk = p->nks[p->n];
        int nl = snprintf(nk, sizeof(p->nks[p->n]), "%zu", 1 + (k - i));
        eval_init(c, FENCED_WRITE, sizeof(FENCED_WRITE) - 1, nk, (size_t)nl);
        dp_rcmd_arg(c, p->fkeys[p->n], (size_t)fl);
        for (size_t j = i; j < k; j++)
            dp_rcmd_arg(c, p->pkeys[order[j]], strlen(p->pkeys[order[j]]));
        dp_rcmd_arg(c, p->ep, (size_t)el);
        for (size_t j = i; j < k; j++)
            dp_rcmd_arg(c, pages[order[j]].data, 4096);
        p->n++;
        i = k;
    }
    rc = 0;
out:
    free(order);
    free(grp);
    if (rc < 0)
        dp_store_put_plan_free(p);
    return rc;
}

int dp_store_put_pages(struct dp_store *st, const char *writer, uint64_t epoch, const struct dp_store_page *pages,
                       size_t n, int *fenced, struct dp_err *err)
{
    *fenced = 0;
    if (n == 0)
        return 0;
    struct dp_store_putplan p;
    if (dp_store_put_plan(st, writer, epoch, pages, n, &p, err) < 0)
        return -1;
    int rc = exec_durable(st, p.cmds, p.n, fenced, err);
    dp_store_put_plan_free(&p);
    return rc;
}
