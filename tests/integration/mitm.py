"""An attacker on the path, without the key: a TCP proxy between a client
(distriproc query / restore) and distriproc serve that records every byte
both ways and can tamper with the first connection it carries:

  pass         forward untouched (record only)
  flip_s2c     flip one bit in the server's bytes after the handshake
  flip_c2s     flip one bit in the client's bytes after the handshake
  forge        after the handshake, drop what the client sends and answer
               with bytes recorded from an earlier connection (a genuine,
               sealed reply: a forged acknowledgement that could only work
               if replies were not bound to their connection)
  inject       after the handshake, insert bytes recorded from an earlier
               connection into the client's stream (a replayed request)
  autherr      flip a bit after the handshake of the first connection (the
               client reconnects), then answer the second connection's HELLO
               with a forged, unauthenticated ERROR AUTH_FAILED
  autherr_always  as autherr, but every later connection gets the forged
               ERROR too (a client must stop believing in a retry at a bound)

Later connections pass untouched, so a client that reconnects gets through.
Usable in-process (Proxy) or as a program inside a lab namespace:
  python3 mitm.py LISTEN_IP:PORT UPSTREAM_IP:PORT MODE CAPTURE_DIR [FEED_FILE]
(runs until killed; CAPTURE_DIR/N.c2s and N.s2c hold connection N's bytes)."""
import os
import select
import socket
import struct
import sys
import threading

# The handshake in bytes on the wire (protocol version 3): HELLO 24+80,
# AUTH 24+32 from the client; HELLO reply 24+128, AUTH reply 24+32 back.
HANDSHAKE_C2S = 24 + 80 + 24 + 32
HANDSHAKE_S2C = 24 + 128 + 24 + 32


class Proxy:
    def __init__(self, upstream, mode="pass", capture_dir=None, listen=("127.0.0.1", 0), feed=b"",
                 flip_at=1000):
        self.upstream, self.mode, self.feed, self.flip_at = upstream, mode, feed, flip_at
        self.capture_dir = capture_dir
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(listen)
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.conns = 0
        self.tampered = False
        self.c2s, self.s2c = [], []  # bytes per connection
        self.lock = threading.Lock()
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.stop = True
        self.lsock.close()

    def _accept(self):
        while not self.stop:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                n = self.conns
                self.conns += 1
                self.c2s.append(bytearray())
                self.s2c.append(bytearray())
            threading.Thread(target=self._pump, args=(n, c), daemon=True).start()

    def _save(self, n):
        if self.capture_dir and self.tampered and n == 0:
            open(os.path.join(self.capture_dir, "tampered"), "w").close()
        if self.capture_dir:
            for name, data in (("c2s", self.c2s[n]), ("s2c", self.s2c[n])):
                with open(os.path.join(self.capture_dir, "%d.%s" % (n, name)), "wb") as f:
                    f.write(bytes(data))

    def _pump(self, n, c):
        try:
            s = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            c.close()
            return
        if (n == 1 and self.mode == "autherr") or (n >= 1 and self.mode == "autherr_always"):
            # a forged handshake ERROR (no key needed: it travels before the keys)
            c.recv(1 << 16)
            msg = b"authentication failed: forged"
            err = struct.pack("<IHH", 4, len(msg), 0) + msg
            c.sendall(struct.pack("<IBBHQII", 0x53505044, 1, 0xFF, 2, 0, len(err), 0) + err)
            self.tampered = True
            c.close()
            s.close()
            return
        evil = n == 0 and self.mode != "pass"
        seen = {c: 0, s: 0}  # bytes received from each side
        injected = False
        try:
            while True:
                r, _, _ = select.select([c, s], [], [], 30)
                if not r:
                    break
                done = False
                for src in r:
                    data = bytearray(src.recv(1 << 16))
                    if not data:
                        done = True
                        break
                    start = seen[src]
                    seen[src] += len(data)
                    c2s = src is c
                    (self.c2s if c2s else self.s2c)[n].extend(data)
                    dst = s if c2s else c
                    hs = HANDSHAKE_C2S if c2s else HANDSHAKE_S2C
                    flips = self.mode in ("flip_s2c", "flip_c2s", "autherr", "autherr_always")
                    if evil and flips and c2s == (self.mode == "flip_c2s"):
                        at = hs + self.flip_at - start
                        if 0 <= at < len(data):
                            data[at] ^= 0x20
                            self.tampered = True
                    if evil and self.mode == "forge" and c2s and seen[c] > HANDSHAKE_C2S:
                        keep = max(0, HANDSHAKE_C2S - start)  # the handshake still goes through
                        if keep:
                            s.sendall(bytes(data[:keep]))
                        if not self.tampered:
                            c.sendall(self.feed)  # a genuine reply of another connection
                            self.tampered = True
                        continue
                    if evil and self.mode == "inject" and c2s and not injected and seen[c] > HANDSHAKE_C2S:
                        keep = max(0, HANDSHAKE_C2S - start)
                        data = data[:keep] + bytearray(self.feed) + data[keep:]
                        injected = self.tampered = True
                    dst.sendall(bytes(data))
                if done:
                    break
        except OSError:
            pass
        finally:
            self._save(n)
            c.close()
            s.close()


def main(argv):
    lhost, lport = argv[1].rsplit(":", 1)
    uhost, uport = argv[2].rsplit(":", 1)
    feed = open(argv[5], "rb").read() if len(argv) > 5 else b""
    p = Proxy((uhost, int(uport)), argv[3], argv[4], listen=(lhost, int(lport)), feed=feed)
    print("listening", p.port, flush=True)
    try:
        while True:
            threading.Event().wait(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(sys.argv)
