import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prunekit.errors import PrunekitError
from prunekit.selection import nm_mask
from prunekit.store.bits import pack_bits
from prunekit.store.formats import decode, encode, index_dtype, kept_positions, nbytes

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 20), cols=st.integers(1, 70), sparsity=st.sampled_from([0.0, 0.3, 0.5, 0.9, 1.0]),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16), empty_row=st.booleans())
def test_bitmask_and_csr_roundtrip_bit_exact(rows, cols, sparsity, dtype, seed, empty_row):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g).to(dtype)
    w[torch.rand(rows, cols, generator=g) < sparsity] = 0
    if empty_row:
        w[0] = 0
    for fmt in ("bitmask", "csr"):
        back = decode(encode(w, fmt), fmt, (rows, cols), dtype)
        assert back.dtype == dtype and torch.equal(back.view(torch.int16 if dtype != torch.float32 else torch.int32),
                                                   w.view(torch.int16 if dtype != torch.float32 else torch.int32))


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 16), groups=st.integers(1, 10), nm=st.sampled_from([(2, 4), (4, 8), (1, 4), (3, 7)]),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16), extra_zeros=st.booleans())
def test_nm_roundtrip_bit_exact(rows, groups, nm, dtype, seed, extra_zeros):
    n, m = nm
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, groups * m, generator=g)
    w = (w * nm_mask(w.abs(), n, m)).to(dtype)
    if extra_zeros:  # groups with fewer than N nonzeros
        w[:, :m] = 0
    parts = encode(w, "nm", (n, m))
    assert torch.equal(decode(parts, "nm", tuple(w.shape), dtype, (n, m)), w)


def test_nm_files_before_version_4_keep_their_positions_readable():
    w = torch.randn(3, 16)
    w = w * nm_mask(w.abs(), 2, 4)
    legacy = {"values": encode(w, "nm", (2, 4))["values"], "indices": pack_bits(kept_positions(w != 0, 2, 4), 2)}
    assert torch.equal(decode(legacy, "nm", (3, 16), torch.float32, (2, 4)), w)
    legacy["indices"] = pack_bits(torch.tensor([1, 1] + [0, 1] * 11), 2)  # the first group's positions repeat
    with pytest.raises(PrunekitError, match="must increase"):
        decode(legacy, "nm", (3, 16), torch.float32, (2, 4))


def test_nm_sizes_and_index_types():
    w = torch.randn(64, 128)
    w = w * nm_mask(w.abs(), 2, 4)
    parts = encode(w, "nm", (2, 4))
    # 2048 groups of four: 410 chunks of five ranks in 13 bits = 5330 bits, 667 bytes (2-bit positions took 1024)
    assert parts["values"].shape == (64, 64) and parts["ranks"].numel() == 667
    assert nbytes(parts) == 64 * 64 * 4 + 667
    csr = encode(w, "csr")
    assert csr["col"].dtype == torch.uint8 and csr["crow"].dtype == torch.int16
    assert index_dtype(255) == torch.uint8 and index_dtype(256) == torch.int16 and index_dtype(2**40) == torch.int64
    with pytest.raises(PrunekitError, match="not 2:4"):
        encode(torch.ones(2, 8), "nm", (2, 4))
    with pytest.raises(PrunekitError, match="more patterns"):  # C(70, 35) > 2^62
        encode(torch.zeros(2, 70), "nm", (35, 70))


def test_corrupt_parts_are_errors():
    w = torch.randn(4, 8)
    w[w.abs() < 0.5] = 0
    parts = encode(w, "csr")
    parts["values"] = parts["values"][:-1]
    with pytest.raises(PrunekitError, match="corrupt"):
        decode(parts, "csr", (4, 8), torch.float32)
    parts = encode(w, "bitmask")
    parts["values"] = torch.cat([parts["values"], torch.ones(1)])
    with pytest.raises(PrunekitError, match="corrupt"):
        decode(parts, "bitmask", (4, 8), torch.float32)
