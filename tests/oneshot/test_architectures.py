"""Every supported architecture prunes with every method and still produces finite logits."""

import pytest
import torch
import transformers as tf

from conftest import ARCHS as CONFIGS
from conftest import COMMON
from conftest import tiny_arch as build
from prunekit import PruneConfig, is_valid_nm, prune
from prunekit.targets import find_targets, weight_view

EXPECTED_TARGETS = {"llama-gqa": 14, "mistral": 14, "qwen2": 14, "opt": 12, "gpt2": 8}


@pytest.mark.parametrize("arch", sorted(CONFIGS))
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_architecture_prunes(arch, method):
    model = build(arch)
    calib = torch.randint(0, 128, (3, 24), generator=torch.Generator().manual_seed(1))
    result = prune(model, PruneConfig(method=method, pattern="2:4", batch_size=2, blocksize=32), calib,
                   progress=False)
    targets = find_targets(model)
    assert len(targets) == EXPECTED_TARGETS[arch] and set(result.masks) == set(targets)
    for module in targets.values():
        assert is_valid_nm(weight_view(module), 2, 4)
    assert torch.isfinite(model(calib).logits).all()
    assert all(r.recon_error is not None and 0 <= r.recon_error < 1.5 for r in result.layers)


def test_gpt2_conv1d_is_pruned_along_inputs():
    model = build("gpt2")
    prune(model, PruneConfig(sparsity=0.5, pattern="2:4"), progress=False)
    conv = model.transformer.h[0].mlp.c_fc  # Conv1D weight is stored (in, out)
    assert conv.weight.shape == (64, 256)
    assert is_valid_nm(conv.weight.t(), 2, 4) and not is_valid_nm(conv.weight, 2, 4)


def test_sequential_calibration_sees_pruned_outputs():
    # Block 1's statistics must come from block 0's pruned outputs: pruning block 0 changes block 1's mask.
    calib = torch.randint(0, 128, (2, 24), generator=torch.Generator().manual_seed(1))
    a = build("llama-gqa")
    prune(a, PruneConfig(method="wanda", sparsity=0.5), calib, progress=False)
    b = build("llama-gqa")
    prune(b, PruneConfig(method="wanda", sparsity=0.5, include=(r"layers\.1\.",)), calib, progress=False)
    wa = weight_view(a.model.layers[1].mlp.down_proj)
    wb = weight_view(b.model.layers[1].mlp.down_proj)
    assert not torch.equal(wa == 0, wb == 0)


def _mixtral():
    torch.manual_seed(0)
    cfg = tf.MixtralConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=1, **COMMON)
    return tf.AutoModelForCausalLM.from_config(cfg).eval()


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_moe_experts_are_targets(method):
    model = _mixtral()
    calib = torch.randint(0, 128, (3, 24), generator=torch.Generator().manual_seed(1))
    result = prune(model, PruneConfig(method=method, pattern="2:4", blocksize=32), calib, progress=False)
    experts = model.model.layers[0].mlp.experts
    assert "model.layers.0.mlp.experts.gate_up_proj.3" in result.masks
    assert len(result.masks) == 2 * (4 + 2 * 4)  # per block: q k v o + 4 experts × (gate_up, down)
    for e in range(4):
        assert is_valid_nm(experts.gate_up_proj[e], 2, 4) and is_valid_nm(experts.down_proj[e], 2, 4)
    assert model.model.layers[0].mlp.gate.weight.ne(0).all()  # the router is not pruned
    assert torch.isfinite(model(calib).logits).all()


def test_moe_expert_statistics_come_from_routed_tokens_only():
    from prunekit.oneshot.calibrate import capture_inputs, collect_stats
    from prunekit.targets import block_targets

    model = _mixtral()
    calib = torch.randint(0, 128, (2, 24), generator=torch.Generator().manual_seed(1))
    block = model.model.layers[0]
    inputs = capture_inputs(model, block, calib, batch_size=2)
    stats, _, _ = collect_stats(block, block_targets(block, "model.layers.0", find_targets(model)), inputs, False)
    counts = [stats[f"model.layers.0.mlp.experts.gate_up_proj.{e}"].count for e in range(4)]
    # top-1 routing: every token reaches exactly one expert
    assert sum(counts) == 48 and stats["model.layers.0.self_attn.q_proj"].count == 48
    assert counts == [stats[f"model.layers.0.mlp.experts.down_proj.{e}"].count for e in range(4)]
    # the router's own choice, recomputed, agrees with the counts
    h = block.post_attention_layernorm(block.self_attn(block.input_layernorm(inputs.hidden[0]),
                                                      **inputs.kwargs[0])[0] + inputs.hidden[0])
    chosen = (h.reshape(-1, 64) @ block.mlp.gate.weight.T).argmax(-1)
    assert counts == torch.bincount(chosen, minlength=4).tolist()


@pytest.mark.parametrize("arch", sorted(CONFIGS) + ["mixtral"])
@pytest.mark.parametrize("sequential", ["block", "sublayer"])
def test_bf16_calibration_prunes_fp32_weights(arch, sequential):
    # calib_dtype=bfloat16: the blocks run under autocast, the fp32 weights stay fp32 and are pruned exactly,
    # and the masks agree closely with a full-precision run (bf16 rounding may flip near-ties only).
    calib = torch.randint(0, 128, (3, 24), generator=torch.Generator().manual_seed(1))
    runs = {}
    for dtype in ("model", "bfloat16"):
        model = _mixtral() if arch == "mixtral" else build(arch)
        cfg = PruneConfig(method="sparsegpt", sparsity=0.5, blocksize=32, sequential=sequential, calib_dtype=dtype)
        runs[dtype] = prune(model, cfg, calib, progress=False), model
    (full, _), (low, model) = runs["model"], runs["bfloat16"]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    agree = [float((full.masks[n] == low.masks[n]).float().mean()) for n in full.masks]
    assert min(agree) > 0.8 and sum(agree) / len(agree) > 0.9
    assert all(r.sparsity == pytest.approx(0.5, abs=1e-3) for r in low.layers)
    assert torch.isfinite(model(calib).logits).all()


def test_calib_dtype_wider_than_model_is_an_error():
    from prunekit.errors import PrunekitError

    model = build("llama-gqa").bfloat16()
    calib = torch.randint(0, 128, (2, 24))
    with pytest.raises(PrunekitError, match="wider"):
        prune(model, PruneConfig(method="wanda", calib_dtype="float32"), calib, progress=False)


@pytest.mark.parametrize(("fast", "model_dtype", "expected"), [
    (True, torch.float32, "bfloat16"),    # native bf16: the fast path
    (False, torch.float32, "float32"),    # emulated bf16 would be slower: stay in float32
    (True, torch.bfloat16, "bfloat16"),   # a bf16 model calibrates in its own dtype
])
def test_calib_dtype_auto_picks_bf16_only_where_native(monkeypatch, fast, model_dtype, expected):
    import prunekit.oneshot.pruner as pruner

    monkeypatch.setattr(pruner, "fast_bfloat16", lambda device: (fast, "stand-in"))
    calib = torch.randint(0, 128, (2, 24), generator=torch.Generator().manual_seed(1))
    auto = prune(build("llama-gqa").to(model_dtype), PruneConfig(method="wanda"), calib, progress=False)
    assert auto.info["calib_dtype"]["dtype"] == expected
    explicit = build("llama-gqa").to(model_dtype)
    prune(explicit, PruneConfig(method="wanda", calib_dtype=expected if model_dtype == torch.float32 else "model"),
          calib, progress=False)
    assert all(torch.equal(auto.masks[n], (weight_view(t) != 0)) for n, t in find_targets(explicit).items())


def test_fast_bfloat16_reads_the_cpu_flags(monkeypatch):
    from prunekit import devices

    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert devices.fast_bfloat16(torch.device("cpu"))[0] is False
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset({"avx512f", "amx_bf16"}))
    assert devices.fast_bfloat16(torch.device("cpu")) == (True, "CPU flags amx_bf16")
