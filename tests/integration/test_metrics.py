"""Issue 15 item 3: the --metrics endpoints of the page server and of the
lazy-pages daemon, scraped during a real lazy restore (CRIU, the lab's two
network namespaces, a memory budget so that evictions and write-backs
happen), read with a strict parser of the text format (promtext.py), and
checked value by value against `distriproc query stats` and `distriproc stats`."""

import json
import os
import shutil
import socket

import pytest

import promtext
import util

FORKMEM = util.BUILD + "/forkmem"
FORKMEM_PORT = 7071
SERVE_PORT = 7300
SERVER_METRICS = "127.0.0.1:9471"   # inside src's network namespace
LAZYD_METRICS = "127.0.0.1:9472"    # inside dst's

# One HTTP request from inside a lab host; prints the status line, then the body.
HTTP_CLIENT = (
    "import socket,sys\n"
    "h,p=sys.argv[1].split(':')\n"
    "s=socket.create_connection((h,int(p)),timeout=10)\n"
    "s.sendall(sys.argv[2].encode())\n"
    "d=b''\n"
    "while True:\n"
    "    c=s.recv(65536)\n"
    "    if not c: break\n"
    "    d+=c\n"
    "sys.stdout.write(d.decode())\n"
)


def http(host, addr, request):
    """(status, headers dict, body) of one raw request sent from inside host."""
    out = util.run(util.netns_cmd(host, [util.PYTHON, "-c", HTTP_CLIENT, addr, request]), timeout=30).stdout
    # (the client's text-mode stdout turned CRLF into LF)
    head, sep, body = out.partition("\n\n")
    assert sep, f"no complete response head from {addr}: {out!r}"
    lines = head.split("\n")
    headers = dict(l.split(": ", 1) for l in lines[1:])
    if "Content-Length" in headers:
        assert int(headers["Content-Length"]) == len(body.encode()), (headers, len(body))
    return int(lines[0].split(" ")[1]), headers, body


def scrape(host, addr):
    status, headers, body = http(host, addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200, body
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8", headers
    return promtext.parse(body)


def le_counts(json_buckets, fams, name):
    """The cumulative counts the exposition must show for the HDR buckets
    `stats` prints ([[upper edge us, count], ...]): a bucket counts at a bound
    once its upper edge is at or below it."""
    want = {}
    for le in promtext.buckets(fams, name):
        want[le] = sum(c for up_us, c in json_buckets if le == float("inf") or round(up_us * 1000) <= le * 1e9 + 0.5)
    return want


def stable(read, keys, what, tries=20):
    """Reads a (before, scrape, after) triple until before and after agree on
    keys: the scrape then saw exactly those values (bounded retries)."""
    for _ in range(tries):
        before, fams, after = read()
        if all(keys(before)[k] == keys(after)[k] for k in keys(before)):
            return before, fams
    pytest.fail(f"{what} kept moving across {tries} reads", pytrace=False)


def server_keys(q):
    return {"connections": q["connections"], "auth": q["auth_failures"], "protocol": q["protocol_errors"],
            "data": q["pages_data"], "zero": q["pages_zero"], "not_lazy": q["pages_not_lazy"],
            "puts": q["put_requests"], "written": q["pages_written_back"], "refused": q["puts_refused"],
            "get_pages": q["requests"]["get_pages"], "put_pages": q["requests"]["put_pages"],
            "wb_count": q["writeback_latency"]["count"], "touched": q["pages_touched"]}


def lazyd_keys(s):
    t, b = s["total"], s["budget"]
    return {"faults": t["faults"], "remote": t["faults_remote"], "fetched": t["pages_fetched"],
            "prefetched": t["pages_prefetched"], "requests": t["fetch_requests"], "wire": t["bytes_on_wire"],
            "resident": t["resident_bytes"], "remote_bytes": t["remote_bytes"], "lat": t["latency"]["count"],
            "evictions": b["evictions"], "writebacks": b["writebacks"], "wb_requests": b["writeback_requests"],
            "bg_requests": b["background_requests"],
            "wb_count": b["writeback_latency"]["count"], "stop": b["stop"]["count"]}


@pytest.mark.time_limit(300)
def test_metrics_endpoints_agree_with_stats_during_a_lazy_restore(lab, procs, criu, tmp_path):
    def ready():
        util.wait_forkmem()
        util.forkmem_request("src", "WRITE 3")
    images = util.checkpoint_container(procs, tmp_path, [FORKMEM, "--mib", "32", "--port", FORKMEM_PORT], ready)
    key = tmp_path / "key"
    util.distriproc("keygen", key)
    listen = util.serve_images(procs, images, key, SERVE_PORT, "--metrics", SERVER_METRICS)
    workdir = tmp_path / "wd"
    res = util.restore_json(procs, workdir, "--source", listen, "--key", key, "--prefetch", "seq:4",
                            "--budget", "8M", "--metrics", LAZYD_METRICS)
    assert res["pid"] > 0, res

    # the workload: every page read, a third written, 4x the budget: faults,
    # prefetch, evictions and write-backs all happen; then it idles
    assert util.forkmem_request("dst", "WRITE 3")["pages_written"] > 0
    assert util.forkmem_request("dst", "VERIFY")["errors"] == 0

    # the lazy-pages daemon against `distriproc stats`
    def read_lazyd():
        before = util.lazy_stats(workdir)
        fams = scrape("dst", LAZYD_METRICS)
        return before, fams, util.lazy_stats(workdir)
    s, fams = stable(read_lazyd, lazyd_keys, "the daemon's stats")
    t, b = s["total"], s["budget"]
    v = lambda name, **l: promtext.value(fams, name, **l)
    assert v("distriproc_lazyd_faults_total") == t["faults"] > 0
    assert v("distriproc_lazyd_remote_faults_total") == t["faults_remote"] > 0
    assert v("distriproc_lazyd_zero_faults_total") == t["faults_zero"]
    assert v("distriproc_lazyd_fetch_requests_total") == t["fetch_requests"] > 0
    assert v("distriproc_lazyd_pages_fetched_total", reason="fault") == t["pages_fetched"] > 0
    assert v("distriproc_lazyd_pages_fetched_total", reason="prefetch") == t["pages_prefetched"] > 0
    assert v("distriproc_lazyd_pages_fetched_total", reason="background") == t["pages_background"]
    assert (v("distriproc_lazyd_prefetch_hits_total", when="inflight") +
            v("distriproc_lazyd_prefetch_hits_total", when="inferred")) == t["prefetch_hits"] > 0
    assert v("distriproc_lazyd_received_bytes_total") == t["bytes_on_wire"] > 0
    assert v("distriproc_lazyd_errors_total", kind="fetch") == t["fetch_errors"] == 0
    assert v("distriproc_lazyd_resident_bytes") == t["resident_bytes"] > 0
    assert v("distriproc_lazyd_remote_bytes") == t["remote_bytes"]
    assert v("distriproc_lazyd_tasks_alive") == s["tasks_alive"] == 1
    assert v("distriproc_lazyd_source_up") == 1 and s["source_healthy"]
    assert v("distriproc_lazyd_budget_enabled") == 1
    assert v("distriproc_lazyd_evictions_total") == b["evictions"] > 0
    assert v("distriproc_lazyd_writeback_pages_total") == b["writebacks"] > 0
    assert v("distriproc_lazyd_writeback_requests_total", mode="stop") == b["writeback_requests"]
    assert v("distriproc_lazyd_writeback_requests_total", mode="background") == b["background_requests"]
    assert b["writeback_requests"] + b["background_requests"] > 0
    assert v("distriproc_lazyd_errors_total", kind="writeback") == b["writeback_errors"] == 0
    lat = "distriproc_lazyd_fault_latency_seconds"
    assert v(lat + "_count") == t["latency"]["count"] > 0
    assert promtext.buckets(fams, lat) == le_counts(t["latency_buckets_us"], fams, lat)
    wb = "distriproc_lazyd_writeback_latency_seconds"
    assert v(wb + "_count") == b["writeback_latency"]["count"] > 0
    assert promtext.buckets(fams, wb) == le_counts(b["writeback_latency_buckets_us"], fams, wb)
    assert v("distriproc_lazyd_eviction_stop_seconds_count") == b["stop"]["count"] > 0

    # the page server against `distriproc query stats` (whose own connection
    # and request count before it answers, so the scrape after it agrees)
    def query():
        return json.loads(util.run(util.netns_cmd("src", [util.DISTRIPROC, "query", "--source", listen, "--key", key,
                                                          "stats"])).stdout)

    def read_server():
        before = query()
        fams = scrape("src", SERVER_METRICS)
        after = query()
        after["connections"] -= 1  # the second query's own
        return before, fams, after
    q, sf = stable(read_server, server_keys, "the page server's stats")
    w = lambda name, **l: promtext.value(sf, name, **l)
    assert w("distriproc_server_connections_total") == q["connections"] >= 2
    assert w("distriproc_server_requests_total", type="stats") == q["requests"]["stats"]
    assert w("distriproc_server_requests_total", type="get_pages") == q["requests"]["get_pages"] > 0
    assert w("distriproc_server_requests_total", type="put_pages") == q["requests"]["put_pages"] > 0
    assert w("distriproc_server_pages_served_total", kind="data") == q["pages_data"] > 0
    assert w("distriproc_server_pages_served_total", kind="zero") == q["pages_zero"]
    assert w("distriproc_server_writeback_requests_total") == q["put_requests"] > 0
    assert w("distriproc_server_writeback_pages_total") == q["pages_written_back"] == b["writebacks"]
    assert w("distriproc_server_errors_total", kind="auth") == q["auth_failures"] == 0
    assert w("distriproc_server_pages_touched") == q["pages_touched"] > 0
    assert w("distriproc_server_lazy_bytes") == q["lazy_bytes"]
    sw = "distriproc_server_writeback_latency_seconds"
    assert w(sw + "_count") == q["writeback_latency"]["count"] == q["put_requests"]
    assert promtext.buckets(sf, sw) == le_counts(q["writeback_latency_buckets_us"], sf, sw)

    # the HTTP side: only GET /metrics, one response, then close
    assert http("dst", LAZYD_METRICS, "GET / HTTP/1.1\r\n\r\n")[0] == 404
    status, headers, _ = http("dst", LAZYD_METRICS, "POST /metrics HTTP/1.1\r\n\r\n")
    assert status == 405 and headers["Allow"] == "GET"
    assert http("src", SERVER_METRICS, "GARBAGE\r\n\r\n")[0] == 400
    assert http("src", SERVER_METRICS, "GET /metrics HTTP/1.1\r\nX: " + "a" * 4096 + "\r\n\r\n")[0] == 431
    # and it never stalled the daemon: the workload still verifies
    assert util.forkmem_request("dst", "VERIFY")["errors"] == 0


def test_metrics_address_must_be_loopback_unless_allowed(tmp_path):
    """An unauthenticated endpoint is refused on a routable address before
    anything starts; the message says why and what to do."""
    for cmd in (["serve", "--images", tmp_path, "--listen", "127.0.0.1:1", "--key", tmp_path / "k"],
                ["restore", "--images", tmp_path, "--workdir", tmp_path / "wd"],
                ["lazy-pages", "--images", tmp_path, "--workdir", tmp_path / "wd"]):
        cp = util.distriproc(*cmd, "--metrics", "10.250.0.1:9464", check=False)
        assert cp.returncode == 2, cp
        assert "not a loopback address" in cp.stderr and "no authentication" in cp.stderr, cp.stderr
        assert "--metrics-allow-remote" in cp.stderr, cp.stderr


def test_busy_metrics_port_stops_the_server_with_its_name(tmp_path):
    """A port already taken: the page server does not start half-watched."""
    images = tmp_path / "images"
    shutil.copytree(os.path.join(util.ROOT, "tests", "fixtures", "images-tinymem"), images)
    util.distriproc("keygen", tmp_path / "key")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        cp = util.distriproc("serve", "--images", images, "--listen", "127.0.0.1:0", "--key", tmp_path / "key",
                             "--metrics", f"127.0.0.1:{port}", check=False, timeout=20)
    assert cp.returncode == 1, cp
    assert f"cannot serve metrics on 127.0.0.1:{port}" in cp.stderr and "choose a free port" in cp.stderr, cp.stderr
