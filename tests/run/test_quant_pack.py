"""The compiled kernel's dense (gemv) and quantized layouts: packing round trips, the kernels against the
dequantized dense product on every instruction-set level, and tampered packed weights refused."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from prunekit.errors import PrunekitError
from prunekit.native import extension
from prunekit.quant.grid import LayerGrid, rtn
from prunekit.run import quant_pack
from prunekit.run.layouts import QUANT_LAYOUTS
from prunekit.run.sparse_linear import SMALL_BATCH, SparseLinear

pytestmark = pytest.mark.skipif(not extension.available(), reason="the compiled kernel could not be built here")
ISA_LEVELS = [0, 1, 2, 3]  # scalar, avx2, avx512, avx512_bf16 (capped to what this CPU has)


def quantized(rows: int, cols: int, bits: int, groupsize: int, pattern: str, seed: int = 0
              ) -> tuple[torch.Tensor, LayerGrid]:
    """A random (rows, cols) weight on an RTN grid, pruned to ``pattern`` (dense, 2:4 or ~60% unstructured)."""
    g = torch.Generator().manual_seed(seed)
    w, grid = rtn(torch.randn(rows, cols, generator=g), bits, groupsize, sym=False)
    if pattern == "2:4":
        drop = w.abs().view(rows, -1, 4).topk(2, dim=2, largest=False).indices
        w.view(rows, -1, 4).scatter_(2, drop, 0.0)
    elif pattern == "60%":
        w = w * (torch.rand(rows, cols, generator=g) > 0.6)
    return w, grid


LAYOUT_PATTERN = {"qdense": "dense", "qbitmask": "60%", "qnm": "2:4"}


@pytest.mark.parametrize("layout", QUANT_LAYOUTS)
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("groupsize", [0, 64, 128])
def test_quantized_layouts_round_trip_exactly(layout: str, bits: int, groupsize: int) -> None:
    for rows, cols in [(3, 36), (17, 100), (8, 256)]:  # odd widths: rows padded to 64 columns inside
        w, grid = quantized(rows, cols, bits, groupsize, LAYOUT_PATTERN[layout])
        assert torch.equal(quant_pack.unpack(quant_pack.pack(w, layout, grid)), w)


def test_int4_packing_by_hand() -> None:
    """qdense int4: byte j of a 64-column block holds column j (low nibble) and column j + 32 (high)."""
    grid = LayerGrid(4, 0, False, torch.ones(1, 1, dtype=torch.float16), torch.zeros(1, 1, dtype=torch.uint8))
    w = torch.arange(64, dtype=torch.float32).remainder(16).view(1, 64)  # levels 0..15 four times
    levels = quant_pack.read(quant_pack.pack(w, "qdense", grid)).parts["levels"]
    assert levels.tolist() == [[(j % 16) | ((j % 16) << 4) for j in range(32)]]


def test_qnm_packing_by_hand() -> None:
    """qnm: levels k and k + 16 share byte k; level k's position in its group of four is bits
    16·(k % 4) + 2·(k / 4) of the block's 64-bit word."""
    grid = LayerGrid(4, 0, False, torch.ones(1, 1, dtype=torch.float16), torch.zeros(1, 1, dtype=torch.uint8))
    w = torch.zeros(1, 64)
    w[0, 1], w[0, 3] = 5, 7  # group 0 (levels 0, 1): columns 1 and 3
    w[0, 62] = 9  # group 15 (levels 30, 31): column 2 only (its other slot takes the first zero, column 0)
    p = quant_pack.read(quant_pack.pack(w, "qnm", grid)).parts
    assert p["levels"][0, 0] == 5 and p["levels"][0, 1] == 7 and p["levels"][0, 15] == 9 << 4  # level 31: byte 15, high
    low, high = (int(h) & 0xFFFFFFFF for h in p["index"][0, 0])
    word = low | high << 32
    def position(k: int) -> int:
        return word >> (16 * (k % 4) + 2 * (k // 4)) & 3
    assert [position(0), position(1), position(30), position(31)] == [1, 3, 0, 2]


def test_qbitmask_int4_words_pad_to_whole_bytes() -> None:
    """Three kept levels in the first word take two bytes (the fourth nibble is padding); the row offset says so."""
    grid = LayerGrid(4, 0, False, torch.ones(1, 1, dtype=torch.float16), torch.zeros(1, 1, dtype=torch.uint8))
    w = torch.zeros(1, 64)
    w[0, [0, 2, 5]] = torch.tensor([1.0, 2.0, 3.0])
    w[0, 20] = 4.0
    p = quant_pack.read(quant_pack.pack(w, "qbitmask", grid)).parts
    assert p["row_ptr"].tolist() == [0, 3]
    assert p["levels"][:3].tolist() == [1 | (2 << 4), 3, 4]


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 40), blocks=st.integers(1, 7), tail=st.sampled_from([0, 4, 12, 36]),
       bits=st.sampled_from([4, 8]), groupsize=st.sampled_from([0, 64, 128]),
       layout=st.sampled_from(QUANT_LAYOUTS), batch=st.integers(1, 20), isa=st.sampled_from(ISA_LEVELS),
       dtype=st.sampled_from([torch.float32, torch.bfloat16]), seed=st.integers(0, 2**16))
def test_quantized_kernels_match_the_dequantized_product(rows, blocks, tail, bits, groupsize, layout, batch, isa, dtype,
                                                         seed) -> None:
    """Every layout, bits, group size, input dtype (bf16 inputs take the dot-product paths) and instruction-set
    level, small batches (the kernels): y equals x · dequantized Wᵀ to float32 rounding (then rounded once to
    x's dtype). Large batches (decoded tiles, GEMM in x's dtype) compute what nn.Linear on the model's weights
    in that dtype does."""
    cols = 64 * blocks - tail
    if layout == "qnm" and cols % 4:
        return
    w, grid = quantized(rows, cols, bits, groupsize, LAYOUT_PATTERN[layout], seed)
    bias = torch.randn(rows)
    x = torch.randn(batch, cols, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    blob = quant_pack.pack(w, layout, grid)
    y = extension.load().quant_forward(x, blob, bias, isa, SMALL_BATCH, 8)
    assert y.dtype == dtype
    model_w = w.to(dtype) if batch > SMALL_BATCH else w
    ref = F.linear(x.double(), model_w.double(), bias.to(dtype if batch > SMALL_BATCH else torch.float32).double())
    scale = x.abs().double() @ w.abs().double().t() + bias.abs().double()
    rounding = 0.0 if dtype == torch.float32 else 2.0**-8  # y's own rounding to bf16
    assert bool(((y.double() - ref).abs() <= 1e-5 * scale + rounding * ref.abs() + 1e-6).all())


@pytest.mark.parametrize("isa", ISA_LEVELS)
@pytest.mark.parametrize("layout", QUANT_LAYOUTS)
@pytest.mark.parametrize("bits", [4, 8])
def test_every_isa_level_runs_every_quantized_layout(isa, layout, bits) -> None:
    """Each level's own kernels, every layout and bit width, on a ragged shape: 37 rows, 284 columns (a 28-column
    tail), groups of 128 with a narrower last one; batches 1 and 5 (a tile of four inputs, then one), and 20 (the
    level's decoded tiles of 8 rows, then float32 GEMM)."""
    rows, cols = 37, 284
    w, grid = quantized(rows, cols, bits, 128, LAYOUT_PATTERN[layout], 3)
    blob, bias = quant_pack.pack(w, layout, grid), torch.randn(rows)
    for batch in (1, 5, 20):
        x = torch.randn(batch, cols, generator=torch.Generator().manual_seed(batch))
        y = extension.load().quant_forward(x, blob, bias, isa, SMALL_BATCH, 8)
        ref = F.linear(x.double(), w.double(), bias.double())
        scale = x.abs().double() @ w.abs().double().t() + bias.abs().double()
        assert bool(((y.double() - ref).abs() <= 1e-5 * scale + 1e-6).all()), (batch, float((y.double() - ref).abs().max()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("isa", ISA_LEVELS)
@pytest.mark.parametrize("batch", [1, 5, 40])
def test_gemv_layout_matches_linear(dtype: torch.dtype, isa: int, batch: int) -> None:
    w = torch.randn(70, 100).to(dtype)
    bias = torch.randn(70)
    x = torch.randn(batch, 100).to(dtype)
    y = extension.load().quant_forward(x, quant_pack.pack(w, "gemv"), bias, isa, SMALL_BATCH, 0)
    ref = F.linear(x.double(), w.double(), bias.double())
    assert y.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert float((y.double() - ref).abs().max() / ref.abs().max()) < tol


def test_sparse_linear_quantized_layers_keep_the_models_weights() -> None:
    """A bf16 model's weights on a grid: the layer stores levels, returns the same bf16 weights, and runs in
    bf16 in and out (the weights computed in float32 as dequantized)."""
    w, grid = quantized(64, 256, 4, 64, "2:4")
    wb = w.bfloat16()
    assert torch.equal(grid.apply(wb.float()).bfloat16(), wb)  # int4 levels survive bf16 rounding here
    for layout in QUANT_LAYOUTS:
        layer = SparseLinear(wb, None, layout, grid)
        assert torch.equal(layer.dense_weight(), wb)
        x = torch.randn(2, 256, dtype=torch.bfloat16)
        assert layer(x).dtype == torch.bfloat16
        assert layer.weight_bytes() < wb.numel() * 2 / 3


def test_weights_off_the_grid_are_refused() -> None:
    w, grid = quantized(8, 64, 4, 64, "dense")
    with pytest.raises(ValueError, match="not on its quantization grid"):
        quant_pack.pack(w + 1e-3, "qdense", grid)
    with pytest.raises(ValueError, match="more than two nonzeros"):
        quant_pack.pack(w, "qnm", grid)
    w16, grid16 = rtn(torch.randn(4, 64), 4, 32, False)
    with pytest.raises(ValueError, match="multiple of 64"):
        quant_pack.pack(w16, "qdense", grid16)
    with pytest.raises(ValueError, match="needs the weight's quantization grid"):
        quant_pack.pack(w, "qdense")


@pytest.mark.parametrize("layout", QUANT_LAYOUTS + ("gemv",))
def test_a_tampered_packed_weight_never_reaches_the_kernel(layout: str) -> None:
    """A flipped byte anywhere fails the checksum when the layer is loaded; a header that lies about sizes is
    refused by the kernel itself."""
    w, grid = quantized(16, 64, 4, 64, LAYOUT_PATTERN.get(layout, "dense"))
    layer = SparseLinear(w, None, layout, grid if layout != "gemv" else None)
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    state["packed"][quant_pack.HEADER + 5] ^= 0x10
    with pytest.raises(PrunekitError, match="checksum"):
        layer.load_state_dict(state)
    bad = layer.packed.clone()
    bad[8 * 8:8 * 9] = torch.tensor([1 << 20], dtype=torch.int64).view(torch.uint8)  # part 0's size
    with pytest.raises(RuntimeError, match="corrupt packed weight"):
        extension.load().quant_forward(torch.randn(1, 64), bad, None, -1, SMALL_BATCH, 0)
    with pytest.raises(ValueError, match="corrupt packed weight"):
        quant_pack.check(bad)
