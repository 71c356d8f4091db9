/* proto_hotset: the protocol-version-2 messages of issue 7, kept apart from
 * the version-1 codec (docs/protocol.md §4.7, §4.8). Pure.
 *
 * PUT_TRACE (0x09): payload = a hot-set file (lib/hotset.h) with source
 *   "trace", at most DP_MAX_PAYLOAD bytes. The server checks it like any hot
 *   set against its checkpoint (identity, pids, lazy ranges) and stores it,
 *   fsync'd, as DIR/distriproc-trace-CREATED_US.bin. Reply (16 bytes):
 *   u64 pages, u32 runs, u32 reserved.
 * GET_HOTSET (0x0a): payload 8 bytes: u32 which (0 auto: the newest trace,
 *   else the classification; 1 classify; 2 trace: the newest; 3 merged: the
 *   newest trace, then the classified pages it lacks), u32 reserved. Reply:
 *   the hot-set file bytes (checked by the server against its checkpoint
 *   before they are sent, and to be checked again by the receiver). ERROR
 *   NO_HOTSET (non-fatal) if there is none; WRONG_CHECKPOINT (non-fatal) if
 *   the only candidate does not belong to the checkpoint.
 * On a connection that negotiated version 1 both are UNKNOWN_TYPE. */
#ifndef DP_PROTO_HOTSET_H
#define DP_PROTO_HOTSET_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

#define DP_PROTO_VERSION_HOTSET 2
#define DP_GET_HOTSET_REQ_LEN   8
#define DP_PUT_TRACE_REPLY_LEN  16

enum dp_hotset_which {
    DP_HOTSET_AUTO = 0,
    DP_HOTSET_CLASSIFY = 1,
    DP_HOTSET_TRACE = 2,
    DP_HOTSET_MERGED = 3,
};
const char *dp_hotset_which_name(uint32_t which);
int dp_hotset_which_parse(const char *text, uint32_t *which);

/* The largest payload of a version-2 request type, 0 for any other type. */
uint32_t dp_hotset_request_max_len(uint8_t type);

int dp_enc_get_hotset_req(struct dp_buf *b, uint64_t id, uint32_t which);
int dp_dec_get_hotset_req(const uint8_t *p, size_t len, uint32_t *which, struct dp_err *err);
int dp_enc_put_trace_reply(struct dp_buf *b, uint64_t id, uint64_t pages, uint32_t runs);
int dp_dec_put_trace_reply(const uint8_t *p, size_t len, uint64_t *pages, uint32_t *runs, struct dp_err *err);

#endif
