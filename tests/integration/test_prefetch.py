"""Prefetch end to end: memwalk is checkpointed in `src`, served by the page
server and restored lazily in `dst` with a prefetch policy, then its walker
reads its memory in order (seq, auto) or every 8th page (stride), or four
walker threads read their own quarters in order at once (streams: their
faults interleave, so no two consecutive faults are neighbours; the same
without --prefetch: restore's default is streams). The
lazy-pages daemon must bring in the pages ahead of the walker, so far fewer
faults reach the page server than the walk touches pages. The planner alone is
unit-tested (tests/unit/test_prefetch.c); this checks that the daemon acts on
its plan: with the plan ignored every page of the walk is one remote fault.

Every page memwalk reads is verified against its expected content."""

import pytest

import util

MIB = 32
NPAGES = MIB * 256
SERVE_PORT = 7301

# policy -> (memwalk access pattern, pages between two accesses, threads). stride:8
# walks every 8th page of the area, lap after lap over the same pages (8
# divides NPAGES), so the pages between are never read: a sequential window
# brings in 7 useless pages for each useful one there.
CASES = {
    "seq": ("seq", 1, 1),
    "stride": ("stride:8", 8, 1),
    "auto": ("seq", 1, 1),
    "streams": ("seq", 1, 4),
    # no --prefetch: restore's default is streams (the interleaved walks of
    # four threads are prefetched, where none would fault on every page)
    "default": ("seq", 1, 4),
}
DEFAULT_POLICY = "streams"
OTHER_PAGES = 128  # the rest of memwalk's memory that faults in (stack, heap, generations, locks): ~60 pages


def fault_bound(step):
    """Remote faults allowed while the walk reads its TOUCHED = NPAGES/step
    pages once. seq (seq:8) and stride (depth 8) bring each faulting page
    together with the next 8 pages of the pattern, so the walk faults about
    once per 9 pages it reads; auto starts at 8 and doubles its window up to
    256 (fewer still); streams finds each of the four threads' walks among
    the interleaved faults and doubles each one's window the same way.
    TOUCHED/4 leaves room for the window restarting at each
    lap, plus OTHER_PAGES for the rest of memwalk's memory. Without prefetch
    every page read is a fault of its own (>= TOUCHED); for stride, a
    sequential window would still fault on every other page at best
    (about TOUCHED/2: the window reaches the next stride)."""
    return NPAGES // step // 4 + OTHER_PAGES


@pytest.mark.time_limit(300)
@pytest.mark.parametrize("policy", sorted(CASES))
def test_walk_is_prefetched(lab, procs, criu, tmp_path, policy):
    pattern, step, threads = CASES[policy]
    touched, bound = NPAGES // step, fault_bound(step)
    images = util.checkpoint_container(
        procs, tmp_path,
        [util.MEMWALK, "--mib", MIB, "--threads", threads, "--pattern", pattern, "--seed", "23"],
        lambda: util.wait_until(
            lambda: util.memwalk_request(util.HOSTS["src"], host="src")["ops"] > 2 * NPAGES,
            60, "memwalk to walk its memory twice"))
    key = tmp_path / "key"
    util.distriproc("keygen", key)
    listen = util.serve_images(procs, images, key, SERVE_PORT)
    workdir = tmp_path / "wd"
    chosen = [] if policy == "default" else ["--prefetch", policy]
    res = util.restore_json(procs, workdir, "--source", listen, "--key", key, *chosen)
    assert res["pid"] > 0, res
    if policy == "default":
        policy = DEFAULT_POLICY
        assert res["prefetch"] == DEFAULT_POLICY, res

    # One full pass of the walker after the restore: every page of its pattern read once.
    first = util.memwalk_request(util.HOSTS["dst"], host="dst")
    assert first["pattern"] == pattern and first["pages"] == NPAGES, first
    walked = util.wait_until(
        lambda: (lambda s: s if s["ops"] >= first["ops"] + touched else None)(
            util.memwalk_request(util.HOSTS["dst"], host="dst")),
        60, "memwalk to walk all of its memory after the restore")
    assert walked["errors"] == 0 and walked["bad_bytes"] == 0, walked

    s = util.lazy_stats(workdir)
    tot = s["total"]
    assert s["prefetch"].split(":")[0] == policy, s["prefetch"]
    brief = {k: tot[k] for k in ("faults_remote", "faults_waited_inflight", "pages_fetched", "pages_prefetched",
                                 "prefetch_hits", "prefetch_misses", "fetch_requests")}
    assert tot["faults_remote"] <= bound, (
        f"{tot['faults_remote']} remote faults for a {pattern} walk over {touched} pages with prefetch {policy} "
        f"(bound {bound}): the daemon did not fetch ahead of the walk; {brief}")
    assert tot["pages_prefetched"] > 0 and tot["prefetch_hits"] > 0, brief
    assert tot["fetch_errors"] == 0, tot

    v = util.memwalk_request(util.HOSTS["dst"], command="VERIFY", host="dst")
    assert v["verify_pages"] == NPAGES and v["verify_errors"] == 0 and v["errors"] == 0, v
