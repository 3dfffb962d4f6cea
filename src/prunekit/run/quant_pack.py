"""The compiled kernel's dense and quantized packed weights (pack, read, check, unpack).

Layouts (see ``csrc/dense_quant_linear.cpp``): ``gemv`` (the float weight as it is: a GEMV as good as
the sparse layouts', so their speedups can be quoted against it), and, for a weight on a ``LayerGrid``
of 4 or 8 bits with groups of a multiple of 64 columns, ``qdense`` (every level), ``qbitmask`` (a mask
bit per weight and the kept levels) and ``qnm`` (2:4: two levels and their 2-bit positions per four
columns). A packed weight is one uint8 tensor: a header (magic ``PKQ1``, kind, shape, value dtype,
bits, group size, each part's offset and size, a checksum) and its parts at 64-byte aligned offsets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import NamedTuple

import torch

from ..quant.grid import LayerGrid, dequantize, group_bounds
from .kernel import HEADER, VALUE_DTYPES, assemble, digest

MAGIC = 0x31514B50  # "PKQ1"
DIGEST = 15  # header slot of the checksum over everything else (the header is kernel.py's 16 int64)
LEVEL_PAD = 16  # bytes after a bitmask layout's levels: the kernel loads 16 at a time
BLOCK = 64  # columns per kernel step; rows of levels are padded to it, groups are a multiple of it


class QPacked(NamedTuple):
    kind: str
    shape: tuple[int, int]  # (rows, cols)
    dtype: torch.dtype | None  # gemv: the values' dtype
    bits: int  # quantized: 4 or 8
    groupsize: int
    parts: dict[str, torch.Tensor]  # views into the packed tensor


def _padded(cols: int) -> int:
    return -(-cols // BLOCK) * BLOCK


def _nibbles(levels: torch.Tensor) -> torch.Tensor:
    """(..., 2k) levels → (..., k) bytes: entry j in the low nibble, entry j + k in the high one."""
    k = levels.shape[-1] // 2
    return levels[..., :k] | (levels[..., k:] << 4)


def _unnibble(b: torch.Tensor) -> torch.Tensor:
    return torch.cat([b & 15, b >> 4], dim=-1)


def levels_of(weight: torch.Tensor, grid: LayerGrid) -> torch.Tensor:
    """The (rows, cols) uint8 levels of ``weight``, which must be exactly ``grid``'s weights in its dtype."""
    w = weight.float()
    levels = grid.levels(w)
    scale, zero = grid.columns(w.shape[1])
    if not torch.equal(dequantize(levels.float(), scale, zero).to(weight.dtype), weight):
        raise ValueError("the weight is not on its quantization grid")
    return levels


def _quant_parts(weight: torch.Tensor, kind: str, grid: LayerGrid) -> dict[str, torch.Tensor]:
    rows, cols = weight.shape
    if grid.bits not in (4, 8):
        raise ValueError(f"the kernel runs 4- and 8-bit grids, not {grid.bits}-bit")
    if grid.groupsize % BLOCK:
        raise ValueError(f"the kernel needs groups of a multiple of {BLOCK} columns, not {grid.groupsize}")
    if tuple(grid.scale.shape) != (rows, len(group_bounds(cols, grid.groupsize))):
        raise ValueError(f"the grid's scales {tuple(grid.scale.shape)} do not fit a ({rows}, {cols}) weight")
    padded = _padded(cols)
    levels = torch.empty(rows, padded, dtype=torch.uint8)
    levels[:, :cols] = levels_of(weight, grid)
    levels[:, cols:] = grid.zero[:, -1:]  # padding weighs 0
    keep = torch.zeros(rows, padded, dtype=torch.bool)
    keep[:, :cols] = weight != 0
    parts = {"scale": grid.scale.contiguous(), "zero": grid.zero.contiguous()}
    return parts | LAYOUTS[kind].encode(levels, keep, grid.bits)


def _encode_qdense(levels: torch.Tensor, keep: torch.Tensor, bits: int) -> dict[str, torch.Tensor]:
    """Every level (rows, padded); int4: two per byte, each 64-column block's first half in the low nibbles."""
    rows, padded = levels.shape
    return {"levels": _nibbles(levels.view(rows, padded // BLOCK, BLOCK)) if bits == 4 else levels}


def _encode_qnm(levels: torch.Tensor, keep: torch.Tensor, bits: int) -> dict[str, torch.Tensor]:
    """Two levels per four columns and their positions, one 64-bit word per 64-column block."""
    rows, padded = levels.shape
    blocks = padded // BLOCK
    groups = keep.view(rows, padded // 4, 4)
    if bool((groups.sum(2) > 2).any()):
        raise ValueError("qnm holds 2:4 weights: a group of four columns has more than two nonzeros")
    pos = torch.argsort(groups.to(torch.int8), dim=2, descending=True, stable=True)[..., :2].sort(dim=2).values
    kept = torch.gather(levels.view(rows, padded // 4, 4), 2, pos).view(rows, blocks, 32)
    return {"levels": _nibbles(kept) if bits == 4 else kept, "index": _nm_words(pos.view(rows, blocks, 32))}


def _encode_qbitmask(levels: torch.Tensor, keep: torch.Tensor, bits: int) -> dict[str, torch.Tensor]:
    stream, index = _bitmask_parts(levels, keep, bits)
    return {"levels": stream, "index": index}


NM_SHIFT = 16 * (torch.arange(32) % 4) + 2 * (torch.arange(32) // 4)  # bit of level k's position in its block's word


def _nm_words(pos: torch.Tensor) -> torch.Tensor:
    """(rows, blocks, 32) positions (0-3) → (rows, blocks, 2) int32: each block's 64-bit word, low half first."""
    low = NM_SHIFT < 32
    halves = [(pos[..., sel].long() << (NM_SHIFT[sel] % 32)).sum(-1) for sel in (low, ~low)]  # each < 2^32
    return torch.stack([torch.where(h >= 2**31, h - 2**32, h) for h in halves], dim=-1).to(torch.int32)


def _nm_positions(words: torch.Tensor) -> torch.Tensor:
    """``_nm_words``' inverse: (rows, blocks, 2) int32 → (rows, blocks, 32) positions."""
    halves = words.long() & 0xFFFFFFFF
    word = torch.where(NM_SHIFT < 32, halves[..., :1], halves[..., 1:])  # (rows, blocks, 32)
    return (word >> (NM_SHIFT % 32)) & 3


def _nibble_slots(keep: torch.Tensor) -> tuple[torch.Tensor, int]:
    """int4 qbitmask: the nibble of the level stream each kept weight (row-major) takes, each 16-column
    word's levels starting on a whole byte; and the stream's length in nibbles."""
    words = keep.reshape(-1, 16)
    count = words.sum(1)
    nibbles = count + count % 2
    word_of = words.nonzero(as_tuple=True)[0]  # each kept weight's word
    rank = torch.arange(word_of.numel()) - (count.cumsum(0) - count)[word_of]
    return (nibbles.cumsum(0) - nibbles)[word_of] + rank, int(nibbles.sum())


def _bitmask_parts(levels: torch.Tensor, keep: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Kept levels row after row (int4: each 16-column word's levels padded to a whole byte) and the index
    part: row_ptr (rows + 1, byte offsets, int64) then the mask words (rows, cols / 16, int16)."""
    rows = keep.shape[0]
    words = keep.view(rows, -1, 16).to(torch.int32) << torch.arange(16, dtype=torch.int32)
    words = words.sum(2, dtype=torch.int32)
    mask = torch.where(words > 32767, words - 65536, words).to(torch.int16)
    count = keep.view(rows, -1, 16).sum(2)  # (rows, words)
    kept = levels[keep]  # row-major: word by word
    if bits == 8:
        per_row, stream = count.sum(1), kept
    else:
        slots, total = _nibble_slots(keep)
        nib = torch.zeros(total, dtype=torch.uint8)
        nib[slots] = kept
        stream = nib[0::2] | (nib[1::2] << 4)
        per_row = ((count + 1) // 2).sum(1)
    row_ptr = torch.zeros(rows + 1, dtype=torch.int64)
    row_ptr[1:] = per_row.cumsum(0)
    index = torch.cat([row_ptr.view(torch.uint8), mask.reshape(-1).view(torch.uint8)])
    return torch.cat([stream, stream.new_zeros(LEVEL_PAD)]), index


def pack(weight: torch.Tensor, kind: str, grid: LayerGrid | None = None) -> torch.Tensor:
    """(rows, cols) → one uint8 tensor. ``gemv`` takes a float32, bfloat16 or float16 weight; the quantized
    kinds a weight that lies exactly on ``grid`` (in its own dtype). Raises ValueError."""
    if kind not in LAYOUTS:
        raise ValueError(f"unknown kernel layout {kind!r}; choose one of {KINDS}")
    rows, cols = weight.shape
    header = torch.zeros(16, dtype=torch.int64)
    if not LAYOUTS[kind].quantized:
        if weight.dtype not in VALUE_DTYPES:
            raise ValueError(f"the gemv layout stores float32, bfloat16 or float16 values, not {weight.dtype}")
        parts = {"values": weight.contiguous()}
        header[:7] = torch.tensor([MAGIC, 0, rows, cols, VALUE_DTYPES.index(weight.dtype), 0, 0])
    else:
        if grid is None:
            raise ValueError(f"the {kind} layout needs the weight's quantization grid")
        parts = _quant_parts(weight, kind, grid)
        header[:7] = torch.tensor([MAGIC, KINDS.index(kind), rows, cols, 0, grid.bits, grid.groupsize])
    return assemble(header, [parts[name] for name in LAYOUTS[kind].parts], 7, DIGEST)


def read(blob: torch.Tensor) -> QPacked:
    """``pack``'s tensor as its layout, shape and parts (views), after the checks the kernel makes on each
    call (a known kind, parts inside the tensor, sizes that fit the shape). Raises ValueError."""
    if blob.dtype != torch.uint8 or blob.dim() != 1 or not blob.is_contiguous() or blob.numel() < HEADER:
        raise ValueError("not a packed weight: expected a contiguous 1-D uint8 tensor with prunekit's header")
    h = blob[:HEADER].clone().view(torch.int64).tolist()
    if h[0] != MAGIC:
        raise ValueError("not a dense or quantized packed weight (wrong magic number)")
    kind_i, rows, cols, dtype_i, bits, groupsize = h[1:7]
    ok = 0 <= kind_i < len(KINDS) and 0 <= rows < 1 << 31 and 0 <= cols < 1 << 31
    if ok and not LAYOUTS[KINDS[kind_i]].quantized:
        ok = 0 <= dtype_i < len(VALUE_DTYPES)
    elif ok:
        ok = bits in (4, 8) and groupsize >= 0 and groupsize % BLOCK == 0
    if not ok:
        raise ValueError("corrupt packed weight header")
    kind = KINDS[kind_i]
    layout = LAYOUTS[kind]
    spans = [(h[7 + 2 * k], h[8 + 2 * k]) for k in range(len(layout.parts))]
    if any(off < HEADER or off % 64 or size < 0 or off + size > blob.numel() for off, size in spans):
        raise ValueError("corrupt packed weight: a part lies outside the tensor")
    raw = {name: blob[off:off + size] for name, (off, size) in zip(layout.parts, spans, strict=True)}
    groups = len(group_bounds(cols, groupsize)) if cols else 1
    try:
        if not layout.quantized:
            parts = {"values": raw["values"].view(VALUE_DTYPES[dtype_i]).view(rows, cols)}
        else:
            parts = {"scale": raw["scale"].view(torch.float16).view(rows, groups), "zero": raw["zero"].view(rows, groups)}
            parts |= layout.view(raw, rows, _padded(cols), bits)
    except RuntimeError as e:
        raise ValueError(f"corrupt packed weight: part sizes do not fit a ({rows}, {cols}) {kind} weight") from e
    dtype = None if layout.quantized else VALUE_DTYPES[dtype_i]
    return QPacked(kind, (rows, cols), dtype, bits, groupsize, parts)


def _word_counts(mask: torch.Tensor) -> torch.Tensor:
    words = mask.to(torch.int32) & 0xFFFF
    return ((words[..., None] >> torch.arange(16)) & 1).sum(-1)  # (rows, words)


def check(blob: torch.Tensor) -> QPacked:
    """``read``, the checksum, finite scales, and a bitmask layout's row offsets against its mask words:
    everything the kernel trusts. Every packed weight from outside passes here before it runs."""
    packed = read(blob)
    if digest(blob, DIGEST) != blob[8 * DIGEST:8 * DIGEST + 8].view(torch.int64).item():
        raise ValueError("corrupt packed weight: its checksum does not match its bytes")
    p, layout = packed.parts, LAYOUTS[packed.kind]
    if layout.quantized and not bool(torch.isfinite(p["scale"]).all()):
        raise ValueError("corrupt packed weight: a scale is not finite")
    if layout.check is not None and not layout.check(p, packed.bits):
        raise ValueError("corrupt packed weight: its row offsets do not match its mask")
    return packed


def _check_qbitmask(p: dict[str, torch.Tensor], bits: int) -> bool:
    count = _word_counts(p["mask"])
    per_row = (count.sum(1) if bits == 8 else ((count + 1) // 2).sum(1))
    row_ptr = p["row_ptr"]
    return (int(row_ptr[0]) == 0 and torch.equal(row_ptr.diff(), per_row)
            and int(row_ptr[-1]) + LEVEL_PAD <= p["levels"].numel())


def unpack(blob: torch.Tensor) -> torch.Tensor:
    """The weight back from ``pack``'s tensor: gemv's in its own dtype, quantized as float32 (its grid's
    weights, exactly as ``quant.grid.dequantize`` computes them)."""
    kind, (rows, cols), _, bits, groupsize, p = check(blob)
    layout = LAYOUTS[kind]
    if not layout.quantized:
        return p["values"].clone()
    padded = _padded(cols)
    index = torch.arange(padded) // (groupsize or padded)
    index = index.clamp(max=p["scale"].shape[1] - 1)
    scale, zero = p["scale"].float()[:, index], p["zero"].float()[:, index]  # (rows, padded)
    levels = torch.zeros(rows, padded, dtype=torch.uint8) + p["zero"][:, -1:]
    levels, keep = layout.unpack(p, levels, bits)
    w = torch.where(keep, dequantize(levels.float(), scale, zero), torch.zeros(()))
    return w[:, :cols].contiguous()


def _unpack_qdense(p: dict[str, torch.Tensor], levels: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(levels, keep), each (rows, padded), from the parts; ``levels`` holds the padding's level."""
    rows, padded = levels.shape
    if bits == 4:
        levels = _unnibble(p["levels"].view(rows, padded // BLOCK, BLOCK // 2)).view(rows, padded)
    else:
        levels = p["levels"]
    return levels, torch.ones(rows, padded, dtype=torch.bool)


def _unpack_qnm(p: dict[str, torch.Tensor], levels: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows, padded = levels.shape
    blocks = padded // BLOCK
    kept = p["levels"].view(rows, blocks, -1)
    kept = _unnibble(kept) if bits == 4 else kept  # (rows, blocks, 32)
    col = torch.arange(blocks)[:, None] * BLOCK + 4 * (torch.arange(32) // 2) + _nm_positions(p["index"])
    keep = torch.zeros(rows, padded, dtype=torch.bool)
    keep.scatter_(1, col.view(rows, -1), True)
    return levels.scatter(1, col.view(rows, -1), kept.reshape(rows, -1)), keep


def _unpack_qbitmask(p: dict[str, torch.Tensor], levels: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows, padded = levels.shape
    keep = ((p["mask"].to(torch.int32)[..., None] >> torch.arange(16)) & 1).bool().view(rows, padded)
    levels = levels.clone()
    stream = p["levels"][: int(p["row_ptr"][-1])]
    if bits == 8:
        levels[keep] = stream
    else:
        nib = torch.stack([stream & 15, stream >> 4], dim=1).reshape(-1)
        levels[keep] = nib[_nibble_slots(keep)[0]]
    return levels, keep


def _view_qdense(raw: dict[str, torch.Tensor], rows: int, padded: int, bits: int) -> dict[str, torch.Tensor]:
    return {"levels": raw["levels"].view(rows, padded * bits // 8)}


def _view_qnm(raw: dict[str, torch.Tensor], rows: int, padded: int, bits: int) -> dict[str, torch.Tensor]:
    return {"levels": raw["levels"].view(rows, padded // 2 * bits // 8),
            "index": raw["index"].view(torch.int32).view(rows, padded // BLOCK, 2)}


def _view_qbitmask(raw: dict[str, torch.Tensor], rows: int, padded: int, bits: int) -> dict[str, torch.Tensor]:
    return {"levels": raw["levels"], "row_ptr": raw["index"][:8 * (rows + 1)].view(torch.int64),
            "mask": raw["index"][8 * (rows + 1):].view(torch.int16).view(rows, padded // 16)}


class PackLayout(NamedTuple):
    """A layout of the compiled dense/quantized kernel: its parts in blob order and, for a quantized one, the level
    encoder, the parts' typed views, an extra index check (or None) and the unpacker."""

    parts: tuple[str, ...]
    quantized: bool
    encode: Callable[[torch.Tensor, torch.Tensor, int], dict[str, torch.Tensor]] | None = None
    view: Callable[[dict[str, torch.Tensor], int, int, int], dict[str, torch.Tensor]] | None = None
    check: Callable[[dict[str, torch.Tensor], int], bool] | None = None
    unpack: Callable[[dict[str, torch.Tensor], torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]] | None = None


LAYOUTS: Mapping[str, PackLayout] = MappingProxyType({  # the header stores a layout's position here
    "gemv": PackLayout(("values",), quantized=False),
    "qdense": PackLayout(("levels", "scale", "zero"), True, _encode_qdense, _view_qdense, None, _unpack_qdense),
    "qbitmask": PackLayout(("levels", "scale", "zero", "index"), True, _encode_qbitmask, _view_qbitmask,
                           _check_qbitmask, _unpack_qbitmask),
    "qnm": PackLayout(("levels", "scale", "zero", "index"), True, _encode_qnm, _view_qnm, None, _unpack_qnm),
})
KINDS = tuple(LAYOUTS)
QUANT_KINDS = tuple(k for k, row in LAYOUTS.items() if row.quantized)
