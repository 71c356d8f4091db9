#include "kdat.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/magic.h>

#include <sodium.h>

#include "criu.h"

#define STAMP_MAX 128
#define HASH_BYTES 16
#define CHECK_TIMEOUT_NS (30ull * 1000000000ull)
#define LOCK_NAME "distriproc-criu.kdat.lock"

/* ---- pure ----------------------------------------------------------------- */

int dp_kdat_stamp_format(char *out, size_t len, const char *boot_id, const uint8_t *cache, size_t cache_len)
{
    uint8_t h[HASH_BYTES];
    char hex[2 * HASH_BYTES + 1];
    crypto_generichash(h, sizeof(h), cache, cache_len, NULL, 0);
    sodium_bin2hex(hex, sizeof(hex), h, sizeof(h));
    int n = snprintf(out, len, "%s %s\n", boot_id, hex);
    return n < 0 || (size_t)n >= len ? -1 : n;
}

enum dp_kdat_action dp_kdat_plan(int run_is_tmpfs, const uint8_t *cache, size_t cache_len, const char *stamp,
                                 const char *boot_id)
{
    if (run_is_tmpfs)
        return DP_KDAT_CRIU_DOES_IT;
    if (!cache || !stamp)
        return DP_KDAT_MAKE;
    char want[STAMP_MAX];
    if (dp_kdat_stamp_format(want, sizeof(want), boot_id, cache, cache_len) < 0)
        return DP_KDAT_MAKE;
    return strcmp(stamp, want) == 0 ? DP_KDAT_KEEP : DP_KDAT_MAKE;
}

/* ---- making the cache ------------------------------------------------------- */

/* How the child failed: the step and its errno, sent back over a pipe. */
enum step {
    ST_OK,
    ST_UNSHARE,
    ST_PRIVATE,
    ST_OPEN_RUN,
    ST_MOUNT,
    ST_FORK,
    ST_TIMEOUT,
    ST_NO_CACHE,
    ST_TOO_BIG,
    ST_WRITE,
};

static const char *step_text(int step)
{
    switch (step) {
    case ST_UNSHARE: return "cannot make a private mount namespace (unshare)";
    case ST_PRIVATE: return "cannot make the mounts of that namespace private";
    case ST_OPEN_RUN: return "cannot open " DP_KDAT_DIR;
    case ST_MOUNT: return "cannot mount a tmpfs on " DP_KDAT_DIR " in a private mount namespace";
    case ST_FORK: return "cannot fork criu check";
    case ST_TIMEOUT: return "criu check did not finish within 30 s (killed)";
    case ST_NO_CACHE: return "criu check wrote no cache (does criu run? 'make deps' checks it)";
    case ST_TOO_BIG: return "the cache criu check wrote is not one (too large or unreadable)";
    case ST_WRITE: return "cannot write the cache into " DP_KDAT_DIR;
    default: return "unknown failure";
    }
}

static noreturn void child_fail(int report_fd, int step, int e)
{
    int msg[2] = {step, e};
    ssize_t w = write(report_fd, msg, sizeof(msg));
    (void)w;
    _exit(1);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = 0, .tv_nsec = ms * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Writes data as dir/name atomically (a temporary name, then rename).
 * Only system calls: the forked child uses it. Returns 0, or -1 with errno. */
static int put_file(int dir, const char *name, const char *tmp, const void *data, size_t len)
{
    unlinkat(dir, tmp, 0);
    int fd = openat(dir, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    if (write(fd, data, len) != (ssize_t)len) {
        int e = errno ? errno : EIO;
        close(fd);
        unlinkat(dir, tmp, 0);
        errno = e;
        return -1;
    }
    close(fd);
    if (renameat(dir, tmp, dir, name) < 0) {
        int e = errno;
        unlinkat(dir, tmp, 0);
        errno = e;
        return -1;
    }
    return 0;
}

/* The child: only system calls from here on (the caller may have threads). */
static noreturn void make_cache(const char *criu, int report_fd)
{
    if (unshare(CLONE_NEWNS) < 0)
        child_fail(report_fd, ST_UNSHARE, errno);
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        child_fail(report_fd, ST_PRIVATE, errno);
    int outer = open(DP_KDAT_DIR, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (outer < 0)
        child_fail(report_fd, ST_OPEN_RUN, errno);
    if (mount("distriproc-kdat", DP_KDAT_DIR, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=1m,mode=0755") < 0)
        child_fail(report_fd, ST_MOUNT, errno);
    pid_t pid = fork();
    if (pid < 0)
        child_fail(report_fd, ST_FORK, errno);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (null >= 0)
            dup2(null, STDERR_FILENO);
        char *argv[] = {(char *)criu, "check", NULL};
        dp_criu_exec(criu, argv, -1, null);
    }
    int status;
    uint64_t waited = 0;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (waited >= CHECK_TIMEOUT_NS) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            child_fail(report_fd, ST_TIMEOUT, 0);
        }
        sleep_ms(5);
        waited += 5000000ull;
    }
    /* criu check's own verdict does not matter: it probes and saves the
     * cache before it checks anything. */
    static char buf[DP_KDAT_MAX];
    int fd = open(DP_KDAT_DIR "/" DP_KDAT_CACHE, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        child_fail(report_fd, ST_NO_CACHE, errno);
    ssize_t n = read(fd, buf, sizeof(buf));
    close(fd);
    if (n <= 0 || n == (ssize_t)sizeof(buf))
        child_fail(report_fd, ST_TOO_BIG, n < 0 ? errno : 0);
    if (put_file(outer, DP_KDAT_CACHE, DP_KDAT_CACHE ".distriproc-tmp", buf, (size_t)n) < 0)
        child_fail(report_fd, ST_WRITE, errno);
    _exit(0);
}

static ssize_t read_small(int dir, const char *name, void *out, size_t len)
{
    int fd = openat(dir, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, out, len);
    close(fd);
    return n;
}

/* What this host has now. */
struct facts {
    char boot_id[DP_KDAT_BOOT_ID_LEN + 1];
    char stamp[STAMP_MAX];
    int have_stamp;
    uint8_t cache[DP_KDAT_MAX];
    ssize_t cache_len; /* -1: none (or unreadable, or too large to be one) */
};

static int look(int dir, struct facts *f, struct dp_err *err)
{
    char b[64];
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, b, sizeof(b) - 1) : -1;
    if (fd >= 0)
        close(fd);
    if (n < DP_KDAT_BOOT_ID_LEN) {
        dp_err_set(err, "cannot read this boot's id from /proc/sys/kernel/random/boot_id");
        return -1;
    }
    memcpy(f->boot_id, b, DP_KDAT_BOOT_ID_LEN);
    f->boot_id[DP_KDAT_BOOT_ID_LEN] = '\0';
    n = read_small(dir, DP_KDAT_STAMP, f->stamp, sizeof(f->stamp) - 1);
    f->have_stamp = n >= 0;
    f->stamp[n > 0 ? n : 0] = '\0';
    f->cache_len = read_small(dir, DP_KDAT_CACHE, f->cache, sizeof(f->cache));
    if (f->cache_len == (ssize_t)sizeof(f->cache))
        f->cache_len = -1;
    return 0;
}

static enum dp_kdat_action plan_for(const struct facts *f)
{
    return dp_kdat_plan(0, f->cache_len >= 0 ? f->cache : NULL, f->cache_len >= 0 ? (size_t)f->cache_len : 0,
                        f->have_stamp ? f->stamp : NULL, f->boot_id);
}

/* Forks the child that has criu write its cache and copies it to /run. */
static int make(const char *criu, struct dp_err *err)
{
    int report[2];
    if (pipe2(report, O_CLOEXEC) < 0) {
        dp_err_set(err, "pipe: %s", strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        dp_err_set(err, "fork: %s", strerror(errno));
        close(report[0]);
        close(report[1]);
        return -1;
    }
    if (pid == 0) {
        close(report[0]);
        make_cache(criu, report[1]);
    }
    close(report[1]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    int msg[2] = {0, 0};
    ssize_t got = read(report[0], msg, sizeof(msg));
    close(report[0]);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (got == (ssize_t)sizeof(msg))
        dp_err_set(err, "%s%s%s", step_text(msg[0]), msg[1] ? ": " : "", msg[1] ? strerror(msg[1]) : "");
    else
        dp_err_set(err, "the helper process ended with status 0x%x", status);
    return -1;
}

int dp_kdat_prime(const char *criu, struct dp_err *err)
{
    struct statfs sf;
    if (statfs(DP_KDAT_DIR, &sf) < 0) {
        dp_err_set(err, "cannot look at %s: %s", DP_KDAT_DIR, strerror(errno));
        return -1;
    }
    if (sf.f_type == TMPFS_MAGIC)
        return 0;
    if (sodium_init() < 0) {
        dp_err_set(err, "libsodium failed to initialise");
        return -1;
    }
    int dir = open(DP_KDAT_DIR, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) {
        dp_err_set(err, "cannot open %s: %s", DP_KDAT_DIR, strerror(errno));
        return -1;
    }
    static struct facts f; /* 64 KiB: not on the stack */
    if (look(dir, &f, err) < 0) {
        close(dir);
        return -1;
    }
    if (plan_for(&f) == DP_KDAT_KEEP) {
        close(dir);
        return 0;
    }
    /* One maker at a time; the first one's cache serves the others. */
    int lock = openat(dir, LOCK_NAME, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock < 0 || flock(lock, LOCK_EX) < 0) {
        dp_err_set(err, "cannot lock %s/%s: %s", DP_KDAT_DIR, LOCK_NAME, strerror(errno));
        if (lock >= 0)
            close(lock);
        close(dir);
        return -1;
    }
    int rc = -1;
    if (look(dir, &f, err) < 0)
        goto out;
    if (plan_for(&f) == DP_KDAT_KEEP) {
        rc = 0;
        goto out;
    }
    /* Of another boot, or bytes nobody vouches for: criu must not read them,
     * whatever happens next. */
    if ((unlinkat(dir, DP_KDAT_STAMP, 0) < 0 && errno != ENOENT) ||
        (unlinkat(dir, DP_KDAT_CACHE, 0) < 0 && errno != ENOENT)) {
        dp_err_set(err, "cannot remove the stale %s/%s: %s", DP_KDAT_DIR, DP_KDAT_CACHE, strerror(errno));
        goto out;
    }
    if (make(criu, err) < 0)
        goto out;
    if (look(dir, &f, err) < 0)
        goto out;
    char stamp[STAMP_MAX];
    int sl = f.cache_len > 0 ? dp_kdat_stamp_format(stamp, sizeof(stamp), f.boot_id, f.cache, (size_t)f.cache_len)
                             : -1;
    if (sl < 0) {
        dp_err_set(err, "the cache copied to %s/%s cannot be read back", DP_KDAT_DIR, DP_KDAT_CACHE);
        goto out;
    }
    if (put_file(dir, DP_KDAT_STAMP, DP_KDAT_STAMP ".tmp", stamp, (size_t)sl) < 0) {
        dp_err_set(err, "cannot write %s/%s: %s", DP_KDAT_DIR, DP_KDAT_STAMP, strerror(errno));
        goto out;
    }
    rc = 1;
out:
    flock(lock, LOCK_UN);
    close(lock);
    close(dir);
    return rc;
}

void dp_kdat_prime_once(const char *criu)
{
    static int done;
    if (__atomic_exchange_n(&done, 1, __ATOMIC_SEQ_CST))
        return;
    struct dp_err err = {{0}};
    uint64_t t0 = dp_now_ns();
    int rc = dp_kdat_prime(criu, &err);
    if (rc > 0)
        dp_info("kept CRIU's kernel-feature cache for this boot in %s/%s (%s is not a tmpfs, where criu "
                "would keep it itself), in %.0f ms; criu runs skip the probing from now on",
                DP_KDAT_DIR, DP_KDAT_CACHE, DP_KDAT_DIR, (double)(dp_now_ns() - t0) / 1e6);
    else if (rc < 0)
        dp_warn("could not keep CRIU's kernel-feature cache in %s: %s. criu works without it, but probes "
                "the kernel on every run (~40 ms); fix the cause above, or mount a tmpfs on %s",
                DP_KDAT_DIR, err.msg, DP_KDAT_DIR);
}
