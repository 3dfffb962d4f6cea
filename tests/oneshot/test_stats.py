"""Streaming statistics: the symmetric Gram product, chunking, and low-precision inputs."""

import pytest
import torch

from prunekit.oneshot import stats
from prunekit.oneshot.stats import InputStats, gram_add_


@pytest.mark.parametrize("cols", [1, 7, 127, 128, 300, 1000])
def test_gram_add_equals_full_product(cols):
    g = torch.Generator().manual_seed(cols)
    x = torch.randn(50, cols, generator=g, dtype=torch.float64)
    zero = gram_add_(torch.zeros(cols, cols, dtype=torch.float64), x)
    torch.testing.assert_close(zero, x.T @ x, rtol=1e-12, atol=1e-12)
    assert torch.equal(zero, zero.T)  # exactly symmetric, not just close
    y = torch.randn(30, cols, generator=g, dtype=torch.float64)
    both = gram_add_(zero.clone(), y)  # accumulating keeps it exactly symmetric
    torch.testing.assert_close(both, x.T @ x + y.T @ y, rtol=1e-12, atol=1e-12)
    assert torch.equal(both, both.T)


@pytest.mark.parametrize("hessian", [False, True])
def test_chunked_sums_equal_one_chunk(monkeypatch, hessian):
    x = torch.randn(3, 40, 16, generator=torch.Generator().manual_seed(0))
    whole = InputStats(16, hessian)
    whole.add(x)
    monkeypatch.setattr(stats, "CHUNK_TOKENS", 7)  # 120 tokens in 18 chunks, last one short
    parts = InputStats(16, hessian)
    parts.add(x)
    assert parts.count == whole.count == 120
    flat = x.reshape(-1, 16)
    torch.testing.assert_close(parts.norms_sq, whole.norms_sq)
    torch.testing.assert_close(whole.norms_sq, (flat * flat).mean(0))
    if hessian:
        torch.testing.assert_close(parts.xtx, whole.xtx)
        torch.testing.assert_close(whole.xtx, flat.T @ flat)
        assert whole.sq_sum is None  # Σx² is read off the diagonal


def test_bf16_inputs_accumulate_in_float32():
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0)).bfloat16()
    s = InputStats(8, hessian=True)
    s.add(x)
    ref = x.double().reshape(-1, 8)
    assert s.xtx.dtype == torch.float32 and s.norms_sq.dtype == torch.float32
    torch.testing.assert_close(s.hessian.double(), 2 * ref.T @ ref / 64, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(s.norms_sq.double(), (ref * ref).mean(0), rtol=1e-6, atol=1e-6)


def test_hessian_is_scaled_in_place_once():
    """H = 2XᵀX/n overwrites the sum (no second (cols, cols) matrix); norms stay right; no inputs after it."""
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    s = InputStats(2, True)
    s.add(x)
    storage = s.xtx.data_ptr()
    h = s.hessian
    assert h.data_ptr() == storage and s.hessian is h  # the same tensor, scaled once
    torch.testing.assert_close(h, torch.tensor([[10.0, -1.0], [-1.0, 5.0]]))  # 2/2 · [[1+9, 2-3], [2-3, 4+1]]
    torch.testing.assert_close(s.norms_sq, torch.tensor([5.0, 2.5]))  # E[x²] per input
    with pytest.raises(RuntimeError, match="after the Hessian"):
        s.add(x)
