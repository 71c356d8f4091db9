/* metrics_http: the bounded, non-blocking /metrics responder (see metrics_http.h). */
#include "metrics_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "metrics.h"

/* ---- the request check (pure) --------------------------------------------- */

/* The end of the request head (after its blank line), or 0 if not there yet. */
static size_t head_end(const char *buf, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (buf[i] != '\n')
            continue;
        if (buf[i + 1] == '\n')
            return i + 2;
        if (buf[i + 1] == '\r' && i + 2 < len && buf[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

int dp_http_request_status(const char *buf, size_t len, size_t cap)
{
    if (memchr(buf, '\0', len))
        return 400;
    size_t end = head_end(buf, len);
    if (!end)
        return len >= cap ? 431 : 0;
    if (end > cap)
        return 431;
    /* request line: METHOD SP TARGET SP HTTP/1.x */
    const char *nl = memchr(buf, '\n', len);
    size_t line = (size_t)(nl - buf);
    if (line > 0 && buf[line - 1] == '\r')
        line--;
    const char *sp1 = memchr(buf, ' ', line);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', line - (size_t)(sp1 + 1 - buf)) : NULL;
    if (!sp1 || !sp2 || sp1 == buf || sp2 == sp1 + 1)
        return 400;
    size_t vlen = line - (size_t)(sp2 + 1 - buf);
    if (vlen != 8 || (memcmp(sp2 + 1, "HTTP/1.0", 8) != 0 && memcmp(sp2 + 1, "HTTP/1.1", 8) != 0))
        return 400;
    for (const char *p = buf; p < sp1; p++)
        if (*p < 'A' || *p > 'Z')
            return 400;
    const char *target = sp1 + 1;
    size_t tlen = (size_t)(sp2 - target);
    if (target[0] != '/')
        return 400;
    if ((size_t)(sp1 - buf) != 3 || memcmp(buf, "GET", 3) != 0)
        return 405;
    const char *q = memchr(target, '?', tlen);
    size_t plen = q ? (size_t)(q - target) : tlen;
    return plen == 8 && memcmp(target, "/metrics", 8) == 0 ? 200 : 404;
}

int dp_metrics_addr_parse(const char *text, int allow_remote, struct sockaddr_in *out, struct dp_err *err)
{
    if (dp_parse_hostport(text, out) < 0) {
        dp_err_set(err, "--metrics wants IPV4:PORT such as 127.0.0.1:9464 (got '%s')", text);
        return -1;
    }
    if (!allow_remote && (ntohl(out->sin_addr.s_addr) >> 24) != 127) {
        dp_err_set(err, "--metrics %s is not a loopback address: the metrics endpoint has no authentication "
                   "and no encryption, so anyone who can reach it reads the counters; bind it to 127.0.0.1 "
                   "and scrape locally (or through a proxy that authenticates), or add "
                   "--metrics-allow-remote if the network is trusted", text);
        return -1;
    }
    return 0;
}

/* ---- connections ------------------------------------------------------------ */

struct mclient {
    int fd;                       /* -1: free slot */
    uint64_t since_ns;            /* for pushing out the oldest */
    char in[DP_METRICS_MAX_REQUEST];
    size_t in_len;
    struct dp_sbuf out;           /* status line, headers, body */
    size_t out_off;
    int answering;
};

struct dp_metrics_http {
    int ep, lfd;
    unsigned port;
    dp_metrics_render_fn render;
    void *ctx;
    struct mclient c[DP_METRICS_MAX_CLIENTS];
};

#define LISTENER_TAG UINT64_MAX

/* Closing with unread bytes would send a reset that can destroy the response
 * in flight: read what is left (bounded: the socket is non-blocking). */
static void client_close(struct dp_metrics_http *m, struct mclient *c)
{
    char sink[512];
    for (int i = 0; i < 8 && recv(c->fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++)
        ;
    epoll_ctl(m->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    dp_sbuf_free(&c->out);
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 431: return "Request Header Fields Too Large";
    default: return "Bad Request";
    }
}

/* Builds the whole response (it is small: one exposition, a few KiB). */
static void client_answer(struct dp_metrics_http *m, struct mclient *c, int status)
{
    struct dp_sbuf body = {0};
    if (status == 200)
        m->render(m->ctx, &body);
    else if (status == 404)
        dp_sbuf_printf(&body, "not found: the metrics are at /metrics\n");
    else if (status == 405)
        dp_sbuf_printf(&body, "method not allowed: use GET /metrics\n");
    else
        dp_sbuf_printf(&body, "bad request\n");
    if (body.oom) {
        dp_sbuf_free(&body);
        client_close(m, c);
        return;
    }
    dp_sbuf_printf(&c->out,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%sConnection: close\r\n\r\n",
                   status, reason(status), status == 200 ? DP_METRICS_CONTENT_TYPE : "text/plain; charset=utf-8",
                   body.len, status == 405 ? "Allow: GET\r\n" : "");
    if (body.len)
        dp_sbuf_printf(&c->out, "%.*s", (int)body.len, body.p);
    dp_sbuf_free(&body);
    if (c->out.oom) {
        client_close(m, c);
        return;
    }
    c->answering = 1;
    c->out_off = 0;
}

/* Sends what the socket takes; closes once all is out, else waits for EPOLLOUT. */
static void client_flush(struct dp_metrics_http *m, struct mclient *c)
{
    while (c->out_off < c->out.len) {
        ssize_t n = send(c->fd, c->out.p + c->out_off, c->out.len - c->out_off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct epoll_event e = {.events = EPOLLOUT, .data.u64 = (uint64_t)(c - m->c)};
            epoll_ctl(m->ep, EPOLL_CTL_MOD, c->fd, &e);
            return;
        }
        if (n <= 0)
            break;
        c->out_off += (size_t)n;
    }
    client_close(m, c);
}

static void client_read(struct dp_metrics_http *m, struct mclient *c)
{
    if (c->answering) {
        client_flush(m, c);
        return;
    }
    ssize_t n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) { /* gone before a whole request */
        client_close(m, c);
        return;
    }
    c->in_len += (size_t)n;
    int status = dp_http_request_status(c->in, c->in_len, sizeof(c->in));
    if (status == 0)
        return;
    dp_debug("metrics: %d for a request from fd %d", status, c->fd);
    client_answer(m, c, status);
    if (c->fd >= 0)
        client_flush(m, c);
}

/* Takes every pending connection; a full table gives the oldest slot up. */
static void on_accept(struct dp_metrics_http *m)
{
    for (;;) {
        int fd = accept4(m->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
                dp_warn("metrics endpoint: accept failed: %s", strerror(errno));
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return;
        }
        struct mclient *slot = NULL, *oldest = &m->c[0];
        for (size_t i = 0; i < DP_METRICS_MAX_CLIENTS; i++) {
            if (m->c[i].fd < 0) {
                slot = &m->c[i];
                break;
            }
            if (m->c[i].since_ns < oldest->since_ns)
                oldest = &m->c[i];
        }
        if (!slot) {
            client_close(m, oldest);
            slot = oldest;
        }
        memset(slot, 0, sizeof(*slot));
        slot->fd = fd;
        slot->since_ns = dp_now_ns();
        struct epoll_event e = {.events = EPOLLIN, .data.u64 = (uint64_t)(slot - m->c)};
        if (epoll_ctl(m->ep, EPOLL_CTL_ADD, fd, &e) < 0) {
            close(fd);
            slot->fd = -1;
        }
    }
}

/* ---- the endpoint ------------------------------------------------------------ */

struct dp_metrics_http *dp_metrics_http_open(const struct sockaddr_in *addr, dp_metrics_render_fn render, void *ctx,
                                             struct dp_err *err)
{
    struct dp_metrics_http *m = calloc(1, sizeof(*m));
    if (!m) {
        dp_err_set(err, "out of memory");
        return NULL;
    }
    m->render = render;
    m->ctx = ctx;
    for (size_t i = 0; i < DP_METRICS_MAX_CLIENTS; i++)
        m->c[i].fd = -1;
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &addr->sin_addr, ip, sizeof(ip));
    m->ep = epoll_create1(EPOLL_CLOEXEC);
    m->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    struct sockaddr_in bound;
    socklen_t bl = sizeof(bound);
    struct epoll_event e = {.events = EPOLLIN, .data.u64 = LISTENER_TAG};
    if (m->ep < 0 || m->lfd < 0 || setsockopt(m->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(m->lfd, (const struct sockaddr *)addr, sizeof(*addr)) < 0 || listen(m->lfd, 16) < 0 ||
        getsockname(m->lfd, (struct sockaddr *)&bound, &bl) < 0 || epoll_ctl(m->ep, EPOLL_CTL_ADD, m->lfd, &e) < 0) {
        dp_err_set(err, "cannot serve metrics on %s:%u: %s; choose a free port with --metrics ADDR:PORT", ip,
                   ntohs(addr->sin_port), strerror(errno));
        if (m->lfd >= 0)
            close(m->lfd);
        if (m->ep >= 0)
            close(m->ep);
        free(m);
        return NULL;
    }
    m->port = ntohs(bound.sin_port);
    dp_info("metrics on http://%s:%u/metrics", ip, m->port);
    return m;
}

int dp_metrics_http_fd(const struct dp_metrics_http *m) { return m->ep; }

unsigned dp_metrics_http_port(const struct dp_metrics_http *m) { return m->port; }

void dp_metrics_http_handle(struct dp_metrics_http *m)
{
    struct epoll_event evs[DP_METRICS_MAX_CLIENTS + 1];
    int n = epoll_wait(m->ep, evs, (int)DP_ARRAY_LEN(evs), 0);
    for (int i = 0; i < n; i++) {
        if (evs[i].data.u64 == LISTENER_TAG) {
            on_accept(m);
            continue;
        }
        struct mclient *c = &m->c[evs[i].data.u64];
        if (c->fd >= 0) /* pushed out by an accept in this batch */
            client_read(m, c);
    }
}

void dp_metrics_http_close(struct dp_metrics_http *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < DP_METRICS_MAX_CLIENTS; i++)
        if (m->c[i].fd >= 0)
            client_close(m, &m->c[i]);
    close(m->lfd);
    close(m->ep);
    free(m);
}
