/* redis_conn: see redis_conn.h. */
#include "redis_conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

struct dp_rconn {
    int fd;
    SSL *ssl;
    redisReader *rd;
    char name[64];
    char *wbuf;             /* queued commands */
    size_t wlen, wcap;
    /* asynchronous use (dp_rconn_start/pump/take): never waits */
    int state;              /* RC_UP, or still connecting / in the TLS handshake */
    size_t woff;            /* bytes of wbuf already sent */
    short hs_want;          /* what the handshake waits for */
    short rwant, wwant;     /* what a TLS read / write that could not go on waits for */
    int auth_pending;       /* the first reply is AUTH's, checked here */
    SSL_CTX *ctx;
    char host[48];
};

enum { RC_UP = 0, RC_CONNECTING, RC_HANDSHAKE };

/* ---- bounded reply objects ---------------------------------------------------
 * hiredis's default functions, with limits: a reply array or string beyond our
 * bounds makes the reader fail ("out of memory") instead of allocating it. */

/* Hangs a new object into its parent array (what hiredis's own functions do). */
static void *link_reply(const redisReadTask *task, redisReply *r)
{
    if (task->parent) {
        redisReply *parent = task->parent->obj;
        parent->element[task->idx] = r;
    }
    return r;
}

static redisReply *new_reply(void)
{
    return calloc(1, sizeof(redisReply));
}

/* A bulk or status string, an error: refused beyond DP_REDIS_MAX_BULK. */
static void *mk_string(const redisReadTask *task, char *str, size_t len)
{
    if (len > DP_REDIS_MAX_BULK)
        return NULL;
    redisReply *r = new_reply();
    if (!r)
        return NULL;
    r->type = task->type;
    r->str = malloc(len + 1);
    if (!r->str) {
        free(r);
        return NULL;
    }
    memcpy(r->str, str, len);
    r->str[len] = '\0';
    r->len = len;
    return link_reply(task, r);
}

/* An array: refused beyond DP_REDIS_MAX_ARRAY elements (a hostile header
 * would otherwise allocate gigabytes of pointers). */
static void *mk_array(const redisReadTask *task, int elements)
{
    if (elements < 0 || elements > DP_REDIS_MAX_ARRAY)
        return NULL;
    redisReply *r = new_reply();
    if (!r)
        return NULL;
    r->type = REDIS_REPLY_ARRAY;
    if (elements > 0) {
        r->element = calloc((size_t)elements, sizeof(redisReply *));
        if (!r->element) {
            free(r);
            return NULL;
        }
    }
    r->elements = (size_t)elements;
    return link_reply(task, r);
}

/* An integer reply. */
static void *mk_integer(const redisReadTask *task, long long v)
{
    redisReply *r = new_reply();
    if (!r)
        return NULL;
    r->type = REDIS_REPLY_INTEGER;
    r->integer = v;
    return link_reply(task, r);
}

/* A nil (missing key, nil array). */
static void *mk_nil(const redisReadTask *task)
{
    redisReply *r = new_reply();
    if (!r)
        return NULL;
    r->type = REDIS_REPLY_NIL;
    return link_reply(task, r);
}

/* The reader frees partial replies with this on error. */
static void free_reply(void *p) { freeReplyObject(p); }

static redisReplyObjectFunctions bounded_fns = {mk_string, mk_array, mk_integer, mk_nil, free_reply};

redisReader *dp_redis_reader_new(void)
{
    return redisReaderCreateWithFunctions(&bounded_fns);
}

/* ---- TLS ---------------------------------------------------------------------- */

/* The most recent OpenSSL error as text (or fallback). */
static const char *ssl_errstr(const char *fallback)
{
    static __thread char buf[256];
    unsigned long e = ERR_get_error();
    if (!e)
        return fallback;
    ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    return buf;
}

struct ssl_ctx_st *dp_redis_tls_ctx(const struct dp_redis_opts *o, struct dp_err *err)
{
    if (!o->ca_file[0])
        return NULL;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        dp_err_set(err, "TLS: cannot create a context: %s", ssl_errstr("unknown"));
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_load_verify_locations(ctx, o->ca_file, NULL) != 1) {
        dp_err_set(err, "TLS: cannot load the CA %s: %s; give the CA that signed the store's certificates",
                   o->ca_file, ssl_errstr("unreadable"));
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (o->cert_file[0] &&
        (SSL_CTX_use_certificate_chain_file(ctx, o->cert_file) != 1 ||
         SSL_CTX_use_PrivateKey_file(ctx, o->key_file[0] ? o->key_file : o->cert_file, SSL_FILETYPE_PEM) != 1)) {
        dp_err_set(err, "TLS: cannot load the client certificate %s / key %s: %s", o->cert_file, o->key_file,
                   ssl_errstr("unreadable"));
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

void dp_redis_tls_ctx_free(struct ssl_ctx_st *ctx)
{
    if (ctx)
        SSL_CTX_free(ctx);
}

/* ---- socket I/O with a deadline ------------------------------------------------ */

/* Milliseconds left until deadline (at least 0). */
static int ms_left(uint64_t deadline_ns)
{
    uint64_t now = dp_now_ns();
    return now >= deadline_ns ? 0 : (int)((deadline_ns - now) / 1000000 + 1);
}

/* Waits for events on c's socket; -1 with err on timeout or poll failure. */
static int wait_fd(struct dp_rconn *c, short ev, uint64_t deadline_ns, struct dp_err *err)
{
    for (;;) {
        struct pollfd p = {.fd = c->fd, .events = ev};
        int ms = ms_left(deadline_ns);
        if (ms == 0) {
            dp_err_set(err, "%s: no answer in time (node down or overloaded)", c->name);
            return -1;
        }
        int r = poll(&p, 1, ms);
        if (r > 0)
            return 0;
        if (r < 0 && errno != EINTR) {
            dp_err_set(err, "%s: poll: %s", c->name, strerror(errno));
            return -1;
        }
    }
}

/* Classifies the outcome of one nonblocking read/write (plain or TLS):
 * >0 bytes, 0 = retry after waiting for *ev, -1 = failed (err set). */
static ssize_t io_result(struct dp_rconn *c, ssize_t n, short *ev, short want, const char *what, struct dp_err *err)
{
    if (c->ssl) {
        if (n > 0)
            return n;
        int e = SSL_get_error(c->ssl, (int)n);
        if (e == SSL_ERROR_WANT_READ) {
            *ev = POLLIN;
            return 0;
        }
        if (e == SSL_ERROR_WANT_WRITE) {
            *ev = POLLOUT;
            return 0;
        }
        dp_err_set(err, "%s: TLS %s failed: %s", c->name, what,
                   e == SSL_ERROR_ZERO_RETURN ? "connection closed by the node" : ssl_errstr("connection lost"));
        return -1;
    }
    if (n > 0)
        return n;
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        *ev = want;
        return 0;
    }
    dp_err_set(err, "%s: %s failed: %s", c->name, what, n == 0 ? "connection closed by the node" : strerror(errno));
    return -1;
}

/* One nonblocking send of up to len bytes: >0 sent, 0 = wait for *ev, -1 failed. */
static ssize_t try_send(struct dp_rconn *c, const char *buf, size_t len, short *ev, struct dp_err *err)
{
    size_t chunk = len > (1u << 30) ? (1u << 30) : len;
    ssize_t n = c->ssl ? SSL_write(c->ssl, buf, (int)chunk) : send(c->fd, buf, chunk, MSG_NOSIGNAL);
    *ev = POLLOUT;
    return io_result(c, n, ev, POLLOUT, "send", err);
}

/* One nonblocking read into the reply reader: >0 bytes fed, 0 = wait for
 * *ev, -1 failed (also when too much unparsed input is held). */
static ssize_t try_recv(struct dp_rconn *c, short *ev, struct dp_err *err)
{
    char buf[65536];
    if (c->rd->len - c->rd->pos > DP_REDIS_MAX_PENDING) {
        dp_err_set(err, "%s: reply larger than %u MiB; closing the connection", c->name, DP_REDIS_MAX_PENDING >> 20);
        return -1;
    }
    ssize_t n = c->ssl ? SSL_read(c->ssl, buf, sizeof(buf)) : recv(c->fd, buf, sizeof(buf), 0);
    *ev = POLLIN;
    ssize_t r = io_result(c, n, ev, POLLIN, "receive", err);
    if (r > 0 && redisReaderFeed(c->rd, buf, (size_t)r) != REDIS_OK) {
        dp_err_set(err, "%s: out of memory buffering a reply", c->name);
        return -1;
    }
    return r;
}

/* Writes all of buf before the deadline. */
static int send_all(struct dp_rconn *c, const char *buf, size_t len, uint64_t deadline_ns, struct dp_err *err)
{
    size_t off = 0;
    while (off < len) {
        short ev;
        ssize_t r = try_send(c, buf + off, len - off, &ev, err);
        if (r < 0)
            return -1;
        if (r == 0 && wait_fd(c, ev, deadline_ns, err) < 0)
            return -1;
        off += (size_t)r;
    }
    return 0;
}

/* Reads what is available (waiting until something is) into the reader. */
static int recv_some(struct dp_rconn *c, uint64_t deadline_ns, struct dp_err *err)
{
    for (;;) {
        short ev;
        ssize_t r = try_recv(c, &ev, err);
        if (r != 0)
            return r < 0 ? -1 : 0;
        if (wait_fd(c, ev, deadline_ns, err) < 0)
            return -1;
    }
}

/* ---- connection ------------------------------------------------------------------ */

/* Starts a nonblocking TCP connect (it may still be in progress). */
static int tcp_start(struct dp_rconn *c, const char *host, uint16_t port, struct dp_err *err)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        dp_err_set(err, "'%s' is not an IPv4 address (the store takes ADDR:PORT)", host);
        return -1;
    }
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        dp_err_set(err, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
        dp_err_set(err, "%s: connect: %s (is the store up? 'distriproc lab cluster up')", c->name, strerror(errno));
        return -1;
    }
    return 0;
}

/* The outcome of a connect that became writable. */
static int tcp_check(struct dp_rconn *c, struct dp_err *err)
{
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr) {
        dp_err_set(err, "%s: connect: %s (is the store up? 'distriproc lab cluster up')", c->name,
                   strerror(soerr ? soerr : errno));
        return -1;
    }
    return 0;
}

/* TCP connect with a deadline, nonblocking from then on. */
static int tcp_connect(struct dp_rconn *c, const char *host, uint16_t port, uint64_t deadline_ns, struct dp_err *err)
{
    if (tcp_start(c, host, port, err) < 0 || wait_fd(c, POLLOUT, deadline_ns, err) < 0)
        return -1;
    return tcp_check(c, err);
}

/* The connection's TLS state: the node's certificate is checked against its
 * address; writes may be partial and resumed from a moved buffer (the
 * pipeline's buffer grows while a write waits). */
static int tls_setup(struct dp_rconn *c, SSL_CTX *ctx, const char *host, struct dp_err *err)
{
    c->ssl = SSL_new(ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
        dp_err_set(err, "%s: TLS setup: %s", c->name, ssl_errstr("out of memory"));
        return -1;
    }
    SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
    if (X509_VERIFY_PARAM_set1_ip_asc(vp, host) != 1) {
        dp_err_set(err, "%s: TLS: cannot check the certificate against %s", c->name, host);
        return -1;
    }
    return 0;
}

/* TLS handshake, the node's certificate checked against its address. */
static int tls_handshake(struct dp_rconn *c, SSL_CTX *ctx, const char *host, uint64_t deadline_ns,
                         struct dp_err *err)
{
    if (tls_setup(c, ctx, host, err) < 0)
        return -1;
    for (;;) {
        int r = SSL_connect(c->ssl);
        if (r == 1)
            return 0;
        int e = SSL_get_error(c->ssl, r);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            long v = SSL_get_verify_result(c->ssl);
            dp_err_set(err, "%s: TLS handshake failed: %s%s%s", c->name, ssl_errstr("connection closed"),
                       v != X509_V_OK ? "; certificate: " : "",
                       v != X509_V_OK ? X509_verify_cert_error_string(v) : "");
            return -1;
        }
        if (wait_fd(c, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline_ns, err) < 0)
            return -1;
    }
}

/* AUTH [user] pass, queued as the pipeline's next command. */
static int append_auth(struct dp_rconn *c, const struct dp_redis_opts *o)
{
    if (o->user[0])
        return dp_rconn_append(c, 3, (const char *[]){"AUTH", o->user, o->pass},
                               (size_t[]){4, strlen(o->user), strlen(o->pass)});
    return dp_rconn_append(c, 2, (const char *[]){"AUTH", o->pass}, (size_t[]){4, strlen(o->pass)});
}

/* AUTH's reply (freed here): a refusal says what to check. */
static int auth_check(struct dp_rconn *c, redisReply *r, struct dp_err *err)
{
    int ok = r->type == REDIS_REPLY_STATUS && strcmp(r->str, "OK") == 0;
    if (!ok)
        dp_err_set(err, "%s: AUTH refused: %.200s; check the store's password (--store-pass-file)", c->name,
                   r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    freeReplyObject(r);
    return ok ? 0 : -1;
}

/* AUTH, waiting for the answer (bounded). */
static int authenticate(struct dp_rconn *c, const struct dp_redis_opts *o, struct dp_err *err)
{
    uint64_t deadline = dp_now_ns() + 10000ull * 1000000ull;
    redisReply *r = NULL;
    if (append_auth(c, o) < 0) {
        dp_err_set(err, "out of memory");
        return -1;
    }
    if (dp_rconn_flush(c, deadline, err) < 0 || dp_rconn_read(c, &r, deadline, err) < 0)
        return -1;
    return auth_check(c, r, err);
}

/* A connection object for host:port, not connected yet. */
static struct dp_rconn *conn_new(const char *host, uint16_t port, struct ssl_ctx_st *ctx, struct dp_err *err)
{
    struct dp_rconn *c = calloc(1, sizeof(*c));
    if (!c) {
        dp_err_set(err, "out of memory");
        return NULL;
    }
    c->fd = -1;
    c->ctx = ctx;
    snprintf(c->name, sizeof(c->name), "%.40s:%u", host, (unsigned)port);
    snprintf(c->host, sizeof(c->host), "%s", host);
    c->rd = dp_redis_reader_new();
    if (!c->rd) {
        dp_err_set(err, "out of memory");
        free(c);
        return NULL;
    }
    return c;
}

struct dp_rconn *dp_rconn_open(const char *host, uint16_t port, const struct dp_redis_opts *o,
                               struct ssl_ctx_st *ctx, struct dp_err *err)
{
    struct dp_rconn *c = conn_new(host, port, ctx, err);
    if (!c)
        return NULL;
    uint64_t deadline = dp_now_ns() + (uint64_t)(o->timeout_ms > 0 ? o->timeout_ms : 5000) * 1000000ull;
    if (tcp_connect(c, host, port, deadline, err) < 0)
        goto fail;
    if (ctx && tls_handshake(c, ctx, host, deadline, err) < 0)
        goto fail;
    if (o->pass[0] && authenticate(c, o, err) < 0)
        goto fail;
    return c;
fail:
    dp_rconn_close(c);
    return NULL;
}

void dp_rconn_close(struct dp_rconn *c)
{
    if (!c)
        return;
    if (c->ssl) {
        /* no SSL_shutdown: a forked copy of this connection (the lazy-pages
         * daemon's) may still be in use; freeing sends nothing */
        SSL_free(c->ssl);
    }
    if (c->fd >= 0)
        close(c->fd);
    if (c->rd)
        redisReaderFree(c->rd);
    free(c->wbuf);
    free(c);
}

const char *dp_rconn_name(const struct dp_rconn *c) { return c->name; }

int dp_rconn_append(struct dp_rconn *c, int argc, const char **argv, const size_t *lens)
{
    char *cmd = NULL;
    int n = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (n < 0)
        return -1;
    if (c->wlen + (size_t)n > c->wcap) {
        size_t cap = c->wcap ? c->wcap : 65536;
        while (cap < c->wlen + (size_t)n)
            cap *= 2;
        char *nb = realloc(c->wbuf, cap);
        if (!nb) {
            redisFreeCommand(cmd);
            return -1;
        }
        c->wbuf = nb;
        c->wcap = cap;
    }
    memcpy(c->wbuf + c->wlen, cmd, (size_t)n);
    c->wlen += (size_t)n;
    redisFreeCommand(cmd);
    return 0;
}

int dp_rconn_flush(struct dp_rconn *c, uint64_t deadline_ns, struct dp_err *err)
{
    int rc = send_all(c, c->wbuf, c->wlen, deadline_ns, err);
    c->wlen = 0;
    return rc;
}

int dp_rconn_read(struct dp_rconn *c, redisReply **out, uint64_t deadline_ns, struct dp_err *err)
{
    for (;;) {
        void *r = NULL;
        if (redisReaderGetReply(c->rd, &r) != REDIS_OK) {
            dp_err_set(err, "%s: bad reply: %s; closing the connection", c->name, c->rd->errstr);
            return -1;
        }
        if (r) {
            *out = r;
            return 0;
        }
        if (recv_some(c, deadline_ns, err) < 0)
            return -1;
    }
}

int dp_rconn_call(struct dp_rconn *c, int argc, const char **argv, const size_t *lens, redisReply **out,
                  struct dp_err *err)
{
    uint64_t deadline = dp_now_ns() + 10000ull * 1000000ull;
    if (dp_rconn_append(c, argc, argv, lens) < 0) {
        dp_err_set(err, "out of memory");
        return -1;
    }
    if (dp_rconn_flush(c, deadline, err) < 0)
        return -1;
    return dp_rconn_read(c, out, deadline, err);
}

/* ---- asynchronous use: the caller's event loop drives the connection ---------- */

struct dp_rconn *dp_rconn_start(const char *host, uint16_t port, const struct dp_redis_opts *o,
                                struct ssl_ctx_st *ctx, struct dp_err *err)
{
    struct dp_rconn *c = conn_new(host, port, ctx, err);
    if (!c)
        return NULL;
    if (tcp_start(c, host, port, err) < 0)
        goto fail;
    c->state = RC_CONNECTING;
    if (o->pass[0]) { /* first on the wire; its reply is checked by dp_rconn_take */
        if (append_auth(c, o) < 0) {
            dp_err_set(err, "out of memory");
            goto fail;
        }
        c->auth_pending = 1;
    }
    return c;
fail:
    dp_rconn_close(c);
    return NULL;
}

int dp_rconn_fd(const struct dp_rconn *c) { return c->fd; }

short dp_rconn_events(const struct dp_rconn *c)
{
    if (c->state == RC_CONNECTING)
        return POLLOUT;
    if (c->state == RC_HANDSHAKE)
        return c->hs_want;
    short ev = POLLIN;
    if (c->wlen > c->woff)
        ev |= c->wwant ? c->wwant : POLLOUT;
    if (c->rwant == POLLOUT)
        ev |= POLLOUT; /* a TLS read that must write first */
    return ev;
}

/* Connect, then the TLS handshake, without waiting: 1 when up, 0 not yet. */
static int advance_connect(struct dp_rconn *c, struct dp_err *err)
{
    if (c->state == RC_CONNECTING) {
        struct pollfd p = {.fd = c->fd, .events = POLLOUT};
        if (poll(&p, 1, 0) <= 0)
            return 0;
        if (tcp_check(c, err) < 0)
            return -1;
        if (!c->ctx) {
            c->state = RC_UP;
            return 1;
        }
        if (tls_setup(c, c->ctx, c->host, err) < 0)
            return -1;
        c->state = RC_HANDSHAKE;
    }
    int r = SSL_connect(c->ssl);
    if (r == 1) {
        c->state = RC_UP;
        return 1;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        c->hs_want = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
        return 0;
    }
    long v = SSL_get_verify_result(c->ssl);
    dp_err_set(err, "%s: TLS handshake failed: %s%s%s", c->name, ssl_errstr("connection closed"),
               v != X509_V_OK ? "; certificate: " : "", v != X509_V_OK ? X509_verify_cert_error_string(v) : "");
    return -1;
}

int dp_rconn_pump(struct dp_rconn *c, struct dp_err *err)
{
    if (c->state != RC_UP) {
        int k = advance_connect(c, err);
        if (k <= 0)
            return k;
    }
    /* send what is queued, as far as the socket takes it */
    c->wwant = 0;
    while (c->woff < c->wlen) {
        short ev;
        ssize_t r = try_send(c, c->wbuf + c->woff, c->wlen - c->woff, &ev, err);
        if (r < 0)
            return -1;
        if (r == 0) {
            c->wwant = ev;
            break;
        }
        c->woff += (size_t)r;
    }
    if (c->woff == c->wlen)
        c->woff = c->wlen = 0;
    /* read everything that arrived (TLS may hold decrypted bytes the socket
     * no longer shows: read until it would wait) */
    c->rwant = 0;
    for (;;) {
        short ev;
        ssize_t r = try_recv(c, &ev, err);
        if (r < 0)
            return -1;
        if (r == 0) {
            c->rwant = ev;
            return 0;
        }
    }
}

int dp_rconn_take(struct dp_rconn *c, redisReply **out, struct dp_err *err)
{
    for (;;) {
        void *r = NULL;
        if (redisReaderGetReply(c->rd, &r) != REDIS_OK) {
            dp_err_set(err, "%s: bad reply: %s; closing the connection", c->name, c->rd->errstr);
            return -1;
        }
        if (!r)
            return 0;
        if (!c->auth_pending) {
            *out = r;
            return 1;
        }
        c->auth_pending = 0;
        if (auth_check(c, r, err) < 0)
            return -1;
    }
}

size_t dp_rconn_unsent(const struct dp_rconn *c) { return c->wlen - c->woff; }
