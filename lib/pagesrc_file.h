/* pagesrc_file: shared plumbing of the file-backed page sources: a queue of
 * completed fetches signalled through an eventfd. */
#ifndef DP_PAGESRC_FILE_H
#define DP_PAGESRC_FILE_H

#include <stddef.h>
#include <stdint.h>

struct dp_fetch;
struct dp_checkpoint;
struct dp_lazymap;
struct dp_err;

struct dp_fileq {
    int efd;
    struct dp_fetch *head, *tail;
};

int dp_fileq_init(struct dp_fileq *q);
void dp_fileq_complete(struct dp_fileq *q, struct dp_fetch *f);
void dp_fileq_process(struct dp_fileq *q);
void dp_fileq_close(struct dp_fileq *q);
/* pread exactly n bytes at off: 0 or -errno (-EIO on a short file). */
int dp_pread_full(int fd, void *buf, size_t n, uint64_t off);
/* The lazy map of task pid from a checkpoint's pagemap images (local
 * images, or a skeleton pulled from a store): lazy pages with data REMOTE,
 * eagerly restored ones RESIDENT, holes NONE. -1 with err. */
int dp_checkpoint_lazymap(const struct dp_checkpoint *cp, int32_t pid, struct dp_lazymap *map, struct dp_err *err);

#endif
