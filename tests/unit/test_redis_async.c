/* lib/redis_async against fake cluster nodes on loopback: replies completed
 * in order over one pipeline, MOVED (the map follows), ASK (ASKING first),
 * a connection lost mid-command (sent again after the map is read again),
 * and a WAIT bound to a lost connection (fails, never rerouted). Each fake
 * node is a thread answering RESP commands from a script. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "redis_async.h"

/* ---- fake nodes ---- */

struct fnode {
    int lfd, port, stop;
    struct fnode *other;      /* where MOVED/ASK point */
    int drops;                /* connections closed on a "drop"/"WAIT" command */
    pthread_t th;
};

/* The slot a MOVED gave to the other node (-1: none); both nodes' CLUSTER
 * SLOTS say so from then on, as a real cluster's would. */
static volatile int moved_slot = -1;

/* The reply of node n to one command (argv, argc). NULL: close the connection. */
static const char *answer(struct fnode *n, char **argv, int argc, char *buf, size_t len, int *asking)
{
    if (argc == 2 && !strcmp(argv[0], "CLUSTER") && !strcmp(argv[1], "SLOTS")) {
        /* the lower port owns every slot but the one a MOVED gave away */
        struct fnode *a = n->other && n->port > n->other->port ? n->other : n, *b = a->other;
        int m = moved_slot;
        if (m < 0) {
            snprintf(buf, len, "*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:%d\r\n", a->port);
        } else {
            snprintf(buf, len,
                     "*3\r\n*3\r\n:0\r\n:%d\r\n*2\r\n$9\r\n127.0.0.1\r\n:%d\r\n"
                     "*3\r\n:%d\r\n:%d\r\n*2\r\n$9\r\n127.0.0.1\r\n:%d\r\n"
                     "*3\r\n:%d\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:%d\r\n",
                     m - 1, a->port, m, m, b->port, m + 1, a->port);
        }
        return buf;
    }
    if (argc == 1 && !strcmp(argv[0], "ASKING")) {
        *asking = 1;
        return "+OK\r\n";
    }
    if (argc >= 1 && !strcmp(argv[0], "WAIT"))
        return n->drops++ ? ":1\r\n" : NULL;
    if (argc != 2 || strcmp(argv[0], "GET"))
        return "-ERR unknown\r\n";
    const char *k = argv[1];
    unsigned slot = dp_redis_keyslot(k, strlen(k));
    int owner = n->other && n->port < n->other->port; /* the lower port: the map's owner */
    if (!strcmp(k, "moved") && owner) {
        moved_slot = (int)slot;
        snprintf(buf, len, "-MOVED %u 127.0.0.1:%d\r\n", slot, n->other->port);
        return buf;
    }
    if (!strcmp(k, "ask") && owner) {
        snprintf(buf, len, "-ASK %u 127.0.0.1:%d\r\n", slot, n->other->port);
        return buf;
    }
    if (!strcmp(k, "ask") && !*asking)
        return "-ERR no ASKING before\r\n";
    if (!strcmp(k, "drop") && owner && n->drops++ == 0)
        return NULL;
    *asking = 0;
    snprintf(buf, len, "$%zu\r\n%s@%d\r\n", strlen(k) + 1 + (size_t)snprintf(NULL, 0, "%d", n->port), k, n->port);
    return buf;
}

/* One RESP command from buf (len bytes): its length, 0 if incomplete. */
static size_t parse_cmd(char *buf, size_t len, char **argv, int *argc)
{
    char *p = buf, *end = buf + len;
    if (len < 4 || *p != '*')
        return 0;
    char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl)
        return 0;
    int n = atoi(p + 1);
    p = nl + 1;
    for (int i = 0; i < n && i < 8; i++) {
        nl = p < end ? memchr(p, '\n', (size_t)(end - p)) : NULL;
        if (!nl || *p != '$')
            return 0;
        size_t l = (size_t)atol(p + 1);
        p = nl + 1;
        if ((size_t)(end - p) < l + 2)
            return 0;
        argv[i] = p;
        p[l] = '\0';
        p += l + 2;
    }
    *argc = n;
    return (size_t)(p - buf);
}

static void *fnode_main(void *arg)
{
    struct fnode *n = arg;
    struct pollfd pf[9] = {{.fd = n->lfd, .events = POLLIN}};
    char in[8][65536];
    size_t have[8] = {0};
    int asking[8] = {0}, nc = 0;
    while (!n->stop) {
        for (int i = 0; i < nc; i++)
            pf[1 + i].events = POLLIN;
        if (poll(pf, (nfds_t)(1 + nc), 20) <= 0)
            continue;
        if ((pf[0].revents & POLLIN) && nc < 8) {
            int c = accept(n->lfd, NULL, NULL);
            if (c >= 0) {
                pf[1 + nc].fd = c;
                have[nc] = 0;
                asking[nc++] = 0;
            }
        }
        for (int i = 0; i < nc; i++) {
            if (!(pf[1 + i].revents & (POLLIN | POLLHUP)) || pf[1 + i].fd < 0)
                continue;
            ssize_t r = read(pf[1 + i].fd, in[i] + have[i], sizeof(in[i]) - have[i] - 1);
            if (r <= 0) {
                close(pf[1 + i].fd);
                pf[1 + i].fd = -1;
                continue;
            }
            have[i] += (size_t)r;
            char *argv[8], out[512];
            int argc;
            size_t used;
            while ((used = parse_cmd(in[i], have[i], argv, &argc)) > 0) {
                const char *rep = answer(n, argv, argc, out, sizeof(out), &asking[i]);
                if (!rep) {
                    close(pf[1 + i].fd);
                    pf[1 + i].fd = -1;
                    have[i] = 0;
                    break;
                }
                if (write(pf[1 + i].fd, rep, strlen(rep)) < 0)
                    break;
                memmove(in[i], in[i] + used, have[i] - used);
                have[i] -= used;
            }
        }
    }
    for (int i = 0; i < nc; i++)
        if (pf[1 + i].fd >= 0)
            close(pf[1 + i].fd);
    close(n->lfd);
    return NULL;
}

static void fnode_start(struct fnode *n)
{
    n->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    assert_int_equal(bind(n->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(n->lfd, 16), 0);
    getsockname(n->lfd, (struct sockaddr *)&sa, &sl);
    n->port = ntohs(sa.sin_port);
    assert_int_equal(pthread_create(&n->th, NULL, fnode_main, n), 0);
}

/* ---- the cluster under test ---- */

struct rig {
    struct fnode a, b;        /* the one with the lower port owns every slot */
    struct dp_rcluster *cl;
    struct dp_rasync *as;
};

static int rig_setup(void **state)
{
    struct rig *r = calloc(1, sizeof(*r));
    moved_slot = -1;
    r->a.other = &r->b;
    r->b.other = &r->a;
    fnode_start(&r->a);
    fnode_start(&r->b);
    char url[64];
    struct fnode *owner = r->a.port < r->b.port ? &r->a : &r->b;
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", owner->port);
    struct dp_redis_url u;
    struct dp_redis_opts o = {.timeout_ms = 2000};
    struct dp_err err = {{0}};
    assert_int_equal(dp_redis_parse_url(url, &u, &err), 0);
    r->cl = dp_rcluster_open(&u, &o, &err);
    assert_non_null(r->cl);
    r->as = dp_rasync_new(r->cl, &err);
    assert_non_null(r->as);
    *state = r;
    return 0;
}

/* The owner of every slot, and the other node. */
static int owner_port(const struct rig *r) { return r->a.port < r->b.port ? r->a.port : r->b.port; }
static int other_port(const struct rig *r) { return r->a.port < r->b.port ? r->b.port : r->a.port; }

/* "127.0.0.1:PORT" of the node the map routes key to. */
static const char *routed(const struct rig *r, const char *key)
{
    return dp_rcluster_node_name(r->cl, dp_rcluster_route(r->cl, dp_redis_keyslot(key, strlen(key))));
}

static int rig_teardown(void **state)
{
    struct rig *r = *state;
    dp_rasync_free(r->as);
    dp_rcluster_close(r->cl);
    r->a.stop = r->b.stop = 1;
    pthread_join(r->a.th, NULL);
    pthread_join(r->b.th, NULL);
    free(r);
    return 0;
}

struct got {
    int done, status, order;
    char val[64];
};
static int completed;

static void on_done(struct dp_racmd *a, int status)
{
    struct got *g = a->opaque;
    g->done = 1;
    g->status = status;
    g->order = completed++;
    if (status == 0 && a->c->reply->type == REDIS_REPLY_STRING)
        snprintf(g->val, sizeof(g->val), "%s", a->c->reply->str);
    else if (status == 0 && a->c->reply->type == REDIS_REPLY_INTEGER)
        snprintf(g->val, sizeof(g->val), ":%lld", a->c->reply->integer);
    dp_rcmd_reset(a->c);
}

/* Drives the layer as the daemon does (its one descriptor, process) until
 * every g[i] completed; bounded. */
static void run_until(struct dp_rasync *as, struct got *g, int n)
{
    for (int round = 0; round < 500; round++) {
        int all = 1;
        for (int i = 0; i < n; i++)
            all &= g[i].done;
        if (all)
            return;
        struct pollfd p = {.fd = dp_rasync_fd(as), .events = POLLIN};
        poll(&p, 1, 10);
        dp_rasync_process(as);
    }
    fail_msg("commands not completed");
}

static void get_cmd(struct dp_rcmd *c, struct dp_racmd *a, const char *key, struct got *g, int force)
{
    dp_rcmd_init(c, 1);
    dp_rcmd_arg(c, "GET", 3);
    dp_rcmd_arg(c, key, strlen(key));
    *a = (struct dp_racmd){.c = c, .force_node = force, .deadline_ns = dp_now_ns() + 5000000000ull,
                           .done = on_done, .opaque = g};
}

/* ---- tests ---- */

static void test_pipeline_completes_in_order(void **state)
{
    struct rig *r = *state;
    enum { N = 200 };
    static struct dp_rcmd c[N];
    static struct dp_racmd a[N];
    static struct got g[N];
    static char keys[N][16];
    memset(g, 0, sizeof(g));
    completed = 0;
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%d", i);
        get_cmd(&c[i], &a[i], keys[i], &g[i], -1);
        assert_int_equal(dp_rasync_submit(r->as, &a[i]), 0);
        assert_false(g[i].done); /* never completed inside submit */
    }
    run_until(r->as, g, N);
    for (int i = 0; i < N; i++) {
        char want[32];
        snprintf(want, sizeof(want), "k%d@%d", i, owner_port(r));
        assert_int_equal(g[i].status, 0);
        assert_string_equal(g[i].val, want);
        assert_int_equal(g[i].order, i);
    }
}

static void test_moved_follows_and_updates_the_map(void **state)
{
    struct rig *r = *state;
    struct dp_rcmd c;
    struct dp_racmd a;
    struct got g = {0};
    get_cmd(&c, &a, "moved", &g, -1);
    assert_int_equal(dp_rasync_submit(r->as, &a), 0);
    run_until(r->as, &g, 1);
    char want[32];
    snprintf(want, sizeof(want), "moved@%d", other_port(r));
    assert_int_equal(g.status, 0);
    assert_string_equal(g.val, want);
    snprintf(want, sizeof(want), "127.0.0.1:%d", other_port(r));
    assert_string_equal(routed(r, "moved"), want); /* the slot's map entry moved with it */
}

static void test_ask_sends_asking_first(void **state)
{
    struct rig *r = *state;
    struct dp_rcmd c;
    struct dp_racmd a;
    struct got g = {0};
    get_cmd(&c, &a, "ask", &g, -1);
    assert_int_equal(dp_rasync_submit(r->as, &a), 0);
    run_until(r->as, &g, 1);
    char want[32];
    snprintf(want, sizeof(want), "ask@%d", other_port(r));
    assert_int_equal(g.status, 0);
    assert_string_equal(g.val, want); /* the node refuses it without ASKING */
    snprintf(want, sizeof(want), "127.0.0.1:%d", owner_port(r));
    assert_string_equal(routed(r, "ask"), want); /* an ASK moves nothing */
}

static void test_lost_connection_resends(void **state)
{
    struct rig *r = *state;
    struct dp_rcmd c[2];
    struct dp_racmd a[2];
    struct got g[2] = {{0}};
    get_cmd(&c[0], &a[0], "drop", &g[0], -1); /* the node closes on it, once */
    get_cmd(&c[1], &a[1], "after", &g[1], -1);
    assert_int_equal(dp_rasync_submit(r->as, &a[0]), 0);
    assert_int_equal(dp_rasync_submit(r->as, &a[1]), 0);
    run_until(r->as, g, 2);
    char w0[32], w1[32];
    snprintf(w0, sizeof(w0), "drop@%d", owner_port(r));
    snprintf(w1, sizeof(w1), "after@%d", owner_port(r));
    assert_int_equal(g[0].status, 0);
    assert_string_equal(g[0].val, w0);
    assert_int_equal(g[1].status, 0);
    assert_string_equal(g[1].val, w1);
    assert_int_equal(dp_rasync_pending(r->as), 0);
}

static void test_wait_on_a_lost_connection_fails(void **state)
{
    struct rig *r = *state;
    struct dp_rcmd c;
    struct dp_racmd a;
    struct got g = {0};
    /* a GET first so that the owner's connection exists and has an index */
    struct dp_rcmd c0;
    struct dp_racmd a0;
    struct got g0 = {0};
    get_cmd(&c0, &a0, "x", &g0, -1);
    assert_int_equal(dp_rasync_submit(r->as, &a0), 0);
    run_until(r->as, &g0, 1);
    int owner = dp_rcluster_route(r->cl, dp_redis_keyslot("x", 1));
    assert_true(owner >= 0);
    dp_rcmd_init(&c, -1);
    dp_rcmd_arg(&c, "WAIT", 4);
    dp_rcmd_arg(&c, "1", 1);
    dp_rcmd_arg(&c, "100", 3);
    a = (struct dp_racmd){.c = &c, .force_node = owner, .deadline_ns = dp_now_ns() + 5000000000ull,
                          .done = on_done, .opaque = &g};
    assert_int_equal(dp_rasync_submit(r->as, &a), 0);
    run_until(r->as, &g, 1);
    assert_int_equal(g.status, -1); /* the writes it vouched for may be gone: the caller sends them again */
    g = (struct got){0};
    assert_int_equal(dp_rasync_submit(r->as, &a), 0); /* a new connection answers it */
    run_until(r->as, &g, 1);
    assert_int_equal(g.status, 0);
    assert_string_equal(g.val, ":1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pipeline_completes_in_order, rig_setup, rig_teardown),
        cmocka_unit_test_setup_teardown(test_moved_follows_and_updates_the_map, rig_setup, rig_teardown),
        cmocka_unit_test_setup_teardown(test_ask_sends_asking_first, rig_setup, rig_teardown),
        cmocka_unit_test_setup_teardown(test_lost_connection_resends, rig_setup, rig_teardown),
        cmocka_unit_test_setup_teardown(test_wait_on_a_lost_connection_fails, rig_setup, rig_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
