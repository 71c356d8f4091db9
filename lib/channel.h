/* channel: the page-server protocol's secure channel (docs/protocol.md §3),
 * one place for every peer: the server (lib/pageserver.c) and the client
 * library (lib/client.c), which restore, lazyd, query, sync, the trace
 * uploader, bench server and migrate all use.
 *
 * Handshake (pre-shared key + fresh ephemeral X25519 keys of both sides):
 *   th      = BLAKE2b-256("DistriProc-handshake-v3" || HELLO payload || HELLO reply payload)
 *   ss      = X25519(own ephemeral secret, peer ephemeral public)
 *   master  = HMAC-SHA512(PSK, "DistriProc-keys-v3" || ss || th)[0..32]
 *   k_c2s, k_s2c, k_cmac, k_smac = crypto_kdf(master, id 1..4, context "DPchan3_")
 *   client MAC (AUTH) = HMAC-SHA256(k_cmac, th), server MAC (AUTH reply) = HMAC-SHA256(k_smac, th)
 * The HELLO and its reply carry the protocol version range and choice, the
 * plaintext flag, the cipher choice and the checkpoint's identity, so each
 * of these is bound into both MACs and both traffic keys.
 *
 * Records after the handshake: every message becomes a header record (its
 * 24-byte header sealed: 24 + 16 bytes) and, if len > 0, a payload record
 * (len + 16 bytes). AEAD (AES-256-GCM where the CPU has AES-NI, else
 * ChaCha20-Poly1305 IETF; the AEAD runs on libsodium for records up to 16 KiB
 * and on OpenSSL's libcrypto above (channel.c says why), the key
 * schedule on libsodium), nonce = the direction's record counter (u64 LE,
 * then 4 zero bytes), no associated data. A record that was altered,
 * reordered, replayed (within or across connections) or cut fails its tag.
 *
 * Pure: no I/O; buffers in, buffers out. */
#ifndef DP_CHANNEL_H
#define DP_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

#include "proto.h"

#define DP_CHAN_TAG      16
#define DP_CHAN_KEY      32
#define DP_CHAN_HDR_REC  (DP_HDR_SIZE + DP_CHAN_TAG)

enum dp_cipher {
    DP_CIPHER_CHACHA20POLY1305 = 1, /* bit in HELLO's cipher set and the chosen value */
    DP_CIPHER_AES256GCM = 2,
};

struct evp_cipher_ctx_st;
struct dp_chan_dir {
    uint8_t key[DP_CHAN_KEY];
    uint64_t counter;                  /* records sealed/opened in this direction */
    struct evp_cipher_ctx_st *ctx;     /* libcrypto AEAD context, keyed with key (large records) */
    crypto_aead_aes256gcm_state *aes;  /* libsodium's expanded AES key (small records), AES only */
};

struct dp_chan {
    bool secure;        /* records are sealed (false: plaintext, or before the handshake ends) */
    uint32_t cipher;
    struct dp_chan_dir tx, rx;
};

/* Ciphers this machine can run (HELLO's offer). */
uint32_t dp_chan_ciphers_local(void);
/* The server's choice from the client's offer: AES-256-GCM if both have it,
 * else ChaCha20-Poly1305 if offered, else 0. */
uint32_t dp_chan_pick_cipher(uint32_t offered);
const char *dp_chan_cipher_name(uint32_t cipher);

/* The handshake transcript hash over both HELLO payloads. */
void dp_chan_transcript(const uint8_t *hello, size_t hello_len, const uint8_t *reply, size_t reply_len,
                        uint8_t th[32]);

/* Derives the traffic keys and both MACs. Returns -1 (err set) if the peer's
 * public key is a low-order point (ss all zero) or the cipher is unknown.
 * server: which side we are (picks tx/rx keys). Sets chan->secure only if
 * encrypt (the plaintext mode still authenticates the handshake). */
int dp_chan_derive(const uint8_t *psk, size_t psk_len, const uint8_t own_sk[32], const uint8_t peer_pk[32],
                   const uint8_t th[32], uint32_t cipher, bool server, bool encrypt, struct dp_chan *chan,
                   uint8_t client_mac[32], uint8_t server_mac[32], struct dp_err *err);
void dp_chan_free(struct dp_chan *chan);

/* Bytes a sealed message of payload length len takes on the wire. */
static inline size_t dp_chan_sealed_len(uint32_t len)
{
    return DP_CHAN_HDR_REC + (len ? (size_t)len + DP_CHAN_TAG : 0);
}
/* Seals one message: hdr (24 bytes, already encoded) and its payload
 * (dp_get_u32(hdr + 16) bytes) into out (dp_chan_sealed_len bytes; may not
 * overlap the inputs). Returns -1 if the counter is exhausted. */
int dp_chan_seal(struct dp_chan *chan, const uint8_t hdr[DP_HDR_SIZE], const uint8_t *payload, uint8_t *out);
/* Seals one message in place: rec holds the plain header at [0, 24), the
 * payload at [40, 40 + len), and room for the tags at [24, 40) and after
 * the payload (dp_chan_sealed_len bytes in all). Saves the copy of a large
 * reply. Returns -1 if the counter is exhausted. */
int dp_chan_seal_inplace(struct dp_chan *chan, uint8_t *rec);
/* Opens a header record in place: on success rec[0..24) is the plain header.
 * Returns -1 if the record does not verify (altered, replayed, reordered). */
int dp_chan_open_hdr(struct dp_chan *chan, uint8_t rec[DP_CHAN_HDR_REC]);
/* Opens a payload record of len plaintext bytes (len + 16 on the wire) in place. */
int dp_chan_open_payload(struct dp_chan *chan, uint8_t *rec, uint32_t len);

/* Appends a sealed copy of one complete plain message (header + payload) to
 * b; with !chan->secure a plain copy. Returns -1 on ENOMEM or a malformed
 * message (its length field disagrees with msg_len). */
int dp_chan_append(struct dp_chan *chan, struct dp_buf *b, const uint8_t *msg, size_t msg_len);

#endif
