/* pageserver_hotset: the page server's keeper of a checkpoint's hot sets
 * (issue 7): stores uploaded fault traces beside the images and answers
 * GET_HOTSET, checking every file against the checkpoint (identity computed
 * once at start, pids, lazy ranges) before it is stored or sent. Called by
 * lib/pageserver.c; blocking file I/O on small files (a trace of a few MiB at
 * most), fsync'd before a PUT_TRACE is acknowledged. */
#ifndef DP_PAGESERVER_HOTSET_H
#define DP_PAGESERVER_HOTSET_H

#include <stddef.h>
#include <stdint.h>

#include "cpid.h"
#include "image.h"
#include "util.h"

#define DP_TRACES_KEPT 8   /* older traces are removed when a new one is stored */

struct dp_hotset_store;

int dp_hotset_store_open(const struct dp_checkpoint *cp, struct dp_hotset_store **out, struct dp_err *err);
void dp_hotset_store_close(struct dp_hotset_store *st);
const uint8_t *dp_hotset_store_identity(const struct dp_hotset_store *st);

/* PUT_TRACE payload. Returns DP_E_OK (and the trace's pages and runs, and
 * the file name it was stored as), or a DP_E_* code with err set. */
int dp_hotset_store_put_trace(struct dp_hotset_store *st, const uint8_t *p, size_t len, uint64_t *pages,
                              uint32_t *runs, char *name, size_t name_len, struct dp_err *err);
/* GET_HOTSET: DP_E_OK with *buf (malloc'd file bytes), or a DP_E_* code. */
int dp_hotset_store_get(struct dp_hotset_store *st, uint32_t which, uint8_t **buf, size_t *len, struct dp_err *err);

#endif
