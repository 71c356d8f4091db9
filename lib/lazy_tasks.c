/* lazy_tasks: the processes behind the lazy-pages daemon's tasks (see
 * lazy_tasks.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include "inject.h"
#include "lazy_tasks.h"

#define PG DP_PAGE_SIZE
#define PM_PRESENT (1ull << 63)
#define PM_SWAPPED (1ull << 62)

/* ---- /proc readers ---- */

/* The argument and environment strings are what ps, pgrep -f and
 * /proc/PID/{cmdline,environ} read through the process's memory. */
int dp_proc_args_range(pid_t pid, uint64_t *lo, uint64_t *hi)
{
    long v[4];
    for (int i = 0; i < 4; i++)
        if (dp_proc_stat_field(pid, 48 + i, &v[i]) < 0)
            return -1;
    uint64_t a = (uint64_t)v[0] < (uint64_t)v[2] ? (uint64_t)v[0] : (uint64_t)v[2];
    uint64_t b = (uint64_t)v[1] > (uint64_t)v[3] ? (uint64_t)v[1] : (uint64_t)v[3];
    if (!a || b <= a) /* kernel thread, or fields hidden from us */
        return -1;
    a &= ~(PG - 1);
    b = (b + PG - 1) & ~(PG - 1);
    if ((b - a) / PG > DP_ARGS_MAX_PAGES)
        return -1;
    *lo = a;
    *hi = b;
    return 0;
}

/* A pid alone can name a different process after reuse; with its start
 * time it cannot. */
uint64_t dp_proc_start_time(pid_t pid)
{
    long v;
    return dp_proc_stat_field(pid, 22, &v) == 0 && v > 0 ? (uint64_t)v : 0;
}

/* An eviction that fails because its process just exited is no error. */
int dp_proc_exited(pid_t pid, uint64_t start)
{
    if (dp_inject_thread_exiting(pid, pid)) /* the leader's state is the process's */
        return 1;
    return start && dp_proc_start_time(pid) != start;
}

/* Reads the pagemap entries of n pages from addr on; 0 or -1. */
static int pagemap_read(pid_t pid, uint64_t addr, uint64_t *e, size_t n)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t want = (ssize_t)(n * sizeof(*e));
    ssize_t got = pread(fd, e, (size_t)want, (off_t)(addr / PG * sizeof(*e)));
    close(fd);
    return got == want ? 0 : -1;
}

/* Touching target memory through /proc/PID/mem is safe only where the page
 * is present: a missing page of a uffd-registered range fails the access
 * (EIO on this kernel, docs/budget.md), and process_vm_readv would fault
 * into the daemon's own uffd. */
int dp_pagemap_present(pid_t pid, uint64_t addr, uint64_t len)
{
    uint64_t e[64];
    for (uint64_t a = addr & ~(PG - 1); a < addr + len;) {
        size_t n = (size_t)((addr + len - a + PG - 1) / PG);
        if (n > DP_ARRAY_LEN(e))
            n = DP_ARRAY_LEN(e);
        if (pagemap_read(pid, a, e, n) < 0)
            return -1;
        for (size_t i = 0; i < n; i++)
            if (!(e[i] & PM_PRESENT))
                return 0;
        a += (uint64_t)n * PG;
    }
    return 1;
}

/* A probe page must hold nothing in the prober: then its madvise is a no-op
 * for the memory whoever turns out to own the uffd. */
int dp_pagemap_absent(pid_t pid, uint64_t addr)
{
    uint64_t e;
    if (pagemap_read(pid, addr & ~(PG - 1), &e, 1) < 0)
        return -1;
    return (e & (PM_PRESENT | PM_SWAPPED)) ? 0 : 1;
}

/* ---- the probe: which uffd belongs to this process? ---- */

struct probe_ctx {
    const struct dp_probe_ops *ops;
    pid_t pid;
};

static int probe_pump(void *arg)
{
    struct probe_ctx *c = arg;
    return c->ops->pump(c->ops->arg);
}

/* inject reads the rseq area and the stack through /proc/PID/mem: only
 * where the page is present (nothing of the prober is known to the daemon
 * yet, so presence is all it can go by). */
static int probe_ensure(void *arg, uint64_t addr, uint64_t len)
{
    struct probe_ctx *c = arg;
    return dp_pagemap_present(c->pid, addr, len) == 1 ? 0 : -1;
}

/* One stop, at most max_tries injected madvise calls, each on a page absent
 * from pid: the REMOVE event names the uffd of pid's mm. */
int dp_probe_process(pid_t pid, const struct dp_probe_ops *ops, int max_tries, struct dp_err *err)
{
    struct probe_ctx c = {.ops = ops, .pid = pid};
    struct dp_inject_ops iops = {.pump = probe_pump, .ensure = probe_ensure, .arg = &c, .exitkill = 1};
    struct dp_inject in;
    uint64_t start = dp_proc_start_time(pid);
    if (!start || dp_inject_open(&in, pid, &iops, err) < 0)
        return -2;
    int rc = dp_inject_stop(&in, err);
    if (rc < 0) { /* traced by another (criu detaching): not yet, never a kill */
        dp_inject_close(&in);
        return rc == DP_INJECT_TRACED || dp_proc_start_time(pid) != start ? -2 : -1;
    }
    int found = 0;
    for (int k = 0, tries = 0; tries < max_tries && k < 64 && found == 0; k++) {
        uint64_t a = ops->addr(ops->arg, k);
        if (!a)
            break;
        if (dp_pagemap_absent(pid, a) != 1)
            continue; /* present (or not readable) here: not a no-op for pid */
        tries++;
        uint64_t args[6] = {a, PG, MADV_DONTNEED, 0, 0, 0};
        long ret = 0;
        ops->arm(ops->arg, a);
        int rc = dp_inject_syscall(&in, __NR_madvise, args, &ret, err);
        int who = ops->disarm(ops->arg);
        if (rc < 0) {
            dp_inject_close(&in);
            return -1;
        }
        if (ret != 0)
            continue; /* ENOMEM: nothing mapped there in pid */
        found = who;   /* 0: mapped but not registered; -1: ambiguous, stop here */
    }
    if (dp_inject_resume(&in, 1, err) < 0) {
        dp_inject_close(&in);
        return -1;
    }
    dp_inject_close(&in);
    return found < 0 ? -2 : found;
}

/* ---- fork: what the child inherits for eviction ---- */

int dp_fork_inherit(const struct dp_lazymap *cmap, const struct dp_pmap *phash, struct dp_pmap *chash,
                    struct dp_evict *pol, int32_t owner, uint64_t pin_lo, uint64_t pin_hi, uint64_t now)
{
    for (size_t i = 0; i < cmap->n; i++) {
        const struct dp_lazy_region *reg = &cmap->r[i];
        for (uint64_t a = reg->start; a < reg->end; a += PG) {
            if (dp_pg_state(reg->pg[(a - reg->start) / PG]) != DP_PG_RESIDENT)
                continue;
            uint64_t img = reg->img + (a - reg->start);
            const struct dp_pmap_entry *pe = dp_pmap_find(phash, 0, img);
            if (!pe)
                continue; /* no hash (out of memory at install): never a victim */
            uint64_t v = pe->value, v2 = pe->value2;
            uint32_t aux = (pe->aux & DP_HASH_PUT_INFLIGHT) ? DP_HASH_ALWAYS_DIRTY : pe->aux & DP_HASH_ALWAYS_DIRTY;
            bool created;
            struct dp_pmap_entry *e = dp_pmap_get(chash, 0, img, &created);
            if (!e)
                return -1;
            e->value = v;
            e->value2 = v2;
            e->aux = aux;
            if (!(a >= pin_lo && a < pin_hi) && dp_evict_record_install(pol, owner, a, now) < 0)
                return -1;
        }
    }
    return 0;
}
