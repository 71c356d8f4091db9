/* image: CRIU image reader (see image.h).
 *
 * Format facts (from CRIU 4.2's criu/image.c, protobuf.c, pagemap.c, mem.c,
 * page-xfer.c, uffd.c, pie/restorer.c):
 * - An image is a magic header, then entries: a u32 little-endian size and
 *   that many bytes of one protobuf message. pagemap-PID.img starts with a
 *   pagemap_head (pages_id) entry, then pagemap_entry entries.
 * - pages-N.img holds the PRESENT entries' pages back to back in pagemap
 *   order, lazy ones included: CRIU's reader advances its file offset over
 *   every PRESENT entry it skips, so lazy data keeps its place in the file.
 * - A plain `criu dump` flags private anonymous pages PE_LAZY|PE_PRESENT
 *   ("pages that can be lazily restored are always marked as such"); only
 *   `dump --lazy-pages` leaves PE_PRESENT out (the data is then not here).
 * - CRIU's lazy-pages daemon zero-fills faults in lazy VMAs at addresses no
 *   lazy pagemap entry covers.
 */
#include "image.h"
#include "pb.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGE DP_PAGE_SIZE
/* Highest user address on x86_64 with 5-level paging; vsyscall is above. */
#define TASK_SIZE_MAX 0x00fffffffffff000ULL
#define MAX_PARENT_DEPTH 32

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Prefixes an error from a lower layer with the file name. */
static void err_in(struct dp_err *err, const char *name, const struct dp_err *inner)
{
    char msg[sizeof(err->msg)];
    snprintf(msg, sizeof(msg), "%s", inner->msg);
    dp_err_set(err, "%s: %s", name, msg);
}

int dp_image_parse_header(const char *name, const uint8_t *buf, size_t len, uint32_t magic,
                          uint32_t img_version, size_t *body, struct dp_err *err)
{
    size_t pos = 0;
    int common = magic != DP_INVENTORY_MAGIC && img_version != DP_IMG_VERSION_V1;

    if (common) {
        if (len < 4) {
            dp_err_set(err, "%s: at byte 0: file too short for its magic (%zu bytes)", name, len);
            return -1;
        }
        uint32_t m = get_u32(buf);
        if (m != DP_IMG_COMMON_MAGIC) {
            dp_err_set(err, "%s: at byte 0: magic %#x is not CRIU's image magic %#x (not a CRIU image?)",
                       name, m, DP_IMG_COMMON_MAGIC);
            return -1;
        }
        pos = 4;
    }
    if (len - pos < 4) {
        dp_err_set(err, "%s: at byte %zu: file too short for its magic (%zu bytes)", name, pos, len);
        return -1;
    }
    uint32_t m = get_u32(buf + pos);
    if (m != magic) {
        dp_err_set(err, "%s: at byte %zu: magic %#x, expected %#x (wrong or corrupted image)",
                   name, pos, m, magic);
        return -1;
    }
    *body = pos + 4;
    return 0;
}

/* Every image after its header is a row of framed entries (u32 size, message). */
int dp_image_next_entry(const char *name, const uint8_t *buf, size_t len, size_t *pos,
                        struct dp_pb_reader *msg, struct dp_err *err)
{
    size_t p = *pos;
    if (p == len)
        return 0;
    if (len - p < 4) {
        dp_err_set(err, "%s: at byte %zu: truncated entry size (%zu of 4 bytes)", name, p, len - p);
        return -1;
    }
    uint32_t size = get_u32(buf + p);
    if (size > len - p - 4) {
        dp_err_set(err, "%s: at byte %zu: entry of %u bytes, but only %zu bytes remain (truncated image)",
                   name, p, size, len - p - 4);
        return -1;
    }
    dp_pb_init(msg, buf + p + 4, size, p + 4);
    *pos = p + 4 + size;
    return 1;
}

static int fail_field(struct dp_err *err, const char *name, const struct dp_pb_field *f, const char *what)
{
    dp_err_set(err, "%s: at byte %llu: field %u: %s", name, (unsigned long long)f->offset,
               f->number, what);
    return -1;
}

static int want_wire(struct dp_err *err, const char *name, const struct dp_pb_field *f,
                     enum dp_pb_wire wire)
{
    if (f->wire == wire)
        return 0;
    return fail_field(err, name, f, "unexpected wire type");
}

int dp_image_parse_inventory(const char *name, const uint8_t *buf, size_t len,
                             uint32_t *img_version, struct dp_err *err)
{
    size_t pos;
    struct dp_err e;
    if (dp_image_parse_header(name, buf, len, DP_INVENTORY_MAGIC, 0, &pos, err) < 0)
        return -1;
    struct dp_pb_reader r;
    size_t entry_at = pos;
    int rc = dp_image_next_entry(name, buf, len, &pos, &r, err);
    if (rc <= 0) {
        if (rc == 0)
            dp_err_set(err, "%s: at byte %zu: no inventory entry", name, entry_at);
        return -1;
    }
    int have_version = 0;
    struct dp_pb_field f;
    while ((rc = dp_pb_next(&r, &f, &e)) > 0) {
        if (f.number == 1) {
            if (want_wire(err, name, &f, DP_PB_VARINT) < 0)
                return -1;
            if (f.value != DP_IMG_VERSION_V1 && f.value != DP_IMG_VERSION_V1_1)
                return fail_field(err, name, &f, "unsupported image version (CRIU 1.x-4.x write 1 or 2)");
            *img_version = (uint32_t)f.value;
            have_version = 1;
        }
    }
    if (rc < 0) {
        err_in(err, name, &e);
        return -1;
    }
    if (!have_version) {
        dp_err_set(err, "%s: at byte %zu: inventory entry has no img_version", name, entry_at);
        return -1;
    }
    return 0;
}

/* ---- pstree ---- */

struct u32_list {
    int32_t *v;
    size_t n, cap;
};

static int u32_list_add(void *arg, uint64_t v)
{
    struct u32_list *l = arg;
    if (v == 0 || v > INT32_MAX)
        return -1;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        int32_t *nv = realloc(l->v, cap * sizeof(*nv));
        if (!nv)
            return -1;
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = (int32_t)v;
    return 0;
}

static void free_task_fields(struct dp_task_image *t)
{
    free(t->threads);
    free(t->vmas);
    free(t->runs);
    free(t->lazy);
    free(t->segs);
    t->threads = NULL;
    t->vmas = NULL;
    t->runs = NULL;
    t->lazy = NULL;
    t->segs = NULL;
}

static int parse_pid_field(const char *name, const struct dp_pb_field *f, int32_t *out,
                           int allow_zero, struct dp_err *err)
{
    if (want_wire(err, name, f, DP_PB_VARINT) < 0)
        return -1;
    if (f->value > INT32_MAX || (!allow_zero && f->value == 0))
        return fail_field(err, name, f, "pid out of range");
    *out = (int32_t)f->value;
    return 0;
}

int dp_image_parse_pstree(const char *name, const uint8_t *buf, size_t len, uint32_t img_version,
                          struct dp_task_image **tasks, size_t *nr, struct dp_err *err)
{
    size_t pos, n = 0, cap = 0;
    struct dp_task_image *t = NULL;
    struct dp_err e;

    *tasks = NULL;
    *nr = 0;
    if (dp_image_parse_header(name, buf, len, DP_PSTREE_MAGIC, img_version, &pos, err) < 0)
        return -1;
    for (;;) {
        struct dp_pb_reader r;
        size_t entry_at = pos;
        int rc = dp_image_next_entry(name, buf, len, &pos, &r, err);
        if (rc < 0)
            goto fail;
        if (rc == 0)
            break;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            struct dp_task_image *nt = realloc(t, cap * sizeof(*nt));
            if (!nt) {
                dp_err_set(err, "%s: out of memory", name);
                goto fail;
            }
            t = nt;
        }
        struct dp_task_image *ti = &t[n++];
        memset(ti, 0, sizeof(*ti));
        ti->pages_fd = -1;
        ti->live_fd = -1;
        struct u32_list threads = {0};
        unsigned seen = 0;
        struct dp_pb_field f;
        while ((rc = dp_pb_next(&r, &f, &e)) > 0) {
            int ok = 0;
            switch (f.number) {
            case 1: ok = parse_pid_field(name, &f, &ti->pid, 0, err); break;
            case 2: ok = parse_pid_field(name, &f, &ti->ppid, 1, err); break;
            case 3: ok = parse_pid_field(name, &f, &ti->pgid, 1, err); break;
            case 4: ok = parse_pid_field(name, &f, &ti->sid, 1, err); break;
            case 5:
                ok = dp_pb_repeated_varint(&f, u32_list_add, &threads, &e);
                if (ok < 0)
                    err_in(err, name, &e);
                break;
            default: break;
            }
            if (ok < 0) {
                free(threads.v);
                goto fail;
            }
            if (f.number <= 4)
                seen |= 1u << f.number;
        }
        ti->threads = threads.v;
        ti->nr_threads = threads.n;
        if (rc < 0) {
            err_in(err, name, &e);
            goto fail;
        }
        if ((seen & 0x1e) != 0x1e) {
            dp_err_set(err, "%s: at byte %zu: pstree entry lacks pid, ppid, pgid or sid", name, entry_at);
            goto fail;
        }
        for (size_t i = 0; i + 1 < n; i++)
            if (t[i].pid == ti->pid) {
                dp_err_set(err, "%s: at byte %zu: pid %d appears twice", name, entry_at, ti->pid);
                goto fail;
            }
    }
    if (n == 0) {
        dp_err_set(err, "%s: at byte %zu: no tasks in the process tree", name, pos);
        goto fail;
    }
    *tasks = t;
    *nr = n;
    return 0;
fail:
    for (size_t i = 0; i < n; i++)
        free_task_fields(&t[i]);
    free(t);
    return -1;
}

/* ---- mm ---- */

static int parse_vma(const char *name, const struct dp_pb_field *outer, struct dp_vma *v, struct dp_err *err)
{
    struct dp_pb_reader r;
    struct dp_pb_field f;
    struct dp_err e;
    unsigned seen = 0;
    int rc;

    memset(v, 0, sizeof(*v));
    dp_pb_init(&r, outer->data, outer->data_len, outer->data_offset);
    while ((rc = dp_pb_next(&r, &f, &e)) > 0) {
        if (f.number >= 1 && f.number <= 7) {
            if (want_wire(err, name, &f, DP_PB_VARINT) < 0)
                return -1;
            seen |= 1u << f.number;
        }
        switch (f.number) {
        case 1: v->start = f.value; break;
        case 2: v->end = f.value; break;
        case 3: v->pgoff = f.value; break;
        case 4: v->shmid = (int64_t)f.value; break;
        case 5:
        case 6:
        case 7:
            if (f.value > UINT32_MAX)
                return fail_field(err, name, &f, "value does not fit 32 bits");
            if (f.number == 5)
                v->prot = (uint32_t)f.value;
            else if (f.number == 6)
                v->flags = (uint32_t)f.value;
            else
                v->status = (uint32_t)f.value;
            break;
        default: break;
        }
    }
    if (rc < 0) {
        err_in(err, name, &e);
        return -1;
    }
    if ((seen & 0xc6) != 0xc6) {   /* start, end, flags, status */
        dp_err_set(err, "%s: at byte %llu: vma entry lacks start, end, flags or status", name,
                   (unsigned long long)outer->offset);
        return -1;
    }
    if (v->start >= v->end || (v->start | v->end) % PAGE) {
        dp_err_set(err, "%s: at byte %llu: bad vma %#llx-%#llx (empty or not page aligned)", name,
                   (unsigned long long)outer->offset, (unsigned long long)v->start,
                   (unsigned long long)v->end);
        return -1;
    }
    return 0;
}

int dp_image_parse_mm(const char *name, const uint8_t *buf, size_t len, uint32_t img_version,
                      struct dp_vma **vmas, size_t *nr, struct dp_err *err)
{
    size_t pos, n = 0, cap = 0;
    struct dp_vma *v = NULL;
    struct dp_err e;
    struct dp_pb_reader r;

    *vmas = NULL;
    *nr = 0;
    if (dp_image_parse_header(name, buf, len, DP_MM_MAGIC, img_version, &pos, err) < 0)
        return -1;
    size_t entry_at = pos;
    int rc = dp_image_next_entry(name, buf, len, &pos, &r, err);
    if (rc <= 0) {
        if (rc == 0)
            dp_err_set(err, "%s: at byte %zu: no mm entry", name, entry_at);
        return -1;
    }
    struct dp_pb_field f;
    while ((rc = dp_pb_next(&r, &f, &e)) > 0) {
        if (f.number != 14)
            continue;
        if (want_wire(err, name, &f, DP_PB_LEN) < 0)
            goto fail;
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            struct dp_vma *nv = realloc(v, cap * sizeof(*nv));
            if (!nv) {
                dp_err_set(err, "%s: out of memory", name);
                goto fail;
            }
            v = nv;
        }
        if (parse_vma(name, &f, &v[n], err) < 0)
            goto fail;
        if (n > 0 && v[n].start < v[n - 1].end) {
            dp_err_set(err, "%s: at byte %llu: vma %#llx-%#llx overlaps or precedes %#llx-%#llx", name,
                       (unsigned long long)f.offset, (unsigned long long)v[n].start,
                       (unsigned long long)v[n].end, (unsigned long long)v[n - 1].start,
                       (unsigned long long)v[n - 1].end);
            goto fail;
        }
        n++;
    }
    if (rc < 0) {
        err_in(err, name, &e);
        goto fail;
    }
    if (pos != len) {
        dp_err_set(err, "%s: at byte %zu: unexpected data after the mm entry", name, pos);
        goto fail;
    }
    *vmas = v;
    *nr = n;
    return 0;
fail:
    free(v);
    return -1;
}

/* ---- pagemap ---- */

int dp_image_parse_pagemap(const char *name, const uint8_t *buf, size_t len, uint32_t img_version,
                           uint32_t *pages_id, struct dp_page_run **runs, size_t *nr,
                           uint64_t *data_bytes, struct dp_err *err)
{
    size_t pos, n = 0, cap = 0;
    struct dp_page_run *v = NULL;
    struct dp_err e;
    struct dp_pb_reader r;
    struct dp_pb_field f;
    uint64_t off = 0, prev_end = 0;
    int rc;

    *runs = NULL;
    *nr = 0;
    *data_bytes = 0;
    if (dp_image_parse_header(name, buf, len, DP_PAGEMAP_MAGIC, img_version, &pos, err) < 0)
        return -1;

    size_t entry_at = pos;
    rc = dp_image_next_entry(name, buf, len, &pos, &r, err);
    if (rc <= 0) {
        if (rc == 0)
            dp_err_set(err, "%s: at byte %zu: no pagemap head", name, entry_at);
        return -1;
    }
    int have_id = 0;
    while ((rc = dp_pb_next(&r, &f, &e)) > 0) {
        if (f.number != 1)
            continue;
        if (want_wire(err, name, &f, DP_PB_VARINT) < 0)
            return -1;
        if (f.value > UINT32_MAX)
            return fail_field(err, name, &f, "pages_id does not fit 32 bits");
        *pages_id = (uint32_t)f.value;
        have_id = 1;
    }
    if (rc < 0) {
        err_in(err, name, &e);
        return -1;
    }
    if (!have_id) {
        dp_err_set(err, "%s: at byte %zu: pagemap head has no pages_id", name, entry_at);
        return -1;
    }

    for (;;) {
        entry_at = pos;
        rc = dp_image_next_entry(name, buf, len, &pos, &r, err);
        if (rc < 0)
            goto fail;
        if (rc == 0)
            break;
        uint64_t vaddr = 0, nr_pages = 0, compat = 0, flags = 0;
        int has_vaddr = 0, has_nr = 0, has_flags = 0, in_parent = 0;
        while ((rc = dp_pb_next(&r, &f, &e)) > 0) {
            if (f.number >= 1 && f.number <= 5 && want_wire(err, name, &f, DP_PB_VARINT) < 0)
                goto fail;
            switch (f.number) {
            case 1: vaddr = f.value; has_vaddr = 1; break;
            case 2: compat = f.value; break;
            case 3: in_parent = f.value != 0; break;
            case 4: flags = f.value; has_flags = 1; break;
            case 5: nr_pages = f.value; has_nr = 1; break;
            default: break;
            }
        }
        if (rc < 0) {
            err_in(err, name, &e);
            goto fail;
        }
        if (!has_vaddr) {
            dp_err_set(err, "%s: at byte %zu: pagemap entry has no vaddr", name, entry_at);
            goto fail;
        }
        /* Older images: in_parent instead of flags, compat_nr_pages only. */
        if (in_parent)
            flags |= DP_PE_PARENT;
        else if (!has_flags)
            flags = DP_PE_PRESENT;
        if (!has_nr)
            nr_pages = compat;
        if (flags & ~(uint64_t)(DP_PE_PARENT | DP_PE_LAZY | DP_PE_PRESENT)) {
            dp_err_set(err, "%s: at byte %zu: unknown pagemap flags %#llx", name, entry_at,
                       (unsigned long long)flags);
            goto fail;
        }
        if (nr_pages == 0)
            continue;   /* nothing to map; CRIU's reader skips it too */
        if (vaddr % PAGE || nr_pages > UINT32_MAX || vaddr + nr_pages * PAGE < vaddr ||
            vaddr + nr_pages * PAGE > TASK_SIZE_MAX + PAGE) {
            dp_err_set(err, "%s: at byte %zu: bad entry %#llx + %llu pages", name, entry_at,
                       (unsigned long long)vaddr, (unsigned long long)nr_pages);
            goto fail;
        }
        if (vaddr < prev_end) {
            dp_err_set(err, "%s: at byte %zu: entry %#llx overlaps or precedes the previous one (ends %#llx)",
                       name, entry_at, (unsigned long long)vaddr, (unsigned long long)prev_end);
            goto fail;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            struct dp_page_run *nv = realloc(v, cap * sizeof(*nv));
            if (!nv) {
                dp_err_set(err, "%s: out of memory", name);
                goto fail;
            }
            v = nv;
        }
        v[n].vaddr = vaddr;
        v[n].nr_pages = (uint32_t)nr_pages;
        v[n].flags = (uint32_t)flags;
        v[n].data_offset = (flags & DP_PE_PRESENT) ? off : 0;
        if (flags & DP_PE_PRESENT)
            off += nr_pages * PAGE;   /* cannot overflow: < 2^32 entries of < 2^44 bytes */
        prev_end = vaddr + nr_pages * PAGE;
        n++;
    }
    *runs = v;
    *nr = n;
    *data_bytes = off;
    return 0;
fail:
    free(v);
    return -1;
}

/* ---- lazy ranges ---- */

int dp_vma_is_lazy(const struct dp_vma *v)
{
    uint32_t st = v->status;
    /* vma_entry_is_private(): the restorer premaps (and uffd-registers) these */
    int priv = ((st & DP_VMA_AREA_REGULAR) && (st & (DP_VMA_ANON_PRIVATE | DP_VMA_FILE_PRIVATE)) &&
                v->end <= TASK_SIZE_MAX) ||
               (st & (DP_VMA_AREA_SHSTK | DP_VMA_AREA_AIORING));
    if (!priv || (st & (DP_VMA_EXT_PLUGIN | DP_VMA_AREA_GUARD)))
        return 0;
    /* vma_entry_can_be_lazy() */
    if (!(v->flags & MAP_ANONYMOUS) || !(v->flags & MAP_PRIVATE))
        return 0;
    if (v->flags & (MAP_LOCKED | MAP_HUGETLB))
        return 0;
    if (st & (DP_VMA_AREA_VDSO | DP_VMA_AREA_VVAR | DP_VMA_AREA_VSYSCALL))
        return 0;
    return 1;
}

int dp_image_lazy_ranges(const struct dp_vma *vmas, size_t nr, struct dp_range **ranges,
                         size_t *nr_ranges, uint64_t *bytes, struct dp_err *err)
{
    size_t n = 0;
    uint64_t sum = 0;
    struct dp_range *out = NULL;

    for (size_t i = 0; i < nr; i++)
        n += dp_vma_is_lazy(&vmas[i]);
    if (n) {
        out = malloc(n * sizeof(*out));
        if (!out) {
            dp_err_set(err, "out of memory for %zu lazy ranges", n);
            return -1;
        }
    }
    n = 0;
    for (size_t i = 0; i < nr; i++)
        if (dp_vma_is_lazy(&vmas[i])) {
            out[n].start = vmas[i].start;
            out[n].end = vmas[i].end;
            sum += vmas[i].end - vmas[i].start;
            n++;
        }
    *ranges = out;
    *nr_ranges = n;
    *bytes = sum;
    return 0;
}

/* ---- resolving data through the parent chain ---- */

struct seg_vec {
    struct dp_page_seg *v;
    size_t n, cap;
};

static int seg_push(struct seg_vec *s, uint64_t vaddr, uint64_t nr, int32_t file, uint64_t off,
                    uint32_t flags)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        struct dp_page_seg *nv = realloc(s->v, cap * sizeof(*nv));
        if (!nv)
            return -1;
        s->v = nv;
        s->cap = cap;
    }
    s->v[s->n++] = (struct dp_page_seg){
        .vaddr = vaddr, .nr_pages = nr, .offset = off, .file = file, .fd = -1, .flags = flags,
    };
    return 0;
}

/* Index of the last segment starting at or below addr, or -1. */
static ssize_t seg_floor(const struct dp_page_seg *s, size_t n, uint64_t addr)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s[mid].vaddr <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (ssize_t)lo - 1;
}

int dp_image_resolve(const char *name, const struct dp_page_run *runs, size_t nr, int32_t file,
                     const struct dp_page_seg *parent, size_t nr_parent,
                     struct dp_page_seg **segs, size_t *nr_segs, struct dp_err *err)
{
    struct seg_vec out = {0};

    for (size_t i = 0; i < nr; i++) {
        const struct dp_page_run *r = &runs[i];
        uint64_t start = r->vaddr, end = r->vaddr + (uint64_t)r->nr_pages * PAGE;
        int rc = 0;

        if (r->flags & DP_PE_PARENT) {
            uint64_t a = start;
            ssize_t k = seg_floor(parent, nr_parent, a);
            if (k < 0)
                k = 0;
            while (a < end) {
                while ((size_t)k < nr_parent && parent[k].vaddr + parent[k].nr_pages * PAGE <= a)
                    k++;
                if ((size_t)k >= nr_parent || parent[k].vaddr > a) {
                    dp_err_set(err, "%s: entry %#llx-%#llx is in the parent images, but the parent has no "
                               "page at %#llx (broken pre-dump chain?)", name,
                               (unsigned long long)start, (unsigned long long)end, (unsigned long long)a);
                    free(out.v);
                    return -1;
                }
                const struct dp_page_seg *p = &parent[k];
                uint64_t pend = p->vaddr + p->nr_pages * PAGE;
                uint64_t b = pend < end ? pend : end;
                uint64_t delta = a - p->vaddr;
                rc = seg_push(&out, a, (b - a) / PAGE, p->file, p->file >= 0 ? p->offset + delta : 0,
                              r->flags);
                if (rc < 0)
                    break;
                a = b;
            }
        } else if (r->flags & DP_PE_PRESENT) {
            rc = seg_push(&out, start, r->nr_pages, file, r->data_offset, r->flags);
        } else if (r->flags & DP_PE_LAZY) {
            /* dumped with --lazy-pages: the data is in the dumped tree's memory */
            rc = seg_push(&out, start, r->nr_pages, DP_SEG_FILE_LIVE, 0, r->flags);
        } else {
            rc = seg_push(&out, start, r->nr_pages, -1, 0, r->flags);
        }
        if (rc < 0) {
            dp_err_set(err, "%s: out of memory resolving pages", name);
            free(out.v);
            return -1;
        }
    }
    *segs = out.v;
    *nr_segs = out.n;
    return 0;
}

/* ---- locate ---- */

static uint32_t clamp_pages(uint64_t bytes)
{
    uint64_t p = bytes / PAGE;
    return p > UINT32_MAX ? UINT32_MAX : (uint32_t)p;
}

void dp_task_locate(const struct dp_task_image *t, uint64_t vaddr, struct dp_page_loc *loc)
{
    loc->fd = -1;
    loc->offset = 0;

    /* the lazy range holding vaddr: last one starting at or below it */
    size_t lo = 0, hi = t->nr_lazy;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (t->lazy[mid].start <= vaddr)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0 || vaddr >= t->lazy[lo - 1].end) {
        loc->kind = DP_PAGE_NOT_LAZY;
        loc->run_pages_left = lo < t->nr_lazy ? clamp_pages(t->lazy[lo].start - vaddr) : 1;
        return;
    }
    uint64_t range_end = t->lazy[lo - 1].end;

    ssize_t k = seg_floor(t->segs, t->nr_segs, vaddr);
    if (k >= 0) {
        const struct dp_page_seg *s = &t->segs[k];
        uint64_t send = s->vaddr + s->nr_pages * PAGE;
        if (vaddr < send) {
            uint64_t end = send < range_end ? send : range_end;
            loc->run_pages_left = clamp_pages(end - vaddr);
            if (s->file == DP_SEG_FILE_LIVE && t->live_fd >= 0) {
                loc->kind = DP_PAGE_DATA;
                loc->fd = t->live_fd;
                loc->offset = vaddr; /* /proc/PID/mem: the offset is the address */
            } else if (s->file < 0) {
                loc->kind = DP_PAGE_ZERO;
            } else {
                loc->kind = DP_PAGE_DATA;
                loc->fd = s->fd;
                loc->offset = s->offset + (vaddr - s->vaddr);
            }
            return;
        }
    }
    /* no entry: a page that never held data */
    uint64_t end = range_end;
    if ((size_t)(k + 1) < t->nr_segs && t->segs[k + 1].vaddr < end)
        end = t->segs[k + 1].vaddr;
    loc->kind = DP_PAGE_ZERO;
    loc->run_pages_left = clamp_pages(end - vaddr);
}

const struct dp_task_image *dp_checkpoint_find_task(const struct dp_checkpoint *cp, int32_t pid)
{
    for (size_t i = 0; i < cp->nr_tasks; i++)
        if (cp->tasks[i].pid == pid)
            return &cp->tasks[i];
    return NULL;
}

/* ---- I/O: opening a checkpoint directory ---- */

/* Reads dir/name. Returns 1, 0 if it does not exist, -1 on error. */
static int read_image(const char *dir, const char *name, uint8_t **data, size_t *len, struct dp_err *err)
{
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path)) {
        dp_err_set(err, "path too long: %s/%s", dir, name);
        return -1;
    }
    if (access(path, F_OK) < 0 && errno == ENOENT)
        return 0;
    return dp_read_file(path, data, len, err) < 0 ? -1 : 1;
}

/* Registers and opens dir/pages-ID.img. Returns its index, -2 if it does not
 * exist and need not (no data), -1 on error. */
static int add_pages_file(struct dp_checkpoint *cp, const char *dir, const char *prefix, uint32_t depth,
                          uint32_t pages_id, uint64_t data_bytes, struct dp_err *err)
{
    struct dp_pages_file *nf = realloc(cp->files, (cp->nr_files + 1) * sizeof(*nf));
    if (!nf) {
        dp_err_set(err, "out of memory");
        return -1;
    }
    cp->files = nf;
    struct dp_pages_file *f = &cp->files[cp->nr_files];
    memset(f, 0, sizeof(*f));
    f->fd = -1;
    f->depth = depth;
    snprintf(f->name, sizeof(f->name), "%spages-%u.img", prefix, pages_id);
    if ((size_t)snprintf(f->path, sizeof(f->path), "%s/pages-%u.img", dir, pages_id) >= sizeof(f->path)) {
        dp_err_set(err, "path too long: %s/pages-%u.img", dir, pages_id);
        return -1;
    }
    f->fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0 && errno == ENOENT && data_bytes == 0)
        return -2;   /* CRIU treats a missing image as empty */
    cp->nr_files++;
    if (f->fd < 0) {
        dp_err_set(err, "cannot open %s: %s (the pagemap refers to it; incomplete images directory?)",
                   f->path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(f->fd, &st) < 0) {
        dp_err_set(err, "cannot stat %s: %s", f->path, strerror(errno));
        return -1;
    }
    f->size = (uint64_t)st.st_size;
    if (f->size < data_bytes) {
        dp_err_set(err, "%s: %llu bytes, but its pagemap describes %llu bytes of pages (truncated copy?)",
                   f->path, (unsigned long long)f->size, (unsigned long long)data_bytes);
        return -1;
    }
    return (int)(cp->nr_files - 1);
}

/* Resolved segments of task pid at chain level depth (dir is that level's
 * directory). Recurses down the chain first. *segs is NULL with *n 0 when the
 * level has no pagemap for this pid. */
static int load_level(struct dp_checkpoint *cp, const char *dir, uint32_t depth, int32_t pid,
                      struct dp_task_image *top, struct dp_page_seg **segs, size_t *n, struct dp_err *err)
{
    char name[64], prefix[8 * MAX_PARENT_DEPTH + 8] = "", pdir[PATH_MAX];
    uint8_t *buf = NULL;
    size_t len;
    struct dp_page_run *runs = NULL;
    size_t nr_runs = 0;
    struct dp_page_seg *psegs = NULL;
    size_t nr_psegs = 0;
    uint32_t pages_id = 0;
    uint64_t data_bytes;
    int ret = -1;

    *segs = NULL;
    *n = 0;
    for (uint32_t i = 0; i < depth; i++)
        strcat(prefix, "parent/");
    snprintf(name, sizeof(name), "pagemap-%d.img", pid);
    int rc = read_image(dir, name, &buf, &len, err);
    if (rc <= 0)
        return rc;

    char shown[sizeof(prefix) + sizeof(name)];
    snprintf(shown, sizeof(shown), "%s%s", prefix, name);
    if (dp_image_parse_pagemap(shown, buf, len, cp->img_version, &pages_id, &runs, &nr_runs,
                               &data_bytes, err) < 0)
        goto out;

    /* The parent level, if this level has one (CRIU: the "parent" link).
     * Loaded even without PE_PARENT entries here: CRIU's restore opens it
     * anyway, and the skeleton must know every pages file of the chain. */
    if ((size_t)snprintf(pdir, sizeof(pdir), "%s/parent", dir) >= sizeof(pdir)) {
        dp_err_set(err, "path too long: %s/parent", dir);
        goto out;
    }
    struct stat st;
    if (stat(pdir, &st) == 0 && S_ISDIR(st.st_mode)) {
        if (depth + 1 > MAX_PARENT_DEPTH) {
            dp_err_set(err, "%s: pre-dump chain deeper than %d levels (a parent link loop?)", dir,
                       MAX_PARENT_DEPTH);
            goto out;
        }
        if (depth + 1 > cp->parent_depth)
            cp->parent_depth = depth + 1;
        if (load_level(cp, pdir, depth + 1, pid, top, &psegs, &nr_psegs, err) < 0)
            goto out;
    }

    int file = add_pages_file(cp, dir, prefix, depth, pages_id, data_bytes, err);
    if (file == -1)
        goto out;
    if (file == -2)
        file = -1;   /* no pages file, and no data expected in it */
    if (depth == 0) {
        top->pages_id = pages_id;
        if (file >= 0) {
            snprintf(top->pages_path, sizeof(top->pages_path), "%s", cp->files[file].path);
            top->pages_fd = cp->files[file].fd;
        }
        top->runs = runs;
        top->nr_runs = nr_runs;
        runs = NULL;
    }
    if (dp_image_resolve(shown, depth == 0 ? top->runs : runs, depth == 0 ? top->nr_runs : nr_runs,
                         file, psegs, nr_psegs, segs, n, err) < 0)
        goto out;
    ret = 1;
out:
    free(buf);
    free(runs);
    free(psegs);
    return ret;
}

static int open_task(struct dp_checkpoint *cp, struct dp_task_image *t, struct dp_err *err)
{
    char name[64];
    uint8_t *buf = NULL;
    size_t len;

    snprintf(name, sizeof(name), "mm-%d.img", t->pid);
    int rc = read_image(cp->dir, name, &buf, &len, err);
    if (rc < 0)
        return -1;
    if (rc > 0) {
        rc = dp_image_parse_mm(name, buf, len, cp->img_version, &t->vmas, &t->nr_vmas, err);
        free(buf);
        if (rc < 0)
            return -1;
    }
    /* no mm image: a zombie (or a task sharing another's mm); nothing to serve */
    if (dp_image_lazy_ranges(t->vmas, t->nr_vmas, &t->lazy, &t->nr_lazy, &t->lazy_bytes, err) < 0)
        return -1;

    if (load_level(cp, cp->dir, 0, t->pid, t, &t->segs, &t->nr_segs, err) < 0)
        return -1;

    /* segments may cross VMA boundaries; count pages inside lazy ranges */
    size_t r = 0;
    for (size_t i = 0; i < t->nr_segs; i++) {
        const struct dp_page_seg *s = &t->segs[i];
        if (s->file < 0)
            continue;
        uint64_t a = s->vaddr, b = s->vaddr + s->nr_pages * PAGE;
        t->data_pages += s->nr_pages;
        while (r < t->nr_lazy && t->lazy[r].end <= a)
            r++;
        for (size_t j = r; j < t->nr_lazy && t->lazy[j].start < b; j++) {
            uint64_t lo = a > t->lazy[j].start ? a : t->lazy[j].start;
            uint64_t hi = b < t->lazy[j].end ? b : t->lazy[j].end;
            if (lo < hi)
                t->lazy_data_pages += (hi - lo) / PAGE;
        }
    }
    return 0;
}

static uint64_t dir_bytes(const char *dir)
{
    uint64_t sum = 0;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
            sum += (uint64_t)st.st_size;
    }
    closedir(d);
    return sum;
}

int dp_checkpoint_open(const char *dir, struct dp_checkpoint **out, struct dp_err *err)
{
    struct dp_err e;
    uint8_t *buf = NULL;
    size_t len;
    struct dp_checkpoint *cp = calloc(1, sizeof(*cp));

    *out = NULL;
    if (!cp) {
        dp_err_set(err, "out of memory");
        return -1;
    }
    if (strlen(dir) >= sizeof(cp->dir)) {
        dp_err_set(err, "images directory path too long");
        free(cp);
        return -1;
    }
    strcpy(cp->dir, dir);

    int rc = read_image(dir, "inventory.img", &buf, &len, &e);
    if (rc <= 0) {
        if (rc == 0)
            dp_err_set(&e, "no inventory.img");
        goto fail;
    }
    rc = dp_image_parse_inventory("inventory.img", buf, len, &cp->img_version, &e);
    free(buf);
    buf = NULL;
    if (rc < 0)
        goto fail;

    rc = read_image(dir, "pstree.img", &buf, &len, &e);
    if (rc <= 0) {
        if (rc == 0)
            dp_err_set(&e, "no pstree.img");
        goto fail;
    }
    rc = dp_image_parse_pstree("pstree.img", buf, len, cp->img_version, &cp->tasks, &cp->nr_tasks, &e);
    free(buf);
    if (rc < 0)
        goto fail;

    for (size_t i = 0; i < cp->nr_tasks; i++) {
        struct dp_task_image *t = &cp->tasks[i];
        if (open_task(cp, t, &e) < 0)
            goto fail;
        for (size_t v = 0; v < t->nr_vmas; v++)
            cp->total_vma_bytes += t->vmas[v].end - t->vmas[v].start;
        cp->lazy_bytes += t->lazy_bytes;
    }
    /* file descriptors are known now; give each segment its own */
    for (size_t i = 0; i < cp->nr_tasks; i++)
        for (size_t s = 0; s < cp->tasks[i].nr_segs; s++) {
            struct dp_page_seg *sg = &cp->tasks[i].segs[s];
            sg->fd = sg->file >= 0 ? cp->files[sg->file].fd : -1;
            if (sg->file == DP_SEG_FILE_LIVE)
                cp->tasks[i].live_pages += sg->nr_pages;
        }
    cp->image_bytes = dir_bytes(dir);
    for (size_t i = 0; i < cp->nr_tasks; i++)
        cp->live_pages += cp->tasks[i].live_pages;
    *out = cp;
    return 0;
fail:
    dp_err_set(err, "cannot read checkpoint %s: %s (is it a directory written by `criu dump -D`?)", dir,
               e.msg);
    dp_checkpoint_close(cp);
    return -1;
}

void dp_checkpoint_close(struct dp_checkpoint *cp)
{
    if (!cp)
        return;
    for (size_t i = 0; i < cp->nr_tasks; i++) {
        if (cp->tasks[i].live_fd >= 0)
            close(cp->tasks[i].live_fd); /* opened by pagesrc_frozen */
        free_task_fields(&cp->tasks[i]);
    }
    free(cp->tasks);
    for (size_t i = 0; i < cp->nr_files; i++)
        if (cp->files[i].fd >= 0)
            close(cp->files[i].fd);
    free(cp->files);
    free(cp);
}

int dp_checkpoint_check_images_only(const struct dp_checkpoint *cp, struct dp_err *err)
{
    if (!cp->live_pages)
        return 0;
    dp_err_set(err, "%s was dumped with --lazy-pages: %llu pages of its lazy memory are not in the images but "
               "in the dumped tree (serve it with `distriproc serve --pid`, which keeps the tree frozen), "
               "or dump it again with `distriproc checkpoint`", cp->dir, (unsigned long long)cp->live_pages);
    return -1;
}
