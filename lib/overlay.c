/* overlay: append-only write-back log with an in-memory index. */
#include "overlay.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <sodium.h>

#include "pmap.h"
#include "proto.h"

#define REC_MAGIC  0x564f5044u
#define REC_FORMAT 1u
#define NO_REC     UINT64_MAX /* index value of a page taken back after a failed sync */

/* An index entry as it was before an append not yet synced: a failed sync
 * puts it back. */
struct undo {
    int32_t pid;
    uint64_t addr;
    uint64_t old;  /* data offset, or NO_REC if the page was not in the overlay */
};

struct dp_overlay {
    int fd;
    char path[4200];
    struct dp_pmap index;     /* value = data offset */
    uint64_t end;             /* append position */
    uint64_t seq;
    bool dirty;
    bool dir_unsynced;        /* the log was created and its directory not synced yet */
    uint64_t compact_min;
    struct undo *undo;        /* index changes since the last successful sync */
    size_t nr_undo, cap_undo;
    bool failed;              /* a sync failed: no more appends, syncs or compactions */
    char failure[sizeof(((struct dp_err *)0)->msg)];
    struct dp_overlay_stats st;
};

static void rec_checksum(const uint8_t hdr[32], const uint8_t *data, uint8_t out[16])
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, 16);
    crypto_generichash_update(&st, hdr, 32);
    crypto_generichash_update(&st, data, DP_PAGE_SIZE);
    crypto_generichash_final(&st, out, 16);
}

static void rec_encode(uint8_t hdr[DP_OVERLAY_REC_HDR], int32_t pid, uint64_t addr, uint64_t seq, const uint8_t *data)
{
    memset(hdr, 0, DP_OVERLAY_REC_HDR);
    dp_put_u32(hdr, REC_MAGIC);
    dp_put_u32(hdr + 4, REC_FORMAT);
    dp_put_u32(hdr + 8, (uint32_t)pid);
    dp_put_u64(hdr + 16, addr);
    dp_put_u64(hdr + 24, seq);
    rec_checksum(hdr, data, hdr + 32);
}

/* Returns true if the record at rec is intact. */
static bool rec_valid(const uint8_t *rec)
{
    static const uint8_t zeros[16];
    if (dp_get_u32(rec) != REC_MAGIC || dp_get_u32(rec + 4) != REC_FORMAT || dp_get_u32(rec + 12) != 0 ||
        memcmp(rec + 48, zeros, 16) != 0 || dp_get_u64(rec + 16) % DP_PAGE_SIZE)
        return false;
    uint8_t sum[16];
    rec_checksum(rec, rec + DP_OVERLAY_REC_HDR, sum);
    return sodium_memcmp(sum, rec + 32, 16) == 0;
}

static int index_put(struct dp_overlay *o, int32_t pid, uint64_t addr, uint64_t data_off)
{
    bool created;
    struct dp_pmap_entry *e = dp_pmap_get(&o->index, pid, addr, &created);
    if (!e)
        return -1;
    e->value = data_off;
    if (created)
        o->st.live_pages++;
    return 0;
}

static int replay(struct dp_overlay *o, struct dp_err *err)
{
    enum { BATCH = 256 };
    uint8_t *buf = malloc((size_t)BATCH * DP_OVERLAY_REC_SIZE);
    if (!buf) {
        dp_err_set(err, "out of memory replaying %s", o->path);
        return -1;
    }
    struct stat sb;
    if (fstat(o->fd, &sb) < 0) {
        dp_err_set(err, "cannot stat %s: %s", o->path, strerror(errno));
        free(buf);
        return -1;
    }
    uint64_t size = (uint64_t)sb.st_size, off = 0;
    bool torn = false;
    while (off < size && !torn) {
        size_t want = (size_t)BATCH * DP_OVERLAY_REC_SIZE;
        if (size - off < want)
            want = (size_t)(size - off);
        ssize_t r = pread(o->fd, buf, want, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            dp_err_set(err, "cannot read %s at offset %llu: %s", o->path, (unsigned long long)off,
                       r < 0 ? strerror(errno) : "unexpected end of file");
            free(buf);
            return -1;
        }
        size_t got = (size_t)r;
        for (size_t at = 0; at < got; at += DP_OVERLAY_REC_SIZE) {
            if (got - at < DP_OVERLAY_REC_SIZE || !rec_valid(buf + at)) {
                torn = true;
                break;
            }
            const uint8_t *rec = buf + at;
            int32_t pid = (int32_t)dp_get_u32(rec + 8);
            uint64_t seq = dp_get_u64(rec + 24);
            if (index_put(o, pid, dp_get_u64(rec + 16), off + DP_OVERLAY_REC_HDR) < 0) {
                dp_err_set(err, "out of memory indexing %s", o->path);
                free(buf);
                return -1;
            }
            if (seq >= o->seq)
                o->seq = seq + 1;
            o->st.records++;
            off += DP_OVERLAY_REC_SIZE;
        }
    }
    free(buf);
    o->end = off;
    if (off < size) {
        /* Only the last, unacknowledged group of appends can be torn: every
         * earlier group was fdatasync'd before the next was written. */
        o->st.torn_bytes = size - off;
        dp_warn("%s: dropping a torn tail of %llu bytes at offset %llu (writes never acknowledged)", o->path,
                (unsigned long long)(size - off), (unsigned long long)off);
        if (ftruncate(o->fd, (off_t)off) < 0 || fdatasync(o->fd) < 0) {
            dp_err_set(err, "cannot cut the torn tail of %s: %s", o->path, strerror(errno));
            return -1;
        }
    }
    o->st.log_bytes = o->end;
    return 0;
}

int dp_overlay_open(const char *dir, struct dp_overlay **out, struct dp_err *err)
{
    struct dp_overlay *o = calloc(1, sizeof(*o));
    if (!o) {
        dp_err_set(err, "out of memory");
        return -1;
    }
    if (sodium_init() < 0) {
        dp_err_set(err, "libsodium failed to initialise");
        free(o);
        return -1;
    }
    snprintf(o->path, sizeof(o->path), "%s/%s", dir, DP_OVERLAY_NAME);
    o->compact_min = 64ull << 20;
    bool existed = access(o->path, F_OK) == 0;
    o->fd = open(o->path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (o->fd < 0) {
        dp_err_set(err, "cannot open write-back log %s: %s (is the images directory writable?)", o->path,
                   strerror(errno));
        free(o);
        return -1;
    }
    /* The new file's directory entry must be durable before the first write
     * is acknowledged, not now: syncing the directory commits the file
     * system's journal, which right after a dump waits for the writeback of
     * the freshly written images (0.2-0.9 s for 4 GiB), and an empty log
     * lost in a crash loses nothing. dp_overlay_sync does it once. */
    o->dir_unsynced = !existed;
    if (replay(o, err) < 0) {
        dp_overlay_close(o);
        return -1;
    }
    *out = o;
    return 0;
}

void dp_overlay_close(struct dp_overlay *o)
{
    if (!o)
        return;
    if (o->fd >= 0)
        close(o->fd);
    dp_pmap_free(&o->index);
    free(o->undo);
    free(o);
}

int dp_overlay_fd(const struct dp_overlay *o) { return o->fd; }

bool dp_overlay_lookup(const struct dp_overlay *o, int32_t pid, uint64_t addr, uint64_t *data_off)
{
    if (!o->st.live_pages)
        return false;
    const struct dp_pmap_entry *e = dp_pmap_find(&o->index, pid, addr);
    if (!e || e->value == NO_REC)
        return false;
    *data_off = e->value;
    return true;
}

/* Room for n more undo entries, taken before the append writes anything so
 * that an index change can always be taken back. */
static int undo_reserve(struct dp_overlay *o, size_t n)
{
    if (o->nr_undo + n <= o->cap_undo)
        return 0;
    size_t cap = o->cap_undo ? o->cap_undo : 256;
    while (cap < o->nr_undo + n)
        cap *= 2;
    struct undo *u = realloc(o->undo, cap * sizeof(*u));
    if (!u)
        return -1;
    o->undo = u;
    o->cap_undo = cap;
    return 0;
}

/* After a failed sync nothing appended since the last good one is known to
 * be on disk: the index goes back to the records synced before, newest
 * change first, so a page appended twice ends at its oldest value. */
static void undo_unsynced(struct dp_overlay *o)
{
    while (o->nr_undo) {
        const struct undo *u = &o->undo[--o->nr_undo];
        struct dp_pmap_entry *e = dp_pmap_find(&o->index, u->pid, u->addr);
        if (!e)
            continue;
        if (u->old == NO_REC && e->value != NO_REC)
            o->st.live_pages--;
        e->value = u->old;
    }
}

const char *dp_overlay_failure(const struct dp_overlay *o) { return o->failed ? o->failure : NULL; }

int dp_overlay_append(struct dp_overlay *o, int32_t pid, uint64_t addr, uint32_t count, const uint8_t *data,
                      struct dp_err *err)
{
    enum { IOV_PAGES = 64 };
    uint8_t hdrs[IOV_PAGES][DP_OVERLAY_REC_HDR];
    struct iovec iov[2 * IOV_PAGES];
    if (o->failed) {
        dp_err_set(err, "the write-back log takes no more writes since %s", o->failure);
        return -1;
    }
    if (undo_reserve(o, count) < 0) {
        dp_err_set(err, "out of memory appending to the write-back log");
        return -1;
    }
    for (uint32_t done = 0; done < count;) {
        uint32_t n = count - done < IOV_PAGES ? count - done : IOV_PAGES;
        for (uint32_t i = 0; i < n; i++) {
            const uint8_t *page = data + (size_t)(done + i) * DP_PAGE_SIZE;
            rec_encode(hdrs[i], pid, addr + (uint64_t)(done + i) * DP_PAGE_SIZE, o->seq + i, page);
            iov[2 * i] = (struct iovec){hdrs[i], DP_OVERLAY_REC_HDR};
            iov[2 * i + 1] = (struct iovec){(void *)page, DP_PAGE_SIZE};
        }
        size_t total = (size_t)n * DP_OVERLAY_REC_SIZE, written = 0;
        struct iovec *v = iov;
        int vn = (int)(2 * n);
        while (written < total) {
            ssize_t w = pwritev(o->fd, v, vn, (off_t)(o->end + written));
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                dp_err_set(err, "cannot append to %s: %s", o->path, w < 0 ? strerror(errno) : "short write");
                /* Leave end where it was: the partial record is overwritten next time. */
                return -1;
            }
            written += (size_t)w;
            size_t skip = (size_t)w;
            while (vn > 0 && skip >= v->iov_len) {
                skip -= v->iov_len;
                v++;
                vn--;
            }
            if (vn > 0) {
                v->iov_base = (uint8_t *)v->iov_base + skip;
                v->iov_len -= skip;
            }
        }
        for (uint32_t i = 0; i < n; i++) {
            uint64_t rec_off = o->end + (uint64_t)i * DP_OVERLAY_REC_SIZE;
            uint64_t page = addr + (uint64_t)(done + i) * DP_PAGE_SIZE;
            const struct dp_pmap_entry *old = dp_pmap_find(&o->index, pid, page);
            o->undo[o->nr_undo++] = (struct undo){pid, page, old ? old->value : NO_REC};
            if (index_put(o, pid, page, rec_off + DP_OVERLAY_REC_HDR) < 0) {
                dp_err_set(err, "out of memory indexing the write-back log");
                return -1;
            }
        }
        o->end += total;
        o->seq += n;
        o->st.records += n;
        o->st.appended_pages += n;
        done += n;
    }
    o->st.log_bytes = o->end;
    o->dirty = true;
    return 0;
}

bool dp_overlay_dirty(const struct dp_overlay *o) { return o->dirty; }

/* fsync of the directory holding the log. */
static int sync_dir(const char *path, struct dp_err *err)
{
    char dir[4300];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) < 0) {
        dp_err_set(err, "cannot sync the directory of %s: %s", path, strerror(errno));
        if (dfd >= 0)
            close(dfd);
        return -1;
    }
    close(dfd);
    return 0;
}

/* A failed sync fails the log for good: Linux may have dropped the dirty
 * pages it could not write and mark them clean, so a later fdatasync can
 * succeed without them ("fsyncgate"). What was appended since the last good
 * sync is taken back from the index; what was synced before stays readable. */
static void fail_log(struct dp_overlay *o, const char *what)
{
    snprintf(o->failure, sizeof(o->failure), "%s", what);
    o->failed = true;
    o->dirty = false;
    undo_unsynced(o);
}

int dp_overlay_sync(struct dp_overlay *o, struct dp_err *err)
{
    if (o->failed) {
        dp_err_set(err, "the write-back log takes no more writes since %s", o->failure);
        return -1;
    }
    if (!o->dirty)
        return 0;
    if (fdatasync(o->fd) < 0) {
        dp_err_set(err, "fdatasync of %s failed: %s", o->path, strerror(errno));
        fail_log(o, err->msg);
        return -1;
    }
    if (o->dir_unsynced) {
        if (sync_dir(o->path, err) < 0) {
            fail_log(o, err->msg);
            return -1;
        }
        o->dir_unsynced = false;
    }
    o->dirty = false;
    o->nr_undo = 0;
    o->st.syncs++;
    return 0;
}

void dp_overlay_get_stats(const struct dp_overlay *o, struct dp_overlay_stats *st) { *st = o->st; }

bool dp_overlay_wants_compaction(const struct dp_overlay *o)
{
    if (o->failed)
        return false;
    uint64_t garbage = o->st.records - o->st.live_pages;
    return garbage >= o->st.live_pages && garbage * DP_OVERLAY_REC_SIZE >= o->compact_min;
}

void dp_overlay_set_compact_min(struct dp_overlay *o, uint64_t bytes) { o->compact_min = bytes; }

int dp_overlay_compact(struct dp_overlay *o, struct dp_err *err)
{
    enum { BATCH = 64 };
    if (o->dirty || o->failed) {
        dp_err_set(err, "compaction needs a synced log%s", o->failed ? " (a sync failed)" : "");
        return -1;
    }
    char tmp[4300];
    snprintf(tmp, sizeof(tmp), "%s.compact", o->path);
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        dp_err_set(err, "cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    uint8_t *buf = malloc((size_t)BATCH * DP_OVERLAY_REC_SIZE);
    if (!buf) {
        close(fd);
        unlink(tmp);
        dp_err_set(err, "out of memory");
        return -1;
    }
    uint64_t out = 0, seq = o->seq;
    size_t n = 0;
    int rc = 0;
    /* New offsets go to value2 and are applied only once the new log is in place. */
    for (size_t i = 0; i <= o->index.cap && rc == 0; i++) {
        bool last = i == o->index.cap;
        struct dp_pmap_entry *e = last ? NULL : &o->index.slots[i];
        if (e && e->addr != UINT64_MAX && e->value != NO_REC) {
            uint8_t *rec = buf + n * DP_OVERLAY_REC_SIZE;
            if (pread(o->fd, rec + DP_OVERLAY_REC_HDR, DP_PAGE_SIZE, (off_t)e->value) != (ssize_t)DP_PAGE_SIZE) {
                dp_err_set(err, "cannot read %s at %llu: %s", o->path, (unsigned long long)e->value, strerror(errno));
                rc = -1;
                break;
            }
            rec_encode(rec, e->pid, e->addr, seq++, rec + DP_OVERLAY_REC_HDR);
            e->value2 = out + n * DP_OVERLAY_REC_SIZE + DP_OVERLAY_REC_HDR;
            n++;
        }
        if (n == BATCH || (last && n)) {
            if (pwrite(fd, buf, n * DP_OVERLAY_REC_SIZE, (off_t)out) != (ssize_t)(n * DP_OVERLAY_REC_SIZE)) {
                dp_err_set(err, "cannot write %s: %s", tmp, strerror(errno));
                rc = -1;
                break;
            }
            out += n * DP_OVERLAY_REC_SIZE;
            n = 0;
        }
    }
    free(buf);
    if (rc == 0 && fdatasync(fd) < 0) {
        dp_err_set(err, "fdatasync of %s failed: %s", tmp, strerror(errno));
        rc = -1;
    }
    if (rc == 0 && rename(tmp, o->path) < 0) {
        dp_err_set(err, "cannot rename %s over %s: %s", tmp, o->path, strerror(errno));
        rc = -1;
    }
    if (rc < 0) {
        close(fd);
        unlink(tmp);
        return -1;
    }
    /* The rename is durable once the directory is synced. */
    struct dp_err derr;
    if (sync_dir(o->path, &derr) == 0)
        o->dir_unsynced = false;
    close(o->fd);
    o->fd = fd;
    for (size_t i = 0; i < o->index.cap; i++)
        if (o->index.slots[i].addr != UINT64_MAX && o->index.slots[i].value != NO_REC)
            o->index.slots[i].value = o->index.slots[i].value2;
    o->end = out;
    o->seq = seq;
    o->st.records = o->st.live_pages;
    o->st.log_bytes = out;
    o->st.compactions++;
    return 0;
}
