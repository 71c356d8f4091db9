/* livesm: the commit/rollback state machine of a migration served from the
 * frozen source tree (docs/live-migration.md), and its persisted form.
 *
 * Pure: no I/O. The serve side (src/serve_live.c) feeds it events, persists
 * the new state BEFORE acting on it, then performs the action it names; every
 * action is idempotent (thaw; kill-then-thaw), so a serve killed between the
 * two steps finishes the action when restarted and the source resumes at most
 * once and never runs again after a commit, unless the destination reports
 * that its unacknowledged copy is gone (aborted).
 *
 *   FREEZING  --dump ok-->          SERVING    (tree frozen, images written)
 *   FREEZING  --dump failed-->      ROLLED_BACK  thaw
 *   SERVING   --restore ok-->       COMMITTED  (still frozen: its memory is served)
 *   SERVING   --restore failed-->   ROLLED_BACK  thaw
 *   SERVING   --connect timeout-->  ROLLED_BACK  thaw
 *   SERVING   --serve stopped-->    ROLLED_BACK  thaw
 *   COMMITTED --restore ok-->       COMMITTED  (repeated report: no change)
 *   COMMITTED --released-->         RELEASED     kill, then thaw (dies without running)
 *   COMMITTED --serve stopped-->    RELEASED     kill, then thaw
 *   SERVING   --aborted-->          ROLLED_BACK  thaw
 *   COMMITTED --aborted-->          ROLLED_BACK  thaw (the destination's copy,
 *                                   unacknowledged, was killed and is gone)
 * Anything else is refused and changes nothing. ROLLED_BACK and RELEASED are
 * final. A restarted serve recovers: FREEZING -> ROLLED_BACK (the dump never
 * finished), SERVING and COMMITTED serve on, final states redo their action. */
#ifndef DP_LIVESM_H
#define DP_LIVESM_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

enum dp_live_state {
    DP_LIVE_FREEZING = 0,
    DP_LIVE_SERVING,
    DP_LIVE_COMMITTED,
    DP_LIVE_ROLLED_BACK,
    DP_LIVE_RELEASED,
    DP_LIVE_NSTATES
};

enum dp_live_event {
    DP_LIVE_EV_DUMP_OK = 0,
    DP_LIVE_EV_DUMP_FAILED,
    DP_LIVE_EV_RESTORE_OK,
    DP_LIVE_EV_RESTORE_FAILED,
    DP_LIVE_EV_CONNECT_TIMEOUT,
    DP_LIVE_EV_RELEASED,
    DP_LIVE_EV_STOPPED,
    DP_LIVE_EV_ABORTED,
    DP_LIVE_NEVENTS
};

enum dp_live_action {
    DP_LIVE_ACT_NONE = 0,
    DP_LIVE_ACT_THAW,       /* rollback: the source runs again */
    DP_LIVE_ACT_KILL_THAW,  /* commit done: SIGKILL while frozen, then thaw */
};

/* Verdicts a destination sends (DP_MSG_MIGRATION payload, u32 LE). */
#define DP_LIVE_VERDICT_RESTORED 1u   /* its restore succeeded: commit */
#define DP_LIVE_VERDICT_FAILED   2u   /* its restore failed: roll back */
#define DP_LIVE_VERDICT_RELEASE  3u   /* it holds every page: release the source */
#define DP_LIVE_VERDICT_QUERY    4u   /* only report the state */
/* its restore succeeded but no acknowledgement came back, so it killed its
 * copy, and that copy (the init of its own pid namespace) is gone: the
 * process lives nowhere else, the source resumes it even after a commit */
#define DP_LIVE_VERDICT_ABORTED  5u

/* The next state and the action for event ev in state st; -1 (nothing
 * changes) when the event is refused in that state. */
int dp_live_step(enum dp_live_state st, enum dp_live_event ev, enum dp_live_state *next,
                 enum dp_live_action *act);
/* What a restarted serve does with a persisted state: the state it continues
 * in and the action to (re)do. */
void dp_live_recover(enum dp_live_state st, enum dp_live_state *next, enum dp_live_action *act);
/* 1 while the tree is frozen and its memory is served. */
int dp_live_serving(enum dp_live_state st);
const char *dp_live_state_name(enum dp_live_state st);
const char *dp_live_event_name(enum dp_live_event ev);
/* A verdict (u32) -> the event it stands for; -1 for unknown values and for
 * QUERY (no event). */
int dp_live_verdict_event(uint32_t verdict, enum dp_live_event *ev);
/* Decodes a DP_MSG_MIGRATION payload: exactly 4 bytes, a known verdict. */
int dp_live_verdict_decode(const uint8_t *p, size_t len, uint32_t *verdict, struct dp_err *err);

/* The persisted record (WORKDIR/live.state), one "key value" per line
 * ("runc" and "runc-root" only for a container). */
struct dp_live_record {
    enum dp_live_state state;
    int32_t root_pid;                 /* host pid of the tree's root */
    unsigned long long root_start;    /* its start time (clock ticks), against pid reuse */
    char cgroup[256];                 /* the freezer cgroup's directory */
    double deadline_boot;             /* SERVING: roll back unless a restore was reported by then (CLOCK_BOOTTIME s; 0 = none) */
    int connected;                    /* a destination authenticated (the deadline no longer applies) */
    /* a runc container (`serve --runc`): its ID and runc's --root ("" for
     * runc's own); cgroup is then the container's own freezer cgroup. Both
     * lines are absent for a --pid tree. */
    char runc_id[128];
    char runc_root[256];
};
/* Formats r into buf; returns the length, or -1 if it does not fit. Pure. */
int dp_live_record_format(const struct dp_live_record *r, char *buf, size_t len);
/* Parses; every field required, values validated. -1 with err. Pure. */
int dp_live_record_parse(const char *text, size_t len, struct dp_live_record *r, struct dp_err *err);

#endif
