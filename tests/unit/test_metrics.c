/* Unit tests of lib/metrics.c (the Prometheus text exposition) and of the
 * pure request check and address policy of lib/metrics_http.c. A strict
 * checker of the text format (below) reads every exposition back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "metrics_http.h"

/* ---- a strict reader of the text format --------------------------------------- */

struct family {
    char name[128], type[32];
    int samples;
};

struct expo {
    struct family f[128];
    int n;
    char err[1200];
};

static int valid_name(const char *s, size_t n)
{
    if (n == 0 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') || s[0] == '_' || s[0] == ':'))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '_' || s[i] == ':'))
            return 0;
    return 1;
}

/* The family a sample name belongs to: histograms own _bucket/_sum/_count. */
static struct family *family_of(struct expo *e, const char *name, size_t n)
{
    for (int i = e->n - 1; i >= 0; i--) {
        size_t fl = strlen(e->f[i].name);
        if (fl == n && memcmp(e->f[i].name, name, n) == 0)
            return &e->f[i];
        if (strcmp(e->f[i].type, "histogram") == 0 && n > fl && memcmp(e->f[i].name, name, fl) == 0) {
            const char *suf = name + fl;
            size_t sl = n - fl;
            if ((sl == 7 && !memcmp(suf, "_bucket", 7)) || (sl == 4 && !memcmp(suf, "_sum", 4)) ||
                (sl == 6 && !memcmp(suf, "_count", 6)))
                return &e->f[i];
        }
    }
    return NULL;
}

/* Reads text; returns 0 or -1 with e->err. Rules: HELP then TYPE once per
 * family, before its samples and never repeated; samples only of the last
 * declared family; label values quoted with valid escapes; values numbers;
 * counters named _total; the text ends with a newline. */
static int expo_read(const char *text, struct expo *e)
{
    memset(e, 0, sizeof(*e));
    size_t len = strlen(text);
    if (len == 0 || text[len - 1] != '\n')
        return snprintf(e->err, sizeof(e->err), "no final newline"), -1;
    char pending_help[128] = "";
    for (const char *l = text; *l;) {
        const char *nl = strchr(l, '\n');
        size_t ll = (size_t)(nl - l);
        char line[1024];
        if (ll >= sizeof(line))
            return snprintf(e->err, sizeof(e->err), "line too long"), -1;
        memcpy(line, l, ll);
        line[ll] = '\0';
        l = nl + 1;
        if (strncmp(line, "# HELP ", 7) == 0) {
            char *sp = strchr(line + 7, ' ');
            if (!sp || !valid_name(line + 7, (size_t)(sp - line - 7)))
                return snprintf(e->err, sizeof(e->err), "bad HELP: %s", line), -1;
            for (char *p = sp + 1; *p; p++)
                if (*p == '\\' && p[1] != '\\' && p[1] != 'n')
                    return snprintf(e->err, sizeof(e->err), "bad escape in HELP: %s", line), -1;
                else if (*p == '\\')
                    p++;
            snprintf(pending_help, sizeof(pending_help), "%.*s", (int)(sp - line - 7), line + 7);
            continue;
        }
        if (strncmp(line, "# TYPE ", 7) == 0) {
            char name[128], type[32];
            if (sscanf(line + 7, "%127s %31s", name, type) != 2 || !valid_name(name, strlen(name)))
                return snprintf(e->err, sizeof(e->err), "bad TYPE: %s", line), -1;
            if (strcmp(name, pending_help) != 0)
                return snprintf(e->err, sizeof(e->err), "TYPE without its HELP: %s", line), -1;
            if (strcmp(type, "counter") && strcmp(type, "gauge") && strcmp(type, "histogram"))
                return snprintf(e->err, sizeof(e->err), "unknown type: %s", line), -1;
            for (int i = 0; i < e->n; i++)
                if (strcmp(e->f[i].name, name) == 0)
                    return snprintf(e->err, sizeof(e->err), "family declared twice: %s", name), -1;
            if (!strcmp(type, "counter") && (strlen(name) < 6 || strcmp(name + strlen(name) - 6, "_total")))
                return snprintf(e->err, sizeof(e->err), "counter not named _total: %s", name), -1;
            if (strncmp(name, "distriproc_", 11) != 0)
                return snprintf(e->err, sizeof(e->err), "no distriproc_ prefix: %s", name), -1;
            snprintf(e->f[e->n].name, sizeof(e->f[e->n].name), "%s", name);
            snprintf(e->f[e->n].type, sizeof(e->f[e->n].type), "%s", type);
            e->n++;
            pending_help[0] = '\0';
            continue;
        }
        if (line[0] == '#' || line[0] == '\0')
            return snprintf(e->err, sizeof(e->err), "unexpected line: '%s'", line), -1;
        size_t nl2 = strcspn(line, "{ ");
        struct family *f = family_of(e, line, nl2);
        if (!f || f != &e->f[e->n - 1])
            return snprintf(e->err, sizeof(e->err), "sample outside its family: %s", line), -1;
        char *p = line + nl2;
        if (*p == '{') {
            p++;
            while (*p != '}') {
                size_t kl = strcspn(p, "=");
                if (!valid_name(p, kl) || p[kl] != '=' || p[kl + 1] != '"')
                    return snprintf(e->err, sizeof(e->err), "bad label: %s", line), -1;
                p += kl + 2;
                while (*p && *p != '"') {
                    if (*p == '\\' && (p[1] == '\\' || p[1] == '"' || p[1] == 'n'))
                        p++;
                    else if (*p == '\\' || *p == '\n')
                        return snprintf(e->err, sizeof(e->err), "bad label escape: %s", line), -1;
                    p++;
                }
                if (*p != '"')
                    return snprintf(e->err, sizeof(e->err), "unterminated label: %s", line), -1;
                p++;
                if (*p == ',')
                    p++;
                else if (*p != '}')
                    return snprintf(e->err, sizeof(e->err), "bad label list: %s", line), -1;
            }
            p++;
        }
        if (*p != ' ')
            return snprintf(e->err, sizeof(e->err), "no value: %s", line), -1;
        char *end;
        strtod(p + 1, &end);
        if (end == p + 1 || *end != '\0')
            return snprintf(e->err, sizeof(e->err), "bad value: %s", line), -1;
        f->samples++;
    }
    return 0;
}

/* The value of the sample line that starts with prefix ("name{...} "). */
static double sample(const char *text, const char *prefix)
{
    char key[256];
    snprintf(key, sizeof(key), "\n%s ", prefix);
    const char *p = strstr(text, key);
    if (!p)
        fail_msg("no sample %s", prefix);
    return strtod(p + strlen(key), NULL);
}

/* ---- tests -------------------------------------------------------------------- */

static void escapes_help_and_labels(void **state)
{
    (void)state;
    struct dp_sbuf b = {0};
    dp_prom_family(&b, "distriproc_x_total", "counter", "a \\ b\nc \"q\"");
    dp_prom_sample(&b, "distriproc_x_total", "k", "v\\\"\n", 7);
    assert_false(b.oom);
    assert_string_equal(b.p, "# HELP distriproc_x_total a \\\\ b\\nc \"q\"\n"
                             "# TYPE distriproc_x_total counter\n"
                             "distriproc_x_total{k=\"v\\\\\\\"\\n\"} 7\n");
    struct expo e;
    assert_int_equal(expo_read(b.p, &e), 0);
    dp_sbuf_free(&b);
}

static void histogram_bounds_never_count_below(void **state)
{
    (void)state;
    struct dp_hist h = {0};
    dp_hist_add(&h, 5000);        /* 5 us */
    dp_hist_add(&h, 20000);       /* 20 us */
    dp_hist_add(&h, 1000000);     /* 1 ms: its HDR bucket reaches above 1 ms */
    dp_hist_add(&h, 3000000000);  /* 3 s */
    struct dp_sbuf b = {0};
    dp_prom_histogram(&b, "distriproc_t_seconds", "t", &h);
    assert_false(b.oom);
    struct expo e;
    assert_int_equal(expo_read(b.p, &e), 0);
    assert_int_equal(sample(b.p, "distriproc_t_seconds_bucket{le=\"1e-05\"}"), 1);
    assert_int_equal(sample(b.p, "distriproc_t_seconds_bucket{le=\"2.5e-05\"}"), 2);
    assert_int_equal(sample(b.p, "distriproc_t_seconds_bucket{le=\"0.001\"}"), 2);
    assert_int_equal(sample(b.p, "distriproc_t_seconds_bucket{le=\"0.0025\"}"), 3);
    assert_int_equal(sample(b.p, "distriproc_t_seconds_bucket{le=\"2.5\"}"), 3);
    assert_int_equal(sample(b.p, "distriproc_t_seconds_bucket{le=\"5\"}"), 4);
    assert_int_equal(sample(b.p, "distriproc_t_seconds_bucket{le=\"+Inf\"}"), 4);
    assert_int_equal(sample(b.p, "distriproc_t_seconds_count"), 4);
    assert_non_null(strstr(b.p, "\ndistriproc_t_seconds_sum 3.001025000\n"));
    dp_sbuf_free(&b);
    /* never below: every bound counts at most the observations <= it */
    for (uint64_t ns = 1; ns < 20000000000ull; ns = ns * 3 + 1) {
        struct dp_hist one = {0};
        dp_hist_add(&one, ns);
        assert_true(dp_hist_count_at_most(&one, ns - 1) == 0);
        assert_true(dp_hist_count_at_most(&one, ns + ns / 7 + 1) == 1); /* within one HDR bucket (12.5%) */
    }
}

static void lazyd_exposition_is_strict_and_exact(void **state)
{
    (void)state;
    static struct dp_hist lat, wb, stop;
    memset(&lat, 0, sizeof(lat));
    for (int i = 0; i < 100; i++)
        dp_hist_add(&lat, 40000 + (uint64_t)i * 1000);
    struct dp_lazyd_metrics m = {
        .uptime_ms = 12345, .source_up = 1, .tasks_alive = 3,
        .c = {.faults = 1000, .faults_remote = 900, .pages_fetched = 800, .pages_prefetched = 77,
              .pages_background = 5, .prefetch_hits_inflight = 11, .prefetch_hits_inferred = 12,
              .prefetch_misses = 13, .wire_bytes = (1ull << 53) + 1, .fetch_requests = 66, .fetch_errors = 2},
        .resident_bytes = 4096 * 10, .remote_bytes = 4096 * 20,
        .fault_latency = &lat, .budget_on = 1, .evictions = 44, .writeback_pages = 33,
        .writeback_requests = 3, .writeback_errors = 1, .writeback_latency = &wb, .eviction_stop = &stop,
    };
    struct dp_sbuf b = {0};
    dp_metrics_lazyd_text(&b, &m);
    assert_false(b.oom);
    struct expo e;
    if (expo_read(b.p, &e) < 0)
        fail_msg("%s", e.err);
    assert_true(e.n >= 20);
    for (int i = 0; i < e.n; i++)
        assert_true(e.f[i].samples > 0);
    assert_non_null(strstr(b.p, "\ndistriproc_lazyd_uptime_seconds 12.345\n"));
    assert_int_equal(sample(b.p, "distriproc_lazyd_faults_total"), 1000);
    assert_int_equal(sample(b.p, "distriproc_lazyd_pages_fetched_total{reason=\"prefetch\"}"), 77);
    assert_int_equal(sample(b.p, "distriproc_lazyd_prefetch_hits_total{when=\"inferred\"}"), 12);
    assert_int_equal(sample(b.p, "distriproc_lazyd_errors_total{kind=\"writeback\"}"), 1);
    assert_int_equal(sample(b.p, "distriproc_lazyd_remote_bytes"), 4096 * 20);
    assert_int_equal(sample(b.p, "distriproc_lazyd_evictions_total"), 44);
    /* integers print exactly, even past a double's 53 bits */
    assert_non_null(strstr(b.p, "\ndistriproc_lazyd_received_bytes_total 9007199254740993\n"));
    assert_int_equal(sample(b.p, "distriproc_lazyd_fault_latency_seconds_count"), 100);
    assert_int_equal(sample(b.p, "distriproc_lazyd_fault_latency_seconds_bucket{le=\"2.5e-05\"}"), 0);
    assert_int_equal(sample(b.p, "distriproc_lazyd_fault_latency_seconds_bucket{le=\"0.00025\"}"), 100);
    assert_int_equal(sample(b.p, "distriproc_lazyd_writeback_latency_seconds_count"), 0);
    dp_sbuf_free(&b);
}

static void server_exposition_is_strict(void **state)
{
    (void)state;
    struct dp_server_metrics m = {.connections = 4, .pages_data = 10, .pages_zero = 2, .put_requests = 1};
    m.requests[4] = 9; /* get_pages */
    struct dp_sbuf b = {0};
    dp_metrics_server_text(&b, &m);
    struct expo e;
    if (expo_read(b.p, &e) < 0)
        fail_msg("%s", e.err);
    assert_int_equal(sample(b.p, "distriproc_server_requests_total{type=\"get_pages\"}"), 9);
    assert_int_equal(sample(b.p, "distriproc_server_pages_served_total{kind=\"zero\"}"), 2);
    assert_int_equal(sample(b.p, "distriproc_server_writeback_latency_seconds_bucket{le=\"+Inf\"}"), 0);
    dp_sbuf_free(&b);
}

/* The checker itself must refuse what a scraper refuses. */
static void checker_refuses_bad_text(void **state)
{
    (void)state;
    struct expo e;
    assert_int_equal(expo_read("distriproc_a_total 1\n", &e), -1); /* no TYPE */
    assert_int_equal(expo_read("# HELP distriproc_a a\n# TYPE distriproc_a counter\ndistriproc_a 1\n", &e), -1);
    assert_int_equal(expo_read("# HELP distriproc_a a\n# TYPE distriproc_a gauge\ndistriproc_a x\n", &e), -1);
    assert_int_equal(expo_read("# HELP distriproc_a a\n# TYPE distriproc_a gauge\ndistriproc_a{k=\"v} 1\n", &e), -1);
    assert_int_equal(expo_read("# HELP distriproc_a a\n# TYPE distriproc_a gauge\n"
                               "# HELP distriproc_a a\n# TYPE distriproc_a gauge\n", &e), -1);
    assert_int_equal(expo_read("# HELP distriproc_a a\n# TYPE distriproc_a gauge\ndistriproc_a 1", &e), -1);
    assert_int_equal(expo_read("# HELP distriproc_a a\n# TYPE distriproc_a gauge\ndistriproc_a 1\n", &e), 0);
}

static void http_request_status(void **state)
{
    (void)state;
    const size_t cap = DP_METRICS_MAX_REQUEST;
#define ST(s) dp_http_request_status(s, strlen(s), cap)
    assert_int_equal(ST("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
    assert_int_equal(ST("GET /metrics?x=1 HTTP/1.0\n\n"), 200);
    assert_int_equal(ST("GET /metrics HTTP/1.1\r\nHost: x\r\n"), 0);   /* head not complete */
    assert_int_equal(ST("GET /metrics"), 0);
    assert_int_equal(ST("GET / HTTP/1.1\r\n\r\n"), 404);
    assert_int_equal(ST("GET /metricsx HTTP/1.1\r\n\r\n"), 404);
    assert_int_equal(ST("POST /metrics HTTP/1.1\r\n\r\n"), 405);
    assert_int_equal(ST("HEAD /metrics HTTP/1.1\r\n\r\n"), 405);
    assert_int_equal(ST("GET /metrics HTTP/2.0\r\n\r\n"), 400);
    assert_int_equal(ST("GET  /metrics HTTP/1.1\r\n\r\n"), 400);
    assert_int_equal(ST("get /metrics HTTP/1.1\r\n\r\n"), 400);
    assert_int_equal(ST("GET metrics HTTP/1.1\r\n\r\n"), 400);
    assert_int_equal(dp_http_request_status("GET /\0 HTTP/1.1\r\n\r\n", 20, cap), 400);
    char big[DP_METRICS_MAX_REQUEST];
    memset(big, 'a', sizeof(big));
    memcpy(big, "GET /metrics HTTP/1.1\r\nX: ", 26);
    assert_int_equal(dp_http_request_status(big, sizeof(big), cap), 431);
    assert_int_equal(dp_http_request_status(big, sizeof(big) - 1, cap), 0);
#undef ST
}

static void metrics_address_policy(void **state)
{
    (void)state;
    struct sockaddr_in sa;
    struct dp_err err = {{0}};
    assert_int_equal(dp_metrics_addr_parse("127.0.0.1:9464", 0, &sa, &err), 0);
    assert_int_equal(ntohs(sa.sin_port), 9464);
    assert_int_equal(dp_metrics_addr_parse("localhost:0", 0, &sa, &err), 0);
    assert_int_equal(dp_metrics_addr_parse("127.1.2.3:1", 0, &sa, &err), 0);
    assert_int_equal(dp_metrics_addr_parse("10.250.0.1:9464", 0, &sa, &err), -1);
    assert_non_null(strstr(err.msg, "no authentication"));
    assert_non_null(strstr(err.msg, "--metrics-allow-remote"));
    assert_int_equal(dp_metrics_addr_parse("0.0.0.0:9464", 0, &sa, &err), -1);
    assert_int_equal(dp_metrics_addr_parse("0.0.0.0:9464", 1, &sa, &err), 0);
    assert_int_equal(dp_metrics_addr_parse("9464", 0, &sa, &err), -1);
    assert_non_null(strstr(err.msg, "IPV4:PORT"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(escapes_help_and_labels),
        cmocka_unit_test(histogram_bounds_never_count_below),
        cmocka_unit_test(lazyd_exposition_is_strict_and_exact),
        cmocka_unit_test(server_exposition_is_strict),
        cmocka_unit_test(checker_refuses_bad_text),
        cmocka_unit_test(http_request_status),
        cmocka_unit_test(metrics_address_policy),
    };
    return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
