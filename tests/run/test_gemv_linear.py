import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from conftest import tiny_llama
from prunekit.native import extension
from prunekit.run.gemv_linear import GemvLinear
from prunekit.run.sparse_linear import SparseLinear
from prunekit.run.swap import sparsify

pytestmark = pytest.mark.skipif(not extension.available(), reason="the compiled kernel could not be built here")


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 70), cols=st.integers(1, 130), batch=st.sampled_from([1, 3, 17]), bias=st.booleans(),
       dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]), seed=st.integers(0, 2**16))
def test_the_shared_weight_gives_the_packed_gemv_result(rows, cols, batch, bias, dtype, seed):
    """The same kernel as the gemv layout (bit for bit, odd widths, small and tiled batches), on the weight in place."""
    g = torch.Generator().manual_seed(seed)
    linear = nn.Linear(cols, rows, bias=bias).to(dtype)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(rows, cols, generator=g))
    x = torch.randn(batch, cols, generator=g).to(dtype)
    layer = GemvLinear.from_linear(linear)
    assert layer.weight is linear.weight and isinstance(layer, nn.Linear)
    packed = SparseLinear(linear.weight.data, None if linear.bias is None else linear.bias.data, "gemv")
    with torch.inference_mode():
        y = layer(x)
        assert y.dtype == dtype and torch.equal(y, packed(x))
        ref = F.linear(x.double(), linear.weight.double(), None if linear.bias is None else linear.bias.double())
        assert torch.allclose(y.double(), ref, rtol=2e-2, atol=2e-2 * float(ref.abs().max()) + 1e-6)


def test_it_is_plain_linear_where_the_kernel_does_not_apply():
    linear = nn.Linear(8, 4).double()
    layer = GemvLinear.from_linear(linear)
    x = torch.randn(2, 8, dtype=torch.float64)
    assert torch.equal(layer(x), linear(x))  # float64: not a kernel dtype
    f32 = GemvLinear.from_linear(nn.Linear(8, 4))
    x = torch.randn(2, 8, requires_grad=True)
    f32(x).sum().backward()  # gradients: the autograd path
    assert x.grad is not None and f32.weight.grad is not None
    with pytest.raises(RuntimeError):  # another input dtype fails as nn.Linear does
        f32(torch.randn(2, 8, dtype=torch.bfloat16))


def test_sparsify_puts_a_tied_head_on_the_kernel_without_a_copy():
    model = tiny_llama()
    model.config.tie_word_embeddings = True
    model.tie_weights()
    ids = torch.randint(0, 256, (1, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(ids).logits
    choices = sparsify(model, layout="gemv")
    head = model.get_output_embeddings()
    assert isinstance(head, GemvLinear) and head.weight is model.get_input_embeddings().weight  # still tied
    assert choices[-1].name == "lm_head" and choices[-1].layout == "gemv" and "lm_head.weight" in model.state_dict()
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, before, atol=1e-4, rtol=1e-4)


def test_sparsify_measures_the_head_and_can_leave_it():
    model = tiny_llama()
    choices = sparsify(model, layouts=("gemv",), reps=3, prefill_batch=4)
    head = [c for c in choices if c.name == "lm_head"]
    assert len(head) == 1 and set(head[0].seconds) == {"dense", "gemv"}  # timed, whichever won
    assert isinstance(model.lm_head, GemvLinear) == (head[0].layout == "gemv")
    other = tiny_llama()
    assert all(c.name != "lm_head" for c in sparsify(other, layout="gemv", head=False))
    assert type(other.lm_head) is nn.Linear
    assert all(c.name != "lm_head" for c in sparsify(tiny_llama(), layouts=("bitmask",), reps=2))  # gemv not among them
