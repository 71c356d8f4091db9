"""Shared pytest harness of the integration tests.

- The environment is checked once: root, network and pid namespaces, iproute2,
  the built binaries. A missing piece FAILS every test with a message saying
  what to do; nothing is ever skipped.
- Every test has a time bound: @pytest.mark.time_limit(SECONDS), default
  DEFAULT_TIME_LIMIT; enforced with SIGALRM (pytest-timeout is not required).
- SIGTERM (CI's time bound) fails the running test, runs its teardown and
  stops the session: no namespace, process or lab is left behind.
- Fixtures: `procs` (kills everything a test started, even on failure),
  `lab` (lab up; always lab down afterwards), `lab_clean` (no lab before the
  test, none after it), `criu` (path of the working CRIU wrapper)."""

import os
import shutil
import signal
import subprocess

import pytest

import util

DEFAULT_TIME_LIMIT = 120


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "time_limit(seconds): fail the test if its body runs longer than this")
    config.addinivalue_line(
        "markers", "asan: also run against the ASan/UBSan build by make test (DISTRIPROC_BIN=build-asan/distriproc)")


# ---- per-test time bound and SIGTERM -----------------------------------------------

class TimeLimitExceeded(BaseException):
    """Raised by SIGALRM inside the test body. A BaseException, like
    KeyboardInterrupt, so that no `except Exception` in a test or a helper
    (util.wait_until polls through errors) swallows it and runs on past the
    limit; pytest still reports it as the test's failure."""


class Terminated(BaseException):
    """Raised by SIGTERM inside a test's setup or body (CI's bound, see
    .ci/run): the test fails, its fixtures' teardown runs (namespaces,
    processes, labs), and the session stops before the next test."""


_phase = {"name": None, "session": None}


def _sigterm(signum, frame):
    """SIGTERM: stop the session after this test; interrupt the test's setup
    or body so its teardown runs now, but never a teardown (it must finish).
    Later SIGTERMs (make forwards one, timeout sends one to the group) are
    ignored: nothing may cut the cleanup short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.alarm(0)
    session = _phase["session"]
    if session is not None:
        session.shouldstop = "SIGTERM received: stopped after tearing down the running test"
    if _phase["name"] in ("setup", "call"):
        raise Terminated(f"SIGTERM received during {_phase['name']}: tearing down and stopping")


def pytest_sessionstart(session):
    _phase["session"] = session
    signal.signal(signal.SIGTERM, _sigterm)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    _phase["name"] = "setup"
    try:
        yield
    finally:
        _phase["name"] = None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    marker = item.get_closest_marker("time_limit")
    limit = int(marker.args[0]) if marker else DEFAULT_TIME_LIMIT

    def expired(signum, frame):
        raise TimeLimitExceeded(f"{item.nodeid} exceeded its time limit of {limit}s")

    old = signal.signal(signal.SIGALRM, expired)
    _phase["name"] = "call"
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        _phase["name"] = None
        signal.signal(signal.SIGALRM, old)


# ---- what a failed test leaves to read -------------------------------------------

LOG_TAIL_LINES = 12
LOG_TAIL_FILES = 5


def _log_tails(tmp_path):
    """The last lines of the daemon, server and restore logs a test left in its
    tmp_path, newest first: in CI they are the only trace of why it failed."""
    logs = []
    for root, _dirs, files in os.walk(tmp_path):
        for name in files:
            if name.endswith(".log"):
                path = os.path.join(root, name)
                try:
                    logs.append((os.path.getmtime(path), path))
                except OSError:
                    pass
    for _mtime, path in sorted(logs, reverse=True)[:LOG_TAIL_FILES]:
        try:
            with open(path, "rb") as f:
                head = f.read(4096)
                if b"\0" in head:
                    continue  # a binary log (the page server's write-back overlay): no text to show
                f.seek(0)
                lines = f.read().decode(errors="replace").splitlines(keepends=True)[-LOG_TAIL_LINES:]
        except OSError:
            continue
        yield os.path.relpath(path, tmp_path), "".join(lines)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    tmp_path = item.funcargs.get("tmp_path") if hasattr(item, "funcargs") else None
    if report.when == "call" and report.failed and tmp_path is not None:
        for name, text in _log_tails(tmp_path):
            report.sections.append((f"last lines of {name}", text))


# ---- environment -------------------------------------------------------------------

def _environment_problems():
    problems = []
    if os.geteuid() != 0:
        problems.append("not running as root: the tests create network and pid namespaces; "
                        "run them as root (sudo make test)")
        return problems
    for tool in ("ip", "tc", "nsenter", "unshare"):
        if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
            problems.append(f"'{tool}' not found: run 'make deps' (iproute2, util-linux)")
    for ns in ("net", "pid", "mnt"):
        if not os.path.exists(f"/proc/self/ns/{ns}"):
            problems.append(f"the kernel has no {ns} namespaces (/proc/self/ns/{ns} missing)")
    if not problems:
        cp = subprocess.run(["unshare", "--net", "--pid", "--fork", "true"],
                            capture_output=True, text=True, timeout=30)
        if cp.returncode != 0:
            problems.append("cannot create network/pid namespaces "
                            f"(unshare --net --pid --fork true: {cp.stderr.strip()}); "
                            "a container runtime may forbid it: run on a VM or with --privileged")
    for path in (util.DISTRIPROC, util.MEMWALK):
        if not os.access(path, os.X_OK):
            problems.append(f"{path} is not built: run 'make'")
    return problems


@pytest.fixture(scope="session", autouse=True)
def environment():
    problems = _environment_problems()
    if problems:
        pytest.fail("integration tests cannot run here:\n  - " + "\n  - ".join(problems),
                    pytrace=False)


@pytest.fixture(scope="session")
def criu():
    path = util.CRIU
    if not os.access(path, os.X_OK):
        pytest.fail(f"CRIU wrapper {path} missing: run 'make deps'", pytrace=False)
    cp = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    if cp.returncode != 0:
        pytest.fail(f"{path} --version failed: {cp.stderr.strip()}; rerun 'make deps'",
                    pytrace=False)
    return path


# ---- sanitizer reports ---------------------------------------------------------------

# make test runs some files against the ASan/UBSan build with
# ASAN_OPTIONS/UBSAN_OPTIONS log_path under DISTRIPROC_SANITIZER_DIR: a report
# from any of our processes (daemon, guard, server, test drivers), even one
# whose stderr went nowhere or that exited quietly, fails the test it came from.
SANITIZER_DIR = os.environ.get("DISTRIPROC_SANITIZER_DIR")


def _sanitizer_files():
    try:
        return set(os.listdir(SANITIZER_DIR))
    except OSError:
        return set()


@pytest.fixture(autouse=True)
def sanitizer_reports():
    if not SANITIZER_DIR:
        yield
        return
    before = _sanitizer_files()
    yield
    new = sorted(_sanitizer_files() - before)
    if new:
        texts = []
        for name in new:
            with open(os.path.join(SANITIZER_DIR, name), errors="replace") as f:
                texts.append(f"{name}:\n{f.read()[-4000:]}")
        pytest.fail("sanitizer report(s) from this test's processes:\n" + "\n".join(texts), pytrace=False)


# ---- processes and the lab -----------------------------------------------------------

@pytest.fixture
def procs():
    tracker = util.ProcessTracker()
    try:
        yield tracker
    finally:
        tracker.kill_all()


def _lab_down():
    cp = util.distriproc("lab", "down", timeout=60, check=False)
    left = util.lab_leftovers()
    assert cp.returncode == 0 and not left, \
        f"lab down failed (exit {cp.returncode}): {cp.stderr.strip()}; left behind: {left}"


@pytest.fixture
def lab_clean(procs):
    """No lab before the test; whatever the test made is torn down after it."""
    _lab_down()
    try:
        yield
    finally:
        procs.kill_all()
        _lab_down()


@pytest.fixture
def lab(procs):
    """A fresh two-host lab for the test, always torn down afterwards."""
    _lab_down()
    try:
        util.distriproc("lab", "up", timeout=60)
        yield util.HOSTS
    finally:
        procs.kill_all()
        _lab_down()
