/* uffdwin: vm.unprivileged_userfaultfd = 1 for the length of a restore; see uffdwin.h. */
#include "uffdwin.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

int dp_uffdwin_parse(const char *text, size_t len)
{
    if (len == 2 && text[1] != '\n')
        return -1;
    if (len != 1 && len != 2)
        return -1;
    return text[0] == '0' ? 0 : text[0] == '1' ? 1 : -1;
}

/* Reads the sysctl's current value. */
static int read_sysctl(struct dp_err *err)
{
    uint8_t *data;
    size_t len;
    if (dp_read_file(DP_UFFDWIN_SYSCTL, &data, &len, err) < 0)
        return -1;
    int v = dp_uffdwin_parse((const char *)data, len);
    free(data);
    if (v < 0)
        dp_err_set(err, "%s holds neither 0 nor 1", DP_UFFDWIN_SYSCTL);
    return v;
}

static int write_sysctl(int v, struct dp_err *err)
{
    int fd = open(DP_UFFDWIN_SYSCTL, O_WRONLY | O_CLOEXEC);
    char c = v ? '1' : '0';
    if (fd < 0 || dp_write_full(fd, &c, 1) < 0) {
        dp_err_set(err, "cannot set %s to %c: %s (needs root in the initial user namespace)",
                   DP_UFFDWIN_SYSCTL, c, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

int dp_uffdwin_open(struct dp_uffdwin *w, struct dp_err *err)
{
    w->lock_fd = open(DP_UFFDWIN_LOCK, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (w->lock_fd < 0) {
        dp_err_set(err, "cannot open the lock %s: %s", DP_UFFDWIN_LOCK, strerror(errno));
        return -1;
    }
    while (flock(w->lock_fd, LOCK_EX) < 0) {
        if (errno != EINTR) {
            dp_err_set(err, "cannot lock %s: %s", DP_UFFDWIN_LOCK, strerror(errno));
            close(w->lock_fd);
            return -1;
        }
    }
    w->prev = read_sysctl(err);
    /* A window whose holder died (SIGKILL) left "open 0" in the lock file and
     * the sysctl at 1: the value to put back is that 0, not the 1 found. */
    char rec[16] = "";
    ssize_t n = pread(w->lock_fd, rec, sizeof(rec) - 1, 0);
    if (n > 0 && strncmp(rec, "open 0\n", 7) == 0 && w->prev == 1) {
        dp_warn("a previous uffd-window did not close (its process died): %s will be set back to 0",
                DP_UFFDWIN_SYSCTL);
        w->prev = 0;
    }
    if (w->prev < 0) {
        close(w->lock_fd); /* unlocks */
        return -1;
    }
    /* Recorded before the value changes, so that a death at any point after
     * is noticed by the next window. */
    char mark[16];
    int len = snprintf(mark, sizeof(mark), "open %d\n", w->prev);
    if (ftruncate(w->lock_fd, 0) < 0 || pwrite(w->lock_fd, mark, (size_t)len, 0) != len) {
        dp_err_set(err, "cannot record the window in %s: %s", DP_UFFDWIN_LOCK, strerror(errno));
        close(w->lock_fd);
        return -1;
    }
    if (write_sysctl(1, err) < 0) {
        close(w->lock_fd);
        return -1;
    }
    return 0;
}

int dp_uffdwin_close(struct dp_uffdwin *w, struct dp_err *err)
{
    int rc = w->prev == 0 ? write_sysctl(0, err) : 0;
    /* Only once the value is back is the window recorded as closed. */
    if (rc == 0 && (ftruncate(w->lock_fd, 0) < 0 || pwrite(w->lock_fd, "closed\n", 7, 0) != 7)) {
        dp_err_set(err, "cannot record the closed window in %s: %s", DP_UFFDWIN_LOCK, strerror(errno));
        rc = -1;
    }
    close(w->lock_fd);
    w->lock_fd = -1;
    return rc;
}
