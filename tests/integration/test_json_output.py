"""JSON that commands print is printed by jansson (docs/parsers.md): names
from the file system are escaped, so a path holding a quote or a backslash
still gives JSON that parses and says the path. Local mode only: no lab."""

import json
import os
import shutil
import subprocess

import util

FIXTURE = os.path.join(util.ROOT, "tests", "fixtures", "images-tinymem")
ODD = 'im"g\\x'  # a quote and a backslash


def run_json(*args):
    cp = subprocess.run([util.DISTRIPROC, *map(str, args)], capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)


def test_images_json_escapes_the_directory(tmp_path):
    images = tmp_path / ODD
    shutil.copytree(FIXTURE, images)
    out = run_json("images", "--images", images, "--json")
    assert out["dir"] == str(images)
    assert out["tasks"][0]["pid"] == 1 and out["lazy_bytes"] > 0, out


def test_daemon_stats_escape_the_source(procs, tmp_path):
    images = tmp_path / ODD
    shutil.copytree(FIXTURE, images)
    w = tmp_path / "w"
    started = run_json("lazy-pages", "--images", images, "--workdir", w, "--json")
    procs.track(started["daemon_pid"])
    stats = run_json("stats", "--workdir", w, "--json")
    assert stats["source"] == f"local images {images}", stats["source"]
    assert stats["total"]["fetch_errors"] == 0, stats["total"]
