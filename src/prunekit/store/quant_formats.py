"""Packed storage of a quantized (and possibly pruned) weight matrix (pure functions on tensors).

Integer levels are packed at ``bits`` bits each (``bits.pack_bits``: int4 two per byte, low nibble first;
int8 one per byte), in one of three layouts, the cheapest for the layer (as ``store/effective_bits``
counts): ``dense`` (every level), ``nm`` (N levels per group of M inputs plus the groups' pattern ranks,
``nm_code``; before version 4, ceil(log2 M)-bit positions, still read) or ``bitmask`` (one bit per weight
plus the kept levels). Per row and group of inputs: a float16 scale and a zero point packed at ``bits``
bits. ``decode_quant`` checks every part and rebuilds the dequantized float32 matrix bit for bit:
scale · (level − zero), and exactly 0 at every pruned position.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch

from ..errors import PrunekitError
from ..quant.grid import LayerGrid, dequantize, group_bounds
from ..selection import is_valid_nm
from .bits import pack_bits, packed_bytes, unpack_bits
from .effective_bits import layer_bits
from .formats import kept_positions, nm_positions
from .nm_code import encode_positions


def _pack(levels: torch.Tensor, bits: int) -> torch.Tensor:
    flat = levels.reshape(-1).to(torch.uint8).cpu()
    return flat.clone() if bits == 8 else pack_bits(flat, bits)


def _unpack(packed: torch.Tensor, count: int, bits: int, what: str) -> torch.Tensor:
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != packed_bytes(count, bits):
        raise PrunekitError(f"{what}: expected {packed_bytes(count, bits)} bytes for {count} values of {bits} bits")
    return packed.long() if bits == 8 else unpack_bits(packed, count, bits)


def _encode_dense(levels: torch.Tensor, keep: torch.Tensor, bits: int, nm) -> dict[str, torch.Tensor]:
    return {"levels": _pack(levels, bits)}


def _encode_bitmask(levels: torch.Tensor, keep: torch.Tensor, bits: int, nm) -> dict[str, torch.Tensor]:
    return {"mask": pack_bits(keep), "levels": _pack(levels[keep], bits)}


def _encode_nm(levels: torch.Tensor, keep: torch.Tensor, bits: int, nm) -> dict[str, torch.Tensor]:
    rows, cols = levels.shape
    n, m = nm
    idx = kept_positions(keep, n, m)
    kept = torch.gather(levels.reshape(rows, cols // m, m), 2, idx)
    return {"ranks": encode_positions(idx, m), "levels": _pack(kept, bits)}


def _decode_dense(parts, shape, bits, nm, col_scale, col_zero) -> torch.Tensor:
    rows, cols = shape
    levels = _unpack(parts["levels"], rows * cols, bits, "levels").reshape(rows, cols)
    return dequantize(levels.float(), col_scale, col_zero)


def _decode_bitmask(parts, shape, bits, nm, col_scale, col_zero) -> torch.Tensor:
    rows, cols = shape
    try:
        keep = unpack_bits(parts["mask"], rows * cols).reshape(rows, cols)
    except ValueError as e:
        raise PrunekitError(f"quantized bitmask layer: {e}") from e
    levels = _unpack(parts["levels"], int(keep.sum()), bits, "levels")
    out = torch.zeros(rows, cols)
    out[keep] = dequantize(levels.float(), col_scale[keep], col_zero[keep])
    return out


def _decode_nm(parts, shape, bits, nm, col_scale, col_zero) -> torch.Tensor:
    rows, cols = shape
    n, m = nm
    count = rows * (cols // m) * n
    try:
        idx = nm_positions(parts, rows * (cols // m), n, m).view(rows, cols // m, n)
    except ValueError as e:
        raise PrunekitError(f"quantized nm layer: {e}") from e
    levels = _unpack(parts["levels"], count, bits, "levels").view(rows, cols // m, n).float()
    col = (torch.arange(cols // m)[None, :, None] * m + idx).reshape(rows, -1)  # (rows, kept) input index
    values = dequantize(levels.reshape(rows, -1), col_scale.gather(1, col), col_zero.gather(1, col))
    out = torch.zeros(rows, cols)
    out.scatter_(1, col, values)
    return out


@dataclass(frozen=True)
class QuantFormat:
    """A packed layout of integer levels: its parts (besides every layout's ``scale`` and ``zero``), encoder and
    checked decoder."""

    parts: tuple[str, ...]
    encode: Callable[[torch.Tensor, torch.Tensor, int, tuple[int, int] | None], dict[str, torch.Tensor]]
    decode: Callable[..., torch.Tensor]  # (parts, shape, bits, nm, per-column scale, per-column zero) -> weights
    needs_nm: bool = False  # holds N:M weights only
    legacy_parts: tuple[str, ...] | None = None  # before version 4


QUANT_FORMATS: Mapping[str, QuantFormat] = MappingProxyType({  # names as ``effective_bits`` counts them
    "dense": QuantFormat(("levels",), _encode_dense, _decode_dense),
    "nm": QuantFormat(("levels", "ranks"), _encode_nm, _decode_nm, needs_nm=True, legacy_parts=("levels", "indices")),
    "bitmask": QuantFormat(("levels", "mask"), _encode_bitmask, _decode_bitmask),
})


def encode_quant(weight: torch.Tensor, grid: LayerGrid, nm: tuple[int, int] | None = None,
                 layout: str | None = None) -> tuple[str, dict]:
    """``weight`` (rows, cols), which must lie on ``grid``, in ``layout`` (a row of ``QUANT_FORMATS``) or, if None,
    the cheapest; returns (layout, parts)."""
    w = weight.float()
    if not torch.equal(grid.apply(w), w):
        raise PrunekitError("its weights are not on its quantization grid (changed after quantizing?)")
    rows, cols = w.shape
    keep = w != 0
    nm = nm if nm is not None and cols % nm[1] == 0 and is_valid_nm(keep, *nm) else None
    if layout is not None and layout not in QUANT_FORMATS:
        raise PrunekitError(f"unknown quantized layout {layout!r}; choose one of {', '.join(QUANT_FORMATS)}")
    if layout is not None and QUANT_FORMATS[layout].needs_nm and nm is None:
        raise PrunekitError(f"a layer of shape {(rows, cols)} is not 2:4 or 4:8 sparse")
    layout = layout or layer_bits((rows, cols), int(keep.sum()), grid.bits, grid, nm)["storage"]
    levels = grid.levels(w)  # (rows, cols) uint8
    parts = {"scale": grid.scale.contiguous(), "zero": _pack(grid.zero, grid.bits)}
    return layout, parts | QUANT_FORMATS[layout].encode(levels, keep, grid.bits, nm)


def decode_quant(parts: dict[str, torch.Tensor], layout: str, shape: tuple[int, int], bits: int, groupsize: int,
                 sym: bool, nm: tuple[int, int] | None = None) -> tuple[torch.Tensor, LayerGrid]:
    """The float32 (rows, cols) matrix and its grid back from ``encode_quant``'s parts, every invariant checked."""
    row = QUANT_FORMATS.get(layout)
    if row is None or set(parts) not in ({"scale", "zero", *row.parts}, {"scale", "zero", *(row.legacy_parts or row.parts)}):
        raise PrunekitError(f"quantized {layout} layer: parts {sorted(parts)} are not the layout's")
    rows, cols = shape
    if not 2 <= bits <= 8 or groupsize < 0 or (row.needs_nm and (nm is None or cols % nm[1])):
        raise PrunekitError(f"quantized {layout} layer: bits {bits}, group size {groupsize} or N:M {nm} do not fit")
    groups = len(group_bounds(cols, groupsize)) if cols else 0
    scale = parts["scale"]
    if scale.dtype != torch.float16 or tuple(scale.shape) != (rows, groups) or not bool(torch.isfinite(scale).all()) \
            or bool((scale <= 0).any()):
        raise PrunekitError(f"quantized {layout} layer: its scales are not {rows}x{groups} positive float16 values")
    zero = _unpack(parts["zero"], rows * groups, bits, "zero points").reshape(rows, groups)
    grid = LayerGrid(bits, groupsize, sym, scale, zero.to(torch.uint8))
    col_scale, col_zero = grid.columns(cols)  # (rows, cols) float32
    return row.decode(parts, shape, bits, nm, col_scale, col_zero), grid
