import pytest
import torch

from prunekit.oneshot.stats import InputStats
from prunekit.quant.gptq import gptq_quantize
from prunekit.quant.grid import rtn


def _layer(seed: int, rows: int = 24, cols: int = 64, tokens: int = 512):
    """A random layer and correlated inputs (a low-rank mix plus noise), as real activations are."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(tokens, 8, generator=g) @ torch.randn(8, cols, generator=g)
    x = mix + 0.1 * torch.randn(tokens, cols, generator=g)
    x = x * torch.rand(cols, generator=g) * 3  # uneven input scales
    stats = InputStats(cols, True)
    stats.add(x)
    return torch.randn(rows, cols, generator=g) * 0.02, x, stats


def _error(w, new, x):
    return float(((x @ (w - new).T) ** 2).sum())


@pytest.mark.parametrize("bits,groupsize,sym,act_order", [
    (4, 0, False, False), (4, 16, False, False), (3, 32, True, False), (4, 16, False, True), (2, 0, False, True),
])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gptq_reconstructs_better_than_rtn_and_stays_on_its_grid(seed, bits, groupsize, sym, act_order):
    w, x, stats = _layer(seed)
    new, grid, escalations = gptq_quantize(w, stats.hessian, bits, groupsize, sym, act_order=act_order, blocksize=16)
    baseline, _ = rtn(w, bits, groupsize, sym)
    assert escalations == 0
    assert _error(w, new, x) < 0.9 * _error(w, baseline, x)
    assert torch.equal(grid.apply(new), new)  # every weight on its own group's grid


def test_masked_gptq_keeps_pruned_weights_zero():
    w, x, stats = _layer(3)
    keep = torch.rand(w.shape, generator=torch.Generator().manual_seed(0)) > 0.5
    new, grid, _ = gptq_quantize(w * keep, stats.hessian, 4, 16, keep=keep, blocksize=16)
    assert bool((new[~keep] == 0).all()) and torch.equal(grid.apply(new), new)
    baseline, _ = rtn(w * keep, 4, 16, False)
    assert _error(w * keep, new, x) < _error(w * keep, baseline, x)


def test_groups_that_straddle_lazy_blocks():
    """A group wider than a block reads its later columns from outside the block: still on the grid."""
    w, x, stats = _layer(4, cols=60)
    new, grid, _ = gptq_quantize(w, stats.hessian, 4, 24, blocksize=16)
    assert grid.scale.shape == (24, 3) and torch.equal(grid.apply(new), new)
