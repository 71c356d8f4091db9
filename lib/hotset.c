/* hotset: the hot-set file format and its checks (see hotset.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "hotset.h"
#include "proto.h"

#define PG DP_PAGE_SIZE

const char *dp_hotset_source_name(uint8_t source)
{
    switch (source) {
    case DP_HS_CLASSIFY: return "classify";
    case DP_HS_TRACE: return "trace";
    case DP_HS_MERGED: return "merged";
    default: return "unknown";
    }
}

void dp_hotset_init(struct dp_hotset *hs, uint8_t source, const uint8_t id[DP_CPID_SIZE], uint64_t created_us,
                    uint32_t window_ms)
{
    memset(hs, 0, sizeof(*hs));
    hs->version = DP_HOTSET_VERSION;
    hs->source = source;
    if (id)
        memcpy(hs->id, id, DP_CPID_SIZE);
    hs->created_us = created_us;
    hs->window_ms = window_ms;
}

void dp_hotset_free(struct dp_hotset *hs)
{
    free(hs->tasks);
    free(hs->runs);
    hs->tasks = NULL;
    hs->runs = NULL;
    hs->nr_tasks = hs->nr_runs = hs->cap_tasks = hs->cap_runs = 0;
    hs->total_pages = 0;
}

/* Task run pointers point into hs->runs: recompute after it moved. */
static void relink(struct dp_hotset *hs)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < hs->nr_tasks; i++) {
        hs->tasks[i].runs = hs->runs ? hs->runs + k : NULL; /* no runs yet: no pointer arithmetic on NULL */
        k += hs->tasks[i].nr_runs;
    }
}

int dp_hotset_add_task(struct dp_hotset *hs, int32_t pid)
{
    if (hs->nr_tasks >= DP_HOTSET_MAX_TASKS) {
        errno = E2BIG;
        return -1;
    }
    if (hs->nr_tasks == hs->cap_tasks) {
        uint32_t cap = hs->cap_tasks ? hs->cap_tasks * 2 : 4;
        struct dp_hs_task *t = realloc(hs->tasks, cap * sizeof(*t));
        if (!t)
            return -1;
        hs->tasks = t;
        hs->cap_tasks = cap;
    }
    hs->tasks[hs->nr_tasks].pid = pid;
    hs->tasks[hs->nr_tasks].nr_runs = 0;
    hs->tasks[hs->nr_tasks].runs = hs->runs ? hs->runs + hs->nr_runs : NULL;
    hs->nr_tasks++;
    return 0;
}

int dp_hotset_add_run(struct dp_hotset *hs, uint64_t vaddr, uint32_t nr_pages, uint32_t score, uint32_t t_ms)
{
    if (!hs->nr_tasks || !nr_pages) {
        errno = EINVAL;
        return -1;
    }
    struct dp_hs_task *t = &hs->tasks[hs->nr_tasks - 1];
    if (t->nr_runs) {
        struct dp_hs_run *prev = &hs->runs[hs->nr_runs - 1];
        if (prev->score == score && prev->vaddr + (uint64_t)prev->nr_pages * PG == vaddr &&
            (uint64_t)prev->nr_pages + nr_pages <= UINT32_MAX) {
            prev->nr_pages += nr_pages;
            hs->total_pages += nr_pages;
            return 0;
        }
    }
    if (hs->nr_runs >= DP_HOTSET_MAX_RUNS) {
        errno = E2BIG;
        return -1;
    }
    if (hs->nr_runs == hs->cap_runs) {
        uint32_t cap = hs->cap_runs ? hs->cap_runs * 2 : 64;
        struct dp_hs_run *r = realloc(hs->runs, (size_t)cap * sizeof(*r));
        if (!r)
            return -1;
        hs->runs = r;
        hs->cap_runs = cap;
        relink(hs);
    }
    hs->runs[hs->nr_runs++] = (struct dp_hs_run){.vaddr = vaddr, .nr_pages = nr_pages, .score = score, .t_ms = t_ms};
    t->nr_runs++;
    hs->total_pages += nr_pages;
    return 0;
}

const struct dp_hs_task *dp_hotset_find_task(const struct dp_hotset *hs, int32_t pid)
{
    for (uint32_t i = 0; i < hs->nr_tasks; i++)
        if (hs->tasks[i].pid == pid)
            return &hs->tasks[i];
    return NULL;
}

static int cmp_run(const void *a, const void *b)
{
    const struct dp_hs_run *x = a, *y = b;
    return x->vaddr < y->vaddr ? -1 : x->vaddr > y->vaddr;
}

static int cmp_pid(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return x < y ? -1 : x > y;
}

int dp_hotset_validate(const struct dp_hotset *hs, struct dp_err *err)
{
    if (hs->version != DP_HOTSET_VERSION) {
        dp_err_set(err, "version %u, this build reads version %u", hs->version, DP_HOTSET_VERSION);
        return -1;
    }
    if (hs->source < DP_HS_CLASSIFY || hs->source > DP_HS_MERGED) {
        dp_err_set(err, "unknown source %u (1 classify, 2 trace, 3 merged)", hs->source);
        return -1;
    }
    if (hs->nr_tasks == 0 || hs->nr_tasks > DP_HOTSET_MAX_TASKS) {
        dp_err_set(err, "%u tasks (must be 1..%u)", hs->nr_tasks, DP_HOTSET_MAX_TASKS);
        return -1;
    }
    if (hs->nr_runs > DP_HOTSET_MAX_RUNS) {
        dp_err_set(err, "%u runs (at most %u)", hs->nr_runs, DP_HOTSET_MAX_RUNS);
        return -1;
    }
    int32_t *pids = malloc(hs->nr_tasks * sizeof(*pids));
    struct dp_hs_run *tmp = hs->nr_runs ? malloc((size_t)hs->nr_runs * sizeof(*tmp)) : NULL;
    int rc = -1;
    if (!pids || (hs->nr_runs && !tmp)) {
        dp_err_set(err, "out of memory");
        goto out;
    }
    uint64_t runs = 0, pages = 0;
    for (uint32_t i = 0; i < hs->nr_tasks; i++) {
        const struct dp_hs_task *t = &hs->tasks[i];
        if (t->pid <= 0) {
            dp_err_set(err, "task %u: pid %d is not positive", i, t->pid);
            goto out;
        }
        pids[i] = t->pid;
        if (t->nr_runs > hs->nr_runs - runs) {
            dp_err_set(err, "task %u (pid %d): %u runs, only %llu left of %u", i, t->pid, t->nr_runs,
                       (unsigned long long)(hs->nr_runs - runs), hs->nr_runs);
            goto out;
        }
        for (uint32_t k = 0; k < t->nr_runs; k++) {
            const struct dp_hs_run *r = &t->runs[k];
            if (r->vaddr % PG) {
                dp_err_set(err, "pid %d run %u: address 0x%llx is not page aligned", t->pid, k,
                           (unsigned long long)r->vaddr);
                goto out;
            }
            if (r->nr_pages == 0) {
                dp_err_set(err, "pid %d run %u at 0x%llx: zero pages", t->pid, k, (unsigned long long)r->vaddr);
                goto out;
            }
            if (r->vaddr >= DP_HOTSET_MAX_VADDR ||
                (uint64_t)r->nr_pages > (DP_HOTSET_MAX_VADDR - r->vaddr) / PG) {
                dp_err_set(err, "pid %d run %u at 0x%llx + %u pages: beyond the user address space", t->pid, k,
                           (unsigned long long)r->vaddr, r->nr_pages);
                goto out;
            }
            tmp[k] = *r;
            pages += r->nr_pages;
        }
        if (t->nr_runs > 1)
            qsort(tmp, t->nr_runs, sizeof(*tmp), cmp_run);
        for (uint32_t k = 1; k < t->nr_runs; k++)
            if (tmp[k - 1].vaddr + (uint64_t)tmp[k - 1].nr_pages * PG > tmp[k].vaddr) {
                dp_err_set(err, "pid %d: runs at 0x%llx (%u pages) and 0x%llx overlap", t->pid,
                           (unsigned long long)tmp[k - 1].vaddr, tmp[k - 1].nr_pages,
                           (unsigned long long)tmp[k].vaddr);
                goto out;
            }
        runs += t->nr_runs;
    }
    if (runs != hs->nr_runs) {
        dp_err_set(err, "tasks hold %llu runs, the header says %u", (unsigned long long)runs, hs->nr_runs);
        goto out;
    }
    if (pages != hs->total_pages) {
        dp_err_set(err, "runs hold %llu pages, the header says %llu", (unsigned long long)pages,
                   (unsigned long long)hs->total_pages);
        goto out;
    }
    qsort(pids, hs->nr_tasks, sizeof(*pids), cmp_pid);
    for (uint32_t i = 1; i < hs->nr_tasks; i++)
        if (pids[i] == pids[i - 1]) {
            dp_err_set(err, "pid %d appears twice", pids[i]);
            goto out;
        }
    rc = 0;
out:
    free(pids);
    free(tmp);
    return rc;
}

static size_t file_size(uint32_t nr_tasks, uint32_t nr_runs)
{
    return DP_HOTSET_HDR + (size_t)DP_HOTSET_TASK_REC * nr_tasks + (size_t)DP_HOTSET_RUN_REC * nr_runs +
           DP_HOTSET_SUM;
}

static void checksum(const uint8_t *p, size_t n, uint8_t out[DP_HOTSET_SUM])
{
    crypto_generichash(out, DP_HOTSET_SUM, p, n, NULL, 0);
}

int dp_hotset_encode(const struct dp_hotset *hs, uint8_t **out, size_t *len, struct dp_err *err)
{
    struct dp_err e;
    if (dp_hotset_validate(hs, &e) < 0) {
        dp_err_set(err, "refusing to write an invalid hot set: %s", e.msg);
        return -1;
    }
    size_t n = file_size(hs->nr_tasks, hs->nr_runs);
    uint8_t *b = calloc(1, n);
    if (!b) {
        dp_err_set(err, "out of memory for a %zu-byte hot set", n);
        return -1;
    }
    dp_put_u32(b, DP_HOTSET_MAGIC);
    dp_put_u16(b + 4, hs->version);
    b[6] = hs->source;
    memcpy(b + 8, hs->id, DP_CPID_SIZE);
    dp_put_u64(b + 40, hs->created_us);
    dp_put_u32(b + 48, hs->window_ms);
    dp_put_u32(b + 52, hs->nr_tasks);
    dp_put_u32(b + 56, hs->nr_runs);
    dp_put_u64(b + 64, hs->total_pages);
    uint8_t *p = b + DP_HOTSET_HDR;
    for (uint32_t i = 0; i < hs->nr_tasks; i++, p += DP_HOTSET_TASK_REC) {
        dp_put_u32(p, (uint32_t)hs->tasks[i].pid);
        dp_put_u32(p + 4, hs->tasks[i].nr_runs);
    }
    for (uint32_t i = 0; i < hs->nr_tasks; i++)
        for (uint32_t k = 0; k < hs->tasks[i].nr_runs; k++, p += DP_HOTSET_RUN_REC) {
            const struct dp_hs_run *r = &hs->tasks[i].runs[k];
            dp_put_u64(p, r->vaddr);
            dp_put_u32(p + 8, r->nr_pages);
            dp_put_u32(p + 12, r->score);
            dp_put_u32(p + 16, r->t_ms);
        }
    checksum(b, n - DP_HOTSET_SUM, b + n - DP_HOTSET_SUM);
    *out = b;
    *len = n;
    return 0;
}

int dp_hotset_decode(const char *name, const uint8_t *buf, size_t len, struct dp_hotset *hs, struct dp_err *err)
{
    struct dp_err e;
    memset(hs, 0, sizeof(*hs));
    if (len < DP_HOTSET_HDR + DP_HOTSET_SUM) {
        dp_err_set(err, "%s: %zu bytes, shorter than the %d-byte header and checksum: not a hot set, or truncated",
                   name, len, DP_HOTSET_HDR + DP_HOTSET_SUM);
        return -1;
    }
    if (dp_get_u32(buf) != DP_HOTSET_MAGIC) {
        dp_err_set(err, "%s: at byte 0: magic 0x%08x is not a DistriProc hot set (0x%08x)", name, dp_get_u32(buf),
                   DP_HOTSET_MAGIC);
        return -1;
    }
    uint16_t version = dp_get_u16(buf + 4);
    if (version != DP_HOTSET_VERSION) {
        dp_err_set(err, "%s: at byte 4: format version %u, this build reads version %u", name, version,
                   DP_HOTSET_VERSION);
        return -1;
    }
    if (buf[7] || dp_get_u32(buf + 60) || dp_get_u64(buf + 72)) {
        dp_err_set(err, "%s: reserved header bytes are not zero", name);
        return -1;
    }
    uint32_t nt = dp_get_u32(buf + 52), nr = dp_get_u32(buf + 56);
    if (nt == 0 || nt > DP_HOTSET_MAX_TASKS) {
        dp_err_set(err, "%s: at byte 52: %u tasks (must be 1..%u)", name, nt, DP_HOTSET_MAX_TASKS);
        return -1;
    }
    if (nr > DP_HOTSET_MAX_RUNS) {
        dp_err_set(err, "%s: at byte 56: %u runs (at most %u)", name, nr, DP_HOTSET_MAX_RUNS);
        return -1;
    }
    size_t want = file_size(nt, nr);
    if (len != want) {
        dp_err_set(err, "%s: %zu bytes, but %u tasks and %u runs make %zu: truncated or trailing data", name, len, nt,
                   nr, want);
        return -1;
    }
    uint8_t sum[DP_HOTSET_SUM];
    checksum(buf, len - DP_HOTSET_SUM, sum);
    if (sodium_memcmp(sum, buf + len - DP_HOTSET_SUM, DP_HOTSET_SUM) != 0) {
        dp_err_set(err, "%s: checksum mismatch (at byte %zu): the file is corrupt", name, len - DP_HOTSET_SUM);
        return -1;
    }
    hs->version = version;
    hs->source = buf[6];
    memcpy(hs->id, buf + 8, DP_CPID_SIZE);
    hs->created_us = dp_get_u64(buf + 40);
    hs->window_ms = dp_get_u32(buf + 48);
    hs->nr_tasks = nt;
    hs->nr_runs = nr;
    hs->total_pages = dp_get_u64(buf + 64);
    hs->tasks = calloc(nt, sizeof(*hs->tasks));
    hs->runs = nr ? calloc(nr, sizeof(*hs->runs)) : NULL;
    if (!hs->tasks || (nr && !hs->runs)) {
        dp_err_set(err, "%s: out of memory", name);
        dp_hotset_free(hs);
        return -1;
    }
    hs->cap_tasks = nt;
    hs->cap_runs = nr;
    const uint8_t *p = buf + DP_HOTSET_HDR;
    uint64_t sum_runs = 0;
    for (uint32_t i = 0; i < nt; i++, p += DP_HOTSET_TASK_REC) {
        hs->tasks[i].pid = (int32_t)dp_get_u32(p);
        hs->tasks[i].nr_runs = dp_get_u32(p + 4);
        sum_runs += hs->tasks[i].nr_runs;
    }
    if (sum_runs != nr) {
        dp_err_set(err, "%s: the tasks list %llu runs, the header %u", name, (unsigned long long)sum_runs, nr);
        dp_hotset_free(hs);
        return -1;
    }
    for (uint32_t k = 0; k < nr; k++, p += DP_HOTSET_RUN_REC) {
        if (dp_get_u32(p + 20)) {
            dp_err_set(err, "%s: at byte %zu: reserved field of run %u is not zero", name, (size_t)(p + 20 - buf), k);
            dp_hotset_free(hs);
            return -1;
        }
        hs->runs[k].vaddr = dp_get_u64(p);
        hs->runs[k].nr_pages = dp_get_u32(p + 8);
        hs->runs[k].score = dp_get_u32(p + 12);
        hs->runs[k].t_ms = dp_get_u32(p + 16);
    }
    relink(hs);
    if (dp_hotset_validate(hs, &e) < 0) {
        dp_err_set(err, "%s: %s", name, e.msg);
        dp_hotset_free(hs);
        return -1;
    }
    return 0;
}

static void fmt_time(uint64_t us, char *buf, size_t len)
{
    time_t s = (time_t)(us / 1000000);
    struct tm tm;
    if (!us || !gmtime_r(&s, &tm) || !strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm))
        snprintf(buf, len, "an unknown time");
}

int dp_hotset_check(const char *name, const struct dp_hotset *hs, const struct dp_checkpoint *cp,
                    const uint8_t cp_id[DP_CPID_SIZE], struct dp_err *err)
{
    if (sodium_memcmp(hs->id, cp_id, DP_CPID_SIZE) != 0) {
        char a[DP_CPID_HEX], b[DP_CPID_HEX], when[64];
        dp_cpid_hex(hs->id, a);
        dp_cpid_hex(cp_id, b);
        fmt_time(hs->created_us, when, sizeof(when));
        dp_err_set(err,
                   "%s (%s, made %s) belongs to checkpoint %s, but the images in %s are checkpoint %s: it was "
                   "made for another checkpoint or an earlier dump of this workload (stale); refusing to apply it. "
                   "Make a new one for these images (checkpoint --classify, or a restore that records its trace).",
                   name, dp_hotset_source_name(hs->source), when, a, cp->dir, b);
        return -1;
    }
    for (uint32_t i = 0; i < hs->nr_tasks; i++) {
        const struct dp_hs_task *t = &hs->tasks[i];
        const struct dp_task_image *ti = dp_checkpoint_find_task(cp, t->pid);
        if (!ti) {
            dp_err_set(err, "%s: pid %d is not a task of checkpoint %s; refusing the hot set", name, t->pid, cp->dir);
            return -1;
        }
        for (uint32_t k = 0; k < t->nr_runs; k++) {
            const struct dp_hs_run *r = &t->runs[k];
            uint64_t a = r->vaddr, end = r->vaddr + (uint64_t)r->nr_pages * PG;
            while (a < end) {
                struct dp_page_loc loc;
                dp_task_locate(ti, a, &loc);
                if (loc.kind == DP_PAGE_NOT_LAZY || loc.run_pages_left == 0) {
                    dp_err_set(err,
                               "%s: pid %d run %u (0x%llx, %u pages): page 0x%llx is not lazy memory of that task in "
                               "checkpoint %s; refusing the hot set",
                               name, t->pid, k, (unsigned long long)r->vaddr, r->nr_pages, (unsigned long long)a,
                               cp->dir);
                    return -1;
                }
                uint64_t step = (uint64_t)loc.run_pages_left * PG;
                a = end - a < step ? end : a + step;
            }
        }
    }
    return 0;
}

int dp_hotset_load(const char *path, const struct dp_checkpoint *cp, const uint8_t *cp_id, struct dp_hotset *hs,
                   struct dp_err *err)
{
    uint8_t *buf;
    size_t len;
    struct stat sb;
    memset(hs, 0, sizeof(*hs));
    if (stat(path, &sb) == 0 && (uint64_t)sb.st_size > DP_HOTSET_MAX_BYTES) {
        dp_err_set(err, "%s: %lld bytes, larger than any hot set (%zu): not a hot set", path, (long long)sb.st_size,
                   (size_t)DP_HOTSET_MAX_BYTES);
        return -1;
    }
    if (dp_read_file(path, &buf, &len, err) < 0)
        return -1;
    int rc = dp_hotset_decode(path, buf, len, hs, err);
    free(buf);
    if (rc < 0)
        return -1;
    uint8_t id[DP_CPID_SIZE];
    if (!cp_id) {
        if (dp_checkpoint_identity(cp, id, err) < 0) {
            dp_hotset_free(hs);
            return -1;
        }
        cp_id = id;
    }
    if (dp_hotset_check(path, hs, cp, cp_id, err) < 0) {
        dp_hotset_free(hs);
        return -1;
    }
    return 0;
}

int dp_hotset_write(const char *path, const struct dp_hotset *hs, struct dp_err *err)
{
    uint8_t *buf;
    size_t len;
    if (dp_hotset_encode(hs, &buf, &len, err) < 0)
        return -1;
    char tmp[PATH_MAX], dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp)) {
        dp_err_set(err, "path too long: %s", path);
        free(buf);
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || dp_write_full(fd, buf, len) < 0 || fsync(fd) < 0) {
        dp_err_set(err, "cannot write %s: %s", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        unlink(tmp);
        free(buf);
        return -1;
    }
    close(fd);
    free(buf);
    if (rename(tmp, path) < 0) {
        dp_err_set(err, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
    int dfd = open(dir[0] ? dir : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

int dp_hotset_contains(const struct dp_hotset *hs, int32_t pid, uint64_t addr)
{
    const struct dp_hs_task *t = dp_hotset_find_task(hs, pid);
    if (!t)
        return 0;
    for (uint32_t k = 0; k < t->nr_runs; k++)
        if (addr >= t->runs[k].vaddr && addr - t->runs[k].vaddr < (uint64_t)t->runs[k].nr_pages * PG)
            return 1;
    return 0;
}

/* ---- merge and compare: per task, over sorted interval lists ---- */

struct ivl {
    uint64_t lo, hi; /* [lo, hi) bytes */
};

static int cmp_ivl(const void *a, const void *b)
{
    const struct ivl *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Sorted, coalesced intervals of a task's runs (malloc'd; NULL if none). */
static struct ivl *task_ivls(const struct dp_hs_task *t, size_t *n)
{
    *n = 0;
    if (!t || !t->nr_runs)
        return NULL;
    struct ivl *v = malloc(t->nr_runs * sizeof(*v));
    if (!v)
        return NULL;
    for (uint32_t k = 0; k < t->nr_runs; k++)
        v[k] = (struct ivl){t->runs[k].vaddr, t->runs[k].vaddr + (uint64_t)t->runs[k].nr_pages * PG};
    qsort(v, t->nr_runs, sizeof(*v), cmp_ivl);
    size_t m = 0;
    for (uint32_t k = 0; k < t->nr_runs; k++) {
        if (m && v[k].lo <= v[m - 1].hi) {
            if (v[k].hi > v[m - 1].hi)
                v[m - 1].hi = v[k].hi;
        } else {
            v[m++] = v[k];
        }
    }
    *n = m;
    return v;
}

static uint64_t ivl_overlap(const struct ivl *a, size_t na, const struct ivl *b, size_t nb)
{
    uint64_t sum = 0;
    size_t i = 0, j = 0;
    while (i < na && j < nb) {
        uint64_t lo = a[i].lo > b[j].lo ? a[i].lo : b[j].lo;
        uint64_t hi = a[i].hi < b[j].hi ? a[i].hi : b[j].hi;
        if (lo < hi)
            sum += (hi - lo) / PG;
        if (a[i].hi < b[j].hi)
            i++;
        else
            j++;
    }
    return sum;
}

int dp_hotset_compare(const struct dp_hotset *pred, const struct dp_hotset *actual, uint64_t *both,
                      uint64_t *pred_pages, uint64_t *actual_pages)
{
    *both = 0;
    *pred_pages = pred->total_pages;
    *actual_pages = actual->total_pages;
    for (uint32_t i = 0; i < pred->nr_tasks; i++) {
        const struct dp_hs_task *a = &pred->tasks[i];
        const struct dp_hs_task *b = dp_hotset_find_task(actual, a->pid);
        size_t na, nb;
        struct ivl *va = task_ivls(a, &na), *vb = task_ivls(b, &nb);
        if ((a->nr_runs && !va) || (b && b->nr_runs && !vb)) {
            free(va);
            free(vb);
            return -1;
        }
        *both += ivl_overlap(va, na, vb, nb);
        free(va);
        free(vb);
    }
    return 0;
}

/* Adds the parts of [lo, hi) not covered by cov (sorted, coalesced). */
static int add_uncovered(struct dp_hotset *out, const struct ivl *cov, size_t n, const struct dp_hs_run *r)
{
    uint64_t lo = r->vaddr, hi = r->vaddr + (uint64_t)r->nr_pages * PG;
    /* first interval that ends after lo */
    size_t a = 0, b = n;
    while (a < b) {
        size_t m = (a + b) / 2;
        if (cov[m].hi <= lo)
            a = m + 1;
        else
            b = m;
    }
    for (size_t i = a; lo < hi; i++) {
        uint64_t stop = i < n && cov[i].lo < hi ? cov[i].lo : hi;
        if (stop > lo && dp_hotset_add_run(out, lo, (uint32_t)((stop - lo) / PG), r->score, r->t_ms) < 0)
            return -1;
        if (i >= n || cov[i].lo >= hi)
            break;
        lo = cov[i].hi > lo ? cov[i].hi : lo;
    }
    return 0;
}

int dp_hotset_merge(const struct dp_hotset *const *in, size_t n, struct dp_hotset *out, struct dp_err *err)
{
    if (!n) {
        dp_err_set(err, "nothing to merge");
        return -1;
    }
    dp_hotset_init(out, DP_HS_MERGED, in[0]->id, 0, 0);
    for (size_t i = 0; i < n; i++) {
        if (sodium_memcmp(in[i]->id, in[0]->id, DP_CPID_SIZE) != 0) {
            char a[17], b[17];
            dp_cpid_short(in[0]->id, a);
            dp_cpid_short(in[i]->id, b);
            dp_err_set(err, "hot set %zu belongs to checkpoint %s..., hot set 1 to %s...: only hot sets of one "
                       "checkpoint can be merged", i + 1, b, a);
            return -1;
        }
        if (in[i]->created_us > out->created_us)
            out->created_us = in[i]->created_us;
        if (in[i]->window_ms > out->window_ms)
            out->window_ms = in[i]->window_ms;
    }
    /* pids in first-seen order */
    for (size_t i = 0; i < n; i++)
        for (uint32_t k = 0; k < in[i]->nr_tasks; k++) {
            int32_t pid = in[i]->tasks[k].pid;
            if (dp_hotset_find_task(out, pid))
                continue;
            if (dp_hotset_add_task(out, pid) < 0)
                goto oom;
            uint32_t first = out->nr_runs;
            for (size_t j = 0; j < n; j++) {
                const struct dp_hs_task *t = dp_hotset_find_task(in[j], pid);
                if (!t)
                    continue;
                /* what this task holds so far */
                struct dp_hs_task cur = {.pid = pid, .nr_runs = out->nr_runs - first, .runs = out->runs ? out->runs + first : NULL};
                size_t nc;
                struct ivl *cov = task_ivls(&cur, &nc);
                if (cur.nr_runs && !cov)
                    goto oom;
                for (uint32_t r = 0; r < t->nr_runs; r++)
                    if (add_uncovered(out, cov, nc, &t->runs[r]) < 0) {
                        free(cov);
                        goto oom;
                    }
                free(cov);
            }
        }
    return dp_hotset_validate(out, err) < 0 ? (dp_hotset_free(out), -1) : 0;
oom:
    dp_err_set(err, "out of memory (or more than %u runs) while merging", DP_HOTSET_MAX_RUNS);
    dp_hotset_free(out);
    return -1;
}
