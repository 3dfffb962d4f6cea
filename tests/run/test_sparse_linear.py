"""SparseLinear: a drop-in nn.Linear that keeps the weight exactly and computes the same outputs."""

from __future__ import annotations

import copy
import io
import zipfile

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_kernel import corrupt_copies, sparse_weight, stamp
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.run import kernel
from prunekit.run.layouts import FLOAT_LAYOUTS as LAYOUTS
from prunekit.run.sparse_linear import SMALL_BATCH, SparseLinear

pytestmark = pytest.mark.kernel


def pruned_linear(inp: int, out: int, sparsity: float, dtype=torch.float32, bias: bool = True) -> nn.Linear:
    torch.manual_seed(0)
    lin = nn.Linear(inp, out, bias=bias)
    with torch.no_grad():
        lin.weight[torch.rand(out, inp) < sparsity] = 0
    return lin.to(dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("tokens", [1, SMALL_BATCH, SMALL_BATCH + 1, 70])
def test_matches_linear_on_3d_input(layout, tokens):
    lin = pruned_linear(45, 30, 0.7)
    sparse = SparseLinear.from_linear(lin, layout)
    x = torch.randn(2, tokens, 45)
    ref = lin(x)
    y = sparse(x)
    assert y.shape == ref.shape and y.dtype == ref.dtype
    assert (y - ref).abs().max() <= 1e-4 * ref.abs().max()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_weight_kept_exactly(layout, dtype):
    lin = pruned_linear(40, 24, 0.6, dtype, bias=False)
    sparse = SparseLinear.from_linear(lin, layout)
    assert torch.equal(sparse.dense_weight(), lin.weight.data)
    assert sparse.dense_weight().dtype == dtype


@pytest.mark.parametrize("tokens", [1, 70])  # sparse kernel; tiles unpacked for a bf16 GEMM
def test_bf16_model_layer_stays_bf16_and_close(tokens):
    lin = pruned_linear(64, 32, 0.5, torch.bfloat16)
    x = torch.randn(tokens, 64, dtype=torch.bfloat16)
    y = SparseLinear.from_linear(lin, "bitmask")(x)
    assert y.dtype == torch.bfloat16
    ref = torch.nn.functional.linear(x.float(), lin.weight.float(), lin.bias.float())
    assert (y.float() - ref).abs().max() <= 1e-2 * ref.abs().max()  # one bf16 rounding of the output


def test_compressed_is_smaller_and_bad_input():
    lin = pruned_linear(256, 128, 0.7, bias=False)
    dense_bytes = lin.weight.numel() * 4
    assert SparseLinear.from_linear(lin, "bitmask").weight_bytes() < 0.45 * dense_bytes  # 0.3·4 + 1/8 bytes per weight
    assert SparseLinear.from_linear(lin, "sell").weight_bytes() < 0.55 * dense_bytes  # 0.3·(4 + 2), little padding
    with pytest.raises(ValueError, match="layout"):
        SparseLinear.from_linear(lin, "coo")
    with pytest.raises(ValueError, match="2-D"):
        SparseLinear(torch.zeros(2, 3, 4), None, "bitmask")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_input_of_the_wrong_width_is_an_error(layout):
    """A wrong width must not be reshaped into place, nor read past the end of x."""
    sparse = SparseLinear(torch.randn(8, 48), None, layout)
    for width in (40, 47, 96):  # narrower (the same number of 16-column chunks at 47), or a multiple
        with pytest.raises((ValueError, RuntimeError), match="48 features"):
            sparse(torch.randn(2, width))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_state_dict_and_pickle_round_trip(layout, tmp_path):
    """The weight is held in buffers (the kernel's: one packed uint8 tensor; torch CSR's: its three
    parts): it travels in state_dict, torch.save and deepcopy, and load_state_dict restores it."""
    lin = pruned_linear(45, 30, 0.7)
    sparse = SparseLinear.from_linear(lin, layout)
    x = torch.randn(3, 45)
    names = {"packed"} if layout != "torch_csr" else {"csr_crow", "csr_col", "csr_values"}
    assert set(sparse.state_dict()) == names | {"bias"}
    torch.save(sparse, tmp_path / "m.pt")
    for restored in (torch.load(tmp_path / "m.pt", weights_only=False), copy.deepcopy(sparse)):
        assert torch.equal(restored(x), sparse(x)) and torch.equal(restored.dense_weight(), lin.weight.data)
    other = SparseLinear.from_linear(lin, layout)
    if layout == "torch_csr":
        other.csr_values.zero_()
        assert torch.equal(other(x), other.bias.expand(3, -1))
    else:
        other.packed.zero_()  # a wrecked buffer, in place: checked again before the kernel sees it
        with pytest.raises(PrunekitError, match="magic"):
            other(x)
    other.load_state_dict(sparse.state_dict())
    assert torch.equal(other(x), sparse(x))


@pytest.mark.parametrize("layout", ("bitmask", "sell"))
def test_load_state_dict_checks_the_packed_weight_before_copying(layout):
    """A state_dict whose packed indices point outside the matrix, or that describes another layer, is
    refused before anything is copied: the layer keeps its own weight."""
    lin = pruned_linear(70, 40, 0.5)
    sparse = SparseLinear.from_linear(lin, layout)
    x = torch.randn(2, 70)
    before = sparse(x)
    bad = sparse.state_dict()
    bad["packed"] = bad["packed"].clone()
    parts = kernel.read(bad["packed"]).parts
    if layout == "sell":
        parts["col"][0] = 70
    else:
        parts["row_ptr"][1] += 1
    with pytest.raises(ValueError, match="corrupt"):
        sparse.load_state_dict(bad)
    assert torch.equal(sparse(x), before)
    other = SparseLinear.from_linear(pruned_linear(40, 70, 0.5), layout)  # another layer: (70, 40), not (40, 70)
    with pytest.raises(ValueError, match="this layer is"):
        sparse.load_state_dict(other.state_dict())
    assert torch.equal(sparse(x), before)


def _tampered_save(layer: SparseLinear, bad: torch.Tensor) -> io.BytesIO:
    """``torch.save(layer)`` with the packed weight's bytes replaced in the file, as an edit of it would."""
    good, out = io.BytesIO(), io.BytesIO()
    torch.save(layer, good)
    target = layer.packed.numpy().tobytes()
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, bad.numpy().tobytes() if data == target else data)
    out.seek(0)
    return out


@pytest.mark.parametrize("layout", ("bitmask", "sell"))
def test_every_path_to_the_kernel_is_checked(layout):
    """A packed weight with an index out of bounds (checksum rewritten to match) reaches the layer by
    assignment, by an in-place write, or in an edited ``torch.save`` file: each is refused on the next
    call, before the kernel reads it (4 of 9 such cases crashed the process before)."""
    x = torch.randn(2, 70)
    for name, bad in corrupt_copies(layout):
        assigned = SparseLinear(sparse_weight(40, 70, 0.5), None, layout)
        assigned.packed = bad.clone()
        in_place = SparseLinear(sparse_weight(40, 70, 0.5), None, layout)
        in_place(x)
        in_place.packed.copy_(bad)
        loaded = torch.load(_tampered_save(SparseLinear(sparse_weight(40, 70, 0.5), None, layout), bad),
                            weights_only=False)
        for path, layer in (("assigned", assigned), ("in place", in_place), ("torch.load", loaded)):
            with pytest.raises(PrunekitError, match="corrupt"):
                layer(x)
                pytest.fail(f"{name}, {path}: reached the kernel")
    fine = SparseLinear(sparse_weight(40, 70, 0.5), None, layout)
    assert torch.equal(torch.load(_tampered_save(fine, fine.packed), weights_only=False)(x), fine(x))


def test_load_state_dict_checks_torch_csr_parts():
    sparse = SparseLinear.from_linear(pruned_linear(70, 40, 0.5), "torch_csr")
    x = torch.randn(2, 70)
    before = sparse(x)
    bad = {k: v.clone() for k, v in sparse.state_dict().items()}
    bad["csr_col"][0] = 70  # past the last column
    with pytest.raises(ValueError, match="not a valid CSR weight"):
        sparse.load_state_dict(bad)
    assert torch.equal(sparse(x), before)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_dtype_casts_leave_the_layer_as_it_is_and_devices_are_refused(layout):
    """``model.half()`` after sparsify must not cast the float32 bias (the kernel refused it) or the
    weight: the layer then takes fp16 x and returns fp16 y. A move off the CPU is refused before
    anything changes; other conversions (share_memory) still apply."""
    sparse = SparseLinear.from_linear(pruned_linear(40, 24, 0.6), layout)
    x = torch.randn(3, 40)
    ref = sparse(x)
    before = {k: v.clone() for k, v in sparse.state_dict().items()}
    sparse.half()
    assert all(torch.equal(v, before[k]) and v.dtype == before[k].dtype for k, v in sparse.state_dict().items())
    y = sparse(x.half())
    assert y.dtype == torch.float16 and torch.allclose(y.float(), ref, atol=1e-2, rtol=1e-2)
    with pytest.raises(RuntimeError, match="CPU only"):
        sparse.to("meta")
    assert all(v.device.type == "cpu" for v in sparse.state_dict().values())
    sparse.share_memory()
    assert all(v.is_shared() for v in sparse.state_dict().values())


def test_kernel_refuses_tensors_off_the_cpu():
    packed = kernel.pack(pruned_linear(32, 8, 0.5).weight.data, "sell")
    with pytest.raises(RuntimeError, match="CPU tensors only"):
        kernel.forward(torch.empty(1, 32, device="meta"), packed)


def count_full_calls(monkeypatch) -> list[int]:
    """Counts the calls that go through nn.Module's own call path (hooks, tracing)."""
    calls = [0]
    full = nn.Module._call_impl

    def counted(self, *args, **kwargs):
        calls[0] += 1
        return full(self, *args, **kwargs)

    monkeypatch.setattr(nn.Module, "_call_impl", counted)
    return calls


def test_call_skips_the_hook_checks_until_a_hook_is_added(monkeypatch):
    """No hook: the call goes straight to forward. Each kind of hook, once added, runs as on any module."""
    calls = count_full_calls(monkeypatch)
    lin = pruned_linear(45, 30, 0.7)
    sparse = SparseLinear.from_linear(lin, "sell")
    x = torch.randn(3, 45)
    ref = sparse.forward(x)
    assert torch.equal(sparse(x), ref) and calls[0] == 0
    assert torch.equal(sparse(x=x), ref)  # keywords pass through

    h = sparse.register_forward_pre_hook(lambda m, args: (args[0] * 2,))
    assert torch.equal(sparse(x), sparse.forward(2 * x)) and calls[0] == 1
    h.remove()
    sparse.register_forward_pre_hook(lambda m, args, kwargs: ((args[0] * 3,), kwargs), with_kwargs=True)
    sparse.register_forward_hook(lambda m, args, out: out + 1)
    assert torch.equal(sparse(x), sparse.forward(3 * x) + 1)

    fresh = SparseLinear.from_linear(lin, "sell")
    monkeypatch.setattr(torch, "compile", lambda fn, *a, **k: fn)  # Module.compile wraps _call_impl
    hook = (lambda *a: None,)
    adders = {"register_full_backward_pre_hook": hook, "register_full_backward_hook": hook,
              "register_backward_hook": hook, "compile": ()}
    for register, args in adders.items():
        other = copy.deepcopy(fresh)
        getattr(other, register)(*args)
        before = calls[0]
        other(x)
        assert calls[0] == before + 1, register


def test_global_hooks_and_old_pickles_take_the_full_call(monkeypatch):
    calls = count_full_calls(monkeypatch)
    sparse = SparseLinear.from_linear(pruned_linear(45, 30, 0.7), "sell")
    x = torch.randn(3, 45)
    seen = []
    handle = nn.modules.module.register_module_forward_hook(lambda m, args, out: seen.append(type(m).__name__))
    try:
        sparse(x)
    finally:
        handle.remove()
    assert seen == ["SparseLinear"] and calls[0] == 1
    del sparse.__dict__["_hooked"]  # as pickled before the flag existed: the class default is the full call
    sparse(x)
    assert calls[0] == 2


def test_fx_can_trace_it_as_a_leaf():
    """torch.fx intercepts module calls by patching nn.Module.__call__; the fast call must not bypass it."""
    import torch.fx as fx

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.sparse = SparseLinear.from_linear(pruned_linear(45, 30, 0.7), "sell")

        def forward(self, x):
            return self.sparse(x) + 1

    class LeafTracer(fx.Tracer):
        def is_leaf_module(self, m, name):
            return isinstance(m, SparseLinear) or super().is_leaf_module(m, name)

    model = Model()
    graph = LeafTracer().trace(model)
    assert [n.target for n in graph.nodes if n.op == "call_module"] == ["sparse"]
    x = torch.randn(3, 45)
    assert torch.equal(fx.GraphModule(model, graph)(x), model(x))


@settings(max_examples=150, deadline=None)
@given(layout=st.sampled_from(["bitmask", "sell"]), restamp=st.booleans(), data=st.data())
def test_random_corruption_of_a_loaded_weight_never_runs(layout, restamp, data):
    """Random byte changes anywhere in a packed weight given to load_state_dict: refused (the layer keeps
    its own weight), or the very same weight, never a crash. With the checksum rewritten to match (a
    deliberate edit), the index checks alone stand between the bytes and the kernel: refused, or a
    weight whose every index is in range (other values then, but no read out of bounds)."""
    source = SparseLinear(sparse_weight(40, 70, 0.5), None, layout)
    blob = source.packed.clone()
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, blob.numel() - 1))
        blob[i] = int(blob[i]) ^ data.draw(st.integers(1, 255))
    if restamp:
        stamp(blob)
    layer = SparseLinear(sparse_weight(40, 70, 0.5, seed=1), None, layout)
    x = torch.randn(2, 70)
    before = layer(x)
    try:
        layer.load_state_dict({"packed": blob}, strict=False)
    except (PrunekitError, RuntimeError):  # RuntimeError: a size torch's own copy refuses
        assert torch.equal(layer(x), before)
        return
    y = layer(x)
    assert y.shape == (2, 40) and (restamp or torch.equal(y, source(x)))
