/* distriproc uffd-window: runs one command (a `runc restore --lazy-pages` of a
 * user-namespaced container) with vm.unprivileged_userfaultfd = 1, then puts
 * the previous value back. Why the window is needed: lib/uffdwin.h. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "uffdwin.h"
#include "util.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: distriproc uffd-window [--timeout SEC] -- CMD [ARG...]\n"
            "\n"
            "Runs CMD with vm.unprivileged_userfaultfd set to 1 and sets it back to what\n"
            "it was when CMD exits; exits with CMD's status. For the lazy restore of a\n"
            "user-namespaced container: CRIU has each restored task create its own\n"
            "userfaultfd, which the kernel allows inside a user namespace only with that\n"
            "sysctl set. Only the creation is checked, so the window need last only as\n"
            "long as the restore itself:\n"
            "  distriproc uffd-window -- runc --criu CRIU restore --lazy-pages --work-path DIR ...\n"
            "Windows of concurrent commands are serialized by a lock (%s).\n"
            "\n"
            "  --timeout SEC  SIGKILL CMD after SEC seconds (default 300), then close the window\n"
            "  -h, --help     this help\n"
            "\n"
            "See docs/containers.md (User-namespaced containers and their network).\n",
            DP_UFFDWIN_LOCK);
}

/* Waits for child up to timeout_s; on timeout kills it. Returns its wait status. */
static int wait_bounded(pid_t child, double timeout_s)
{
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int st;
        pid_t r = waitpid(child, &st, WNOHANG);
        if (r == child)
            return st;
        if (r < 0 && errno != EINTR)
            return -1;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) / 1e9 > timeout_s) {
            dp_error("uffd-window: the command ran longer than %.0f s; killing it", timeout_s);
            kill(child, SIGKILL);
            while (waitpid(child, &st, 0) < 0 && errno == EINTR)
                ;
            return st;
        }
        usleep(20000);
    }
}

int cmd_uffdwin(int argc, char **argv)
{
    double timeout_s = 300;
    int i = 1;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        } else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
            char *end;
            timeout_s = strtod(argv[++i], &end);
            if (*end || !(timeout_s > 0) || timeout_s > 86400) {
                dp_error("uffd-window: --timeout must be 0 < SEC <= 86400, not '%s'", argv[i]);
                return 2;
            }
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            dp_error("uffd-window: unknown argument '%s'; the command follows '--' (see --help)", argv[i]);
            return 2;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    struct dp_err err = {{0}};
    struct dp_uffdwin w;
    if (dp_uffdwin_open(&w, &err) < 0) {
        dp_error("uffd-window: %s", err.msg);
        return 1;
    }
    /* Signals that would end us before the window closes go to the command
     * instead: it ends, and we still put the value back. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGHUP);
    sigprocmask(SIG_BLOCK, &block, &old);
    pid_t child = fork();
    if (child == 0) {
        sigprocmask(SIG_SETMASK, &old, NULL);
        execvp(argv[i], &argv[i]);
        fprintf(stderr, "distriproc uffd-window: cannot run %s: %s\n", argv[i], strerror(errno));
        _exit(127);
    }
    int st = child < 0 ? -1 : wait_bounded(child, timeout_s);
    if (child < 0)
        dp_error("uffd-window: cannot fork: %s", strerror(errno));
    int rc = dp_uffdwin_close(&w, &err);
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (rc < 0) {
        dp_error("uffd-window: %s; set it back by hand: sysctl vm.unprivileged_userfaultfd=%d", err.msg, w.prev);
        return 1;
    }
    if (st < 0)
        return 1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
