/* util: logging, errors, time, sizes, addresses and full-length I/O.
 * Shared by every module; nothing here knows about CRIU or the protocol. */
#ifndef DP_UTIL_H
#define DP_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdnoreturn.h>
#include <sys/types.h>
#include <netinet/in.h>

#define DP_PAGE_SIZE 4096UL
#define DP_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

enum dp_log_level { DP_LOG_DEBUG, DP_LOG_INFO, DP_LOG_WARN, DP_LOG_ERROR };

/* Messages go to stderr prefixed with the program tag, e.g. "distriproc serve: ". */
void dp_log_set_tag(const char *tag);
void dp_log_set_level(enum dp_log_level level);
/* The form of every line (lib/logline.h): "text" (default), "logfmt" or
 * "json"; without a call, DISTRIPROC_LOG_FORMAT decides (so children of
 * ours log alike). -1 for an unknown name. */
int dp_log_set_format(const char *name);
/* What the lines logged from now on concern: a daemon task id and/or a page
 * server connection number (-1: none). Event loops set it around a
 * descriptor's handler and clear it after: messages need not repeat it. */
void dp_log_context(int64_t task, int64_t conn);
void dp_log(enum dp_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define dp_debug(...) dp_log(DP_LOG_DEBUG, __VA_ARGS__)
#define dp_info(...)  dp_log(DP_LOG_INFO, __VA_ARGS__)
#define dp_warn(...)  dp_log(DP_LOG_WARN, __VA_ARGS__)
#define dp_error(...) dp_log(DP_LOG_ERROR, __VA_ARGS__)
noreturn void dp_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Error text buffer passed down by pure modules that must not print. */
struct dp_err {
    char msg[512];
};
void dp_err_set(struct dp_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

uint64_t dp_now_ns(void);   /* CLOCK_MONOTONIC */
double dp_now_s(void);

/* "4096", "64K", "256M", "1G", "2T" (powers of 1024). Returns 0 or -1. */
int dp_parse_size(const char *text, uint64_t *out);
/* "ADDR:PORT" (IPv4 dotted quad or "localhost"). Returns 0 or -1. */
int dp_parse_hostport(const char *text, struct sockaddr_in *out);
void dp_format_bytes(uint64_t bytes, char *buf, size_t len); /* "1.50 GiB" */

/* Loop over short reads/writes and EINTR. Return 0, or -1 with errno
 * (read_full sets errno = 0 on clean EOF before n bytes). */
int dp_read_full(int fd, void *buf, size_t n);
int dp_write_full(int fd, const void *buf, size_t n);
/* Reads a whole file into a malloc'd buffer (NUL-terminated for convenience). */
int dp_read_file(const char *path, uint8_t **data, size_t *len, struct dp_err *err);
/* Reads at most len - 1 bytes of a small text file (a /proc or cgroup file)
 * into buf, NUL-terminated. Returns the bytes read, or -1 if the file cannot
 * be opened or is empty. */
ssize_t dp_read_small(const char *path, char *buf, size_t len);

int dp_set_nonblock(int fd);

/* The pid in a pid file (criu --pidfile, our own), or 0 if the file is missing
 * or does not start with a number. */
int dp_read_pid_file(const char *path);

/* Creates the working directory dir (0700; an existing one is kept if it is
 * ours and not writable by group or others: dp_perm_dir_ok) and puts its
 * absolute path in out (PATH_MAX bytes). -1 with err naming --workdir. */
int dp_make_workdir(const char *dir, char *out, struct dp_err *err);

/* Field N (1-based, N >= 4) of /proc/PID/stat as a number, e.g. 4 the parent,
 * 6 the session; the "(comm)" before it may hold spaces and ')'. No
 * allocation. -1 if the process is gone or the field is missing. */
int dp_proc_stat_field(pid_t pid, int field, long *out);

/* The pid of host pid P inside its own (innermost) pid namespace, the last
 * field of NSpid in /proc/P/status; 0 if P is gone or the line is missing. */
int32_t dp_proc_inner_pid(pid_t pid);

#endif
