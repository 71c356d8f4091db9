/* lease_store: persistence of the write lease and write-back generations
 * (see lease_store.h). */
#include "lease_store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "overlay.h"

struct dp_lease_store {
    char dir[4096];
    struct dp_lease cur;
};

/* ---- files ------------------------------------------------------------ */

/* fsync of DIR, so that a rename in it is durable. */
static int sync_dir(const char *dir, struct dp_err *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) < 0) {
        dp_err_set(err, "cannot sync directory %s: %s", dir, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

/* Writes l durably: temporary file, fsync, rename, directory fsync. */
static int save(const char *dir, const struct dp_lease *l, struct dp_err *err)
{
    char path[4200], tmp[4210];
    uint8_t buf[DP_LEASE_FILE_SIZE];
    snprintf(path, sizeof(path), "%s/%s", dir, DP_LEASE_FILE_NAME);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    dp_lease_encode(l, buf);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 || dp_write_full(fd, buf, sizeof(buf)) < 0 || fsync(fd) < 0) {
        dp_err_set(err, "cannot write the lease file %s: %s", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        unlink(tmp);
        return -1;
    }
    close(fd);
    if (rename(tmp, path) < 0) {
        dp_err_set(err, "cannot rename %s over %s: %s", tmp, path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return sync_dir(dir, err);
}

/* Moves a non-empty write-back log aside as ...log.epoch-N (or .epoch-N.K if
 * that name is taken: never overwrite a kept generation). */
static int archive_log(const char *dir, uint64_t log_epoch, char *archived, size_t archived_len, struct dp_err *err)
{
    char log[4200], dst[4300];
    struct stat st;
    archived[0] = '\0';
    snprintf(log, sizeof(log), "%s/%s", dir, DP_OVERLAY_NAME);
    if (lstat(log, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        dp_err_set(err, "cannot stat %s: %s", log, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        dp_err_set(err, "%s is not a regular file; move it away", log);
        return -1;
    }
    if (st.st_size == 0)
        return 0; /* nothing written in that generation: the empty log serves the next */
    for (int k = 0; k < 100; k++) {
        if (k == 0)
            snprintf(dst, sizeof(dst), "%s.epoch-%" PRIu64, log, log_epoch);
        else
            snprintf(dst, sizeof(dst), "%s.epoch-%" PRIu64 ".%d", log, log_epoch, k);
        if (renameat2(AT_FDCWD, log, AT_FDCWD, dst, RENAME_NOREPLACE) == 0) {
            snprintf(archived, archived_len, "%s", dst);
            return sync_dir(dir, err);
        }
        if (errno != EEXIST) {
            dp_err_set(err, "cannot move the write-back log %s aside to %s: %s", log, dst, strerror(errno));
            return -1;
        }
    }
    dp_err_set(err, "cannot move the write-back log %s aside: 100 kept generations of epoch %" PRIu64 " exist", log,
               log_epoch);
    return -1;
}

/* Finishes a generation change: the log of log_epoch goes aside, then the
 * lease records that the log now belongs to epoch. */
static int finish_generation(struct dp_lease_store *s, struct dp_lease *l, char *archived, size_t archived_len,
                             struct dp_err *err)
{
    if (archive_log(s->dir, l->log_epoch, archived, archived_len, err) < 0)
        return -1;
    l->log_epoch = l->epoch;
    return save(s->dir, l, err);
}

/* ---- interface -------------------------------------------------------- */

/* See lease_store.h. */
int dp_lease_store_open(const char *dir, struct dp_lease_store **out, struct dp_err *err)
{
    struct dp_lease_store *s = calloc(1, sizeof(*s));
    if (!s) {
        dp_err_set(err, "out of memory");
        return -1;
    }
    snprintf(s->dir, sizeof(s->dir), "%s", dir);
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", dir, DP_LEASE_FILE_NAME);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno != ENOENT) {
        dp_err_set(err, "cannot open the lease file %s: %s", path, strerror(errno));
        free(s);
        return -1;
    }
    if (fd >= 0) {
        uint8_t buf[DP_LEASE_FILE_SIZE + 1];
        ssize_t n = read(fd, buf, sizeof(buf));
        int e = errno;
        close(fd);
        struct dp_err derr;
        if (n < 0 || dp_lease_decode(buf, (size_t)n, &s->cur, &derr) < 0) {
            dp_err_set(err, "the lease file %s %s. It says which restore may write back, so the server does not "
                       "guess: if no restore of this checkpoint is running, move it aside (the next restore then "
                       "starts a new generation from the checkpoint), else restore it from a backup", path,
                       n < 0 ? strerror(e) : derr.msg);
            free(s);
            return -1;
        }
    }
    if (s->cur.log_epoch != s->cur.epoch) {
        char archived[4400];
        struct dp_lease l = s->cur;
        if (finish_generation(s, &l, archived, sizeof(archived), err) < 0) {
            free(s);
            return -1;
        }
        dp_warn("finished the write-back generation change to epoch %" PRIu64 " that a crash interrupted%s%s",
                l.epoch, archived[0] ? "; the earlier generation is kept as " : "", archived);
        s->cur = l;
    }
    *out = s;
    return 0;
}

/* Nothing to flush: every change was made durable when applied. */
void dp_lease_store_close(struct dp_lease_store *s) { free(s); }

/* The state as on disk (what every request is decided against). */
const struct dp_lease *dp_lease_store_get(const struct dp_lease_store *s) { return &s->cur; }

/* See lease_store.h. */
int dp_lease_store_apply(struct dp_lease_store *s, const struct dp_lease *next, bool new_generation, char *archived,
                         size_t archived_len, struct dp_err *err)
{
    struct dp_lease l = *next;
    archived[0] = '\0';
    if (!new_generation) {
        l.log_epoch = s->cur.log_epoch;
        if (save(s->dir, &l, err) < 0)
            return -1;
        s->cur = l;
        return 0;
    }
    l.log_epoch = s->cur.log_epoch; /* intent: from here on the old epoch is fenced */
    if (save(s->dir, &l, err) < 0 || finish_generation(s, &l, archived, archived_len, err) < 0)
        return -1;
    s->cur = l;
    return 0;
}
