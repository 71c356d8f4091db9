/* perm: ownership and mode checks for keys, work directories and local
 * sockets, and opening log files without following planted symlinks. */
#include "perm.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- pure checks on metadata ---- */

/* A key is a secret: only its owner may read it, and the owner must be us (a
 * key someone else owns could be swapped or read by them). */
int dp_perm_key_ok(const char *path, mode_t mode, uid_t owner, uid_t me, struct dp_err *err)
{
    if (!S_ISREG(mode)) {
        dp_err_set(err, "key file %s is not a regular file; create one with 'distriproc keygen FILE'", path);
        return -1;
    }
    if (owner != me) {
        dp_err_set(err, "key file %s belongs to uid %u, not to uid %u that runs distriproc: refusing it; "
                   "run 'chown %u %s' or create your own with 'distriproc keygen FILE'",
                   path, (unsigned)owner, (unsigned)me, (unsigned)me, path);
        return -1;
    }
    if (mode & 077) {
        dp_err_set(err, "key file %s is readable or writable by group or others (mode %03o): refusing it; "
                   "run 'chmod 600 %s' (and make a new key with 'distriproc keygen --force %s' if others may "
                   "have read it)", path, (unsigned)(mode & 0777), path, path);
        return -1;
    }
    return 0;
}

/* A work directory holds sockets, logs and pid files that a root daemon
 * trusts: nobody else may own it or add entries (a planted symlink or
 * socket) to it. */
int dp_perm_dir_ok(const char *path, mode_t mode, uid_t owner, uid_t me, struct dp_err *err)
{
    if (!S_ISDIR(mode)) {
        dp_err_set(err, "work directory %s exists and is not a directory; pick another --workdir", path);
        return -1;
    }
    if (owner != me) {
        dp_err_set(err, "work directory %s belongs to uid %u, not to uid %u that runs distriproc: refusing to "
                   "use it; pick another --workdir (a new one is created with mode 0700)",
                   path, (unsigned)owner, (unsigned)me);
        return -1;
    }
    if (mode & 022) {
        dp_err_set(err, "work directory %s is writable by group or others (mode %03o), so anyone could plant "
                   "files in it: refusing to use it; run 'chmod 700 %s' or pick another --workdir",
                   path, (unsigned)(mode & 0777), path);
        return -1;
    }
    return 0;
}

/* Root may do anything to us anyway; any other user is a stranger. */
int dp_perm_peer_ok(uid_t peer, uid_t me) { return peer == me || peer == 0; }

/* ---- I/O ---- */

/* The kernel's record of who connected (SO_PEERCRED) cannot be forged by the
 * peer, unlike anything it sends. */
int dp_perm_peer_check(int fd, const char *what)
{
    struct ucred cr;
    socklen_t len = sizeof(cr);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0 || len != sizeof(cr)) {
        dp_warn("refused a connection on %s: cannot read the peer's credentials: %s", what, strerror(errno));
        return -1;
    }
    if (!dp_perm_peer_ok(cr.uid, geteuid())) {
        dp_warn("refused a connection on %s from uid %u (pid %d): only the daemon's user (uid %u) and root "
                "may use it", what, (unsigned)cr.uid, (int)cr.pid, (unsigned)geteuid());
        return -1;
    }
    return 0;
}

/* O_NOFOLLOW refuses a symlink as the last component; O_NONBLOCK keeps a
 * planted FIFO from hanging us before fstat sees it is not a file. */
int dp_open_log(const char *path, struct dp_err *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0600);
    if (fd < 0) {
        dp_err_set(err, "cannot open log %s: %s%s", path, strerror(errno),
                   errno == ELOOP ? " (it is a symlink, which is never followed: remove it)" : "");
        return -1;
    }
    struct stat sb;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        dp_err_set(err, "cannot use log %s: it is not a regular file; remove it", path);
        close(fd);
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return fd;
}

/* For result files in a work directory: the same refusal of a planted
 * symlink as dp_open_log, for callers that write with stdio. */
FILE *dp_fopen_private(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0600);
    if (fd < 0)
        return NULL;
    FILE *f = fdopen(fd, "w");
    if (!f) {
        int e = errno;
        close(fd);
        errno = e;
    }
    return f;
}
