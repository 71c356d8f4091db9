"""Installation: make install / uninstall, the installed binary with its own
CRIU, manual pages and bash completion against --help, the systemd unit
templates (systemd-analyze verify, offline), and the Debian package.

Needs `make deps` (the CRIU that install copies). The Debian package test also
needs debhelper (`make deps-pkg`); without it that one test is skipped and says so."""

import os
import re
import shutil
import subprocess
import tempfile

import pytest

import util

INSTALL_TIMEOUT = 120


def make(*args, timeout=INSTALL_TIMEOUT):
    """`make ARGS` in the checkout (the build is up to date: the session's
    environment check insists on a built binary)."""
    return util.run(["make", "-C", util.ROOT, "--no-print-directory", *args], timeout=timeout)


# ---- Helpers -------------------------------------------------------------------------

def help_text(binary, *args):
    """--help as the manual pages were made from it: without DISTRIPROC_*
    settings (DISTRIPROC_LAB changes the lab's names in some texts)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTRIPROC_")}
    cp = util.run([binary, *args, "--help"], env=env)
    assert cp.stdout.startswith("usage: distriproc"), f"{binary} {' '.join(args)} --help: {cp.stdout[:200]!r}"
    return cp.stdout


def command_names(top_help):
    """The commands `distriproc --help` lists under 'Commands:'."""
    block = top_help.split("\nCommands:\n", 1)[1].split("\n\n", 1)[0]
    return [line.split()[0] for line in block.splitlines()]


def man_words(page):
    """The words of a rendered manual page from SYNOPSIS to SEE ALSO, section
    headings left out: what --help says must be exactly these, in order."""
    env = dict(os.environ, MANWIDTH="200", LC_ALL="C.UTF-8")
    cp = util.run(["man", "-l", page], env=env)
    lines = cp.stdout.splitlines()
    body = lines[lines.index("SYNOPSIS") + 1:lines.index("SEE ALSO")]
    return " ".join(line for line in body if line != "DESCRIPTION").split()


def checkpoint_with(binary, procs, tmp_path, name):
    """Checkpoints a fresh test tree (session leader of its own pid namespace)
    with BINARY and no DISTRIPROC_CRIU, so that it must find its CRIU itself."""
    outer = procs.spawn(["unshare", "--pid", "--fork", "setsid", "sh", "-c", "while :; do sleep 0.1; done"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def first_child():
        pids = util.run(["pgrep", "-P", str(outer.pid)], check=False).stdout.split()
        return pids[0] if pids else None
    pid = procs.track(util.wait_until(first_child, 10, "the test tree to start"))
    env = {k: v for k, v in os.environ.items() if k != "DISTRIPROC_CRIU"}
    return util.run([binary, "checkpoint", "--pid", pid, "--images", tmp_path / name, "--json"],
                    env=env, check=False, timeout=120)


def systemd_verify(unit_dir, man_dir, instances):
    """systemd-analyze verify of template instances from UNIT_DIR, offline (no
    systemd runs here as pid 1: verify loads the files itself), with MANPATH
    at the installed pages so Documentation=man: is checked too."""
    env = dict(os.environ, MANPATH=str(man_dir))
    return util.run(["systemd-analyze", "verify", *[os.path.join(unit_dir, i) for i in instances]],
                    env=env, check=False)


UNITS = ("distriproc-serve@.service", "distriproc-lazy-pages@.service")
INSTANCES = ("distriproc-serve@test.service", "distriproc-lazy-pages@test.service")


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    """DistriProc installed into a fresh PREFIX (no DESTDIR: the unit files then
    name the real installed binary); uninstalled again afterwards."""
    root = tmp_path_factory.mktemp("install")
    pfx = root / "prefix"
    make("install", f"PREFIX={pfx}")
    try:
        yield pfx
    finally:
        make("uninstall", f"PREFIX={pfx}")


# ---- make install / uninstall ----------------------------------------------------------

@pytest.mark.time_limit(180)
def test_install_destdir_then_uninstall_leaves_nothing_but_foreign_files(tmp_path):
    dest = tmp_path / "dest"
    units = "SYSTEMD_UNIT_DIR=/etc/systemd/system"   # outside PREFIX, as an admin may want
    make("install", f"DESTDIR={dest}", "PREFIX=/opt/dp", units)
    root = dest / "opt" / "dp"
    manifest = (root / "lib/distriproc/install-manifest").read_text().splitlines()
    files = {line[2:] for line in manifest if line.startswith("f ")}
    top = help_text(util.DISTRIPROC)
    expected = {"/opt/dp/bin/distriproc", "/opt/dp/lib/distriproc/bin/criu",
                "/opt/dp/share/man/man1/distriproc.1",
                "/opt/dp/share/bash-completion/completions/distriproc",
                "/opt/dp/share/doc/distriproc/README.md",
                "/opt/dp/lib/distriproc/install-manifest"}
    expected |= {f"/opt/dp/share/man/man1/distriproc-{c}.1" for c in command_names(top)}
    expected |= {f"/etc/systemd/system/{u}" for u in UNITS}
    expected |= {f"/opt/dp/share/doc/distriproc/docs/{d}" for d in os.listdir(os.path.join(util.ROOT, "docs"))}
    assert expected <= files, f"not installed: {sorted(expected - files)}"
    on_disk = {"/" + str(p.relative_to(dest)) for p in dest.rglob("*") if not p.is_dir() or p.is_symlink()}
    assert on_disk == files, f"installed but not in the manifest: {sorted(on_disk - files)}; " \
                             f"in the manifest but missing: {sorted(files - on_disk)}"
    assert util.run([root / "bin/distriproc", "--help"]).stdout == top

    # A file someone else put into an installed directory survives, with its directories.
    foreign = root / "share/man/man1/other.1"
    foreign.write_text(".TH OTHER 1\n")
    # Without the install's SYSTEMD_UNIT_DIR the manifest's unit paths look foreign: refused, nothing removed.
    cp = util.run(["make", "-C", util.ROOT, "--no-print-directory", "uninstall", f"DESTDIR={dest}",
                   "PREFIX=/opt/dp"], check=False)
    assert cp.returncode != 0 and "SYSTEMD_UNIT_DIR" in cp.stderr and "nothing removed" in cp.stderr, cp.stderr
    assert (root / "bin/distriproc").exists() and (dest / "etc/systemd/system" / UNITS[0]).exists()
    make("uninstall", f"DESTDIR={dest}", "PREFIX=/opt/dp", units)
    left = sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))
    assert left == ["opt", "opt/dp", "opt/dp/share", "opt/dp/share/man", "opt/dp/share/man/man1",
                    "opt/dp/share/man/man1/other.1"], left
    # Uninstalled means uninstalled: a second uninstall finds nothing to remove.
    cp = util.run(["make", "-C", util.ROOT, "--no-print-directory", "uninstall", f"DESTDIR={dest}",
                   "PREFIX=/opt/dp"], check=False)
    assert cp.returncode != 0 and "no install manifest" in cp.stderr, cp.stderr


@pytest.mark.time_limit(180)
def test_installed_binary_runs_its_own_criu(prefix, procs, tmp_path):
    binary = prefix / "bin/distriproc"
    cp = checkpoint_with(binary, procs, tmp_path, "img")
    assert cp.returncode == 0, cp.stderr
    assert util.run([prefix / "lib/distriproc/bin/criu", "--version"]).stdout.startswith("Version: 4.2")
    # Without the installed CRIU the same binary says where it looked.
    criu = prefix / "lib/distriproc/bin/criu"
    os.rename(criu, str(criu) + ".away")
    try:
        cp = checkpoint_with(binary, procs, tmp_path, "img2")
    finally:
        os.rename(str(criu) + ".away", criu)
    assert cp.returncode != 0
    assert "CRIU not found" in cp.stderr and f"{prefix}/lib/distriproc/bin/criu" in cp.stderr, cp.stderr


# ---- Manual pages and completion --------------------------------------------------------

def test_every_command_has_help_and_a_manual_page_that_says_the_same(prefix):
    binary = prefix / "bin/distriproc"
    man1 = prefix / "share/man/man1"
    top = help_text(binary)
    commands = command_names(top)
    assert len(commands) >= 10, commands
    assert sorted(os.listdir(man1)) == sorted(["distriproc.1"] + [f"distriproc-{c}.1" for c in commands])
    assert man_words(man1 / "distriproc.1") == top.split()[1:]   # 'usage:' is the SYNOPSIS heading
    for c in commands:
        text = help_text(binary, c)
        expected = text.split()[1:]
        if c == "bench":   # each benchmark's help is a subsection of distriproc-bench(1)
            for b in command_names(text.replace("\nBenchmarks:\n", "\nCommands:\n")):
                bench = help_text(binary, "bench", b)
                summary = re.search(rf"^  {re.escape(b)} +(.*)$", text, re.M).group(1)
                expected += f"bench {b}: {summary}".split() + bench.split()[1:]
        assert man_words(man1 / f"distriproc-{c}.1") == expected, f"distriproc-{c}(1) differs from its --help"


def complete(completion, *words):
    """What bash completion offers for the command line WORDS (the last one is
    the word being completed)."""
    script = (f"source {completion}\nCOMP_WORDS=({' '.join(repr(w) for w in words)})\n"
              f"COMP_CWORD={len(words) - 1}\n_distriproc\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n")
    return set(util.run(["bash", "-c", script]).stdout.split())


def test_bash_completion_offers_commands_and_each_commands_options(prefix):
    binary = prefix / "bin/distriproc"
    completion = prefix / "share/bash-completion/completions/distriproc"
    top = help_text(binary)
    assert complete(completion, "distriproc", "") == set(command_names(top)) | {"--help"}
    assert complete(completion, "distriproc", "lab", "") == {"up", "down", "status", "exec", "cluster"}
    for c in command_names(top):
        text = help_text(binary, c)
        # Options that start an item line of the help ("  --key FILE   ...", "  -v, --verbose").
        listed = set(re.findall(r"^ {2,4}(?:-\w, )?(--[a-z][\w-]*)", text, re.M))
        offered = complete(completion, "distriproc", c, "--")
        assert listed <= offered, f"{c}: --help lists {sorted(listed - offered)} but completion lacks them"
    assert "--sizes" in complete(completion, "distriproc", "bench", "ttfr", "--")


# ---- systemd units ------------------------------------------------------------------------

def test_systemd_units_verify_offline(prefix, tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze not found: install systemd (Debian: apt-get install systemd)")
    unit_dir = prefix / "lib/systemd/system"
    for u in UNITS:
        text = (unit_dir / u).read_text()
        assert f"ExecStart={prefix}/bin/distriproc " in text
        assert "LoadCredential=key:/etc/distriproc/%i.key" in text and "--key %d/key" in text
        assert "PrivateTmp=yes" in text and "NoNewPrivileges=yes" in text
    cp = systemd_verify(unit_dir, prefix / "share/man", INSTANCES)
    assert cp.returncode == 0 and cp.stdout + cp.stderr == "", cp.stdout + cp.stderr
    # The check can fail: a misspelled directive and a missing binary are reported.
    bad = tmp_path / "units"
    bad.mkdir()
    text = (unit_dir / UNITS[0]).read_text()
    (bad / UNITS[0]).write_text(text.replace("NoNewPrivileges=", "NoNewPrivilege=")
                                .replace(f"{prefix}/bin/distriproc", f"{prefix}/bin/nonexistent"))
    cp = systemd_verify(bad, prefix / "share/man", INSTANCES[:1])
    out = cp.stdout + cp.stderr
    assert "Unknown key" in out and "NoNewPrivilege" in out and "nonexistent" in out, out


def test_page_server_runs_unprivileged_as_its_unit_runs_it(prefix, procs, tmp_path):
    """distriproc-serve@ runs with DynamicUser=, NoNewPrivileges= and no
    capabilities: serve must work that way (here: uid 65534, no_new_privs, an
    empty capability set) on images it owns, with the key readable only by it."""
    # pytest's tmp_path is in a root-only directory: use one that uid 65534 can reach.
    work = tempfile.mkdtemp(prefix="distriproc-unpriv-")
    try:
        os.chmod(work, 0o755)
        images, key = os.path.join(work, "images"), os.path.join(work, "key")
        shutil.copytree(os.path.join(util.ROOT, "tests/fixtures/images-tinymem"), images)
        util.run([util.DISTRIPROC, "keygen", key])
        # The client (root here) reads its own copy: a key file must belong to
        # whoever uses it (docs/local-security.md).
        client_key = os.path.join(work, "client.key")
        shutil.copy(key, client_key)
        os.chmod(client_key, 0o600)
        util.run(["chown", "-R", "65534:65534", images, key])
        port = 17680 + os.getpid() % 100
        server = procs.spawn(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--no-new-privs",
                              "--inh-caps=-all", "--bounding-set=-all", util.DISTRIPROC, "serve",
                              "--images", images, "--listen", f"127.0.0.1:{port}", "--key", key],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        util.wait_until(lambda: server.poll() is None
                        and util.run(["ss", "-ltnH", f"sport = :{port}"]).stdout.strip() != "",
                        20, "the unprivileged page server to listen")
        cp = util.run([util.DISTRIPROC, "query", "--source", f"127.0.0.1:{port}", "--key", client_key, "stats"])
        assert cp.stdout.lstrip().startswith("{"), cp.stdout
        server.terminate()
        assert server.wait(timeout=20) == 0, server.stderr.read()
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---- Debian package -------------------------------------------------------------------------

@pytest.mark.time_limit(420)
def test_debian_package_builds_installs_runs_and_removes(procs, tmp_path):
    missing = [t for t in ("dpkg-buildpackage", "dh", "fakeroot") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"Debian packaging tools missing ({', '.join(missing)}): run 'make deps-pkg' to test the package")
    status = util.run(["dpkg-query", "-W", "-f=${Status}", "distriproc"], check=False).stdout
    assert "installed" not in status.split(), \
        "a distriproc package is installed on this machine; remove it (dpkg -r distriproc) before this test"
    # Build from a copy of the checkout's files (dpkg-buildpackage cleans the tree it runs in).
    src = tmp_path / "distriproc"
    listed = util.run(["git", "-C", util.ROOT, "ls-files", "-co", "--exclude-standard", "-z"]).stdout
    for rel in filter(None, listed.split("\0")):
        if os.path.isfile(os.path.join(util.ROOT, rel)):
            os.makedirs(src / os.path.dirname(rel), exist_ok=True)
            shutil.copy2(os.path.join(util.ROOT, rel), src / rel)
    os.symlink(os.path.realpath(os.path.join(util.ROOT, ".deps")), src / ".deps")
    util.run(["sh", "-c", f"cd {src} && dpkg-buildpackage -us -uc -b -j2"], timeout=360)
    debs = [p for p in os.listdir(tmp_path) if re.match(r"distriproc_.*_amd64\.deb$", p)]
    assert len(debs) == 1, os.listdir(tmp_path)
    installed = False
    try:
        util.run(["dpkg", "-i", tmp_path / debs[0]], timeout=120)
        installed = True
        files = util.run(["dpkg", "-L", "distriproc"]).stdout.split("\n")
        assert "/usr/bin/distriproc" in files and "/usr/lib/distriproc/bin/criu" in files
        assert util.run(["/usr/bin/distriproc", "--help"]).stdout == help_text(util.DISTRIPROC)
        assert util.run(["man", "-w", "distriproc-serve"]).stdout.strip() == \
            "/usr/share/man/man1/distriproc-serve.1.gz"
        cp = checkpoint_with("/usr/bin/distriproc", procs, tmp_path, "img")
        assert cp.returncode == 0, cp.stderr
        cp = systemd_verify("/lib/systemd/system", "/usr/share/man", INSTANCES)
        assert cp.returncode == 0 and cp.stdout + cp.stderr == "", cp.stdout + cp.stderr
        util.run(["dpkg", "-r", "distriproc"], timeout=120)
        installed = False
    finally:
        if installed:
            util.run(["dpkg", "-r", "distriproc"], timeout=120, check=False)
    assert util.run(["dpkg-query", "-W", "-f=${Status}", "distriproc"], check=False).stdout \
        in ("", "unknown ok not-installed", "deinstall ok not-installed")
    left = [f for f in files if f and not os.path.isdir(f) and os.path.lexists(f)]
    assert left == [], f"left behind by dpkg -r: {left}"
    assert not os.path.exists("/usr/lib/distriproc") and not os.path.exists("/usr/share/doc/distriproc")
