"""The compiled CPU kernel against F.linear: every ISA path, layout, dtype, odd shapes, batch tiles."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from prunekit.native import extension
from prunekit.run import kernel

pytestmark = pytest.mark.kernel
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
SHAPES = ((1, 1), (1, 17), (7, 37), (5, 16), (33, 100), (64, 576))


@pytest.fixture(params=["avx512_permute", "avx512_bf16", "avx512", "avx2", "scalar"])
def isa(request, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_KERNEL_ISA", request.param)
    if extension.isa() != request.param:
        pytest.skip(f"this CPU cannot run {request.param}")
    return request.param


def sparse_weight(rows: int, cols: int, sparsity: float, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    w[torch.rand(rows, cols, generator=g) < sparsity] = 0
    return w.to(dtype)


def reference(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.linear(x.double(), w.double(), None if bias is None else bias.double()).float()


def small(x: torch.Tensor, blob: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The sparse kernel at any batch size."""
    return kernel.forward(x, blob, bias, small_batch=x.shape[0])


def raw(x: torch.Tensor, blob: torch.Tensor) -> torch.Tensor:
    """The compiled call alone, without ``kernel.forward``'s ``check``: the kernel's own header checks."""
    return extension.load().sparse_forward(x, blob, None, extension.forced_isa(), x.shape[0], 0)


def tiled(x: torch.Tensor, blob: torch.Tensor, bias: torch.Tensor | None = None, tile_rows: int = 0) -> torch.Tensor:
    """The large-batch path: unpacked tiles of rows through dense GEMM."""
    return kernel.forward(x, blob, bias, small_batch=-1, tile_rows=tile_rows)


def assert_matches(y: torch.Tensor, ref: torch.Tensor) -> None:
    scale = max(ref.abs().max().item(), 1.0)
    assert y.shape == ref.shape
    assert (y - ref).abs().max().item() <= 1e-4 * scale  # the bound: 1e-4 relative in fp32


@pytest.mark.parametrize("layout", kernel.KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_small_batches_match_f_linear(isa, layout, dtype, shape):
    w = sparse_weight(*shape, 0.6, dtype)
    w[0] = 0  # an all-zero row
    bias = torch.randn(shape[0])
    packed = kernel.pack(w, layout)
    for batch in (1, 2, 3, 4, 9):  # every batch tile (8, 4, 2, 1) and their remainders
        x = torch.randn(batch, shape[1])
        assert_matches(small(x, packed, bias), reference(x, w.float(), bias))
        assert_matches(small(x, packed), reference(x, w.float(), None))


@pytest.mark.parametrize("layout", kernel.KINDS)
@pytest.mark.parametrize("tile_rows", [0, 3])
def test_tiled_path_matches_f_linear(isa, layout, tile_rows):
    w = sparse_weight(29, 45, 0.5)
    bias = torch.randn(29)
    x = torch.randn(40, 45)
    y = tiled(x, kernel.pack(w, layout), bias, tile_rows)
    assert_matches(y, reference(x, w, bias))


@pytest.mark.parametrize("layout", kernel.KINDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_tiled_path_in_16_bit(isa, layout, dtype):
    """A 16-bit model's prefill: tiles hold the values as they are and the GEMM runs in that dtype."""
    w = sparse_weight(29, 45, 0.5, dtype)
    x = torch.randn(40, 45).to(dtype)
    for tile_rows in (0, 3):
        y = tiled(x, kernel.pack(w, layout), None, tile_rows)
        ref = reference(x.float(), w.float(), None)
        assert y.dtype == dtype and (y.float() - ref).abs().max() <= 1e-2 * ref.abs().max()


@pytest.mark.parametrize("sparsity", [0.0, 1.0])
@pytest.mark.parametrize("layout", kernel.KINDS)
def test_dense_and_empty_matrices(isa, layout, sparsity):
    w = sparse_weight(9, 40, sparsity)
    x = torch.randn(3, 40)
    assert_matches(small(x, kernel.pack(w, layout)), reference(x, w, None))
    if sparsity == 1.0:
        assert torch.count_nonzero(small(x, kernel.pack(w, layout))) == 0


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 70), sparsity=st.floats(0, 1), batch=st.integers(1, 10),
       seed=st.integers(0, 2**16), layout=st.sampled_from(kernel.KINDS))
def test_property_any_shape(rows, cols, sparsity, batch, seed, layout):
    w = sparse_weight(rows, cols, sparsity, seed=seed)
    x = torch.randn(batch, cols, generator=torch.Generator().manual_seed(seed + 1))
    assert_matches(small(x, kernel.pack(w, layout)), reference(x, w, None))


def test_pack_mask_words_layout():
    """Hand-checked: bit j of word c is W[r, 16c + j] != 0; values row-major plus 16 zeros of padding."""
    w = torch.zeros(2, 18)
    w[0, 0], w[0, 15], w[0, 17], w[1, 1] = 1.0, 2.0, 3.0, 4.0
    p = kernel.pack_mask_words(w)
    assert p["mask"].tolist() == [[(1 + (1 << 15)) - 65536, 2], [2, 0]]  # int16 storage of 0x8001
    assert p["values"][:4].tolist() == [1.0, 2.0, 3.0, 4.0] and p["values"].numel() == 4 + kernel.PAD
    assert p["row_ptr"].tolist() == [0, 3, 4]


@pytest.mark.parametrize("layout", kernel.KINDS)
def test_uneven_rows_split_between_threads(isa, layout):
    """Rows from empty to full in shuffled order (sell sorts them and splits slices between tasks by
    stored entries, not by count): small batches and the tiled path (batch 17) against F.linear."""
    g = torch.Generator().manual_seed(3)
    density = torch.linspace(0, 1, 203)[torch.randperm(203, generator=g)]
    w = torch.randn(203, 300, generator=g) * (torch.rand(203, 300, generator=g) < density[:, None])
    bias = torch.randn(203)
    packed = kernel.pack(w, layout)
    for batch in (1, 3, 17):
        x = torch.randn(batch, 300, generator=g)
        assert_matches(kernel.forward(x, packed, bias, tile_rows=40), reference(x, w, bias))


def test_pack_sell_layout():
    """Hand-checked: rows sorted by nonzero count (stable) into lanes (row 1 → lane 0, row 2 → 1,
    row 0 → 2; lanes 3-15 pad), slot k holding each row's k-th nonzero; short rows pad with column 0,
    value 0."""
    w = torch.zeros(3, 5)
    w[0, 4] = 1.0
    w[1, 0], w[1, 2], w[1, 3] = 2.0, 3.0, 4.0
    w[2, 1], w[2, 3] = 5.0, 6.0
    p = kernel.pack_sell(w)
    assert p["where"].tolist() == [2, 0, 1]
    assert p["slice_ptr"].tolist() == [0, 48]  # width 3 (row 1's count) × 16 lanes
    pad = [0] * 13
    assert p["col"].tolist() == [0, 1, 4] + pad + [2, 3, 0] + pad + [3, 0, 0] + pad
    assert p["values"].tolist() == [2.0, 5.0, 1.0] + pad + [3.0, 6.0, 0.0] + pad + [4.0, 0.0, 0.0] + pad
    assert kernel.pack_sell(w)["col"].dtype == torch.int16
    assert kernel.pack_sell(sparse_weight(2, 40000, 0.99))["col"].dtype == torch.int32


def test_bad_input_is_a_clear_error():
    w = sparse_weight(4, 32, 0.5)
    packed = kernel.pack(w, "bitmask")
    with pytest.raises(RuntimeError, match="32 features"):
        small(torch.randn(1, 48), packed)
    with pytest.raises(RuntimeError, match="float32, bfloat16 or float16"):
        small(torch.randn(1, 32, dtype=torch.float64), packed)
    with pytest.raises(ValueError, match="layout"):
        kernel.pack(w, "coo")
    with pytest.raises(ValueError, match="float32, bfloat16 or float16"):
        kernel.pack(w.double(), "bitmask")


@pytest.mark.parametrize("layout", kernel.KINDS)
def test_corrupt_packed_weight_is_a_clear_error(layout):
    """The kernel reads sizes and offsets from the packed tensor's header: it checks them before
    reading any part, so a corrupt or truncated tensor is an error, not a read out of bounds."""
    packed = kernel.pack(sparse_weight(40, 70, 0.5), layout)
    x = torch.randn(1, 70)
    header = packed[:kernel.HEADER].view(torch.int64)
    cases = [(0, 7, "wrong magic"), (1, 5, "header"), (4, 9, "header"), (7, 1 << 40, "outside"), (2, 41, "sizes")]
    for field, value, match in cases:  # magic, layout, value dtype, first part's size, rows
        bad = packed.clone()
        bad[:kernel.HEADER].view(torch.int64)[field] = value
        with pytest.raises(RuntimeError, match=match):
            raw(x, bad)
        with pytest.raises(ValueError, match="magic|corrupt"):
            small(x, bad)  # kernel.forward checks first
    assert header[0] == kernel.MAGIC  # the originals are untouched
    with pytest.raises(RuntimeError, match="outside"):
        raw(x, packed[: packed.numel() - 64].clone())  # truncated
    with pytest.raises(RuntimeError, match="uint8"):
        raw(x, packed.view(torch.int16))
    with pytest.raises(ValueError, match="magic"):
        kernel.read(torch.zeros(kernel.HEADER, dtype=torch.uint8))
    with pytest.raises(ValueError, match="corrupt"):
        kernel.read(packed[: packed.numel() - 64].clone())


def stamp(blob: torch.Tensor) -> torch.Tensor:
    """Write ``blob``'s checksum into its header, as a deliberate tamperer would after an edit."""
    blob[8 * kernel.DIGEST:8 * kernel.DIGEST + 8] = torch.tensor([kernel.digest(blob)]).view(torch.uint8)
    return blob


def corrupt_copies(layout: str) -> list[tuple[str, torch.Tensor]]:
    """A packed (40, 70) weight with each index part wrong in one way that keeps every size right, and
    the checksum rewritten to match: the index checks alone must catch these."""
    packed = kernel.pack(sparse_weight(40, 70, 0.5), layout)
    cases = []

    def case(name, edit):
        bad = packed.clone()
        edit(kernel.read(bad).parts)  # views into bad
        cases.append((name, stamp(bad)))

    if layout == "sell":
        case("column past the end", lambda p: p["col"].__setitem__(0, 70))
        case("negative column", lambda p: p["col"].__setitem__(5, -1))
        case("lane past the last slice", lambda p: p["where"].__setitem__(0, 48))
        case("two rows in one lane", lambda p: p["where"].__setitem__(1, p["where"][0]))
        case("slice not whole slots", lambda p: p["slice_ptr"].__setitem__(1, p["slice_ptr"][1] - 1))
    else:
        def bit_past_cols(p):  # same count in row 0: one real bit moved past column 70 (70 % 16 = 6)
            words = p["mask"][0]
            first = int(torch.nonzero(words).min())
            words[first] = int(words[first]) & (int(words[first]) - 1)
            words[-1] = int(words[-1]) | (1 << 10)
        case("row offsets off the mask", lambda p: p["row_ptr"].__setitem__(1, p["row_ptr"][1] + 1))
        case("negative row offset", lambda p: p["row_ptr"].__setitem__(1, -1))
        case("mask bit past the last column", bit_past_cols)
    return cases


@pytest.mark.parametrize("layout", kernel.KINDS)
def test_check_finds_indices_out_of_bounds(layout):
    """The kernel trusts the indices inside a packed weight; ``check`` (run on every loaded state_dict)
    must catch each way they can point outside the matrix, though every size is right."""
    kernel.check(kernel.pack(sparse_weight(40, 70, 0.5), layout))
    for name, bad in corrupt_copies(layout):
        for fn in (kernel.check, kernel.unpack):
            try:
                fn(bad)
            except ValueError as e:
                assert "corrupt" in str(e), name
            else:
                pytest.fail(f"{fn.__name__} took a packed weight with a {name}")


@pytest.mark.parametrize("layout", kernel.KINDS)
def test_checksum_catches_what_the_index_checks_cannot(layout):
    """A changed value, or the value dtype switched between bf16 and fp16, leaves every index valid: only
    the checksum tells the weight is not the one packed."""
    w = sparse_weight(40, 70, 0.5, torch.bfloat16)
    packed = kernel.pack(w, layout)
    value = packed.clone()
    kernel.read(value).parts["values"][3] += 1
    dtype = packed.clone()
    dtype[:kernel.HEADER].view(torch.int64)[4] = kernel.VALUE_DTYPES.index(torch.float16)
    for bad in (value, dtype):
        with pytest.raises(ValueError, match="checksum"):
            kernel.check(bad)
        back = kernel.unpack(stamp(bad))  # valid once stamped, but not w: other bits, or other dtype
        assert back.dtype != w.dtype or not torch.equal(back.view(torch.int16), w.view(torch.int16))


@pytest.mark.parametrize("layout", kernel.KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_read_gives_the_parts_back(layout, dtype):
    w = sparse_weight(21, 37, 0.6, dtype)
    kind, shape, parts = kernel.read(kernel.pack(w, layout))
    expected = kernel.LAYOUTS[layout].pack(w)
    assert (kind, shape) == (layout, (21, 37)) and parts.keys() == expected.keys()
    assert all(torch.equal(parts[k], expected[k]) for k in parts)
    assert torch.equal(kernel.unpack(kernel.pack(w, layout)), w)


@pytest.mark.parametrize("shape", SHAPES)
def test_bf16_inputs_with_bf16_values(isa, shape):
    """A bf16 model feeds bf16 x: on AVX512_BF16 the bitmask path takes pairwise bf16 dot products."""
    w = sparse_weight(*shape, 0.6, torch.bfloat16)
    for batch in (1, 5):
        x = torch.randn(batch, shape[1]).to(torch.bfloat16)
        y = small(x, kernel.pack(w, "bitmask"))
        ref = reference(x.float(), w.float(), None)
        assert y.dtype == torch.bfloat16
        assert (y.float() - ref).abs().max().item() <= 1e-2 * max(ref.abs().max().item(), 1.0)  # y rounded to bf16


@pytest.mark.parametrize("layout", kernel.KINDS)
def test_bf16_output_is_the_float32_result_rounded_like_tensor_to(isa, layout):
    """A bf16 x gives the float32 result (x converts exactly) rounded to nearest even: bit for bit what
    Tensor.to(bfloat16) gives, on every path that writes y (incl. 16 rows at a time); NaN stays NaN."""
    w = sparse_weight(50, 40, 0.8, torch.float32)
    bias = torch.randn(50)
    bias[5] = float("nan")
    packed = kernel.pack(w, layout)
    x = torch.randn(3, 40).to(torch.bfloat16)
    expected = small(x.float(), packed, bias).to(torch.bfloat16)
    y = small(x, packed, bias)
    assert torch.equal(y.isnan(), expected.isnan()) and y[:, 5].isnan().all()
    finite = ~expected.isnan()
    assert torch.equal(y[finite].view(torch.int16), expected[finite].view(torch.int16))


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16))
@pytest.mark.parametrize("shape", SHAPES + ((3, 4096),))
def test_permute_path_equals_expand_path_bit_for_bit(monkeypatch, dtype, shape):
    """avx512_permute replaces vexpand by a computed permute: the same lanes, so the same bits, at
    batch 1 and in every batch tile."""
    monkeypatch.setenv("PRUNEKIT_KERNEL_ISA", "avx512_permute")
    if extension.isa() != "avx512_permute":
        pytest.skip("this CPU does not take the avx512_permute path")
    w = sparse_weight(*shape, 0.7, dtype)
    packed = kernel.pack(w, "bitmask")
    for batch in (1, 2, 3, 4, 8, 9):
        x = torch.randn(batch, shape[1]).to(dtype)
        y = kernel.forward(x, packed, isa=extension.ISAS["avx512_permute"])
        assert torch.equal(y, kernel.forward(x, packed, isa=extension.ISAS["avx512_bf16"]))


@pytest.mark.parametrize("layout", kernel.KINDS)
def test_forward_keeps_leading_dims_and_picks_the_path_by_batch(layout):
    w = sparse_weight(24, 40, 0.5)
    bias = torch.randn(24)
    packed = kernel.pack(w, layout)
    x = torch.randn(2, 3, 40)  # (batch, tokens, in): 6 rows
    ref = reference(x.reshape(6, 40), w, bias).reshape(2, 3, 24)
    for small_batch in (6, 5):  # the sparse kernel, then the tiled dense path
        y = kernel.forward(x, packed, bias, small_batch=small_batch, tile_rows=7)
        assert y.shape == (2, 3, 24)
        assert_matches(y, ref)
