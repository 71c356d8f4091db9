/* lazyfix: PE_LAZY back on the pages CRIU's is_stack() left eager (see
 * lazyfix.h). The rewrite is pure (dp_lazyfix_pagemap, unit-tested and
 * fuzzed); dp_lazyfix_dir only reads and replaces files. */
#include "lazyfix.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "pb.h"

#define PG DP_PAGE_SIZE

/* ==== the rewrite (pure) ==== */

/* One pagemap entry as CRIU's reader sees it, and which of its fields were
 * written (a split entry is written with the same ones). */
struct pm_entry {
    uint64_t vaddr, nr_pages;
    uint32_t flags;
    int has_in_parent, has_nr, other;
};

/* Decodes one entry (the image was validated by dp_image_parse_pagemap:
 * what is read here is known to be well formed, the checks stay anyway). */
static int read_entry(const char *name, struct dp_pb_reader *r, struct pm_entry *e, struct dp_err *err)
{
    struct dp_pb_field f;
    struct dp_err pe = {{0}};
    uint64_t compat = 0, flags = 0;
    int rc, has_flags = 0, in_parent = 0;
    memset(e, 0, sizeof(*e));
    while ((rc = dp_pb_next(r, &f, &pe)) > 0) {
        if (f.number >= 1 && f.number <= 5 && f.wire != DP_PB_VARINT) {
            dp_err_set(err, "%s: at byte %llu: field %u is not a varint", name, (unsigned long long)f.offset,
                       f.number);
            return -1;
        }
        switch (f.number) {
        case 1: e->vaddr = f.value; break;
        case 2: compat = f.value; break;
        case 3: in_parent = f.value != 0; e->has_in_parent = 1; break;
        case 4: flags = f.value; has_flags = 1; break;
        case 5: e->nr_pages = f.value; e->has_nr = 1; break;
        default: e->other = 1; break;
        }
    }
    if (rc < 0) {
        dp_err_set(err, "%s: %s", name, pe.msg);
        return -1;
    }
    if (in_parent)
        flags |= DP_PE_PARENT;
    else if (!has_flags)
        flags = DP_PE_PRESENT;
    if (!e->has_nr)
        e->nr_pages = compat;
    e->flags = (uint32_t)flags;
    return 0;
}

/* Whether address a is in a lazy VMA; *until is where that answer ends
 * (its VMA's end, or the next VMA's start). VMAs need not be sorted. */
static int lazy_at(const struct dp_vma *v, size_t n, uint64_t a, uint64_t *until)
{
    uint64_t next = UINT64_MAX;
    for (size_t i = 0; i < n; i++) {
        if (a >= v[i].start && a < v[i].end) {
            *until = v[i].end;
            return dp_vma_is_lazy(&v[i]);
        }
        if (v[i].start > a && v[i].start < next)
            next = v[i].start;
    }
    *until = next;
    return 0;
}

/* Appends one framed entry: e's fields for [a, a + np pages) with flags. */
static int put_entry(struct dp_buf *out, const struct pm_entry *e, uint64_t a, uint64_t np, uint32_t flags)
{
    uint8_t msg[5 * 20];
    size_t m = dp_pb_put_vfield(msg, 1, a);
    m += dp_pb_put_vfield(msg + m, 2, (uint32_t)np); /* compat_nr_pages, required: CRIU writes it truncated */
    if (e->has_in_parent)
        m += dp_pb_put_vfield(msg + m, 3, 0);
    m += dp_pb_put_vfield(msg + m, 4, flags);
    if (e->has_nr)
        m += dp_pb_put_vfield(msg + m, 5, np);
    return dp_buf_u32(out, (uint32_t)m) < 0 || dp_buf_put(out, msg, m) < 0 ? -1 : 0;
}

/* One entry: kept as it is, or written as its pieces split at the edges
 * of lazy VMAs, the lazy ones with PE_LAZY. Returns the pages marked, or
 * -1 when out of memory. */
static int64_t fix_entry(struct dp_buf *out, const uint8_t *raw, size_t raw_len, const struct pm_entry *e,
                         const struct dp_vma *vmas, size_t nr_vmas)
{
    uint64_t end = e->vaddr + e->nr_pages * PG;
    int eligible = (e->flags & DP_PE_PRESENT) && !(e->flags & (DP_PE_PARENT | DP_PE_LAZY)) && !e->other &&
                   e->nr_pages > 0;
    uint64_t lazy_pages = 0, until;
    for (uint64_t a = e->vaddr; eligible && a < end; a = until) {
        int lz = lazy_at(vmas, nr_vmas, a, &until);
        if (until > end)
            until = end;
        if (until % PG)
            eligible = 0, lazy_pages = 0; /* a VMA edge inside a page: not an image to touch */
        else if (lz)
            lazy_pages += (until - a) / PG;
    }
    if (lazy_pages == 0)
        return dp_buf_put(out, raw, raw_len) < 0 ? -1 : 0;
    /* runs of equal laziness, in address order (the pages file's order) */
    for (uint64_t a = e->vaddr, b; a < end; a = b) {
        int lz = lazy_at(vmas, nr_vmas, a, &until);
        b = until < end ? until : end;
        while (b < end && lazy_at(vmas, nr_vmas, b, &until) == lz)
            b = until < end ? until : end;
        if (put_entry(out, e, a, (b - a) / PG, lz ? e->flags | DP_PE_LAZY : e->flags) < 0)
            return -1;
    }
    return (int64_t)lazy_pages;
}

int dp_lazyfix_pagemap(const char *name, const uint8_t *buf, size_t len, uint32_t img_version,
                       const struct dp_vma *vmas, size_t nr_vmas, struct dp_buf *out, uint64_t *marked,
                       struct dp_err *err)
{
    *marked = 0;
    /* the full check first: sorted, in range, known flags */
    uint32_t pages_id;
    struct dp_page_run *runs = NULL;
    size_t nr_runs;
    uint64_t data_bytes;
    if (dp_image_parse_pagemap(name, buf, len, img_version, &pages_id, &runs, &nr_runs, &data_bytes, err) < 0)
        return -1;
    free(runs);

    size_t start = out->len, pos, at;
    struct dp_pb_reader r;
    if (dp_image_parse_header(name, buf, len, DP_PAGEMAP_MAGIC, img_version, &pos, err) < 0 ||
        dp_image_next_entry(name, buf, len, &pos, &r, err) <= 0) /* the head: validated above */
        return -1;
    if (dp_buf_put(out, buf, pos) < 0)
        goto oom;
    for (;;) {
        at = pos;
        int rc = dp_image_next_entry(name, buf, len, &pos, &r, err);
        if (rc < 0)
            return -1;
        if (rc == 0)
            break;
        struct pm_entry e;
        if (read_entry(name, &r, &e, err) < 0)
            return -1;
        int64_t n = fix_entry(out, buf + at, pos - at, &e, vmas, nr_vmas);
        if (n < 0)
            goto oom;
        *marked += (uint64_t)n;
    }
    if (*marked == 0) { /* nothing to mark: exactly the bytes criu wrote */
        out->len = start;
        if (dp_buf_put(out, buf, len) < 0)
            goto oom;
    }
    return 0;
oom:
    dp_err_set(err, "%s: out of memory rewriting the pagemap", name);
    return -1;
}

/* ==== the images directory ==== */

/* Writes data next to path and renames it over path (same mode), so a
 * crash leaves either image whole. */
static int replace_file(const char *path, const uint8_t *data, size_t len, struct dp_err *err)
{
    char tmp[4300];
    struct stat st;
    if (stat(path, &st) < 0) {
        dp_err_set(err, "cannot stat %s: %s", path, strerror(errno));
        return -1;
    }
    snprintf(tmp, sizeof(tmp), "%s.lazyfix", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, st.st_mode & 0777);
    if (fd < 0) {
        dp_err_set(err, "cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, data + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        done += (size_t)w;
    }
    int e = done < len ? (errno ? errno : EIO) : 0;
    if (!e && fsync(fd) < 0)
        e = errno;
    if (close(fd) < 0 && !e)
        e = errno;
    if (!e && rename(tmp, path) < 0)
        e = errno;
    if (e) {
        unlink(tmp);
        dp_err_set(err, "cannot write %s: %s (free space in the images directory?)", path, strerror(e));
        return -1;
    }
    return 0;
}

/* One task's pagemap, if it has one (a zombie has none). */
static int fix_task(const struct dp_checkpoint *cp, const struct dp_task_image *t, uint64_t *marked,
                    struct dp_err *err)
{
    char name[64], path[4200];
    snprintf(name, sizeof(name), "pagemap-%d.img", t->pid);
    snprintf(path, sizeof(path), "%s/%s", cp->dir, name);
    if (!t->nr_vmas || (access(path, F_OK) < 0 && errno == ENOENT))
        return 0;
    uint8_t *buf;
    size_t len;
    if (dp_read_file(path, &buf, &len, err) < 0)
        return -1;
    struct dp_buf out = {0};
    uint64_t n = 0;
    int rc = dp_lazyfix_pagemap(name, buf, len, cp->img_version, t->vmas, t->nr_vmas, &out, &n, err);
    if (rc == 0 && n) {
        rc = replace_file(path, out.data, out.len, err);
        if (rc == 0)
            dp_debug("%s: %llu pages marked lazy", name, (unsigned long long)n);
    }
    if (rc == 0)
        *marked += n;
    free(buf);
    dp_buf_free(&out);
    return rc;
}

int dp_lazyfix_dir(const char *dir, uint64_t *marked, struct dp_err *err)
{
    *marked = 0;
    struct dp_checkpoint *cp;
    if (dp_checkpoint_open(dir, &cp, err) < 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < cp->nr_tasks && rc == 0; i++)
        rc = fix_task(cp, &cp->tasks[i], marked, err);
    dp_checkpoint_close(cp);
    return rc;
}
