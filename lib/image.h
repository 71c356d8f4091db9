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

/* Image magics (criu/include/magic.h). Every image but inventory.img starts
 * with IMG_COMMON_MAGIC (IMG_SERVICE_MAGIC for stats and irmap-cache) and then
 * its own magic; images of version 1 have no common magic. pages-N.img is raw. */
#define DP_IMG_COMMON_MAGIC  0x54564319u
#define DP_IMG_SERVICE_MAGIC 0x55105940u
#define DP_INVENTORY_MAGIC   0x58313116u
#define DP_PSTREE_MAGIC      0x50273030u
#define DP_PAGEMAP_MAGIC     0x56084025u
#define DP_MM_MAGIC          0x57492820u
#define DP_IMG_VERSION_V1    1u   /* no common magic */
#define DP_IMG_VERSION_V1_1  2u   /* what CRIU 4.x writes */

/* CRIU VMA_AREA_* status bits (criu/include/image.h) that decide laziness */
#define DP_VMA_AREA_REGULAR  (1u << 0)
#define DP_VMA_AREA_STACK    (1u << 1)
#define DP_VMA_AREA_VSYSCALL (1u << 2)
#define DP_VMA_AREA_VDSO     (1u << 3)
#define DP_VMA_AREA_HEAP     (1u << 5)
#define DP_VMA_FILE_PRIVATE  (1u << 6)
#define DP_VMA_ANON_PRIVATE  (1u << 9)
#define DP_VMA_AREA_VVAR     (1u << 12)
#define DP_VMA_AREA_AIORING  (1u << 13)
#define DP_VMA_AREA_SHSTK    (1u << 15)
#define DP_VMA_AREA_GUARD    (1u << 16)
#define DP_VMA_EXT_PLUGIN    (1u << 27)

struct dp_vma {
    uint64_t start, end;     /* [start, end) */
    uint64_t pgoff;
    uint32_t prot, flags;    /* PROT_*, MAP_* */
    uint32_t status;         /* CRIU VMA_AREA_* bits */
    int64_t shmid;
};

/* One pagemap run: nr_pages pages from vaddr. For PRESENT runs that are not
 * PARENT, data_offset is the byte offset of the first page in the pages file.
 * (Every PRESENT run gets the offset CRIU's reader would be at: pages are
 * stored back to back in pagemap order, lazy or not.) */
struct dp_page_run {
    uint64_t vaddr;
    uint32_t nr_pages;
    uint32_t flags;          /* DP_PE_* */
    uint64_t data_offset;
};

/* A lazy range: private anonymous memory CRIU will hand to the lazy-pages
 * daemon. Page-aligned, sorted, non-overlapping; one per VMA (adjacent VMAs
 * are not merged, because a UFFDIO_COPY must stay inside one VMA). */
struct dp_range {
    uint64_t start, end;
};

/* Where the data of a task's pages really is, after following PE_PARENT
 * entries down the pre-dump chain: file is an index into dp_checkpoint.files
 * (fd is that file's descriptor), or -1 for pages that have an entry but no
 * data (a hole: they read as zeros). flags are the task's own entry flags. */
#define DP_SEG_FILE_LIVE (-2) /* a --lazy-pages entry: the data is in the dumped tree's memory */
struct dp_page_seg {
    uint64_t vaddr;
    uint64_t nr_pages;
    uint64_t offset;
    int32_t file;
    int fd;
    uint32_t flags;
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
    struct dp_page_seg *segs; size_t nr_segs;   /* resolved data, sorted */
    uint64_t data_pages;              /* pages with data in the images */
    uint64_t lazy_data_pages;         /* of those, inside lazy ranges */
    uint64_t live_pages;              /* pages whose data is in the dumped tree (--lazy-pages) */
    int live_fd;                      /* /proc/PID/mem of the frozen task (pagesrc_frozen.h), or -1:
                                       * such pages then read as ZERO, so callers refuse them first */
};

/* A pages file the checkpoint reads: the top directory's pages-N.img files
 * and, with a pre-dump chain, the parents' ("parent/pages-N.img", ...). */
struct dp_pages_file {
    char name[512];                   /* relative to dp_checkpoint.dir */
    char path[4096];
    int fd;
    uint64_t size;
    uint32_t depth;                   /* 0 = top directory, 1 = parent, ... */
};

struct dp_checkpoint {
    char dir[4096];
    struct dp_task_image *tasks; size_t nr_tasks;  /* tasks[0] is the root */
    uint64_t total_vma_bytes, lazy_bytes, image_bytes;
    uint32_t img_version;
    struct dp_pages_file *files; size_t nr_files;
    uint32_t parent_depth;            /* length of the pre-dump chain */
    uint64_t live_pages;              /* sum of the tasks' live_pages */
};

enum dp_page_kind {
    DP_PAGE_NOT_LAZY = 0,  /* address is not in a lazy range of this task */
    DP_PAGE_ZERO,          /* lazy, but never held data (no pagemap entry, or a hole) */
    DP_PAGE_DATA,          /* lazy, data at (fd, offset) */
};
/* DATA is answered for every page of a lazy range that has data in the images.
 * Most come from PE_LAZY entries; a few may come from entries CRIU restores
 * eagerly (PE_PARENT ones, or pages is_stack() kept non-lazy). Those are
 * resident after the restore, so they fault only after being dropped, which
 * the daemon sees as a REMOVE event and must answer with zeros itself. */

struct dp_page_loc {
    enum dp_page_kind kind;
    int fd;
    uint64_t offset;
    uint32_t run_pages_left; /* pages from this one to the end of its run, same kind */
};

int dp_checkpoint_open(const char *dir, struct dp_checkpoint **out, struct dp_err *err);
void dp_checkpoint_close(struct dp_checkpoint *cp);
/* -1 with err when the checkpoint was dumped with --lazy-pages (its data is
 * in the dumped tree, lib/pagesrc_frozen.h): for readers of image data only. */
int dp_checkpoint_check_images_only(const struct dp_checkpoint *cp, struct dp_err *err);
const struct dp_task_image *dp_checkpoint_find_task(const struct dp_checkpoint *cp, int32_t pid);
/* vaddr must be page aligned. O(log n): binary searches over the task's lazy
 * ranges and data segments. A DATA or ZERO answer never runs past the end of
 * its lazy range (so never across a VMA boundary). */
void dp_task_locate(const struct dp_task_image *task, uint64_t vaddr, struct dp_page_loc *loc);

/* ---- Pure parsers (no I/O). name is the file name used in error messages:
 * "NAME: at byte N: what is wrong". Arrays are malloc'd; the caller frees. */

/* Checks the magic header; *body is where the entries start. */
int dp_image_parse_header(const char *name, const uint8_t *buf, size_t len, uint32_t magic,
                          uint32_t img_version, size_t *body, struct dp_err *err);
/* The next framed entry from *pos (advanced past it): 1 with msg on its
 * message, 0 at a clean end, -1 with err on a truncated one. */
struct dp_pb_reader;
int dp_image_next_entry(const char *name, const uint8_t *buf, size_t len, size_t *pos, struct dp_pb_reader *msg,
                        struct dp_err *err);
int dp_image_parse_inventory(const char *name, const uint8_t *buf, size_t len,
                             uint32_t *img_version, struct dp_err *err);
/* Tasks get pid/ppid/pgid/sid/threads; everything else zeroed, pages_fd -1. */
int dp_image_parse_pstree(const char *name, const uint8_t *buf, size_t len, uint32_t img_version,
                          struct dp_task_image **tasks, size_t *nr, struct dp_err *err);
int dp_image_parse_mm(const char *name, const uint8_t *buf, size_t len, uint32_t img_version,
                      struct dp_vma **vmas, size_t *nr, struct dp_err *err);
/* Runs sorted and non-overlapping (else an error); *data_bytes is the number
 * of bytes the PRESENT runs occupy in the pages file. */
int dp_image_parse_pagemap(const char *name, const uint8_t *buf, size_t len, uint32_t img_version,
                           uint32_t *pages_id, struct dp_page_run **runs, size_t *nr,
                           uint64_t *data_bytes, struct dp_err *err);

/* CRIU's rule for memory restored through userfaultfd: private anonymous, not
 * locked, not hugetlb, not vdso/vvar/vsyscall (vma_entry_can_be_lazy), and
 * premapped by the restorer (a private VMA not taken by a plugin). */
int dp_vma_is_lazy(const struct dp_vma *vma);
int dp_image_lazy_ranges(const struct dp_vma *vmas, size_t nr, struct dp_range **ranges,
                         size_t *nr_ranges, uint64_t *bytes, struct dp_err *err);
/* Turns one level's runs into data segments. PRESENT runs point into `file`
 * (index) at their data_offset; PARENT runs take their pieces from `parent`
 * (the resolved segments of the same task one level down; NULL if none);
 * a PARENT run the parent does not cover is an error; a LAZY run without
 * PRESENT (dumped with --lazy-pages) becomes a DP_SEG_FILE_LIVE segment. */
int dp_image_resolve(const char *name, const struct dp_page_run *runs, size_t nr, int32_t file,
                     const struct dp_page_seg *parent, size_t nr_parent,
                     struct dp_page_seg **segs, size_t *nr_segs, struct dp_err *err);

#endif
