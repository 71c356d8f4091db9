/* The lazy-pages daemon's fault path for real, without CRIU: a child process
 * creates a userfaultfd the way CRIU's restore does (features FORK, REMAP,
 * REMOVE, UNMAP; MISSING registration), hands it to the daemon over
 * lazy-pages.socket with CRIU's protocol, then reads and writes its lazy
 * memory from several threads, forks, madvise(MADV_DONTNEED)s, mremap()s and
 * munmap()s, verifying every byte. The daemon serves from a "raw" page source
 * (a file holding the original memory). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <dirent.h>
#include <poll.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "lazyd.h"
#include "pagesrc_file.h"
#include "uffd.h"
#include "util.h"

#define PG 4096ul
#define BASE 0x6f0000000000ul
#define NEWBASE 0x6f8000000000ul
#define NPAGES 2048ul
#define NTHREADS 4

static char g_dir[256];

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Original content of the word at address a (of the checkpointed memory). */
static uint64_t orig(uint64_t a) { return mix(a); }

static int verify_page(const uint64_t *p, uint64_t orig_addr)
{
    int bad = 0;
    for (unsigned w = 0; w < PG / 8; w++)
        bad += p[w] != orig(orig_addr + w * 8);
    return bad ? 1 : 0;
}

static int zero_page(const uint64_t *p)
{
    for (unsigned w = 0; w < PG / 8; w++)
        if (p[w])
            return 1;
    return 0;
}

static void write_data_file(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    uint64_t *buf = malloc(PG);
    for (uint64_t p = 0; p < NPAGES; p++) {
        for (unsigned w = 0; w < PG / 8; w++)
            buf[w] = orig(BASE + p * PG + w * 8);
        assert_int_equal(dp_write_full(fd, buf, PG), 0);
    }
    free(buf);
    close(fd);
}

/* ---- the task (what CRIU would have restored) ---- */

struct thr { int id; int errors; };

static void *reader(void *arg)
{
    struct thr *t = arg;
    /* Interleaved pages: the threads fault concurrently on neighbours. */
    for (uint64_t p = (uint64_t)t->id; p < 1024; p += NTHREADS) {
        uint64_t *pg = (uint64_t *)(BASE + p * PG);
        t->errors += verify_page(pg, BASE + p * PG);
        pg[1] = ~orig(BASE + p * PG + 8); /* a write after the read */
        t->errors += pg[1] != ~orig(BASE + p * PG + 8);
    }
    /* Writes first on never-touched pages: the old data must be there. */
    for (uint64_t p = 1024 + (uint64_t)t->id; p < 1400; p += NTHREADS) {
        uint64_t *pg = (uint64_t *)(BASE + p * PG);
        pg[0] = 42;
        t->errors += pg[0] != 42;
        t->errors += pg[2] != orig(BASE + p * PG + 16);
    }
    return NULL;
}

static int task_work(int scenario)
{
    int errors = 0;
    if (scenario == 0) {
        pthread_t th[NTHREADS];
        struct thr ts[NTHREADS];
        for (int i = 0; i < NTHREADS; i++) {
            ts[i].id = i;
            ts[i].errors = 0;
            pthread_create(&th[i], NULL, reader, &ts[i]);
        }
        for (int i = 0; i < NTHREADS; i++) {
            pthread_join(th[i], NULL);
            errors += ts[i].errors;
        }
        /* kernel-mode fault: write() reads lazy memory inside the kernel */
        int pfd[2];
        if (pipe(pfd) == 0) {
            uint64_t got[PG / 8];
            if (write(pfd[1], (void *)(BASE + 1500 * PG), PG) != (ssize_t)PG ||
                dp_read_full(pfd[0], got, PG) != 0)
                errors++;
            else
                errors += verify_page(got, BASE + 1500 * PG);
            close(pfd[0]);
            close(pfd[1]);
        }
    } else if (scenario == 1) {
        /* fork: the parent touched the first half; children read all of it. */
        for (uint64_t p = 0; p < NPAGES / 2; p++)
            errors += verify_page((uint64_t *)(BASE + p * PG), BASE + p * PG);
        pid_t kids[2];
        for (int k = 0; k < 2; k++) {
            kids[k] = fork();
            if (kids[k] == 0) {
                int e = 0;
                for (uint64_t p = 0; p < NPAGES; p++) {
                    uint64_t *pg = (uint64_t *)(BASE + p * PG);
                    e += verify_page(pg, BASE + p * PG);
                    pg[0] = 1000 + (uint64_t)k;        /* private to this child */
                    e += pg[0] != 1000 + (uint64_t)k;
                }
                _exit(e > 255 ? 255 : e);
            }
        }
        /* meanwhile the parent writes the second half: children never see it */
        for (uint64_t p = NPAGES / 2; p < NPAGES; p++) {
            uint64_t *pg = (uint64_t *)(BASE + p * PG);
            pg[3] = 7;
            errors += pg[3] != 7 || pg[4] != orig(BASE + p * PG + 32);
        }
        for (int k = 0; k < 2; k++) {
            int st;
            if (waitpid(kids[k], &st, 0) != kids[k] || !WIFEXITED(st) || WEXITSTATUS(st))
                errors++;
        }
    } else if (scenario == 2) {
        /* REMOVE: fetched pages and never-touched pages both read as zero */
        for (uint64_t p = 100; p < 150; p++)
            errors += verify_page((uint64_t *)(BASE + p * PG), BASE + p * PG);
        madvise((void *)(BASE + 100 * PG), 100 * PG, MADV_DONTNEED);
        for (uint64_t p = 100; p < 200; p++)
            errors += zero_page((uint64_t *)(BASE + p * PG));
        for (uint64_t p = 200; p < 210; p++)
            errors += verify_page((uint64_t *)(BASE + p * PG), BASE + p * PG);
        /* REMAP: touched and untouched pages follow the move */
        for (uint64_t p = 1000; p < 1010; p++)
            errors += verify_page((uint64_t *)(BASE + p * PG), BASE + p * PG);
        void *m = mremap((void *)(BASE + 1000 * PG), 100 * PG, 100 * PG, MREMAP_MAYMOVE | MREMAP_FIXED,
                         (void *)NEWBASE);
        if (m != (void *)NEWBASE)
            errors += 1000;
        for (uint64_t p = 0; p < 100; p++)
            errors += verify_page((uint64_t *)(NEWBASE + p * PG), BASE + (1000 + p) * PG);
        /* UNMAP, then a new anonymous mapping there is plain memory */
        munmap((void *)(BASE + 1900 * PG), 148 * PG);
        void *z = mmap((void *)(BASE + 1900 * PG), 16 * PG, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (z == MAP_FAILED)
            errors += 1000;
        else
            errors += zero_page(z);
        for (uint64_t p = 1800; p < 1900; p++)
            errors += verify_page((uint64_t *)(BASE + p * PG), BASE + p * PG);
    }
    return errors;
}

/* As criu does: connects to the daemon's lazy-pages socket, waiting up to 5 s
 * for it to listen. Returns the socket or -1. */
static int connect_daemon(void)
{
    char path[300];
    snprintf(path, sizeof(path), "%s/%s", g_dir, DP_LAZY_SOCK_NAME);
    int sk = -1;
    for (int i = 0; i < 500 && sk < 0; i++) {
        sk = dp_lazysock_connect(path);
        if (sk < 0)
            usleep(10000);
    }
    return sk;
}

/* Returns the task's pid; it reports its error count through its exit status
 * after `go` is closed by the caller. */
static pid_t start_task(int scenario, int *done_rd, int *go_wr)
{
    int done[2], go[2];
    assert_int_equal(pipe(done), 0);
    assert_int_equal(pipe(go), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(done[0]);
        close(go[1]);
        void *m = mmap((void *)BASE, NPAGES * PG, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        if (m != (void *)BASE)
            _exit(201);
        int uffd = dp_uffd_open_criu_like();
        if (uffd < 0 || dp_uffd_register_missing(uffd, BASE, NPAGES * PG))
            _exit(202);
        int sk = connect_daemon();
        if (sk < 0 || dp_lazysock_send_task(sk, -12345, -1) || /* a zombie first, as CRIU may */
            dp_lazysock_send_task(sk, getpid(), uffd) || dp_lazysock_send_finished(sk))
            _exit(203);
        close(sk);
        close(uffd);
        int e = task_work(scenario);
        char c = 1;
        if (write(done[1], &c, 1) != 1)
            _exit(204);
        if (read(go[0], &c, 1) < 0)
            _exit(205);
        _exit(e > 200 ? 200 : e);
    }
    close(done[1]);
    close(go[0]);
    *done_rd = done[0];
    *go_wr = go[1];
    return pid;
}

/* The daemon in a child, serving from the raw file, or from the source
 * open_src makes (NULL: the raw file). */
static pid_t start_daemon_src(const char *prefetch, struct dp_pagesrc *(*open_src)(void))
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct dp_err err = {{0}};
        char spec[400];
        snprintf(spec, sizeof(spec), "%s/mem.raw@0x%lx", g_dir, BASE);
        struct dp_pagesrc *src = open_src ? open_src() : dp_pagesrc_raw_open(spec, &err);
        if (!src)
            _exit(100);
        struct dp_lazyd_opts o = {.workdir = g_dir, .listen_fd = -1, .src = src, .ready_fd = -1};
        if (dp_prefetch_parse(prefetch, &o.prefetch, &err))
            _exit(101);
        alarm(60);
        int rc = dp_lazyd_run(&o);
        src->ops->close(src);
        _exit(rc);
    }
    return pid;
}

static pid_t start_daemon(const char *prefetch) { return start_daemon_src(prefetch, NULL); }

static int wait_bounded(pid_t pid, int seconds)
{
    for (int i = 0; i < seconds * 100; i++) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

/* The number a field of the stats JSON holds, read whole: the first "key"
 * (the total comes before the tasks); -1 if absent or not a bare number
 * followed by ',' or '}'. strstr of "\"fork\": 2" would also match 20..29. */
static long long stats_count(const char *js, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\": ", key);
    const char *p = strstr(js, pat);
    if (!p)
        return -1;
    p += strlen(pat);
    if (*p < '0' || *p > '9')
        return -1;
    char *end;
    unsigned long long v = strtoull(p, &end, 10);
    if (*end != ',' && *end != '}')
        return -1;
    return (long long)v;
}

static void run(int scenario, const char *prefetch)
{
    pid_t d = start_daemon(prefetch);
    int done_rd, go_wr;
    pid_t t = start_task(scenario, &done_rd, &go_wr);
    char c;
    /* bounded: the task reports done, or dies */
    struct timeval tv = {.tv_sec = 30};
    fd_set rs;
    FD_ZERO(&rs);
    FD_SET(done_rd, &rs);
    int ready = select(done_rd + 1, &rs, NULL, NULL, &tv);
    assert_int_equal(ready, 1);
    assert_int_equal(read(done_rd, &c, 1), 1);

    struct dp_err err = {{0}};
    char *js = dp_lazyd_control(g_dir, "stats", &err);
    assert_non_null(js);
    assert_non_null(strstr(js, "\"faults\": "));
    assert_non_null(strstr(js, "\"p99_us\""));
    assert_non_null(strstr(js, "\"remote_fraction\""));
    assert_true(stats_count(js, "faults") > 0);   /* the total counted the faults */
    /* exactly the events the task caused: two forks; one madvise (REMOVE),
     * one mremap (REMAP), and two UNMAPs: the munmap's, and one that the
     * kernel (6.18, measured) reports for the mremap(MREMAP_FIXED) besides
     * its REMAP (without the munmap, the MAP_FIXED mmap over the range
     * reports the second one instead: still 2). */
    assert_int_equal(stats_count(js, "fork"), scenario == 1 ? 2 : 0);
    assert_int_equal(stats_count(js, "remove"), scenario == 2 ? 1 : 0);
    assert_int_equal(stats_count(js, "remap"), scenario == 2 ? 1 : 0);
    assert_int_equal(stats_count(js, "unmap"), scenario == 2 ? 2 : 0);
    free(js);

    close(go_wr);
    assert_int_equal(wait_bounded(t, 30), 0);   /* 0 verification errors */
    assert_int_equal(wait_bounded(d, 10), 0);   /* daemon exits once the task is gone */
    close(done_rd);
}

static void threads_none(void **s) { (void)s; run(0, "none"); }
static void threads_seq(void **s) { (void)s; run(0, "seq:16"); }
static void threads_auto(void **s) { (void)s; run(0, "auto"); }
static void fork_none(void **s) { (void)s; run(1, "none"); }
static void fork_seq(void **s) { (void)s; run(1, "seq:32"); }
static void remove_remap_unmap(void **s) { (void)s; run(2, "none"); }
static void remove_remap_unmap_prefetch(void **s) { (void)s; run(2, "auto"); }
static void stride_threads(void **s) { (void)s; run(0, "stride"); }

static int setup(void **s)
{
    (void)s;
    snprintf(g_dir, sizeof(g_dir), "/tmp/dp-lazyd-test-XXXXXX");
    if (!mkdtemp(g_dir))
        return -1;
    char path[300];
    snprintf(path, sizeof(path), "%s/mem.raw", g_dir);
    write_data_file(path);
    return 0;
}

static int teardown(void **s)
{
    (void)s;
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- the daemon dies while the restore is still running ---- */

static pid_t guard_child(pid_t daemon)
{
    DIR *dir = opendir("/proc");
    struct dirent *e;
    pid_t found = 0;
    while (dir && (e = readdir(dir))) {
        char path[300], buf[512];
        snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
        int fd = open(path, O_RDONLY);
        if (fd < 0)
            continue;
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n <= 0)
            continue;
        buf[n] = 0;
        char *rp = strrchr(buf, ')');
        int ppid = 0;
        if (rp && sscanf(rp + 1, " %*c %d", &ppid) == 1 && ppid == daemon && strstr(buf, "(dp-guard)"))
            found = (pid_t)atoi(e->d_name);
    }
    if (dir)
        closedir(dir);
    return found;
}

/* A fake `criu restore`: connects, forks a task that hands over its uffd
 * (announcing its own pid, or one that cannot be matched to it), and
 * never sends "restore finished". The daemon is SIGKILLed; then the task
 * touches its lazy memory. Without the guard its pages would read as zeros
 * (it would exit 1); with it the fault waits and the guard kills it. The
 * fake criu reaps the task and reports how it ended. */
static void killed_during_restore(int pid_known)
{
    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1), 0); /* the orphaned guard comes to us */
    pid_t d = start_daemon("none");
    int sent[2], go[2], status[2];
    assert_int_equal(pipe(sent), 0);
    assert_int_equal(pipe(go), 0);
    assert_int_equal(pipe(status), 0);
    pid_t criu = fork();
    assert_true(criu >= 0);
    if (criu == 0) {
        int sk = connect_daemon();
        pid_t task = fork();
        if (task == 0) {
            close(go[1]);
            void *m = mmap((void *)BASE, NPAGES * PG, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
            int uffd = dp_uffd_open_criu_like();
            if (sk < 0 || m != (void *)BASE || uffd < 0 || dp_uffd_register_missing(uffd, BASE, NPAGES * PG) ||
                dp_lazysock_send_task(sk, pid_known ? getpid() : 1 << 30, uffd))
                _exit(203);
            close(uffd);
            close(sk);
            char c = 1, buf;
            if (write(sent[1], &c, 1) != 1)
                _exit(204);
            if (read(go[0], &buf, 1) < 0)
                _exit(205);
            int e = 0;
            for (uint64_t p = 0; p < NPAGES; p++)
                e += verify_page((uint64_t *)(BASE + p * PG), BASE + p * PG);
            _exit(e ? 1 : 0);
        }
        int st = 0;
        while (waitpid(task, &st, 0) < 0 && errno == EINTR)
            ;
        if (write(status[1], &st, sizeof(st)) != (ssize_t)sizeof(st))
            _exit(1);
        for (;;)
            pause(); /* still "restoring" */
    }
    close(sent[1]);
    close(go[0]);
    close(status[1]);
    char c;
    assert_int_equal(read(sent[0], &c, 1), 1);
    /* the daemon has the task (and so has the guard) */
    int have = 0;
    for (int i = 0; i < 500 && !have; i++) {
        struct dp_err err = {{0}};
        char *js = dp_lazyd_control(g_dir, "stats", &err);
        have = js && strstr(js, "\"tasks_alive\": 1");
        free(js);
        if (!have)
            usleep(10000);
    }
    assert_true(have);
    /* the guard names itself right after its fork: under load that can
     * come after the daemon already has the task */
    pid_t guard = 0;
    for (int i = 0; i < 500 && guard <= 0; i++) {
        guard = guard_child(d);
        if (guard <= 0)
            usleep(10000);
    }
    assert_true(guard > 0);

    kill(d, SIGKILL);
    assert_int_equal(wait_bounded(d, 10), 128 + SIGKILL);
    close(go[1]); /* the task touches its lazy memory now */

    struct timeval tv = {.tv_sec = 20};
    fd_set rs;
    FD_ZERO(&rs);
    FD_SET(status[0], &rs);
    assert_int_equal(select(status[0] + 1, &rs, NULL, NULL, &tv), 1);
    int st = 0;
    assert_int_equal(read(status[0], &st, sizeof(st)), (ssize_t)sizeof(st));
    /* killed, not finished: it never went on with zeros */
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGKILL);
    /* the guard (ours now) left once the task's memory was gone and the
     * fake criu, hanging on as a real one can, was SIGKILLed after 3 s */
    assert_int_equal(wait_bounded(guard, 15), 1);
    assert_int_equal(wait_bounded(criu, 1), 128 + SIGKILL);
    close(sent[0]);
    close(status[0]);
    prctl(PR_SET_CHILD_SUBREAPER, 0);
}

static void daemon_killed_during_restore(void **s) { (void)s; killed_during_restore(1); }
/* The task's announced pid does not match its sender: no pidfd; the guard
 * finds it as a descendant of the running criu. */
static void daemon_killed_during_restore_pid_unknown(void **s) { (void)s; killed_during_restore(0); }

/* ---- the task dies while the daemon holds its requests ---- */

/* A page source that holds every fetch until the test says so, then
 * completes them from the raw file; meanwhile the test kills and reaps the
 * task, so the daemon meets the task's end (ESRCH from UFFDIO_COPY) at a
 * chosen point, every time. It says 'h' on the pipe rep when it holds the
 * fetch of a faulted page (HELD_A or HELD_B). process() completes them on
 * a byte on ctl, says 'd', then returns once the test writes to resume.
 * With g_held_in_submit, the fetch of HELD_B instead completes those held
 * before it inside submit(), once the test writes to resume, as the remote
 * source does with replies already received. */
#define HELD_A (BASE + 100 * PG)
#define HELD_B (BASE + 1000 * PG)
struct held_src {
    struct dp_pagesrc base;
    int data;                  /* mem.raw */
    struct dp_fetch *held[64];
    size_t n;
};
static int g_held_ctl[2], g_held_rep[2], g_held_resume[2], g_held_in_submit;

/* One byte from fd within 20 s: 1, or 0 (timeout, EOF, error). */
static int byte_within(int fd, char *c)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 20000) == 1 && read(fd, c, 1) == 1;
}

static int held_task_map(struct dp_pagesrc *s, int32_t pid, struct dp_lazymap *map, struct dp_err *err)
{
    (void)s, (void)pid, (void)err;
    return dp_lazymap_add(map, BASE, BASE + NPAGES * PG, BASE, DP_PG_REMOTE) ? -1 : 0;
}

/* Completes every held fetch with the raw file's bytes. */
static void held_complete(struct held_src *h)
{
    size_t n = h->n;
    h->n = 0;
    for (size_t i = 0; i < n; i++) {
        struct dp_fetch *f = h->held[i];
        f->status = dp_pread_full(h->data, f->buf, (size_t)f->npages * PG, f->img - BASE);
        f->done(f);
    }
}

static int held_submit(struct dp_pagesrc *s, struct dp_fetch *f)
{
    struct held_src *h = (struct held_src *)s;
    char c = 'h';
    if (h->n == DP_ARRAY_LEN(h->held) || ((f->img == HELD_A || f->img == HELD_B) && write(g_held_rep[1], &c, 1) != 1))
        return -1;
    if (g_held_in_submit && f->img == HELD_B) {
        if (!byte_within(g_held_resume[0], &c))
            _exit(102);
        held_complete(h);
    }
    h->held[h->n++] = f;
    return 0;
}

static int held_fd(struct dp_pagesrc *s) { (void)s; return g_held_ctl[0]; }
static int held_healthy(struct dp_pagesrc *s) { (void)s; return 1; }

static void held_process(struct dp_pagesrc *s)
{
    char c;
    if (read(g_held_ctl[0], &c, 1) != 1)
        return;
    held_complete((struct held_src *)s);
    c = 'd';
    if (write(g_held_rep[1], &c, 1) != 1 || !byte_within(g_held_resume[0], &c))
        _exit(103);
}

static void held_close(struct dp_pagesrc *s)
{
    close(((struct held_src *)s)->data);
    free(s);
}

static const struct dp_pagesrc_ops held_ops = {
    .name = "held", .task_map = held_task_map, .submit = held_submit, .fd = held_fd,
    .process = held_process, .healthy = held_healthy, .close = held_close,
};

static struct dp_pagesrc *held_open(void)
{
    char path[300];
    snprintf(path, sizeof(path), "%s/mem.raw", g_dir);
    struct held_src *h = calloc(1, sizeof(*h));
    if (!h || (h->data = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return NULL;
    dp_set_nonblock(g_held_ctl[0]); /* process() reads what is there, never waits */
    h->base.ops = &held_ops;
    snprintf(h->base.desc, sizeof(h->base.desc), "held test source");
    return &h->base;
}

/* Reads the word at *(uint64_t *)addr: a fault on a lazy page. */
static void *touch_page(void *addr)
{
    return (void *)(uintptr_t)*(volatile uint64_t *)(uintptr_t)*(const uint64_t *)addr;
}

/* The task: a thread faults HELD_A at once; on 't' on cmd a second one
 * faults HELD_B; on 'u' it unregisters its memory with its own copy of the
 * uffd (the faulting threads wake and go on with zeros, UFFDIO_COPY gets
 * ENOENT from then on), joins them and says 'u' on ack. Then it waits for
 * its SIGKILL. */
static pid_t start_held_task(int cmd, int ack)
{
    pid_t task = fork();
    assert_true(task >= 0);
    if (task)
        return task;
    void *m = mmap((void *)BASE, NPAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                   -1, 0);
    int uffd = dp_uffd_open_criu_like();
    int sk = connect_daemon();
    if (m != (void *)BASE || uffd < 0 || dp_uffd_register_missing(uffd, BASE, NPAGES * PG) || sk < 0 ||
        dp_lazysock_send_task(sk, getpid(), uffd) || dp_lazysock_send_finished(sk))
        _exit(203);
    close(sk);
    static const uint64_t addr[2] = {HELD_A, HELD_B};
    pthread_t th[2];
    int n = 0;
    pthread_create(&th[n++], NULL, touch_page, (void *)&addr[0]);
    char c;
    while (byte_within(cmd, &c)) {
        if (c == 't' && n == 1) {
            pthread_create(&th[n++], NULL, touch_page, (void *)&addr[1]);
        } else if (c == 'u') {
            struct uffdio_range r = {.start = BASE, .len = NPAGES * PG};
            if (ioctl(uffd, UFFDIO_UNREGISTER, &r))
                _exit(205);
            for (int i = 0; i < n; i++)
                pthread_join(th[i], NULL);
            if (write(ack, &c, 1) != 1)
                _exit(206);
        }
    }
    for (;;)
        pause();
}

static void expect_byte(int fd, char want)
{
    char c = 0;
    assert_true(byte_within(fd, &c));
    assert_int_equal(c, want);
}

/* SIGKILLs the task and reaps it: its memory is gone, UFFDIO_COPY says ESRCH. */
static void kill_reap(pid_t task)
{
    int st;
    kill(task, SIGKILL);
    assert_int_equal(waitpid(task, &st, 0), task);
    assert_true(WIFSIGNALED(st));
}

/* in_submit 0: both faults' fetches are held; the task unregisters, so
 * each completion gets ENOENT and waits on the retry list; the task is
 * killed. The next retry gets ESRCH for the first install and ends the
 * task, which frees the second request: the retry loop must not touch it
 * again (it did: "free(): double free detected in tcache 2"; ASan:
 * heap-use-after-free in retry_installs).
 * in_submit 1 (prefetch on): the task is killed while HELD_B's fetch is
 * being submitted, and the held ones complete inside that submit: the
 * first ends the task, whose map goes; the fault path must not use the
 * faulted page's region after req_submit() (ASan: heap-use-after-free).
 * Either way the daemon exits 0 once its only task is gone. */
static void task_dies_while_held(int in_submit)
{
    assert_int_equal(pipe(g_held_ctl), 0);
    assert_int_equal(pipe(g_held_rep), 0);
    assert_int_equal(pipe(g_held_resume), 0);
    g_held_in_submit = in_submit;
    pid_t d = start_daemon_src(in_submit ? "seq:64" : "none", held_open);
    int cmd[2], ack[2];
    assert_int_equal(pipe(cmd), 0);
    assert_int_equal(pipe(ack), 0);
    pid_t task = start_held_task(cmd[0], ack[1]);
    expect_byte(g_held_rep[0], 'h');           /* HELD_A's fetch held */
    assert_int_equal(write(cmd[1], "t", 1), 1);
    expect_byte(g_held_rep[0], 'h');           /* HELD_B's fetch submitted */
    if (!in_submit) {
        assert_int_equal(write(cmd[1], "u", 1), 1);
        expect_byte(ack[0], 'u');
        assert_int_equal(write(g_held_ctl[1], "c", 1), 1);
        expect_byte(g_held_rep[0], 'd');       /* both installs on the retry list (ENOENT) */
    }
    kill_reap(task);
    assert_int_equal(write(g_held_resume[1], "g", 1), 1);
    assert_int_equal(wait_bounded(d, 10), 0);
    int fds[] = {g_held_ctl[0], g_held_ctl[1], g_held_rep[0], g_held_rep[1], g_held_resume[0], g_held_resume[1],
                 cmd[0], cmd[1], ack[0], ack[1]};
    for (size_t i = 0; i < DP_ARRAY_LEN(fds); i++)
        close(fds[i]);
}

static void task_dies_with_installs_to_retry(void **s) { (void)s; task_dies_while_held(0); }
static void task_dies_inside_a_fault_submit(void **s) { (void)s; task_dies_while_held(1); }

int main(void)
{
    dp_log_set_level(DP_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(threads_none),
        cmocka_unit_test(threads_seq),
        cmocka_unit_test(threads_auto),
        cmocka_unit_test(stride_threads),
        cmocka_unit_test(fork_none),
        cmocka_unit_test(fork_seq),
        cmocka_unit_test(remove_remap_unmap),
        cmocka_unit_test(remove_remap_unmap_prefetch),
        cmocka_unit_test(daemon_killed_during_restore),
        cmocka_unit_test(daemon_killed_during_restore_pid_unknown),
        cmocka_unit_test(task_dies_with_installs_to_retry),
        cmocka_unit_test(task_dies_inside_a_fault_submit),
    };
    return cmocka_run_group_tests_name("lazyd_uffd", tests, setup, teardown);
}
