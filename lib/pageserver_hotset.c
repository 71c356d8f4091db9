/* pageserver_hotset: stored traces and GET_HOTSET (see pageserver_hotset.h). */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hotset.h"
#include "pageserver_hotset.h"
#include "proto.h"
#include "proto_hotset.h"

struct dp_hotset_store {
    const struct dp_checkpoint *cp;
    uint8_t id[DP_CPID_SIZE];
};

int dp_hotset_store_open(const struct dp_checkpoint *cp, struct dp_hotset_store **out, struct dp_err *err)
{
    struct dp_hotset_store *st = calloc(1, sizeof(*st));
    if (!st) {
        dp_err_set(err, "out of memory");
        return -1;
    }
    st->cp = cp;
    if (dp_checkpoint_identity(cp, st->id, err) < 0) {
        free(st);
        return -1;
    }
    *out = st;
    return 0;
}

void dp_hotset_store_close(struct dp_hotset_store *st)
{
    free(st);
}

const uint8_t *dp_hotset_store_identity(const struct dp_hotset_store *st)
{
    return st->id;
}

/* Created-us values of the stored traces, newest first. */
static size_t list_traces(const char *dir, uint64_t *out, size_t max)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    size_t n = 0;
    struct dirent *e;
    size_t plen = strlen(DP_TRACE_PREFIX);
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, DP_TRACE_PREFIX, plen) != 0)
            continue;
        char *end;
        errno = 0;
        unsigned long long v = strtoull(e->d_name + plen, &end, 10);
        if (errno || end == e->d_name + plen || strcmp(end, ".bin") != 0)
            continue;
        /* insertion into a newest-first array of at most max */
        size_t i = n < max ? n++ : max;
        while (i > 0 && out[i - 1] < v) {
            if (i < max)
                out[i] = out[i - 1];
            i--;
        }
        if (i < max)
            out[i] = v;
    }
    closedir(d);
    return n;
}

static void trace_path(const struct dp_hotset_store *st, uint64_t created, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s%" PRIu64 ".bin", st->cp->dir, DP_TRACE_PREFIX, created);
}

int dp_hotset_store_put_trace(struct dp_hotset_store *st, const uint8_t *p, size_t len, uint64_t *pages,
                              uint32_t *runs, char *name, size_t name_len, struct dp_err *err)
{
    struct dp_hotset hs;
    struct dp_err e;
    if (dp_hotset_decode("PUT_TRACE", p, len, &hs, &e) < 0) {
        dp_err_set(err, "%s", e.msg);
        return DP_E_MALFORMED;
    }
    if (hs.source != DP_HS_TRACE) {
        dp_err_set(err, "PUT_TRACE carries a %s hot set; only a recorded trace can be uploaded",
                   dp_hotset_source_name(hs.source));
        dp_hotset_free(&hs);
        return DP_E_MALFORMED;
    }
    if (dp_hotset_check("uploaded trace", &hs, st->cp, st->id, &e) < 0) {
        dp_err_set(err, "%s", e.msg);
        dp_hotset_free(&hs);
        return DP_E_WRONG_CHECKPOINT;
    }
    char path[4200];
    trace_path(st, hs.created_us, path, sizeof(path));
    int rc = dp_hotset_write(path, &hs, &e);
    *pages = hs.total_pages;
    *runs = hs.nr_runs;
    dp_hotset_free(&hs);
    if (rc < 0) {
        dp_err_set(err, "%s", e.msg);
        return DP_E_IO;
    }
    const char *slash = strrchr(path, '/');
    snprintf(name, name_len, "%s", slash ? slash + 1 : path);
    /* keep the newest few */
    uint64_t v[DP_TRACES_KEPT + 1];
    size_t n = list_traces(st->cp->dir, v, DP_TRACES_KEPT + 1);
    while (n > DP_TRACES_KEPT) {
        /* the oldest beyond the kept ones: re-list, since only max are returned */
        char old[4200];
        trace_path(st, v[DP_TRACES_KEPT], old, sizeof(old));
        if (unlink(old) < 0)
            break;
        n = list_traces(st->cp->dir, v, DP_TRACES_KEPT + 1);
    }
    return DP_E_OK;
}

/* The newest stored trace that belongs to the checkpoint. */
static int load_trace(struct dp_hotset_store *st, struct dp_hotset *hs, struct dp_err *err)
{
    uint64_t v[64];
    size_t n = list_traces(st->cp->dir, v, DP_ARRAY_LEN(v));
    if (n > DP_ARRAY_LEN(v))
        n = DP_ARRAY_LEN(v);
    struct dp_err first = {{0}};
    for (size_t i = 0; i < n; i++) {
        char path[4200];
        struct dp_err e;
        trace_path(st, v[i], path, sizeof(path));
        if (dp_hotset_load(path, st->cp, st->id, hs, &e) == 0 && hs->source == DP_HS_TRACE)
            return DP_E_OK;
        if (hs->tasks)
            dp_hotset_free(hs);
        dp_warn("skipping stored trace: %s", e.msg);
        if (!first.msg[0])
            first = e;
    }
    if (first.msg[0]) {
        *err = first;
        return DP_E_WRONG_CHECKPOINT;
    }
    dp_err_set(err, "no fault trace stored for checkpoint %s (a restore records one)", st->cp->dir);
    return DP_E_NO_HOTSET;
}

static int load_classify(struct dp_hotset_store *st, struct dp_hotset *hs, struct dp_err *err)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", st->cp->dir, DP_HOTSET_FILE);
    if (access(path, F_OK) < 0) {
        dp_err_set(err, "no classification for checkpoint %s (checkpoint --classify SECONDS makes one)",
                   st->cp->dir);
        return DP_E_NO_HOTSET;
    }
    if (dp_hotset_load(path, st->cp, st->id, hs, err) < 0)
        return DP_E_WRONG_CHECKPOINT;
    return DP_E_OK;
}

int dp_hotset_store_get(struct dp_hotset_store *st, uint32_t which, uint8_t **buf, size_t *len, struct dp_err *err)
{
    struct dp_hotset hs, tr, cl;
    int rc;
    switch (which) {
    case DP_HOTSET_CLASSIFY:
        rc = load_classify(st, &hs, err);
        break;
    case DP_HOTSET_TRACE:
        rc = load_trace(st, &hs, err);
        break;
    case DP_HOTSET_AUTO: {
        struct dp_err e1;
        rc = load_trace(st, &hs, &e1);
        if (rc == DP_E_NO_HOTSET || rc == DP_E_WRONG_CHECKPOINT) {
            struct dp_err e2;
            int rc2 = load_classify(st, &hs, &e2);
            if (rc2 != DP_E_OK) {
                dp_err_set(err, "%s; %s", e1.msg, e2.msg);
                return rc == DP_E_WRONG_CHECKPOINT ? rc : rc2;
            }
            rc = DP_E_OK;
        }
        break;
    }
    case DP_HOTSET_MERGED: {
        rc = load_trace(st, &tr, err);
        if (rc != DP_E_OK)
            return rc;
        rc = load_classify(st, &cl, err);
        if (rc != DP_E_OK) {
            dp_hotset_free(&tr);
            return rc;
        }
        const struct dp_hotset *in[] = {&tr, &cl};
        rc = dp_hotset_merge(in, 2, &hs, err) < 0 ? DP_E_INTERNAL : DP_E_OK;
        dp_hotset_free(&tr);
        dp_hotset_free(&cl);
        break;
    }
    default:
        dp_err_set(err, "unknown hot set kind %u", which);
        return DP_E_MALFORMED;
    }
    if (rc != DP_E_OK)
        return rc;
    rc = dp_hotset_encode(&hs, buf, len, err) < 0 ? DP_E_INTERNAL : DP_E_OK;
    dp_hotset_free(&hs);
    if (rc == DP_E_OK && *len > DP_MAX_PAYLOAD) {
        free(*buf);
        dp_err_set(err, "the hot set is %zu bytes, more than one message carries (%u)", *len, DP_MAX_PAYLOAD);
        return DP_E_TOO_LARGE;
    }
    return rc;
}
