"""sparsify: per-layer measured choice, outputs unchanged, never a layer that measured slower."""

from __future__ import annotations

import copy
import logging

import pytest
import torch

from conftest import tiny_llama
from prunekit.native import extension
from prunekit.oneshot.config import PruneConfig
from prunekit.oneshot.pruner import prune
from prunekit.run.sparse_linear import SparseLinear
from prunekit.run.swap import dense_linear, measure_layer, pick, sparsify


def pruned_tiny(sparsity: float = 0.7):
    model = tiny_llama()
    prune(model, PruneConfig(method="magnitude", sparsity=sparsity))
    return model


@pytest.mark.parametrize(("seconds", "expected"), [
    ({"dense": 1.0, "bitmask": 0.99}, "dense"),             # within the margin: keep dense
    ({"dense": 1.0, "bitmask": 0.5, "sell": 0.6}, "bitmask"),
    ({"dense": 1.0, "bitmask": 1.2, "torch_csr": 0.9}, "torch_csr"),
    ({"dense": 0.5, "bitmask": 0.9}, "dense"),
])
def test_pick(seconds, expected):
    assert pick(seconds, margin=1.03) == expected


def test_pick_never_grows_memory():
    """At low sparsity CSR can be faster than torch's dense GEMV yet bigger: it is not taken."""
    seconds = {"dense": 1.0, "sell": 0.5, "bitmask": 0.8}
    assert pick(seconds, 1.03, {"sell": 130, "bitmask": 95}, dense_bytes=100) == "bitmask"
    assert pick(seconds, 1.03, {"sell": 130, "bitmask": 120}, dense_bytes=100) == "dense"


def test_pick_prefers_the_smaller_layout_unless_the_bigger_is_clearly_faster():
    stored = {"sell": 120, "bitmask": 72, "torch_csr": 200}
    seconds = {"dense": 1.0, "sell": 0.40, "bitmask": 0.41, "torch_csr": 0.9}  # csr 2.5% faster: within the margin
    assert pick(seconds, 1.03, stored, dense_bytes=200) == "bitmask"
    assert pick(seconds | {"sell": 0.35}, 1.03, stored, dense_bytes=200) == "sell"  # 17% faster: worth its bytes
    assert pick(seconds, 1.03) == "sell"  # without sizes: the fastest


def test_pick_keeps_prefill_near_dense():
    seconds = {"dense": 1.0, "sell": 0.5, "bitmask": 0.6}
    prefill = {"dense": 1.0, "sell": 1.25, "bitmask": 1.05}  # sell would make prefill 0.8× dense
    assert pick(seconds, 1.03, prefill=prefill, prefill_floor=0.9) == "bitmask"
    assert pick(seconds, 1.03, prefill=prefill | {"bitmask": 1.2}, prefill_floor=0.9) == "dense"


@pytest.mark.slow
@pytest.mark.kernel
@pytest.mark.parametrize("layout", ["auto", "bitmask", "sell", "torch_csr", "gemv"])
def test_outputs_and_generation_unchanged(layout):
    model = pruned_tiny()
    ids = torch.randint(0, 256, (1, 20))
    with torch.no_grad():
        ref = model(ids).logits
        ref_gen = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=0)
    choices = sparsify(model, layout=layout, reps=3)
    blocks = [c for c in choices if c.name != "lm_head"]  # the head too, where gemv is a candidate
    assert len(blocks) == 14 and len(choices) == 14 + (layout in ("auto", "gemv"))  # 2 blocks × 7 linears, 70% sparse
    swapped = [m for m in model.modules() if isinstance(m, SparseLinear)]
    assert len(swapped) == sum(c.layout != "dense" for c in blocks)
    if layout != "auto":
        assert {c.layout for c in blocks} == {layout} and len(swapped) == 14
    with torch.no_grad():
        out = model(ids).logits
        gen = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert (out - ref).abs().max() <= 1e-4 * ref.abs().max()
    assert torch.equal(gen, ref_gen)
    for c in choices:
        assert c.stored_bytes < c.dense_bytes or c.layout in ("dense", "gemv")


@pytest.mark.kernel
def test_auto_keeps_dense_layers_that_measure_slower(monkeypatch):
    monkeypatch.setattr("prunekit.run.swap.measure_layer",
                        lambda w, b, layouts, reps, batches=(1,), grid=None: {
                            n: {"dense": 1.0, **{k: 2.0 for k in layouts}} for n in batches})
    model = pruned_tiny()
    choices = sparsify(model)
    assert choices and all(c.layout == "dense" for c in choices)
    assert not any(isinstance(m, SparseLinear) for m in model.modules())


@pytest.mark.parametrize("layout,needs", [("torch_csr", "5% zeros"), ("qnm", "2:4 pattern"),
                                          ("qdense", "quantization grid")])
def test_a_forced_layout_that_fits_no_layer_is_an_error(layout, needs):
    """Unpruned and unquantized: no layer takes the layout, so nothing changes and the caller hears why (before,
    ``eval --sparse torch_csr`` reported dense figures with exit 0)."""
    from prunekit.errors import PrunekitError

    model = tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(PrunekitError, match=f"fits no layer.*{needs}"):
        sparsify(model, layout=layout)
    assert all(type(m) is not SparseLinear for m in model.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_pick_takes_gemv_at_its_size():
    """gemv holds every weight (the dense bytes plus a header): not refused as bigger than dense."""
    assert pick({"dense": 1.0, "gemv": 0.5}, 1.03, {"gemv": 108}, dense_bytes=100) == "gemv"


def test_candidates_follow_the_zeros_and_the_grid():
    """qnm only on 2:4 zeros; quantized layouts only on a grid the kernel runs and the weight lies on;
    sparse layouts only from min_sparsity on; gemv and qdense at any sparsity."""
    from prunekit.quant.grid import rtn
    from prunekit.run.swap import candidates

    everything = ("bitmask", "sell", "torch_csr", "gemv", "qdense", "qbitmask", "qnm")
    w, grid = rtn(torch.randn(8, 128), 4, 64, sym=False)
    w24 = w.clone()
    w24.view(8, -1, 4)[..., :2] = 0
    assert candidates(w24, 0.5, everything, 0.05, grid) == everything
    assert "qnm" not in candidates(w * (torch.rand(8, 128) > 0.5), 0.5, everything, 0.05, grid)  # unstructured
    assert candidates(w, 0.0, everything, 0.05, grid) == ("gemv", "qdense")  # no zeros: dense kernels only
    assert candidates(w24, 0.5, everything, 0.05, None) == ("bitmask", "sell", "torch_csr", "gemv")  # no grid
    assert "qdense" not in candidates(w + 1e-3, 0.0, everything, 0.05, grid)  # off its grid
    w32, grid32 = rtn(torch.randn(8, 128), 4, 32, sym=False)
    assert candidates(w32, 0.0, everything, 0.05, grid32) == ("gemv",)  # groups of 32: not a kernel grid


def quantized_tiny(pattern: str):
    """A tiny Llama, 2:4 or dense, quantized to int4 g64 (RTN): its model and grids."""
    model = tiny_llama()
    result = prune(model, PruneConfig(method="magnitude", sparsity=0.5 if pattern == "2:4" else 0.0,
                                      pattern="2:4" if pattern == "2:4" else "unstructured",
                                      quant={"wbits": 4, "groupsize": 64, "quant_method": "rtn"}))
    return model, result.grids


@pytest.mark.kernel
@pytest.mark.parametrize("pattern", ["2:4", "dense"])
def test_quantized_models_take_quantized_layouts(pattern):
    """A quantized model's layers run on their levels (forced, and among the measured candidates), with
    outputs unchanged to float32 rounding; qnm only where the zeros are 2:4."""
    model, grids = quantized_tiny(pattern)
    ids = torch.randint(0, 256, (1, 12))
    with torch.no_grad():
        ref = model(ids).logits
    forced = copy.deepcopy(model)
    layout = "qnm" if pattern == "2:4" else "qdense"
    choices = sparsify(forced, layout=layout, grids=grids)
    assert len(choices) == 14 and {c.layout for c in choices} == {layout}
    with torch.no_grad():
        assert (forced(ids).logits - ref).abs().max() <= 1e-4 * ref.abs().max()
    auto = sparsify(model, grids=grids, reps=2)
    timed = set().union(*(c.seconds for c in auto))
    assert {"qdense", "gemv"} <= timed and ("qnm" in timed) == (pattern == "2:4")
    with torch.no_grad():
        assert (model(ids).logits - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_without_a_compiler_layers_stay_dense(monkeypatch, caplog):
    monkeypatch.setattr(extension, "available", lambda: False)
    from prunekit.errors import PrunekitError

    model = pruned_tiny()
    with pytest.raises(PrunekitError, match="compiled kernel, which could not be built"):
        sparsify(model, layout="bitmask")  # forced: an error, not dense figures under its name
    with caplog.at_level(logging.WARNING):
        assert sparsify(model, layouts=("bitmask", "gemv")) == []
    assert "no compiled kernel" in caplog.text
    assert {c.layout for c in sparsify(model, reps=2)} <= {"dense", "torch_csr"}


@pytest.mark.kernel
def test_measure_layer_reports_every_candidate():
    w = torch.randn(32, 48)
    w[w.abs() < 1] = 0
    seconds = measure_layer(w, None, ("bitmask", "sell"), reps=3, batches=(2,))[2]
    assert set(seconds) == {"dense", "bitmask", "sell"} and all(s > 0 for s in seconds.values())


@pytest.mark.kernel
def test_measure_layer_times_modules_on_both_sides(monkeypatch):
    """Dense is timed as the nn.Linear a model calls (module overhead included), as SparseLinear is."""
    calls = {"dense": 0, "sparse": 0}
    linear_forward, sparse_forward = torch.nn.Linear.forward, SparseLinear.forward

    def count(kind, forward):
        def wrapped(self, x):
            calls[kind] += 1
            return forward(self, x)
        return wrapped

    monkeypatch.setattr(torch.nn.Linear, "forward", count("dense", linear_forward))
    monkeypatch.setattr(SparseLinear, "forward", count("sparse", sparse_forward))
    w = torch.randn(16, 40)
    w[w.abs() < 1] = 0
    measure_layer(w, torch.randn(16), ("bitmask",), reps=3, batches=(1, 4))
    assert calls == {"dense": 2 * (3 + 2), "sparse": 2 * (3 + 2)}  # (reps + warm-up) per batch size


def test_dense_linear_wraps_the_same_tensors():
    w, b = torch.randn(6, 5), torch.randn(6)
    linear = dense_linear(w, b)
    assert linear.weight.data_ptr() == w.data_ptr() and not linear.weight.requires_grad
    x = torch.randn(3, 5)
    torch.testing.assert_close(linear(x), torch.nn.functional.linear(x, w, b))
    assert dense_linear(w, None).bias is None


def test_bad_layout():
    with pytest.raises(ValueError, match="layout"):
        sparsify(tiny_llama(), layout="coo")
