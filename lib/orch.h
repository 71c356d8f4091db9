/* orch: running the pieces of a migration from one command.
 *
 * `distriproc migrate` and the benchmarks drive other distriproc subcommands,
 * criu and probes as child processes, some inside a lab host's network
 * namespace (setns in the child only, no mount namespace, so CRIU sees the
 * same mounts). Every run is bounded in time and killed with SIGKILL at its
 * bound. Pids that outlive us are remembered with their start time so that a
 * later `--stop` never signals a recycled pid.
 *
 * The JSON our subcommands print is read back with jsonq.h (jansson). */
#ifndef DP_ORCH_H
#define DP_ORCH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "jsonq.h"
#include "util.h"

/* The running distriproc binary (/proc/self/exe resolved), for re-executing
 * our own subcommands. */
const char *dp_self_exe(void);

/* Runs argv (argv[0] a path or a name on PATH) to completion, in network
 * namespace netns (a name under /run/netns or a path; NULL = ours). If out is
 * not NULL, stdout is captured into a malloc'd NUL-terminated buffer; else it
 * goes to out_fd (-1 = /dev/null). stderr goes to err_fd (-1 = inherited).
 * Killed with SIGKILL after timeout_s (<= 0: no bound). Returns the wait
 * status (>= 0), or -1 with err set if it could not run or timed out. */
int dp_orch_run(const char *const argv[], const char *netns, double timeout_s, char **out, int out_fd,
                int err_fd, struct dp_err *err);

/* Starts argv detached (own session, stdin /dev/null, stdout and stderr
 * appended to log or /dev/null) in netns. Returns its pid, or -1 with err. The
 * caller may waitpid() it; if the caller exits first, init reaps it. */
pid_t dp_orch_spawn(const char *const argv[], const char *netns, const char *log, struct dp_err *err);

/* 1 if a TCP connect to ADDR:PORT from inside netns succeeds within
 * timeout_ms, else 0. */
int dp_orch_can_connect(const char *netns, const char *hostport, int timeout_ms);

/* The spacing of probe tries (ms): one cadence for `migrate --probe` and for
 * every system `bench ttfr` compares, so none looks faster by being probed
 * more often. */
#define DP_ORCH_PROBE_INTERVAL_MS 5

/* Runs `sh -c cmd` in netns again and again (each try bounded by what is left
 * of timeout_s, tries spaced by interval_ms) until it exits 0. Returns the
 * dp_now_ns() of the first success, or 0 if it never succeeded in time or
 * keep_alive_pid (if > 0) died. *attempts counts the tries; the commands'
 * output goes to log_fd (-1 = /dev/null). */
uint64_t dp_orch_probe(const char *cmd, const char *netns, double timeout_s, int interval_ms, int log_fd,
                       pid_t keep_alive_pid, unsigned long long keep_alive_start, int *attempts);

/* The start time of pid (field 22 of /proc/PID/stat, clock ticks since boot),
 * or 0 if there is no such process or it is a zombie. */
unsigned long long dp_proc_starttime(pid_t pid);
/* 1 if pid is alive and still the process that had this start time. */
int dp_proc_same(pid_t pid, unsigned long long starttime);
/* Waits until the process is gone (or a zombie). 0 if gone, -1 on timeout. */
int dp_proc_wait_gone(pid_t pid, unsigned long long starttime, double timeout_s);

#endif
