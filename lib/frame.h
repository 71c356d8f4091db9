/* frame: cutting a connection's input into messages (docs/protocol.md §2,
 * §3): a header (or a sealed header record), checked from the header alone,
 * then its payload (or payload record). Pure: bytes in, one message or a
 * verdict out; no I/O, so the page server's per-connection input handling
 * runs, and is fuzzed (fuzz/fuzz_conn.c), without sockets. */
#ifndef DP_FRAME_H
#define DP_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "channel.h"
#include "proto.h"

/* What is kept between calls: the opened header whose payload is awaited. */
struct dp_frame_rx {
    bool have_hdr;
    struct dp_hdr hdr;
};

enum dp_frame_verdict {
    DP_FRAME_MORE,   /* more bytes needed: out->need in all from the (new) start */
    DP_FRAME_MSG,    /* out->hdr and out->payload (h.len bytes, opened in place) */
    DP_FRAME_REFUSE, /* the header is refused: out->code, out->id, err */
    DP_FRAME_FORGED, /* a record failed authentication: nothing of it is used */
};

struct dp_frame {
    size_t used;            /* bytes consumed from in (the caller advances by this) */
    size_t need;            /* MORE: bytes the next call needs in all */
    struct dp_hdr hdr;      /* MSG */
    uint8_t *payload;       /* MSG: inside in */
    uint32_t code;          /* REFUSE: the error code to answer with */
    uint64_t id;            /* REFUSE: the request id to answer to */
};

/* A receiver's rules on a decoded header (e.g. the server's, below):
 * DP_E_OK or an error code with err set. */
typedef int (*dp_frame_check_fn)(const struct dp_hdr *h, void *arg, struct dp_err *err);

/* Takes the next message off in[0, avail): with chan->secure the header and
 * payload records are opened in place. max_payload bounds the header's len;
 * check (may be NULL) judges the header before its payload is awaited. */
enum dp_frame_verdict dp_frame_next(struct dp_frame_rx *rx, struct dp_chan *chan, uint8_t *in, size_t avail,
                                    uint32_t max_payload, dp_frame_check_fn check, void *arg, struct dp_frame *out,
                                    struct dp_err *err);

/* The page server's rules on a request header: before authentication only
 * HELLO and AUTH; known types (the version-2 ones only on a connection that
 * negotiated 2); the type's payload limit. */
int dp_frame_check_request(const struct dp_hdr *h, bool authenticated, uint16_t version, struct dp_err *err);

#endif
