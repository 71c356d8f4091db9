/* pipemax: fs.pipe-max-size for a lazy dump, and its descriptor budget; see pipemax.h. */
#include "pipemax.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <unistd.h>

/* ---- pure ------------------------------------------------------------------ */

/* Strict: digits only, then at most one newline; no overflow. */
int dp_pipemax_parse(const char *text, size_t len, uint64_t *out)
{
    if (len && text[len - 1] == '\n')
        len--;
    if (len == 0 || len > 19)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(text[i] - '0');
    }
    *out = v;
    return 0;
}

/* The capability check the kernel makes for F_SETPIPE_SZ, read from status text. */
int dp_cap_effective(const char *status, int cap)
{
    const char *p = strstr(status, "\nCapEff:");
    if (!p || cap < 0 || cap > 63)
        return -1;
    p += 8;
    while (*p == ' ' || *p == '\t')
        p++;
    uint64_t v = 0;
    int n = 0;
    for (; n < 16; n++, p++) {
        int d = *p >= '0' && *p <= '9' ? *p - '0' : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10 : -1;
        if (d < 0)
            break;
        v = v << 4 | (uint64_t)d;
    }
    if (n == 0 || (*p != '\n' && *p != '\0'))
        return -1;
    return (int)(v >> cap & 1);
}

/* Two descriptors per MiB after a fixed reserve. */
uint64_t dp_pipemax_max_lazy_bytes(uint64_t nofile)
{
    if (nofile <= DP_PIPEMAX_FD_RESERVE)
        return 0;
    return (nofile - DP_PIPEMAX_FD_RESERVE) / DP_PIPEMAX_FDS_PER_MIB * (1ULL << 20);
}

/* ---- I/O ------------------------------------------------------------------- */

/* 1 if this process holds CAP_SYS_RESOURCE (then no sysctl needs raising). */
static int have_sys_resource(void)
{
    uint8_t *data;
    size_t len;
    struct dp_err e;
    if (dp_read_file("/proc/self/status", &data, &len, &e) < 0)
        return 0;
    int r = dp_cap_effective((const char *)data, DP_CAP_SYS_RESOURCE);
    free(data);
    return r == 1;
}

static int read_sysctl(uint64_t *v, struct dp_err *err)
{
    uint8_t *data;
    size_t len;
    if (dp_read_file(DP_PIPEMAX_SYSCTL, &data, &len, err) < 0)
        return -1;
    int rc = dp_pipemax_parse((const char *)data, len, v);
    free(data);
    if (rc < 0)
        dp_err_set(err, "%s does not hold a number", DP_PIPEMAX_SYSCTL);
    return rc;
}

static int write_sysctl(uint64_t v, struct dp_err *err)
{
    char text[24];
    int len = snprintf(text, sizeof(text), "%" PRIu64 "\n", v);
    int fd = open(DP_PIPEMAX_SYSCTL, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || dp_write_full(fd, text, (size_t)len) < 0) {
        dp_err_set(err, "cannot set %s to %" PRIu64 ": %s (needs root in the initial user namespace, or run "
                   "with CAP_SYS_RESOURCE)", DP_PIPEMAX_SYSCTL, v, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

/* Writes the lock file's record ("open PREV" or "closed"). */
static int record(int fd, const char *text, struct dp_err *err)
{
    size_t len = strlen(text);
    if (ftruncate(fd, 0) < 0 || pwrite(fd, text, len, 0) != (ssize_t)len) {
        dp_err_set(err, "cannot record the window in %s: %s", DP_PIPEMAX_LOCK, strerror(errno));
        return -1;
    }
    return 0;
}

int dp_pipemax_open(struct dp_pipemax *w, uint64_t need, struct dp_err *err)
{
    *w = (struct dp_pipemax){.lock_fd = -1};
    if (have_sys_resource())
        return 0;
    w->lock_fd = open(DP_PIPEMAX_LOCK, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (w->lock_fd < 0) {
        dp_err_set(err, "cannot open the lock %s: %s", DP_PIPEMAX_LOCK, strerror(errno));
        return -1;
    }
    while (flock(w->lock_fd, LOCK_EX) < 0) {
        if (errno != EINTR) {
            dp_err_set(err, "cannot lock %s: %s", DP_PIPEMAX_LOCK, strerror(errno));
            goto fail;
        }
    }
    uint64_t cur;
    if (read_sysctl(&cur, err) < 0)
        goto fail;
    /* A window whose holder died left "open PREV" and the raised value. */
    char rec[40] = "";
    ssize_t n = pread(w->lock_fd, rec, sizeof(rec) - 1, 0);
    uint64_t dead_prev;
    if (n > 5 && strncmp(rec, "open ", 5) == 0 && dp_pipemax_parse(rec + 5, (size_t)n - 5, &dead_prev) == 0 &&
        dead_prev != cur) {
        dp_warn("a previous pipe-max-size window did not close (its process died): %s will be put back to "
                "%" PRIu64, DP_PIPEMAX_SYSCTL, dead_prev);
        cur = dead_prev;
        w->raised = 1;
    }
    w->prev = cur;
    if (cur < need) {
        char mark[40];
        snprintf(mark, sizeof(mark), "open %" PRIu64 "\n", cur);
        /* Recorded before the value changes, so a death after is noticed. */
        if (record(w->lock_fd, mark, err) < 0 || write_sysctl(need, err) < 0)
            goto fail;
        w->raised = 1;
        dp_info("raised %s from %" PRIu64 " to %" PRIu64 " for the lazy dump (CRIU's page pipes; no "
                "CAP_SYS_RESOURCE); it is put back when the dump is done", DP_PIPEMAX_SYSCTL, cur, need);
    } else if (w->raised) {
        /* the dead window's value is put back at close; keep the record */
        char mark[40];
        snprintf(mark, sizeof(mark), "open %" PRIu64 "\n", cur);
        if (record(w->lock_fd, mark, err) < 0)
            goto fail;
    }
    return 0;
fail:
    close(w->lock_fd); /* unlocks */
    w->lock_fd = -1;
    return -1;
}

int dp_pipemax_close(struct dp_pipemax *w, struct dp_err *err)
{
    if (w->lock_fd < 0)
        return 0;
    int rc = w->raised ? write_sysctl(w->prev, err) : 0;
    /* Only once the value is back is the window recorded as closed. */
    if (rc == 0 && w->raised && record(w->lock_fd, "closed\n", err) < 0)
        rc = -1;
    if (rc == 0 && w->raised)
        dp_info("%s put back to %" PRIu64, DP_PIPEMAX_SYSCTL, w->prev);
    close(w->lock_fd);
    w->lock_fd = -1;
    w->raised = 0;
    return rc;
}

int dp_pipemax_check_size(uint64_t lazy_bytes, struct dp_err *err)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        dp_err_set(err, "getrlimit(RLIMIT_NOFILE): %s", strerror(errno));
        return -1;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit up = {rl.rlim_max, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            rl.rlim_cur = rl.rlim_max;
    }
    uint64_t max = dp_pipemax_max_lazy_bytes(rl.rlim_cur);
    if (lazy_bytes > max) {
        char a[32], b[32];
        dp_format_bytes(lazy_bytes, a, sizeof(a));
        dp_format_bytes(max, b, sizeof(b));
        dp_err_set(err, "a lazy dump of %s needs about %" PRIu64 " descriptors (CRIU holds ~%u per MiB in its "
                   "page pipes) but RLIMIT_NOFILE is %llu, enough for %s; raise the limit (ulimit -Hn, "
                   "fs.nr_open) or migrate with --from images", a,
                   lazy_bytes / (1 << 20) * DP_PIPEMAX_FDS_PER_MIB + DP_PIPEMAX_FD_RESERVE, DP_PIPEMAX_FDS_PER_MIB,
                   (unsigned long long)rl.rlim_cur, b);
        return -1;
    }
    return 0;
}
