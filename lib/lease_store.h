/* lease_store: the page server's write lease on disk (lib/lease.h has the
 * rules and the file format). It persists every change (written to a
 * temporary file, fsync'd, renamed over DIR/distriproc-lease, directory
 * fsync'd) before the change is answered, and starts a new write-back
 * generation when a new epoch is granted: the current log is renamed to
 * DIR/distriproc-overlay.log.epoch-N (N: the epoch whose writes it holds)
 * and kept; nothing acknowledged is deleted.
 *
 * Crash safety of a new generation: the lease is first written with the new
 * epoch and the old log_epoch (from then on the old holder is fenced), then
 * the log is moved aside, then the lease is written with log_epoch = epoch.
 * dp_lease_store_open finishes a move that a crash interrupted, before the
 * write-back log is opened, so the log always belongs to log_epoch. */
#ifndef DP_LEASE_STORE_H
#define DP_LEASE_STORE_H

#include <stdbool.h>
#include <stddef.h>

#include "lease.h"
#include "util.h"

struct dp_lease_store;

/* Loads DIR's lease (none yet: epoch 0, free) and finishes an interrupted
 * generation change. A damaged lease file fails (it decides who may write;
 * the server must not guess). */
int dp_lease_store_open(const char *dir, struct dp_lease_store **out, struct dp_err *err);
void dp_lease_store_close(struct dp_lease_store *s);
const struct dp_lease *dp_lease_store_get(const struct dp_lease_store *s);
/* Makes next the durable state. new_generation: the write-back log is moved
 * aside first (the caller has synced and closed it, and reopens it after);
 * archived gets the kept file's path ("" if the log was empty). On failure
 * the in-memory state stays as it was. */
int dp_lease_store_apply(struct dp_lease_store *s, const struct dp_lease *next, bool new_generation, char *archived,
                         size_t archived_len, struct dp_err *err);

#endif
