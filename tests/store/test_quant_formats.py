import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prunekit import PrunekitError
from prunekit.quant.grid import rtn
from prunekit.store.bits import pack_bits, packed_bytes
from prunekit.store.formats import kept_positions
from prunekit.store.nm_code import code_bits
from prunekit.store.quant_formats import decode_quant, encode_quant


def _weights(rows, cols, zeros, seed, nm=None):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * 0.05 - 0.01  # mostly negative: not centred
    if nm is not None:
        n, m = nm
        order = torch.rand(rows, cols // m, m, generator=g).argsort(dim=2)
        w.view(rows, cols // m, m).scatter_(2, order[..., : m - n], 0.0)
    else:
        w[torch.rand(rows, cols, generator=g) < zeros] = 0.0
    return w


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 6), cols=st.sampled_from([1, 7, 13, 16, 40]), bits=st.integers(2, 8),
       groupsize=st.sampled_from([0, 3, 8, 16]), sym=st.booleans(), zeros=st.sampled_from([0.0, 0.3, 0.9, 1.0]),
       seed=st.integers(0, 2**16))
def test_round_trip_is_bit_exact(rows, cols, bits, groupsize, sym, zeros, seed):
    """Odd widths, groups that do not divide the width, negative values, all zeros, every bit width."""
    w, grid = rtn(_weights(rows, cols, zeros, seed), bits, groupsize, sym)
    layout, parts = encode_quant(w, grid)
    back, grid2 = decode_quant(parts, layout, (rows, cols), bits, groupsize, sym)
    assert torch.equal(back, w) and torch.equal(grid2.scale, grid.scale) and torch.equal(grid2.zero, grid.zero)
    if zeros == 1.0:
        assert layout == "bitmask" and parts["levels"].numel() == 0  # nothing kept: only the mask and the grid


@pytest.mark.parametrize("bits", [4, 8])
def test_two_four_is_stored_as_nm_with_levels_packed(bits):
    w = _weights(8, 64, 0, 1, nm=(2, 4))
    w += w.sign() * 0.1  # kept weights far from 0: none rounds to 0, so the layer stays exactly 2:4
    w, grid = rtn(w, bits, 32, False)
    layout, parts = encode_quant(w, grid, (2, 4))
    assert layout == "nm"
    assert parts["levels"].numel() == packed_bytes(8 * 32, bits)  # int4: two per byte
    assert parts["ranks"].numel() == packed_bytes(code_bits(2, 4, 8 * 16)) == 43  # 26 chunks of five ranks, 13 bits
    assert parts["zero"].numel() == packed_bytes(8 * 2, bits)
    back, _ = decode_quant(parts, layout, (8, 64), bits, 32, False, (2, 4))
    assert torch.equal(back, w)
    legacy = {k: v for k, v in parts.items() if k != "ranks"} | {"indices": pack_bits(kept_positions(w != 0, 2, 4), 2)}
    assert torch.equal(decode_quant(legacy, layout, (8, 64), bits, 32, False, (2, 4))[0], w)  # version-3 files


def test_weights_off_their_grid_are_refused():
    w, grid = rtn(_weights(4, 16, 0.5, 2), 4, 8, False)
    w[0, 0] += 1e-3
    with pytest.raises(PrunekitError, match="not on its quantization grid"):
        encode_quant(w, grid)


def _tamper(parts, key, value):
    return parts | {key: value}


def test_tampered_parts_are_refused():
    w, grid = rtn(_weights(4, 16, 0.5, 3), 4, 8, False)
    layout, parts = encode_quant(w, grid)
    assert layout == "bitmask"
    bad = [
        _tamper(parts, "levels", parts["levels"][:-1]),                     # a value short
        _tamper(parts, "scale", -parts["scale"]),                           # negative scales
        _tamper(parts, "scale", parts["scale"][:, :1].contiguous()),         # a group's scales missing
        _tamper(parts, "zero", parts["zero"].to(torch.int16)),              # the wrong dtype
        {k: v for k, v in parts.items() if k != "mask"},                     # a part missing
    ]
    for case in bad:
        with pytest.raises(PrunekitError):
            decode_quant(case, layout, (4, 16), 4, 8, False)
    with pytest.raises(PrunekitError):
        decode_quant(parts, layout, (4, 16), 9, 8, False)  # bits out of range
