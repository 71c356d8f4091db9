#include "util.h"
#include "logline.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "perm.h"

static const char *log_tag = "distriproc";
static enum dp_log_level log_level = DP_LOG_INFO;
static enum dp_log_format log_format = DP_LOG_FORMAT_TEXT;
static int log_format_known;
static _Thread_local int64_t log_task = -1, log_conn = -1;

void dp_log_set_tag(const char *tag) { log_tag = tag; }
void dp_log_set_level(enum dp_log_level level) { log_level = level; }

int dp_log_set_format(const char *name)
{
    if (dp_log_format_parse(name, &log_format) < 0)
        return -1;
    log_format_known = 1;
    return 0;
}

void dp_log_context(int64_t task, int64_t conn)
{
    log_task = task;
    log_conn = conn;
}

/* The format chosen, else the environment's (main has checked it), else text. */
static enum dp_log_format current_format(void)
{
    if (!log_format_known && dp_log_set_format(getenv("DISTRIPROC_LOG_FORMAT")) < 0) {
        log_format = DP_LOG_FORMAT_TEXT;
        log_format_known = 1;
    }
    return log_format;
}

static void vlog(enum dp_log_level level, const char *fmt, va_list ap)
{
    static const char *names[] = {"debug", "info", "warning", "error"};
    char msg[2048];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    struct dp_log_rec r = {.level = names[level], .tag = log_tag, .pid = (long)getpid(), .task = log_task,
                           .conn = log_conn, .msg = msg};
    clock_gettime(CLOCK_REALTIME, &r.ts);
    struct dp_sbuf line = {0};
    dp_log_render(current_format(), &r, &line);
    /* One write per line so lines of concurrent processes do not interleave. */
    ssize_t w;
    if (line.oom || !line.p) {
        char plain[2200];
        int n = snprintf(plain, sizeof(plain), "%s: %s: %s\n", log_tag, names[level], msg);
        w = write(STDERR_FILENO, plain, n < (int)sizeof(plain) ? (size_t)n : sizeof(plain) - 1);
    } else {
        w = write(STDERR_FILENO, line.p, line.len);
    }
    (void)w;
    dp_sbuf_free(&line);
}

void dp_log(enum dp_log_level level, const char *fmt, ...)
{
    if (level < log_level)
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(level, fmt, ap);
    va_end(ap);
}

void dp_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(DP_LOG_ERROR, fmt, ap);
    va_end(ap);
    exit(1);
}

void dp_err_set(struct dp_err *err, const char *fmt, ...)
{
    if (!err)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
}

uint64_t dp_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

double dp_now_s(void) { return (double)dp_now_ns() / 1e9; }

int dp_parse_size(const char *text, uint64_t *out)
{
    if (!text || !*text)
        return -1;
    char *end;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno || end == text || text[0] == '-')
        return -1;
    unsigned shift = 0;
    switch (*end) {
    case '\0': break;
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    case 't': case 'T': shift = 40; end++; break;
    default: return -1;
    }
    if (*end == 'i' || *end == 'I')
        end++;
    if (*end == 'b' || *end == 'B')
        end++;
    if (*end != '\0')
        return -1;
    if (shift && value > (UINT64_MAX >> shift))
        return -1;
    *out = (uint64_t)value << shift;
    return 0;
}

int dp_parse_hostport(const char *text, struct sockaddr_in *out)
{
    const char *colon = text ? strrchr(text, ':') : NULL;
    if (!colon || colon == text || colon[1] == '\0')
        return -1;
    char host[64];
    size_t host_len = (size_t)(colon - text);
    if (host_len >= sizeof(host))
        return -1;
    memcpy(host, text, host_len);
    host[host_len] = '\0';
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (errno || *end != '\0' || port < 0 || port > 65535)
        return -1;
    memset(out, 0, sizeof(*out));
    out->sin_family = AF_INET;
    out->sin_port = htons((uint16_t)port);
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &out->sin_addr) != 1)
        return -1;
    return 0;
}

void dp_format_bytes(uint64_t bytes, char *buf, size_t len)
{
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double value = (double)bytes;
    size_t unit = 0;
    while (value >= 1024.0 && unit + 1 < DP_ARRAY_LEN(units)) {
        value /= 1024.0;
        unit++;
    }
    if (unit == 0)
        snprintf(buf, len, "%llu B", (unsigned long long)bytes);
    else
        snprintf(buf, len, "%.2f %s", value, units[unit]);
}

int dp_read_full(int fd, void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0) {
            errno = 0;
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

int dp_write_full(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int dp_read_file(const char *path, uint8_t **data, size_t *len, struct dp_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        dp_err_set(err, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    size_t cap = 4096, used = 0;
    uint8_t *buf = malloc(cap + 1);
    if (!buf) {
        close(fd);
        dp_err_set(err, "out of memory reading %s", path);
        return -1;
    }
    for (;;) {
        if (used == cap) {
            uint8_t *bigger = realloc(buf, cap * 2 + 1);
            if (!bigger) {
                free(buf);
                close(fd);
                dp_err_set(err, "out of memory reading %s", path);
                return -1;
            }
            buf = bigger;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + used, cap - used);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            dp_err_set(err, "cannot read %s: %s", path, strerror(errno));
            free(buf);
            close(fd);
            return -1;
        }
        if (r == 0)
            break;
        used += (size_t)r;
    }
    close(fd);
    buf[used] = '\0';
    *data = buf;
    *len = used;
    return 0;
}

int dp_set_nonblock(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0)
        return -1;
    return fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

int dp_read_pid_file(const char *path)
{
    FILE *f = fopen(path, "r");
    int pid = 0;
    if (f) {
        if (fscanf(f, "%d", &pid) != 1)
            pid = 0;
        fclose(f);
    }
    return pid;
}

int32_t dp_proc_inner_pid(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    long inner = 0;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "NSpid:", 6) != 0)
            continue;
        char *p = line + 6, *end;
        for (;;) {
            long v = strtol(p, &end, 10);
            if (end == p)
                break;
            inner = v;
            p = end;
        }
        break;
    }
    fclose(f);
    return inner > 0 && inner <= INT32_MAX ? (int32_t)inner : 0;
}

int dp_make_workdir(const char *dir, char *out, struct dp_err *err)
{
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        dp_err_set(err, "cannot create --workdir %s: %s", dir, strerror(errno));
        return -1;
    }
    if (!realpath(dir, out)) {
        dp_err_set(err, "--workdir %s: %s", dir, strerror(errno));
        return -1;
    }
    /* A new directory or a reused one: ours, and nobody else may add entries. */
    int fd = open(out, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) < 0) {
        dp_err_set(err, "--workdir %s: %s", out, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return dp_perm_dir_ok(out, sb.st_mode, sb.st_uid, geteuid(), err);
}

ssize_t dp_read_small(const char *path, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, len - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    return n;
}

int dp_proc_stat_field(pid_t pid, int field, long *out)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if (dp_read_small(path, buf, sizeof(buf)) < 0)
        return -1;
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    p++; /* now at " S ppid pgrp session ...": field 3 is the state */
    for (int i = 3; i <= field; i++) {
        while (*p == ' ')
            p++;
        if (i == field)
            return i > 3 && sscanf(p, "%ld", out) == 1 ? 0 : -1;
        while (*p && *p != ' ')
            p++;
    }
    return -1;
}
