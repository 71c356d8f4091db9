/* classify: clear_refs + smaps Referenced per mapping (see classify.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "classify.h"
#include "cpid.h"
#include "jsonout.h"

#define PG DP_PAGE_SIZE

static int parse_kb(const char *line, const char *key, uint64_t *out)
{
    size_t k = strlen(key);
    if (strncmp(line, key, k) != 0)
        return 0;
    unsigned long long v;
    if (sscanf(line + k, " %llu kB", &v) != 1)
        return -1;
    *out = v;
    return 1;
}

int dp_smaps_parse(const char *text, size_t len, struct dp_smaps_vma **vmas, size_t *nr, struct dp_err *err)
{
    size_t n = 0, cap = 0;
    struct dp_smaps_vma *v = NULL;
    size_t pos = 0, lineno = 0;
    *vmas = NULL;
    *nr = 0;
    while (pos < len) {
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t ll = nl ? (size_t)(nl - line) : len - pos;
        pos += ll + (nl ? 1 : 0);
        lineno++;
        char buf[512];
        if (ll >= sizeof(buf))
            ll = sizeof(buf) - 1; /* a long path: only the start matters */
        memcpy(buf, line, ll);
        buf[ll] = '\0';
        unsigned long long s, e;
        char perms[8];
        if (sscanf(buf, "%llx-%llx %7s", &s, &e, perms) == 3 && strchr(buf, '-') < strchr(buf, ' ')) {
            if (e <= s || s % PG || e % PG || strlen(perms) != 4 || (n && s < v[n - 1].end)) {
                dp_err_set(err, "smaps line %zu: bad mapping '%s'", lineno, buf);
                free(v);
                return -1;
            }
            if (n == cap) {
                cap = cap ? cap * 2 : 64;
                struct dp_smaps_vma *nv = realloc(v, cap * sizeof(*nv));
                if (!nv) {
                    free(v);
                    dp_err_set(err, "out of memory");
                    return -1;
                }
                v = nv;
            }
            memset(&v[n], 0, sizeof(v[n]));
            v[n].start = s;
            v[n].end = e;
            memcpy(v[n].perms, perms, 5);
            n++;
            continue;
        }
        if (!n)
            continue;
        int rc = parse_kb(buf, "Rss:", &v[n - 1].rss_kb);
        if (!rc)
            rc = parse_kb(buf, "Referenced:", &v[n - 1].referenced_kb);
        if (!rc)
            rc = parse_kb(buf, "Anonymous:", &v[n - 1].anon_kb);
        if (rc < 0) {
            dp_err_set(err, "smaps line %zu: bad value '%s'", lineno, buf);
            free(v);
            return -1;
        }
    }
    *vmas = v;
    *nr = n;
    return 0;
}

/* ---- I/O ---- */

static int push_pid(pid_t **v, size_t *n, size_t *cap, pid_t p)
{
    for (size_t i = 0; i < *n; i++)
        if ((*v)[i] == p)
            return 0;
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 16;
        pid_t *nv = realloc(*v, c * sizeof(*nv));
        if (!nv)
            return -1;
        *v = nv;
        *cap = c;
    }
    (*v)[(*n)++] = p;
    return 0;
}

int dp_classify_tree(pid_t root, pid_t **pids, size_t *nr, struct dp_err *err)
{
    pid_t *v = NULL;
    size_t n = 0, cap = 0;
    if (push_pid(&v, &n, &cap, root) < 0)
        goto oom;
    for (size_t i = 0; i < n && n < 65536; i++) {
        char path[128];
        snprintf(path, sizeof(path), "/proc/%d/task", (int)v[i]);
        DIR *d = opendir(path);
        if (!d) {
            if (i == 0) {
                dp_err_set(err, "cannot read %s: %s (did pid %d exit?)", path, strerror(errno), (int)root);
                free(v);
                return -1;
            }
            continue;
        }
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            char cpath[300];
            snprintf(cpath, sizeof(cpath), "/proc/%d/task/%s/children", (int)v[i], e->d_name);
            FILE *f = fopen(cpath, "r");
            if (!f)
                continue;
            long child;
            while (fscanf(f, "%ld", &child) == 1)
                if (push_pid(&v, &n, &cap, (pid_t)child) < 0) {
                    fclose(f);
                    closedir(d);
                    goto oom;
                }
            fclose(f);
        }
        closedir(d);
    }
    *pids = v;
    *nr = n;
    return 0;
oom:
    free(v);
    dp_err_set(err, "out of memory");
    return -1;
}

int dp_classify_clear(const pid_t *pids, size_t nr, struct dp_err *err)
{
    for (size_t i = 0; i < nr; i++) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/clear_refs", (int)pids[i]);
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT)
            continue; /* exited meanwhile */
        if (fd < 0 || write(fd, "1", 1) != 1) {
            dp_err_set(err, "cannot reset the referenced bits of pid %d (%s): %s (needs root)", (int)pids[i], path,
                       strerror(errno));
            if (fd >= 0)
                close(fd);
            return -1;
        }
        close(fd);
    }
    return 0;
}

int dp_classify_sample(const pid_t *pids, size_t nr, struct dp_classify *out, struct dp_err *err)
{
    memset(out, 0, sizeof(*out));
    out->tasks = calloc(nr ? nr : 1, sizeof(*out->tasks));
    if (!out->tasks) {
        dp_err_set(err, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < nr; i++) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/smaps", (int)pids[i]);
        uint8_t *text;
        size_t len;
        struct dp_err e;
        int32_t np = dp_proc_inner_pid(pids[i]);
        if (np == 0)
            continue; /* gone */
        if (dp_read_file(path, &text, &len, &e) < 0) {
            if (access(path, F_OK) < 0)
                continue;
            dp_err_set(err, "%s", e.msg);
            dp_classify_free(out);
            return -1;
        }
        struct dp_classify_task *t = &out->tasks[out->nr_tasks];
        int rc = dp_smaps_parse((const char *)text, len, &t->vmas, &t->nr_vmas, &e);
        free(text);
        if (rc < 0) {
            dp_err_set(err, "%s: %s", path, e.msg);
            dp_classify_free(out);
            return -1;
        }
        t->host_pid = pids[i];
        t->pid = np;
        out->nr_tasks++;
    }
    return 0;
}

void dp_classify_free(struct dp_classify *c)
{
    for (size_t i = 0; i < c->nr_tasks; i++)
        free(c->tasks[i].vmas);
    free(c->tasks);
    memset(c, 0, sizeof(*c));
}

/* ---- pure: the hot set ---- */

struct hot_map {
    uint64_t start, end;   /* the lazy range */
    uint64_t rss_kb, ref_kb;
    uint32_t score;
    int hot, sampled;
    uint64_t hot_pages;
};

static int cmp_hot(const void *a, const void *b)
{
    const struct hot_map *x = a, *y = b;
    if (x->hot != y->hot)
        return y->hot - x->hot;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    if (x->ref_kb != y->ref_kb)
        return x->ref_kb > y->ref_kb ? -1 : 1;
    return x->start < y->start ? -1 : x->start > y->start;
}

static const struct dp_classify_task *find_sample(const struct dp_classify *c, int32_t pid)
{
    for (size_t i = 0; i < c->nr_tasks; i++)
        if (c->tasks[i].pid == pid)
            return &c->tasks[i];
    return NULL;
}

/* Adds the pages of [start, end) that hold data, in order. Returns pages. */
static int64_t add_data_runs(struct dp_hotset *hs, const struct dp_task_image *ti, uint64_t start, uint64_t end,
                             uint32_t score)
{
    uint64_t a = start, pages = 0;
    while (a < end) {
        struct dp_page_loc loc;
        dp_task_locate(ti, a, &loc);
        uint64_t n = loc.run_pages_left ? loc.run_pages_left : 1;
        if ((end - a) / PG < n)
            n = (end - a) / PG;
        if (loc.kind == DP_PAGE_DATA) {
            while (n) {
                uint32_t chunk = n > UINT32_MAX / 2 ? UINT32_MAX / 2 : (uint32_t)n;
                if (dp_hotset_add_run(hs, a, chunk, score, 0) < 0)
                    return -1;
                a += (uint64_t)chunk * PG;
                pages += chunk;
                n -= chunk;
            }
        } else {
            a += n * PG;
        }
    }
    return (int64_t)pages;
}

/* Appends to tasks the summary of one task: its lazy mappings in address
 * order with their share referenced and the pages they put in the hot set.
 * m is left with every end set to 0. Returns -1 if out of memory. */
static int task_summary_json(json_t *tasks, const struct dp_task_image *ti, const struct dp_classify_task *st,
                             struct hot_map *m)
{
    json_t *maps = json_array();
    for (size_t pass = 0; maps && pass < ti->nr_lazy; pass++) {
        size_t best = SIZE_MAX;
        for (size_t r = 0; r < ti->nr_lazy; r++)
            if (m[r].end && (best == SIZE_MAX || m[r].start < m[best].start))
                best = r;
        if (best == SIZE_MAX)
            break;
        struct hot_map *x = &m[best];
        char lo[24], hi[24];
        json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:I, s:b, s:I}", "start", dp_json_hex(lo, sizeof(lo), x->start),
                              "end", dp_json_hex(hi, sizeof(hi), x->end), "rss_kb", (json_int_t)x->rss_kb,
                              "referenced_kb", (json_int_t)x->ref_kb, "score", (json_int_t)x->score, "hot", x->hot,
                              "hot_pages", (json_int_t)x->hot_pages);
        if (json_array_append_new(maps, o) < 0) {
            json_decref(maps);
            maps = NULL;
        }
        x->end = 0; /* reported */
    }
    return json_array_append_new(tasks, json_pack("{s:i, s:i, s:b, s:I, s:o}", "pid", ti->pid, "host_pid",
                                                  st ? (int)st->host_pid : 0, "sampled", st != NULL,
                                                  "lazy_data_pages", (json_int_t)ti->lazy_data_pages, "mappings",
                                                  maps));
}

int dp_classify_build(const struct dp_classify *c, const struct dp_checkpoint *cp, const uint8_t id[DP_CPID_SIZE],
                      double threshold, uint64_t created_us, struct dp_hotset *hs, char **json, struct dp_err *err)
{
    json_t *tasks = json_array();
    if (!tasks) {
        dp_err_set(err, "out of memory");
        return -1;
    }
    char hex[DP_CPID_HEX];
    dp_cpid_hex(id, hex);
    uint32_t window_ms = (uint32_t)(c->seconds * 1000.0 + 0.5);
    dp_hotset_init(hs, DP_HS_CLASSIFY, id, created_us, window_ms);
    uint64_t total_hot = 0, total_data = 0;
    int rc = -1;
    for (size_t i = 0; i < cp->nr_tasks; i++) {
        const struct dp_task_image *ti = &cp->tasks[i];
        const struct dp_classify_task *st = find_sample(c, ti->pid);
        if (dp_hotset_add_task(hs, ti->pid) < 0) {
            dp_err_set(err, "out of memory");
            goto out;
        }
        struct hot_map *m = calloc(ti->nr_lazy ? ti->nr_lazy : 1, sizeof(*m));
        if (!m) {
            dp_err_set(err, "out of memory");
            goto out;
        }
        for (size_t r = 0; r < ti->nr_lazy; r++) {
            m[r].start = ti->lazy[r].start;
            m[r].end = ti->lazy[r].end;
            for (size_t v = 0; st && v < st->nr_vmas; v++) {
                const struct dp_smaps_vma *sv = &st->vmas[v];
                if (sv->end <= m[r].start || sv->start >= m[r].end)
                    continue;
                /* a mapping split differently at dump time: share by overlap */
                uint64_t lo = sv->start > m[r].start ? sv->start : m[r].start;
                uint64_t hi = sv->end < m[r].end ? sv->end : m[r].end;
                double frac = (double)(hi - lo) / (double)(sv->end - sv->start);
                m[r].rss_kb += (uint64_t)((double)sv->rss_kb * frac + 0.5);
                m[r].ref_kb += (uint64_t)((double)sv->referenced_kb * frac + 0.5);
                m[r].sampled = 1;
            }
            uint64_t sc = m[r].rss_kb ? m[r].ref_kb * 1000 / m[r].rss_kb : 0;
            m[r].score = sc > 1000 ? 1000 : (uint32_t)sc;
            m[r].hot = m[r].ref_kb > 0 && (double)m[r].score >= threshold * 1000.0;
        }
        qsort(m, ti->nr_lazy, sizeof(*m), cmp_hot);
        for (size_t r = 0; r < ti->nr_lazy && m[r].hot; r++) {
            int64_t p = add_data_runs(hs, ti, m[r].start, m[r].end, m[r].score);
            if (p < 0) {
                free(m);
                dp_err_set(err, "hot set too large (more than %u runs)", DP_HOTSET_MAX_RUNS);
                goto out;
            }
            m[r].hot_pages = (uint64_t)p;
            total_hot += (uint64_t)p;
        }
        total_data += ti->lazy_data_pages;
        int jr = task_summary_json(tasks, ti, st, m);
        free(m);
        if (jr < 0) {
            dp_err_set(err, "out of memory");
            goto out;
        }
    }
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:f, s:f, s:O, s:I, s:I, s:I, s:I}", "source", "classify", "method",
                          "clear_refs + smaps Referenced per mapping", "checkpoint_identity", hex, "images", cp->dir,
                          "seconds", round(c->seconds * 1e3) / 1e3, "threshold", round(threshold * 1e3) / 1e3,
                          "tasks", tasks, "hot_pages", (json_int_t)total_hot, "hot_bytes", (json_int_t)(total_hot * PG),
                          "lazy_data_pages", (json_int_t)total_data, "runs", (json_int_t)hs->nr_runs);
    char *text = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(12)) : NULL;
    json_decref(o);
    if (!text || !(*json = malloc(strlen(text) + 2))) {
        free(text);
        dp_err_set(err, "cannot write the classification summary as JSON (out of memory, or a path not in UTF-8)");
        goto out;
    }
    sprintf(*json, "%s\n", text);
    free(text);
    rc = 0;
out:
    json_decref(tasks);
    if (rc < 0)
        dp_hotset_free(hs);
    return rc;
}

int dp_classify_store(const struct dp_classify *c, const struct dp_checkpoint *cp, double threshold, char **json,
                      uint64_t *hot_pages, struct dp_err *err)
{
    uint8_t id[DP_CPID_SIZE];
    struct dp_hotset hs;
    char *j = NULL;
    if (dp_checkpoint_identity(cp, id, err) < 0)
        return -1;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now_us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    if (dp_classify_build(c, cp, id, threshold, now_us, &hs, &j, err) < 0)
        return -1;
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", cp->dir, DP_HOTSET_FILE);
    int rc = dp_hotset_write(path, &hs, err);
    if (rc == 0) {
        snprintf(path, sizeof(path), "%s/%s", cp->dir, DP_HOTSET_JSON);
        FILE *f = fopen(path, "w");
        if (!f || fputs(j, f) < 0 || fclose(f) != 0) {
            dp_err_set(err, "cannot write %s: %s", path, strerror(errno));
            rc = -1;
        }
    }
    if (hot_pages)
        *hot_pages = hs.total_pages;
    dp_hotset_free(&hs);
    if (rc == 0 && json)
        *json = j;
    else
        free(j);
    return rc;
}
