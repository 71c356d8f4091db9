"""Lazy restore end to end with real CRIU: a workload in a `src` container is
checkpointed, then `distriproc restore` brings it back in `dst` (another
network namespace, a new pid namespace) with `criu restore --lazy-pages`
while our lazy-pages daemon serves every page on its first touch: from the
images directly (--images, the local floor) or from the page server.

Workloads verify every byte they read: memwalk (threads, writes), forkmem
(fork with children and grandchildren, MADV_DONTNEED, mremap)."""

import hashlib
import json
import os
import signal
import subprocess

import pytest

import util

FORKMEM = os.path.join(util.BUILD, "forkmem")
FORKMEM_PORT = 7071
SERVE_PORT = 7300

forkmem = util.forkmem_request
checkpoint = util.checkpoint_container
stats = util.lazy_stats

def restore(procs, workdir, *source_args, prefetch="none"):
    res = util.restore_json(procs, workdir, *source_args, "--prefetch", prefetch)
    assert res["pid"] > 0 and res["restore_s"] > 0, res
    assert util.pid_netns_inode(res["pid"]) == util.netns_inode("dst")
    return res


def checkpoint_memwalk(procs, tmp_path, *args, writes=2000):
    """memwalk ARGS in a src container, checkpointed once it has written."""
    return checkpoint(
        procs, tmp_path, [util.MEMWALK, *args],
        lambda: util.wait_until(
            lambda: util.memwalk_request(util.HOSTS["src"], host="src")["writes"] > writes,
            60, f"memwalk to do {writes} writes"))


def finish(res, workdir):
    """Kills the restored tree; the daemon must notice and exit by itself."""
    os.kill(res["pid"], signal.SIGKILL)
    util.wait_gone(res["daemon_pid"], timeout=15)
    final = json.loads((workdir / "stats-final.json").read_text())
    assert final["tasks_alive"] == 0, final
    return final


@pytest.mark.time_limit(300)
def test_memwalk_lazy_restore_local_images(lab, procs, criu, tmp_path):
    images = checkpoint_memwalk(procs, tmp_path, "--mib", "64", "--threads", "2", "--write-ratio", "0.3",
                                "--seed", "11", writes=20000)
    workdir = tmp_path / "wd"
    res = restore(procs, workdir, "--images", images)

    first = util.memwalk_request(util.HOSTS["dst"], host="dst")
    assert first["errors"] == 0 and first["bad_bytes"] == 0, first
    later = util.wait_until(
        lambda: (lambda s: s if s["writes"] > first["writes"] + 10000 else None)(
            util.memwalk_request(util.HOSTS["dst"], host="dst")),
        30, "memwalk to keep writing after the lazy restore")
    assert later["errors"] == 0, later
    v = util.memwalk_request(util.HOSTS["dst"], command="VERIFY", host="dst")
    assert v["verify_pages"] == 64 * 256 and v["verify_errors"] == 0, v

    s = stats(workdir)
    tot = s["total"]
    # memwalk's 64 MiB came in page by page through faults, none from a copy-ahead
    assert tot["faults_remote"] >= 64 * 256 * 0.9 and tot["pages_fetched"] >= 64 * 256 * 0.9, tot
    assert tot["pages_background"] == 0 and tot["pages_prefetched"] == 0, tot
    assert tot["latency"]["count"] > 0 and tot["latency"]["p99_us"] >= tot["latency"]["p50_us"] > 0, tot
    assert s["tasks"][0]["pid"] == 1, s["tasks"]
    final = finish(res, workdir)
    assert final["total"]["faults"] >= tot["faults"]


@pytest.mark.time_limit(300)
def test_a_stack_pointer_on_a_page_boundary_does_not_make_the_dump_eager(lab, procs, criu, tmp_path):
    """CRIU's is_stack() (criu/mem.c) compares the low bits of each thread's
    stack pointer instead of its page: when one sits exactly on a page
    boundary (the main thread's, by chance, in 1 dump of 256) every page of
    the dump is written non-lazy and the restore copies it all up front, so
    the daemon never serves a fault. memwalk --aligned-sp parks a thread so.
    `distriproc checkpoint` marks the lazy memory lazy again (lib/lazyfix.h):
    every page of memwalk's area still comes through the daemon."""
    images = checkpoint_memwalk(procs, tmp_path, "--mib", "16", "--threads", "2", "--write-ratio", "0.3",
                                "--seed", "17", "--aligned-sp")
    workdir = tmp_path / "wd"
    res = restore(procs, workdir, "--images", images)
    v = util.memwalk_request(util.HOSTS["dst"], command="VERIFY", host="dst")
    assert v["verify_pages"] == 16 * 256 and v["verify_errors"] == 0 and v["errors"] == 0, v
    tot = stats(workdir)["total"]
    # VERIFY read every page: each one the restore had left behind came in
    # through a fault (an eager restore leaves the daemon nothing to serve)
    assert tot["pages_fetched"] >= 16 * 256 * 0.9 and tot["faults_remote"] >= 16 * 256 * 0.9, tot
    assert EAGER_LINE not in (workdir / "lazyd.log").read_text()
    finish(res, workdir)


EAGER_LINE = "are already resident: the restore copied about"


def clear_pe_lazy(pagemap):
    """Clears PE_LAZY in every entry of a pagemap image, in place (a flags
    value stays one byte): the dump is then what CRIU writes when is_stack()
    misfires, as a dump made elsewhere without `images --mark-lazy` can be."""
    data = bytearray(pagemap.read_bytes())
    pos, head = 8, True  # IMG_COMMON_MAGIC, PAGEMAP_MAGIC; then framed entries, the head first
    while pos < len(data):
        end = pos + 4 + int.from_bytes(data[pos:pos + 4], "little")
        p = pos + 4
        while not head and p < end:
            tag = data[p]  # fields 1..5, all varints: one-byte tags
            assert tag & 7 == 0 and tag >> 3 <= 5, (pagemap, p, tag)
            start = p = p + 1
            while data[p] & 0x80:
                p += 1
            p += 1
            if tag >> 3 == 4 and p - start == 1:
                data[start] &= 0xff & ~2
        head, pos = False, end
    pagemap.write_bytes(bytes(data))


@pytest.mark.time_limit(300)
def test_an_eager_restore_is_named_in_the_daemon_log(lab, procs, criu, tmp_path):
    """Images without PE_LAZY restore eagerly: a daemon fed by a page server
    then has nothing to serve and must say so in its log (lib/lazyd_proc.c eager_check), not
    leave a test or an operator waiting for faults in silence (the CI
    'stall'). The test above checks that a normal restore does not say it."""
    images = checkpoint_memwalk(procs, tmp_path, "--mib", "16", "--threads", "2", "--write-ratio", "0.3",
                                "--seed", "19")
    for pagemap in images.glob("pagemap-*.img"):
        clear_pe_lazy(pagemap)
    # from a page server, as both CI sightings: its task map calls the whole
    # lazy ranges remote (a local source reads the flags and says "0 B lazy")
    key = tmp_path / "key"
    util.distriproc("keygen", key)
    listen = util.serve_images(procs, images, key, SERVE_PORT)
    workdir = tmp_path / "wd"
    res = restore(procs, workdir, "--source", listen, "--key", key)
    util.wait_until(lambda: EAGER_LINE in (workdir / "lazyd.log").read_text(), 30,
                    "the daemon to say the restore was eager")
    v = util.memwalk_request(util.HOSTS["dst"], command="VERIFY", host="dst")
    assert v["verify_pages"] == 16 * 256 and v["verify_errors"] == 0 and v["errors"] == 0, v
    tot = stats(workdir)["total"]
    assert tot["pages_fetched"] < 16 * 256 * 0.1, tot  # the memory really came with the restore
    finish(res, workdir)


@pytest.mark.time_limit(300)
def test_forkmem_fork_remove_remap_local_images(lab, procs, criu, tmp_path):
    def ready():
        util.wait_forkmem()
        assert forkmem("src", "WRITE 7")["pages_written"] > 0
    images = checkpoint(procs, tmp_path, [FORKMEM, "--mib", "32", "--port", FORKMEM_PORT], ready)
    workdir = tmp_path / "wd"
    res = restore(procs, workdir, "--images", images, prefetch="seq:8")

    # Children and grandchildren fault on lazy memory through their own uffds
    # (FORK events); parent and children each see only their own writes.
    r = forkmem("dst", "FORK 2")
    assert r == {"children": 2, "child_errors": 0, "parent_errors": 0}, r
    assert forkmem("dst", "VERIFY")["errors"] == 0
    # MADV_DONTNEED on fetched and never-fetched pages: zeros, never stale data.
    r = forkmem("dst", "REMOVE 100 400")
    assert r["errors"] == 0, r
    r = forkmem("dst", "FORK 3")
    assert r["child_errors"] == 0 and r["parent_errors"] == 0, r
    assert forkmem("dst", "REMAP")["errors"] == 0
    assert forkmem("dst", "VERIFY")["errors"] == 0

    ev = stats(workdir)["total"]["events"]
    assert ev["fork"] >= 5 + 5 and ev["remove"] >= 1 and ev["remap"] >= 1, ev
    finish(res, workdir)


@pytest.mark.time_limit(300)
def test_forkmem_lazy_restore_from_page_server(lab, procs, criu, tmp_path):
    def ready():
        util.wait_forkmem()
        forkmem("src", "WRITE 3")
    images = checkpoint(procs, tmp_path, [FORKMEM, "--mib", "64", "--port", FORKMEM_PORT], ready)
    key = tmp_path / "key"
    util.distriproc("keygen", key)
    listen = f"{util.HOSTS['src']}:{SERVE_PORT}"

    def serve():
        p = procs.spawn(util.netns_cmd("src", [util.DISTRIPROC, "serve", "--images", images,
                                               "--listen", listen, "--key", key]),
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        util.wait_until(lambda: util.run(util.netns_cmd("src", ["ss", "-ltnH", f"sport = :{SERVE_PORT}"]))
                        .stdout.strip() != "", 20, "the page server to listen")
        return p
    serve()
    workdir = tmp_path / "wd"
    res = restore(procs, workdir, "--source", listen, "--key", key, prefetch="auto")
    s = stats(workdir)
    # Restored before its memory arrived: almost all of it is still remote.
    assert s["total"]["remote_fraction"] > 0.9, s["total"]

    r = forkmem("dst", "FORK 2")
    assert r == {"children": 2, "child_errors": 0, "parent_errors": 0}, r
    assert forkmem("dst", "REMOVE 0 50")["errors"] == 0
    assert stats(workdir)["total"]["bytes_on_wire"] > 32 << 20

    assert forkmem("dst", "VERIFY")["errors"] == 0
    final = finish(res, workdir)
    assert final["total"]["fetch_errors"] == 0, final["total"]


@pytest.mark.time_limit(300)
def test_fault_waits_while_page_server_is_down(lab, procs, criu, tmp_path):
    images = checkpoint(procs, tmp_path, [FORKMEM, "--mib", "32", "--port", FORKMEM_PORT], util.wait_forkmem)
    key = tmp_path / "key"
    util.distriproc("keygen", key)
    listen = f"{util.HOSTS['src']}:{SERVE_PORT}"

    def serve():
        p = procs.spawn(util.netns_cmd("src", [util.DISTRIPROC, "serve", "--images", images,
                                               "--listen", listen, "--key", key]),
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        util.wait_until(lambda: util.run(util.netns_cmd("src", ["ss", "-ltnH", f"sport = :{SERVE_PORT}"]))
                        .stdout.strip() != "", 20, "the page server to listen")
        return p
    server = serve()
    workdir = tmp_path / "wd"
    res = restore(procs, workdir, "--source", listen, "--key", key)
    assert stats(workdir)["total"]["remote_fraction"] > 0.9

    # The server dies before the process touched its memory: a VERIFY (which
    # reads every page) must stall, not fail and not see wrong data.
    os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=10)
    before = stats(workdir)["total"]
    assert before["faults_waiting"] == 0, before
    verify = procs.spawn(util.netns_cmd("dst", [util.PYTHON, "-c", util.LINE_CLIENT, util.HOSTS["dst"], FORKMEM_PORT,
                                                "VERIFY", 120]),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Stalled, as the daemon sees it: VERIFY faulted (the count rose), one
    # fault waits for its page, and the count stands still across two samples
    # (forkmem reads its pages one by one from a single thread).
    last = {}

    def stalled():
        s = stats(workdir)
        tot, prev = s["total"], last.get("tot")
        last["tot"], last["s"] = tot, s
        return (verify.poll() is None and not s["source_healthy"] and tot["faults"] > before["faults"]
                and tot["faults_waiting"] >= 1 and prev is not None and prev["faults_waiting"] >= 1
                and prev["faults"] == tot["faults"])
    util.wait_until(stalled, 60, "VERIFY to wait on a fault with the page server down", interval=0.5)
    assert verify.poll() is None, "VERIFY finished although the page server is down"
    stalled_at = last["tot"]
    assert stalled_at["remote_fraction"] > 0.5, stalled_at

    # The server comes back: the client reconnects, the process continues.
    server = serve()
    out, err = verify.communicate(timeout=90)
    r = json.loads(out)
    assert r == {"pages": 32 * 256, "errors": 0}, (r, err)
    s = stats(workdir)
    assert s["source_healthy"] is True, s
    assert s["total"]["faults_waiting"] == 0 and s["total"]["faults"] > stalled_at["faults"], s["total"]
    finish(res, workdir)


@pytest.mark.time_limit(300)
def test_fault_timeout_kill_stops_the_tree_with_a_clear_message(lab, procs, criu, tmp_path):
    images = checkpoint(procs, tmp_path, [FORKMEM, "--mib", "16", "--port", FORKMEM_PORT], util.wait_forkmem)
    key = tmp_path / "key"
    util.distriproc("keygen", key)
    listen = f"{util.HOSTS['src']}:{SERVE_PORT}"
    server = procs.spawn(util.netns_cmd("src", [util.DISTRIPROC, "serve", "--images", images,
                                                "--listen", listen, "--key", key]),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    util.wait_until(lambda: util.run(util.netns_cmd("src", ["ss", "-ltnH", f"sport = :{SERVE_PORT}"]))
                    .stdout.strip() != "", 20, "the page server to listen")
    workdir = tmp_path / "wd"
    cp = util.distriproc("restore", "--source", listen, "--key", key, "--workdir", workdir, "--host", "dst",
                         "--fault-timeout", "2", "--on-timeout", "kill", "--json", timeout=150)
    res = json.loads(cp.stdout)
    procs.track(res["daemon_pid"])
    procs.track(res["pid"])
    os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=10)
    verify = procs.spawn(util.netns_cmd("dst", [util.PYTHON, "-c", util.LINE_CLIENT, util.HOSTS["dst"], FORKMEM_PORT,
                                                "VERIFY", 60]),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # the whole restored tree is stopped after the timeout, and the daemon ends
    util.wait_gone(res["pid"], timeout=30)
    util.wait_gone(res["daemon_pid"], timeout=15)
    out, _ = verify.communicate(timeout=30)
    assert out.strip() == b"", f"VERIFY answered although its pages were unreachable: {out}"
    log = (workdir / "lazyd.log").read_text()
    assert "--on-timeout kill" in log and "No page was filled with wrong data" in log, log


@pytest.mark.time_limit(300)
def test_background_fetch_copies_the_rest(lab, procs, criu, tmp_path):
    images = checkpoint(procs, tmp_path, [FORKMEM, "--mib", "32", "--port", FORKMEM_PORT], util.wait_forkmem)
    workdir = tmp_path / "wd"
    cp = util.distriproc("restore", "--images", images, "--workdir", workdir, "--host", "dst",
                         "--background-fetch", "64M", "--json", timeout=150)
    res = json.loads(cp.stdout)
    procs.track(res["daemon_pid"])
    procs.track(res["pid"])
    # nobody touches the memory, yet it all arrives
    util.wait_until(lambda: stats(workdir)["total"]["remote_bytes"] == 0, 30, "the background copy")
    tot = stats(workdir)["total"]
    assert tot["pages_background"] >= 32 * 256 * 0.9 and tot["faults_remote"] < 100, tot
    assert forkmem("dst", "VERIFY")["errors"] == 0
    finish(res, workdir)


REDIS_TOOL = os.path.join(util.ROOT, "scripts", "redis_tool.py")
REDIS_PORT = 6390


def redis_tool(host, *args, timeout=300):
    cp = util.run(util.netns_cmd(host, [util.PYTHON, REDIS_TOOL, *args]), timeout=timeout)
    return json.loads(cp.stdout.strip().splitlines()[-1])


@pytest.mark.time_limit(600)
def test_redis_256mib_lazy_from_page_server_digest_and_remote_fraction(lab, procs, criu, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    pid = util.start_container(procs, "src", ["redis-server", "--port", REDIS_PORT, "--bind", "0.0.0.0",
                                              "--save", "", "--appendonly", "no", "--daemonize", "no",
                                              "--protected-mode", "no", "--dir", tmp_path],
                               tmp_path / "src.pid")
    src = ["--host", util.HOSTS["src"], "--port", str(REDIS_PORT)]
    redis_tool("src", "probe", *src, "--timeout", "20")
    redis_tool("src", "load", *src, "--mib", "256")
    before = redis_tool("src", "digest", *src)
    assert before["keys"] > 200000, before
    util.distriproc("checkpoint", "--host", "src", "--pid", pid, "--images", images, timeout=180)
    util.wait_gone(pid, timeout=20)

    key = tmp_path / "key"
    util.distriproc("keygen", key)
    listen = util.serve_images(procs, images, key, SERVE_PORT)
    workdir = tmp_path / "wd"
    res = restore(procs, workdir, "--source", listen, "--key", key)
    dst = ["--host", util.HOSTS["dst"], "--port", str(REDIS_PORT)]
    redis_tool("dst", "probe", *dst, "--timeout", "20")
    read = redis_tool("dst", "read", *dst, "--fraction", "0.1", "--seconds", "10")
    assert read["misses"] == 0, read
    s = stats(workdir)["total"]
    # a tenth of the keys touched: most of the memory never crossed the link
    assert s["remote_fraction"] > 0.5, s
    after = redis_tool("dst", "digest", *dst)
    assert after == before, (before, after)
    finish(res, workdir)


@pytest.mark.time_limit(300)
def test_nginx_master_and_workers_lazy_restore_serves_identical_files(lab, procs, criu, tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    (tmp_path / "tmp").mkdir()
    data = os.urandom(8 << 20)
    (www / "big.bin").write_bytes(data)
    conf = tmp_path / "nginx.conf"
    # user root: CRIU cannot read the rlimits of workers that dropped to www-data
    conf.write_text(f"""user root;
worker_processes 2;
pid {tmp_path}/nginx.pid;
error_log stderr;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {tmp_path}/tmp/body; proxy_temp_path {tmp_path}/tmp/proxy;
  fastcgi_temp_path {tmp_path}/tmp/fcgi; uwsgi_temp_path {tmp_path}/tmp/uwsgi; scgi_temp_path {tmp_path}/tmp/scgi;
  server {{ listen 0.0.0.0:8080; root {www}; }}
}}
""")
    images = tmp_path / "images"
    images.mkdir()
    pid = util.start_container(procs, "src", ["nginx", "-c", conf, "-g", "daemon off;"], tmp_path / "src.pid")

    util.wait_until(lambda: util.run(util.netns_cmd("src", ["curl", "-sf", "-o", "/dev/null",
                                                            f"http://{util.HOSTS['src']}:8080/big.bin"]),
                                     check=False).returncode == 0, 20, "nginx to serve")
    util.distriproc("checkpoint", "--host", "src", "--pid", pid, "--images", images, timeout=120)
    util.wait_gone(pid, timeout=20)
    workdir = tmp_path / "wd"
    res = restore(procs, workdir, "--images", images)
    got = util.run(util.netns_cmd("dst", ["sh", "-c", f"curl -sf http://{util.HOSTS['dst']}:8080/big.bin | sha256sum"]),
                   timeout=30).stdout.split()[0]
    assert got == hashlib.sha256(data).hexdigest()
    s = stats(workdir)
    assert len([t for t in s["tasks"] if t["alive"]]) == 3, s["tasks"]
    # a reload forks two new workers (FORK events) that serve the same bytes
    os.kill(res["pid"], signal.SIGHUP)
    util.wait_until(lambda: stats(workdir)["total"]["events"]["fork"] >= 2, 20, "nginx to fork new workers")
    for _ in range(4):
        got = util.run(util.netns_cmd("dst", ["sh", "-c",
                                              f"curl -sf http://{util.HOSTS['dst']}:8080/big.bin | sha256sum"]),
                       timeout=30).stdout.split()[0]
        assert got == hashlib.sha256(data).hexdigest()
    finish(res, workdir)


@pytest.mark.time_limit(300)
def test_sigterm_to_the_daemon_stops_the_tree_first(lab, procs, criu, tmp_path):
    """A restored tree cannot run on without its daemon: SIGTERM stops the
    tree first, then the daemon (and its guard) exit quietly."""
    images = checkpoint(procs, tmp_path, [FORKMEM, "--mib", "16", "--port", FORKMEM_PORT], util.wait_forkmem)
    workdir = tmp_path / "wd"
    res = restore(procs, workdir, "--images", images)
    os.kill(res["daemon_pid"], signal.SIGTERM)
    util.wait_gone(res["pid"], timeout=15)
    util.wait_gone(res["daemon_pid"], timeout=15)
    log = (workdir / "lazyd.log").read_text()
    assert "only this daemon serves" in log and "killing the restored process tree" in log, log
    assert "SIGKILLed the restored process tree" not in log, log  # not the guard's doing
