"""An independent Python implementation of the page-server protocol's secure
channel (docs/protocol.md §3; lib/channel.c is the C one), on the
`cryptography` package: X25519, HMAC-SHA512/256 and BLAKE2b from hashlib,
ChaCha20-Poly1305 and AES-256-GCM. The tests speak the protocol with it, so a
mistake shared by the C server and the C client cannot hide."""
import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives import serialization

CHACHA, AESGCM_ID = 1, 2
FLAG_PLAINTEXT = 1
VERSION = 3
TAG = 16


def transcript(hello, reply):
    return hashlib.blake2b(b"DistriProc-handshake-v3" + struct.pack("<II", len(hello), len(reply)) + hello + reply,
                           digest_size=32).digest()


def kdf(master, sub_id):
    """libsodium crypto_kdf_derive_from_key (BLAKE2b, salt = id, personal = context)."""
    return hashlib.blake2b(b"", digest_size=32, key=master[:32], salt=struct.pack("<Q", sub_id) + bytes(8),
                           person=b"DPchan3_" + bytes(8)).digest()


def derive(psk, own_sk, peer_pk, th):
    """Returns (k_c2s, k_s2c, client_mac, server_mac)."""
    ss = X25519PrivateKey.from_private_bytes(own_sk).exchange(X25519PublicKey.from_public_bytes(peer_pk))
    prk = hmac.new(psk, b"DistriProc-keys-v3" + ss + th, hashlib.sha512).digest()
    c2s, s2c, kc, ks = (kdf(prk, i) for i in (1, 2, 3, 4))
    return c2s, s2c, hmac.new(kc, th, hashlib.sha256).digest(), hmac.new(ks, th, hashlib.sha256).digest()


def public_key(sk):
    return X25519PrivateKey.from_private_bytes(sk).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class Direction:
    """One direction's AEAD and record counter."""

    def __init__(self, cipher, key):
        self.aead = AESGCM(key) if cipher == AESGCM_ID else ChaCha20Poly1305(key)
        self.counter = 0

    def nonce(self):
        n = struct.pack("<Q", self.counter) + bytes(4)
        self.counter += 1
        return n

    def seal(self, data):
        return self.aead.encrypt(self.nonce(), data, None)

    def open(self, data):
        n = struct.pack("<Q", self.counter) + bytes(4)
        out = self.aead.decrypt(n, data, None)  # raises InvalidTag
        self.counter += 1
        return out


def hello_payload(min_v=VERSION, max_v=VERSION, flags=0, ciphers=CHACHA | AESGCM_ID, sk=None, nonce=None):
    sk = sk or os.urandom(32)
    return sk, struct.pack("<HHIII", min_v, max_v, flags, ciphers, 0) + public_key(sk) + (nonce or os.urandom(32))


def parse_hello_reply(p):
    assert len(p) == 128, len(p)
    version, _, max_payload, gp, pp, gr, flags, cipher, _ = struct.unpack("<HHIIIIIII", p[:32])
    return {"version": version, "flags": flags, "cipher": cipher, "server_nonce": p[32:64], "eph_pk": p[64:96],
            "cpid": p[96:128]}
