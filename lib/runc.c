/* runc: finding, checking and running runc (see runc.h). */
#include "runc.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "orch.h"
#include "perm.h"

/* ---- pure: versions, IDs, argv ------------------------------------------------ */

int dp_runc_parse_version(const char *text, struct dp_criu_version *v)
{
    if (!text)
        return -1;
    const char *p = strstr(text, "runc version ");
    if (!p)
        return -1;
    return dp_criu_parse_version(p + strlen("runc version "), v);
}

int dp_runc_id_ok(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > 1024 || strcmp(id, ".") == 0 || strcmp(id, "..") == 0)
        return 0;
    return strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+.-") == n;
}

/* runc [--root R] [--criu C] ACTION */
static void add_global(const struct dp_runc *r, int with_criu, const char *action, struct dp_criu_argv *a)
{
    dp_criu_argv_init(a);
    dp_criu_argv_add(a, r->path);
    if (r->root) {
        dp_criu_argv_add(a, "--root");
        dp_criu_argv_add(a, r->root);
    }
    if (with_criu) {
        dp_criu_argv_add(a, "--criu");
        dp_criu_argv_add(a, r->criu);
    }
    dp_criu_argv_add(a, action);
}

/* The container ID goes last; a bad one or an overflowed argv is refused here
 * rather than reaching runc as a surprising command line. */
static int finish(struct dp_criu_argv *a, const char *id, struct dp_err *err)
{
    if (!dp_runc_id_ok(id)) {
        dp_err_set(err, "'%s' is not a container ID runc accepts (letters, digits, _ + . -)", id ? id : "");
        return -1;
    }
    dp_criu_argv_add(a, id);
    if (a->overflow) {
        dp_err_set(err, "runc command line too long");
        return -1;
    }
    return 0;
}

/* The image and work paths both actions take, in runc's order. */
static void add_paths(struct dp_criu_argv *a, const char *image_path, const char *work_path)
{
    dp_criu_argv_add(a, "--image-path");
    dp_criu_argv_add(a, image_path);
    dp_criu_argv_add(a, "--work-path");
    dp_criu_argv_add(a, work_path);
}

/* The CRIU options runc passes through on checkpoint and restore alike. */
static void add_criu_flags(struct dp_criu_argv *a, int tcp_established, int shell_job, int file_locks)
{
    if (tcp_established)
        dp_criu_argv_add(a, "--tcp-established");
    if (shell_job)
        dp_criu_argv_add(a, "--shell-job");
    if (file_locks)
        dp_criu_argv_add(a, "--file-locks");
}

int dp_runc_checkpoint_args(const struct dp_runc *r, const struct dp_runc_checkpoint_opts *o,
                            struct dp_criu_argv *a, struct dp_err *err)
{
    if (!o->image_path || !o->work_path) {
        dp_err_set(err, "runc checkpoint needs an image path and a work path");
        return -1;
    }
    add_global(r, 1, "checkpoint", a);
    add_paths(a, o->image_path, o->work_path);
    if (o->leave_running)
        dp_criu_argv_add(a, "--leave-running");
    if (o->lazy_pages) {
        /* runc checks that the status fd is open for writing: never stdin */
        if (!o->page_server || o->status_fd < 1) {
            dp_err_set(err, "runc checkpoint --lazy-pages needs a page server address and a status fd (not 0)");
            return -1;
        }
        dp_criu_argv_add(a, "--lazy-pages");
        dp_criu_argv_add(a, "--page-server");
        dp_criu_argv_add(a, o->page_server);
        dp_criu_argv_add(a, "--status-fd");
        dp_criu_argv_addf(a, "%d", o->status_fd);
    }
    add_criu_flags(a, o->tcp_established, o->shell_job, o->file_locks);
    return finish(a, o->id, err);
}

int dp_runc_restore_args(const struct dp_runc *r, const struct dp_runc_restore_opts *o, struct dp_criu_argv *a,
                         struct dp_err *err)
{
    if (!o->image_path || !o->work_path || !o->bundle) {
        dp_err_set(err, "runc restore needs an image path, a work path and a bundle");
        return -1;
    }
    add_global(r, 1, "restore", a);
    add_paths(a, o->image_path, o->work_path);
    dp_criu_argv_add(a, "--bundle");
    dp_criu_argv_add(a, o->bundle);
    if (o->pid_file) {
        dp_criu_argv_add(a, "--pid-file");
        dp_criu_argv_add(a, o->pid_file);
    }
    if (o->lazy_pages)
        dp_criu_argv_add(a, "--lazy-pages");
    if (o->detach)
        dp_criu_argv_add(a, "--detach");
    add_criu_flags(a, o->tcp_established, o->shell_job, o->file_locks);
    return finish(a, o->id, err);
}

int dp_runc_simple_args(const struct dp_runc *r, const char *action, const char *const *args,
                        struct dp_criu_argv *a, struct dp_err *err)
{
    add_global(r, 0, action, a);
    for (size_t i = 0; args && args[i]; i++)
        dp_criu_argv_add(a, args[i]);
    if (a->overflow) {
        dp_err_set(err, "runc command line too long");
        return -1;
    }
    return 0;
}

int dp_runc_state_parse(const char *json, size_t len, struct dp_runc_state *st, struct dp_err *err)
{
    memset(st, 0, sizeof(*st));
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        dp_err_set(err, "runc state printed no valid JSON: %s", jerr.text);
        return -1;
    }
    json_t *pid = json_object_get(root, "pid");
    const char *status = json_string_value(json_object_get(root, "status")),
               *bundle = json_string_value(json_object_get(root, "bundle")),
               *rootfs = json_string_value(json_object_get(root, "rootfs"));
    int rc = -1;
    if (!json_is_integer(pid) || json_integer_value(pid) < 0 || json_integer_value(pid) > INT32_MAX || !status ||
        !bundle || !rootfs) {
        dp_err_set(err, "runc state lacks pid, status, bundle or rootfs");
    } else if (strlen(status) >= sizeof(st->status) || strlen(bundle) >= sizeof(st->bundle) ||
               strlen(rootfs) >= sizeof(st->rootfs)) {
        dp_err_set(err, "runc state: a field is too long");
    } else {
        st->pid = (int)json_integer_value(pid);
        strcpy(st->status, status);
        strcpy(st->bundle, bundle);
        strcpy(st->rootfs, rootfs);
        rc = 0;
    }
    json_decref(root);
    return rc;
}

/* ---- finding and checking runc ------------------------------------------------ */

/* runc on PATH, like the shell finds it. */
static int find_on_path(const char *name, char *out, size_t len)
{
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    for (const char *p = path; *p;) {
        const char *e = strchrnul(p, ':');
        if (e > p) {
            int n = snprintf(out, len, "%.*s/%s", (int)(e - p), p, name);
            if (n > 0 && (size_t)n < len && access(out, X_OK) == 0)
                return 0;
        }
        p = *e ? e + 1 : e;
    }
    return -1;
}

int dp_runc_open(struct dp_runc *r, const char *root, struct dp_err *err)
{
    memset(r, 0, sizeof(*r));
    r->root = root;
    const char *env = getenv(DP_RUNC_ENV);
    if (env && *env) {
        if (access(env, X_OK) != 0 || strlen(env) >= sizeof(r->path)) {
            dp_err_set(err, "%s=%s is not an executable file (%s); point it at runc >= %s or unset it to use "
                            "the runc on PATH",
                       DP_RUNC_ENV, env, strerror(errno), DP_RUNC_MIN_VERSION);
            return -1;
        }
        strcpy(r->path, env);
    } else if (find_on_path("runc", r->path, sizeof(r->path)) < 0) {
        dp_err_set(err, "runc not found on PATH; install it with 'make deps' (Debian 12's runc), or set %s to "
                        "a runc >= %s",
                   DP_RUNC_ENV, DP_RUNC_MIN_VERSION);
        return -1;
    }
    if (dp_criu_find(r->criu, sizeof(r->criu), err) < 0)
        return -1;
    const char *argv[] = {r->path, "--version", NULL};
    char *out = NULL;
    struct dp_err rerr = {{0}};
    int st = dp_orch_run(argv, NULL, 30, &out, -1, -1, &rerr);
    if (st < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        dp_err_set(err, "'%s --version' failed (%s); reinstall runc ('make deps') or set %s to a working runc",
                   r->path, st < 0 ? rerr.msg : "non-zero exit", DP_RUNC_ENV);
        free(out);
        return -1;
    }
    if (dp_runc_parse_version(out, &r->version) < 0) {
        dp_err_set(err, "cannot read a version from '%s --version' (got '%.60s'); set %s to runc >= %s", r->path,
                   out, DP_RUNC_ENV, DP_RUNC_MIN_VERSION);
        free(out);
        return -1;
    }
    free(out);
    struct dp_criu_version min;
    dp_criu_parse_version(DP_RUNC_MIN_VERSION, &min);
    if (dp_criu_version_cmp(&r->version, &min) < 0) {
        dp_err_set(err, "%s is runc %d.%d.%d; DistriProc needs runc >= %s (lazy restore with --work-path, "
                        "external network namespaces): install Debian 12's runc ('make deps') or set %s",
                   r->path, r->version.major, r->version.minor, r->version.sublevel, DP_RUNC_MIN_VERSION,
                   DP_RUNC_ENV);
        return -1;
    }
    return 0;
}

/* ---- running runc ------------------------------------------------------------- */

int dp_runc_run(const char *const argv[], const char *netns, const char *log, double timeout_s,
                struct dp_err *err)
{
    int lf = log ? dp_open_log(log, NULL) : -1;
    struct dp_err rerr = {{0}};
    int st = dp_orch_run(argv, netns, timeout_s, NULL, -1, lf, &rerr);
    if (lf >= 0)
        close(lf);
    const char *action = argv[1];
    for (size_t i = 1; argv[i]; i++)
        if (argv[i][0] != '-' && strcmp(argv[i - 1], "--root") && strcmp(argv[i - 1], "--criu")) {
            action = argv[i];
            break;
        }
    if (st < 0) {
        dp_err_set(err, "runc %s: %s", action, rerr.msg);
    } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        dp_err_set(err, "runc %s failed (%s %d)%s%s", action, WIFEXITED(st) ? "exit status" : "signal",
                   WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), log ? "; its messages: " : "", log ? log : "");
    } else {
        return 0;
    }
    if (log)
        dp_criu_print_log_tail(log, 5);
    return -1;
}

pid_t dp_runc_spawn(const char *const argv[], const char *netns, int in_fd, int out_fd, int err_fd,
                    struct dp_err *err)
{
    int nsfd = -1;
    if (netns) {
        char path[PATH_MAX];
        if (dp_netns_path(netns, path, sizeof(path)) < 0 || (nsfd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
            dp_err_set(err, "cannot open the network namespace %s: %s", netns, strerror(errno));
            return -1;
        }
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        dp_err_set(err, "fork: %s", strerror(errno));
        if (nsfd >= 0)
            close(nsfd);
        return -1;
    }
    if (pid == 0) {
        if (nsfd >= 0 && setns(nsfd, CLONE_NEWNET) < 0)
            _exit(126);
        /* dup to high numbers first: a target may be one of 0-2 already */
        int in = fcntl(in_fd, F_DUPFD, 10), out = fcntl(out_fd, F_DUPFD, 10), er = fcntl(err_fd, F_DUPFD, 10);
        if (in < 0 || out < 0 || er < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(er, 2) < 0)
            _exit(126);
        /* own process group: a bound kills runc and its criu swrk together */
        setpgid(0, 0);
        /* runc hands its stdio to the container; nothing else of ours */
        syscall(SYS_close_range, 3U, ~0U, 0U);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    if (nsfd >= 0)
        close(nsfd);
    return pid;
}

int dp_runc_state(const struct dp_runc *r, const char *id, struct dp_runc_state *st, struct dp_err *err)
{
    const char *args[] = {id, NULL};
    struct dp_criu_argv a;
    if (!dp_runc_id_ok(id)) {
        dp_err_set(err, "'%s' is not a container ID runc accepts (letters, digits, _ + . -)", id);
        return -1;
    }
    if (dp_runc_simple_args(r, "state", args, &a, err) < 0)
        return -1;
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0) {
        dp_err_set(err, "pipe: %s", strerror(errno));
        return -1;
    }
    char *out = NULL;
    struct dp_err rerr = {{0}};
    int s = dp_orch_run(a.argv, NULL, 30, &out, -1, pfd[1], &rerr);
    close(pfd[1]);
    char msg[512];
    ssize_t n = read(pfd[0], msg, sizeof(msg) - 1);
    close(pfd[0]);
    msg[n > 0 ? n : 0] = '\0';
    msg[strcspn(msg, "\n")] = '\0';
    int rc = -1;
    if (s < 0) {
        dp_err_set(err, "runc state %s: %s", id, rerr.msg);
    } else if (!WIFEXITED(s) || WEXITSTATUS(s) != 0) {
        if (strstr(msg, "does not exist") || strstr(msg, "not exist"))
            rc = 1;
        else
            dp_err_set(err, "runc state %s failed: %s", id, msg[0] ? msg : "no message");
    } else {
        rc = dp_runc_state_parse(out, strlen(out), st, err) < 0 ? -1 : 0;
    }
    free(out);
    return rc;
}

void dp_runc_force_delete(const struct dp_runc *r, const char *id)
{
    const char *args[] = {"--force", id, NULL};
    struct dp_criu_argv a;
    struct dp_err err;
    if (dp_runc_simple_args(r, "delete", args, &a, &err) < 0)
        return;
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    dp_orch_run(a.argv, NULL, 30, NULL, -1, devnull, &err);
    if (devnull >= 0)
        close(devnull);
}
