/* hotset: a checkpoint's working set ("hot set"): per task, an ordered list
 * of page runs to bring over first after a restore. Made by classification at
 * checkpoint time (checkpoint --classify), by recording the fault trace of a
 * restore (the daemon, stored by the page server), or by merging both.
 *
 * File format (little endian), version 1:
 *   0  u32 magic "DPHS" (0x53485044)
 *   4  u16 version (1)
 *   6  u8  source: 1 classify, 2 trace, 3 merged
 *   7  u8  reserved (0)
 *   8  32  checkpoint identity (lib/cpid.h) the hot set belongs to
 *  40  u64 created, microseconds since the Unix epoch
 *  48  u32 window_ms: how long was observed (classify seconds, trace window)
 *  52  u32 nr_tasks (1..65536)
 *  56  u32 nr_runs, over all tasks (0..2^22)
 *  60  u32 reserved (0)
 *  64  u64 total_pages (sum of every run's nr_pages)
 *  72  u64 reserved (0)
 *  80  per task, 8 bytes: i32 pid (> 0, unique), u32 nr_runs
 *      then per run, in task order, 24 bytes: u64 vaddr (page aligned),
 *      u32 nr_pages (>= 1), u32 score, u32 t_ms, u32 reserved (0)
 *  end 16-byte BLAKE2b-128 of every byte before it
 * The length must be exactly 80 + 8*nr_tasks + 24*nr_runs + 16.
 *
 * Runs are in replay order (the order pages should be fetched). Within a task
 * they never overlap and never wrap; vaddr + nr_pages*4096 <= 2^57. score:
 * classify: permille of the mapping found Referenced; trace: 1000; merged:
 * kept from the inputs. t_ms: trace: first fault of the run, ms after the
 * restore; classify: 0.
 *
 * Decoding (dp_hotset_decode) is pure and checks everything above. Checking a
 * hot set against a checkpoint (dp_hotset_check) is pure too, given the
 * checkpoint's identity: the identity must be equal, every pid must be a task
 * of the checkpoint, every page of every run in one of its lazy ranges. */
#ifndef DP_HOTSET_H
#define DP_HOTSET_H

#include <stddef.h>
#include <stdint.h>

#include "cpid.h"
#include "image.h"
#include "util.h"

#define DP_HOTSET_MAGIC     0x53485044u
#define DP_HOTSET_VERSION   1
#define DP_HOTSET_HDR       80
#define DP_HOTSET_TASK_REC  8
#define DP_HOTSET_RUN_REC   24
#define DP_HOTSET_SUM       16
#define DP_HOTSET_MAX_TASKS 65536u
#define DP_HOTSET_MAX_RUNS  (1u << 22)
#define DP_HOTSET_MAX_VADDR (1ull << 57)
#define DP_HOTSET_MAX_BYTES ((size_t)DP_HOTSET_HDR + DP_HOTSET_TASK_REC * DP_HOTSET_MAX_TASKS + \
                             (size_t)DP_HOTSET_RUN_REC * DP_HOTSET_MAX_RUNS + DP_HOTSET_SUM)

#define DP_HOTSET_FILE       "distriproc-hotset.bin"   /* checkpoint --classify */
#define DP_HOTSET_JSON       "distriproc-hotset.json"
#define DP_TRACE_PREFIX      "distriproc-trace-"       /* + created-us.bin, stored by the page server */
#define DP_MERGED_FILE       "distriproc-merged.bin"

enum dp_hotset_source {
    DP_HS_CLASSIFY = 1,
    DP_HS_TRACE = 2,
    DP_HS_MERGED = 3,
};
const char *dp_hotset_source_name(uint8_t source);

struct dp_hs_run {
    uint64_t vaddr;
    uint32_t nr_pages;
    uint32_t score;
    uint32_t t_ms;
};

struct dp_hs_task {
    int32_t pid;
    uint32_t nr_runs;
    struct dp_hs_run *runs;   /* points into dp_hotset.runs */
};

struct dp_hotset {
    uint16_t version;
    uint8_t source;
    uint8_t id[DP_CPID_SIZE];
    uint64_t created_us;
    uint32_t window_ms;
    uint32_t nr_tasks;
    uint32_t nr_runs;
    uint64_t total_pages;
    struct dp_hs_task *tasks;
    struct dp_hs_run *runs;   /* all runs, task by task */
    /* builder state */
    uint32_t cap_tasks, cap_runs;
};

/* ---- building (in memory; runs of the last added task only) ---- */
/* Zeroes hs and sets the header fields. */
void dp_hotset_init(struct dp_hotset *hs, uint8_t source, const uint8_t id[DP_CPID_SIZE], uint64_t created_us,
                    uint32_t window_ms);
/* Starts a task; runs added next belong to it. 0, or -1 (ENOMEM / limit). */
int dp_hotset_add_task(struct dp_hotset *hs, int32_t pid);
/* Appends a run to the last task; extends the previous run when it continues
 * it exactly (next page, same score), so a fault trace coalesces. */
int dp_hotset_add_run(struct dp_hotset *hs, uint64_t vaddr, uint32_t nr_pages, uint32_t score, uint32_t t_ms);
void dp_hotset_free(struct dp_hotset *hs);
const struct dp_hs_task *dp_hotset_find_task(const struct dp_hotset *hs, int32_t pid);

/* Checks the structural rules (the ones decode enforces); 0 or -1 with err. */
int dp_hotset_validate(const struct dp_hotset *hs, struct dp_err *err);

/* ---- the file form ---- */
/* Encodes (validating first). *out is malloc'd. */
int dp_hotset_encode(const struct dp_hotset *hs, uint8_t **out, size_t *len, struct dp_err *err);
/* Decodes and validates buf (name is used in messages). On success hs owns
 * its arrays (dp_hotset_free). */
int dp_hotset_decode(const char *name, const uint8_t *buf, size_t len, struct dp_hotset *hs, struct dp_err *err);

/* Pure: refuses a hot set that does not belong to the checkpoint cp whose
 * identity is cp_id (a different or stale checkpoint), names a pid cp does
 * not have, or has a page outside the task's lazy ranges. The message names
 * both identities. */
int dp_hotset_check(const char *name, const struct dp_hotset *hs, const struct dp_checkpoint *cp,
                    const uint8_t cp_id[DP_CPID_SIZE], struct dp_err *err);

/* I/O: reads path, decodes, computes cp's identity if cp_id is NULL, checks. */
int dp_hotset_load(const char *path, const struct dp_checkpoint *cp, const uint8_t *cp_id, struct dp_hotset *hs,
                   struct dp_err *err);
/* I/O: writes atomically (DIR/.name.tmp, fsync, rename, fsync DIR). */
int dp_hotset_write(const char *path, const struct dp_hotset *hs, struct dp_err *err);

/* Merges hot sets of one checkpoint (same identity, else an error): per
 * pid, the runs of in[0] in their order, then the pages of in[1] not yet
 * included, and so on (e.g. a trace first, then a classification). Tasks in
 * first-seen order. out gets source DP_HS_MERGED, the newest created time and
 * the largest window. */
int dp_hotset_merge(const struct dp_hotset *const *in, size_t n, struct dp_hotset *out, struct dp_err *err);

/* Pages in both (per pid), and the page count of each: precision =
 * both / pred_pages, recall = both / actual_pages. */
int dp_hotset_compare(const struct dp_hotset *pred, const struct dp_hotset *actual, uint64_t *both,
                      uint64_t *pred_pages, uint64_t *actual_pages);

/* Whether page addr of pid is in the hot set (binary search would need sorted
 * runs; this is linear per task and meant for tests and the bench). */
int dp_hotset_contains(const struct dp_hotset *hs, int32_t pid, uint64_t addr);

#endif
