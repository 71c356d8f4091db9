/* criu: finds and runs CRIU.
 *
 * Which criu: $DISTRIPROC_CRIU if set, else the wrapper `make deps` writes,
 * <checkout>/.deps/bin/criu, found relative to the running binary
 * (build/distriproc -> ../.deps/bin/criu), else the copy `make install` puts
 * beside an installed binary (PREFIX/bin/distriproc -> PREFIX/lib/distriproc/bin/criu).
 *
 * Every run is bounded in time and killed with SIGKILL when the bound expires:
 * `criu restore --lazy-pages` whose lazy-pages daemon died can hang and ignores
 * SIGTERM. A run may enter a network namespace first (setns in the child, no
 * mount namespace change, so CRIU sees the same mounts). On failure the last
 * lines of criu's log file are printed to stderr and the error says what to do.
 *
 * Argument building (dp_criu_*_args) and version parsing are pure and unit-tested.
 */
#ifndef DP_CRIU_H
#define DP_CRIU_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util.h"

#define DP_CRIU_MIN_VERSION "4.2"
#define DP_CRIU_ENV "DISTRIPROC_CRIU"
#define DP_CRIU_LOG_TAIL 20

struct dp_criu_version {
    int major, minor, sublevel;
};

/* Parses the output of `criu --version` ("Version: 4.2.1\n...") or a bare
 * "4.2.1" / "4.2". Returns 0 or -1. */
int dp_criu_parse_version(const char *text, struct dp_criu_version *v);
/* <0, 0, >0 like strcmp. */
int dp_criu_version_cmp(const struct dp_criu_version *a, const struct dp_criu_version *b);

/* Candidate wrapper path for a binary at exe_path, `levels` directories up:
 * levels=1: /r/build/distriproc -> /r/.deps/bin/criu; levels=2:
 * /r/build-asan/tests/test_x -> /r/.deps/bin/criu. Pure. */
int dp_criu_candidate(const char *exe_path, int levels, char *out, size_t len);
/* Where `make install` puts criu, relative to PREFIX (scripts/install.sh). */
#define DP_CRIU_INSTALLED_REL "lib/distriproc/bin/criu"
/* Candidate of an installed binary: /usr/bin/distriproc -> /usr/lib/distriproc/bin/criu. Pure. */
int dp_criu_installed_candidate(const char *exe_path, char *out, size_t len);
/* Finds the criu to run (see above) and checks it is executable. */
int dp_criu_find(char *path, size_t len, struct dp_err *err);
/* Runs `criu --version`; fails if it does not run or is older than DP_CRIU_MIN_VERSION. */
int dp_criu_get_version(struct dp_criu_version *v, struct dp_err *err);

/* "dp-src" -> "/run/netns/dp-src"; anything with a '/' is a path, used as is. Pure. */
int dp_netns_path(const char *netns, char *out, size_t len);
/* Moves the calling thread into network namespace netns (a name or a path). */
int dp_netns_enter(const char *netns, struct dp_err *err);

/* In a forked child: default signal dispositions and an empty mask, the
 * network namespace netns_fd (-1: stay), stdout on out_fd (-1: keep), no
 * other descriptor above stderr, then exec criu. Never returns. */
noreturn void dp_criu_exec(const char *criu, char *const argv[], int netns_fd, int out_fd);

/* An argv under construction; strings are copied into buf. */
#define DP_CRIU_MAX_ARGS 96
struct dp_criu_argv {
    const char *argv[DP_CRIU_MAX_ARGS + 1]; /* NULL-terminated; argv[0] is the action */
    size_t argc;
    char buf[8192];
    size_t used;
    int overflow;
};
void dp_criu_argv_init(struct dp_criu_argv *a);
void dp_criu_argv_add(struct dp_criu_argv *a, const char *arg);
void dp_criu_argv_addf(struct dp_criu_argv *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

enum dp_file_validation {
    DP_FILE_VALIDATION_DEFAULT = 0, /* criu's own default (buildid in 4.2) */
    DP_FILE_VALIDATION_FILESIZE,
    DP_FILE_VALIDATION_BUILDID,
};
/* "filesize" / "buildid" -> enum; -1 for anything else. */
int dp_file_validation_parse(const char *text, enum dp_file_validation *out);

struct dp_dump_opts {
    pid_t pid;                 /* root of the tree, as seen by the caller */
    const char *images_dir;
    const char *log_file;      /* relative to images_dir; NULL = "dump.log" */
    int leave_running;
    int tcp_established;
    int shell_job;
    enum dp_file_validation file_validation;
    int verbosity;             /* -vN; 0 = 4 (enough to debug a failure) */
    const char *const *extra;  /* more criu options, NULL-terminated, or NULL */
};

struct dp_restore_opts {
    const char *images_dir;
    const char *log_file;      /* relative to images_dir; NULL = "restore.log" */
    const char *pidfile;       /* NULL = none; relative paths are relative to images_dir */
    int detached;              /* --restore-detached: criu exits once the tree runs */
    int lazy_pages;            /* --lazy-pages: memory comes from a lazy-pages daemon */
    int tcp_established;
    int shell_job;
    enum dp_file_validation file_validation;
    int verbosity;
    const char *const *extra;
};

/* Build `dump ...` / `restore ...` (without the criu binary). Pure; -1 with
 * err set on bad options or overflow. */
int dp_criu_dump_args(const struct dp_dump_opts *o, struct dp_criu_argv *a, struct dp_err *err);
int dp_criu_restore_args(const struct dp_restore_opts *o, struct dp_criu_argv *a, struct dp_err *err);

/* How to run criu. */
struct dp_criu_run_opts {
    const char *netns;         /* NULL = the caller's; a name under /run/netns or a path */
    double timeout_s;          /* SIGKILL after this many seconds; <= 0 = no bound */
    const char *log_path;      /* criu's log file, shown on failure; NULL = none */
    int quiet_stdout;          /* criu's stdout to /dev/null */
};

/* A running criu. */
struct dp_criu_proc {
    pid_t pid;
    int pidfd;
    uint64_t deadline_ns;      /* 0 = none */
    double timeout_s;
    int exited, status;        /* set once reaped: wait status */
    char what[64];             /* "criu dump", for messages */
    char log_path[4096];
};

/* Starts criu with args (args[0] is the action, e.g. "dump"). */
int dp_criu_start(const char *const args[], const struct dp_criu_run_opts *o,
                  struct dp_criu_proc *p, struct dp_err *err);
/* Waits until criu exits or its deadline passes (then SIGKILLs and reaps it).
 * 0 if criu exited with status 0; else -1, the log tail printed, err set. */
int dp_criu_finish(struct dp_criu_proc *p, struct dp_err *err);
/* 1 if criu is still running, 0 once it has exited (then *status is its wait
 * status and it is reaped; later calls report the same). Does not block. */
int dp_criu_poll(struct dp_criu_proc *p, int *status);
/* SIGKILLs and reaps a criu that is still running. */
void dp_criu_kill(struct dp_criu_proc *p);

/* start + finish. */
int dp_criu_run(const char *const args[], const struct dp_criu_run_opts *o, struct dp_err *err);

/* Dump / restore with the options above; the log path is derived from them. */
int dp_criu_dump(const struct dp_dump_opts *d, const char *netns, double timeout_s, struct dp_err *err);
int dp_criu_restore(const struct dp_restore_opts *r, const char *netns, double timeout_s, struct dp_err *err);

/* Prints the last n lines of a log file to stderr, indented. */
void dp_criu_print_log_tail(const char *path, int n);

#endif
