/* skeleton: the restore-time subset of a checkpoint (see skeleton.h). */
#include "skeleton.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGE DP_PAGE_SIZE
#define MAX_LEVELS 32

static int cmp_extent(const void *a, const void *b)
{
    const struct dp_extent *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

int dp_skeleton_pages_extents(const struct dp_checkpoint *cp, int32_t file, struct dp_extent **extents,
                              size_t *nr, struct dp_err *err)
{
    size_t n = 0, cap = 0;
    struct dp_extent *v = NULL;

    *extents = NULL;
    *nr = 0;
    for (size_t t = 0; t < cp->nr_tasks; t++) {
        const struct dp_task_image *ti = &cp->tasks[t];
        for (size_t i = 0; i < ti->nr_segs; i++) {
            const struct dp_page_seg *s = &ti->segs[i];
            if (s->file != file || (s->flags & DP_PE_LAZY))
                continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 64;
                struct dp_extent *nv = realloc(v, cap * sizeof(*nv));
                if (!nv) {
                    free(v);
                    dp_err_set(err, "out of memory planning the skeleton");
                    return -1;
                }
                v = nv;
            }
            v[n].offset = s->offset;
            v[n].length = s->nr_pages * PAGE;
            n++;
        }
    }
    if (n == 0) {
        free(v);
        return 0;
    }
    qsort(v, n, sizeof(*v), cmp_extent);
    size_t m = 0;
    for (size_t i = 1; i < n; i++) {
        if (v[i].offset <= v[m].offset + v[m].length) {
            uint64_t end = v[i].offset + v[i].length;
            if (end > v[m].offset + v[m].length)
                v[m].length = end - v[m].offset;
        } else {
            v[++m] = v[i];
        }
    }
    *extents = v;
    *nr = m + 1;
    return 0;
}

/* What stays on the source. CRIU's own logs (dump.log at -v4 grows with the
 * number of pagemap entries: 3.5 MiB for a 4 GiB Redis) sit in the images
 * directory but no restore reads them. Our own files there (the write-back
 * log, hot sets, stored traces: "distriproc-*") are served by their own
 * messages, and the page server rewrites or prunes some of them while it
 * runs: streamed as image files they could change under a download. */
static int stays_on_source(const char *name)
{
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    size_t l = strlen(base);
    return (l >= 4 && strcmp(base + l - 4, ".log") == 0) || strncmp(base, "distriproc-", 11) == 0;
}

int dp_skeleton_plan_listing(const struct dp_checkpoint *cp, const struct dp_dir_entry *listing, size_t n,
                             struct dp_skeleton_file **files, size_t *nr_files, struct dp_err *err)
{
    struct dp_skeleton_file *out = calloc(n ? n : 1, sizeof(*out));
    if (!out) {
        dp_err_set(err, "out of memory planning the skeleton");
        return -1;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (stays_on_source(listing[i].name))
            continue;
        struct dp_skeleton_file *f = &out[m++];
        snprintf(f->name, sizeof(f->name), "%s", listing[i].name);
        f->size = listing[i].size;
        int32_t file = -1;
        for (size_t k = 0; k < cp->nr_files; k++)
            if (!strcmp(cp->files[k].name, listing[i].name))
                file = (int32_t)k;
        if (file < 0) {
            if (f->size) {
                f->extents = malloc(sizeof(*f->extents));
                if (!f->extents)
                    goto oom;
                f->extents[0] = (struct dp_extent){0, f->size};
                f->nr_extents = 1;
            }
            f->send_bytes = f->size;
            continue;
        }
        f->sparse = 1;
        if (dp_skeleton_pages_extents(cp, file, &f->extents, &f->nr_extents, err) < 0) {
            dp_skeleton_free(out, m);
            return -1;
        }
        for (size_t e = 0; e < f->nr_extents; e++) {
            if (f->extents[e].offset + f->extents[e].length > f->size) {
                dp_err_set(err, "%s changed size while planning the skeleton (%llu bytes, data up to %llu)",
                           f->name, (unsigned long long)f->size,
                           (unsigned long long)(f->extents[e].offset + f->extents[e].length));
                dp_skeleton_free(out, m);
                return -1;
            }
            f->send_bytes += f->extents[e].length;
        }
    }
    *files = out;
    *nr_files = m;
    return 0;
oom:
    dp_skeleton_free(out, m);
    dp_err_set(err, "out of memory planning the skeleton");
    return -1;
}

void dp_skeleton_free(struct dp_skeleton_file *files, size_t n)
{
    if (!files)
        return;
    for (size_t i = 0; i < n; i++)
        free(files[i].extents);
    free(files);
}

void dp_skeleton_totals(const struct dp_skeleton_file *files, size_t n, uint64_t *send, uint64_t *total)
{
    *send = 0;
    *total = 0;
    for (size_t i = 0; i < n; i++) {
        *send += files[i].send_bytes;
        *total += files[i].size;
    }
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const struct dp_dir_entry *)a)->name, ((const struct dp_dir_entry *)b)->name);
}

/* Appends the regular files of dir (names prefixed) to the listing; returns
 * 1 if dir has a parent link to follow, 0 if not, -1 on error. */
static int list_level(const char *dir, const char *prefix, struct dp_dir_entry **list, size_t *n, size_t *cap,
                      struct dp_err *err)
{
    DIR *d = opendir(dir);
    int has_parent = 0;
    if (!d) {
        dp_err_set(err, "cannot list %s: %s", dir, strerror(errno));
        return -1;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        struct stat st;
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (!strcmp(de->d_name, "parent")) {
            has_parent = fstatat(dirfd(d), "parent", &st, 0) == 0 && S_ISDIR(st.st_mode);
            continue;
        }
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
            continue;
        if (*n == *cap) {
            *cap = *cap ? *cap * 2 : 64;
            struct dp_dir_entry *nl = realloc(*list, *cap * sizeof(*nl));
            if (!nl) {
                closedir(d);
                dp_err_set(err, "out of memory listing %s", dir);
                return -1;
            }
            *list = nl;
        }
        struct dp_dir_entry *e = &(*list)[(*n)++];
        if ((size_t)snprintf(e->name, sizeof(e->name), "%s%s", prefix, de->d_name) >= sizeof(e->name)) {
            closedir(d);
            dp_err_set(err, "file name too long in %s: %s", dir, de->d_name);
            return -1;
        }
        e->size = (uint64_t)st.st_size;
    }
    closedir(d);
    return has_parent;
}

int dp_skeleton_plan(const struct dp_checkpoint *cp, struct dp_skeleton_file **files, size_t *n,
                     struct dp_err *err)
{
    struct dp_dir_entry *list = NULL;
    size_t nr = 0, cap = 0;
    char dir[PATH_MAX], prefix[8 * MAX_LEVELS + 8] = "";

    snprintf(dir, sizeof(dir), "%s", cp->dir);
    for (int level = 0;; level++) {
        int rc = list_level(dir, prefix, &list, &nr, &cap, err);
        if (rc < 0) {
            free(list);
            return -1;
        }
        if (rc == 0)
            break;
        if (level + 1 >= MAX_LEVELS) {
            free(list);
            dp_err_set(err, "%s: pre-dump chain deeper than %d levels (a parent link loop?)", cp->dir,
                       MAX_LEVELS);
            return -1;
        }
        if (strlen(dir) + 8 >= sizeof(dir)) {
            free(list);
            dp_err_set(err, "path too long: %s/parent", dir);
            return -1;
        }
        strcat(dir, "/parent");
        strcat(prefix, "parent/");
    }
    if (nr > 1)
        qsort(list, nr, sizeof(*list), cmp_entry);
    int rc = dp_skeleton_plan_listing(cp, list, nr, files, n, err);
    free(list);
    return rc;
}

static int make_dirs_for(const char *dst_dir, const char *name, struct dp_err *err)
{
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dst_dir, name) >= sizeof(path)) {
        dp_err_set(err, "path too long: %s/%s", dst_dir, name);
        return -1;
    }
    for (char *p = path + strlen(dst_dir) + 1; (p = strchr(p, '/')); p++) {
        *p = 0;
        if (mkdir(path, 0755) < 0 && errno != EEXIST) {
            dp_err_set(err, "cannot create %s: %s", path, strerror(errno));
            return -1;
        }
        *p = '/';
    }
    return 0;
}

static int copy_range(int in, int out, uint64_t off, uint64_t len, const char *name, struct dp_err *err)
{
    char buf[1 << 16];
    while (len) {
        size_t chunk = len < sizeof(buf) ? (size_t)len : sizeof(buf);
        ssize_t r = pread(in, buf, chunk, (off_t)off);
        if (r <= 0) {
            dp_err_set(err, "cannot read %s at %llu: %s", name, (unsigned long long)off,
                       r < 0 ? strerror(errno) : "file shorter than planned");
            return -1;
        }
        for (ssize_t done = 0; done < r;) {
            ssize_t w = pwrite(out, buf + done, (size_t)(r - done), (off_t)(off + (uint64_t)done));
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                dp_err_set(err, "cannot write %s: %s", name, strerror(errno));
                return -1;
            }
            done += w;
        }
        off += (uint64_t)r;
        len -= (uint64_t)r;
    }
    return 0;
}

int dp_skeleton_write_local(const char *src_dir, const struct dp_skeleton_file *files, size_t n,
                            const char *dst_dir, struct dp_err *err)
{
    if (mkdir(dst_dir, 0755) < 0 && errno != EEXIST) {
        dp_err_set(err, "cannot create %s: %s", dst_dir, strerror(errno));
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const struct dp_skeleton_file *f = &files[i];
        char src[PATH_MAX], dst[PATH_MAX];
        if (strstr(f->name, "..") || f->name[0] == '/' || f->name[0] == 0) {
            dp_err_set(err, "refusing file name \"%s\" (must stay inside the directory)", f->name);
            return -1;
        }
        if ((size_t)snprintf(src, sizeof(src), "%s/%s", src_dir, f->name) >= sizeof(src) ||
            (size_t)snprintf(dst, sizeof(dst), "%s/%s", dst_dir, f->name) >= sizeof(dst)) {
            dp_err_set(err, "path too long for %s", f->name);
            return -1;
        }
        if (make_dirs_for(dst_dir, f->name, err) < 0)
            return -1;
        int in = open(src, O_RDONLY | O_CLOEXEC);
        if (in < 0) {
            dp_err_set(err, "cannot open %s: %s", src, strerror(errno));
            return -1;
        }
        int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (out < 0) {
            dp_err_set(err, "cannot create %s: %s", dst, strerror(errno));
            close(in);
            return -1;
        }
        int rc = ftruncate(out, (off_t)f->size) < 0 ? -1 : 0;
        if (rc < 0)
            dp_err_set(err, "cannot size %s: %s", dst, strerror(errno));
        for (size_t e = 0; rc == 0 && e < f->nr_extents; e++)
            rc = copy_range(in, out, f->extents[e].offset, f->extents[e].length, f->name, err);
        close(in);
        if (close(out) < 0 && rc == 0) {
            dp_err_set(err, "cannot write %s: %s", dst, strerror(errno));
            rc = -1;
        }
        if (rc < 0)
            return -1;
    }
    return 0;
}
