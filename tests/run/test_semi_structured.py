"""GPU 2:4 semi-structured: real checks where CUDA capability ≥ 8.0 exists, a clear refusal elsewhere.

Without a GPU, torch's converter is replaced by a stand-in (a ``TwoTensor`` wrapper of the weight) so
that the choice of layers, the reasons given and the all-or-nothing swap are still tested."""

from __future__ import annotations

import pytest
import torch
from torch.testing._internal.two_tensor import TwoTensor

from conftest import tiny_llama
from prunekit.measure.bench import bench_model, weight_bytes
from prunekit.measure.hardware import gpu_verdict
from prunekit.oneshot.config import PruneConfig
from prunekit.oneshot.pruner import prune
from prunekit.run import semi_structured

SUPPORTED, WHY = semi_structured.support()
needs_gpu = pytest.mark.skipif(not SUPPORTED, reason=f"2:4 semi-structured needs CUDA capability >= 8.0: {WHY}")


def two_four(rows: int, cols: int, dtype=torch.float16) -> torch.Tensor:
    return (torch.randn(rows, cols) * torch.tensor([0.0, 1.0, 1.0, 0.0]).repeat(rows, cols // 4)).to(dtype)


def stand_in(refuse_cols: int = 0):
    """A converter like torch's (whose shape rules raise RuntimeError) that runs on CPU."""
    def convert(w: torch.Tensor) -> torch.Tensor:
        if w.shape[1] == refuse_cols:
            raise RuntimeError(f"Error original_tensor.shape {tuple(w.shape)} is not supported!\nsecond line")
        return TwoTensor(w.clone(), w.clone())
    return convert


def test_support_says_why_not():
    ok, why = semi_structured.support()
    assert ok or why


@pytest.mark.skipif(SUPPORTED, reason="this machine supports 2:4")
def test_refuses_without_a_capable_gpu():
    with pytest.raises(RuntimeError, match="not available"):
        semi_structured.to_semi_structured(tiny_llama())


def test_compress_says_why_each_layer_is_left_dense(monkeypatch):
    monkeypatch.setattr(torch.sparse, "to_sparse_semi_structured", stand_in(refuse_cols=96))
    weights = {"ok": two_four(32, 64), "fp32": two_four(32, 64, torch.float32), "dense": torch.randn(32, 64).half(),
               "refused": two_four(32, 96)}
    done, skipped = semi_structured.compress(weights)
    assert list(done) == ["ok"] and torch.equal(done["ok"].a, weights["ok"])
    assert skipped == {"fp32": "torch.float32, not float16 or bfloat16", "dense": "not 2:4",
                       "refused": "Error original_tensor.shape (32, 96) is not supported!"}


def test_to_semi_structured_swaps_all_or_nothing(monkeypatch):
    monkeypatch.setattr(semi_structured, "support", lambda device=0: (True, ""))
    model = tiny_llama()
    prune(model, PruneConfig(method="magnitude", sparsity=0.5, pattern="2:4"))
    model.half()
    before = {n: p for n, p in model.named_parameters()}
    calls = []

    def fails_late(w):
        calls.append(w)
        if len(calls) == 10:
            raise ValueError("out of memory, say")
        return TwoTensor(w.clone(), w.clone())
    monkeypatch.setattr(torch.sparse, "to_sparse_semi_structured", fails_late)
    with pytest.raises(ValueError):
        semi_structured.to_semi_structured(model)
    assert all(p is before[n] for n, p in model.named_parameters())  # nothing swapped
    monkeypatch.setattr(torch.sparse, "to_sparse_semi_structured", stand_in(refuse_cols=128))  # down_proj: 128 in
    names, skipped = semi_structured.to_semi_structured(model)
    assert len(names) == 12 and set(skipped) == {f"model.layers.{i}.mlp.down_proj" for i in (0, 1)}
    assert isinstance(model.model.layers[0].self_attn.q_proj.weight, TwoTensor)


def test_weight_bytes_counts_a_wrappers_inner_tensors():
    """A semi-structured weight holds its packed parts (here a stand-in's two inner tensors), and has
    no storage of its own to count."""
    model = torch.nn.Linear(64, 32, bias=False)
    dense = weight_bytes(model)
    model.weight = torch.nn.Parameter(TwoTensor(torch.zeros(32, 64), torch.zeros(32, 64)), requires_grad=False)
    assert weight_bytes(model) == 2 * dense


def test_gpu_verdict_weights_shapes_by_count():
    def row(shape, count, batch, dense, sparse):
        return {"shape": list(shape), "count": count, "batch": batch, "dtype": "float16",
                "ms": {"dense": dense, "semi_structured": sparse}, "dense_bytes": 100, "stored_bytes": 56}
    rows = [row((64, 64), 3, 1, 1.0, 1.0), row((128, 64), 1, 1, 1.0, 2.0),  # batch 1: 4 / 5 → 0.80×
            row((64, 64), 3, 128, 3.0, 2.0), row((128, 64), 1, 128, 3.0, 1.0),  # batch 128: 12 / 7
            {"shape": [10, 20], "count": 2, "batch": 1, "dtype": "float16", "error": "not a multiple"}]
    assert gpu_verdict(rows, "GPU X") == ("2:4 on GPU X (float16, semi-structured): no speedup at batch 1 (0.80×); "
                                          "1.71× faster at batch 128; 1.79× less weight memory; "
                                          "1 layer shapes refused by torch's kernels (left dense)")
    assert "no layer shape ran" in gpu_verdict(rows[-1:], "GPU X")


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
        names, skipped = semi_structured.to_semi_structured(model)
        out = model(ids).logits.float()
    assert len(names) + len(skipped) == 14 and names, skipped
    assert (out - ref).abs().max() <= 2e-2 * ref.abs().max()  # fp16 accumulation order differs


@needs_gpu
def test_bench_model_on_gpu_runs_2to4_semi_structured():
    model = tiny_llama()
    prune(model, PruneConfig(method="magnitude", sparsity=0.5, pattern="2:4"))
    model = model.half().cuda()
    out = bench_model(model, prompt_tokens=64, new_tokens=4, reps=2)
    assert out["device"].startswith("cuda") and out["layouts"]["semi_structured"] > 0, out.get("left_dense")
    assert out["sparse"]["weight_mb"] < out["dense"]["weight_mb"] and out["ratios"]["decode_speedup"] > 0


@needs_gpu
def test_time_2to4():
    r = semi_structured.time_2to4((1024, 1024), 128)
    assert r["ms"]["dense"] > 0 and r["ms"]["semi_structured"] > 0
    assert r["stored_bytes"] < r["dense_bytes"] and r["max_rel_error"] < 1e-2
