/* Writes the seed corpora under fuzz/seeds/<target>/ from DistriProc's own
 * encoders, so every seed is a valid input that reaches the code behind the
 * first checks (a mutation of a valid message explores the deep paths far
 * faster than one of random bytes). Run by scripts/gen-fuzz-seeds.sh; its
 * output is committed. Usage: gen_seeds OUTDIR. Deterministic: the same
 * bytes on every run (fixed keys, ids and page contents). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hotset.h"
#include "overlay.h"
#include "key.h"
#include "proto.h"
#include "proto_hotset.h"

static const char *outdir;

/* ---- output ------------------------------------------------------------- */

/* Writes one seed file OUTDIR/target/name (selector byte first if sel >= 0). */
static void seed(const char *target, const char *name, int sel, const void *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", outdir, target);
    if (mkdir(path, 0755) < 0 && errno != EEXIST) {
        perror(path);
        exit(1);
    }
    snprintf(path, sizeof(path), "%s/%s/%s", outdir, target, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    if (sel >= 0)
        fputc(sel, f);
    if ((n && fwrite(p, 1, n, f) != n) || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

/* Dies with what failed: a seed that is not valid would mislead the fuzzer. */
static void check(int rc, const char *what)
{
    if (rc < 0) {
        fprintf(stderr, "gen_seeds: %s failed\n", what);
        exit(1);
    }
}

/* The payload of the single message in b. */
static const uint8_t *payload(const struct dp_buf *b) { return b->data + DP_HDR_SIZE; }
static size_t payload_len(const struct dp_buf *b) { return b->len - DP_HDR_SIZE; }

/* ---- fuzz_proto (selector values: enum in fuzz/fuzz_proto.c) -------------- */

static uint8_t pages[4][DP_PAGE_SIZE];

/* Seeds one request of each type: selector 1, then the type byte, then the payload. */
static void proto_request(const char *name, uint8_t type, const struct dp_buf *b)
{
    struct dp_buf s = {0};
    check(dp_buf_u8(&s, type), "buf");
    check(dp_buf_put(&s, payload(b), payload_len(b)), "buf");
    seed("fuzz_proto", name, 1, s.data, s.len);
    dp_buf_free(&s);
}

static void gen_proto(struct dp_buf *stream)
{
    struct dp_buf b = {0};
    struct dp_hello hello = {.min_version = 3, .max_version = 3, .ciphers = 3};
    memset(hello.eph_pk, 0x42, sizeof(hello.eph_pk));
    memset(hello.nonce, 0x17, sizeof(hello.nonce));
    check(dp_enc_hello(&b, 1, &hello), "hello");
    seed("fuzz_proto", "hdr-hello", 0, b.data, DP_HDR_SIZE);
    proto_request("req-hello", DP_MSG_HELLO, &b);
    check(dp_buf_put(stream, b.data, b.len), "buf");
    b.len = 0;

    struct dp_auth auth;
    memset(auth.mac, 0x33, sizeof(auth.mac));
    check(dp_enc_auth(&b, 2, &auth), "auth");
    proto_request("req-auth", DP_MSG_AUTH, &b);
    check(dp_buf_put(stream, b.data, b.len), "buf");
    b.len = 0;

    struct dp_get_range gr[3] = {{100, 2, 0x10000}, {100, 1, 0x20000}, {101, 1, 0x7f0000}};
    check(dp_enc_get_req(&b, 3, gr, 3), "get");
    proto_request("req-get", DP_MSG_GET_PAGES, &b);
    check(dp_buf_put(stream, b.data, b.len), "buf");
    /* GET reply: u16 request length, request, reply with one segment of each kind */
    struct dp_buf r = {0};
    check(dp_buf_u16(&r, (uint16_t)payload_len(&b)), "buf");
    check(dp_buf_put(&r, payload(&b), payload_len(&b)), "buf");
    uint8_t h8[DP_GET_REPLY_HDR], h24[DP_SEG_HDR];
    dp_enc_get_reply_hdr(h8, 4);
    check(dp_buf_put(&r, h8, sizeof(h8)), "buf");
    struct dp_seg segs[4] = {{DP_SEG_DATA, 100, 1, 0x10000, NULL}, {DP_SEG_ZERO, 100, 1, 0x11000, NULL},
                             {DP_SEG_DATA, 100, 1, 0x20000, NULL}, {DP_SEG_NOT_LAZY, 101, 1, 0x7f0000, NULL}};
    for (int i = 0; i < 4; i++) {
        dp_enc_seg_hdr(h24, &segs[i]);
        check(dp_buf_put(&r, h24, sizeof(h24)), "buf");
        if (segs[i].kind == DP_SEG_DATA)
            check(dp_buf_put(&r, pages[i], DP_PAGE_SIZE), "buf");
    }
    seed("fuzz_proto", "get-reply", 2, r.data, r.len);
    dp_buf_free(&r);
    b.len = 0;

    struct dp_put_range pr[2] = {{100, 2, 0x10000, pages[0]}, {101, 1, 0x7f0000, pages[2]}};
    check(dp_enc_put_req(&b, 4, pr, 2), "put");
    proto_request("req-put", DP_MSG_PUT_PAGES, &b);
    check(dp_buf_put(stream, b.data, b.len), "buf");
    b.len = 0;

    check(dp_enc_skel_req(&b, 5), "skel");
    proto_request("req-skel", DP_MSG_GET_SKELETON, &b);
    check(dp_buf_put(stream, b.data, b.len), "buf");
    b.len = 0;
    check(dp_msg_append(&b, DP_MSG_STATS, 0, 6, NULL, 0), "stats");
    check(dp_buf_put(stream, b.data, b.len), "buf");
    b.len = 0;
    check(dp_enc_get_hotset_req(&b, 7, 1), "get hotset");
    seed("fuzz_proto", "get-hotset-req", 9, payload(&b), payload_len(&b));
    check(dp_buf_put(stream, b.data, b.len), "buf");
    b.len = 0;

    check(dp_enc_put_reply(&b, 4, 3), "put reply");
    seed("fuzz_proto", "put-reply", 3, payload(&b), payload_len(&b));
    b.len = 0;

    struct dp_skel_chunk c = {.kind = DP_SKEL_DATA, .mode = 0644, .file_size = 4096, .offset = 0, .data_len = 64};
    strcpy(c.name, "parent/pages-1.img");
    c.name_len = (uint16_t)strlen(c.name);
    check(dp_enc_skel_chunk_hdr(&b, &c), "skel chunk");
    check(dp_buf_put(&b, pages[1], 64), "buf");
    seed("fuzz_proto", "skel-chunk", 4, b.data, b.len);
    b.len = 0;
    struct dp_skel_chunk end = {.kind = DP_SKEL_END, .file_size = 1, .offset = 64};
    check(dp_enc_skel_chunk_hdr(&b, &end), "skel end");
    seed("fuzz_proto", "skel-end", 4, b.data, b.len);
    b.len = 0;

    struct dp_tm_range ranges[3] = {{0x10000, 0x30000}, {0x40000, 0x41000}, {0x7f0000, 0x800000}};
    struct dp_tm_task tasks[2] = {{100, 1, 2, ranges}, {101, 100, 1, ranges + 2}};
    struct dp_task_map tm = {2, tasks, ranges};
    check(dp_enc_task_map_reply(&b, 8, &tm), "task map");
    seed("fuzz_proto", "task-map", 5, payload(&b), payload_len(&b));
    b.len = 0;

    struct dp_hello_reply hr = {.version = 3, .max_payload = DP_MAX_PAYLOAD, .max_get_pages = DP_MAX_GET_PAGES,
                                .max_put_pages = DP_MAX_PUT_PAGES, .max_get_ranges = DP_MAX_GET_RANGES,
                                .cipher = 1};
    memset(hr.server_nonce, 0x21, sizeof(hr.server_nonce));
    memset(hr.eph_pk, 0x22, sizeof(hr.eph_pk));
    memset(hr.cpid, 0x23, sizeof(hr.cpid));
    check(dp_enc_hello_reply(&b, 1, &hr), "hello reply");
    seed("fuzz_proto", "hello-reply", 6, payload(&b), payload_len(&b));
    b.len = 0;

    struct dp_auth_reply ar;
    memset(ar.mac, 0x44, sizeof(ar.mac));
    check(dp_enc_auth_reply(&b, 2, &ar), "auth reply");
    seed("fuzz_proto", "auth-reply", 7, payload(&b), payload_len(&b));
    b.len = 0;

    check(dp_enc_error(&b, 9, true, DP_E_NOT_LAZY, "PUT to 0x1000 of pid 100: not lazy memory"), "error");
    seed("fuzz_proto", "error", 8, payload(&b), payload_len(&b));
    b.len = 0;

    check(dp_enc_put_trace_reply(&b, 10, 1234, 12), "trace reply");
    seed("fuzz_proto", "put-trace-reply", 9, payload(&b), payload_len(&b));
    dp_buf_free(&b);
}

/* ---- fuzz_chan: mode byte, flip position, then a plain message stream ---- */

static void gen_chan(const struct dp_buf *stream)
{
    struct dp_buf s = {0};
    check(dp_buf_u32(&s, 0x03000031), "buf"); /* flip bit 3 of byte 49 */
    check(dp_buf_put(&s, stream->data, stream->len), "buf");
    seed("fuzz_chan", "session", 0, s.data, s.len);
    seed("fuzz_chan", "forged-records", 1, stream->data, stream->len);
    dp_buf_free(&s);
}

/* ---- fuzz_conn: mode byte (bit 0 sealed, bit 1 version 3), delivery size,
 * then the client's plain stream (HELLO, AUTH, requests) ---- */

static void gen_conn(const struct dp_buf *stream)
{
    static const struct { const char *name; uint8_t mode, piece; } v[] = {
        {"sealed-v3", 3, 0xff}, {"sealed-v3-bytewise", 3, 1}, {"plain-v3", 2, 0x41}, {"sealed-v2", 1, 0x80}};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        struct dp_buf s = {0};
        check(dp_buf_u8(&s, v[i].piece), "buf");
        check(dp_buf_put(&s, stream->data, stream->len), "buf");
        seed("fuzz_conn", v[i].name, v[i].mode, s.data, s.len);
        dp_buf_free(&s);
    }
}

/* ---- fuzz_client: the server's replies (ids 0: the GET, 1: the PUT) ---- */

static void gen_client(void)
{
    struct dp_buf b = {0};
    uint8_t h8[DP_GET_REPLY_HDR], h24[DP_SEG_HDR];
    dp_enc_get_reply_hdr(h8, 3);
    struct dp_seg segs[3] = {{DP_SEG_DATA, 100, 1, 0x10000, NULL}, {DP_SEG_ZERO, 100, 1, 0x11000, NULL},
                             {DP_SEG_DATA, 101, 1, 0x7f0000, NULL}};
    struct dp_buf pl = {0};
    check(dp_buf_put(&pl, h8, sizeof(h8)), "buf");
    for (int i = 0; i < 3; i++) {
        dp_enc_seg_hdr(h24, &segs[i]);
        check(dp_buf_put(&pl, h24, sizeof(h24)), "buf");
        if (segs[i].kind == DP_SEG_DATA)
            check(dp_buf_put(&pl, pages[i], DP_PAGE_SIZE), "buf");
    }
    check(dp_msg_append(&b, DP_MSG_GET_PAGES | DP_MSG_REPLY, 0, 0, pl.data, (uint32_t)pl.len), "get reply");
    check(dp_enc_put_reply(&b, 1, 1), "put reply");
    seed("fuzz_client", "get-put-replies", -1, b.data, b.len);
    b.len = 0;
    check(dp_enc_error(&b, 0, false, DP_E_NO_TASK, "no task 100 in this checkpoint"), "error");
    check(dp_enc_error(&b, 1, true, DP_E_NOT_LAZY, "PUT outside the lazy ranges"), "error");
    seed("fuzz_client", "errors", -1, b.data, b.len);
    dp_buf_free(&pl);
    dp_buf_free(&b);
}

/* ---- fuzz_key ---------------------------------------------------------- */

static void gen_key(void)
{
    /* what `distriproc keygen` writes, the bare form it wrote before, and
     * two refused ones (a short key, a key of one repeated byte) */
    const char v1[] = DP_KEY_HEADER "8d1f0e5c3a9b7d2e4f6a8c0b1d3e5f7091a2b3c4d5e6f708192a3b4c5d6e7f80\n";
    seed("fuzz_key", "keygen-v1", -1, v1, strlen(v1));
    const char hex[] = "8d1f0e5c3a9b7d2e4f6a8c0b1d3e5f7091a2b3c4d5e6f708192a3b4c5d6e7f80\n";
    seed("fuzz_key", "keygen-hex", -1, hex, strlen(hex));
    const char shortk[] = DP_KEY_HEADER "8d1f0e5c3a9b7d2e\n";
    seed("fuzz_key", "short", -1, shortk, strlen(shortk));
    const char same[] = DP_KEY_HEADER "0000000000000000000000000000000000000000000000000000000000000000\n";
    seed("fuzz_key", "repeated", -1, same, strlen(same));
}

/* ---- fuzz_lazysock: chunks of (ctrl byte, bytes) as criu restore sends ---- */

static void gen_lazysock(void)
{
    uint8_t s[64];
    size_t n = 0;
    int32_t pids[2] = {100, -101}; /* a task, then a zombie (no descriptor) */
    for (int i = 0; i < 2; i++) {
        s[n++] = 3 << 1; /* 4 bytes, no descriptor */
        memcpy(s + n, &pids[i], 4);
        n += 4;
        if (pids[i] > 0) {
            s[n++] = 1; /* 1 byte with the userfaultfd attached */
            s[n++] = 0;
        }
    }
    uint32_t fin = 0x52535446u; /* "RSTF" */
    s[n++] = 3 << 1;
    memcpy(s + n, &fin, 4);
    n += 4;
    seed("fuzz_lazysock", "task-zombie-finished", -1, s, n);
}

/* ---- fuzz_overlay: a real write-back log of two sync groups ---------------- */

static void gen_overlay(void)
{
    char dir[] = "/tmp/gen-seeds-overlay-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(1);
    }
    struct dp_overlay *o;
    struct dp_err err;
    check(dp_overlay_open(dir, &o, &err), "overlay open");
    check(dp_overlay_append(o, 100, 0x10000, 2, pages[0], &err), "overlay append");
    check(dp_overlay_sync(o, &err), "overlay sync");
    check(dp_overlay_append(o, 100, 0x10000, 1, pages[2], &err), "overlay append");
    check(dp_overlay_sync(o, &err), "overlay sync");
    dp_overlay_close(o);
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, DP_OVERLAY_NAME);
    uint8_t *log;
    size_t len;
    check(dp_read_file(path, &log, &len, &err), "read log");
    seed("fuzz_overlay", "two-groups", 0, log, len);
    seed("fuzz_overlay", "two-groups-resealed", 1, log, len);
    /* a torn tail: the second group's commit record never written */
    seed("fuzz_overlay", "torn-tail", 0, log, len - DP_OVERLAY_COMMIT_SIZE);
    free(log);
    unlink(path);
    rmdir(dir);
}

/* ---- fuzz_hotset: a hot set of two tasks ---------------------------------- */

static void gen_hotset(void)
{
    struct dp_hotset hs;
    uint8_t id[DP_CPID_SIZE];
    memset(id, 0x5a, sizeof(id));
    dp_hotset_init(&hs, 1, id, 1700000000000000ull, 500);
    check(dp_hotset_add_task(&hs, 100), "hotset task");
    check(dp_hotset_add_run(&hs, 0x10000, 4, 10, 1), "hotset run");
    check(dp_hotset_add_run(&hs, 0x40000, 1, 3, 7), "hotset run");
    check(dp_hotset_add_task(&hs, 101), "hotset task");
    check(dp_hotset_add_run(&hs, 0x7f0000, 2, 1, 20), "hotset run");
    uint8_t *out;
    size_t len;
    struct dp_err err;
    check(dp_hotset_encode(&hs, &out, &len, &err), "hotset encode");
    seed("fuzz_hotset", "two-tasks", -1, out, len);
    free(out);
    dp_hotset_free(&hs);
}

int main(int argc, char **argv)
{
    if (argc != 2 || strcmp(argv[1], "--help") == 0) {
        fprintf(stderr, "usage: gen_seeds OUTDIR   (writes OUTDIR/fuzz_*/; see scripts/gen-fuzz-seeds.sh)\n");
        return argc == 2 ? 0 : 2;
    }
    outdir = argv[1];
    dp_log_set_level(DP_LOG_ERROR);
    for (int i = 0; i < 4; i++)
        for (size_t j = 0; j < DP_PAGE_SIZE; j++)
            pages[i][j] = (uint8_t)(i * 31 + j * 7);
    struct dp_buf stream = {0};
    gen_proto(&stream);
    gen_chan(&stream);
    gen_conn(&stream);
    dp_buf_free(&stream);
    gen_client();
    gen_key();
    gen_lazysock();
    gen_overlay();
    gen_hotset();
    return 0;
}
