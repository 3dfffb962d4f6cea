"""The compiled CPU sparse kernel's packed weights (pack, read, check, unpack) and its call (``forward``).

A packed weight is one uint8 tensor: a header, then its layout's parts (a row of ``LAYOUTS``: ``bitmask``, the
kernel's row-aligned 16-bit mask words, or ``sell``). Building and loading the extension is ``native``'s job."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import NamedTuple

import torch

from ..native.extension import forced_isa, load

SLICE = 16  # rows per sell slice: one AVX-512 vector of float32
PAD = 32  # zeros after the packed values, so vector loads never leave the buffer
MAGIC = 0x31534B50  # "PKS1": the packed weight's first int64 (see csrc/sparse_linear.cpp, read_packed)
HEADER = 128  # bytes: 16 int64, then each part at a 64-byte aligned offset
DIGEST = 14  # header slot of the checksum over everything else (the kernel does not read it)
VALUE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def pack_mask_words(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """(rows, cols) → the kernel's mask words (not the storage format's bit stream, ``store/formats``): per row,
    one 16-bit word per 16 columns, each row starting on a new word; row-major nonzeros (+ padding), row offsets."""
    rows, cols = weight.shape
    chunks = (cols + 15) // 16
    keep = torch.zeros(rows, chunks * 16, dtype=torch.bool)
    keep[:, :cols] = weight != 0
    bits = keep.view(rows, chunks, 16).to(torch.int32) << torch.arange(16, dtype=torch.int32)
    words = bits.sum(2, dtype=torch.int32)  # (rows, chunks) in [0, 65535]
    mask = torch.where(words > 32767, words - 65536, words).to(torch.int16).contiguous()
    values = weight[weight != 0]
    row_ptr = torch.zeros(rows + 1, dtype=torch.int64)
    row_ptr[1:] = (weight != 0).sum(1).cumsum(0)
    return {"mask": mask, "values": torch.cat([values, values.new_zeros(PAD)]).contiguous(), "row_ptr": row_ptr}


def pack_sell(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """(rows, cols) → sliced ELLPACK: rows sorted by nonzero count, 16 per slice (``where``: each
    row's lane, 16 · slice + lane); slice s's entries ``[slice_ptr[s], slice_ptr[s+1])`` hold, slot by
    slot, the k-th nonzero of each of its rows (``col``: int16, or int32 when cols > 32767; ``values``).
    Rows shorter than their slice's longest pad with column 0, value 0."""
    rows, cols = weight.shape
    keep = weight != 0
    count = keep.sum(1)  # (rows,)
    order = torch.sort(count, descending=True, stable=True).indices  # the row in each lane
    where = torch.empty(rows, dtype=torch.int64)
    where[order] = torch.arange(rows)
    slices = -(-rows // SLICE)
    width = torch.zeros(slices * SLICE, dtype=torch.int64)
    width[:rows] = count[order]
    slice_ptr = torch.zeros(slices + 1, dtype=torch.int64)
    slice_ptr[1:] = (width.view(slices, SLICE).amax(1) * SLICE).cumsum(0)
    r, c = keep.nonzero(as_tuple=True)  # row-major
    k = torch.arange(r.numel()) - (count.cumsum(0) - count)[r]  # rank of each nonzero within its row
    lane = where[r]
    at = slice_ptr[lane // SLICE] + SLICE * k + lane % SLICE
    total = int(slice_ptr[-1])
    col = torch.zeros(total, dtype=torch.int16 if cols <= 32767 else torch.int32)
    col[at] = c.to(col.dtype)
    values = weight.new_zeros(total)
    values[at] = weight[r, c]
    return {"slice_ptr": slice_ptr, "col": col, "values": values, "where": where.to(torch.int32)}


class Packed(NamedTuple):
    kind: str
    shape: tuple[int, int]  # (rows, cols)
    parts: dict[str, torch.Tensor]  # views into the packed tensor


def pack(weight: torch.Tensor, kind: str) -> torch.Tensor:
    """(rows, cols) → one uint8 tensor: a header (magic, layout, shape, value dtype, index width, each
    part's offset and size) and the layout's parts at 64-byte aligned offsets. One tensor, so a call
    passes (and, in a decode step, pulls into cache) one tensor's metadata instead of four."""
    if kind not in LAYOUTS:
        raise ValueError(f"unknown kernel layout {kind!r}; choose one of {KINDS}")
    if weight.dtype not in VALUE_DTYPES:
        raise ValueError(f"the sparse kernel stores float32, bfloat16 or float16 values, not {weight.dtype}")
    layout = LAYOUTS[kind]
    parts = layout.pack(weight)
    header = torch.zeros(16, dtype=torch.int64)
    index_bytes = parts["col"].element_size() if "col" in parts else 0
    header[:6] = torch.tensor([MAGIC, KINDS.index(kind), *weight.shape, VALUE_DTYPES.index(weight.dtype), index_bytes])
    return assemble(header, [parts[name] for name in layout.parts], 6, DIGEST)


def assemble(header: torch.Tensor, parts: list[torch.Tensor], span_slot: int, digest_slot: int) -> torch.Tensor:
    """One uint8 tensor: the 16-int64 ``header`` with each part's (offset, bytes) written from ``span_slot``
    on, the parts' bytes at 64-byte aligned offsets, and the checksum in header slot ``digest_slot``."""
    raw = [p.reshape(-1).view(torch.uint8) for p in parts]
    offsets = [HEADER]
    for r in raw:
        offsets.append(offsets[-1] + -(-r.numel() // 64) * 64)
    for k, r in enumerate(raw):
        header[span_slot + 2 * k], header[span_slot + 1 + 2 * k] = offsets[k], r.numel()
    blob = torch.zeros(offsets[-1], dtype=torch.uint8)
    blob[:HEADER] = header.view(torch.uint8)
    for off, r in zip(offsets[:-1], raw, strict=True):
        blob[off:off + r.numel()] = r
    checksum = torch.tensor([digest(blob, digest_slot)], dtype=torch.int64)
    blob[8 * digest_slot:8 * digest_slot + 8] = checksum.view(torch.uint8)
    return blob


def digest(blob: torch.Tensor, slot: int = DIGEST) -> int:
    """64-bit BLAKE2b of the packed tensor minus its checksum slot, as a signed int64: ``check`` compares
    it with the slot, so a changed byte anywhere (a value, or the dtype field) is caught, not run."""
    data = memoryview(blob.contiguous().numpy())
    h = hashlib.blake2b(digest_size=8)
    h.update(data[:8 * slot])
    h.update(data[8 * slot + 8:])
    return int.from_bytes(h.digest(), "little", signed=True)


def read(blob: torch.Tensor) -> Packed:
    """``pack``'s tensor as its layout, shape and parts (views, no copies), after the header checks the
    kernel makes on each call (parts inside the tensor, sizes that fit the shape). Raises ValueError."""
    if blob.dtype != torch.uint8 or blob.dim() != 1 or not blob.is_contiguous() or blob.numel() < HEADER:
        raise ValueError("not a packed weight: expected a contiguous 1-D uint8 tensor with prunekit's header")
    h = blob[:HEADER].clone().view(torch.int64).tolist()
    if h[0] != MAGIC:
        raise ValueError("not a packed weight (wrong magic number)")
    kind_i, rows, cols, dtype_i, index_bytes = h[1:6]
    if not (0 <= kind_i < len(KINDS) and 0 <= dtype_i < len(VALUE_DTYPES) and 0 <= rows < 1 << 31 and 0 <= cols < 1 << 31
            and ("col" not in LAYOUTS[KINDS[kind_i]].parts or index_bytes in (2, 4))):
        raise ValueError("corrupt packed weight header")
    kind = KINDS[kind_i]
    names = LAYOUTS[kind].parts
    spans = [(h[6 + 2 * k], h[7 + 2 * k]) for k in range(len(names))]
    if any(off < HEADER or off % 64 or size < 0 or off + size > blob.numel() for off, size in spans):
        raise ValueError("corrupt packed weight: a part lies outside the tensor")
    dtypes = {"mask": torch.int16, "values": VALUE_DTYPES[dtype_i], "row_ptr": torch.int64, "slice_ptr": torch.int64,
              "col": torch.int16 if index_bytes == 2 else torch.int32, "where": torch.int32}
    try:
        parts = {name: blob[off:off + size].view(dtypes[name]) for name, (off, size) in zip(names, spans, strict=True)}
        if "mask" in parts:  # one row of words per weight row
            parts["mask"] = parts["mask"].view(rows, -(-cols // 16))
    except RuntimeError as e:  # a size that is not a whole number of elements, or not rows × chunks
        raise ValueError(f"corrupt packed weight: part sizes do not fit a ({rows}, {cols}) {kind} weight") from e
    return Packed(kind, (rows, cols), parts)


@functools.cache
def _word_bits() -> torch.Tensor:
    """Set bits of every 16-bit word, (65536,)."""
    return (torch.arange(1 << 16)[:, None] >> torch.arange(16) & 1).sum(1)


def check(blob: torch.Tensor) -> Packed:
    """``read``, its checksum, and every index the kernel follows checked against the shape. The kernel
    checks only the header and the parts' sizes on each call, so every packed weight from outside
    (a loaded state_dict or pickle, an assigned buffer) passes here once before it runs. Raises ValueError."""
    kind, (rows, cols), parts = packed = read(blob)
    if digest(blob) != blob[8 * DIGEST:8 * DIGEST + 8].view(torch.int64).item():
        raise ValueError("corrupt packed weight: its checksum does not match its bytes")
    if not LAYOUTS[kind].check(parts, rows, cols):
        raise ValueError(f"corrupt packed weight: its {kind} parts do not fit a ({rows}, {cols}) matrix")
    return packed


def _check_mask_words(parts: dict[str, torch.Tensor], rows: int, cols: int) -> bool:
    values, mask, row_ptr = parts["values"], parts["mask"], parts["row_ptr"]  # mask (rows, chunks), (rows + 1,)
    words = mask.to(torch.int32) & 0xFFFF
    counts = _word_bits()[words].sum(1)  # (rows,)
    tail = cols % 16
    return (row_ptr.numel() == rows + 1 and row_ptr[0] == 0 and torch.equal(row_ptr.diff(), counts)
            and values.numel() >= int(row_ptr[-1]) + PAD and (tail == 0 or rows == 0 or not (words[:, -1] >> tail).any()))


def _check_sell(parts: dict[str, torch.Tensor], rows: int, cols: int) -> bool:
    values, slice_ptr, col, where = parts["values"], parts["slice_ptr"], parts["col"], parts["where"]
    slices = -(-rows // SLICE)
    widths = slice_ptr.diff()
    lanes = where.long()
    return (slice_ptr.numel() == slices + 1 and slice_ptr[0] == 0 and bool((widths >= 0).all())
            and bool((widths % SLICE == 0).all()) and col.numel() == values.numel() == int(slice_ptr[-1])
            and bool(((col >= 0) & (col < max(cols, 1))).all()) and where.numel() == rows
            and bool(((lanes >= 0) & (lanes < slices * SLICE)).all()) and lanes.unique().numel() == rows)


def unpack(blob: torch.Tensor) -> torch.Tensor:
    """The exact dense (rows, cols) weight back from ``pack``'s tensor, in the values' dtype."""
    kind, (rows, cols), packed = check(blob)
    dense = packed["values"].new_zeros(rows, cols)
    LAYOUTS[kind].unpack(packed, dense)
    return dense


def _unpack_mask_words(packed: dict[str, torch.Tensor], dense: torch.Tensor) -> None:
    rows, cols = dense.shape
    words = packed["mask"].to(torch.int32) & 0xFFFF  # (rows, chunks)
    bits = (words[:, :, None] >> torch.arange(16, dtype=torch.int32)) & 1
    keep = bits.reshape(rows, words.shape[1] * 16)[:, :cols].bool()
    dense[keep] = packed["values"][: int(packed["row_ptr"][-1])]


def _unpack_sell(packed: dict[str, torch.Tensor], dense: torch.Tensor) -> None:
    rows = dense.shape[0]
    values, slice_ptr, where = packed["values"], packed["slice_ptr"], packed["where"].long()
    row_of_lane = torch.zeros(len(slice_ptr) * SLICE, dtype=torch.int64)  # padding lanes hold only zeros
    row_of_lane[where] = torch.arange(rows)
    at = torch.arange(int(slice_ptr[-1]))
    s = torch.searchsorted(slice_ptr, at, right=True) - 1  # the slice of each entry
    row = row_of_lane[s * SLICE + (at - slice_ptr[s]) % SLICE]
    stored = values != 0  # padding is the only zero stored
    dense[row[stored], packed["col"][stored].long()] = values[stored]


class KernelLayout(NamedTuple):
    """A layout of the compiled sparse kernel: its parts in blob order, packer, index checks and unpacker."""

    parts: tuple[str, ...]
    pack: Callable[[torch.Tensor], dict[str, torch.Tensor]]
    check: Callable[[dict[str, torch.Tensor], int, int], bool]
    unpack: Callable[[dict[str, torch.Tensor], torch.Tensor], None]


LAYOUTS: Mapping[str, KernelLayout] = MappingProxyType({  # the header stores a layout's position here
    "bitmask": KernelLayout(("mask", "values", "row_ptr"), pack_mask_words, _check_mask_words, _unpack_mask_words),
    "sell": KernelLayout(("slice_ptr", "col", "values", "where"), pack_sell, _check_sell, _unpack_sell),
})
KINDS = tuple(LAYOUTS)


def forward(x: torch.Tensor, blob: torch.Tensor, bias: torch.Tensor | None = None, small_batch: int = 16,
            tile_rows: int = 0, isa: int | None = None) -> torch.Tensor:
    """nn.Linear's forward for a packed W, in one compiled call after ``check(blob)``: x is (..., cols),
    y (..., rows) in x's dtype. Up to ``small_batch`` rows of x run the sparse kernel (computed in
    float32); more unpack tiles of ``tile_rows`` rows (0: ~8 MB) and multiply each with dense GEMM.
    ``bias``: float32. (``SparseLinear`` checks its weight once per change and calls the kernel directly.)"""
    check(blob)
    return load().sparse_forward(x, blob, bias, forced_isa() if isa is None else isa, small_batch, tile_rows)
