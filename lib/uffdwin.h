/* uffdwin: a window in which processes of a user namespace may create a
 * userfaultfd, for the lazy restore of a user-namespaced container.
 *
 * Why: CRIU (4.2.1) has each restored task call userfaultfd(2) itself, and
 * the kernel grants a userfaultfd that handles kernel-mode faults only to a
 * caller with CAP_SYS_PTRACE in the *initial* user namespace, or to anyone
 * when vm.unprivileged_userfaultfd is 1. Tasks restored into a container's
 * user namespace hold every capability there but none in the initial one, so
 * with the default 0 the lazy restore fails ("uffd: Unable to open an
 * userfaultfd descriptor: Operation not permitted"). Only creating the
 * descriptor is checked: a uffd the kernel makes for a child on fork
 * (UFFD_FEATURE_EVENT_FORK) and every ioctl on an existing one are not, so
 * the sysctl need be 1 only while `criu restore` runs. The window takes an
 * exclusive lock (DP_UFFDWIN_LOCK) for its whole length, so that concurrent
 * windows never put 0 back under one another, sets 1, and at the end puts
 * back the value it found. The lock file records "open PREV" while a window
 * is open and "closed" after: a window whose process was killed is noticed
 * by the next one, which then puts PREV back instead of the 1 it finds. Kernels with /dev/userfaultfd (6.1+) offer a
 * device-permission alternative, but CRIU 4.2.1 does not use it. */
#ifndef DP_UFFDWIN_H
#define DP_UFFDWIN_H

#include "util.h"

#define DP_UFFDWIN_SYSCTL "/proc/sys/vm/unprivileged_userfaultfd"
#define DP_UFFDWIN_LOCK "/run/distriproc-uffd-window.lock"

struct dp_uffdwin {
    int lock_fd;
    int prev; /* the value found (0 or 1) */
};

/* "0\n" -> 0, "1\n" -> 1 (a trailing newline optional); -1 otherwise. Pure. */
int dp_uffdwin_parse(const char *text, size_t len);

/* Opens the window: lock (waits for another window to close), remember, set
 * 1. Returns 0, or -1 with err (nothing changed). */
int dp_uffdwin_open(struct dp_uffdwin *w, struct dp_err *err);
/* Puts the remembered value back and unlocks. Returns 0, or -1 with err. */
int dp_uffdwin_close(struct dp_uffdwin *w, struct dp_err *err);

#endif
