/* overlay: the page server's durable write-back store. Pages the destination
 * writes back are appended to DIR/distriproc-overlay.log as checksummed
 * records; an in-memory index maps (pid, address) to the newest record, which
 * shadows the checkpoint's pages image. dp_overlay_sync() closes the group of
 * records appended since the last sync with a commit record and makes both
 * durable (fdatasync); a PUT is acknowledged only after it.
 *
 * Page record (4160 bytes, little endian, format 2):
 *   0 u32 magic 0x564f5044 ("DPOV")   4 u32 format 2
 *   8 i32 pid   12 u32 reserved 0    16 u64 page address   24 u64 sequence
 *  32 16-byte BLAKE2b over bytes 0..31 and the page data   48..63 zero
 *  64 4096 bytes of page data
 * Commit record (64 bytes), closing one sync group:
 *   0 u32 magic 0x434f5044 ("DPOC")   4 u32 format 2   8 u32 count of page
 *   records in the group   12 u32 0   16 u64 sequence of its first record
 *  24 u64 0   32 16-byte BLAKE2b over bytes 0..31 and 48..63
 *  48 16-byte BLAKE2b of the group's page-record checksums, in order
 * Sequence numbers rise by one from record to record. On open the log is
 * replayed group by group; a group enters the index only when its commit
 * record verifies and matches it (count, first sequence, checksums). What
 * follows the last verified commit record is either a torn tail (never
 * acknowledged: cut off, logged) or damage inside acknowledged data, when a
 * valid commit record follows the damage, or the damage is a commit record
 * with its magic but a wrong checksum (open fails, the file is untouched).
 * A format-1 log (no commit records) is read as before and rewritten.
 * A page written back again appends a new record; dp_overlay_compact()
 * rewrites the log without the superseded ones. */
#ifndef DP_OVERLAY_H
#define DP_OVERLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define DP_OVERLAY_NAME     "distriproc-overlay.log"
#define DP_OVERLAY_REC_HDR  64
#define DP_OVERLAY_REC_SIZE (DP_OVERLAY_REC_HDR + 4096)
#define DP_OVERLAY_COMMIT_SIZE 64

struct dp_overlay;

struct dp_overlay_stats {
    uint64_t live_pages;      /* distinct pages in the overlay */
    uint64_t records;         /* records in the log (live + superseded) */
    uint64_t log_bytes;
    uint64_t torn_bytes;      /* cut off at open */
    uint64_t syncs;
    uint64_t appended_pages;  /* since open */
    uint64_t compactions;
};

int dp_overlay_open(const char *dir, struct dp_overlay **out, struct dp_err *err);
void dp_overlay_close(struct dp_overlay *o);
int dp_overlay_fd(const struct dp_overlay *o);
/* true if the page is in the overlay; *data_off is the file offset of its data. */
bool dp_overlay_lookup(const struct dp_overlay *o, int32_t pid, uint64_t addr, uint64_t *data_off);
/* Appends count pages (not yet durable). */
int dp_overlay_append(struct dp_overlay *o, int32_t pid, uint64_t addr, uint32_t count, const uint8_t *data,
                      struct dp_err *err);
bool dp_overlay_dirty(const struct dp_overlay *o);
/* Makes the appends durable. If it fails the log is failed for good (after a
 * failed fdatasync the page cache may have dropped the unwritten pages, and a
 * later one would succeed without them): the appends since the last good
 * sync leave the index, and every later append, sync or compaction fails. */
int dp_overlay_sync(struct dp_overlay *o, struct dp_err *err);
/* NULL while the log is healthy; else what failed. */
const char *dp_overlay_failure(const struct dp_overlay *o);
void dp_overlay_get_stats(const struct dp_overlay *o, struct dp_overlay_stats *st);

/* The log only grows; rewriting it with the live records alone pays when
 * superseded records are at least as many as live ones and >= 64 MiB. */
bool dp_overlay_wants_compaction(const struct dp_overlay *o);
void dp_overlay_set_compact_min(struct dp_overlay *o, uint64_t bytes); /* default 64 MiB */
/* Writes the live records to DIR/distriproc-overlay.log.compact, syncs it,
 * renames it over the log and syncs the directory. Call only when nothing is
 * pending (not dirty); offsets and the fd change, so data must not be
 * referenced across the call. On failure the old log stays in use. */
int dp_overlay_compact(struct dp_overlay *o, struct dp_err *err);

#endif
