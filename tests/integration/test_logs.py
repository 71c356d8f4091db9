"""Issue 15 item 5: `--log-format json` (and DISTRIPROC_LOG_FORMAT) during a
real lazy restore: every line the page server and the lazy-pages daemon
write is one JSON object with ts, level, comp, pid and msg, and the lines
about a connection or a task carry conn or task."""

import json
import os
import signal
import subprocess

import pytest

import util

FORKMEM = os.path.join(util.BUILD, "forkmem")
FORKMEM_PORT = 7071
SERVE_PORT = 7300
LEVELS = {"debug", "info", "warning", "error"}


def json_lines(path, comp):
    """Every line of path as a JSON object with the fixed keys; fails on any other line."""
    text = path.read_text()
    assert text.endswith("\n"), f"{path}: a line without its newline"
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        try:
            o = json.loads(line)
        except ValueError as e:
            pytest.fail(f"{path}:{n} is not JSON ({e}): {line!r}", pytrace=False)
        assert isinstance(o, dict) and o["level"] in LEVELS and o["comp"] == comp, (path, n, o)
        assert isinstance(o["pid"], int) and isinstance(o["msg"], str) and o["ts"].endswith("Z"), (path, n, o)
        for k in ("task", "conn"):
            assert k not in o or (isinstance(o[k], int) and o[k] >= 0), (path, n, o)
        out.append(o)
    assert out, f"{path} is empty"
    return out


@pytest.mark.time_limit(300)
def test_json_logs_of_serve_and_the_daemon(lab, procs, criu, tmp_path, monkeypatch):
    def ready():
        util.wait_forkmem()
        util.forkmem_request("src", "WRITE 3")
    images = util.checkpoint_container(procs, tmp_path, [FORKMEM, "--mib", "8", "--port", FORKMEM_PORT], ready)
    key = tmp_path / "key"
    util.distriproc("keygen", key)
    listen = f"{util.HOSTS['src']}:{SERVE_PORT}"
    serve_log = tmp_path / "serve.log"
    with open(serve_log, "w") as log:   # the global flag, before the command
        server = procs.spawn(util.netns_cmd("src", [util.DISTRIPROC, "--log-format", "json", "serve", "--images",
                                                    images, "--listen", listen, "--key", key]),
                             stdout=subprocess.DEVNULL, stderr=log)
    util.wait_until(lambda: util.run(util.netns_cmd("src", ["ss", "-ltnH", f"sport = :{SERVE_PORT}"]))
                    .stdout.strip() != "", 20, "the page server to listen")
    # the environment variable: restore and the daemon it forks log JSON
    monkeypatch.setenv("DISTRIPROC_LOG_FORMAT", "json")
    workdir = tmp_path / "wd"
    res = util.restore_json(procs, workdir, "--source", listen, "--key", key)
    assert util.forkmem_request("dst", "VERIFY")["errors"] == 0
    os.kill(res["pid"], signal.SIGKILL)
    util.wait_gone(res["daemon_pid"], timeout=15)
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=20)

    daemon = json_lines(workdir / "lazyd.log", "lazyd")
    tasks = [o for o in daemon if "task" in o]
    assert any("userfaultfd received" in o["msg"] for o in tasks), daemon
    assert {o["task"] for o in tasks} <= {t["id"] for t in json.loads((workdir / "stats-final.json")
                                                                      .read_text())["tasks"]}, tasks
    served = json_lines(serve_log, "serve")
    conns = [o for o in served if "conn" in o]
    # the restore's connection: accepted, authenticated, closed, all tagged with its number
    assert any(o["msg"].startswith(f"client #{o['conn']} ") and "connected" in o["msg"] for o in conns), served
    assert all(o["msg"].startswith(f"client #{o['conn']} ") for o in conns if o["msg"].startswith("client #"))
    assert any("shutting down" in o["msg"] and "conn" not in o for o in served), served


def test_bad_log_format_is_refused(tmp_path):
    cp = util.distriproc("--log-format", "xml", "serve", "--help", check=False)
    assert cp.returncode == 2 and "--log-format takes text, logfmt or json (got 'xml')" in cp.stderr, cp
    cp = util.run([util.DISTRIPROC, "serve", "--help"], check=False,
                  env=dict(os.environ, DISTRIPROC_LOG_FORMAT="yaml"))
    assert cp.returncode == 2 and "DISTRIPROC_LOG_FORMAT takes text, logfmt or json" in cp.stderr, cp
    # logfmt: one key=value line per event, for an error too
    cp = util.distriproc("--log-format", "logfmt", "serve", "--images", tmp_path / "none", "--listen",
                         "127.0.0.1:1", "--key", tmp_path / "none", check=False)
    assert cp.returncode == 1, cp
    lines = cp.stderr.splitlines()
    assert lines and all(l.startswith("ts=") and " level=" in l and " comp=serve " in l and " msg=" in l
                         for l in lines), cp.stderr
    assert any(" level=error " in l for l in lines), cp.stderr
