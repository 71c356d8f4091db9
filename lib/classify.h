/* classify: hot/cold classification of a running process tree, the technique
 * of the original proposal: write 1 to /proc/PID/clear_refs (the kernel
 * clears the accessed bits of every page), let the workload run, then read
 * "Referenced:" per mapping from /proc/PID/smaps.
 *
 * What this kernel offers, checked: smaps' Referenced is per mapping; there is
 * no finer external per-page signal (no idle-page tracking, no soft-dirty,
 * no MGLRU; /proc/PID/pagemap says present/swapped but not young, and
 * /proc/kpageflags' REFERENCED is the folio flag, which CPU accesses to
 * anonymous memory do not set). So classification is per mapping; per-page
 * order comes from a recorded fault trace (the daemon) or the page server's
 * access log, and a merged hot set puts those pages first.
 *
 * Sampling (tree walk, clear_refs, smaps) does I/O; building the hot set from
 * a sample and a checkpoint is pure. */
#ifndef DP_CLASSIFY_H
#define DP_CLASSIFY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "hotset.h"
#include "image.h"
#include "util.h"

struct dp_smaps_vma {
    uint64_t start, end;
    uint64_t rss_kb, referenced_kb, anon_kb;
    char perms[5];
};

/* Parses the text of /proc/PID/smaps. */
int dp_smaps_parse(const char *text, size_t len, struct dp_smaps_vma **vmas, size_t *nr, struct dp_err *err);

struct dp_classify_task {
    pid_t host_pid;      /* as this shell sees it */
    int32_t pid;         /* inside its innermost pid namespace (what CRIU records) */
    struct dp_smaps_vma *vmas;
    size_t nr_vmas;
};

struct dp_classify {
    struct dp_classify_task *tasks;
    size_t nr_tasks;
    double seconds;      /* how long the workload ran between clear and sample */
};

/* The root and every descendant (children of every thread), root first. */
int dp_classify_tree(pid_t root, pid_t **pids, size_t *nr, struct dp_err *err);
/* Writes "1" to /proc/PID/clear_refs of every pid. */
int dp_classify_clear(const pid_t *pids, size_t nr, struct dp_err *err);
/* Reads smaps and the namespace pid of every pid; a task that exited in the
 * meantime is left out. */
int dp_classify_sample(const pid_t *pids, size_t nr, struct dp_classify *out, struct dp_err *err);
void dp_classify_free(struct dp_classify *c);

/* Builds the hot set of checkpoint cp (identity id) from a sample: per task,
 * every lazy range whose mapping had Referenced >= threshold * Rss (and > 0)
 * is hot, mappings in falling order of that fraction (the score, permille),
 * and inside a mapping the pages that hold data, in address order. *json
 * (malloc'd) gets a summary: per mapping Rss, Referenced, score, hot. */
int dp_classify_build(const struct dp_classify *c, const struct dp_checkpoint *cp, const uint8_t id[DP_CPID_SIZE],
                      double threshold, uint64_t created_us, struct dp_hotset *hs, char **json, struct dp_err *err);

/* I/O: computes cp's identity, builds the hot set and writes it beside the
 * images: DIR/distriproc-hotset.bin and DIR/distriproc-hotset.json. *json
 * (malloc'd, may be NULL) gets the summary; *hot_pages the pages it holds. */
int dp_classify_store(const struct dp_classify *c, const struct dp_checkpoint *cp, double threshold, char **json,
                      uint64_t *hot_pages, struct dp_err *err);

#endif
