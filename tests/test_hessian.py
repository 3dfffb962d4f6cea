"""The Hessian math SparseGPT and GPTQ share."""

import logging

import pytest
import torch

from prunekit.errors import PrunekitError
from prunekit.hessian import inverse_cholesky, without_dead_inputs
from prunekit.oneshot.stats import InputStats


def test_failed_cholesky_escalates_with_warning(caplog):
    with caplog.at_level(logging.WARNING):
        with pytest.raises(PrunekitError, match="not positive definite"):
            inverse_cholesky(torch.full((4, 4), float("nan")), 0.01, "bad")
    assert "escalating" in caplog.text
    indefinite = torch.tensor([[1.0, 0.0], [0.0, -0.001]])
    u, escalations = inverse_cholesky(indefinite, 0.0001, "mild")
    assert escalations >= 1 and torch.isfinite(u).all()


def test_inverse_cholesky_equals_the_three_separate_steps():
    """In place in one buffer, bit for bit the factor of the three out-of-place steps: U with UᵀU = (H + λI)⁻¹."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 24, generator=g)
    stats = InputStats(24, True)
    stats.add(x)
    h = stats.hessian
    before = h.clone()
    u, escalations = inverse_cholesky(h, 0.01, "layer")
    damped = h + 0.01 * torch.diag(h).mean() * torch.eye(24)
    ref = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(damped)), upper=True)
    assert escalations == 0 and torch.equal(h, before)  # H is left as it was (q/k/v share it)
    torch.testing.assert_close(u, ref, rtol=0, atol=0)
    torch.testing.assert_close(u.T.double() @ u.double(), torch.linalg.inv(damped.double()), rtol=1e-4, atol=1e-6)


def test_dead_inputs_are_zeroed_in_copies_only():
    """An input with H_jj = 0 gets its weights zeroed and H_jj = 1, in copies: the shared H stays as it was."""
    w = torch.arange(6, dtype=torch.bfloat16).view(2, 3)
    h = torch.diag(torch.tensor([2.0, 0.0, 3.0]))
    before = h.clone()
    W, H = without_dead_inputs(w, h)
    assert W.dtype == torch.float32 and torch.equal(W, torch.tensor([[0.0, 0.0, 2.0], [3.0, 0.0, 5.0]]))
    assert torch.equal(torch.diag(H), torch.tensor([2.0, 1.0, 3.0])) and torch.equal(h, before)
    W, H = without_dead_inputs(w, before + torch.eye(3))
    assert torch.equal(W, w.float()) and torch.equal(H, before + torch.eye(3))
