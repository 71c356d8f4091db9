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

#define REC_MAGIC     0x564f5044u /* "DPOV": a page record */
#define COMMIT_MAGIC  0x434f5044u /* "DPOC": the commit record closing a sync group */
#define REC_FORMAT    2u          /* 2: sync groups closed by commit records */
#define REC_FORMAT_V1 1u          /* read only: page records alone; rewritten as format 2 at open */
#define NO_REC        UINT64_MAX  /* index value of a page taken back after a failed sync */

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
    /* the open sync group: records appended since the last commit record */
    uint32_t group_count;
    uint64_t group_first_seq;
    crypto_generichash_state group_hash; /* over the group's record checksums */
    bool legacy;              /* replayed a format-1 log: rewrite it (compaction) */
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
static bool rec_valid(const uint8_t *rec, uint32_t format)
{
    static const uint8_t zeros[16];
    if (dp_get_u32(rec) != REC_MAGIC || dp_get_u32(rec + 4) != format || dp_get_u32(rec + 12) != 0 ||
        memcmp(rec + 48, zeros, 16) != 0 || dp_get_u64(rec + 16) % DP_PAGE_SIZE)
        return false;
    uint8_t sum[16];
    rec_checksum(rec, rec + DP_OVERLAY_REC_HDR, sum);
    return sodium_memcmp(sum, rec + 32, 16) == 0;
}

/* Commit record (64 bytes): u32 "DPOC", u32 format 2, u32 count, u32 0,
 * u64 first sequence, u64 0, 16-byte BLAKE2b over bytes 0..31 and 48..63,
 * 16-byte BLAKE2b of the group's page-record checksums in order. */
static void commit_checksum(const uint8_t *c, uint8_t out[16])
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, 16);
    crypto_generichash_update(&st, c, 32);
    crypto_generichash_update(&st, c + 48, 16);
    crypto_generichash_final(&st, out, 16);
}

/* Closes a group: its size, first sequence and a hash binding its records. */
static void commit_encode(uint8_t c[DP_OVERLAY_COMMIT_SIZE], uint32_t count, uint64_t first_seq,
                          const uint8_t group_hash[16])
{
    memset(c, 0, DP_OVERLAY_COMMIT_SIZE);
    dp_put_u32(c, COMMIT_MAGIC);
    dp_put_u32(c + 4, REC_FORMAT);
    dp_put_u32(c + 8, count);
    dp_put_u64(c + 16, first_seq);
    memcpy(c + 48, group_hash, 16);
    commit_checksum(c, c + 32);
}

/* True if c is an intact commit record (whether it matches its group is the
 * replay's business). */
static bool commit_valid(const uint8_t *c)
{
    if (dp_get_u32(c) != COMMIT_MAGIC || dp_get_u32(c + 4) != REC_FORMAT || dp_get_u32(c + 12) != 0 ||
        dp_get_u64(c + 24) != 0 || dp_get_u32(c + 8) == 0)
        return false;
    uint8_t sum[16];
    commit_checksum(c, sum);
    return sodium_memcmp(sum, c + 32, 16) == 0;
}

/* pwrite of all n bytes (retrying short writes and EINTR). */
static int pwrite_full(int fd, const uint8_t *p, size_t n, uint64_t off)
{
    while (n) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            return -1;
        }
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

/* Opens the next sync group, whose first record will have first_seq. */
static void group_reset(struct dp_overlay *o, uint64_t first_seq)
{
    o->group_count = 0;
    o->group_first_seq = first_seq;
    crypto_generichash_init(&o->group_hash, NULL, 0, 16);
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

/* One page record of the group being replayed, indexed once its commit
 * record verifies. */
struct pending { int32_t pid; uint64_t addr, data_off; };

/* Reads the whole log (replay is rare and the log is compacted). */
static int read_log(struct dp_overlay *o, uint8_t **data, uint64_t *size, struct dp_err *err)
{
    struct stat sb;
    if (fstat(o->fd, &sb) < 0) {
        dp_err_set(err, "cannot stat %s: %s", o->path, strerror(errno));
        return -1;
    }
    *size = (uint64_t)sb.st_size;
    *data = malloc(*size ? *size : 1);
    if (!*data) {
        dp_err_set(err, "out of memory replaying %s (%llu bytes)", o->path, (unsigned long long)*size);
        return -1;
    }
    for (uint64_t off = 0; off < *size;) {
        ssize_t r = pread(o->fd, *data + off, *size - off, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            dp_err_set(err, "cannot read %s at offset %llu: %s", o->path, (unsigned long long)off,
                       r < 0 ? strerror(errno) : "unexpected end of file");
            free(*data);
            return -1;
        }
        off += (uint64_t)r;
    }
    return 0;
}

/* Where replay stopped, and whether what follows may be cut: a torn tail
 * (never acknowledged) or damage inside acknowledged data. Pure. */
struct replay_end {
    uint64_t committed;   /* end of the last verified commit record: everything before is acknowledged */
    uint64_t bad;         /* first byte that is not a valid record (== size if none) */
    uint64_t later_commit;/* a valid commit record after bad (UINT64_MAX: none) */
    const char *why;      /* what is wrong at bad */
};

/* Is the damage at e->bad a torn tail? Only the last group of appends can be
 * torn: each group ends with its commit record and is fdatasync'd before it
 * is acknowledged and before the next group is written. So anything
 * followed by a valid commit record was acknowledged. And where the tail
 * starts, a crash leaves the end of the file, zeros (space allocated, data
 * never written) or the start of a page record of the unfinished group
 * ("DPOV"); a 64-byte commit record aligned to 64 bytes lies in one disk
 * sector, which is written whole or not at all, so it is never half there.
 * Any other bytes there are a damaged commit record: acknowledged. */
static bool is_torn_tail(const uint8_t *log, uint64_t size, struct replay_end *e)
{
    e->later_commit = UINT64_MAX;
    for (uint64_t q = (e->bad + DP_OVERLAY_COMMIT_SIZE) & ~(uint64_t)(DP_OVERLAY_COMMIT_SIZE - 1);
         q + DP_OVERLAY_COMMIT_SIZE <= size; q += DP_OVERLAY_COMMIT_SIZE) {
        if (commit_valid(log + q)) {
            e->later_commit = q;
            return false;
        }
    }
    static const uint8_t zeros[DP_OVERLAY_COMMIT_SIZE];
    uint64_t n = size - e->bad < DP_OVERLAY_COMMIT_SIZE ? size - e->bad : DP_OVERLAY_COMMIT_SIZE;
    bool page_start = n >= 4 && dp_get_u32(log + e->bad) == REC_MAGIC;
    if (!page_start && memcmp(log + e->bad, zeros, n) != 0) {
        if (n < 4 || dp_get_u32(log + e->bad) != COMMIT_MAGIC) /* 1..3 bytes hold no magic (fuzz_overlay) */
            e->why = "bytes that are neither a record nor zeros where a commit record belongs (a damaged one)";
        return false;
    }
    return true;
}

/* Rebuilds the index group by group; cuts a torn tail, refuses damage
 * inside acknowledged writes (is_torn_tail). */
static int replay(struct dp_overlay *o, struct dp_err *err)
{
    uint8_t *log;
    uint64_t size;
    if (read_log(o, &log, &size, err) < 0)
        return -1;
    struct pending *grp = NULL;
    size_t cap = 0;
    struct replay_end e = {.committed = 0, .bad = size, .why = NULL};
    uint64_t off = 0, next_seq = 0, committed_seq = 0;
    bool have_seq = false;
    int rc = 0;
    o->legacy = size >= 8 && dp_get_u32(log) == REC_MAGIC && dp_get_u32(log + 4) == REC_FORMAT_V1;
    group_reset(o, 0);
    while (off < size) {
        const uint8_t *r = log + off;
        uint64_t left = size - off;
        if (!o->legacy && left >= DP_OVERLAY_COMMIT_SIZE && dp_get_u32(r) == COMMIT_MAGIC) {
            if (!commit_valid(r)) {
                e.why = "a commit record that does not verify";
                break;
            }
            uint8_t gh[16];
            crypto_generichash_final(&o->group_hash, gh, 16);
            if (dp_get_u32(r + 8) != o->group_count || dp_get_u64(r + 16) != o->group_first_seq ||
                sodium_memcmp(gh, r + 48, 16) != 0) {
                e.why = "a commit record that does not match the records before it (a record is missing, "
                        "swapped or damaged)";
                e.later_commit = off;
                rc = -2;
                break;
            }
            for (uint32_t i = 0; i < o->group_count && rc == 0; i++)
                if (index_put(o, grp[i].pid, grp[i].addr, grp[i].data_off) < 0)
                    rc = -1;
            if (rc)
                break;
            off += DP_OVERLAY_COMMIT_SIZE;
            e.committed = off;
            committed_seq = next_seq;
            group_reset(o, next_seq);
            continue;
        }
        uint32_t format = o->legacy ? REC_FORMAT_V1 : REC_FORMAT;
        if (left < DP_OVERLAY_REC_SIZE || !rec_valid(r, format)) {
            e.why = left < DP_OVERLAY_REC_SIZE ? "a short record" : "a record that fails its checksum";
            break;
        }
        uint64_t seq = dp_get_u64(r + 24);
        if (have_seq && seq != next_seq) {
            e.why = "a record out of sequence (one is missing or repeated)";
            break;
        }
        if (!have_seq)
            group_reset(o, seq);
        have_seq = true;
        next_seq = seq + 1;
        struct pending p = {(int32_t)dp_get_u32(r + 8), dp_get_u64(r + 16), off + DP_OVERLAY_REC_HDR};
        if (o->legacy) {
            /* format 1: every record stands alone (cut at the first bad one) */
            if (index_put(o, p.pid, p.addr, p.data_off) < 0) {
                rc = -1;
                break;
            }
            e.committed = off + DP_OVERLAY_REC_SIZE;
            committed_seq = seq + 1;
        } else {
            if (o->group_count == cap) {
                cap = cap ? cap * 2 : 256;
                struct pending *n = realloc(grp, cap * sizeof(*grp));
                if (!n) {
                    rc = -1;
                    break;
                }
                grp = n;
            }
            grp[o->group_count++] = p;
            crypto_generichash_update(&o->group_hash, r + 32, 16);
        }
        o->st.records++;
        off += DP_OVERLAY_REC_SIZE;
    }
    free(grp);
    if (rc == -1) {
        dp_err_set(err, "out of memory indexing %s", o->path);
        free(log);
        return -1;
    }
    if (off >= size)
        e.why = "a group of records without its commit record";
    e.bad = off < size ? off : e.committed;
    if (rc == -2 || (e.committed < size && off < size && !o->legacy && !is_torn_tail(log, size, &e))) {
        char later[120] = "";
        if (e.later_commit != UINT64_MAX)
            snprintf(later, sizeof(later), " (a valid commit record at offset %llu follows it)",
                     (unsigned long long)e.later_commit);
        dp_err_set(err, "write-back log %s is damaged at offset %llu: %s, inside writes that were acknowledged%s. "
                   "This is not a torn tail, so nothing is cut and the file is left untouched. Check the disk "
                   "(dmesg), then restore the log from a backup, or move it aside to start with an empty one "
                   "(losing the pages written back since the checkpoint)",
                   o->path, (unsigned long long)e.bad, e.why, later);
        free(log);
        return -1;
    }
    free(log);
    /* Records not closed by a commit were never acknowledged. */
    o->st.records -= o->legacy ? 0 : o->group_count;
    o->seq = committed_seq; /* the cut records' numbers are reused */
    group_reset(o, o->seq);
    o->end = e.committed;
    if (e.committed < size) {
        o->st.torn_bytes = size - e.committed;
        dp_warn("%s: dropping a torn tail of %llu bytes at offset %llu (%s; writes never acknowledged)", o->path,
                (unsigned long long)(size - e.committed), (unsigned long long)e.committed, e.why);
        if (ftruncate(o->fd, (off_t)e.committed) < 0 || fdatasync(o->fd) < 0) {
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
    if (o->legacy && o->st.records) {
        dp_info("%s: rewriting a format-1 write-back log as format 2 (sync groups with commit records)", o->path);
        if (dp_overlay_compact(o, err) < 0) {
            dp_overlay_close(o);
            return -1;
        }
    }
    o->legacy = false;
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
            crypto_generichash_update(&o->group_hash, hdrs[i] + 32, 16); /* written: part of the group */
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
        o->group_count += n;
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
    /* Close the group: its commit record goes to disk with it. */
    uint8_t commit[DP_OVERLAY_COMMIT_SIZE], gh[16];
    crypto_generichash_final(&o->group_hash, gh, 16);
    commit_encode(commit, o->group_count, o->group_first_seq, gh);
    if (pwrite_full(o->fd, commit, sizeof(commit), o->end) < 0) {
        dp_err_set(err, "cannot append a commit record to %s: %s", o->path, strerror(errno));
        fail_log(o, err->msg);
        return -1;
    }
    o->end += DP_OVERLAY_COMMIT_SIZE;
    o->st.log_bytes = o->end;
    group_reset(o, o->seq);
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
    uint64_t out = 0, seq = o->seq, first_seq = o->seq;
    size_t n = 0;
    int rc = 0;
    crypto_generichash_state gh;
    crypto_generichash_init(&gh, NULL, 0, 16);
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
            crypto_generichash_update(&gh, rec + 32, 16);
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
    if (rc == 0 && seq > first_seq) {
        /* one group: the compacted records, closed by their commit record */
        uint8_t commit[DP_OVERLAY_COMMIT_SIZE], sum[16];
        crypto_generichash_final(&gh, sum, 16);
        commit_encode(commit, (uint32_t)(seq - first_seq), first_seq, sum);
        if (pwrite_full(fd, commit, sizeof(commit), out) < 0) {
            dp_err_set(err, "cannot write %s: %s", tmp, strerror(errno));
            rc = -1;
        }
        out += DP_OVERLAY_COMMIT_SIZE;
    }
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
    group_reset(o, seq);
    o->st.records = o->st.live_pages;
    o->st.log_bytes = out;
    o->st.compactions++;
    return 0;
}
