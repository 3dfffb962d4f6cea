"""The storage format tables, walked row by row: every float format and every packed quantized layout round-trips a
2:4 weight exactly through its own parts."""

import torch

from prunekit.quant.grid import rtn
from prunekit.store.formats import FORMATS, decode, encode, nm_pattern
from prunekit.store.quant_formats import QUANT_FORMATS, decode_quant, encode_quant


def _two_four(rows=6, cols=16, seed=0) -> torch.Tensor:
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))
    w.view(rows, -1, 4)[..., 1::2] = 0  # two of every four inputs zero
    return w


def test_every_float_format_round_trips_through_its_parts():
    w = _two_four()
    assert nm_pattern(w) == (2, 4) and nm_pattern(torch.ones(2, 8)) is None
    for name, row in FORMATS.items():
        nm = row.pattern(w)
        parts = encode(w, name, nm)
        assert set(parts) == set(row.parts), name
        assert torch.equal(decode(parts, name, tuple(w.shape), w.dtype, nm), w), name


def test_every_quantized_layout_round_trips_through_its_parts():
    w, grid = rtn(_two_four(cols=32), 4, 16, False)
    for name, row in QUANT_FORMATS.items():
        layout, parts = encode_quant(w, grid, (2, 4), name)
        assert layout == name and set(parts) == {"scale", "zero", *row.parts}, name
        back, back_grid = decode_quant(parts, name, tuple(w.shape), 4, 16, False, (2, 4) if row.needs_nm else None)
        assert torch.equal(back, w) and torch.equal(back_grid.scale, grid.scale), name

