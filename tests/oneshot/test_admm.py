"""ADMM fixed-mask update: exact zeros off the mask, lower error than SparseGPT on the same mask."""

from __future__ import annotations

import pytest
import torch

from prunekit.errors import PrunekitError
from prunekit.oneshot.admm import admm_update
from prunekit.oneshot.sparsegpt import sparsegpt_prune


def recon(w0, w, H):
    d = w0 - w
    return float(torch.trace(d @ H @ d.T))


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_beats_sparsegpt_on_its_own_mask(nm):
    torch.manual_seed(0)
    X = torch.randn(512, 64) @ torch.randn(64, 64) * 0.3 + torch.randn(64)  # correlated inputs (tokens, cols)
    H = X.T @ X / 512
    w0 = torch.randn(32, 64)
    new, keep, _ = sparsegpt_prune(w0, H, 0.5, "layer", nm, blocksize=16)
    refined = admm_update(w0, keep, H, start=new)
    assert (refined[~keep] == 0).all()
    assert recon(w0, refined, H) < 0.97 * recon(w0, new, H)


def test_full_mask_returns_the_dense_weights():
    torch.manual_seed(1)
    X = torch.randn(256, 16)
    w0 = torch.randn(8, 16)
    out = admm_update(w0, torch.ones(8, 16, dtype=torch.bool), X.T @ X / 256, percdamp=1e-6)
    assert torch.allclose(out, w0, atol=1e-3)


def test_exact_solution_on_a_small_case():
    """One row, keep columns {0, 2}: the optimum is w_S = w0_S + H_SS⁻¹ H_S,P w0_P (hand-checkable)."""
    H = torch.tensor([[2.0, 0.5, 0.1], [0.5, 1.0, 0.3], [0.1, 0.3, 1.5]])
    w0 = torch.tensor([[1.0, -2.0, 0.5]])
    keep = torch.tensor([[True, False, True]])
    S, P = [0, 2], [1]
    exact = w0[0, S] + torch.linalg.solve(H[S][:, S], H[S][:, P] @ w0[0, P])
    out = admm_update(w0, keep, H, iters=100, percdamp=1e-8)
    assert torch.allclose(out[0, S], exact, atol=1e-3) and out[0, 1] == 0


def test_bad_shapes():
    with pytest.raises(PrunekitError, match="shapes"):
        admm_update(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool), torch.eye(4))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_refine_admm_in_prune_lowers_layer_errors(method):
    """On a tiny Llama, refining each layer's weights on its mask lowers the mean reconstruction error."""
    from conftest import tiny_llama
    from prunekit.oneshot.config import PruneConfig
    from prunekit.oneshot.pruner import prune
    from prunekit.targets import find_targets

    calib = torch.randint(0, 256, (4, 64), generator=torch.Generator().manual_seed(0))
    errors = {}
    for refine in ("none", "admm"):
        model = tiny_llama()
        result = prune(model, PruneConfig(method=method, sparsity=0.5, pattern="2:4", refine=refine), calib)
        errors[refine] = sum(r.recon_error for r in result.layers) / len(result.layers)
        assert all(r.sparsity == 0.5 for r in result.layers)
        assert not any(torch.signbit(w[w == 0]).any() for w in (m.weight for m in find_targets(model).values()))
    assert errors["admm"] < errors["none"]


def test_refine_needs_calibration():
    from prunekit.oneshot.config import PruneConfig

    with pytest.raises(PrunekitError, match="calibration"):
        PruneConfig(method="magnitude", refine="admm")
    with pytest.raises(PrunekitError, match="refine"):
        PruneConfig(method="wanda", refine="exact")
