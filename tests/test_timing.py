from __future__ import annotations

import subprocess
import sys

import pytest

from prunekit import timing
from prunekit.timing import alternate, copies_past_cache, llc_bytes


def test_alternate_interleaves_and_takes_medians(monkeypatch):
    clock = [0.0]  # a fake clock each call advances by its scripted duration: medians, not wall time
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])
    durations = {"a": [9.0, 1.0, 1.0, 5.0], "b": [9.0, 2.0, 3.0, 3.0]}  # first: the warm-up call
    calls = []

    def fn(name):
        def call(i):
            calls.append((name, i))
            clock[0] += durations[name].pop(0)
        return call

    out = alternate({"a": fn("a"), "b": fn("b")}, reps=3, warmup=1)
    assert out == {"a": 1.0, "b": 3.0}  # medians of (1, 1, 5) and (2, 3, 3); the means would be 2.33 and 2.67
    assert calls == [("a", 0), ("b", 0), ("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]


def test_copies_past_cache():
    llc = llc_bytes()
    assert llc > 0
    assert copies_past_cache(llc) == 3           # 2 × LLC needs three copies of an LLC-sized object
    assert copies_past_cache(10 * llc) == 2      # at least two, so consecutive calls never reuse a copy
    assert copies_past_cache(1) == 256           # capped


@pytest.mark.slow
def test_peak_rss_tracks_a_big_allocation():
    """In a fresh process (a long-lived one may reuse freed memory without growing RSS)."""
    code = """
import torch
from prunekit.timing import peak_rss_bytes, reset_peak_rss, rss_bytes
if not reset_peak_rss():
    print("unsupported"); raise SystemExit
before = rss_bytes()
big = torch.ones(50_000_000)  # 200 MB
del big
rise = peak_rss_bytes() - before
reset_peak_rss()
print(rise, peak_rss_bytes() - rss_bytes())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    if out == ["unsupported"]:
        pytest.skip("no /proc/self/clear_refs here")
    rise, after_reset = map(int, out)
    assert rise > 150e6 and after_reset < 150e6
