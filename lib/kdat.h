/* kdat: keeps CRIU's kernel-feature cache for hosts whose /run is not a tmpfs.
 *
 * Every criu run first probes the kernel's features (userfaultfd, vDSO
 * layout, pidfds, ...), 35-60 ms here, on the critical path of both the freeze
 * and the restore. CRIU keeps the result in /run/criu.kdat and reads that file
 * wherever it lives, but it writes it only on a tmpfs, so that a reboot (a new
 * kernel) drops it. Where /run is a plain directory, as on this VM, criu
 * probes again on every run.
 *
 * So, once per boot, we let criu write its cache inside a private mount
 * namespace whose /run is a tmpfs (`criu check`), copy the file out to the real
 * /run, and write a stamp beside it naming the boot (the kernel's boot id) and
 * the bytes we wrote (their BLAKE2b hash). A cache whose stamp names another
 * boot or other bytes is replaced before criu can read it, so a cache never
 * outlives its kernel. A cache of another criu build is refused by criu itself (its own
 * magic), removed, and made again by the next run. Where /run is a tmpfs,
 * criu does all this itself and nothing here runs.
 *
 * dp_kdat_plan and the stamp codec are pure and unit-tested. */
#ifndef DP_KDAT_H
#define DP_KDAT_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define DP_KDAT_DIR "/run"
#define DP_KDAT_CACHE "criu.kdat"              /* CRIU's name (its KDAT_RUNDIR is /run) */
#define DP_KDAT_STAMP "distriproc-criu.kdat.boot"
#define DP_KDAT_BOOT_ID_LEN 36                 /* 8-4-4-4-12 hex digits and dashes */
#define DP_KDAT_MAX (64 * 1024)                /* CRIU's is under 1 KiB; anything larger is not one */

enum dp_kdat_action {
    DP_KDAT_CRIU_DOES_IT, /* /run is a tmpfs: criu keeps its own cache */
    DP_KDAT_KEEP,         /* the cache is of this boot and holds the bytes we wrote */
    DP_KDAT_MAKE,         /* none, or of another boot, or not ours: make it again */
};

/* What to do, from: whether /run is a tmpfs, the cache's bytes (NULL: no
 * cache), the stamp's text (NULL: no stamp) and this boot's id. Pure. */
enum dp_kdat_action dp_kdat_plan(int run_is_tmpfs, const uint8_t *cache, size_t cache_len, const char *stamp,
                                 const char *boot_id);

/* The stamp's text for boot_id and the cache's bytes: "<boot id> <hash hex>\n".
 * Returns its length, -1 if len is too small. Pure. */
int dp_kdat_stamp_format(char *out, size_t len, const char *boot_id, const uint8_t *cache, size_t cache_len);

/* Makes sure criu finds a cache of this boot (see above), running `criu check`
 * through the wrapper criu when one must be made. Returns 1 if it made one, 0
 * if there was nothing to do, -1 if it could not (err says why; criu still
 * works, only slower). */
int dp_kdat_prime(const char *criu, struct dp_err *err);

/* dp_kdat_prime once per process; a failure is a warning, once. */
void dp_kdat_prime_once(const char *criu);

#endif
