"""The pruning passes' CPU memory pool: reuse, first fit with coalescing, trimming, clean exit."""

import pytest
import torch

from prunekit.oneshot.memory_pool import pool_stats, pooled_cpu_memory
from prunekit.timing import rss_bytes

pytestmark = pytest.mark.kernel
MB = 1 << 20


def _floats(mb: float) -> torch.Tensor:
    return torch.empty(int(mb * MB) // 4)


def test_freed_block_is_reused_and_holes_are_filled_first():
    with pooled_cpu_memory(min_bytes=MB):
        a, b, c = _floats(2), _floats(2), _floats(2)
        ptr = {k: t.data_ptr() for k, t in zip("abc", (a, b, c), strict=True)}
        assert ptr["b"] == ptr["a"] + 2 * MB and ptr["c"] == ptr["b"] + 2 * MB  # carved in address order
        del b
        hole = _floats(1.5)
        assert hole.data_ptr() == ptr["b"]  # first fit: b's hole, not the end
        del a  # free now: [0, 2) and [3.5, 4) MB, apart
        d = _floats(2.5)
        assert d.data_ptr() >= ptr["c"] + 2 * MB  # fits in neither piece: carved past c
        e = _floats(2)
        assert e.data_ptr() == ptr["a"]
        del hole, c, d, e


def test_adjacent_free_blocks_coalesce():
    with pooled_cpu_memory(min_bytes=MB):
        a, b, keep = _floats(1), _floats(1), _floats(1)
        start = a.data_ptr()
        del a, b
        assert _floats(2).data_ptr() == start  # 1 + 1 MB merged into one 2 MB range
        del keep


def test_small_requests_and_requests_outside_the_block_bypass_the_pool():
    with pooled_cpu_memory(min_bytes=MB):
        live = pool_stats()["live_bytes"]
        small = torch.empty(1000)
        assert pool_stats()["live_bytes"] == live
        big = _floats(4)
        assert pool_stats()["live_bytes"] == live + 4 * MB
    after = torch.empty(2 * MB)
    assert pool_stats()["pooling"] == 0 and pool_stats()["live_bytes"] == live + 4 * MB
    del big, small, after
    assert pool_stats()["live_bytes"] == live  # a pool block freed after the block is given back


def test_trim_returns_free_pages_to_the_system():
    with pooled_cpu_memory(min_bytes=MB) as trim:
        x = _floats(64).fill_(1.0)  # touch every page
        del x
        resident = rss_bytes()
        released = trim()
        assert released >= 64 * MB
        assert rss_bytes() < resident - 48 * MB


def test_results_under_the_pool_are_unchanged_and_nesting_keeps_the_outer_pool():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(700, 900, generator=g), torch.randn(900, 800, generator=g)
    ref = a @ b
    with pooled_cpu_memory(min_bytes=MB):
        with pooled_cpu_memory(min_bytes=MB):
            inner = a @ b  # GEMM scratch comes through the raw allocation path
        assert pool_stats()["pooling"] == 1  # the inner block did not end pooling
        outer = torch.softmax(a @ b, dim=1)
    assert torch.equal(inner, ref)
    torch.testing.assert_close(outer, torch.softmax(ref, dim=1), rtol=0, atol=0)
