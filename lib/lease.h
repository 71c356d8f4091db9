/* lease: the page server's one-writer rule (docs/pageserver.md "One writer,
 * fenced"). Pure: the state machine that grants, resumes, releases and
 * refuses write leases, the rule that says whether a connection may write,
 * and the codec of the lease file the server keeps next to the write-back
 * log. No I/O here (lib/lease_store.c persists it), so it is unit-tested and
 * fuzzed as it is.
 *
 * A restore takes the lease and gets an epoch one above the last granted.
 * Every new epoch starts a fresh write-back generation (the log is moved
 * aside, kept): a new writer sees the checkpoint's memory, never a mix of
 * the checkpoint and an earlier writer's pages. The holder's reconnects
 * (same epoch) resume it, across server restarts. A second restore is
 * refused while the lease is held, unless it takes over: then the old epoch
 * is stale and everything its connections ask is refused (FENCED).
 *
 * Lease file DIR/distriproc-lease (128 bytes, little endian):
 *   0 u32 magic 0x454c5044 ("DPLE")   4 u32 format 1
 *   8 u64 epoch      (last granted; 0: never)
 *  16 u64 log_epoch  (whose writes DIR/distriproc-overlay.log holds; differs
 *                     from epoch only while a new generation is being set up)
 *  24 u32 held (0/1) 28 u16 holder_len  30 u16 0
 *  32 u64 granted    (microseconds since the epoch, when `epoch` was granted)
 *  40 64 bytes holder (holder_len bytes, then zeros)   104..111 zero
 * 112 16-byte BLAKE2b of bytes 0..111 */
#ifndef DP_LEASE_H
#define DP_LEASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define DP_LEASE_HOLDER_MAX 64
#define DP_LEASE_FILE_NAME  "distriproc-lease"
#define DP_LEASE_FILE_SIZE  128
/* The highest epoch a lease may reach: one grant per restore never gets
 * there, so a file beyond it is damaged or planted, and a grant at it is
 * refused rather than wrapping to an epoch that a fenced writer once held
 * (fuzz_lease found the wrap at 2^64 - 1). */
#define DP_LEASE_EPOCH_MAX  ((uint64_t)INT64_MAX)

#define DP_LEASE_TAKE_OVER 0x1u /* acquire even if held: the holder is fenced */
#define DP_LEASE_RELEASE   0x2u /* the holder gives its epoch back */
#define DP_LEASE_FLAGS_KNOWN (DP_LEASE_TAKE_OVER | DP_LEASE_RELEASE)

struct dp_lease {
    uint64_t epoch;      /* last granted epoch; 0 = never */
    uint64_t log_epoch;  /* the generation the current write-back log belongs to */
    bool held;
    uint64_t granted_us; /* wall clock, for the messages */
    char holder[DP_LEASE_HOLDER_MAX + 1];
};

/* A LEASE request: epoch 0 asks for a new epoch (flag TAKE_OVER to fence a
 * holder); a non-zero epoch resumes it (or, with RELEASE, gives it back). */
struct dp_lease_ask {
    uint64_t epoch;
    uint32_t flags;
    char holder[DP_LEASE_HOLDER_MAX + 1];
};

enum dp_lease_verdict {
    DP_LEASE_GRANTED = 1,  /* a new epoch: a new write-back generation starts */
    DP_LEASE_RESUMED = 2,  /* the holder's own epoch, continued */
    DP_LEASE_RELEASED = 3, /* the holder gave it back: the lease is free */
    DP_LEASE_HELD = 4,     /* refused: another holder has it (no take-over asked) */
    DP_LEASE_STALE = 5,    /* refused: that epoch was taken over, released or never granted */
};

/* Decides a request against the current state: *next is the state after it
 * (== cur when refused), why a message for the log or the refusal that
 * names the holder and what to do. now_us stamps a grant. Pure. */
enum dp_lease_verdict dp_lease_decide(const struct dp_lease *cur, const struct dp_lease_ask *ask, uint64_t now_us,
                                      struct dp_lease *next, char *why, size_t why_len);

/* May a connection that holds conn_epoch (0: it took no lease) write now?
 * 0 (DP_E_OK) yes; else DP_E_FENCED (its epoch is not the current one) or
 * DP_E_LEASE_HELD (it has none and someone holds the lease), with why. An
 * unleased write while nobody holds the lease is accepted (an operator's
 * `query put`; it lands in the current generation). Pure. */
int dp_lease_may_write(const struct dp_lease *cur, uint64_t conn_epoch, char *why, size_t why_len);
/* May a connection that holds conn_epoch read? Only a stale epoch is refused
 * (DP_E_FENCED): its tree must not read pages of another writer's generation. */
int dp_lease_may_read(const struct dp_lease *cur, uint64_t conn_epoch, char *why, size_t why_len);

/* Holder names: 1..64 bytes of printable ASCII. */
bool dp_lease_holder_ok(const char *s, size_t len);

void dp_lease_encode(const struct dp_lease *l, uint8_t out[DP_LEASE_FILE_SIZE]);
/* 0, or -1 with err saying what is wrong (magic, format, checksum, fields). */
int dp_lease_decode(const uint8_t *in, size_t len, struct dp_lease *l, struct dp_err *err);

#endif
