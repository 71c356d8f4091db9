/* metrics: the Prometheus text exposition format (version 0.0.4) of the page
 * server's and the lazy-pages daemon's counters. Pure: a snapshot struct in,
 * text out; no I/O, no clock. The snapshots are filled from the very counters
 * `distriproc query stats` and `distriproc stats` print, so a scrape and those
 * commands cannot disagree (lib/pageserver.c, lib/lazyd.c fill them).
 *
 * Names follow the Prometheus conventions: the distriproc_ prefix, a
 * subsystem (server_, lazyd_), base units (seconds, bytes), _total on
 * counters, HELP and TYPE before every family. Latency histograms are the
 * daemon's HDR histograms (lib/lazystats.h) read at fixed bounds in seconds:
 * a bucket counts the observations whose HDR bucket lies wholly at or below
 * its bound, so an observation is never counted below its true value and at
 * most one bound above it. Served over HTTP by lib/metrics_http.h. */
#ifndef DP_METRICS_H
#define DP_METRICS_H

#include <stdint.h>

#include "lazystats.h"

/* The text's Content-Type header value. */
#define DP_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* ---- snapshots ---------------------------------------------------------- */

/* The page server (`distriproc serve`); field names as in `query stats`. */
struct dp_server_metrics {
    uint64_t uptime_ms;
    uint64_t tasks, lazy_bytes;
    uint64_t clients;                 /* open connections now */
    uint64_t connections, auth_failures, protocol_errors, records_rejected;
    uint64_t requests[16];            /* by message type, names below */
    uint64_t pages_data, pages_zero, pages_not_lazy, pages_from_overlay;
    uint64_t bytes_in, bytes_out;
    uint64_t put_requests, pages_written_back, puts_refused;
    uint64_t writeback_failed;        /* 0/1 */
    uint64_t overlay_pages, pages_touched;
    const struct dp_hist *writeback_latency; /* PUT received -> durable ack; may be NULL */
};

/* Names of server request types by message number; NULL ends, "" skips. */
extern const char *const dp_server_request_names[];

/* The lazy-pages daemon (`distriproc restore`, `distriproc lazy-pages`):
 * the "total" and "budget" objects of `distriproc stats --json`. */
struct dp_lazyd_metrics {
    uint64_t uptime_ms;
    uint64_t source_up;               /* 0/1: the page source is reachable */
    uint64_t tasks_alive;
    struct dp_lazy_counters c;        /* totals over every task */
    uint64_t resident_bytes, remote_bytes;
    const struct dp_hist *fault_latency;
    uint64_t budget_on;               /* 0/1 */
    uint64_t evictions, writeback_pages, writeback_errors;
    uint64_t writeback_requests, writeback_requests_background; /* in a stop / in the background */
    const struct dp_hist *writeback_latency; /* a batch's PUTs submitted -> all acknowledged (durable) */
    const struct dp_hist *eviction_stop;     /* a batch's whole stop of the process */
};

/* ---- exposition --------------------------------------------------------- */

/* Appends the whole exposition of a snapshot to b (b->oom on failure). */
void dp_metrics_server_text(struct dp_sbuf *b, const struct dp_server_metrics *m);
void dp_metrics_lazyd_text(struct dp_sbuf *b, const struct dp_lazyd_metrics *m);

/* Building blocks, exported for the tests. A HELP text escapes '\' and
 * newline; a label value also '"'. */
void dp_prom_family(struct dp_sbuf *b, const char *name, const char *type, const char *help);
void dp_prom_sample(struct dp_sbuf *b, const char *name, const char *label, const char *value, uint64_t v);
void dp_prom_histogram(struct dp_sbuf *b, const char *name, const char *help, const struct dp_hist *h);

#endif
