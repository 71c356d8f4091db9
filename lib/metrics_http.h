/* metrics_http: the opt-in local HTTP endpoint (`--metrics ADDR:PORT`) that
 * serves lib/metrics.h's text to a Prometheus scraper.
 *
 * Minimal and bounded on purpose: GET /metrics only (404 for another path,
 * 405 for another method, 400 for a malformed request, 431 past a 2 KiB
 * request head), one response per connection then close, at most
 * DP_METRICS_MAX_CLIENTS connections (a new one pushes out the oldest, so a
 * client that never finishes its request or never reads holds nothing for
 * long). Every socket is non-blocking and the endpoint never waits: it owns
 * one epoll descriptor, which its host loop (lib/pageserver.c, lib/lazyd.c)
 * adds as one more descriptor with dp_metrics_http_handle as its handler;
 * that handler takes what is ready and returns.
 *
 * No authentication and no TLS: it binds to loopback unless the operator
 * says otherwise (dp_metrics_addr_parse). */
#ifndef DP_METRICS_HTTP_H
#define DP_METRICS_HTTP_H

#include <stddef.h>
#include <netinet/in.h>

#include "lazystats.h"
#include "util.h"

#define DP_METRICS_MAX_CLIENTS 8
#define DP_METRICS_MAX_REQUEST 2048

/* Appends the current exposition to out. */
typedef void (*dp_metrics_render_fn)(void *ctx, struct dp_sbuf *out);

/* --metrics ADDR:PORT. A non-loopback address is refused (the endpoint has
 * no authentication) unless allow_remote. 0, or -1 with err. */
int dp_metrics_addr_parse(const char *text, int allow_remote, struct sockaddr_in *out, struct dp_err *err);

struct dp_metrics_http;
/* Listens on addr (port 0: any free port; see dp_metrics_http_port). */
struct dp_metrics_http *dp_metrics_http_open(const struct sockaddr_in *addr, dp_metrics_render_fn render, void *ctx,
                                             struct dp_err *err);
/* The one descriptor for the host loop (EPOLLIN). */
int dp_metrics_http_fd(const struct dp_metrics_http *m);
unsigned dp_metrics_http_port(const struct dp_metrics_http *m);
/* Handles whatever is ready on the endpoint's sockets; never blocks. */
void dp_metrics_http_handle(struct dp_metrics_http *m);
void dp_metrics_http_close(struct dp_metrics_http *m);

/* Pure: the verdict on a request head buf[0..len) of at most cap bytes:
 * 0 = incomplete (read more), else the HTTP status to answer: 200 (GET
 * /metrics), 400, 404, 405 or 431. */
int dp_http_request_status(const char *buf, size_t len, size_t cap);

#endif
