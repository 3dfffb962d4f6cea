"""Quantization composed with pruning on a tiny Llama, table-driven over (method × order × quantizer × pattern)."""

import pytest
import torch

from conftest import tiny_llama
from prunekit import PruneConfig, PrunekitError, prune
from prunekit.quant.config import QuantConfig
from prunekit.quant.grid import rtn
from prunekit.selection import count_to_prune, is_valid_nm
from prunekit.targets import find_targets, weight_view


def _calib():
    return torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))


CASES = [  # method, order, quantizer, grid
    ("magnitude", "prune-first", "rtn", "minmax"),
    ("magnitude", "prune-first", "rtn", "mse"),
    ("wanda", "prune-first", "gptq", "minmax"),
    ("wanda", "quant-first", "rtn", "minmax"),
    ("sparsegpt", "prune-first", "gptq", "minmax"),
    ("sparsegpt", "prune-first", "gptq", "mse"),
    ("sparsegpt", "quant-first", "gptq", "minmax"),
    ("sparsegpt", "quant-first", "rtn", "minmax"),
    ("sparsegpt", "joint", "gptq", "minmax"),
    ("sparsegpt", "joint", "gptq", "mse"),
]


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
@pytest.mark.parametrize("method,order,quantizer,grid", CASES)
def test_every_order_keeps_zeros_exact_and_weights_on_the_grid(method, order, quantizer, grid, pattern):
    model = tiny_llama()
    quant = QuantConfig(wbits=4, groupsize=32, quant_method=quantizer, order=order, grid=grid)
    result = prune(model, PruneConfig(method=method, pattern=pattern, quant=quant, blocksize=32, calib_dtype="model"),
                   _calib(), progress=False)
    targets = find_targets(model)
    assert set(result.grids) == set(targets)
    for name, module in targets.items():
        w, keep = weight_view(module), result.masks[name]
        assert bool((w[~keep] == 0).all()), name  # pruned stays exactly zero
        assert int((~keep).sum()) == count_to_prune(w.numel(), 0.5), name
        assert torch.equal(result.grids[name].apply(w), w), name  # every kept weight on its grid
        if pattern == "2:4":
            assert is_valid_nm(keep, 2, 4), name


@pytest.mark.parametrize("grid", ["minmax", "mse"])
def test_quant_first_prunes_the_rounded_weights_on_the_same_grid(grid):
    """Magnitude after RTN: the grid is RTN's of the dense weights, and the kept weights are its values."""
    model = tiny_llama()
    dense = {n: weight_view(m).detach().clone() for n, m in find_targets(model).items()}
    quant = QuantConfig(wbits=4, groupsize=32, quant_method="rtn", order="quant-first", grid=grid)
    result = prune(model, PruneConfig(method="magnitude", quant=quant), progress=False)
    for name, module in find_targets(model).items():
        expected, grid_ = rtn(dense[name], 4, 32, False, search=grid == "mse")
        assert torch.equal(result.grids[name].scale, grid_.scale) and torch.equal(result.grids[name].zero, grid_.zero)
        assert torch.equal(weight_view(module), expected * result.masks[name])


@pytest.mark.parametrize("quantizer", ["rtn", "gptq"])
def test_quantize_only_keeps_every_weight(quantizer):
    model = tiny_llama()
    quant = QuantConfig(wbits=8, groupsize=0, quant_method=quantizer)
    result = prune(model, PruneConfig(sparsity=0.0, quant=quant, calib_dtype="model"), _calib(), progress=False)
    assert result.sparsity == 0.0 and result.grids
    assert all(g.bits == 8 and g.scale.shape[1] == 1 for g in result.grids.values())


BAD = [
    (dict(quant=QuantConfig(wbits=4, order="joint"), method="wanda"), "rounds inside SparseGPT"),
    (dict(quant=QuantConfig(wbits=4, order="quant-first"), method="sparsegpt", refine="admm"), "quantize after it"),
    (dict(quant=QuantConfig(wbits=4, order="joint", quant_method="rtn"), method="sparsegpt"), "takes --quant-method gptq"),
]


@pytest.mark.parametrize("kwargs,message", BAD)
def test_bad_combinations_are_refused(kwargs, message):
    with pytest.raises(PrunekitError, match=message):
        PruneConfig(**kwargs)


@pytest.mark.parametrize("kwargs,message", [
    (dict(wbits=9), "wbits must be 2 to 8"), (dict(wbits=1), "wbits must be 2 to 8"),
    (dict(wbits=4, groupsize=-1), "groupsize"), (dict(wbits=4, quant_method="rtn", act_order=True), "not an option of rtn"),
    (dict(wbits=4, grid="percentile"), "grid"),
])
def test_bad_quant_settings_are_refused(kwargs, message):
    with pytest.raises(PrunekitError, match=message):
        QuantConfig(**kwargs)


@pytest.mark.parametrize("kwargs,expected", [
    (dict(wbits=4), True), (dict(wbits=4, order="joint"), False), (dict(wbits=4, quant_method="rtn"), False),
    (dict(wbits=4, act_order=False), False), (dict(wbits=0), False)])
def test_act_order_defaults_on_for_gptq_outside_the_joint_sweep(kwargs, expected):
    assert QuantConfig(**kwargs).act_order is expected


def test_a_group_size_that_does_not_divide_a_width_fails_before_work_unless_uneven():
    quant = QuantConfig(wbits=4, groupsize=48, quant_method="rtn")  # widths 64 and 128
    with pytest.raises(PrunekitError, match="does not divide its input width 64"):
        prune(tiny_llama(), PruneConfig(quant=quant), progress=False)
    uneven = QuantConfig(wbits=4, groupsize=48, quant_method="rtn", uneven_groups=True)
    result = prune(tiny_llama(), PruneConfig(quant=uneven), progress=False)
    assert result.grids["model.layers.0.mlp.down_proj"].scale.shape == (64, 3)  # 48 + 48 + 32 inputs


def test_asymmetric_int8_on_bfloat16_weights_is_refused_before_work_and_symmetric_survives():
    model = tiny_llama().to(torch.bfloat16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(PrunekitError, match="asymmetric 8-bit levels do not survive bfloat16"):
        prune(model, PruneConfig(quant=QuantConfig(wbits=8, quant_method="rtn")), progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing touched
    result = prune(model, PruneConfig(quant=QuantConfig(wbits=8, sym=True, quant_method="rtn")), progress=False)
    for name, module in find_targets(model).items():
        w = weight_view(module)  # bfloat16, rounded from scale · (level − zero): the level is still the nearest
        assert torch.equal(result.grids[name].apply(w.float()).to(torch.bfloat16), w), name


@pytest.mark.parametrize("device", [
    "cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))])
def test_joint_on_a_device_residency_matches_the_plain_run(device):
    """2:4 + int4 joint GPTQ with each block moved to `device` and back: the model ends on CPU, zeros exact,
    weights on their grids, and the masks agree with the plain CPU run (exactly on CPU, closely on a GPU)."""
    from prunekit.oneshot.residency import InMemory

    config = PruneConfig(method="sparsegpt", pattern="2:4", blocksize=32, calib_dtype="model",
                         quant=QuantConfig(wbits=4, groupsize=32, quant_method="gptq", order="joint"))
    ref, moved = tiny_llama(), tiny_llama()
    a = prune(ref, config, _calib(), progress=False)
    b = prune(moved, config, _calib(), progress=False, residency=InMemory(device))
    assert all(p.device.type == "cpu" for p in moved.parameters())
    for name, module in find_targets(moved).items():
        w, keep = weight_view(module), b.masks[name]
        assert bool((w[~keep] == 0).all()) and is_valid_nm(keep, 2, 4), name
        assert b.grids[name].scale.device.type == "cpu" and torch.equal(b.grids[name].apply(w), w), name
        agree = float((a.masks[name] == keep).float().mean())
        assert agree == 1.0 if device == "cpu" else agree > 0.95, (name, agree)


@pytest.mark.parametrize("kwargs,expected", [
    (dict(wbits=4), "mse"), (dict(wbits=4, order="quant-first"), "mse"), (dict(wbits=4, order="joint"), "minmax"),
    (dict(wbits=4, quant_method="rtn"), "minmax"), (dict(wbits=4, grid="minmax"), "minmax"),
    (dict(wbits=4, quant_method="rtn", grid="mse"), "mse"), (dict(wbits=0), "minmax")])
def test_grid_defaults_to_mse_for_gptq_outside_the_joint_sweep(kwargs, expected):
    assert QuantConfig(**kwargs).grid == expected
