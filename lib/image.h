/* image: reads the CRIU images DistriProc needs (inventory, pstree, mm-PID,
 * pagemap-PID, pages-N) and answers "where is the page at this address of
 * this task": in a pages file at an offset, a zero page, or not lazy memory.
 *
 * Parsing (dp_image_parse_*) is pure: it works on byte buffers, never does I/O,
 * and reports malformed input with the file name and byte offset. The open/close
 * functions do the I/O around it.
 *
 * CONTRACT (other modules code against this; the image module owns the details):
 */
#ifndef DP_IMAGE_H
#define DP_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

/* pagemap entry flags, as in CRIU's images/pagemap.proto */
#define DP_PE_PARENT  (1u << 0) /* data lives in the parent (pre-dump) image */
#define DP_PE_LAZY    (1u << 1) /* may be restored lazily through userfaultfd */
#define DP_PE_PRESENT (1u << 2) /* data is in the pages file */

struct dp_vma {
    uint64_t start, end;     /* [start, end) */
    uint64_t pgoff;
    uint32_t prot, flags;    /* PROT_*, MAP_* */
    uint32_t status;         /* CRIU VMA_AREA_* bits */
    int64_t shmid;
};

/* One pagemap run: nr_pages pages from vaddr. For PRESENT runs that are not
 * PARENT, data_offset is the byte offset of the first page in the pages file. */
struct dp_page_run {
    uint64_t vaddr;
    uint32_t nr_pages;
    uint32_t flags;          /* DP_PE_* */
    uint64_t data_offset;
};

/* A lazy range: private anonymous memory CRIU will hand to the lazy-pages
 * daemon. Page-aligned, sorted, non-overlapping. */
struct dp_range {
    uint64_t start, end;
};

struct dp_task_image {
    int32_t pid, ppid, pgid, sid;     /* as dumped (pids inside the pid ns) */
    int32_t *threads; size_t nr_threads;
    struct dp_vma *vmas; size_t nr_vmas;
    struct dp_page_run *runs; size_t nr_runs;   /* sorted by vaddr */
    struct dp_range *lazy; size_t nr_lazy;       /* lazy ranges, sorted */
    uint32_t pages_id;                /* N of pages-N.img */
    char pages_path[4096];
    int pages_fd;                     /* open O_RDONLY, -1 if none */
    uint64_t lazy_bytes;              /* sum of lazy ranges */
};

struct dp_checkpoint {
    char dir[4096];
    struct dp_task_image *tasks; size_t nr_tasks;  /* tasks[0] is the root */
    uint64_t total_vma_bytes, lazy_bytes, image_bytes;
};

enum dp_page_kind {
    DP_PAGE_NOT_LAZY = 0,  /* address is not in a lazy range of this task */
    DP_PAGE_ZERO,          /* lazy, but never held data (no pagemap entry, or a hole) */
    DP_PAGE_DATA,          /* lazy, data at (fd, offset) */
};

struct dp_page_loc {
    enum dp_page_kind kind;
    int fd;
    uint64_t offset;
    uint32_t run_pages_left; /* pages from this one to the end of its run, same kind */
};

int dp_checkpoint_open(const char *dir, struct dp_checkpoint **out, struct dp_err *err);
void dp_checkpoint_close(struct dp_checkpoint *cp);
const struct dp_task_image *dp_checkpoint_find_task(const struct dp_checkpoint *cp, int32_t pid);
/* vaddr must be page aligned. */
void dp_task_locate(const struct dp_task_image *task, uint64_t vaddr, struct dp_page_loc *loc);

#endif
