/* skeleton: which bytes of a checkpoint the destination needs before
 * `criu restore --lazy-pages` can start, i.e. everything but the lazy pages.
 *
 * CRIU's restore skips PE_LAZY pagemap entries but keeps reading the pages
 * file at offsets that count them (criu/pagemap.c advances its offset over
 * every PRESENT entry it skips). So a pages file is sent as its full size plus
 * the extents that are not lazy data; the receiver writes them into a sparse
 * file of that size. Every other file (and every file of a pre-dump parent
 * directory that is not a task's pages file) is sent whole.
 * Names are relative to the images directory; parent levels appear as
 * "parent/NAME", "parent/parent/NAME" (real directories on the receiver). */
#ifndef DP_SKELETON_H
#define DP_SKELETON_H

#include <stddef.h>
#include <stdint.h>

#include "image.h"
#include "util.h"

struct dp_extent {
    uint64_t offset, length;
};

struct dp_skeleton_file {
    char name[512];
    uint64_t size;                       /* the file's full size */
    struct dp_extent *extents;           /* sorted, disjoint, not adjacent */
    size_t nr_extents;
    uint64_t send_bytes;                 /* sum of the extents */
    int sparse;                          /* a pages file with lazy data left out */
};

/* One file found in the images directory (or a parent level). */
struct dp_dir_entry {
    char name[512];                      /* relative, as in dp_skeleton_file */
    uint64_t size;
};

/* Pure: the extents of cp->files[file] that hold data CRIU reads eagerly:
 * every page of a task whose own pagemap entry is not PE_LAZY (and, through
 * PE_PARENT entries, the parents' pages those entries resolve to). */
int dp_skeleton_pages_extents(const struct dp_checkpoint *cp, int32_t file, struct dp_extent **extents,
                              size_t *nr, struct dp_err *err);

/* Pure: the plan for a directory listing (regular files only). CRIU's logs
 * (*.log) and DistriProc's own files (distriproc-*: write-back log, hot sets,
 * traces, each served by its own message) are left out. */
int dp_skeleton_plan_listing(const struct dp_checkpoint *cp, const struct dp_dir_entry *listing, size_t n,
                             struct dp_skeleton_file **files, size_t *nr_files, struct dp_err *err);

/* Lists cp->dir and its parent chain, then plans. */
int dp_skeleton_plan(const struct dp_checkpoint *cp, struct dp_skeleton_file **files, size_t *n,
                     struct dp_err *err);
void dp_skeleton_free(struct dp_skeleton_file *files, size_t n);
/* send: bytes to transfer; total: bytes of all files in the images. */
void dp_skeleton_totals(const struct dp_skeleton_file *files, size_t n, uint64_t *send, uint64_t *total);

/* The receiver's side, locally: writes the planned bytes of src_dir into
 * dst_dir (created; parent levels become real directories; pages files
 * become sparse files of their full size). */
int dp_skeleton_write_local(const char *src_dir, const struct dp_skeleton_file *files, size_t n,
                            const char *dst_dir, struct dp_err *err);

#endif
