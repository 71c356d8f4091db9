/* forkmem: a small checkpointable workload for the lazy-pages daemon's event
 * handling: fork (children and grandchildren read and write lazy memory),
 * madvise(MADV_DONTNEED) (removed pages must read back as zeros), mremap
 * (moved pages keep their data). Every page's expected content is known:
 * page i holds pat(i, gen[i]) (gen ZERO = all zeros), so every check is exact.
 *
 * It idles on a TCP listener between commands (one line in, one JSON line out):
 *   VERIFY        check every page                  {"pages","errors"}
 *   WRITE N       rewrite every Nth page (gen+1)    {"pages_written"}
 *   REMOVE A B    MADV_DONTNEED pages [A,B), check  {"removed","errors"}
 *   FORK K        K children (each with a grandchild) verify everything, then
 *                 write and re-check their own view while the parent rewrites
 *                 pages; nobody may see another's writes {"children","child_errors","parent_errors"}
 *   REMAP         mremap the second half to a new address, check it  {"errors"}
 *   TOUCH K [P]   first touch of K pages spread evenly over the area (page
 *                 P + j*(pages/K), holes skipped), one at a time, each timed
 *                 around a single volatile read: what one fault costs as the
 *                 application sees it; then the K pages are checked
 *                 {"touched","errors","us":[...]}. Meaningful only on pages not
 *                 touched since the restore (the caller's job: TOUCH first).
 *   TOUCHR A B [S] touch exactly pages A, A+S, ... < B (S default 1) with one
 *                 read each, then check them {"touched","errors"}. gen[] is
 *                 read in full first, so with an empty range (TOUCHR 0 0) the
 *                 same command faults in everything but data pages: the
 *                 caller can then count exactly the faults of the range.
 *   UNMAP A B     munmap pages [A,B) and map fresh zero pages there, check
 *                 them {"unmapped","errors"}
 *   INFO          {"mem","pages","holes":[first,end]}: where the data lives
 *   SUM           {"pages","sum"}: a 64-bit digest of every page's bytes (reads
 *                 them all), equal between processes whose memory is equal
 *   SPAWN P       fork a long-lived child (like a database backend) that serves
 *                 these same commands on port P with its own view of the memory
 *                 (copy-on-write: nobody sees another's writes); it listens
 *                 before the reply {"pid"} is sent; QUIT ends it
 *   PID           {"pid"}
 *   QUIT
 * Usage: forkmem [--mib N] [--port P] [--seed S]. Writes no files. */

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PG 4096ul
#define ZERO_GEN 0xffffffffu

static uint8_t *mem;
static int became_child; /* SPAWN: this process is the new child: switch listeners */
static int child_ls = -1;
static uint32_t *gen;
static uint64_t npages, seed;

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t pat(uint64_t i, uint32_t g, uint64_t w)
{
    return g == ZERO_GEN ? 0 : mix((i << 32) ^ ((uint64_t)g << 12) ^ w ^ seed);
}

static void fill(uint64_t i)
{
    uint64_t *p = (uint64_t *)(mem + i * PG);
    for (uint64_t w = 0; w < PG / 8; w++)
        p[w] = pat(i, gen[i], w);
}

static int check(uint64_t i)
{
    const uint64_t *p = (const uint64_t *)(mem + i * PG);
    for (uint64_t w = 0; w < PG / 8; w++)
        if (p[w] != pat(i, gen[i], w))
            return 1;
    return 0;
}

static uint64_t verify_all(void)
{
    uint64_t e = 0;
    for (uint64_t i = 0; i < npages; i++)
        e += (uint64_t)check(i);
    return e;
}

/* A child's own view: it rewrites pages with its own generations. */
static int child_work(uint32_t id)
{
    uint64_t e = verify_all();
    for (uint64_t i = id % 3; i < npages; i += 3) {
        gen[i] = 100000 + id;
        fill(i);
    }
    e += verify_all();
    return e > 250 ? 250 : (int)e;
}

static void do_fork(int k, char *out, size_t len)
{
    pid_t kids[16];
    if (k < 1 || k > 16) {
        snprintf(out, len, "{\"error\":\"FORK takes 1..16\"}");
        return;
    }
    for (int c = 0; c < k; c++) {
        kids[c] = fork();
        if (kids[c] == 0) {
            pid_t g = fork(); /* a grandchild: the child's own uffd forks too */
            if (g == 0)
                _exit(child_work(1000 + (uint32_t)c));
            int e = child_work((uint32_t)c);
            int st;
            if (g < 0 || waitpid(g, &st, 0) != g || !WIFEXITED(st))
                e += 1;
            else
                e += WEXITSTATUS(st);
            _exit(e > 250 ? 250 : e);
        }
    }
    /* the parent writes meanwhile; the children must not see it */
    uint64_t pe = 0;
    for (uint64_t i = 1; i < npages; i += 5) {
        gen[i] = gen[i] == ZERO_GEN ? 1 : gen[i] + 1;
        fill(i);
    }
    pe += verify_all();
    uint64_t ce = 0;
    for (int c = 0; c < k; c++) {
        int st;
        if (kids[c] < 0 || waitpid(kids[c], &st, 0) != kids[c] || !WIFEXITED(st))
            ce += 1;
        else
            ce += (uint64_t)WEXITSTATUS(st);
    }
    snprintf(out, len, "{\"children\":%d,\"child_errors\":%llu,\"parent_errors\":%llu}", k,
             (unsigned long long)ce, (unsigned long long)pe);
}

#define TOUCH_MAX 4000

static void do_touch(uint64_t k, uint64_t phase, char *out, size_t len)
{
    static uint64_t idx[TOUCH_MAX];
    static double us[TOUCH_MAX];
    if (k < 1 || k > TOUCH_MAX || k > npages / 2) {
        snprintf(out, len, "{\"error\":\"TOUCH takes 1..%d and at most half the pages\"}", TOUCH_MAX);
        return;
    }
    /* Everything but the timed reads faults here first: gen[], idx[], us[],
     * the stack; only the K data pages are left for the loop. */
    uint64_t stride = npages / k, n = 0;
    for (uint64_t j = 0; j < k; j++) {
        uint64_t i = (phase + j * stride) % npages;
        while (gen[i] == ZERO_GEN && i + 1 < npages)
            i++;
        if (gen[i] != ZERO_GEN)
            idx[n++] = i;
    }
    memset(us, 0, sizeof(us));
    for (uint64_t j = 0; j < n; j++) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        (void)*(volatile uint8_t *)(mem + idx[j] * PG);
        clock_gettime(CLOCK_MONOTONIC, &b);
        us[j] = (double)(b.tv_sec - a.tv_sec) * 1e6 + (double)(b.tv_nsec - a.tv_nsec) / 1e3;
    }
    uint64_t e = 0;
    for (uint64_t j = 0; j < n; j++)
        e += (uint64_t)check(idx[j]);
    size_t o = (size_t)snprintf(out, len, "{\"touched\":%llu,\"errors\":%llu,\"us\":[", (unsigned long long)n,
                                (unsigned long long)e);
    for (uint64_t j = 0; j < n && o + 32 < len; j++)
        o += (size_t)snprintf(out + o, len - o, "%s%.3f", j ? "," : "", us[j]);
    snprintf(out + o, len - o, "]}");
}

static void do_touch_range(uint64_t a, uint64_t b, uint64_t step, char *out, size_t len)
{
    if (step < 1 || a > b || b > npages) {
        snprintf(out, len, "{\"error\":\"TOUCHR takes A <= B <= pages and a step >= 1\"}");
        return;
    }
    volatile uint32_t sum = 0;
    for (uint64_t i = 0; i < npages; i++)
        sum += gen[i];
    uint64_t n = 0, e = 0;
    for (uint64_t i = a; i < b; i += step, n++)
        (void)*(volatile uint8_t *)(mem + i * PG);
    for (uint64_t i = a; i < b; i += step)
        e += (uint64_t)check(i);
    snprintf(out, len, "{\"touched\":%llu,\"errors\":%llu}", (unsigned long long)n, (unsigned long long)e);
}

/* A listener on port P of every address (the lab host's). */
static int listen_on(int port)
{
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(ls, 8) < 0) {
        if (ls >= 0)
            close(ls);
        return -1;
    }
    return ls;
}

/* Every byte of every page, folded in order: two processes with equal
 * memory give equal sums. */
static uint64_t sum_all(void)
{
    uint64_t h = 0;
    for (uint64_t i = 0; i < npages; i++) {
        const uint64_t *p = (const uint64_t *)(mem + i * PG);
        for (uint64_t w = 0; w < PG / 8; w++)
            h = mix(h ^ p[w]);
    }
    return h;
}

/* The listener exists before the fork, so the caller can connect as soon
 * as it has the reply. */
static void do_spawn(unsigned long port, char *out, size_t len)
{
    int nls = port > 0 && port < 65536 ? listen_on((int)port) : -1;
    if (nls < 0) {
        snprintf(out, len, "{\"error\":\"SPAWN: cannot listen on port %lu: %s\"}", port, strerror(errno));
        return;
    }
    pid_t c = fork();
    if (c == 0) {
        became_child = 1;
        child_ls = nls;
        return;
    }
    close(nls);
    if (c < 0)
        snprintf(out, len, "{\"error\":\"fork: %s\"}", strerror(errno));
    else
        snprintf(out, len, "{\"pid\":%d}", (int)c);
}

static void handle(char *line, char *out, size_t len, int *quit)
{
    unsigned long a = 0, b = 0;
    if (strncmp(line, "VERIFY", 6) == 0) {
        snprintf(out, len, "{\"pages\":%llu,\"errors\":%llu}", (unsigned long long)npages,
                 (unsigned long long)verify_all());
    } else if (sscanf(line, "WRITE %lu", &a) == 1 && a > 0) {
        uint64_t n = 0;
        for (uint64_t i = 0; i < npages; i += a, n++) {
            gen[i] = gen[i] == ZERO_GEN ? 1 : gen[i] + 1;
            fill(i);
        }
        snprintf(out, len, "{\"pages_written\":%llu}", (unsigned long long)n);
    } else if (sscanf(line, "REMOVE %lu %lu", &a, &b) == 2 && a < b && b <= npages) {
        madvise(mem + a * PG, (b - a) * PG, MADV_DONTNEED);
        uint64_t e = 0;
        for (uint64_t i = a; i < b; i++) {
            gen[i] = ZERO_GEN;
            e += (uint64_t)check(i);
        }
        snprintf(out, len, "{\"removed\":%lu,\"errors\":%llu}", b - a, (unsigned long long)e);
    } else if (sscanf(line, "FORK %lu", &a) == 1) {
        do_fork((int)a, out, len);
    } else if (strncmp(line, "REMAP", 5) == 0) {
        /* move the whole area somewhere else, then check everything */
        size_t sz = npages * PG;
        void *dst = mmap(NULL, sz, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        void *m = dst == MAP_FAILED ? MAP_FAILED : mremap(mem, sz, sz, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
        if (m == MAP_FAILED) {
            snprintf(out, len, "{\"error\":\"mremap: %s\"}", strerror(errno));
        } else {
            mem = m;
            snprintf(out, len, "{\"errors\":%llu}", (unsigned long long)verify_all());
        }
    } else if (sscanf(line, "TOUCHR %lu %lu", &a, &b) == 2) {
        unsigned long step = 1;
        sscanf(line, "TOUCHR %lu %lu %lu", &a, &b, &step);
        do_touch_range(a, b, step, out, len);
    } else if (sscanf(line, "UNMAP %lu %lu", &a, &b) == 2 && a < b && b <= npages) {
        uint8_t *p = mem + a * PG;
        uint64_t e = 0;
        if (munmap(p, (b - a) * PG) < 0 ||
            mmap(p, (b - a) * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != p) {
            snprintf(out, len, "{\"error\":\"munmap/mmap: %s\"}", strerror(errno));
            return;
        }
        for (uint64_t i = a; i < b; i++) {
            gen[i] = ZERO_GEN;
            e += (uint64_t)check(i);
        }
        snprintf(out, len, "{\"unmapped\":%lu,\"errors\":%llu}", b - a, (unsigned long long)e);
    } else if (strncmp(line, "INFO", 4) == 0) {
        snprintf(out, len, "{\"mem\":\"0x%llx\",\"pages\":%llu,\"holes\":[%llu,%llu]}",
                 (unsigned long long)(uintptr_t)mem, (unsigned long long)npages, (unsigned long long)(npages / 2),
                 (unsigned long long)(npages / 2 + 64));
    } else if (sscanf(line, "TOUCH %lu %lu", &a, &b) >= 1) {
        do_touch(a, sscanf(line, "TOUCH %lu %lu", &a, &b) == 2 ? b : 0, out, len);
    } else if (strncmp(line, "SUM", 3) == 0) {
        snprintf(out, len, "{\"pages\":%llu,\"sum\":\"%016llx\"}", (unsigned long long)npages,
                 (unsigned long long)sum_all());
    } else if (sscanf(line, "SPAWN %lu", &a) == 1) {
        do_spawn(a, out, len);
    } else if (strncmp(line, "PID", 3) == 0) {
        snprintf(out, len, "{\"pid\":%d}", (int)getpid());
    } else if (strncmp(line, "QUIT", 4) == 0) {
        *quit = 1;
        snprintf(out, len, "{\"bye\":true}");
    } else {
        snprintf(out, len, "{\"error\":\"unknown command\"}");
    }
}

int main(int argc, char **argv)
{
    uint64_t mib = 32;
    int port = 7071;
    seed = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--mib") == 0)
            mib = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--port") == 0)
            port = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--seed") == 0)
            seed = strtoull(argv[i + 1], NULL, 10);
    }
    if (mib == 0 || mib > 4096) {
        fprintf(stderr, "forkmem: --mib 1..4096\n");
        return 2;
    }
    npages = mib * 256;
    mem = mmap(NULL, npages * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    gen = mmap(NULL, npages * sizeof(*gen), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED || gen == MAP_FAILED) {
        perror("forkmem: mmap");
        return 1;
    }
    for (uint64_t i = 0; i < npages; i++)
        fill(i);
    /* some pages never touched again stay in the image; some are holes */
    madvise(mem + (npages / 2) * PG, 64 * PG, MADV_DONTNEED);
    for (uint64_t i = npages / 2; i < npages / 2 + 64; i++)
        gen[i] = ZERO_GEN;

    int ls = listen_on(port);
    if (ls < 0) {
        perror("forkmem: listen");
        return 1;
    }
    for (int quit = 0; !quit;) {
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ; /* SPAWNed children that quit */
        int c = accept(ls, NULL, NULL);
        if (c < 0)
            continue;
        char line[256];
        ssize_t n = 0, r;
        while (n < (ssize_t)sizeof(line) - 1 && (r = read(c, line + n, 1)) == 1 && line[n] != '\n')
            n++;
        line[n] = '\0';
        static char out[TOUCH_MAX * 16 + 512];
        handle(line, out, sizeof(out) - 2, &quit);
        if (became_child) { /* the new child: the parent answers, we serve our own port */
            became_child = 0;
            close(c);
            close(ls);
            ls = child_ls;
            continue;
        }
        strcat(out, "\n");
        ssize_t w = write(c, out, strlen(out));
        (void)w;
        close(c);
    }
    return 0;
}
