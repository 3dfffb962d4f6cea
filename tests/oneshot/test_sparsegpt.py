
import pytest
import torch

from prunekit.oneshot.scores import magnitude_scores, wanda_scores
from prunekit.oneshot.sparsegpt import sparsegpt_prune
from prunekit.oneshot.stats import InputStats
from prunekit.selection import count_to_prune, is_valid_nm, select_mask


def _err(w, w_hat, x):
    return float(((x @ (w - w_hat).T) ** 2).sum() / ((x @ w.T) ** 2).sum())


def _layer(seed, rows=24, cols=64, tokens=512):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    # Correlated inputs with uneven scales, as in real activations.
    x = torch.randn(tokens, cols, generator=g) @ torch.randn(cols, cols, generator=g) * 0.3
    x = x * torch.rand(cols, generator=g) * 3
    stats = InputStats(cols, True)
    stats.add(x)
    return w, x, stats


def test_dead_input_is_pruned_first():
    w = torch.tensor([[5.0, 1.0, 2.0, 3.0]])
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    x[:, 0] = 0  # input 0 never fires: its large weight is useless
    stats = InputStats(4, True)
    stats.add(x)
    new, keep, _ = sparsegpt_prune(w, stats.hessian, 0.25, blocksize=4)
    assert keep.tolist() == [[False, True, True, True]]
    assert new[0, 0] == 0


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("sparsity,nm", [(0.5, None), (0.7, None), (0.5, (2, 4))])
def test_reconstruction_beats_magnitude_and_wanda(seed, sparsity, nm):
    w, x, stats = _layer(seed)
    new, keep, _ = sparsegpt_prune(w, stats.hessian, sparsity, "layer", nm, blocksize=16)
    for scores in (magnitude_scores(w), wanda_scores(w, stats.norms_sq)):
        other = w * select_mask(scores, sparsity, "row", nm)
        assert _err(w, new, x) < _err(w, other, x)
    assert torch.equal(new != 0, keep & (w != 0))


@pytest.mark.parametrize("cols,blocksize", [(64, 16), (50, 16), (37, 128)])
def test_exact_counts(cols, blocksize):
    w, _, stats = _layer(1, rows=9, cols=cols)
    _, keep, _ = sparsegpt_prune(w, stats.hessian, 0.6, "layer", None, blocksize)
    assert int((~keep).sum()) == count_to_prune(9 * cols, 0.6)
    _, keep, _ = sparsegpt_prune(w, stats.hessian, 0.6, "row", None, blocksize)
    assert (~keep).sum(1).tolist() == [count_to_prune(cols, 0.6)] * 9


def test_nm_valid():
    w, _, stats = _layer(2, cols=64)
    new, keep, _ = sparsegpt_prune(w, stats.hessian, 0.5, "layer", (2, 4), blocksize=32)
    assert is_valid_nm(new, 2, 4) and is_valid_nm(keep, 2, 4) and int(keep.sum()) == 24 * 32


def test_singular_hessians():
    g = torch.Generator().manual_seed(3)
    base = torch.randn(128, 8, generator=g)
    x = torch.cat([base, base[:, :4]], dim=1)  # duplicate input columns: XᵀX is singular
    w = torch.randn(5, 12, generator=g)
    for inputs in (x, torch.zeros(128, 12)):
        stats = InputStats(12, True)
        stats.add(inputs)
        new, keep, _ = sparsegpt_prune(w, stats.hessian, 0.5, blocksize=4)
        assert torch.isfinite(new).all() and int((~keep).sum()) == 30


