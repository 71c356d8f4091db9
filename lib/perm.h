/* perm: who may use DistriProc's local files and sockets.
 *
 * Keys, work directories and unix sockets are trusted only if they belong to
 * the user running DistriProc (or root, for sockets) and nobody else can write
 * (or, for keys, read) them. The checks on metadata are pure so they can be
 * unit-tested; the helpers below them do the I/O (fstat, SO_PEERCRED, open
 * with O_NOFOLLOW). */
#ifndef DP_PERM_H
#define DP_PERM_H

#include <stdio.h>
#include <sys/types.h>

#include "util.h"

/* ---- pure checks on metadata ---- */

/* 0 if a key file of this mode and owner may be used by uid me, else -1 with
 * err saying why and the command that fixes it (chmod 600, chown). */
int dp_perm_key_ok(const char *path, mode_t mode, uid_t owner, uid_t me, struct dp_err *err);
/* 0 if a work directory of this mode and owner may be used by uid me: a
 * directory, owned by me, not writable by group or others; else -1 with err. */
int dp_perm_dir_ok(const char *path, mode_t mode, uid_t owner, uid_t me, struct dp_err *err);
/* 1 if a local-socket peer running as uid peer may talk to us (uid me): the
 * same user, or root. */
int dp_perm_peer_ok(uid_t peer, uid_t me);

/* ---- I/O ---- */

/* Checks the credentials of the peer of a connected unix socket fd (the
 * socket named what, for the message). 0 if allowed; else warns (who was
 * refused and why) and returns -1; the caller closes fd. */
int dp_perm_peer_check(int fd, const char *what);
/* Opens (creating, mode 0600) a log file for appending without following a
 * symlink at path and only if it is a regular file. Returns the fd or -1
 * with err saying what to do. */
int dp_open_log(const char *path, struct dp_err *err);
/* Creates or truncates path for writing (mode 0600 if new) without following
 * a symlink at path: a stdio stream, or NULL with errno set. */
FILE *dp_fopen_private(const char *path);

#endif
