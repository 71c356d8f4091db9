/* proto: the page server's wire format (docs/protocol.md is the byte-by-byte
 * specification). Pure: encoders append to a growable buffer, decoders read a
 * byte buffer and validate every field and length before anything is
 * allocated; nothing here does I/O. Shared by the server and the client.
 *
 * Every message: a 24-byte little-endian header, then `len` payload bytes.
 *   0  u32 magic   "DPPS" (0x53505044)
 *   4  u8  version (1)
 *   5  u8  type    (request types 0x01..0x7f; reply = request | 0x80; 0xff ERROR)
 *   6  u16 flags   (DP_FLAG_*)
 *   8  u64 id      (request id chosen by the client, echoed in every reply)
 *  16  u32 len     (payload length)
 *  20  u32 reserved (0)
 */
#ifndef DP_PROTO_H
#define DP_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define DP_PROTO_MAGIC       0x53505044u /* bytes 'D' 'P' 'P' 'S' */
#define DP_PROTO_VERSION_MIN 3 /* 3: encrypted, authenticated records (lib/channel.h); 1 and 2 sent frames in clear */
#define DP_PROTO_VERSION_MAX 4 /* 2 added PUT_TRACE and GET_HOTSET (lib/proto_hotset.h); 4 LEASE (lib/proto_lease.h) */
#define DP_HDR_SIZE          24

/* Limits (checked by the decoders before any allocation). */
#define DP_MAX_PAYLOAD         (16u << 20) /* any message after authentication */
#define DP_MAX_PREAUTH_PAYLOAD 256u        /* HELLO and AUTH, before the key is proven */
#define DP_MAX_GET_RANGES      256u        /* ranges in one GET_PAGES */
#define DP_MAX_GET_PAGES       1024u       /* pages in one GET_PAGES (4 MiB) */
#define DP_MAX_PUT_PAGES       256u        /* pages (and ranges) in one PUT_PAGES (1 MiB) */
#define DP_MAX_CHUNK_DATA      (1u << 20)  /* data bytes in one SKELETON chunk */
#define DP_MAX_NAME            255u        /* image file path (relative, e.g. parent/pages-1.img) in a SKELETON chunk */
#define DP_MAX_FILE_SIZE       (1ull << 40)
#define DP_MAX_ERROR_MSG       1024u
#define DP_MAX_TASKS           65536u
#define DP_MAX_TASK_RANGES     (1u << 20)  /* lazy ranges over all tasks in a TASK_MAP */

#define DP_NONCE_SIZE 32
#define DP_MAC_SIZE   32
#define DP_KEY_MIN    16
#define DP_KEY_MAX    1024

enum dp_msg_type {
    DP_MSG_HELLO = 0x01,
    DP_MSG_AUTH = 0x02,
    DP_MSG_TASK_MAP = 0x03,
    DP_MSG_GET_PAGES = 0x04,
    DP_MSG_PUT_PAGES = 0x05,
    DP_MSG_GET_SKELETON = 0x06,
    DP_MSG_STATS = 0x07,
    DP_MSG_ACCESS_LOG = 0x08,
    DP_MSG_PUT_TRACE = 0x09,  /* version 2: fault trace upload (lib/proto_hotset.h) */
    DP_MSG_GET_HOTSET = 0x0a, /* version 2: the checkpoint's hot set */
    DP_MSG_MIGRATION = 0x0b,  /* memory mode: the destination's verdict (lib/livesm.h), JSON reply */
    DP_MSG_LEASE = 0x0c,      /* version 4: the write lease (lib/proto_lease.h) */
    /* 0x0d..0x7f free. */
    DP_MSG_REPLY = 0x80, /* OR'd into the request type */
    DP_MSG_ERROR = 0xff,
};

#define DP_FLAG_MORE  0x0001 /* reply: more messages with this id follow */
#define DP_FLAG_FATAL 0x0002 /* ERROR: the sender closes the connection after it */
#define DP_FLAGS_KNOWN (DP_FLAG_MORE | DP_FLAG_FATAL)

enum dp_errcode {
    DP_E_OK = 0,
    DP_E_MALFORMED = 1,       /* a field or length is invalid */
    DP_E_VERSION = 2,         /* no common protocol version */
    DP_E_UNAUTHENTICATED = 3, /* request before authentication */
    DP_E_AUTH_FAILED = 4,     /* wrong key */
    DP_E_TOO_LARGE = 5,       /* a length exceeds a limit */
    DP_E_UNKNOWN_TYPE = 6,
    DP_E_SEQUENCE = 7,        /* message out of order (e.g. AUTH before HELLO, HELLO twice) */
    DP_E_NO_TASK = 8,         /* no such pid in the checkpoint */
    DP_E_NOT_LAZY = 9,        /* PUT to an address outside the task's lazy ranges */
    DP_E_IO = 10,             /* server-side I/O error */
    DP_E_BUSY = 11,           /* too many requests in flight */
    DP_E_SHUTDOWN = 12,       /* server is shutting down */
    DP_E_INTERNAL = 13,
    DP_E_WRONG_CHECKPOINT = 14, /* a hot set or trace that belongs to another checkpoint, or invalid for it */
    DP_E_NO_HOTSET = 15,        /* no hot set of the kind asked for */
    DP_E_PLAINTEXT_MISMATCH = 16, /* one side runs --insecure-plaintext, the other does not */
    DP_E_LEASE_HELD = 17,     /* another restore holds the write lease (version 4) */
    DP_E_FENCED = 18,         /* this connection's lease epoch was taken over or released (version 4) */
};
const char *dp_errcode_name(uint32_t code);

/* Page kinds in a GET_PAGES reply segment. */
enum dp_seg_kind {
    DP_SEG_DATA = 1,     /* count pages of data follow */
    DP_SEG_ZERO = 2,     /* count zero pages, no bytes */
    DP_SEG_NOT_LAZY = 3, /* not lazy memory of this task (or no such task); no bytes */
};

struct dp_hdr {
    uint8_t version;
    uint8_t type;
    uint16_t flags;
    uint64_t id;
    uint32_t len;
};

/* Growable output buffer. */
struct dp_buf {
    uint8_t *data;
    size_t len, cap;
};
int dp_buf_reserve(struct dp_buf *b, size_t extra); /* 0, or -1 on ENOMEM */
void dp_buf_free(struct dp_buf *b);
int dp_buf_put(struct dp_buf *b, const void *p, size_t n);
int dp_buf_u8(struct dp_buf *b, uint8_t v);
int dp_buf_u16(struct dp_buf *b, uint16_t v);
int dp_buf_u32(struct dp_buf *b, uint32_t v);
int dp_buf_u64(struct dp_buf *b, uint64_t v);

void dp_put_u16(uint8_t *p, uint16_t v);
void dp_put_u32(uint8_t *p, uint32_t v);
void dp_put_u64(uint8_t *p, uint64_t v);
uint16_t dp_get_u16(const uint8_t *p);
uint32_t dp_get_u32(const uint8_t *p);
uint64_t dp_get_u64(const uint8_t *p);

void dp_hdr_encode(uint8_t out[DP_HDR_SIZE], const struct dp_hdr *h);
/* Decodes and validates a header (magic, version 1, reserved 0, known flags,
 * len <= max_payload). Returns DP_E_OK or an error code with err set. */
int dp_hdr_decode(const uint8_t in[DP_HDR_SIZE], uint32_t max_payload, struct dp_hdr *h, struct dp_err *err);

/* Appends a complete message: header then payload (payload may be NULL if len 0). */
int dp_msg_append(struct dp_buf *b, uint8_t type, uint16_t flags, uint64_t id, const void *payload, uint32_t len);

/* ---- HELLO / AUTH (version 3: docs/protocol.md §3, lib/channel.h) ---- */
#define DP_EPH_KEY_SIZE 32 /* X25519 public key */
#define DP_CPID_BYTES   32 /* checkpoint identity (lib/cpid.h) */
#define DP_HELLO_FLAG_PLAINTEXT 0x1u /* --insecure-plaintext: records are not encrypted */
#define DP_HELLO_FLAG_BULK      0x2u /* background reads only (the warm-up): served after the other
                                      * connections, little output queued (docs/protocol.md) */
#define DP_HELLO_FLAGS_KNOWN    (DP_HELLO_FLAG_PLAINTEXT | DP_HELLO_FLAG_BULK)
struct dp_hello {
    uint16_t min_version, max_version;
    uint32_t flags;    /* DP_HELLO_FLAG_* */
    uint32_t ciphers;  /* set of DP_CIPHER_* the client runs */
    uint8_t eph_pk[DP_EPH_KEY_SIZE];
    uint8_t nonce[DP_NONCE_SIZE];
    bool legacy;       /* decoded from a version-1/2 HELLO (8 bytes): versions only */
};
struct dp_hello_reply {
    uint16_t version;
    uint32_t max_payload, max_get_pages, max_put_pages, max_get_ranges;
    uint32_t flags;    /* the client's flags, echoed */
    uint32_t cipher;   /* one DP_CIPHER_* */
    uint8_t server_nonce[DP_NONCE_SIZE];
    uint8_t eph_pk[DP_EPH_KEY_SIZE];
    uint8_t cpid[DP_CPID_BYTES];
};
struct dp_auth { uint8_t mac[DP_MAC_SIZE]; };
struct dp_auth_reply { uint8_t mac[DP_MAC_SIZE]; };

#define DP_HELLO_LEN        80
#define DP_HELLO_LEGACY_LEN 8
#define DP_HELLO_REPLY_LEN  128
#define DP_AUTH_LEN         DP_MAC_SIZE
#define DP_AUTH_REPLY_LEN   DP_MAC_SIZE

int dp_enc_hello(struct dp_buf *b, uint64_t id, const struct dp_hello *m);
int dp_dec_hello(const uint8_t *p, size_t len, struct dp_hello *m, struct dp_err *err);
int dp_enc_hello_reply(struct dp_buf *b, uint64_t id, const struct dp_hello_reply *m);
int dp_dec_hello_reply(const uint8_t *p, size_t len, struct dp_hello_reply *m, struct dp_err *err);
int dp_enc_auth(struct dp_buf *b, uint64_t id, const struct dp_auth *m);
int dp_dec_auth(const uint8_t *p, size_t len, struct dp_auth *m, struct dp_err *err);
int dp_enc_auth_reply(struct dp_buf *b, uint64_t id, const struct dp_auth_reply *m);
int dp_dec_auth_reply(const uint8_t *p, size_t len, struct dp_auth_reply *m, struct dp_err *err);
/* Constant-time comparison of two MACs: true if equal. */
bool dp_auth_mac_equal(const uint8_t a[DP_MAC_SIZE], const uint8_t b[DP_MAC_SIZE]);

/* ---- TASK_MAP ------------------------------------------------------- */
struct dp_tm_range { uint64_t start, end; };
struct dp_tm_task {
    int32_t pid, ppid;
    uint32_t nr_ranges;
    struct dp_tm_range *ranges;
};
struct dp_task_map {
    uint32_t nr_tasks;
    struct dp_tm_task *tasks;
    struct dp_tm_range *all_ranges; /* one allocation behind every task's ranges */
};
/* Encodes a reply from already-built arrays (used by the server). */
int dp_enc_task_map_reply(struct dp_buf *b, uint64_t id, const struct dp_task_map *m);
int dp_dec_task_map_reply(const uint8_t *p, size_t len, struct dp_task_map *m, struct dp_err *err);
void dp_task_map_free(struct dp_task_map *m);

/* ---- GET_PAGES ------------------------------------------------------ */
struct dp_get_range {
    int32_t pid;
    uint32_t count;   /* pages */
    uint64_t addr;    /* page aligned */
};
struct dp_get_req {
    uint32_t nr_ranges;
    uint32_t total_pages;
    struct dp_get_range ranges[DP_MAX_GET_RANGES];
};
int dp_enc_get_req(struct dp_buf *b, uint64_t id, const struct dp_get_range *r, uint32_t n);
int dp_dec_get_req(const uint8_t *p, size_t len, struct dp_get_req *m, struct dp_err *err);

/* Reply payload: u32 nr_segs, u32 0, then per segment a 24-byte header
 * (u32 kind, i32 pid, u32 count, u32 0, u64 addr) followed, for DATA, by
 * count * 4096 bytes. Segments cover the requested ranges in request order. */
#define DP_GET_REPLY_HDR 8
#define DP_SEG_HDR       24
struct dp_seg {
    uint32_t kind;
    int32_t pid;
    uint32_t count;
    uint64_t addr;
    const uint8_t *data; /* DATA: count pages inside the decoded payload; else NULL */
};
void dp_enc_get_reply_hdr(uint8_t out[DP_GET_REPLY_HDR], uint32_t nr_segs);
void dp_enc_seg_hdr(uint8_t out[DP_SEG_HDR], const struct dp_seg *s);
/* Validates a reply against the request that asked for it: every page of every
 * range is covered exactly once, in order, and the byte count matches. */
int dp_dec_get_reply(const uint8_t *p, size_t len, const struct dp_get_range *req, uint32_t nr_req,
                     struct dp_seg *segs, uint32_t max_segs, uint32_t *nr_segs, struct dp_err *err);

/* ---- PUT_PAGES ------------------------------------------------------ */
struct dp_put_range {
    int32_t pid;
    uint32_t count;
    uint64_t addr;
    const uint8_t *data; /* count * 4096 bytes */
};
struct dp_put_req {
    uint32_t nr_ranges;
    uint32_t total_pages;
    struct dp_put_range ranges[DP_MAX_PUT_PAGES];
};
#define DP_PUT_REPLY_LEN 8
int dp_enc_put_req(struct dp_buf *b, uint64_t id, const struct dp_put_range *r, uint32_t n);
int dp_dec_put_req(const uint8_t *p, size_t len, struct dp_put_req *m, struct dp_err *err);
int dp_enc_put_reply(struct dp_buf *b, uint64_t id, uint32_t pages);
int dp_dec_put_reply(const uint8_t *p, size_t len, uint32_t *pages, struct dp_err *err);

/* ---- GET_SKELETON --------------------------------------------------- */
#define DP_SKEL_REQ_LEN   8
#define DP_SKEL_CHUNK_HDR 32
enum dp_skel_kind { DP_SKEL_DATA = 1, DP_SKEL_END = 2 };
struct dp_skel_chunk {
    uint32_t kind;
    uint32_t mode;        /* file permission bits (& 0777) */
    uint64_t file_size;   /* DATA: the file's full size; END: number of files */
    uint64_t offset;      /* DATA: where data goes; END: total data bytes sent */
    uint32_t data_len;
    uint16_t name_len;
    char name[DP_MAX_NAME + 1];
    const uint8_t *data;
};
int dp_enc_skel_req(struct dp_buf *b, uint64_t id);
int dp_dec_skel_req(const uint8_t *p, size_t len, struct dp_err *err);
/* Encodes the chunk header and name; data_len bytes of data must follow. */
int dp_enc_skel_chunk_hdr(struct dp_buf *b, const struct dp_skel_chunk *c);
int dp_dec_skel_chunk(const uint8_t *p, size_t len, struct dp_skel_chunk *c, struct dp_err *err);
bool dp_skel_name_ok(const char *name, size_t len);

/* ---- STATS / ACCESS_LOG / TASK_MAP requests: empty payloads ---------- */
int dp_dec_empty(const uint8_t *p, size_t len, struct dp_err *err);

/* ---- ERROR ---------------------------------------------------------- */
struct dp_error_msg {
    uint32_t code;
    char msg[DP_MAX_ERROR_MSG + 1];
};
int dp_enc_error(struct dp_buf *b, uint64_t id, bool fatal, uint32_t code, const char *msg);
int dp_dec_error(const uint8_t *p, size_t len, struct dp_error_msg *m, struct dp_err *err);

/* ---- Requests as the server sees them (also the fuzz entry point) ---- */
struct dp_request {
    struct dp_hdr hdr;
    union {
        struct dp_hello hello;
        struct dp_auth auth;
        struct dp_get_req get;
        struct dp_put_req put;
    } u;
};
/* The largest payload a request of this type can have (0 for types without
 * payload and for unknown types), so a receiver refuses a too-long request
 * from its header alone, before buffering it. */
uint32_t dp_request_max_len(uint8_t type);
bool dp_request_type_known(uint8_t type);

/* Decodes one version-1 request payload of the type in hdr (version-2 types
 * PUT_TRACE/GET_HOTSET: lib/proto_hotset.h). Returns DP_E_OK or a code. */
int dp_dec_request(const struct dp_hdr *h, const uint8_t *p, size_t len, struct dp_request *req, struct dp_err *err);

#endif
