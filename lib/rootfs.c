/* rootfs: the manifest of the files a container's restore depends on (see rootfs.h). */
#include "rootfs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


#define MAX_TASKS 4096

static const char *const kind_names[] = {"mapped", "open"};

/* ---- pure: entries, canonical form, JSON, comparison ------------------------ */

struct dp_rootfs_entry *dp_rootfs_add(struct dp_rootfs_manifest *m, const char *path, int kind)
{
    if (strlen(path) >= sizeof(m->e[0].path) || path[0] != '/')
        return NULL;
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->e[i].path, path) == 0) {
            if (kind == DP_ROOTFS_MAPPED)
                m->e[i].kind = DP_ROOTFS_MAPPED;
            return &m->e[i];
        }
    if (m->n == DP_ROOTFS_MAX_FILES)
        return NULL;
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 32;
        struct dp_rootfs_entry *e = realloc(m->e, cap * sizeof(*e));
        if (!e)
            return NULL;
        m->e = e;
        m->cap = cap;
    }
    struct dp_rootfs_entry *e = &m->e[m->n++];
    memset(e, 0, sizeof(*e));
    strcpy(e->path, path);
    e->kind = kind;
    return e;
}

void dp_rootfs_hex(const uint8_t h[DP_ROOTFS_HASH], char *out)
{
    for (int i = 0; i < DP_ROOTFS_HASH; i++)
        sprintf(out + 2 * i, "%02x", h[i]);
}

/* Sorted by path, so the digest does not depend on the order tasks were read. */
static int by_path(const void *a, const void *b)
{
    return strcmp(((const struct dp_rootfs_entry *)a)->path, ((const struct dp_rootfs_entry *)b)->path);
}

/* "mapped /usr/lib/libc.so.6 1922136 100644 <hex>\n": what the digest covers. */
static void canonical_line(const struct dp_rootfs_entry *e, char *out, size_t len)
{
    char hex[2 * DP_ROOTFS_HASH + 1] = "-";
    if (e->kind == DP_ROOTFS_MAPPED)
        dp_rootfs_hex(e->hash, hex);
    snprintf(out, len, "%s %s %llu %o %s\n", kind_names[e->kind], e->path, (unsigned long long)e->size,
             (unsigned)e->mode, hex);
}

void dp_rootfs_finish(struct dp_rootfs_manifest *m)
{
    if (sodium_init() < 0)
        abort(); /* libsodium cannot run at all here: nothing can be hashed */
    if (m->n)
        qsort(m->e, m->n, sizeof(m->e[0]), by_path);
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, DP_ROOTFS_HASH);
    static const char magic[] = "distriproc rootfs manifest v1\n";
    crypto_generichash_update(&st, (const unsigned char *)magic, sizeof(magic) - 1);
    for (size_t i = 0; i < m->n; i++) {
        char line[1200];
        canonical_line(&m->e[i], line, sizeof(line));
        crypto_generichash_update(&st, (const unsigned char *)line, strlen(line));
    }
    crypto_generichash_final(&st, m->digest, DP_ROOTFS_HASH);
}

char *dp_rootfs_to_json(const struct dp_rootfs_manifest *m)
{
    char hex[2 * DP_ROOTFS_HASH + 1];
    json_t *files = json_array();
    for (size_t i = 0; files && i < m->n; i++) {
        const struct dp_rootfs_entry *e = &m->e[i];
        json_t *f = json_pack("{s:s, s:s, s:I, s:I}", "path", e->path, "kind", kind_names[e->kind], "size",
                              (json_int_t)e->size, "mode", (json_int_t)e->mode);
        if (f && e->kind == DP_ROOTFS_MAPPED) {
            dp_rootfs_hex(e->hash, hex);
            json_object_set_new(f, "blake2b", json_string(hex));
        }
        json_array_append_new(files, f);
    }
    dp_rootfs_hex(m->digest, hex);
    json_t *root = json_pack("{s:i, s:s, s:o}", "version", 1, "digest", hex, "files", files);
    char *text = root ? json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    return text;
}

/* Exactly 64 lowercase hex digits, as dp_rootfs_hex writes them. */
static int unhex(const char *s, uint8_t out[DP_ROOTFS_HASH])
{
    if (!s || strlen(s) != 2 * DP_ROOTFS_HASH)
        return -1;
    for (int i = 0; i < DP_ROOTFS_HASH; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1 || !strchr("0123456789abcdef", s[2 * i]) ||
            !strchr("0123456789abcdef", s[2 * i + 1]))
            return -1;
        out[i] = (uint8_t)v;
    }
    return 0;
}

int dp_rootfs_from_json(const char *text, size_t len, struct dp_rootfs_manifest *m, struct dp_err *err)
{
    memset(m, 0, sizeof(*m));
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        dp_err_set(err, "%s is not valid JSON: %s", DP_ROOTFS_FILE, jerr.text);
        return -1;
    }
    int rc = -1;
    json_t *ver = json_object_get(root, "version"), *files = json_object_get(root, "files");
    uint8_t digest[DP_ROOTFS_HASH];
    if (!json_is_integer(ver) || json_integer_value(ver) != 1 || !json_is_array(files) ||
        unhex(json_string_value(json_object_get(root, "digest")), digest) < 0) {
        dp_err_set(err, "%s: not a version 1 manifest (version, digest, files)", DP_ROOTFS_FILE);
        goto out;
    }
    size_t i;
    json_t *f;
    json_array_foreach(files, i, f) {
        const char *path = json_string_value(json_object_get(f, "path")),
                   *kind = json_string_value(json_object_get(f, "kind"));
        json_t *size = json_object_get(f, "size"), *mode = json_object_get(f, "mode");
        int k = kind && !strcmp(kind, "mapped") ? DP_ROOTFS_MAPPED : kind && !strcmp(kind, "open") ? DP_ROOTFS_OPEN : -1;
        if (!path || k < 0 || !json_is_integer(size) || json_integer_value(size) < 0 || !json_is_integer(mode) ||
            json_integer_value(mode) < 0 || json_integer_value(mode) > 0xffffff) {
            dp_err_set(err, "%s: file entry %zu is incomplete (path, kind, size, mode)", DP_ROOTFS_FILE, i);
            goto out;
        }
        size_t before = m->n;
        struct dp_rootfs_entry *e = dp_rootfs_add(m, path, k);
        if (!e || m->n == before) {
            dp_err_set(err, "%s: entry '%.200s' is a duplicate, not absolute, too long, or one too many",
                       DP_ROOTFS_FILE, path);
            goto out;
        }
        e->size = (uint64_t)json_integer_value(size);
        e->mode = (uint32_t)json_integer_value(mode);
        if (k == DP_ROOTFS_MAPPED && unhex(json_string_value(json_object_get(f, "blake2b")), e->hash) < 0) {
            dp_err_set(err, "%s: mapped file '%.200s' has no valid blake2b", DP_ROOTFS_FILE, path);
            goto out;
        }
    }
    dp_rootfs_finish(m);
    if (memcmp(m->digest, digest, DP_ROOTFS_HASH) != 0) {
        dp_err_set(err, "%s: its digest does not match its entries (the file was altered or damaged)",
                   DP_ROOTFS_FILE);
        goto out;
    }
    rc = 0;
out:
    json_decref(root);
    if (rc < 0)
        dp_rootfs_free(m);
    return rc;
}

/* Appends to a bounded report; what does not fit is dropped, never overflows. */
static void append(char *report, size_t len, const char *fmt, const char *path, const char *what)
{
    size_t used = strlen(report);
    if (used < len)
        snprintf(report + used, len - used, fmt, path, what);
}

size_t dp_rootfs_compare(const struct dp_rootfs_manifest *want, const struct dp_rootfs_manifest *got,
                         char *report, size_t len, size_t max)
{
    size_t diffs = 0;
    if (len)
        report[0] = '\0';
    for (size_t i = 0; i < want->n; i++) {
        const struct dp_rootfs_entry *w = &want->e[i], *g = NULL;
        for (size_t j = 0; j < got->n && !g; j++)
            if (strcmp(got->e[j].path, w->path) == 0)
                g = &got->e[j];
        const char *what = NULL;
        char buf[160];
        if (!g || g->missing)
            what = "missing";
        else if ((g->mode & S_IFMT) != (w->mode & S_IFMT))
            what = "a different type of file";
        else if (g->size != w->size) {
            snprintf(buf, sizeof(buf), "size %llu, the checkpoint's was %llu", (unsigned long long)g->size,
                     (unsigned long long)w->size);
            what = buf;
        } else if (g->mode != w->mode) {
            snprintf(buf, sizeof(buf), "mode %o, the checkpoint's was %o", (unsigned)g->mode, (unsigned)w->mode);
            what = buf;
        } else if (w->kind == DP_ROOTFS_MAPPED && memcmp(g->hash, w->hash, DP_ROOTFS_HASH) != 0) {
            what = "different content (same size)";
        }
        if (!what)
            continue;
        if (diffs < max)
            append(report, len, "  %s: %s\n", w->path, what);
        diffs++;
    }
    return diffs;
}

void dp_rootfs_free(struct dp_rootfs_manifest *m)
{
    free(m->e);
    memset(m, 0, sizeof(*m));
}

/* ---- I/O: measuring files, walking the tree --------------------------------- */

/* size, mode and (want_hash) the content hash of an open file. */
static int measure_fd(int fd, struct dp_rootfs_entry *e, int want_hash)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -1;
    e->size = (uint64_t)st.st_size;
    e->mode = (uint32_t)st.st_mode;
    if (!want_hash || !S_ISREG(st.st_mode))
        return 0;
    crypto_generichash_state hs;
    crypto_generichash_init(&hs, NULL, 0, DP_ROOTFS_HASH);
    static __thread unsigned char buf[1 << 16];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        crypto_generichash_update(&hs, buf, (size_t)n);
    }
    crypto_generichash_final(&hs, e->hash, DP_ROOTFS_HASH);
    return 0;
}

/* Mapped files (the path column of /proc/PID/maps) and open regular files of one task. */
static int collect_task(pid_t pid, const struct dp_bundle_info *b, struct dp_rootfs_manifest *m,
                        struct dp_err *err)
{
    char path[PATH_MAX], host[PATH_MAX];
    snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0; /* exited meanwhile */
    char line[PATH_MAX + 256];
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        char *p = line;
        for (int field = 0; field < 5 && p; field++) { /* range perms offset dev inode */
            p = strchr(p, ' ');
            while (p && *p == ' ')
                p++;
        }
        if (!p || p[0] != '/')
            continue;
        size_t n = strlen(p);
        if (n > 10 && strcmp(p + n - 10, " (deleted)") == 0)
            continue; /* CRIU keeps deleted files' contents itself */
        if (dp_bundle_resolve(b, p, host, sizeof(host)) < 0)
            continue;
        if (!dp_rootfs_add(m, p, DP_ROOTFS_MAPPED)) {
            fclose(f);
            dp_err_set(err, "too many files in the container's rootfs manifest (max %d)", DP_ROOTFS_MAX_FILES);
            return -1;
        }
    }
    fclose(f);
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char link[PATH_MAX + 64], target[PATH_MAX];
        snprintf(link, sizeof(link), "/proc/%d/fd/%s", (int)pid, de->d_name);
        struct stat st;
        ssize_t n = readlink(link, target, sizeof(target) - 1);
        if (n <= 0 || stat(link, &st) < 0 || !S_ISREG(st.st_mode))
            continue;
        target[n] = '\0';
        if (target[0] != '/' || (n > 10 && strcmp(target + n - 10, " (deleted)") == 0) ||
            dp_bundle_resolve(b, target, host, sizeof(host)) < 0)
            continue;
        if (!dp_rootfs_add(m, target, DP_ROOTFS_OPEN)) {
            closedir(d);
            dp_err_set(err, "too many files in the container's rootfs manifest (max %d)", DP_ROOTFS_MAX_FILES);
            return -1;
        }
    }
    closedir(d);
    return 0;
}

/* pid and its descendants (children of every thread), breadth first. */
static int tree_pids(pid_t root, pid_t *pids, size_t max, size_t *n)
{
    *n = 0;
    pids[(*n)++] = root;
    for (size_t i = 0; i < *n; i++) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/task", (int)pids[i]);
        DIR *d = opendir(path);
        if (!d)
            continue;
        struct dirent *de;
        while ((de = readdir(d))) {
            if (de->d_name[0] == '.')
                continue;
            char cpath[300];
            snprintf(cpath, sizeof(cpath), "/proc/%d/task/%s/children", (int)pids[i], de->d_name);
            FILE *f = fopen(cpath, "r");
            if (!f)
                continue;
            long c;
            while (fscanf(f, "%ld", &c) == 1) {
                if (*n == max) {
                    fclose(f);
                    closedir(d);
                    return -1;
                }
                pids[(*n)++] = (pid_t)c;
            }
            fclose(f);
        }
        closedir(d);
    }
    return 0;
}

int dp_rootfs_collect(pid_t root, const struct dp_bundle_info *b, struct dp_rootfs_manifest *m,
                      struct dp_err *err)
{
    memset(m, 0, sizeof(*m));
    pid_t *pids = malloc(MAX_TASKS * sizeof(*pids));
    size_t n;
    if (!pids) {
        dp_err_set(err, "out of memory");
        return -1;
    }
    if (tree_pids(root, pids, MAX_TASKS, &n) < 0) {
        free(pids);
        dp_err_set(err, "the container has more than %d tasks", MAX_TASKS);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if (collect_task(pids[i], b, m, err) < 0) {
            free(pids);
            dp_rootfs_free(m);
            return -1;
        }
    /* Measure through the root task's view of its filesystem. */
    for (size_t i = 0; i < m->n; i++) {
        struct dp_rootfs_entry *e = &m->e[i];
        char path[PATH_MAX + 64];
        snprintf(path, sizeof(path), "/proc/%d/root%s", (int)root, e->path);
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0 || measure_fd(fd, e, e->kind == DP_ROOTFS_MAPPED) < 0) {
            dp_err_set(err, "cannot read %s of the container (as %s): %s", e->path, path, strerror(errno));
            if (fd >= 0)
                close(fd);
            free(pids);
            dp_rootfs_free(m);
            return -1;
        }
        close(fd);
    }
    free(pids);
    dp_rootfs_finish(m);
    return 0;
}

int dp_rootfs_measure(const struct dp_bundle_info *b, const struct dp_rootfs_manifest *want,
                      struct dp_rootfs_manifest *got, struct dp_err *err)
{
    memset(got, 0, sizeof(*got));
    for (size_t i = 0; i < want->n; i++) {
        struct dp_rootfs_entry *e = dp_rootfs_add(got, want->e[i].path, want->e[i].kind);
        if (!e) {
            dp_err_set(err, "out of memory");
            dp_rootfs_free(got);
            return -1;
        }
        char host[PATH_MAX];
        int fd = -1;
        if (dp_bundle_resolve(b, e->path, host, sizeof(host)) < 0 ||
            (fd = open(host, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)) < 0 ||
            measure_fd(fd, e, e->kind == DP_ROOTFS_MAPPED) < 0)
            e->missing = 1;
        if (fd >= 0)
            close(fd);
    }
    dp_rootfs_finish(got);
    return 0;
}
