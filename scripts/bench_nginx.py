#!/usr/bin/python3
"""bench nginx: NGINX throughput and P99 (wrk) against the share of its memory
kept remote by --budget, for a real runc container (issue 10).

Run by `distriproc bench nginx` (src/bench_containers.c), as root, with the
rootfs built (make rootfs). In one run:

  1. NGINX in a user-namespaced runc container on lab host src (the rootfs of
     scripts/rootfs.sh, its own network namespace wired by the container-net
     hook). What it serves lives in its own memory: --objects-mib of 4000-byte
     objects, each the value of a `map $uri` entry of its configuration, sent
     with `return 200 $obj` from the strings NGINX parsed into its heap at start
     (not files: a file is sent from the kernel's page cache, which is not
     process memory and which no checkpoint moves). Default one process
     (`master_process off`); --workers N gives a master and N workers (each
     then holds a copy-on-write copy, and the master's is never touched again).
  2. The local baseline: wrk (one thread, --connections, zipf 0.99 over the
     objects, ranks scattered over memory) from the lab host's namespace, after
     --warmup seconds of the same load, measured for --seconds.
  3. runc checkpoint --leave-running through our CRIU; DistriProc's page
     server on src serves the images.
  4. For each remote fraction f (0 first): the lazy-pages daemon on dst,
     runc restore --lazy-pages, f = 0 without a budget, f > 0 with --budget
     (100-f)% of the working set W, the memory the f = 0 point had resident
     after its warm-up and measurement (a budget in % of the lazy memory
     would not bind: most of NGINX's heap is configuration-parsing memory that
     is never touched again, ~60% of it remote even without a budget), then
     a check that sampled objects are byte-identical, the same warm-up, the
     same measurement, the daemon's stats: the measured remote fraction of
     all lazy memory, and the measured share of W not resident,
     1 - resident/W; faults, evictions; the restored container killed.
     Right after each point's measurement, the same load for the same time
     against the source container (left running, warm since the start): a
     paired local measurement, adjacent in time to the point.
  5. The local baseline again, same warm-up and measurement (the drift between
     the two baselines is the run's noise floor).

JSON to --json; vs_local is to the mean of the two baselines, vs_local_adjacent
to the paired measurement (this machine is shared: its load moves both).
"""
import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_containers_lab as cl  # noqa: E402

OBJ = 4000          # bytes per object: under NGINX's 4096-byte limit for one configuration token
SERVE_PORT = 7341
THETA = 0.99
LUA = r"""
-- zipf(theta) over N objects; rank r is object ((r-1)*A) mod N (A coprime to
-- N), so the hot objects are spread over NGINX's memory.
local N, A, cdf
init = function(args)
  N, A = tonumber(args[1]), tonumber(args[2])
  local theta = tonumber(args[3])
  math.randomseed(tonumber(args[4]))
  cdf = {}
  local s = 0
  for k = 1, N do s = s + 1 / (k ^ theta); cdf[k] = s end
  for k = 1, N do cdf[k] = cdf[k] / s end
end
request = function()
  local u = math.random()
  local lo, hi = 1, N
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return wrk.format("GET", "/o/" .. (((lo - 1) * A) % N))
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %d, "duration_us": %d, "bytes": %d, "errors": {"connect": %d, ' ..
    '"read": %d, "write": %d, "status": %d, "timeout": %d}, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def obj(i):
    """Object i's content: 4000 hex characters, distinct per object."""
    return hashlib.shake_128(f"dp-nginx-{i}".encode()).hexdigest(OBJ // 2)


def coprime_step(n):
    """A multiplier coprime to n: rank -> object is a permutation, hot objects spread out."""
    a = 40503
    while math.gcd(a, n) != 1:
        a += 2
    return a


class Bench:
    def __init__(self, a):
        """Names derived from the lab: two runs in different labs never collide."""
        self.a = a
        self.lab = cl.Lab(a.distriproc, a.lab or os.environ.get("DISTRIPROC_LAB", "dp"), a.workdir)
        self.n = max(1, a.objects_mib * 1024 * 1024 // OBJ)
        self.step = coprime_step(self.n)
        self.cid = f"{self.lab.lab}-bngx"
        self.addr, self.ip = "10.251.7.2/30", "10.251.7.2"
        self.ifname = f"{self.lab.lab[:4]}bngx"

    # ---- the container ----------------------------------------------------------

    def write_config(self, srv):
        """The objects as map values: NGINX parses them into its heap at start."""
        with open(os.path.join(srv, "objects.map"), "w") as f:
            for i in range(self.n):
                f.write(f'/o/{i} "{obj(i)}";\n')
        w = self.a.workers
        head = "master_process off;\n" if w == 0 else f"user www-data;\nworker_processes {w};\n"
        hsize = 1 << max(10, (2 * self.n - 1).bit_length())
        with open(os.path.join(srv, "nginx.conf"), "w") as f:
            f.write(head + f"""pid /run/nginx.pid;
error_log /tmp/nginx-error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path /tmp/body; proxy_temp_path /tmp/proxy; fastcgi_temp_path /tmp/fastcgi;
  uwsgi_temp_path /tmp/uwsgi; scgi_temp_path /tmp/scgi;
  map_hash_max_size {hsize};
  map_hash_bucket_size 128;
  map $uri $obj {{ default ""; include /srv/objects.map; }}
  server {{
    listen 80;
    location = /ping {{ return 200 "ok"; }}
    location /o/ {{ default_type application/octet-stream; if ($obj = "") {{ return 404; }} return 200 $obj; }}
  }}
}}
""")

    def curl(self, host, path, timeout=10):
        """One GET from lab host HOST's namespace; the body, or None."""
        cp = self.lab.run(self.lab.ns(host, ["curl", "-s", "--max-time", timeout, f"http://{self.ip}{path}"]),
                          timeout=timeout + 10, check=False)
        return cp.stdout if cp.returncode == 0 else None

    def wait_serving(self, host, timeout=300):
        """NGINX parses a large configuration first: wait for its answer, bounded."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.curl(host, "/ping", 5) == "ok":
                return
            time.sleep(0.2)
        raise RuntimeError(f"NGINX does not answer on {host} after {timeout} s (see its /tmp/nginx-error.log)")

    def verify(self, host):
        """Sampled objects (first, last, 30 spread) byte-identical."""
        ids = sorted({0, self.n - 1, *(i * self.n // 30 for i in range(30))})
        for i in ids:
            got = self.curl(host, f"/o/{i}")
            if got != obj(i):
                raise RuntimeError(f"object {i} on {host}: {len(got or '')} bytes, not the expected content")
        return len(ids)

    def memory(self, init):
        """smaps_rollup of NGINX's processes (the container's init is the shell
        that exec'd NGINX: the same process), in KiB."""
        out = {}
        for pid in [init, *self.children(init)]:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    k, _, v = line.partition(":")
                    if k in ("Rss", "Anonymous", "Private_Dirty"):
                        out[k] = out.get(k, 0) + int(v.split()[0])
        return out

    @staticmethod
    def children(pid):
        """Direct children of pid (NGINX's workers)."""
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

    # ---- load -------------------------------------------------------------------

    def wrk(self, host, seconds, seed):
        """One bounded wrk run (zipf script); its JSON line with req/s and MB/s added."""
        cmd = ["wrk", "-t1", f"-c{self.a.connections}", f"-d{seconds}s", "--timeout", "5s", "-s", self.lua,
               f"http://{self.ip}/", "--", self.n, self.step, THETA, seed]
        cp = self.lab.run(self.lab.ns(host, cmd), timeout=seconds + 120)
        line = [ln for ln in cp.stdout.splitlines() if ln.startswith("{")]
        if not line:
            raise RuntimeError(f"wrk printed no result: {cp.stdout[-500:]} {cp.stderr[-500:]}")
        r = json.loads(line[-1])
        dur = r["duration_us"] / 1e6
        r["req_per_s"] = round(r["requests"] / dur, 1) if dur > 0 else 0.0
        r["MBps"] = round(r["bytes"] / dur / 1e6, 2) if dur > 0 else 0.0
        return r

    def measured(self, host):
        """The same warm-up, then the measurement: for the baselines and every point."""
        if self.a.warmup > 0:
            self.wrk(host, self.a.warmup, 11)
        return self.wrk(host, self.a.seconds, 3)

    # ---- the run ----------------------------------------------------------------

    def point(self, f, images, key, bundle, budget):
        """One remote fraction: restore, verify, warm up, measure, paired local, tear down."""
        srv, listen = self.lab.serve(images, key, SERVE_PORT, f)
        wd = os.path.join(self.a.workdir, f"lazy-{f}")
        daemon = None
        try:
            t0 = time.monotonic()
            pid, daemon, pull_s, restore_s = self.lab.restore_lazy(
                "dst", self.cid, bundle, listen, key, wd, budget=budget,
                prefetch=self.a.prefetch)
            self.wait_serving("dst", 60)
            ready_s = time.monotonic() - t0
            checked = self.verify("dst")
            cl.log(f"remote {f}%: restored (pid {pid}) in {ready_s:.2f} s, {checked} objects identical; "
                   f"warm-up {self.a.warmup} s")
            if self.a.warmup > 0:
                self.wrk("dst", self.a.warmup, 11)
            st0 = self.lab.lazy_stats(wd)
            m = self.wrk("dst", self.a.seconds, 3)
            st = self.lab.lazy_stats(wd)
            # The same load on the source container (still running, warm since
            # the start) right after: a paired baseline, as close in time (and in
            # the machine's other load) as this run can make it.
            adjacent = self.wrk("src", self.a.seconds, 3)
        finally:
            self.lab.kill("dst", self.cid, daemon)
            self.lab.stop(srv)
        tot, b = st["total"], st.get("budget")
        return {"remote_pct_target": f, "budget": budget, "result": m, "local_adjacent": adjacent,
                "vs_local_adjacent": (round(m["req_per_s"] / adjacent["req_per_s"], 3)
                                      if adjacent["req_per_s"] else None),
                "p99_vs_local_adjacent": round(m["p99_us"] / adjacent["p99_us"], 2) if adjacent["p99_us"] else None,
                "remote_fraction": tot["remote_fraction"],
                "remote_fraction_before_measure": st0["total"]["remote_fraction"],
                "resident_bytes": tot["resident_bytes"], "remote_bytes": tot["remote_bytes"],
                "faults_during_measure": tot["faults"] - st0["total"]["faults"],
                "pull_s": round(pull_s, 3), "runc_restore_s": round(restore_s, 3),
                "restore_to_serving_s": round(ready_s, 3), "objects_verified": checked,
                "budget_stats": ({k: b.get(k) for k in ("budget_bytes", "max_resident_bytes", "evictions",
                                                        "writebacks", "refaults", "writeback_errors")}
                                 if b else None),
                "fault_latency": {k: tot["latency"][k] for k in ("count", "p50_us", "p99_us")}}

    def go(self):
        """The whole run; the JSON is written after every point, so a failure keeps what was measured."""
        a, lab = self.a, self.lab
        doc = {"benchmark": "nginx", "schema": 1, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "command": a.command, "machine": cl.machine(), "bandwidth": a.bandwidth,
               "seconds": a.seconds, "warmup": a.warmup, "connections": a.connections, "prefetch": a.prefetch,
               "workers": a.workers, "objects": self.n, "object_bytes": OBJ,
               "content_bytes": self.n * OBJ, "zipf_theta": THETA,
               "what_is_remote": ("the objects NGINX serves: values of a `map $uri` in its configuration, parsed "
                                  "into its heap (private anonymous memory, lazily restored and evictable); "
                                  "NGINX's own code and libraries are file-backed and restored from the rootfs "
                                  "on dst; the response is built from the heap copy on every request"),
               "points": []}
        self.lua = os.path.join(a.workdir, "zipf.lua")
        srv = lab.dir("srv")
        self.write_config(srv)
        with open(self.lua, "w") as f:
            f.write(LUA)
        try:
            lab.up(a.bandwidth)
            binds = [(srv, "/srv", True)]
            args = ["nginx", "-c", "/srv/nginx.conf", "-g", "daemon off;"]
            b_src = lab.bundle(self.cid, "src", args, (0, 0), binds, self.addr, self.ifname)
            b_dst = lab.bundle(self.cid, "dst", args, (0, 0), binds, self.addr, self.ifname)
            t0 = time.monotonic()
            lab.start("src", self.cid, b_src)
            self.wait_serving("src")
            cl.log(f"NGINX on src serves {self.n} objects ({self.n * OBJ / 2**20:.0f} MiB) after "
                   f"{time.monotonic() - t0:.1f} s; local baseline")
            doc["objects_verified_local"] = self.verify("src")
            doc["nginx_memory_kib"] = self.memory(lab.state("src", self.cid)["pid"])
            doc["local_start"] = self.measured("src")
            images = os.path.join(a.workdir, "images")
            doc["checkpoint_s"] = round(lab.checkpoint("src", self.cid, images, leave_running=True), 3)
            key = os.path.join(a.workdir, "key")
            if not os.path.exists(key):
                lab.dp("keygen", key)
            ws = None
            for f in a.fractions:
                budget = f"{(100 - f) * ws // 100 // 1024}K" if f else None
                p = self.point(f, images, key, b_dst, budget)
                if f == 0:
                    ws = doc["working_set_bytes"] = p["resident_bytes"]
                p["working_set_remote"] = round(1 - p["resident_bytes"] / ws, 4)
                doc["points"].append(p)
                cl.log(f"remote {f}% of W (measured {p['working_set_remote']:.1%} of W, {p['remote_fraction']:.1%} "
                       f"of lazy memory): {p['result']['req_per_s']:.0f} req/s, p99 {p['result']['p99_us']} us")
                with open(a.json, "w") as fh:
                    json.dump(doc, fh, indent=1)
            cl.log("local baseline again")
            doc["local_end"] = self.measured("src")
            base = (doc["local_start"]["req_per_s"] + doc["local_end"]["req_per_s"]) / 2
            doc["local_drift"] = round(doc["local_end"]["req_per_s"] / doc["local_start"]["req_per_s"] - 1, 4) \
                if doc["local_start"]["req_per_s"] else None
            for p in doc["points"]:
                p["vs_local"] = round(p["result"]["req_per_s"] / base, 3) if base else None
                bp99 = (doc["local_start"]["p99_us"] + doc["local_end"]["p99_us"]) / 2
                p["p99_vs_local"] = round(p["result"]["p99_us"] / bp99, 2) if bp99 else None
        finally:
            lab.close()
        with open(a.json, "w") as fh:
            json.dump(doc, fh, indent=1)
        cl.log(f"wrote {a.json}")


def main():
    """Arguments checked before anything starts (bad ones: exit 2, nothing run)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--distriproc", required=True)
    r.add_argument("--json", required=True)
    r.add_argument("--fractions", default="0,10,30,50,70")
    r.add_argument("--seconds", type=int, default=20)
    r.add_argument("--warmup", type=int, default=20)
    r.add_argument("--objects-mib", type=int, default=256)
    r.add_argument("--connections", type=int, default=4)
    r.add_argument("--workers", type=int, default=0)
    r.add_argument("--prefetch", default="none")
    r.add_argument("--bandwidth", default="1gbit")
    r.add_argument("--lab")
    r.add_argument("--workdir", default="/tmp/distriproc-bench-nginx")
    a = p.parse_args()
    a.fractions = [int(x) for x in a.fractions.split(",")]
    if a.fractions[0] != 0:
        p.error("--fractions must start with 0: that point measures the working set the budgets are taken of")
    if any(f < 0 or f > 95 for f in a.fractions):
        p.error("--fractions are percentages in 0..95")
    if not 1 <= a.seconds <= 600 or not 0 <= a.warmup <= 600:
        p.error("--seconds 1..600, --warmup 0..600")
    if not 1 <= a.objects_mib <= 4096 or not 1 <= a.connections <= 64 or not 0 <= a.workers <= 8:
        p.error("--objects-mib 1..4096, --connections 1..64, --workers 0..8")
    a.workdir = os.path.abspath(a.workdir)
    a.command = "distriproc bench nginx " + " ".join(sys.argv[4:])
    try:
        Bench(a).go()
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        sys.exit(f"distriproc bench nginx: {e}")


if __name__ == "__main__":
    main()
