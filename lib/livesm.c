/* livesm: the commit/rollback state machine (see livesm.h). Pure. */
#include "livesm.h"

#include "runc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the transition table -------------------------------------------------- */

struct edge {
    int valid;
    enum dp_live_state next;
    enum dp_live_action act;
};

#define E(n, a) {1, DP_LIVE_##n, DP_LIVE_ACT_##a}
static const struct edge table[DP_LIVE_NSTATES][DP_LIVE_NEVENTS] = {
    [DP_LIVE_FREEZING] = {
        [DP_LIVE_EV_DUMP_OK] = E(SERVING, NONE),
        [DP_LIVE_EV_DUMP_FAILED] = E(ROLLED_BACK, THAW),
        [DP_LIVE_EV_STOPPED] = E(ROLLED_BACK, THAW),
    },
    [DP_LIVE_SERVING] = {
        [DP_LIVE_EV_RESTORE_OK] = E(COMMITTED, NONE),
        [DP_LIVE_EV_RESTORE_FAILED] = E(ROLLED_BACK, THAW),
        [DP_LIVE_EV_CONNECT_TIMEOUT] = E(ROLLED_BACK, THAW),
        [DP_LIVE_EV_STOPPED] = E(ROLLED_BACK, THAW),
        [DP_LIVE_EV_ABORTED] = E(ROLLED_BACK, THAW),
    },
    [DP_LIVE_COMMITTED] = {
        [DP_LIVE_EV_RESTORE_OK] = E(COMMITTED, NONE),
        [DP_LIVE_EV_RELEASED] = E(RELEASED, KILL_THAW),
        [DP_LIVE_EV_STOPPED] = E(RELEASED, KILL_THAW),
        /* our acknowledgement of the commit never reached the destination,
         * which killed its copy and saw it gone: never neither */
        [DP_LIVE_EV_ABORTED] = E(ROLLED_BACK, THAW),
    },
};
#undef E

int dp_live_step(enum dp_live_state st, enum dp_live_event ev, enum dp_live_state *next,
                 enum dp_live_action *act)
{
    if ((unsigned)st >= DP_LIVE_NSTATES || (unsigned)ev >= DP_LIVE_NEVENTS || !table[st][ev].valid)
        return -1;
    *next = table[st][ev].next;
    *act = table[st][ev].act;
    return 0;
}

/* A dump that never finished left no usable images: the source resumes. The
 * final states redo their (idempotent) action in case serve died before it. */
void dp_live_recover(enum dp_live_state st, enum dp_live_state *next, enum dp_live_action *act)
{
    switch (st) {
    case DP_LIVE_FREEZING:
    case DP_LIVE_ROLLED_BACK: *next = DP_LIVE_ROLLED_BACK; *act = DP_LIVE_ACT_THAW; return;
    case DP_LIVE_RELEASED: *next = DP_LIVE_RELEASED; *act = DP_LIVE_ACT_KILL_THAW; return;
    case DP_LIVE_SERVING:
    case DP_LIVE_COMMITTED:
    default: *next = st; *act = DP_LIVE_ACT_NONE; return;
    }
}

int dp_live_serving(enum dp_live_state st)
{
    return st == DP_LIVE_SERVING || st == DP_LIVE_COMMITTED;
}

static const char *const state_names[DP_LIVE_NSTATES] = {"freezing", "serving", "committed", "rolled-back",
                                                         "released"};
static const char *const event_names[DP_LIVE_NEVENTS] = {"dump-ok", "dump-failed", "restore-ok",
                                                         "restore-failed", "connect-timeout", "released",
                                                         "stopped", "aborted"};

const char *dp_live_state_name(enum dp_live_state st)
{
    return (unsigned)st < DP_LIVE_NSTATES ? state_names[st] : "?";
}

const char *dp_live_event_name(enum dp_live_event ev)
{
    return (unsigned)ev < DP_LIVE_NEVENTS ? event_names[ev] : "?";
}

int dp_live_verdict_event(uint32_t verdict, enum dp_live_event *ev)
{
    switch (verdict) {
    case DP_LIVE_VERDICT_RESTORED: *ev = DP_LIVE_EV_RESTORE_OK; return 0;
    case DP_LIVE_VERDICT_FAILED: *ev = DP_LIVE_EV_RESTORE_FAILED; return 0;
    case DP_LIVE_VERDICT_RELEASE: *ev = DP_LIVE_EV_RELEASED; return 0;
    case DP_LIVE_VERDICT_ABORTED: *ev = DP_LIVE_EV_ABORTED; return 0;
    default: return -1;
    }
}

int dp_live_verdict_decode(const uint8_t *p, size_t len, uint32_t *verdict, struct dp_err *err)
{
    if (len != 4) {
        dp_err_set(err, "MIGRATION payload is %zu bytes, not 4", len);
        return -1;
    }
    uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    if (v < DP_LIVE_VERDICT_RESTORED || v > DP_LIVE_VERDICT_ABORTED) {
        dp_err_set(err, "MIGRATION verdict %" PRIu32 " is not one of 1..5", v);
        return -1;
    }
    *verdict = v;
    return 0;
}

/* ---- the persisted record -------------------------------------------------- */

int dp_live_record_format(const struct dp_live_record *r, char *buf, size_t len)
{
    int n = snprintf(buf, len, "state %s\nroot %" PRId32 " %llu\ncgroup %s\ndeadline %.3f\nconnected %d\n",
                     dp_live_state_name(r->state), r->root_pid, r->root_start, r->cgroup, r->deadline_boot,
                     r->connected ? 1 : 0);
    if (n >= 0 && (size_t)n < len && r->runc_id[0])
        n += snprintf(buf + n, len - (size_t)n, "runc %s\n", r->runc_id);
    if (n >= 0 && (size_t)n < len && r->runc_root[0])
        n += snprintf(buf + n, len - (size_t)n, "runc-root %s\n", r->runc_root);
    return n < 0 || (size_t)n >= len ? -1 : n;
}

/* The value after "key " on its own line, copied into out. */
static int field(const char *text, size_t len, const char *key, char *out, size_t outlen)
{
    size_t kl = strlen(key);
    const char *end = text + len;
    for (const char *line = text; line < end;) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        const char *le = nl ? nl : end;
        if ((size_t)(le - line) > kl && memcmp(line, key, kl) == 0 && line[kl] == ' ') {
            size_t vl = (size_t)(le - line) - kl - 1;
            if (vl == 0 || vl >= outlen)
                return -1;
            memcpy(out, line + kl + 1, vl);
            out[vl] = '\0';
            return 0;
        }
        line = le + 1;
    }
    return -1;
}

int dp_live_record_parse(const char *text, size_t len, struct dp_live_record *r, struct dp_err *err)
{
    char v[300];
    memset(r, 0, sizeof(*r));
    if (field(text, len, "state", v, sizeof(v)) < 0) {
        dp_err_set(err, "no state line");
        return -1;
    }
    int found = 0;
    for (int i = 0; i < DP_LIVE_NSTATES; i++)
        if (strcmp(v, state_names[i]) == 0) {
            r->state = (enum dp_live_state)i;
            found = 1;
        }
    if (!found) {
        dp_err_set(err, "unknown state '%s'", v);
        return -1;
    }
    char *e;
    long long pid;
    if (field(text, len, "root", v, sizeof(v)) < 0 || (pid = strtoll(v, &e, 10)) <= 0 || pid > INT32_MAX ||
        *e != ' ' || (r->root_start = strtoull(e + 1, &e, 10), *e != '\0')) {
        dp_err_set(err, "bad or missing 'root PID START' line");
        return -1;
    }
    r->root_pid = (int32_t)pid;
    if (field(text, len, "cgroup", v, sizeof(v)) < 0 || v[0] != '/' || strlen(v) >= sizeof(r->cgroup) ||
        strstr(v, "/../") || strstr(v, "\n")) {
        dp_err_set(err, "bad or missing 'cgroup PATH' line");
        return -1;
    }
    strcpy(r->cgroup, v);
    if (field(text, len, "deadline", v, sizeof(v)) < 0 || (r->deadline_boot = strtod(v, &e), *e != '\0') ||
        !(r->deadline_boot >= 0)) {
        dp_err_set(err, "bad or missing 'deadline SECONDS' line");
        return -1;
    }
    if (field(text, len, "connected", v, sizeof(v)) < 0 || (strcmp(v, "0") && strcmp(v, "1"))) {
        dp_err_set(err, "bad or missing 'connected 0|1' line");
        return -1;
    }
    r->connected = v[0] == '1';
    /* a container: an ID runc accepts; its root an absolute path */
    if (field(text, len, "runc", v, sizeof(v)) == 0) {
        if (!dp_runc_id_ok(v) || strlen(v) >= sizeof(r->runc_id)) {
            dp_err_set(err, "bad 'runc ID' line");
            return -1;
        }
        strcpy(r->runc_id, v);
    }
    if (field(text, len, "runc-root", v, sizeof(v)) == 0) {
        if (!r->runc_id[0] || v[0] != '/' || strlen(v) >= sizeof(r->runc_root) || strstr(v, "/../")) {
            dp_err_set(err, "bad 'runc-root PATH' line (an absolute path, with a 'runc ID' line)");
            return -1;
        }
        strcpy(r->runc_root, v);
    }
    return 0;
}
