"""The runtime layout table, walked row by row: every layout builds, checks, unpacks and runs a 2:4 weight on an int4
grid exactly, and ``candidates`` offers a layout only where its row says it fits."""

import pytest
import torch

from prunekit.quant.grid import rtn
from prunekit.run import kernel, quant_pack
from prunekit.run.layouts import COMPILED, LAYOUTS, QUANT_LAYOUTS
from prunekit.run.sparse_linear import SparseLinear
from prunekit.run.swap import candidates


def _weight(rows=24, cols=128, pattern=True):
    """A 2:4 (or 50% unstructured) weight on a 4-bit grid of 64-column groups (zero is on every such grid)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(rows, cols, generator=g)
    if pattern:
        w.view(rows, -1, 4)[..., 1::2] = 0
    else:
        w *= torch.rand(rows, cols, generator=g) > 0.5
    return rtn(w, 4, 64, False)


@pytest.mark.kernel
@pytest.mark.parametrize("name", list(LAYOUTS))
def test_every_layout_runs_its_weight_exactly(name):
    w, grid = _weight()
    layer = SparseLinear(w, None, name, grid)
    row = LAYOUTS[name]
    assert set(row.buffers) <= set(dict(layer.named_buffers()))
    assert torch.equal(layer.dense_weight(), w), name
    x = torch.randn(3, w.shape[1])
    torch.testing.assert_close(layer(x), x @ w.T, rtol=1e-5, atol=1e-5)
    assert (row.entry is not None) == (name in COMPILED)


def test_the_table_covers_both_packers():
    assert set(kernel.KINDS) | set(quant_pack.KINDS) <= set(LAYOUTS)
    assert set(QUANT_LAYOUTS) == set(quant_pack.QUANT_KINDS)


def test_candidates_follow_the_rows():
    w, grid = _weight()
    every = tuple(LAYOUTS)
    assert set(candidates(w, 0.5, every, 0.05, grid)) == set(LAYOUTS)  # 2:4 on a 4-bit g64 grid: all fit
    dense_only = candidates(w, 0.01, every, 0.05, grid)
    assert all(not LAYOUTS[k].sparse for k in dense_only) and dense_only
    assert not any(LAYOUTS[k].quantized for k in candidates(w, 0.5, every, 0.05, None))  # no grid
    unstructured, grid2 = _weight(pattern=False)
    offered = candidates(unstructured, 0.5, every, 0.05, grid2)
    assert set(offered) == {k for k, row in LAYOUTS.items() if row.pattern is None}
