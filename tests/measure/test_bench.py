from __future__ import annotations

import pytest
from torch import nn

from conftest import tiny_llama
from prunekit.measure.bench import bench_model, weight_bytes
from prunekit.oneshot.config import PruneConfig
from prunekit.oneshot.pruner import prune


def test_weight_bytes_counts_tied_weights_once():
    model = tiny_llama()
    model.config.tie_word_embeddings = True
    model.lm_head.weight = model.model.embed_tokens.weight
    params = {p.data_ptr(): p.numel() * 4 for p in model.parameters()}
    assert weight_bytes(model) == sum(params.values()) + sum(b.numel() * b.element_size() for b in model.buffers())


@pytest.mark.kernel
def test_bench_model_dense_vs_sparse():
    model = tiny_llama()
    prune(model, PruneConfig(method="magnitude", sparsity=0.7))
    out = bench_model(model, prompt_tokens=24, new_tokens=4, reps=2, layout="bitmask")
    assert out["layouts"] == {"bitmask": 14}
    for side in ("dense", "sparse"):
        assert out[side]["prefill_seconds"] > 0 and out[side]["decode_tokens_per_s"] > 0
    assert out["sparse"]["weight_mb"] < out["dense"]["weight_mb"]
    assert out["ratios"]["weight_memory_ratio"] > 1
    mlp = model.model.layers[0].mlp  # the caller's model is untouched
    assert all(isinstance(m, nn.Linear) for m in (mlp.gate_proj, mlp.up_proj, mlp.down_proj))
