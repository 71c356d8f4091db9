#!/usr/bin/python3
"""Load, digest and exercise a Redis server for DistriProc's demo and tests.

Talks RESP over a plain socket (no client library needed). Every loop is bounded
in count and time. Run inside a lab host with `distriproc lab exec HOST -- ...`.

  redis_tool.py load   --host H --port P --mib N [--value-size B] [--seed S]
  redis_tool.py digest --host H --port P            -> {"keys":..,"bytes":..,"sha256":..}
  redis_tool.py read   --host H --port P --fraction F --seconds T [--seed S]
  redis_tool.py probe  --host H --port P --timeout T  (waits for a correct PING reply)
  redis_tool.py zipf   --host H --port P --theta 0.99 --read-ratio 0.95 --seconds T [--max-ops N]
                       one request at a time, keys drawn from a zipfian distribution (hot keys
                       scattered over the key space by a fixed permutation), GET or SET;
                       -> {"ops","gets","sets","misses","ops_per_s","p50_us","p99_us",...}
"""
import bisect
import argparse
import hashlib
import json
import random
import socket
import sys
import time


class RespError(Exception):
    pass


class Resp:
    def __init__(self, host, port, timeout=30.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def close(self):
        self.sock.close()

    @staticmethod
    def encode(*args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, str):
                a = a.encode()
            elif isinstance(a, int):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise RespError("connection closed by the server")
        self.buf += chunk

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[: i + 2]
                return line
            self._fill()

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data = bytes(self.buf[:n])
            del self.buf[: n + 2]
            return data
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise RespError("unexpected reply %r" % line[:40])

    def call(self, *args):
        self.send(self.encode(*args))
        return self.reply()


def value_for(key_index, size, seed):
    """Deterministic, incompressible-looking value for one key."""
    rng = random.Random(seed * 1_000_003 + key_index)
    return rng.randbytes(size)


def cmd_load(a):
    r = Resp(a.host, a.port)
    total = a.mib << 20
    nkeys = max(1, total // a.value_size)
    batch = 500
    t0 = time.monotonic()
    last = t0
    for start in range(0, nkeys, batch):
        end = min(nkeys, start + batch)
        parts = []
        for k in range(start, end):
            parts.append(Resp.encode("SET", "key:%d" % k, value_for(k, a.value_size, a.seed)))
        r.send(b"".join(parts))
        for _ in range(start, end):
            if r.reply() != b"OK":
                raise RespError("SET did not answer OK")
        now = time.monotonic()
        if now - last >= 2.0:
            print("load: %d/%d keys (%.0f%%)" % (end, nkeys, 100.0 * end / nkeys), file=sys.stderr)
            last = now
        if now - t0 > a.max_seconds:
            raise SystemExit("load: gave up after %d s (%d of %d keys loaded)" % (a.max_seconds, end, nkeys))
    used = r.call("INFO", "memory")
    r.close()
    used_memory = 0
    for line in used.split(b"\r\n"):
        if line.startswith(b"used_memory:"):
            used_memory = int(line.split(b":")[1])
    print(json.dumps({"keys": nkeys, "value_size": a.value_size, "used_memory": used_memory,
                      "seconds": round(time.monotonic() - t0, 2)}))


def cmd_digest(a):
    r = Resp(a.host, a.port)
    keys = []
    cursor = b"0"
    deadline = time.monotonic() + a.max_seconds
    while True:
        cursor, batch = r.call("SCAN", cursor, "COUNT", 1000)
        keys.extend(batch)
        if cursor == b"0":
            break
        if time.monotonic() > deadline:
            raise SystemExit("digest: SCAN did not finish within %d s" % a.max_seconds)
    keys.sort()
    h = hashlib.sha256()
    nbytes = 0
    for i in range(0, len(keys), 500):
        chunk = keys[i:i + 500]
        values = r.call("MGET", *chunk)
        for k, v in zip(chunk, values):
            if v is None:
                raise SystemExit("digest: key %r vanished during the digest" % k)
            h.update(b"%d:%s%d:%s" % (len(k), k, len(v), v))
            nbytes += len(k) + len(v)
        if time.monotonic() > deadline:
            raise SystemExit("digest: MGET did not finish within %d s" % a.max_seconds)
    r.close()
    print(json.dumps({"keys": len(keys), "bytes": nbytes, "sha256": h.hexdigest()}))


def cmd_read(a):
    r = Resp(a.host, a.port)
    nkeys = int(r.call("DBSIZE"))
    if nkeys == 0:
        raise SystemExit("read: the database is empty; load it first")
    rng = random.Random(a.seed)
    subset = max(1, int(nkeys * a.fraction))
    keys = ["key:%d" % k for k in rng.sample(range(nkeys), subset)]
    ops = misses = 0
    t0 = time.monotonic()
    end = t0 + a.seconds
    depth = 16
    while time.monotonic() < end and ops < a.max_ops:
        batch = [rng.choice(keys) for _ in range(depth)]
        r.send(b"".join(Resp.encode("GET", k) for k in batch))
        for _ in batch:
            if r.reply() is None:
                misses += 1
        ops += depth
    elapsed = time.monotonic() - t0
    r.close()
    print(json.dumps({"ops": ops, "misses": misses, "seconds": round(elapsed, 3),
                      "ops_per_s": round(ops / elapsed, 1), "keys_touched": subset}))


def zipf_cdf(n, theta):
    """Cumulative distribution of ranks 1..n with P(rank k) ~ 1 / k^theta."""
    cdf, total = [], 0.0
    for k in range(1, n + 1):
        total += 1.0 / (k ** theta)
        cdf.append(total)
    return [c / total for c in cdf]


def cmd_zipf(a):
    r = Resp(a.host, a.port)
    nkeys = int(r.call("DBSIZE"))
    if nkeys == 0:
        raise SystemExit("zipf: the database is empty; load it first")
    cdf = zipf_cdf(nkeys, a.theta)
    perm = list(range(nkeys))
    random.Random(12345).shuffle(perm)   # rank -> key: the hot keys are spread out
    rng = random.Random(a.seed)
    value = rng.randbytes(a.value_size)
    lat = []
    gets = sets = misses = 0
    t0 = time.monotonic()
    end = t0 + a.seconds
    while len(lat) < a.max_ops:
        now = time.monotonic()
        if now >= end:
            break
        k = perm[min(nkeys - 1, bisect.bisect_left(cdf, rng.random()))]
        if rng.random() < a.read_ratio:
            req = Resp.encode("GET", "key:%d" % k)
            gets += 1
        else:
            req = Resp.encode("SET", "key:%d" % k, value)
            sets += 1
        s0 = time.perf_counter()
        r.send(req)
        rep = r.reply()
        lat.append(time.perf_counter() - s0)
        if req.startswith(b"*2") and rep is None:
            misses += 1
    elapsed = time.monotonic() - t0
    r.close()
    lat.sort()

    def q(x):
        return round(lat[min(len(lat) - 1, int(x * len(lat)))] * 1e6, 1) if lat else None
    print(json.dumps({"ops": len(lat), "gets": gets, "sets": sets, "misses": misses,
                      "seconds": round(elapsed, 3), "ops_per_s": round(len(lat) / elapsed, 1) if elapsed else 0,
                      "p50_us": q(0.5), "p90_us": q(0.9), "p99_us": q(0.99), "p999_us": q(0.999),
                      "max_us": round(lat[-1] * 1e6, 1) if lat else None,
                      "theta": a.theta, "read_ratio": a.read_ratio, "keys": nkeys}))


def cmd_probe(a):
    """Wait until the server answers PING correctly; print the seconds it took."""
    t0 = time.monotonic()
    last_error = "no attempt"
    while time.monotonic() - t0 < a.timeout:
        try:
            r = Resp(a.host, a.port, timeout=2.0)
            try:
                if r.call("PING") == b"PONG":
                    print(json.dumps({"seconds": round(time.monotonic() - t0, 4)}))
                    return
            finally:
                r.close()
        except (OSError, RespError) as e:
            last_error = str(e)
        time.sleep(0.005)
    raise SystemExit("probe: no PONG from %s:%d within %.0f s (last error: %s)" %
                     (a.host, a.port, a.timeout, last_error))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("load", "digest", "read", "probe", "zipf"):
        s = sub.add_parser(name)
        s.add_argument("--host", default="127.0.0.1")
        s.add_argument("--port", type=int, default=6379)
        s.add_argument("--seed", type=int, default=1)
        s.add_argument("--max-seconds", type=int, default=600)
        if name == "load":
            s.add_argument("--mib", type=int, required=True)
            s.add_argument("--value-size", type=int, default=1000)
        if name == "read":
            s.add_argument("--fraction", type=float, default=0.1)
            s.add_argument("--seconds", type=float, default=10.0)
            s.add_argument("--max-ops", type=int, default=50_000_000)
        if name == "zipf":
            s.add_argument("--theta", type=float, default=0.99)
            s.add_argument("--read-ratio", type=float, default=0.95)
            s.add_argument("--seconds", type=float, default=10.0)
            s.add_argument("--max-ops", type=int, default=5_000_000)
            s.add_argument("--value-size", type=int, default=1000)
        if name == "probe":
            s.add_argument("--timeout", type=float, default=30.0)
    a = p.parse_args()
    {"load": cmd_load, "digest": cmd_digest, "read": cmd_read, "probe": cmd_probe, "zipf": cmd_zipf}[a.cmd](a)


if __name__ == "__main__":
    main()
