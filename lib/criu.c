#include "criu.h"
#include "kdat.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- Version ------------------------------------------------------------- */

static int parse_uint(const char **s, int *out)
{
    const char *p = *s;
    long v = 0;
    if (*p < '0' || *p > '9')
        return -1;
    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (*p - '0');
        if (v > 1000000)
            return -1;
        p++;
    }
    *out = (int)v;
    *s = p;
    return 0;
}

int dp_criu_parse_version(const char *text, struct dp_criu_version *v)
{
    if (!text)
        return -1;
    const char *p = strstr(text, "Version:");
    if (p)
        p += strlen("Version:");
    else
        p = text;
    while (*p == ' ' || *p == '\t')
        p++;
    memset(v, 0, sizeof(*v));
    if (parse_uint(&p, &v->major) < 0 || *p != '.')
        return -1;
    p++;
    if (parse_uint(&p, &v->minor) < 0)
        return -1;
    if (*p == '.') {
        p++;
        if (parse_uint(&p, &v->sublevel) < 0)
            return -1;
    }
    /* Allow a suffix such as "-rc1", a newline or the end; not more digits or dots. */
    if (*p == '.' || (*p >= '0' && *p <= '9'))
        return -1;
    return 0;
}

int dp_criu_version_cmp(const struct dp_criu_version *a, const struct dp_criu_version *b)
{
    if (a->major != b->major)
        return a->major < b->major ? -1 : 1;
    if (a->minor != b->minor)
        return a->minor < b->minor ? -1 : 1;
    if (a->sublevel != b->sublevel)
        return a->sublevel < b->sublevel ? -1 : 1;
    return 0;
}

/* ---- Finding criu ---------------------------------------------------------- */

int dp_criu_candidate(const char *exe_path, int levels, char *out, size_t len)
{
    char dir[PATH_MAX];
    if (!exe_path || exe_path[0] != '/' || levels < 1 || strlen(exe_path) >= sizeof(dir))
        return -1;
    strcpy(dir, exe_path);
    for (int i = 0; i < levels; i++) {
        char *slash = strrchr(dir, '/');
        if (!slash || slash == dir)
            return -1; /* ran out of directories */
        *slash = '\0';
    }
    /* dir is now the binary's directory (levels=1) or above; .deps is its sibling. */
    char *slash = strrchr(dir, '/');
    if (!slash)
        return -1;
    *slash = '\0';
    int n = snprintf(out, len, "%s/.deps/bin/criu", dir[0] ? dir : "");
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

int dp_criu_installed_candidate(const char *exe_path, char *out, size_t len)
{
    /* make install puts criu at PREFIX/lib/distriproc/bin/criu beside PREFIX/bin/distriproc. */
    char dir[PATH_MAX];
    if (!exe_path || exe_path[0] != '/' || strlen(exe_path) >= sizeof(dir))
        return -1;
    strcpy(dir, exe_path);
    for (int i = 0; i < 2; i++) {
        char *slash = strrchr(dir, '/');
        if (!slash)
            return -1;
        *slash = '\0';
    }
    int n = snprintf(out, len, "%s/%s", dir, DP_CRIU_INSTALLED_REL);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

int dp_criu_find(char *path, size_t len, struct dp_err *err)
{
    const char *env = getenv(DP_CRIU_ENV);
    if (env && *env) {
        if (access(env, X_OK) != 0) {
            dp_err_set(err, "%s=%s is not an executable file (%s); point it at a criu >= %s or unset it to use the checkout's .deps/bin/criu",
                       DP_CRIU_ENV, env, strerror(errno), DP_CRIU_MIN_VERSION);
            return -1;
        }
        if (strlen(env) >= len) {
            dp_err_set(err, "%s is too long", DP_CRIU_ENV);
            return -1;
        }
        strcpy(path, env);
        return 0;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0) {
        dp_err_set(err, "cannot read /proc/self/exe (%s) to find .deps/bin/criu; set %s to the criu wrapper",
                   strerror(errno), DP_CRIU_ENV);
        return -1;
    }
    exe[n] = '\0';
    /* build/distriproc, build-asan/distriproc, build-asan/tests/test_x: try a few levels. */
    char first[PATH_MAX] = "";
    for (int levels = 1; levels <= 3; levels++) {
        char cand[PATH_MAX];
        if (dp_criu_candidate(exe, levels, cand, sizeof(cand)) < 0)
            break;
        if (!first[0])
            strcpy(first, cand);
        if (access(cand, X_OK) == 0) {
            if (strlen(cand) >= len) {
                dp_err_set(err, "criu path too long");
                return -1;
            }
            strcpy(path, cand);
            return 0;
        }
    }
    char inst[PATH_MAX];
    if (dp_criu_installed_candidate(exe, inst, sizeof(inst)) == 0 && access(inst, X_OK) == 0) {
        if (strlen(inst) >= len) {
            dp_err_set(err, "criu path too long");
            return -1;
        }
        strcpy(path, inst);
        return 0;
    }
    dp_err_set(err, "CRIU not found: %s is unset and there is neither %s nor an installed %s; run 'make deps' in the DistriProc checkout (it installs criu >= %s there; 'make install' copies it), or set %s to a criu >= %s",
               DP_CRIU_ENV, first[0] ? first : "<checkout>/.deps/bin/criu",
               dp_criu_installed_candidate(exe, inst, sizeof(inst)) == 0 ? inst : "PREFIX/" DP_CRIU_INSTALLED_REL,
               DP_CRIU_MIN_VERSION, DP_CRIU_ENV, DP_CRIU_MIN_VERSION);
    return -1;
}

int dp_netns_path(const char *netns, char *out, size_t len)
{
    if (!netns || !*netns || strcmp(netns, ".") == 0 || strcmp(netns, "..") == 0)
        return -1;
    int n;
    if (strchr(netns, '/'))
        n = snprintf(out, len, "%s", netns);
    else
        n = snprintf(out, len, "/run/netns/%s", netns);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

int dp_netns_enter(const char *netns, struct dp_err *err)
{
    char path[PATH_MAX];
    if (dp_netns_path(netns, path, sizeof(path)) < 0) {
        dp_err_set(err, "bad network namespace name '%s'", netns ? netns : "");
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        dp_err_set(err, "cannot enter network namespace %s: %s (is the lab up? distriproc lab up)", netns,
                   strerror(e));
        return -1;
    }
    close(fd);
    return 0;
}

/* ---- Arguments ------------------------------------------------------------- */

void dp_criu_argv_init(struct dp_criu_argv *a)
{
    memset(a, 0, sizeof(*a));
}

void dp_criu_argv_add(struct dp_criu_argv *a, const char *arg)
{
    size_t n = strlen(arg) + 1;
    if (a->overflow || a->argc >= DP_CRIU_MAX_ARGS || a->used + n > sizeof(a->buf)) {
        a->overflow = 1;
        return;
    }
    memcpy(a->buf + a->used, arg, n);
    a->argv[a->argc++] = a->buf + a->used;
    a->argv[a->argc] = NULL;
    a->used += n;
}

void dp_criu_argv_addf(struct dp_criu_argv *a, const char *fmt, ...)
{
    char tmp[4200];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        a->overflow = 1;
        return;
    }
    dp_criu_argv_add(a, tmp);
}

int dp_file_validation_parse(const char *text, enum dp_file_validation *out)
{
    if (text && strcmp(text, "filesize") == 0)
        *out = DP_FILE_VALIDATION_FILESIZE;
    else if (text && strcmp(text, "buildid") == 0)
        *out = DP_FILE_VALIDATION_BUILDID;
    else
        return -1;
    return 0;
}

/* Options dump and restore share. */
static void add_common(struct dp_criu_argv *a, const char *images_dir, const char *log_file,
                       int verbosity, int tcp_established, int shell_job,
                       enum dp_file_validation fv)
{
    dp_criu_argv_add(a, "--images-dir");
    dp_criu_argv_add(a, images_dir);
    dp_criu_argv_add(a, "--log-file");
    dp_criu_argv_add(a, log_file);
    dp_criu_argv_addf(a, "-v%d", verbosity > 0 ? verbosity : 4);
    if (tcp_established)
        dp_criu_argv_add(a, "--tcp-established");
    if (shell_job)
        dp_criu_argv_add(a, "--shell-job");
    if (fv == DP_FILE_VALIDATION_FILESIZE || fv == DP_FILE_VALIDATION_BUILDID) {
        dp_criu_argv_add(a, "--file-validation");
        dp_criu_argv_add(a, fv == DP_FILE_VALIDATION_FILESIZE ? "filesize" : "buildid");
    }
}

static int add_extra(struct dp_criu_argv *a, const char *const *extra, struct dp_err *err)
{
    for (; extra && *extra; extra++)
        dp_criu_argv_add(a, *extra);
    if (a->overflow) {
        dp_err_set(err, "too many or too long criu arguments");
        return -1;
    }
    return 0;
}

static int check_log_file(const char *log_file, struct dp_err *err)
{
    if (!*log_file || strchr(log_file, '/')) {
        dp_err_set(err, "criu log file '%s' must be a plain file name (it lives in the images directory)", log_file);
        return -1;
    }
    return 0;
}

int dp_criu_dump_args(const struct dp_dump_opts *o, struct dp_criu_argv *a, struct dp_err *err)
{
    dp_criu_argv_init(a);
    if (o->pid <= 0) {
        dp_err_set(err, "criu dump needs the pid of the tree's root, got %d", (int)o->pid);
        return -1;
    }
    if (!o->images_dir || !*o->images_dir) {
        dp_err_set(err, "criu dump needs an images directory");
        return -1;
    }
    const char *log = o->log_file ? o->log_file : "dump.log";
    if (check_log_file(log, err) < 0)
        return -1;
    dp_criu_argv_add(a, "dump");
    dp_criu_argv_add(a, "--tree");
    dp_criu_argv_addf(a, "%d", (int)o->pid);
    add_common(a, o->images_dir, log, o->verbosity, o->tcp_established, o->shell_job, o->file_validation);
    if (o->leave_running)
        dp_criu_argv_add(a, "--leave-running");
    return add_extra(a, o->extra, err);
}

int dp_criu_restore_args(const struct dp_restore_opts *o, struct dp_criu_argv *a, struct dp_err *err)
{
    dp_criu_argv_init(a);
    if (!o->images_dir || !*o->images_dir) {
        dp_err_set(err, "criu restore needs an images directory");
        return -1;
    }
    const char *log = o->log_file ? o->log_file : "restore.log";
    if (check_log_file(log, err) < 0)
        return -1;
    dp_criu_argv_add(a, "restore");
    add_common(a, o->images_dir, log, o->verbosity, o->tcp_established, o->shell_job, o->file_validation);
    if (o->detached)
        dp_criu_argv_add(a, "--restore-detached");
    if (o->lazy_pages)
        dp_criu_argv_add(a, "--lazy-pages");
    if (o->pidfile) {
        dp_criu_argv_add(a, "--pidfile");
        dp_criu_argv_add(a, o->pidfile);
    }
    return add_extra(a, o->extra, err);
}

/* ---- Running ----------------------------------------------------------------- */

/* In the forked child: only async-signal-safe calls until exec. */
noreturn void dp_criu_exec(const char *criu, char *const argv[], int netns_fd, int out_fd)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* Ignored signals stay ignored across exec; criu expects the defaults. */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP)
            sigaction(s, &dfl, NULL);
    if (netns_fd >= 0 && setns(netns_fd, CLONE_NEWNET) < 0) {
        static const char msg[] = "distriproc: setns into the network namespace failed\n";
        ssize_t w = write(STDERR_FILENO, msg, sizeof(msg) - 1);
        (void)w;
        _exit(126);
    }
    if (out_fd >= 0 && out_fd != STDOUT_FILENO)
        dup2(out_fd, STDOUT_FILENO);
    /* Our sockets and files are none of criu's business (nor of what it restores). */
    syscall(SYS_close_range, 3U, ~0U, 0U);
    execv(criu, argv);
    static const char msg[] = "distriproc: exec of criu failed\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof(msg) - 1);
    (void)w;
    _exit(127);
}

/* Forks and execs criu args; out_fd: -1 = inherit stdout. */
static int spawn(const char *const args[], const char *netns, int out_fd, pid_t *pid_out,
                 char *criu_path_out, size_t criu_len, struct dp_err *err)
{
    char criu[PATH_MAX];
    if (dp_criu_find(criu, sizeof(criu), err) < 0)
        return -1;
    if (criu_path_out)
        snprintf(criu_path_out, criu_len, "%s", criu);
    size_t n = 0;
    while (args[n])
        n++;
    char **argv = calloc(n + 2, sizeof(*argv));
    if (!argv) {
        dp_err_set(err, "out of memory");
        return -1;
    }
    argv[0] = criu;
    for (size_t i = 0; i < n; i++)
        argv[i + 1] = (char *)args[i];
    int netns_fd = -1;
    if (netns) {
        char path[PATH_MAX];
        if (dp_netns_path(netns, path, sizeof(path)) < 0) {
            dp_err_set(err, "bad network namespace name '%s'", netns);
            free(argv);
            return -1;
        }
        netns_fd = open(path, O_RDONLY | O_CLOEXEC);
        if (netns_fd < 0) {
            dp_err_set(err, "cannot open network namespace %s (%s); is the lab up? (distriproc lab up)",
                       path, strerror(errno));
            free(argv);
            return -1;
        }
    }
    pid_t pid = fork();
    if (pid < 0) {
        dp_err_set(err, "fork for criu failed: %s", strerror(errno));
        if (netns_fd >= 0)
            close(netns_fd);
        free(argv);
        return -1;
    }
    if (pid == 0)
        dp_criu_exec(criu, argv, netns_fd, out_fd);
    if (netns_fd >= 0)
        close(netns_fd);
    free(argv);
    *pid_out = pid;
    return 0;
}

int dp_criu_start(const char *const args[], const struct dp_criu_run_opts *o,
                  struct dp_criu_proc *p, struct dp_err *err)
{
    memset(p, 0, sizeof(*p));
    p->pid = -1;
    p->pidfd = -1;
    snprintf(p->what, sizeof(p->what), "criu %s", args[0] ? args[0] : "");
    if (o && o->log_path)
        snprintf(p->log_path, sizeof(p->log_path), "%s", o->log_path);
    p->timeout_s = o ? o->timeout_s : 0;
    /* A dump stops the workload and a restore keeps it waiting: spare both
     * CRIU's kernel probing (see kdat.h). */
    char criu[PATH_MAX];
    if (args[0] && (strcmp(args[0], "dump") == 0 || strcmp(args[0], "restore") == 0) &&
        dp_criu_find(criu, sizeof(criu), err) == 0)
        dp_kdat_prime_once(criu);
    int out_fd = -1;
    if (o && o->quiet_stdout) {
        out_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (out_fd < 0) {
            dp_err_set(err, "cannot open /dev/null: %s", strerror(errno));
            return -1;
        }
    }
    int rc = spawn(args, o ? o->netns : NULL, out_fd, &p->pid, NULL, 0, err);
    if (out_fd >= 0)
        close(out_fd);
    if (rc < 0)
        return -1;
    if (p->timeout_s > 0)
        p->deadline_ns = dp_now_ns() + (uint64_t)(p->timeout_s * 1e9);
    p->pidfd = (int)syscall(SYS_pidfd_open, p->pid, 0);
    return 0;
}

int dp_criu_poll(struct dp_criu_proc *p, int *status)
{
    if (p->pid <= 0) {
        /* Already reaped (or never started): report what we saw then. */
        if (status)
            *status = p->exited ? p->status : 255 << 8;
        return 0;
    }
    int st = 0;
    pid_t r;
    while ((r = waitpid(p->pid, &st, WNOHANG)) < 0 && errno == EINTR)
        ;
    if (r == 0)
        return 1;
    if (r < 0)
        st = 255 << 8; /* reaped by someone else: its status is lost, count it as failed */
    p->exited = 1;
    p->status = st;
    if (status)
        *status = st;
    if (p->pidfd >= 0)
        close(p->pidfd);
    p->pidfd = -1;
    p->pid = -1;
    return 0;
}

void dp_criu_kill(struct dp_criu_proc *p)
{
    if (p->pid <= 0)
        return;
    kill(p->pid, SIGKILL);
    int st = SIGKILL; /* as if killed, should waitpid fail */
    while (waitpid(p->pid, &st, 0) < 0 && errno == EINTR)
        ;
    p->exited = 1;
    p->status = st;
    if (p->pidfd >= 0)
        close(p->pidfd);
    p->pidfd = -1;
    p->pid = -1;
}

/* Waits for exit or the deadline. Returns 1 if exited (status set), 0 on timeout. */
static int wait_bounded(struct dp_criu_proc *p, int *status)
{
    for (;;) {
        if (dp_criu_poll(p, status) == 0)
            return 1;
        int ms = 1000;
        if (p->deadline_ns) {
            uint64_t now = dp_now_ns();
            if (now >= p->deadline_ns)
                return 0;
            uint64_t left = (p->deadline_ns - now) / 1000000 + 1;
            if (left < (uint64_t)ms)
                ms = (int)left;
        }
        if (p->pidfd >= 0) {
            struct pollfd pfd = {.fd = p->pidfd, .events = POLLIN};
            poll(&pfd, 1, ms);
        } else {
            /* No pidfd (old kernel): poll the child every 10 ms. */
            struct timespec ts = {0, 10 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
}

void dp_criu_print_log_tail(const char *path, int n)
{
    uint8_t *data;
    size_t len;
    struct dp_err err;
    if (!path || !*path)
        return;
    if (dp_read_file(path, &data, &len, &err) < 0) {
        fprintf(stderr, "  (no criu log to show: %s)\n", err.msg);
        return;
    }
    /* Walk back n newlines from the end (ignoring a final one). */
    size_t start = len;
    if (start > 0 && data[start - 1] == '\n')
        start--;
    int lines = 0;
    while (start > 0) {
        if (data[start - 1] == '\n' && ++lines == n)
            break;
        start--;
    }
    fprintf(stderr, "---- last %d lines of %s ----\n", n, path);
    fwrite(data + start, 1, len - start, stderr);
    if (len > 0 && data[len - 1] != '\n')
        fputc('\n', stderr);
    fprintf(stderr, "---- end of criu log ----\n");
    free(data);
}

/* The last "Error (" line of a criu log that says why, skipping the summary
 * ("Dumping FAILED.") and a harmless rlimit complaint criu logs on every run. */
static void last_error_line(const char *path, char *out, size_t len)
{
    out[0] = '\0';
    uint8_t *data;
    size_t n;
    struct dp_err err;
    if (!path || !*path || dp_read_file(path, &data, &n, &err) < 0)
        return;
    char *line = (char *)data;
    while (line && *line) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        char *e = strstr(line, "Error (");
        if (e && !strstr(e, "FAILED") && !strstr(e, "rlimit:"))
            snprintf(out, len, "%s", e);
        line = nl ? nl + 1 : NULL;
    }
    free(data);
}

static const char *hint_for(const char *what, const char *why)
{
    if (strstr(why, "session leader"))
        return "the tree's session leader is outside the dumped tree: start the workload as a session "
               "leader in its own pid namespace ('distriproc lab exec HOST --container', or "
               "'unshare --pid --fork setsid CMD'), or dump and restore it with --shell-job";
    if (strstr(what, "dump"))
        return "usual causes: a resource CRIU cannot dump "
               "(a terminal: use --shell-job; a socket to outside the tree; a file in another mount namespace), "
               "or a TCP connection without --tcp-established";
    if (strstr(what, "restore"))
        return "usual causes: a pid or address already in use, "
               "a file that changed since the dump (--file-validation), or a netns without the dumped addresses";
    return "run it by hand to see why; 'make deps' reinstalls criu into .deps/, " DP_CRIU_ENV " picks another";
}

int dp_criu_finish(struct dp_criu_proc *p, struct dp_err *err)
{
    int status = 0;
    if (!wait_bounded(p, &status)) {
        dp_criu_kill(p);
        if (p->log_path[0])
            dp_criu_print_log_tail(p->log_path, DP_CRIU_LOG_TAIL);
        dp_err_set(err, "%s did not finish within %.0f s and was killed (SIGKILL)%s%s; "
                   "if it was a lazy restore, check that the lazy-pages daemon is alive",
                   p->what, p->timeout_s, p->log_path[0] ? "; log: " : "", p->log_path);
        return -1;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (p->log_path[0])
        dp_criu_print_log_tail(p->log_path, DP_CRIU_LOG_TAIL);
    char how[64];
    if (WIFEXITED(status))
        snprintf(how, sizeof(how), "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(how, sizeof(how), "was killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(how, sizeof(how), "ended with wait status %d", status);
    if (WIFEXITED(status) && (WEXITSTATUS(status) == 126 || WEXITSTATUS(status) == 127))
        dp_err_set(err, "%s %s: it could not be started (see the message above); run 'make deps' or set %s",
                   p->what, how, DP_CRIU_ENV);
    else {
        char why[240];
        last_error_line(p->log_path, why, sizeof(why));
        dp_err_set(err, "%s %s%s%s; %s%s%s%s", p->what, how, why[0] ? ": " : "", why,
                   hint_for(p->what, why), p->log_path[0] ? " (full log: " : "", p->log_path,
                   p->log_path[0] ? ")" : "");
    }
    return -1;
}

int dp_criu_run(const char *const args[], const struct dp_criu_run_opts *o, struct dp_err *err)
{
    struct dp_criu_proc p;
    if (dp_criu_start(args, o, &p, err) < 0)
        return -1;
    return dp_criu_finish(&p, err);
}

int dp_criu_get_version(struct dp_criu_version *v, struct dp_err *err)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) {
        dp_err_set(err, "pipe: %s", strerror(errno));
        return -1;
    }
    const char *args[] = {"--version", NULL};
    struct dp_criu_proc p;
    memset(&p, 0, sizeof(p));
    char criu[PATH_MAX];
    if (spawn(args, NULL, fds[1], &p.pid, criu, sizeof(criu), err) < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    close(fds[1]);
    p.pidfd = -1;
    p.timeout_s = 30;
    p.deadline_ns = dp_now_ns() + 30ULL * 1000000000ULL;
    snprintf(p.what, sizeof(p.what), "criu --version");
    char out[512];
    size_t used = 0;
    for (;;) { /* criu --version prints two short lines and exits */
        uint64_t now = dp_now_ns();
        if (now >= p.deadline_ns)
            break; /* dp_criu_finish kills it and says so */
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        int pr = poll(&pfd, 1, (int)((p.deadline_ns - now) / 1000000) + 1);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            break;
        ssize_t r = read(fds[0], out + used, sizeof(out) - 1 - used);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        used += (size_t)r;
        if (used == sizeof(out) - 1)
            break;
    }
    out[used] = '\0';
    close(fds[0]);
    if (dp_criu_finish(&p, err) < 0)
        return -1;
    if (dp_criu_parse_version(out, v) < 0) {
        dp_err_set(err, "cannot read a version from '%s --version' (got '%.60s'); run 'make deps'", criu, out);
        return -1;
    }
    struct dp_criu_version min;
    dp_criu_parse_version(DP_CRIU_MIN_VERSION, &min);
    if (dp_criu_version_cmp(v, &min) < 0) {
        dp_err_set(err, "%s is criu %d.%d.%d, DistriProc needs >= %s; run 'make deps' or set %s",
                   criu, v->major, v->minor, v->sublevel, DP_CRIU_MIN_VERSION, DP_CRIU_ENV);
        return -1;
    }
    return 0;
}

static void log_path_in(const char *images_dir, const char *log_file, char *out, size_t len)
{
    snprintf(out, len, "%s/%s", images_dir, log_file);
}

int dp_criu_dump(const struct dp_dump_opts *d, const char *netns, double timeout_s, struct dp_err *err)
{
    struct dp_criu_argv a;
    if (dp_criu_dump_args(d, &a, err) < 0)
        return -1;
    char log[PATH_MAX];
    log_path_in(d->images_dir, d->log_file ? d->log_file : "dump.log", log, sizeof(log));
    struct dp_criu_run_opts o = {.netns = netns, .timeout_s = timeout_s, .log_path = log};
    return dp_criu_run(a.argv, &o, err);
}

int dp_criu_restore(const struct dp_restore_opts *r, const char *netns, double timeout_s, struct dp_err *err)
{
    struct dp_criu_argv a;
    if (dp_criu_restore_args(r, &a, err) < 0)
        return -1;
    char log[PATH_MAX];
    log_path_in(r->images_dir, r->log_file ? r->log_file : "restore.log", log, sizeof(log));
    struct dp_criu_run_opts o = {.netns = netns, .timeout_s = timeout_s, .log_path = log};
    return dp_criu_run(a.argv, &o, err);
}
