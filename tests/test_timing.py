from __future__ import annotations

import torch

from prunekit.timing import alternate, copies_past_cache, llc_bytes, peak_rss_bytes, reset_peak_rss, rss_bytes


def test_alternate_interleaves_and_takes_medians():
    calls = []
    out = alternate({"a": lambda i: calls.append(("a", i)), "b": lambda i: calls.append(("b", i))}, reps=3, warmup=1)
    assert set(out) == {"a", "b"} and all(v >= 0 for v in out.values())
    assert calls == [("a", 0), ("b", 0), ("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]


def test_copies_past_cache():
    llc = llc_bytes()
    assert llc > 0
    assert copies_past_cache(llc) == 3           # 2 × LLC needs three copies of an LLC-sized object
    assert copies_past_cache(10 * llc) == 2      # at least two, so consecutive calls never reuse a copy


def test_peak_rss_tracks_a_big_allocation():
    if not reset_peak_rss():
        return  # no /proc/self/clear_refs here: nothing to check
    before = rss_bytes()
    big = torch.ones(50_000_000)  # 200 MB
    del big
    assert peak_rss_bytes() - before > 150e6
    reset_peak_rss()
    assert peak_rss_bytes() - rss_bytes() < 150e6
