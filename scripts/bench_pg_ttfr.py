#!/usr/bin/python3
"""bench pg-ttfr: time to the first correct query of PostgreSQL 15 in a real
runc container migrated from lab host src to dst (issue 10).

Run by `distriproc bench pg-ttfr` (src/bench_containers.c), as root, with the
rootfs built (make rootfs). Once: a data directory is initialised and a table
of --table-mib loaded (the template); the probe's expected answer is what the
source gives. Then --runs times, each run with every system in turn (order
rotated per run, so load from elsewhere hits all alike), each from a fresh
copy of the template:

  start PostgreSQL (postmaster as the container's postgres, in a user
  namespace) on src, pg_prewarm the table and its index into shared_buffers,
  start the probe (waiting) in the namespace of the host to be queried, then
  local       the probe against the running source: the floor every other
              figure includes;
  distriproc  distriproc checkpoint --runc (its rootfs manifest, then runc
              checkpoint: freeze .. dump), then distriproc serve on src and
              distriproc restore --runc-bundle on dst (skeleton pulled over
              the lab link, rootfs check, runc restore --lazy-pages with
              DistriProc's daemon, in a uffd-window);
  runc_full   runc checkpoint, the images copied over the lab link (a tar
              stream over one TCP connection, so the link's cap applies),
              runc restore.
  The probe starts its attempts when the dump is done (the start of the
  restore); "from_restore" ends at its first correct answer, "from_freeze"
  starts when runc checkpoint starts.

The probe (one for all systems, every --interval-ms): a query over the wire
protocol, "md5 of 1000 rows from the middle of the table", compared with the
source's answer. "from_freeze" of distriproc includes the rootfs manifest
that `checkpoint --runc` takes before the freeze (conservative).

What is lazy: only private anonymous memory (CRIU's rule). shared_buffers is
shared memory, which CRIU restores eagerly in both systems: the skeleton
DistriProc pulls carries it.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_containers_lab as cl  # noqa: E402

PG_BIN = "/usr/lib/postgresql/15/bin"
PGDATA = "/var/lib/postgresql"     # postgres's home in the rootfs: the bind-mount point exists
ROWS_PER_MIB = 4400                # rows of ~230 bytes (heap tuple + 192-byte text)
SERVE_PORT = 7342
COPY_PORT = 7343
SYSTEMS = ("local", "distriproc", "runc_full")


class Bench:
    def __init__(self, a):
        """Names derived from the lab; the probe's query over 1000 rows from the middle of the table."""
        self.a = a
        self.lab = cl.Lab(a.distriproc, a.lab or os.environ.get("DISTRIPROC_LAB", "dp"), a.workdir)
        self.cid = f"{self.lab.lab}-bpg"
        self.addr, self.ip = "10.251.8.2/30", "10.251.8.2"
        self.ifname = f"{self.lab.lab[:4]}bpg"
        self.rows = max(1000, a.table_mib * ROWS_PER_MIB)
        mid = self.rows // 2
        self.sql = (f"select md5(string_agg(id || ':' || v, ',' order by id)) from t "
                    f"where id between {mid} and {mid + 999}")
        self.shared_buffers = a.table_mib + 56

    # ---- PostgreSQL --------------------------------------------------------------

    def pg_args(self, init):
        """The container's command: initdb only for the template, then postgres with shared_buffers."""
        init_cmd = (f"{PG_BIN}/initdb -D {PGDATA} -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 "
                    f">/tmp/initdb.log 2>&1 && echo 'host all all 0.0.0.0/0 trust' >> {PGDATA}/pg_hba.conf && "
                    if init else "")
        return ["/bin/sh", "-c", f"{init_cmd}exec {PG_BIN}/postgres -D {PGDATA} -c listen_addresses=* "
                f"-c unix_socket_directories=/tmp -c shared_buffers={self.shared_buffers}MB -c huge_pages=off "
                f"-c cluster_name={self.cid} -c max_wal_size=1GB"]

    def wait_pg(self, host, timeout=180):
        """PostgreSQL answers 'select 1' (bounded)."""
        probe = cl.PgProbe(self.lab, host, self.ip, "select 1", "1", 100, timeout)
        probe.go()
        probe.result()

    def template(self, pg):
        """Initialises the data directory and loads the table once; returns it."""
        tmpl = self.lab.dir("pg-template", owner=pg, mode=0o700)
        shutil.rmtree(tmpl)
        tmpl = self.lab.dir("pg-template", owner=pg, mode=0o700)
        b = self.lab.bundle(self.cid, "src", self.pg_args(init=True), pg, [(tmpl, PGDATA, False)], self.addr,
                            self.ifname)
        self.lab.start("src", self.cid, b)
        try:
            self.wait_pg("src")
            cl.log(f"loading {self.rows} rows (~{self.a.table_mib} MiB)")
            cl.pg_in(self.lab, "src", self.ip,
                     "create extension pg_prewarm; create table t (id int primary key, v text); "
                     f"insert into t select i, repeat(md5(i::text), 6) from generate_series(1, {self.rows}) i; "
                     "checkpoint")
            size = int(cl.pg_in(self.lab, "src", self.ip, "select pg_total_relation_size('t')"))
            expect = cl.pg_in(self.lab, "src", self.ip, self.sql)
        finally:
            # A fast shutdown (SIGINT) leaves a clean data directory.
            self.lab.runc("src", "kill", self.cid, "INT", check=False)
            end = time.monotonic() + 120
            while time.monotonic() < end and any(c["status"] == "running" for c in self.lab.list("src")):
                time.sleep(0.2)
            self.lab.kill("src", self.cid)
        return tmpl, size, expect

    def fresh_source(self, tmpl, data, bundle):
        """A running, prewarmed source from a copy of the template."""
        shutil.rmtree(data, ignore_errors=True)
        subprocess.run(["cp", "-a", tmpl, data], check=True)
        self.lab.start("src", self.cid, bundle)
        self.wait_pg("src")
        blocks = cl.pg_in(self.lab, "src", self.ip, "select pg_prewarm('t') + pg_prewarm('t_pkey')")
        return int(blocks)

    # ---- one measurement ---------------------------------------------------------

    def probe(self, host):
        """The one probe every system gets: same query, expected answer and cadence."""
        return cl.PgProbe(self.lab, host, self.ip, self.sql, self.expect, self.a.interval_ms, 120)

    def local(self):
        """The floor: the probe against the running source, no migration."""
        pr = self.probe("src")
        pr.go()
        r = pr.result()
        t = r["t_ok"] - r["t_go"]
        self.lab.kill("src", self.cid)
        return {"from_restore_s": t, "from_freeze_s": t, "attempts": r["attempts"]}

    def distriproc(self, run, b_dst):
        """DistriProc's own commands: checkpoint --runc, serve, restore --runc-bundle."""
        images = os.path.join(self.a.workdir, "images")
        pr = self.probe("dst")
        t_freeze = time.monotonic()
        dump_s = self.lab.checkpoint_dp("src", self.cid, images)
        t_restore = time.monotonic()
        pr.go()
        srv, listen = self.lab.serve(images, self.key, SERVE_PORT, f"pg-{run}")
        wd = os.path.join(self.a.workdir, "lazy")
        daemon = None
        try:
            pid, daemon, restore_s = self.lab.restore_dp("dst", self.cid, self.b_dst, listen, self.key, wd)
            r = pr.result()
            st = self.lab.lazy_stats(wd)["total"]
            skeleton = cl.dir_bytes(os.path.join(wd, "images"), allocated=True)
        finally:
            self.lab.kill("dst", self.cid, daemon)
            self.lab.stop(srv)
        return {"from_restore_s": r["t_ok"] - t_restore, "from_freeze_s": r["t_ok"] - t_freeze,
                "attempts": r["attempts"], "dump_s": dump_s, "restore_cmd_s": restore_s,
                "images_bytes": cl.dir_bytes(images), "skeleton_bytes": skeleton,
                "pages_fetched_at_end": st["pages_fetched"], "lazy_bytes": st["resident_bytes"] + st["remote_bytes"],
                "bytes_moved": skeleton + st["pages_fetched"] * 4096}

    def runc_full(self, run, b_dst):
        """runc checkpoint, the images copied over the lab link, runc restore."""
        images = os.path.join(self.a.workdir, "images")
        copy = os.path.join(self.a.workdir, "images-dst")
        pr = self.probe("dst")
        t_freeze = time.monotonic()
        dump_s = self.lab.checkpoint("src", self.cid, images)
        t_restore = time.monotonic()
        pr.go()
        try:
            sent = self.lab.copy_over_link(images, copy, COPY_PORT)
            t_copied = time.monotonic()
            self.lab.restore_full("dst", self.cid, self.b_dst, copy)
            t_restored = time.monotonic()
            r = pr.result()
        finally:
            self.lab.kill("dst", self.cid)
        return {"from_restore_s": r["t_ok"] - t_restore, "from_freeze_s": r["t_ok"] - t_freeze,
                "attempts": r["attempts"], "dump_s": dump_s, "transfer_s": t_copied - t_restore,
                "runc_restore_s": t_restored - t_copied, "images_bytes": cl.dir_bytes(images),
                "bytes_moved": sent}

    # ---- the run -----------------------------------------------------------------

    def go(self):
        """Template once, then every system per run from a fresh copy, order rotated; JSON after each run."""
        a, lab = self.a, self.lab
        doc = {"benchmark": "pg-ttfr", "schema": 1, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "command": a.command, "machine": cl.machine(), "bandwidth": a.bandwidth, "runs": a.runs,
               "interval_ms": a.interval_ms, "table_mib": a.table_mib, "rows": self.rows,
               "shared_buffers_mib": self.shared_buffers, "probe": self.sql,
               "distriproc_commands": "checkpoint --runc, serve, restore --runc-bundle",
               "what_is_lazy": ("private anonymous memory of the postmaster and its background processes; "
                                "shared_buffers (shared memory) is restored eagerly by CRIU in both systems"),
               "systems": {s: {"runs": []} for s in SYSTEMS}}
        try:
            lab.up(a.bandwidth)
            pg = lab.ids_of("postgres")
            tmpl, doc["table_bytes"], self.expect = self.template(pg)
            doc["expected"] = self.expect
            data = os.path.join(a.workdir, "pg-data")
            binds = [(data, PGDATA, False)]
            b_src = lab.bundle(self.cid, "src", self.pg_args(init=False), pg, binds, self.addr, self.ifname)
            self.b_dst = lab.bundle(self.cid, "dst", self.pg_args(init=False), pg, binds, self.addr, self.ifname)
            self.key = os.path.join(a.workdir, "key")
            if not os.path.exists(self.key):
                lab.dp("keygen", self.key)
            for run in range(a.runs):
                order = SYSTEMS[run % 3:] + SYSTEMS[:run % 3]
                for name in order:
                    blocks = self.fresh_source(tmpl, data, b_src)
                    r = getattr(self, name)(run, self.b_dst) if name != "local" else self.local()
                    r = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
                    r["run"], r["prewarmed_blocks"] = run, blocks
                    doc["systems"][name]["runs"].append(r)
                    cl.log(f"run {run} {name}: {r['from_restore_s']:.3f} s from restore, "
                           f"{r['from_freeze_s']:.3f} s from freeze")
                with open(a.json, "w") as fh:
                    json.dump(doc, fh, indent=1)
            shutil.rmtree(data, ignore_errors=True)
        finally:
            lab.close()
        for s in doc["systems"].values():
            rs = s["runs"]
            s["n"] = len(rs)
            for k in ("from_restore_s", "from_freeze_s", "bytes_moved"):
                if rs and all(k in r for r in rs):
                    s[k] = cl.stats3([r[k] for r in rs])
        full = doc["systems"]["runc_full"].get("from_restore_s")
        for s in doc["systems"].values():
            if full and "from_restore_s" in s:
                s["vs_runc_full_from_restore"] = round(s["from_restore_s"]["median"] / full["median"], 3)
                s["vs_runc_full_from_freeze"] = round(s["from_freeze_s"]["median"] /
                                                      doc["systems"]["runc_full"]["from_freeze_s"]["median"], 3)
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
    r.add_argument("--runs", type=int, default=3)
    r.add_argument("--table-mib", type=int, default=200)
    r.add_argument("--interval-ms", type=float, default=5)
    r.add_argument("--bandwidth", default="1gbit")
    r.add_argument("--lab")
    r.add_argument("--workdir", default="/tmp/distriproc-bench-pg-ttfr")
    a = p.parse_args()
    if not 1 <= a.runs <= 20 or not 1 <= a.table_mib <= 4096 or not 1 <= a.interval_ms <= 1000:
        p.error("--runs 1..20, --table-mib 1..4096, --interval-ms 1..1000")
    a.workdir = os.path.abspath(a.workdir)
    a.command = "distriproc bench pg-ttfr " + " ".join(sys.argv[4:])
    try:
        Bench(a).go()
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        sys.exit(f"distriproc bench pg-ttfr: {e}")


if __name__ == "__main__":
    main()
