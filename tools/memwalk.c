/* memwalk: a deterministic memory workload that verifies every byte it reads.
 *
 * It maps N MiB of private anonymous memory, fills each page with a pattern
 * derived from (seed, page index, page generation) and then walks the pages
 * with a chosen access pattern. Every access verifies the whole page against
 * its expected content; a write then bumps the page's generation and rewrites
 * the page. So any page that is lost, stale (an old generation: a lost write),
 * misplaced or zero-filled by a migration is caught and counted.
 *
 * A tiny TCP listener answers "STAT\n" (counters as one JSON line) and
 * "VERIFY\n" (verify all pages once, then reply). memwalk writes no file and
 * prints only a start line (and a summary when it ends), so CRIU can
 * checkpoint and restore it anywhere.
 *
 * Links only libc, pthread and libm: it is the thing being migrated. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "memwalk_pattern.h"

/* Pages share locks by index modulo this: verification and rewrite of one page
 * are atomic with respect to other memwalk threads, without a lock per page. */
#define LOCK_STRIPES 4096
#define MAX_THREADS 256
#define MAX_REPORTED 10 /* mismatches printed in full to stderr */

struct thread_stats {
    _Atomic uint64_t ops, reads, writes, errors, bad_bytes, verified;
} __attribute__((aligned(64)));

static struct {
    uint64_t mib, npages, seed, duration_s, cold_mib;
    unsigned threads;
    int port;
    double write_ratio;
    struct mw_pattern pattern;
    const char *pattern_text;
    int aligned_sp;
} cfg = {
    .mib = 64, .seed = 1, .threads = 1, .port = 7070, .write_ratio = 0.0,
    .pattern_text = "uniform",
};

static uint8_t *area;
static uint8_t *cold;            /* --cold-mib: filled once, never touched again */
static uint32_t *gens;           /* generation of each page */
static pthread_mutex_t locks[LOCK_STRIPES];
static double *zipf_cdf;         /* zipf only: cdf over ranks */
static uint32_t *zipf_perm;      /* zipf only: rank -> page */
static struct thread_stats stats[MAX_THREADS];
static struct thread_stats verify_stats; /* VERIFY command passes */
static _Atomic uint64_t reported;
static _Atomic int stopping;
/* HOLD parks the walkers: a checkpoint taken while they are parked carries
 * walkers that stay parked on the restored side. PASS then has each walker
 * walk its own part exactly once from its start and park again (pass_gen
 * tells them a pass began, pass_done counts the walkers done); GO frees them. */
static _Atomic int held;
static _Atomic unsigned parked;
static _Atomic uint64_t pass_gen;
static _Atomic unsigned pass_done;

/* The pages of a pattern's walk that walker id owns: [*start, *end). seq
 * and stride: a T-th of the area each; probe: a T-th of the values, the
 * pages after the table. */
static void walker_part(unsigned id, uint64_t table, uint64_t *start, uint64_t *end)
{
    uint64_t n = cfg.npages;
    *start = table + (n - table) * id / cfg.threads;
    *end = table + (n - table) * (id + 1) / cfg.threads;
}

/* Steps walker id takes in one PASS: its part, once (probe: a probe before
 * each value, so twice as many steps). */
static uint64_t walker_pass_steps(unsigned id, uint64_t table)
{
    uint64_t a, b;
    walker_part(id, table, &a, &b);
    return cfg.pattern.kind == MW_PROBE ? 2 * (b - a) : b - a;
}

/* The table of the probe pattern (pages [0, table)); 0 for the others. */
static uint64_t probe_table(void)
{
    if (cfg.pattern.kind != MW_PROBE)
        return 0;
    uint64_t t = cfg.npages * cfg.pattern.table_pct / 100;
    return t ? t : 1;
}
static uint64_t start_ns;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static uint64_t get(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* Verifies one page (and rewrites it with the next generation if write).
 * Returns the number of bad bytes found before any rewrite. */
static uint32_t access_page(uint64_t page, int write, struct thread_stats *st)
{
    struct mw_mismatch mm = {0};
    uint8_t *p = area + page * MW_PAGE_SIZE;
    pthread_mutex_t *lk = &locks[page % LOCK_STRIPES];
    uint32_t gen, bad;

    pthread_mutex_lock(lk);
    gen = gens[page];
    bad = mw_verify(p, cfg.seed, page, gen, &mm);
    if (write) {
        gens[page] = gen + 1;
        mw_fill(p, cfg.seed, page, gen + 1);
    }
    pthread_mutex_unlock(lk);

    add(&st->verified, 1);
    if (bad) {
        add(&st->errors, 1);
        add(&st->bad_bytes, bad);
        if (atomic_fetch_add(&reported, 1) < MAX_REPORTED)
            fprintf(stderr,
                    "memwalk: MISMATCH page %" PRIu64 " (address %p) generation %" PRIu32
                    ": %" PRIu32 " bad bytes, first at offset %" PRIu32
                    " expected 0x%02x got 0x%02x\n",
                    page, (void *)p, gen, bad, mm.offset, mm.expected, mm.got);
    }
    return bad;
}

static void *worker(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    struct thread_stats *st = &stats[id];
    uint64_t rng = mw_rand_seed(cfg.seed, id + 1);
    uint64_t n = cfg.npages;
    /* Threads start at their own parts: spread over the area (seq, stride)
     * or over the values (probe). */
    uint64_t table = probe_table(), cursor, part_end;
    walker_part(id, table, &cursor, &part_end);
    uint64_t gen_seen = atomic_load(&pass_gen), left = 0;

    for (uint64_t i = 0;; i++) {
        if ((i & 63) == 0 && atomic_load_explicit(&stopping, memory_order_relaxed))
            break;
        /* Parked between passes (HOLD); a walker in a pass finishes it first. */
        if (left == 0 && atomic_load_explicit(&held, memory_order_relaxed)) {
            atomic_fetch_add(&parked, 1);
            for (;;) {
                uint64_t g = atomic_load(&pass_gen);
                if (g != gen_seen) {
                    gen_seen = g;
                    left = walker_pass_steps(id, table);
                    walker_part(id, table, &cursor, &part_end);
                    i = 0; /* probe: the pass starts with a probe */
                    break;
                }
                if (!atomic_load(&held) || atomic_load(&stopping))
                    break;
                struct timespec pause = {.tv_nsec = 200000};
                nanosleep(&pause, NULL);
            }
            atomic_fetch_sub(&parked, 1);
            if (atomic_load(&stopping))
                break;
        }
        uint64_t page;
        switch (cfg.pattern.kind) {
        case MW_SEQ:
            page = cursor;
            cursor = cursor + 1 == n ? 0 : cursor + 1;
            break;
        case MW_STRIDE:
            page = cursor;
            cursor = (cursor + cfg.pattern.stride) % n;
            break;
        case MW_ZIPF:
            page = zipf_perm[mw_zipf_rank(zipf_cdf, n, mw_rand_unit(&rng))];
            break;
        case MW_PROBE:
            /* even steps probe the table, odd ones read the next value */
            if ((i & 1) == 0) {
                page = mw_rand_below(&rng, table);
            } else {
                page = cursor;
                cursor = cursor + 1 == n ? table : cursor + 1;
            }
            break;
        default:
            page = mw_rand_below(&rng, n);
            break;
        }
        int write = cfg.write_ratio > 0 && mw_rand_unit(&rng) < cfg.write_ratio;
        access_page(page, write, st);
        add(write ? &st->writes : &st->reads, 1);
        add(&st->ops, 1);
        if (left && --left == 0)
            atomic_fetch_add(&pass_done, 1);
    }
    return NULL;
}

struct totals {
    uint64_t ops, reads, writes, errors, bad_bytes, verified;
};

static void sum_stats(struct totals *t)
{
    memset(t, 0, sizeof(*t));
    for (unsigned i = 0; i < cfg.threads; i++) {
        t->ops += get(&stats[i].ops);
        t->reads += get(&stats[i].reads);
        t->writes += get(&stats[i].writes);
        t->errors += get(&stats[i].errors);
        t->bad_bytes += get(&stats[i].bad_bytes);
        t->verified += get(&stats[i].verified);
    }
    t->errors += get(&verify_stats.errors);
    t->bad_bytes += get(&verify_stats.bad_bytes);
    t->verified += get(&verify_stats.verified);
}

static int format_stats(char *buf, size_t len, const char *extra)
{
    struct totals t;
    sum_stats(&t);
    return snprintf(buf, len,
                    "{\"ops\":%" PRIu64 ",\"reads\":%" PRIu64 ",\"writes\":%" PRIu64
                    ",\"errors\":%" PRIu64 ",\"bad_bytes\":%" PRIu64
                    ",\"pages_verified\":%" PRIu64 ",\"uptime_s\":%.3f,\"mib\":%" PRIu64
                    ",\"pages\":%" PRIu64 ",\"threads\":%u,\"pattern\":\"%s\""
                    ",\"write_ratio\":%g,\"seed\":%" PRIu64 ",\"area\":\"%p\",\"cold\":\"%p\""
                    ",\"cold_mib\":%" PRIu64 "%s}\n",
                    t.ops, t.reads, t.writes, t.errors, t.bad_bytes, t.verified,
                    (double)(now_ns() - start_ns) / 1e9, cfg.mib, cfg.npages, cfg.threads,
                    cfg.pattern_text, cfg.write_ratio, cfg.seed, (void *)area, (void *)cold, cfg.cold_mib,
                    extra ? extra : "");
}

/* One full pass over every page; counted apart from the walkers. */
static void verify_all(uint64_t *bad_pages, uint64_t *bad_bytes)
{
    *bad_pages = *bad_bytes = 0;
    for (uint64_t p = 0; p < cfg.npages; p++) {
        uint32_t bad = access_page(p, 0, &verify_stats);
        if (bad) {
            (*bad_pages)++;
            *bad_bytes += bad;
        }
    }
}

static void serve_client(int fd)
{
    char line[64], out[1024];
    size_t n = 0;
    struct timeval tv = {.tv_sec = 5};

    /* A client that connects and says nothing must not block the listener. */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    while (n < sizeof(line) - 1) {
        ssize_t r = read(fd, line + n, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return;
        if (line[n] == '\n')
            break;
        n++;
    }
    line[n] = '\0';
    if (n > 0 && line[n - 1] == '\r')
        line[--n] = '\0';

    int len;
    if (strcmp(line, "STAT") == 0) {
        len = format_stats(out, sizeof(out), NULL);
    } else if (strcmp(line, "VERIFY") == 0) {
        char extra[160];
        uint64_t bad_pages, bad_bytes, t0 = now_ns();
        verify_all(&bad_pages, &bad_bytes);
        snprintf(extra, sizeof(extra),
                 ",\"verify_pages\":%" PRIu64 ",\"verify_errors\":%" PRIu64
                 ",\"verify_bad_bytes\":%" PRIu64 ",\"verify_s\":%.3f",
                 cfg.npages, bad_pages, bad_bytes, (double)(now_ns() - t0) / 1e9);
        len = format_stats(out, sizeof(out), extra);
    } else if (strcmp(line, "HOLD") == 0) {
        /* Park every walker, then report: ops stays where it is until GO. */
        atomic_store(&held, 1);
        uint64_t t0 = now_ns();
        while (atomic_load(&parked) < cfg.threads && now_ns() - t0 < 5000000000ull) {
            struct timespec ms = {.tv_nsec = 1000000};
            nanosleep(&ms, NULL);
        }
        char extra[64];
        snprintf(extra, sizeof(extra), ",\"held\":%s", atomic_load(&parked) == cfg.threads ? "true" : "false");
        len = format_stats(out, sizeof(out), extra);
    } else if (strcmp(line, "PASS") == 0) {
        /* Every walker walks its own part once from its start, then parks;
         * the reply comes when all are done (or after 600 s, pass_done false):
         * one pass over the memory (probe: over the values), timed here. */
        atomic_store(&held, 1);
        atomic_store(&pass_done, 0);
        uint64_t t0 = now_ns(), steps = 0, table = probe_table();
        for (unsigned t = 0; t < cfg.threads; t++)
            steps += walker_pass_steps(t, table);
        atomic_fetch_add(&pass_gen, 1);
        bool done = false;
        while (now_ns() - t0 < 600ull * 1000000000ull) {
            if (atomic_load(&pass_done) >= cfg.threads) {
                done = true;
                break;
            }
            struct timespec pause = {.tv_nsec = 200000};
            nanosleep(&pause, NULL);
        }
        char extra[128];
        snprintf(extra, sizeof(extra), ",\"pass_done\":%s,\"pass_s\":%.4f,\"pass_steps\":%" PRIu64,
                 done ? "true" : "false", (double)(now_ns() - t0) / 1e9, steps);
        len = format_stats(out, sizeof(out), extra);
    } else if (strcmp(line, "GO") == 0) {
        atomic_store(&held, 0);
        len = format_stats(out, sizeof(out), NULL);
    } else {
        len = snprintf(out, sizeof(out),
                       "{\"error\":\"unknown command; send STAT, VERIFY, HOLD, PASS or GO followed by a "
                       "newline\"}\n");
    }
    if (len > 0) {
        const char *p = out;
        size_t left = (size_t)len < sizeof(out) ? (size_t)len : sizeof(out) - 1;
        while (left > 0) {
            ssize_t w = write(fd, p, left);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                break;
            p += w;
            left -= (size_t)w;
        }
    }
}

/* --aligned-sp: a thread that waits in pause() with its stack pointer on a
 * page boundary, as any thread's may be by chance (the main thread's stack
 * top is randomized in 16-byte steps: 1 dump in 256). CRIU's is_stack()
 * (criu/mem.c) then keeps every page of the dump out of the lazy set, so a
 * test can make that chance a certainty. The stack it points at is a
 * mapping of its own with room below the boundary for a signal frame. */
static void *aligned_sp_thread(void *arg)
{
    uint8_t *top = arg;
    for (;;) {
#if defined(__x86_64__)
        __asm__ volatile("mov %%rsp, %%r12\n\t"
                         "mov %0, %%rsp\n\t"
                         "mov %1, %%eax\n\t"
                         "syscall\n\t"
                         "mov %%r12, %%rsp"
                         :
                         : "r"(top), "i"(SYS_pause)
                         : "rax", "rcx", "r11", "r12", "memory");
#else
        (void)top;
        pause(); /* no page-aligned stack pointer here: the option does nothing */
#endif
    }
    return NULL;
}

/* Plain blocking accept loop in its own thread: survives checkpoint/restore,
 * where the blocked accept() is simply restarted. */
static void *stat_server(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno != EINTR && errno != ECONNABORTED)
                usleep(10000); /* e.g. EMFILE: do not spin */
            continue;
        }
        serve_client(fd);
        close(fd);
    }
    return NULL;
}

static int listen_on(int port, int *bound_port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_ANY)};
    socklen_t sl = sizeof(sa);
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 64) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    *bound_port = ntohs(sa.sin_port);
    return fd;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: memwalk [--mib N] [--threads T] [--pattern seq|uniform|zipf:S|stride:K|probe:P]\n"
            "               [--write-ratio R] [--port P] [--seed S] [--duration SEC]\n"
            "               [--cold-mib N] [--aligned-sp]\n"
            "\n"
            "Deterministic memory workload: fills N MiB of private anonymous memory with a\n"
            "pattern derived from each page's index and generation, then walks it. Every\n"
            "access verifies every byte of the page; a write (probability R) then moves the\n"
            "page to its next generation. Mismatches are counted and the first %d reported\n"
            "on stderr.\n"
            "\n"
            "  --mib N          memory size in MiB (default 64)\n"
            "  --threads T      walker threads (default 1, max %d)\n"
            "  --pattern P      seq: each thread walks pages in order; uniform: random pages;\n"
            "                   zipf:S: random with zipf skew S over a fixed scattering of\n"
            "                   the pages; stride:K: every K-th page; probe:P: a random page\n"
            "                   of the first P%% (a table) before each next page of the rest,\n"
            "                   in order, per thread (default uniform)\n"
            "  --write-ratio R  fraction of accesses that rewrite the page, 0..1 (default 0)\n"
            "  --port P         TCP port of the STAT listener on 0.0.0.0 (default 7070,\n"
            "                   0 = any free port, printed in the start line)\n"
            "  --seed S         seed of pattern and access choices (default 1)\n"
            "  --duration SEC   stop after SEC seconds and print a summary (default 0 =\n"
            "                   run until killed)\n"
            "  --cold-mib N     also map N MiB of cold memory: filled once at start, then\n"
            "                   never touched (a mapping of its own between two PROT_NONE\n"
            "                   guard pages, so the kernel cannot merge it with another);\n"
            "                   for hot/cold classification tests (default 0)\n"
            "  --aligned-sp     one more thread, parked for good with its stack pointer on a\n"
            "                   page boundary (x86_64): a dump then gets CRIU's is_stack()\n"
            "                   wrong for every page (criu/mem.c); for the tests of that\n"
            "\n"
            "TCP requests (one per connection): 'STAT\\n' -> one JSON line of counters;\n"
            "'VERIFY\\n' -> verify every page once, then the counters plus the result;\n"
            "'HOLD\\n' -> park the walkers, then the counters; 'PASS\\n' -> each walker walks\n"
            "its own part once from its start and parks again, then the counters with\n"
            "pass_s (how long); 'GO\\n' -> the walkers run freely again.\n"
            "Exit status: 0 if no mismatch was ever seen, 1 otherwise, 2 on bad usage.\n",
            MAX_REPORTED, MAX_THREADS);
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (!s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    *out = strtoull(s, &end, 0);
    return (*end || errno) ? -1 : 0;
}

static void parse_args(int argc, char **argv)
{
    static const struct option opts[] = {
        {"mib", required_argument, NULL, 'm'},      {"threads", required_argument, NULL, 't'},
        {"pattern", required_argument, NULL, 'p'},  {"write-ratio", required_argument, NULL, 'w'},
        {"port", required_argument, NULL, 'P'},     {"seed", required_argument, NULL, 's'},
        {"duration", required_argument, NULL, 'd'}, {"cold-mib", required_argument, NULL, 'c'},
        {"aligned-sp", no_argument, NULL, 'a'},     {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    uint64_t v;
    char *end;

    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            if (parse_u64(optarg, &cfg.mib) || cfg.mib == 0 || cfg.mib > (1u << 20))
                goto bad;
            break;
        case 't':
            if (parse_u64(optarg, &v) || v == 0 || v > MAX_THREADS)
                goto bad;
            cfg.threads = (unsigned)v;
            break;
        case 'p':
            if (mw_parse_pattern(optarg, &cfg.pattern))
                goto bad;
            cfg.pattern_text = optarg;
            break;
        case 'w':
            cfg.write_ratio = strtod(optarg, &end);
            if (end == optarg || *end || !(cfg.write_ratio >= 0.0 && cfg.write_ratio <= 1.0))
                goto bad;
            break;
        case 'P':
            if (parse_u64(optarg, &v) || v > 65535)
                goto bad;
            cfg.port = (int)v;
            break;
        case 's':
            if (parse_u64(optarg, &cfg.seed))
                goto bad;
            break;
        case 'd':
            if (parse_u64(optarg, &cfg.duration_s))
                goto bad;
            break;
        case 'c':
            if (parse_u64(optarg, &cfg.cold_mib) || cfg.cold_mib > (1u << 20))
                goto bad;
            break;
        case 'a':
            cfg.aligned_sp = 1;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            exit(2);
        }
    }
    if (optind != argc) {
        fprintf(stderr, "memwalk: unexpected argument '%s'\n\n", argv[optind]);
        usage(stderr);
        exit(2);
    }
    mw_parse_pattern(cfg.pattern_text, &cfg.pattern);
    return;
bad:
    fprintf(stderr, "memwalk: invalid value '%s' for --%s (see --help)\n", optarg,
            opts[c == 'm' ? 0 : c == 't' ? 1 : c == 'p' ? 2 : c == 'w' ? 3 : c == 'P' ? 4 : c == 's' ? 5 : c == 'd' ? 6 : 7].name);
    exit(2);
}

int main(int argc, char **argv)
{
    pthread_t tids[MAX_THREADS], server;
    sigset_t sigs;
    int lfd, port, sig = 0;

    parse_args(argc, argv);
    if (sysconf(_SC_PAGESIZE) != MW_PAGE_SIZE) {
        fprintf(stderr, "memwalk: page size is %ld, memwalk supports only %u\n",
                sysconf(_SC_PAGESIZE), MW_PAGE_SIZE);
        return 2;
    }
    cfg.npages = cfg.mib * (1024 * 1024 / MW_PAGE_SIZE);
    start_ns = now_ns();

    lfd = listen_on(cfg.port, &port);
    if (lfd < 0) {
        fprintf(stderr, "memwalk: cannot listen on 0.0.0.0:%d: %s (is another memwalk running? use --port)\n",
                cfg.port, strerror(errno));
        return 2;
    }

    area = mmap(NULL, cfg.npages * MW_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    gens = calloc(cfg.npages, sizeof(*gens));
    if (area == MAP_FAILED || !gens) {
        fprintf(stderr, "memwalk: cannot allocate %" PRIu64 " MiB: %s\n", cfg.mib, strerror(errno));
        return 2;
    }
    for (unsigned i = 0; i < LOCK_STRIPES; i++)
        pthread_mutex_init(&locks[i], NULL);
    if (cfg.pattern.kind == MW_ZIPF) {
        zipf_cdf = malloc(cfg.npages * sizeof(*zipf_cdf));
        zipf_perm = malloc(cfg.npages * sizeof(*zipf_perm));
        if (!zipf_cdf || !zipf_perm) {
            fprintf(stderr, "memwalk: out of memory for the zipf tables\n");
            return 2;
        }
        mw_zipf_cdf(zipf_cdf, cfg.npages, cfg.pattern.zipf_s, pow);
        mw_permutation(zipf_perm, cfg.npages, cfg.seed);
    }
    for (uint64_t p = 0; p < cfg.npages; p++)
        mw_fill(area + p * MW_PAGE_SIZE, cfg.seed, p, 0);
    if (cfg.cold_mib) {
        /* guard page, cold pages, guard page: distinct VMAs on both sides */
        uint64_t cold_pages = cfg.cold_mib * (1024 * 1024 / MW_PAGE_SIZE);
        uint8_t *m = mmap(NULL, (cold_pages + 2) * MW_PAGE_SIZE, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED || mprotect(m, MW_PAGE_SIZE, PROT_NONE) ||
            mprotect(m + (cold_pages + 1) * MW_PAGE_SIZE, MW_PAGE_SIZE, PROT_NONE)) {
            fprintf(stderr, "memwalk: cannot map %" PRIu64 " MiB of cold memory: %s\n", cfg.cold_mib,
                    strerror(errno));
            return 2;
        }
        cold = m + MW_PAGE_SIZE;
        for (uint64_t p = 0; p < cold_pages; p++)
            mw_fill(cold + p * MW_PAGE_SIZE, cfg.seed ^ 0xc01d, p, 0);
    }

    /* Signals go to main only (sigtimedwait below); threads inherit the mask.
     * A handled SIGTERM also works when memwalk is a pid namespace's init. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    if (pthread_create(&server, NULL, stat_server, (void *)(intptr_t)lfd) != 0) {
        fprintf(stderr, "memwalk: cannot start the STAT thread\n");
        return 2;
    }
    if (cfg.aligned_sp) {
        /* 64 KiB of stack below the boundary, a guard page above it */
        uint8_t *st = mmap(NULL, 17 * MW_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        pthread_t sp_tid;
        if (st == MAP_FAILED || mprotect(st + 16 * MW_PAGE_SIZE, MW_PAGE_SIZE, PROT_NONE) ||
            pthread_create(&sp_tid, NULL, aligned_sp_thread, st + 16 * MW_PAGE_SIZE) != 0) {
            fprintf(stderr, "memwalk: cannot start the --aligned-sp thread: %s\n", strerror(errno));
            return 2;
        }
    }
    for (unsigned i = 0; i < cfg.threads; i++) {
        if (pthread_create(&tids[i], NULL, worker, (void *)(uintptr_t)i) != 0) {
            fprintf(stderr, "memwalk: cannot start thread %u\n", i);
            return 2;
        }
    }
    printf("memwalk: pid %d, %" PRIu64 " MiB (%" PRIu64 " pages), %u threads, pattern %s, "
           "write-ratio %g, seed %" PRIu64 ", area %p, STAT on 0.0.0.0:%d",
           (int)getpid(), cfg.mib, cfg.npages, cfg.threads, cfg.pattern_text, cfg.write_ratio,
           cfg.seed, (void *)area, port);
    if (cold)
        printf(", cold %p (%" PRIu64 " MiB)", (void *)cold, cfg.cold_mib);
    printf("\n");
    fflush(stdout);

    /* Wait for a signal or the end of --duration, rechecking the monotonic
     * clock each second (also right after a restore). */
    uint64_t deadline = cfg.duration_s ? start_ns + cfg.duration_s * 1000000000ULL : 0;
    for (;;) {
        struct timespec ts = {.tv_sec = 1};
        if (deadline) {
            uint64_t now = now_ns();
            if (now >= deadline)
                break;
            if (deadline - now < 1000000000ULL) {
                ts.tv_sec = 0;
                ts.tv_nsec = (long)(deadline - now);
            }
        }
        sig = sigtimedwait(&sigs, NULL, &ts);
        if (sig > 0)
            break;
    }
    atomic_store(&stopping, 1);
    for (unsigned i = 0; i < cfg.threads; i++)
        pthread_join(tids[i], NULL);

    char out[1024];
    struct totals t;
    format_stats(out, sizeof(out), NULL);
    printf("memwalk: %s %s", sig > 0 ? strsignal(sig) : "done", out);
    fflush(stdout);
    sum_stats(&t);
    return t.errors ? 1 : 0;
}
