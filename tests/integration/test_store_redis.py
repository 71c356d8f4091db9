"""Issue 14: a checkpoint's memory in a Redis Cluster (docs/store-redis.md).

The lab runs a real cluster (`distriproc lab cluster up`: redis-server 7, 3
masters + 3 replicas over both lab hosts, TLS + AUTH); `checkpoint --store`
puts memwalk's lazy pages into it and `restore --store` fetches them straight
from it on the destination. memwalk checks every byte of every page against
its expected pattern and generation (VERIFY), so a lost, stale or made-up page
is counted: the tests require 0 errors over every page."""

import json
import os
import re
import signal

import pytest

import util
from util import HOSTS, MEMWALK, distriproc, netns_cmd, run

MIB = 32
PAGES = MIB * 256


def cluster_dir():
    return f"/run/distriproc/lab-{util.LAB}/cluster"


def redis_cli(cl, addr, port, *args, host="src"):
    """redis-cli over TLS with AUTH against one node, from inside host."""
    cp = run(netns_cmd(host, ["redis-cli", "--tls", "--cacert", cl["ca"], "--no-auth-warning", "-a",
                              open(cl["pass"]).read().strip(), "-h", addr, "-p", port, *args]))
    return cp.stdout


def redis_pids():
    out = run(["pgrep", "-x", "redis-server"], check=False).stdout.split()
    return [int(p) for p in out]


def lab_redis_pids():
    """redis-server processes whose network namespace is one of this lab's."""
    mine = {util.netns_inode(h) for h in ("src", "dst") if os.path.exists(f"{util.NETNS_DIR}/{util.LAB}-{h}")}
    pids = []
    for pid in redis_pids():
        try:
            if util.pid_netns_inode(pid) in mine:
                pids.append(pid)
        except FileNotFoundError:
            pass
    return pids


@pytest.fixture
def cluster(lab):
    cp = distriproc("lab", "cluster", "up", timeout=90)
    seed = cp.stdout.strip().splitlines()[-1]
    d = cluster_dir()
    yield {"seed": seed, "dir": d, "ca": f"{d}/ca.crt", "pass": f"{d}/password"}


def store_args(cl, url):
    return ["--store", url, "--store-ca", cl["ca"], "--store-pass-file", cl["pass"]]


def checkpoint_to_store(procs, tmp_path, cl, *memwalk_args):
    """memwalk on src, checkpointed with --store; returns the store summary."""
    pid = util.start_container(procs, "src", [MEMWALK, "--mib", MIB, *memwalk_args], tmp_path / "src.pid")
    util.wait_memwalk(HOSTS["src"], host="src")
    cp = distriproc("checkpoint", "--host", "src", "--pid", pid, "--images", tmp_path / "images", "--json",
                    *store_args(cl, f"rediss://{cl['seed']}"), timeout=120)
    util.wait_gone(pid, timeout=20)
    return json.loads(cp.stdout)["store"]


def verify(host):
    st = util.memwalk_request(HOSTS[host], command="VERIFY", host=host, timeout=120)
    assert st["verify_errors"] == 0 and st["verify_bad_bytes"] == 0, st
    assert st["verify_pages"] == PAGES, st
    return st


@pytest.mark.time_limit(150)
def test_lab_cluster_up_prints_seed_and_down_removes_it(cluster):
    assert cluster["seed"] == "10.250.0.1:7001"
    pids = lab_redis_pids()
    assert len(pids) == 6, pids
    nodes = redis_cli(cluster, "10.250.0.1", 7001, "cluster", "nodes")
    masters = [l for l in nodes.splitlines() if " master " in l or ",master " in l]
    replicas = [l for l in nodes.splitlines() if "slave" in l]
    assert len(masters) == 3 and len(replicas) == 3, nodes
    # a replica is never on the same lab host as its master
    ids = {l.split()[0]: l.split()[1].split(":")[0] for l in nodes.splitlines()}
    for r in replicas:
        assert ids[r.split()[3]] != r.split()[1].split(":")[0], nodes
    # plaintext and a wrong password are refused
    cp = run(netns_cmd("src", ["redis-cli", "-h", "10.250.0.1", "-p", 7001, "ping"]), check=False)
    assert "PONG" not in cp.stdout
    cp = run(netns_cmd("src", ["redis-cli", "--tls", "--cacert", cluster["ca"], "-a", "wrong", "--no-auth-warning",
                               "-h", "10.250.0.1", "-p", 7001, "ping"]), check=False)
    assert "PONG" not in cp.stdout
    distriproc("lab", "cluster", "down")
    assert lab_redis_pids() == [] and not os.path.exists(cluster["dir"])
    # up again, then `lab down` takes it along (the fixture checks nothing else is left)
    cp = distriproc("lab", "cluster", "up", timeout=90)
    assert cp.stdout.strip().splitlines()[-1] == "10.250.0.1:7001"
    assert len(lab_redis_pids()) == 6
    distriproc("lab", "down", timeout=60)
    assert lab_redis_pids() == [] and not os.path.exists(cluster["dir"])


@pytest.mark.time_limit(200)
def test_store_checkpoint_and_restore_exact(procs, tmp_path, cluster):
    st = checkpoint_to_store(procs, tmp_path, cluster)
    assert st["pages"] >= PAGES and st["masters"] == 3
    assert st["url"] == f"rediss://{cluster['seed']}/{st['id']}"
    # the checkpoint's identity is in every key, extents are on every master
    for addr, port in (("10.250.0.1", 7001), ("10.250.0.1", 7002), ("10.250.0.2", 7004)):
        if "master" not in redis_cli(cluster, addr, port, "role").splitlines()[0]:
            continue
        keys = redis_cli(cluster, addr, port, "--scan").split()
        assert keys and all(st["id"] in k for k in keys), keys[:5]
    res = util.restore_json(procs, tmp_path / "w", *store_args(cluster, st["url"]))
    assert res["source"] == st["url"]
    verify("dst")
    stats = util.lazy_stats(tmp_path / "w")
    assert stats["source"].startswith("store ") and stats["source_healthy"]
    # every page came from the store: on a fault or prefetched (restore's
    # default prefetch, streams, brings the walk's pages ahead of it)
    assert stats["total"]["pages_fetched"] + stats["total"]["pages_prefetched"] >= PAGES


@pytest.mark.time_limit(150)
def test_store_refusals_are_clear(procs, tmp_path, cluster):
    st = checkpoint_to_store(procs, tmp_path, cluster)
    bad = tmp_path / "badpass"
    bad.write_text("not-the-password\n")
    cp = distriproc("restore", "--workdir", tmp_path / "w1", "--host", "dst", "--store", st["url"], "--store-ca",
                    cluster["ca"], "--store-pass-file", bad, check=False)
    assert cp.returncode != 0 and "AUTH refused" in cp.stderr, cp.stderr
    cp = distriproc("restore", "--workdir", tmp_path / "w2", "--host", "dst", "--store", st["url"], check=False)
    assert cp.returncode != 0 and "needs the CA" in cp.stderr, cp.stderr
    # plaintext to a TLS node: the node closes; the error names it
    plain = "redis://" + st["url"][len("rediss://"):]
    cp = distriproc("restore", "--workdir", tmp_path / "w2", "--host", "dst", "--store", plain, "--store-pass-file",
                    cluster["pass"], check=False)
    assert cp.returncode != 0 and "10.250.0.1:7001" in cp.stderr, cp.stderr
    other = st["url"][:-32] + "0" * 32
    cp = distriproc("restore", "--workdir", tmp_path / "w3", "--host", "dst", *store_args(cluster, other),
                    check=False)
    assert cp.returncode != 0 and "is not in the store" in cp.stderr, cp.stderr
    # a held writer needs --take-over; with it, the older holder is fenced
    res = util.restore_json(procs, tmp_path / "w4", *store_args(cluster, st["url"]), "--store-writer", "one")
    cp = distriproc("restore", "--workdir", tmp_path / "w5", "--host", "src", *store_args(cluster, st["url"]),
                    "--store-writer", "one", check=False)
    assert cp.returncode != 0 and "--take-over" in cp.stderr, cp.stderr
    verify("dst")
    assert res["pid"]


@pytest.mark.time_limit(200)
def test_store_master_killed_restored_process_keeps_running(procs, tmp_path, cluster):
    st = checkpoint_to_store(procs, tmp_path, cluster)
    res = util.restore_json(procs, tmp_path / "w", *store_args(cluster, st["url"]))
    # kill the master of 0-5460 (node 7001 at first) before most pages are read
    nodes = redis_cli(cluster, "10.250.0.1", 7001, "cluster", "nodes")
    victim = next(l.split()[1].split("@")[0] for l in nodes.splitlines() if "master" in l and " 0-" in l)
    port = victim.split(":")[1]
    pid = int(open(f"{cluster['dir']}/node-{port}/redis.pid").read())
    os.kill(pid, signal.SIGKILL)
    util.wait_gone(pid)
    # every page still verifies: the replica took the slots over
    verify("dst")
    other = "10.250.0.2" if victim.startswith("10.250.0.1") else "10.250.0.1"
    other_port = 7004 if other == "10.250.0.2" else 7001
    nodes = redis_cli(cluster, other, other_port, "cluster", "nodes", host="dst")
    assert any("master" in l and " 0-" in l and "fail" not in l for l in nodes.splitlines()), nodes
    assert util.alive(res["pid"])
    stats = util.lazy_stats(tmp_path / "w")
    assert stats["source_healthy"] and stats["total"]["pages_fetched"] + stats["total"]["pages_prefetched"] >= PAGES


@pytest.mark.time_limit(200)
def test_store_source_page_server_killed_restored_process_unaffected(procs, tmp_path, cluster):
    """The source host's page server serves the same checkpoint; it dies while
    a copy restored from the store runs with most of its pages still remote:
    the copy never asked it for anything and goes on, every page exact."""
    st = checkpoint_to_store(procs, tmp_path, cluster, "--write-ratio", "0.2")
    key = tmp_path / "key"
    distriproc("keygen", key)
    util.serve_images(procs, tmp_path / "images", key, 7310)
    # the page server answers (from dst) before it dies
    assert json.loads(run(netns_cmd("dst", [util.DISTRIPROC, "query", "--source", f"{HOSTS['src']}:7310", "--key",
                                            key, "task-map"])).stdout)
    res = util.restore_json(procs, tmp_path / "w", *store_args(cluster, st["url"]))
    listener = run(netns_cmd("src", ["ss", "-ltnpH", "sport = :7310"])).stdout
    (server,) = {int(p) for p in re.findall(r"pid=(\d+)", listener)}
    os.kill(server, signal.SIGKILL)
    util.wait_gone(server)
    assert run(netns_cmd("src", ["ss", "-ltnH", "sport = :7310"])).stdout.strip() == ""
    writes = util.memwalk_request(HOSTS["dst"], host="dst")["writes"]
    verify("dst")   # every page, most of them fetched from the store after the kill
    assert util.memwalk_request(HOSTS["dst"], host="dst")["writes"] > writes
    assert util.alive(res["pid"])
    stats = util.lazy_stats(tmp_path / "w")
    # fetched on a fault or prefetched (restore's default prefetch is streams)
    tot = stats["total"]
    assert stats["source_healthy"] and tot["pages_fetched"] + tot["pages_prefetched"] >= PAGES, tot


@pytest.mark.time_limit(240)
def test_store_fan_out_two_destinations(procs, tmp_path, cluster):
    st = checkpoint_to_store(procs, tmp_path, cluster, "--write-ratio", "0.2")
    a = util.restore_json(procs, tmp_path / "wd", *store_args(cluster, st["url"]))
    cp = distriproc("restore", "--workdir", tmp_path / "ws", "--host", "src", *store_args(cluster, st["url"]),
                    "--json", timeout=150)
    b = json.loads(cp.stdout)
    procs.track(b["daemon_pid"])
    procs.track(b["pid"])
    # each copy runs and writes on its own; both see exactly their own memory
    verify("dst")
    verify("src")
    assert util.memwalk_request(HOSTS["dst"], host="dst")["writes"] > 0
    assert util.memwalk_request(HOSTS["src"], host="src")["writes"] > 0
    assert a["pid"] and b["pid"]


# ---- write-back through the store: the fence and WAIT (tests/helpers/storedrv) ----

STOREDRV = os.path.join(util.HELPERS, "storedrv")
TEST_ID = "0123456789abcdef0123456789abcdef"


def storedrv(cl, *args, check=True, timeout_ms=30000):
    # a seed on each host: a new client finds the cluster with one node gone
    url = f"rediss://{cl['seed']},10.250.0.2:7004/{TEST_ID}"
    env = dict(os.environ, STOREDRV_TIMEOUT_MS=str(timeout_ms))
    return run(netns_cmd("dst", [STOREDRV, url, cl["ca"], cl["pass"], *args]), timeout=90, check=check, env=env)


@pytest.mark.time_limit(120)
def test_store_fence_refuses_the_older_writer(cluster):
    e1 = json.loads(storedrv(cluster, "lease", "w").stdout)["epoch"]
    assert json.loads(storedrv(cluster, "put", "w", e1, 42, "0x7f0000000000", 64, 1).stdout)["acked"]
    # the same writer again: refused while held, unless taken over
    cp = storedrv(cluster, "lease", "w", check=False)
    assert cp.returncode == 1 and "--take-over" in cp.stderr, cp.stderr
    e2 = json.loads(storedrv(cluster, "lease", "w", "take").stdout)["epoch"]
    assert e2 == e1 + 1
    # the older holder's writes are refused in every group from now on
    cp = storedrv(cluster, "put", "w", e1, 42, "0x7f0000000000", 64, 2, check=False)
    assert cp.returncode == 3 and "DPFENCED" in cp.stderr, cp.stderr
    new = json.loads(storedrv(cluster, "put", "w", e2, 42, "0x7f0000000000", 64, 3).stdout)["sha256"]
    assert json.loads(storedrv(cluster, "get", "w", 42, "0x7f0000000000", 64).stdout)["sha256"] == new
    # another writer (another destination) has its own lease and pages
    f1 = json.loads(storedrv(cluster, "lease", "other").stdout)["epoch"]
    assert f1 == 1
    cp = storedrv(cluster, "get", "other", 42, "0x7f0000000000", 64, check=False)
    assert cp.returncode == 1 and "missing" in cp.stderr


@pytest.mark.time_limit(120)
def test_store_lease_epoch_stops_at_its_exact_bound(cluster):
    """Lua numbers are doubles (exact to 2^53) and Redis's Lua prints them with
    %.14g: the lease grants epochs up to 10^14 - 1, exactly, and refuses the
    next one with the lease unchanged; the fence and the writes hold at it."""
    key = f"dp:{{{TEST_ID}}}:lease:edge"
    top = 99999999999999

    def lease_value():
        return redis_cli(cluster, "10.250.0.1", 7001, "-c", "get", key).strip()
    redis_cli(cluster, "10.250.0.1", 7001, "-c", "set", key, f"{top - 1} gone-holder")
    e = json.loads(storedrv(cluster, "lease", "edge", "take").stdout)["epoch"]
    assert e == top and lease_value().startswith(f"{top} "), lease_value()
    assert json.loads(storedrv(cluster, "put", "edge", e, 9, "0x7f0000000000", 16, 5).stdout)["acked"]
    cp = storedrv(cluster, "put", "edge", e - 1, 9, "0x7f0000000000", 16, 6, check=False)
    assert cp.returncode == 3 and "DPFENCED" in cp.stderr, cp.stderr
    before = lease_value()
    cp = storedrv(cluster, "lease", "edge", "take", check=False)
    assert cp.returncode == 1 and "every lease epoch" in cp.stderr and "--store-writer" in cp.stderr, cp.stderr
    assert lease_value() == before
    # a lease beyond the bound (not written by us) does not decode
    redis_cli(cluster, "10.250.0.1", 7001, "-c", "set", key, "9007199254740993 someone")
    cp = storedrv(cluster, "lease", "edge", "take", check=False)
    assert cp.returncode == 1 and "at most 14 digits" in cp.stderr, cp.stderr


@pytest.mark.time_limit(150)
def test_store_writes_acknowledged_with_wait_survive_a_master_kill(cluster):
    e = json.loads(storedrv(cluster, "lease", "w").stdout)["epoch"]
    # 1024 pages over 64 extents: every master holds some of them
    want = json.loads(storedrv(cluster, "put", "w", e, 7, "0x7f0000000000", 1024, 11).stdout)
    assert want["acked"]
    nodes = redis_cli(cluster, "10.250.0.1", 7001, "cluster", "nodes")
    victim = next(l.split()[1].split("@")[0] for l in nodes.splitlines() if "master" in l and " 0-" in l)
    pid = int(open(f"{cluster['dir']}/node-{victim.split(':')[1]}/redis.pid").read())
    os.kill(pid, signal.SIGKILL)
    util.wait_gone(pid)
    # the replica takes over; every acknowledged page is there, byte for byte
    got = json.loads(storedrv(cluster, "get", "w", 7, "0x7f0000000000", 1024).stdout)
    assert got["sha256"] == want["sha256"]
    # and writing goes on against the new master (WAIT: the old master is gone,
    # so the new one has no replica: the write is refused as unacknowledged,
    # never reported durable)
    cp = storedrv(cluster, "put", "w", e, 7, "0x7f0000000000", 16, 12, check=False, timeout_ms=5000)
    assert (cp.returncode == 0 and json.loads(cp.stdout)["acked"]) or "acknowledged" in cp.stderr, cp.stderr


@pytest.mark.time_limit(200)
def test_store_hot_set_from_classify_and_trace(procs, tmp_path, cluster):
    pid = util.start_container(procs, "src", [MEMWALK, "--mib", MIB, "--pattern", "zipf:1.2"], tmp_path / "src.pid")
    util.wait_memwalk(HOSTS["src"], host="src")
    cp = distriproc("checkpoint", "--host", "src", "--pid", pid, "--images", tmp_path / "images", "--json",
                    "--classify", "1", *store_args(cluster, f"rediss://{cluster['seed']}"), timeout=120)
    util.wait_gone(pid, timeout=20)
    st = json.loads(cp.stdout)["store"]
    assert st["hotset_bytes"] > 0
    res = util.restore_json(procs, tmp_path / "w", *store_args(cluster, st["url"]), "--hotset", "classify")
    assert res["hotset_pages"] > 0 and res["hotset_source"] != "none", res
    verify("dst")
    # no fault trace in the store yet: refused, naming what is missing
    cp = distriproc("restore", "--workdir", tmp_path / "w2", "--host", "dst", *store_args(cluster, st["url"]),
                    "--hotset", "trace", check=False)
    assert cp.returncode == 1 and "no fault trace" in cp.stderr, cp.stderr
    stop_copy(res)
    # a copy records its first-touch trace into the store ...
    rec = util.restore_json(procs, tmp_path / "w3", *store_args(cluster, st["url"]), "--record-trace", "1")
    key = f"dp:{{{st['id']}}}:trace"
    util.wait_until(lambda: redis_cli(cluster, "10.250.0.1", 7001, "-c", "exists", key).strip() == "1", 60,
                    "the fault trace in the store")
    stop_copy(rec)
    # ... which the next restore replays (checked against the checkpoint)
    res = util.restore_json(procs, tmp_path / "w4", *store_args(cluster, st["url"]), "--hotset", "trace")
    assert res["hotset_source"] == "trace" and res["hotset_pages"] > 0, res
    verify("dst")


def stop_copy(res):
    """Kills a restored copy (it holds dst's port) and waits for its daemon."""
    os.kill(res["pid"], signal.SIGKILL)
    util.wait_gone(res["pid"], timeout=20)
    util.wait_gone(res["daemon_pid"], timeout=30)


# A fake node: answers every connection with one fixed reply, then closes.
FAKE_NODE = (
    "import socket,sys\n"
    "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(8)\n"
    "reply=bytes.fromhex(sys.argv[3])\n"
    "while True:\n"
    "    c,_=s.accept(); c.recv(65536); c.sendall(reply); c.close()\n"
)


@pytest.mark.time_limit(120)
def test_store_bad_replies_are_refused_clearly(procs, tmp_path, lab):
    cases = [
        (b"*1\r\n*3\r\n:0\r\n:99999\r\n*2\r\n$9\r\n127.0.0.1\r\n:1\r\n", "CLUSTER SLOTS: entry 0"),
        (b"*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$9\r\nlocalhost\r\n:1\r\n", "is not IPv4"),
        (b"?garbage\r\n", "bad reply"),
        (b"*2147483647\r\n", "bad reply"),
        (b"-ERR This instance has cluster support disabled\r\n", "cluster support disabled"),
    ]
    for k, (reply, want) in enumerate(cases):
        port = 7990 + k
        procs.spawn(netns_cmd("dst", [util.PYTHON, "-c", FAKE_NODE, HOSTS["dst"], port, reply.hex()]))
        util.wait_until(lambda: run(netns_cmd("dst", ["ss", "-ltnH", f"sport = :{port}"])).stdout.strip(), 20,
                        "the fake node to listen")
        cp = distriproc("restore", "--workdir", tmp_path / f"w{k}", "--host", "dst", "--store",
                        f"redis://{HOSTS['dst']}:{port}/{'0' * 32}", check=False)
        assert cp.returncode == 1 and want in cp.stderr, (reply, cp.stderr)


# ---- the daemon's write-back to the store under a budget (issue 14 item 2 and 4) ----

def kill_master_of_slot0(cluster):
    """SIGKILLs the master serving slot 0; returns its port."""
    nodes = redis_cli(cluster, "10.250.0.2", 7004, "cluster", "nodes", host="dst")
    victim = next(l.split()[1].split("@")[0] for l in nodes.splitlines()
                  if "master" in l and "fail" not in l and " 0-" in l)
    port = victim.split(":")[1]
    pid = int(open(f"{cluster['dir']}/node-{port}/redis.pid").read())
    os.kill(pid, signal.SIGKILL)
    util.wait_gone(pid)
    return int(port)


@pytest.mark.time_limit(360)
def test_store_budget_writes_survive_a_master_kill(procs, tmp_path, cluster):
    st = checkpoint_to_store(procs, tmp_path, cluster, "--write-ratio", "0.3", "--seed", "5")
    wd = tmp_path / "w"
    util.restore_json(procs, wd, *store_args(cluster, st["url"]), "--budget", "8M")

    def writebacks():
        return util.lazy_stats(wd)["budget"]["writebacks"]
    util.wait_until(lambda: writebacks() > 100, 90, "dirty pages written back to the store")
    # a master dies while the restored process runs and writes under the budget
    port = kill_master_of_slot0(cluster)
    # its replica takes over (only then may the old node come back: without
    # persistence it returns empty, and as a master it would empty its slots);
    # it comes back as the new master's replica (WAIT needs a replica again)
    def promoted():
        nodes = redis_cli(cluster, "10.250.0.2", 7004 if port != 7004 else 7005, "cluster", "nodes", host="dst")
        return any("master" in l and "fail" not in l and " 0-" in l and f":{port}@" not in l
                   for l in nodes.splitlines())
    util.wait_until(promoted, 60, "the replica of the killed master to be promoted")
    host = "src" if port <= 7003 else "dst"
    run(netns_cmd(host, ["redis-server", f"{cluster['dir']}/node-{port}/redis.conf"]))
    # (the daemon answers stats between its store batches; a batch may wait
    # through the failover, so every read of the stats is polled)
    before = util.wait_until(writebacks, 60, "the daemon's stats")
    util.wait_until(lambda: writebacks() > before + 100, 120, "write-backs after the failover")
    # every page, evicted and fetched back or resident, is exactly what memwalk wrote
    v = util.memwalk_request(HOSTS["dst"], command="VERIFY", host="dst", timeout=300)
    assert v["verify_errors"] == 0 and v["verify_bad_bytes"] == 0 and v["verify_pages"] == PAGES, v
    m = util.memwalk_request(HOSTS["dst"], host="dst")
    assert m["errors"] == 0 and m["writes"] > 0, m
    b = util.wait_until(lambda: util.lazy_stats(wd)["budget"], 60, "the daemon's stats")
    assert b["evictions"] > PAGES and b["writebacks"] > 200, b


# ---- fan-out: every copy in hosts of its own (bench fanout, lib/lab_fanout.h) ----

@pytest.mark.time_limit(300)
def test_store_fan_out_copies_in_their_own_hosts_exact_and_fenced_apart(lab, tmp_path):
    """Three destinations restore one checkpoint from the store at once, each in
    its own network namespace (LAB-foI) and pid namespace, each writing its own
    pages and, under --budget, writing them back to the store under its own
    writer's fence and reading them back from there (a one-page victim buffer): every
    copy reads back exactly its own memory (VERIFY over
    every page), three distinct writers hold fences, and the destination hosts,
    dst's forwarding and the cluster are gone afterwards."""
    out = tmp_path / "fanout.json"
    distriproc("bench", "fanout", "--n", "3", "--mib", "8", "--write-ratio", "0.3", "--budget", "4M",
               "--victim-buffer", "4K", "--memwalk", MEMWALK, "--json", out, timeout=280)
    (r,) = json.loads(out.read_text())["runs"]
    assert r["n"] == 3 and r["exact"] == 3 and r["writers_fenced"] == 3, r
    for d in r["destinations"]:
        assert d["ok"] and d["error"] is None, d
        assert d["verify_pages"] == 8 * 256 and d["verify_errors"] == 0 and d["verify_bad_bytes"] == 0, d
        # written back, evicted, then read back from the store (one-page victim buffer)
        assert d["walk_errors"] == 0 and d["writes"] > 0 and d["writebacks"] > 0 and d["refaults"] > 0, d
        assert 0 < d["ttfr_s"] <= d["verified_s"], d
    assert r["pages"] == 3 * 8 * 256 and r["pages_per_s"] > 0
    assert not [n for n in os.listdir(util.NETNS_DIR) if n.startswith(f"{util.LAB}-fo")]
    assert run(netns_cmd("dst", ["sysctl", "-n", "net.ipv4.ip_forward"])).stdout.strip() == "0"
    assert lab_redis_pids() == []
