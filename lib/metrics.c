/* metrics: Prometheus text exposition of the stats snapshots (see metrics.h). */
#include "metrics.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

const char *const dp_server_request_names[] = {"", "hello", "auth", "task_map", "get_pages", "put_pages",
                                               "get_skeleton", "stats", "access_log", "put_trace",
                                               "get_hotset", NULL};

/* ---- building blocks ------------------------------------------------------ */

/* Escapes per the text format: HELP text escapes backslash and newline, a
 * label value also the double quote; anything else goes through as is. */
static void put_escaped(struct dp_sbuf *b, const char *s, int quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            dp_sbuf_printf(b, "\\\\");
        else if (*s == '\n')
            dp_sbuf_printf(b, "\\n");
        else if (quote && *s == '"')
            dp_sbuf_printf(b, "\\\"");
        else
            dp_sbuf_printf(b, "%c", *s);
    }
}

/* HELP and TYPE come once, before a family's first sample, as the format
 * requires; the parser of a scraper rejects a repeated family. */
void dp_prom_family(struct dp_sbuf *b, const char *name, const char *type, const char *help)
{
    dp_sbuf_printf(b, "# HELP %s ", name);
    put_escaped(b, help, 0);
    dp_sbuf_printf(b, "\n# TYPE %s %s\n", name, type);
}

/* One sample; label NULL for none. Integer values print exactly (a float
 * would round counters above 2^53). */
void dp_prom_sample(struct dp_sbuf *b, const char *name, const char *label, const char *value, uint64_t v)
{
    dp_sbuf_printf(b, "%s", name);
    if (label) {
        dp_sbuf_printf(b, "{%s=\"", label);
        put_escaped(b, value, 1);
        dp_sbuf_printf(b, "\"}");
    }
    dp_sbuf_printf(b, " %llu\n", (unsigned long long)v);
}

/* Bounds of every latency histogram, from 10 us (a page from a local image)
 * to 10 s (a fault stuck behind a lost source). */
static const struct {
    const char *le;
    uint64_t ns;
} bounds[] = {
    {"1e-05", 10000ull},        {"2.5e-05", 25000ull},      {"5e-05", 50000ull},
    {"0.0001", 100000ull},      {"0.00025", 250000ull},     {"0.0005", 500000ull},
    {"0.001", 1000000ull},      {"0.0025", 2500000ull},     {"0.005", 5000000ull},
    {"0.01", 10000000ull},      {"0.025", 25000000ull},     {"0.05", 50000000ull},
    {"0.1", 100000000ull},      {"0.25", 250000000ull},     {"0.5", 500000000ull},
    {"1", 1000000000ull},       {"2.5", 2500000000ull},     {"5", 5000000000ull},
    {"10", 10000000000ull},
};

/* A histogram family from an HDR histogram in nanoseconds; NULL or empty
 * gives zeros, so the family exists from the first scrape on. */
void dp_prom_histogram(struct dp_sbuf *b, const char *name, const char *help, const struct dp_hist *h)
{
    char sample[160];
    dp_prom_family(b, name, "histogram", help);
    snprintf(sample, sizeof(sample), "%s_bucket", name);
    for (size_t i = 0; i < DP_ARRAY_LEN(bounds); i++)
        dp_prom_sample(b, sample, "le", bounds[i].le, h ? dp_hist_count_at_most(h, bounds[i].ns) : 0);
    dp_prom_sample(b, sample, "le", "+Inf", h ? h->count : 0);
    uint64_t sum = h ? h->sum_ns : 0;
    dp_sbuf_printf(b, "%s_sum %llu.%09llu\n", name, (unsigned long long)(sum / 1000000000ull),
                   (unsigned long long)(sum % 1000000000ull));
    dp_sbuf_printf(b, "%s_count %llu\n", name, (unsigned long long)(h ? h->count : 0));
}

/* ---- tables ------------------------------------------------------------------ */

/* One sample read from a snapshot at off. Consecutive rows of one name form
 * one family (its HELP and TYPE from the first row). A ms field is printed
 * as seconds. */
struct row {
    const char *name, *type, *help;
    const char *label, *value; /* NULL: no label */
    size_t off;
    int ms;
};

#define SRV(f) offsetof(struct dp_server_metrics, f)
#define LZ(f) offsetof(struct dp_lazyd_metrics, f)
#define LZC(f) (offsetof(struct dp_lazyd_metrics, c) + offsetof(struct dp_lazy_counters, f))

static const struct row server_rows[] = {
    {"distriproc_server_uptime_seconds", "gauge", "Seconds since the page server started.", NULL, NULL,
     SRV(uptime_ms), 1},
    {"distriproc_server_tasks", "gauge", "Tasks in the served checkpoint.", NULL, NULL, SRV(tasks), 0},
    {"distriproc_server_lazy_bytes", "gauge", "Lazy (served on demand) memory of the checkpoint in bytes.", NULL,
     NULL, SRV(lazy_bytes), 0},
    {"distriproc_server_clients", "gauge", "Client connections open now.", NULL, NULL, SRV(clients), 0},
    {"distriproc_server_connections_total", "counter", "Client connections accepted.", NULL, NULL,
     SRV(connections), 0},
    {"distriproc_server_errors_total", "counter",
     "Errors by kind: auth (failed handshakes), protocol (malformed requests), record (rejected sealed records).",
     "kind", "auth", SRV(auth_failures), 0},
    {"distriproc_server_errors_total", NULL, NULL, "kind", "protocol", SRV(protocol_errors), 0},
    {"distriproc_server_errors_total", NULL, NULL, "kind", "record", SRV(records_rejected), 0},
    {"distriproc_server_pages_served_total", "counter",
     "Pages sent to clients by kind: data, zero, not_lazy (outside the lazy memory).", "kind", "data",
     SRV(pages_data), 0},
    {"distriproc_server_pages_served_total", NULL, NULL, "kind", "zero", SRV(pages_zero), 0},
    {"distriproc_server_pages_served_total", NULL, NULL, "kind", "not_lazy", SRV(pages_not_lazy), 0},
    {"distriproc_server_overlay_reads_total", "counter", "Pages served from the write-back log.", NULL, NULL,
     SRV(pages_from_overlay), 0},
    {"distriproc_server_received_bytes_total", "counter", "Bytes received from clients.", NULL, NULL,
     SRV(bytes_in), 0},
    {"distriproc_server_sent_bytes_total", "counter", "Bytes sent to clients.", NULL, NULL, SRV(bytes_out), 0},
    {"distriproc_server_writeback_requests_total", "counter", "Write-back (PUT_PAGES) requests accepted.", NULL,
     NULL, SRV(put_requests), 0},
    {"distriproc_server_writeback_pages_total", "counter", "Pages written back durably.", NULL, NULL,
     SRV(pages_written_back), 0},
    {"distriproc_server_writebacks_refused_total", "counter", "Write-back requests refused.", NULL, NULL,
     SRV(puts_refused), 0},
    {"distriproc_server_writeback_failed", "gauge", "1 once the write-back log failed (writes refused since).",
     NULL, NULL, SRV(writeback_failed), 0},
    {"distriproc_server_overlay_pages", "gauge", "Pages held in the write-back log.", NULL, NULL,
     SRV(overlay_pages), 0},
    {"distriproc_server_pages_touched", "gauge", "Distinct pages clients have fetched.", NULL, NULL,
     SRV(pages_touched), 0},
};

static const struct row lazyd_rows[] = {
    {"distriproc_lazyd_uptime_seconds", "gauge", "Seconds since the lazy-pages daemon started.", NULL, NULL,
     LZ(uptime_ms), 1},
    {"distriproc_lazyd_source_up", "gauge", "1 while the page source is reachable.", NULL, NULL, LZ(source_up),
     0},
    {"distriproc_lazyd_tasks_alive", "gauge", "Restored tasks alive.", NULL, NULL, LZ(tasks_alive), 0},
    {"distriproc_lazyd_faults_total", "counter", "Page faults handled.", NULL, NULL, LZC(faults), 0},
    {"distriproc_lazyd_remote_faults_total", "counter", "Page faults that needed a fetch from the source.", NULL,
     NULL, LZC(faults_remote), 0},
    {"distriproc_lazyd_zero_faults_total", "counter", "Page faults answered with a zero page.", NULL, NULL,
     LZC(faults_zero), 0},
    {"distriproc_lazyd_faults_waiting", "gauge", "Faults waiting for their page now.", NULL, NULL,
     LZC(faults_waiting), 0},
    {"distriproc_lazyd_fetch_requests_total", "counter", "Fetch requests sent to the page source.", NULL, NULL,
     LZC(fetch_requests), 0},
    {"distriproc_lazyd_pages_fetched_total", "counter",
     "Pages installed by why they were fetched: fault, prefetch, background.", "reason", "fault",
     LZC(pages_fetched), 0},
    {"distriproc_lazyd_pages_fetched_total", NULL, NULL, "reason", "prefetch", LZC(pages_prefetched), 0},
    {"distriproc_lazyd_pages_fetched_total", NULL, NULL, "reason", "background", LZC(pages_background), 0},
    {"distriproc_lazyd_prefetch_hits_total", "counter",
     "Prefetched pages a fault then asked for: inflight (while still on the way), inferred (after install).",
     "when", "inflight", LZC(prefetch_hits_inflight), 0},
    {"distriproc_lazyd_prefetch_hits_total", NULL, NULL, "when", "inferred", LZC(prefetch_hits_inferred), 0},
    {"distriproc_lazyd_prefetch_misses_total", "counter", "Prefetched pages never asked for.", NULL, NULL,
     LZC(prefetch_misses), 0},
    {"distriproc_lazyd_received_bytes_total", "counter", "Bytes received from the page source.", NULL, NULL,
     LZC(wire_bytes), 0},
    {"distriproc_lazyd_errors_total", "counter", "Errors by kind: fetch (a fetch failed), writeback.", "kind",
     "fetch", LZC(fetch_errors), 0},
    {"distriproc_lazyd_errors_total", NULL, NULL, "kind", "writeback", LZ(writeback_errors), 0},
    {"distriproc_lazyd_resident_bytes", "gauge", "Lazy memory of live tasks installed in them, in bytes.", NULL,
     NULL, LZ(resident_bytes), 0},
    {"distriproc_lazyd_remote_bytes", "gauge", "Lazy memory of live tasks still at the source, in bytes.", NULL,
     NULL, LZ(remote_bytes), 0},
    {"distriproc_lazyd_budget_enabled", "gauge", "1 when a memory budget (--budget) is in force.", NULL, NULL,
     LZ(budget_on), 0},
    {"distriproc_lazyd_evictions_total", "counter", "Pages evicted to stay within the budget.", NULL, NULL,
     LZ(evictions), 0},
    {"distriproc_lazyd_writeback_pages_total", "counter", "Modified pages written back to the page server.", NULL,
     NULL, LZ(writeback_pages), 0},
    {"distriproc_lazyd_writeback_requests_total", "counter",
     "Write-back requests sent to the page server: stop (inside an eviction stop), background (ahead of one).",
     "mode", "stop", LZ(writeback_requests), 0},
    {"distriproc_lazyd_writeback_requests_total", NULL, NULL, "mode", "background",
     LZ(writeback_requests_background), 0},
};

/* Prints a table of rows, then the snapshot's histograms follow. */
static void put_rows(struct dp_sbuf *b, const void *snap, const struct row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct row *r = &rows[i];
        if (i == 0 || strcmp(rows[i - 1].name, r->name) != 0)
            dp_prom_family(b, r->name, r->type, r->help);
        uint64_t v;
        memcpy(&v, (const char *)snap + r->off, sizeof(v));
        if (r->ms) {
            dp_sbuf_printf(b, "%s %llu.%03llu\n", r->name, (unsigned long long)(v / 1000),
                           (unsigned long long)(v % 1000));
            continue;
        }
        dp_prom_sample(b, r->name, r->label, r->value, v);
    }
}

/* ---- the two expositions ---------------------------------------------------- */

void dp_metrics_server_text(struct dp_sbuf *b, const struct dp_server_metrics *m)
{
    put_rows(b, m, server_rows, DP_ARRAY_LEN(server_rows));
    dp_prom_family(b, "distriproc_server_requests_total", "counter", "Requests handled by type.");
    for (size_t i = 1; dp_server_request_names[i] && i < DP_ARRAY_LEN(m->requests); i++)
        dp_prom_sample(b, "distriproc_server_requests_total", "type", dp_server_request_names[i], m->requests[i]);
    dp_prom_histogram(b, "distriproc_server_writeback_latency_seconds",
                      "Write-back latency: a PUT_PAGES request received to its durable acknowledgement.",
                      m->writeback_latency);
}

void dp_metrics_lazyd_text(struct dp_sbuf *b, const struct dp_lazyd_metrics *m)
{
    put_rows(b, m, lazyd_rows, DP_ARRAY_LEN(lazyd_rows));
    dp_prom_histogram(b, "distriproc_lazyd_fault_latency_seconds",
                      "Fault latency: the fault read to its page installed.", m->fault_latency);
    dp_prom_histogram(b, "distriproc_lazyd_writeback_latency_seconds",
                      "Write-back latency: a batch's write-backs sent to all acknowledged (durable).",
                      m->writeback_latency);
    dp_prom_histogram(b, "distriproc_lazyd_eviction_stop_seconds",
                      "How long an eviction batch stopped the process (write-back included).", m->eviction_stop);
}
