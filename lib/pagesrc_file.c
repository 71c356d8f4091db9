/* pagesrc_file: page sources read from local files (the "raw" flat file;
 * pagesrc_local.c adds CRIU images). Reads are synchronous preads, but
 * completions are still delivered later through an eventfd, so the daemon
 * has one code path for every source. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <stdio.h>

#include "pagesrc.h"
#include "pagesrc_file.h"

int dp_fileq_init(struct dp_fileq *q)
{
    memset(q, 0, sizeof(*q));
    q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return q->efd < 0 ? -1 : 0;
}

void dp_fileq_complete(struct dp_fileq *q, struct dp_fetch *f)
{
    f->src_next = NULL;
    if (q->tail)
        q->tail->src_next = f;
    else
        q->head = f;
    q->tail = f;
    uint64_t one = 1;
    if (write(q->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        dp_warn("page source: eventfd write failed: %s", strerror(errno));
}

void dp_fileq_process(struct dp_fileq *q)
{
    uint64_t v;
    if (read(q->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        dp_warn("page source: eventfd read failed: %s", strerror(errno));
    /* Detach the list first: done() may submit more. */
    struct dp_fetch *f = q->head;
    q->head = q->tail = NULL;
    while (f) {
        struct dp_fetch *next = f->src_next;
        f->done(f);
        f = next;
    }
}

void dp_fileq_close(struct dp_fileq *q)
{
    if (q->efd >= 0)
        close(q->efd);
    q->efd = -1;
}

int dp_pread_full(int fd, void *buf, size_t n, uint64_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)buf + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            return -EIO; /* truncated file: never hand out made-up data */
        got += (size_t)r;
    }
    return 0;
}

/* ---- raw: a flat file that is the memory from one address on ---- */

struct raw_src {
    struct dp_pagesrc base;
    struct dp_fileq q;
    int fd;
    uint64_t addr, len;
};

static int raw_task_map(struct dp_pagesrc *s, int32_t pid, struct dp_lazymap *map, struct dp_err *err)
{
    struct raw_src *r = (struct raw_src *)s;
    (void)pid;
    if (dp_lazymap_add(map, r->addr, r->addr + r->len, r->addr, DP_PG_REMOTE)) {
        dp_err_set(err, "raw source: cannot add range 0x%llx+%llu", (unsigned long long)r->addr,
                   (unsigned long long)r->len);
        return -1;
    }
    return 0;
}

static int raw_submit(struct dp_pagesrc *s, struct dp_fetch *f)
{
    struct raw_src *r = (struct raw_src *)s;
    uint64_t len = (uint64_t)f->npages * DP_PAGE_SIZE;
    if (f->img < r->addr || f->img + len > r->addr + r->len)
        f->status = -EINVAL;
    else
        f->status = dp_pread_full(r->fd, f->buf, len, f->img - r->addr);
    f->wire_bytes = 0;
    dp_fileq_complete(&r->q, f);
    return 0;
}

static int raw_fd(struct dp_pagesrc *s) { return ((struct raw_src *)s)->q.efd; }
static void raw_process(struct dp_pagesrc *s) { dp_fileq_process(&((struct raw_src *)s)->q); }
static int raw_healthy(struct dp_pagesrc *s) { (void)s; return 1; }

static void raw_close(struct dp_pagesrc *s)
{
    struct raw_src *r = (struct raw_src *)s;
    dp_fileq_close(&r->q);
    close(r->fd);
    free(r);
}

static const struct dp_pagesrc_ops raw_ops = {
    .name = "raw", .task_map = raw_task_map, .submit = raw_submit, .fd = raw_fd,
    .process = raw_process, .healthy = raw_healthy, .close = raw_close,
};

struct dp_pagesrc *dp_pagesrc_raw_open(const char *spec, struct dp_err *err)
{
    const char *at = strrchr(spec, '@');
    if (!at || at == spec) {
        dp_err_set(err, "raw source '%s': expected FILE@ADDR", spec);
        return NULL;
    }
    char path[4096];
    size_t plen = (size_t)(at - spec);
    if (plen >= sizeof(path)) {
        dp_err_set(err, "raw source: path too long");
        return NULL;
    }
    memcpy(path, spec, plen);
    path[plen] = '\0';
    char *end;
    errno = 0;
    unsigned long long addr = strtoull(at + 1, &end, 0);
    if (errno || *end || addr % DP_PAGE_SIZE || addr == 0) {
        dp_err_set(err, "raw source '%s': ADDR must be a non-zero page-aligned number", spec);
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        dp_err_set(err, "raw source: cannot open %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    if (st.st_size <= 0 || st.st_size % (off_t)DP_PAGE_SIZE) {
        dp_err_set(err, "raw source: %s must be a non-empty multiple of 4096 bytes", path);
        close(fd);
        return NULL;
    }
    struct raw_src *r = calloc(1, sizeof(*r));
    if (!r || dp_fileq_init(&r->q)) {
        dp_err_set(err, "raw source: out of memory or eventfd failed");
        free(r);
        close(fd);
        return NULL;
    }
    r->base.ops = &raw_ops;
    snprintf(r->base.desc, sizeof(r->base.desc), "raw file %.200s at 0x%llx", path, addr);
    r->fd = fd;
    r->addr = addr;
    r->len = (uint64_t)st.st_size;
    return &r->base;
}
