/* rootfs: the identity of a container's root filesystem, as far as a restore
 * depends on it.
 *
 * A restored container runs the same code it ran at the checkpoint, from the
 * files of the destination's bundle: CRIU maps executables and libraries again
 * by path and reopens open files by path. So the manifest lists exactly those
 * files, with the path the container sees:
 *   - every file some task has mapped (executables, libraries, mapped data):
 *     size, mode and BLAKE2b-256 of the content;
 *   - every regular file some task has open: size and mode (CRIU itself
 *     refuses a different size; the content of a data file may legitimately
 *     be written to after the checkpoint only if it is shared storage).
 * Files on non-bind mounts (tmpfs, /proc, /dev) are left out: CRIU restores
 * tmpfs contents from the images. The manifest's digest is BLAKE2b-256 over
 * its canonical lines, sorted by path. It is written at the checkpoint into
 * the images (DP_ROOTFS_FILE, so the skeleton carries it to the destination)
 * and checked against the destination bundle before anything is started.
 *
 * Canonical form, JSON form, comparison: pure. Collecting from live tasks
 * and measuring a bundle: I/O. */
#ifndef DP_ROOTFS_H
#define DP_ROOTFS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "bundle.h"
#include "util.h"

#define DP_ROOTFS_FILE "container-rootfs.json"
#define DP_ROOTFS_MAX_FILES 8192
#define DP_ROOTFS_HASH 32

enum dp_rootfs_kind { DP_ROOTFS_MAPPED = 0, DP_ROOTFS_OPEN = 1 };

struct dp_rootfs_entry {
    char path[1024];               /* as the container sees it */
    int kind;                      /* enum dp_rootfs_kind */
    int missing;                   /* measured: no such file */
    uint64_t size;
    uint32_t mode;                 /* st_mode: type and permission bits */
    uint8_t hash[DP_ROOTFS_HASH];  /* MAPPED only */
};

struct dp_rootfs_manifest {
    struct dp_rootfs_entry *e;
    size_t n, cap;
    uint8_t digest[DP_ROOTFS_HASH];
};

/* Adds path (kind) unless present; a mapped entry replaces an open one.
 * Returns the entry or NULL (out of memory, too many, path too long). */
struct dp_rootfs_entry *dp_rootfs_add(struct dp_rootfs_manifest *m, const char *path, int kind);
/* Sorts by path and computes the digest. Pure. */
void dp_rootfs_finish(struct dp_rootfs_manifest *m);
/* JSON text (malloc'd). Pure. */
char *dp_rootfs_to_json(const struct dp_rootfs_manifest *m);
/* Parses JSON and checks that its digest matches its entries. Pure. */
int dp_rootfs_from_json(const char *text, size_t len, struct dp_rootfs_manifest *m, struct dp_err *err);
/* Differences of got against want, one "path: what" per line into report
 * (at most max lines listed); returns the number of differing files. Pure. */
size_t dp_rootfs_compare(const struct dp_rootfs_manifest *want, const struct dp_rootfs_manifest *got,
                         char *report, size_t len, size_t max);
void dp_rootfs_free(struct dp_rootfs_manifest *m);
/* Lowercase hex of a hash (2*DP_ROOTFS_HASH + 1 bytes). */
void dp_rootfs_hex(const uint8_t h[DP_ROOTFS_HASH], char *out);

/* The files the tree rooted at pid maps or has open, measured through
 * /proc/PID/root, keeping those b backs with host files. */
int dp_rootfs_collect(pid_t root, const struct dp_bundle_info *b, struct dp_rootfs_manifest *m,
                      struct dp_err *err);
/* Measures want's files in bundle b (as restoring from b would see them). */
int dp_rootfs_measure(const struct dp_bundle_info *b, const struct dp_rootfs_manifest *want,
                      struct dp_rootfs_manifest *got, struct dp_err *err);

#endif
