"""GPU 2:4 semi-structured: real checks where CUDA capability ≥ 8.0 exists, a clear refusal elsewhere."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_llama
from prunekit import semi_structured
from prunekit.config import PruneConfig
from prunekit.pruner import prune

SUPPORTED, WHY = semi_structured.support()
needs_gpu = pytest.mark.skipif(not SUPPORTED, reason=f"2:4 semi-structured needs CUDA capability >= 8.0: {WHY}")


def test_support_says_why_not():
    ok, why = semi_structured.support()
    assert ok or why


@pytest.mark.skipif(SUPPORTED, reason="this machine supports 2:4")
def test_refuses_without_a_capable_gpu():
    with pytest.raises(RuntimeError, match="not available"):
        semi_structured.to_semi_structured(tiny_llama())


@needs_gpu
def test_2to4_matches_dense_masked_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    model = LlamaForCausalLM(cfg).eval()
    prune(model, PruneConfig(method="magnitude", sparsity=0.5, pattern="2:4"))
    model = model.half().cuda()
    ids = torch.randint(0, 256, (1, 64), device="cuda")
    with torch.no_grad():
        ref = model(ids).logits.float()
        names = semi_structured.to_semi_structured(model)
        out = model(ids).logits.float()
    assert len(names) == 14
    assert (out - ref).abs().max() <= 2e-2 * ref.abs().max()  # fp16 accumulation order differs


@needs_gpu
def test_time_2to4():
    ms = semi_structured.time_2to4((1024, 1024), 128)
    assert ms["dense"] > 0 and ms["semi_structured"] > 0
