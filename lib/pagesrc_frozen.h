/* pagesrc_frozen: the page source of memory mode. The lazy pages of a
 * checkpoint dumped with `criu dump --lazy-pages` are not in its images
 * (DP_SEG_FILE_LIVE segments, lib/image.h) but in the dumped tree, which
 * stays stopped in a FROZEN freezer cgroup (lib/freezer.h). Attaching gives
 * each task of the checkpoint the descriptor of /proc/PID/mem of its frozen
 * process; the page server's locate then answers DATA at (that fd, address),
 * and reads it with pread, the same remote-VM read as process_vm_readv, but
 * through a descriptor that pins the address space: a recycled pid can never
 * be read by mistake. Nothing is copied to disk; write-backs still go to the
 * overlay, which shadows these pages. /proc/PID/mem cannot be sendfile'd:
 * memory mode copies every page (the secure channel copies anyway).
 *
 * Pids: the images name tasks by their pid in the tree's own pid namespace;
 * the frozen processes are found by the last NSpid field of each process in
 * the cgroup. Every task with live pages must be found, else attaching fails. */
#ifndef DP_PAGESRC_FROZEN_H
#define DP_PAGESRC_FROZEN_H

#include "image.h"
#include "util.h"

int dp_frozen_attach(struct dp_checkpoint *cp, const char *cgroup, struct dp_err *err);
/* Closes the descriptors attach opened. */
void dp_frozen_detach(struct dp_checkpoint *cp);

#endif
