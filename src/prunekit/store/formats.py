"""Lossless sparse storage formats for pruned weight matrices (pure functions on tensors).

- ``bitmask``: one bit per weight (``bits.pack_bits``, row-major) + the nonzero values in row-major order.
- ``nm``: N values per group of M inputs + each group's pattern as a rank, several to a chunk
  (``nm_code``: 0.65 bits per weight for 2:4). Files before version 4 hold ``indices`` instead: each
  position in ceil(log2 M) bits (``bits.pack_bits``); they are still read.
- ``csr``: row pointers + column indices in the narrowest integer type that fits + values.

Each is a row of ``FORMATS``: its parts, encoder and checked decoder; ``decode`` rebuilds the exact dense matrix.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch

from ..errors import PrunekitError
from ..selection import is_valid_nm
from .bits import pack_bits, unpack_bits
from .nm_code import chunking, decode_positions, encode_positions

NM_CANDIDATES = ((2, 4), (4, 8))  # the N:M patterns a layer is stored as, first match first
DENSE = "dense"  # a weight stored as is, in no format


def index_dtype(limit: int) -> torch.dtype:
    """Narrowest integer dtype that holds values in [0, limit]."""
    for dtype in (torch.uint8, torch.int16, torch.int32):
        if limit <= torch.iinfo(dtype).max:
            return dtype
    return torch.int64


def encode_bitmask(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    keep = weight != 0
    return {"mask": pack_bits(keep), "values": weight[keep].contiguous()}


def kept_positions(keep: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Ascending positions (rows, groups, n) of the kept entries of each group of m; a group with fewer than n
    keeps some of its zeros (the first ones)."""
    rows, cols = keep.shape
    groups = keep.reshape(rows, cols // m, m).to(torch.int8)
    return torch.argsort(groups, dim=2, descending=True, stable=True)[..., :n].sort(dim=2).values


def encode_nm(weight: torch.Tensor, n: int, m: int) -> dict[str, torch.Tensor]:
    rows, cols = weight.shape
    if cols % m or not is_valid_nm(weight, n, m):
        raise PrunekitError(f"weight {tuple(weight.shape)} is not {n}:{m} sparse")
    if chunking(n, m) is None:
        raise PrunekitError(f"{n}:{m} has more patterns than a chunk of ranks holds; store it as bitmask or csr")
    idx = kept_positions(weight != 0, n, m)  # (rows, groups, n)
    values = torch.gather(weight.reshape(rows, cols // m, m), 2, idx)
    return {"values": values.reshape(rows, -1).contiguous(), "ranks": encode_positions(idx, m)}


def encode_csr(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    rows, cols = weight.shape
    keep = weight != 0
    counts = keep.sum(1)
    crow = torch.zeros(rows + 1, dtype=torch.int64)
    crow[1:] = counts.cumsum(0)
    col = keep.nonzero()[:, 1]
    return {"crow": crow.to(index_dtype(int(crow[-1]))), "col": col.to(index_dtype(max(cols - 1, 0))),
            "values": weight[keep].contiguous()}


def _bad(fmt: str, why: str) -> PrunekitError:
    return PrunekitError(f"corrupt {fmt} layer: {why}")


def _decode_bitmask(parts: dict[str, torch.Tensor], shape: tuple[int, int], dtype: torch.dtype,
                    nm: tuple[int, int] | None) -> torch.Tensor:
    rows, cols = shape
    values = parts["values"]
    try:
        keep = unpack_bits(parts["mask"], rows * cols)
    except ValueError as e:
        raise _bad("bitmask", str(e)) from e
    if int(keep.sum()) != values.numel():
        raise _bad("bitmask", "mask and values disagree")
    out = torch.zeros(rows * cols, dtype=dtype)
    out[keep] = values
    return out.view(rows, cols)


def _decode_csr(parts: dict[str, torch.Tensor], shape: tuple[int, int], dtype: torch.dtype,
                nm: tuple[int, int] | None) -> torch.Tensor:
    rows, cols = shape
    values = parts["values"]
    crow, col = parts["crow"].to(torch.int64), parts["col"].to(torch.int64)
    if crow.numel() != rows + 1 or int(crow[0]) != 0 or bool((crow.diff() < 0).any()):
        raise _bad("csr", "row pointers must start at 0 and never decrease, one per row plus one")
    if int(crow[-1]) != col.numel() or col.numel() != values.numel():
        raise _bad("csr", "row pointers, columns and values disagree")
    if col.numel() and (int(col.min()) < 0 or int(col.max()) >= cols):
        raise _bad("csr", f"a column lies outside 0..{cols - 1}")
    row = torch.repeat_interleave(torch.arange(rows), crow.diff())
    if bool(((col[1:] <= col[:-1]) & (row[1:] == row[:-1])).any()):
        raise _bad("csr", "columns within a row must increase (sorted, no duplicates)")
    out = torch.zeros(rows * cols, dtype=dtype)
    out[row * cols + col] = values
    return out.view(rows, cols)


def _decode_nm(parts: dict[str, torch.Tensor], shape: tuple[int, int], dtype: torch.dtype,
               nm: tuple[int, int] | None) -> torch.Tensor:
    rows, cols = shape
    values = parts["values"]
    if nm is None or len(nm) != 2 or not 0 < nm[0] < nm[1] or cols % nm[1]:
        raise _bad("nm", f"N:M {nm} does not fit a width of {cols}")
    n, m = nm
    groups = cols // m
    if tuple(values.shape) != (rows, groups * n):
        raise _bad("nm", f"values are {tuple(values.shape)}, expected {(rows, groups * n)}")
    try:
        idx = nm_positions(parts, rows * groups, n, m).view(rows, groups, n)
    except ValueError as e:
        raise _bad("nm", str(e)) from e
    dense = torch.zeros(rows, groups, m, dtype=dtype)
    dense.scatter_(2, idx, values.view(rows, groups, n))
    return dense.view(rows, cols)


def _fits_any(weight: torch.Tensor) -> tuple[int, int] | None:
    return None


def nm_pattern(weight: torch.Tensor) -> tuple[int, int] | None:
    """The first N:M pattern of ``NM_CANDIDATES`` the weight's zeros follow, or None."""
    return next((p for p in NM_CANDIDATES if weight.shape[1] % p[1] == 0 and is_valid_nm(weight, *p)), None)


Encode = Callable[[torch.Tensor, tuple[int, int] | None], dict[str, torch.Tensor]]
Decode = Callable[[dict[str, torch.Tensor], tuple[int, int], torch.dtype, tuple[int, int] | None], torch.Tensor]


@dataclass(frozen=True)
class Format:
    """A lossless float storage format: its parts (in order), its encoder and checked decoder."""

    parts: tuple[str, ...]
    encode: Encode
    decode: Decode
    pattern: Callable[[torch.Tensor], tuple[int, int] | None]  # the N:M a weight is stored as (None: any weight)
    needs_nm: bool = False  # holds N:M weights only: a weight without a pattern does not fit
    legacy_parts: tuple[str, ...] | None = None  # the parts of files before version 4, still read
    value_dims: int = 1  # the values part's dimensions


FORMATS: Mapping[str, Format] = MappingProxyType({  # in order of preference on equal size: N:M, which kernels read
    "nm": Format(("values", "ranks"), lambda w, nm: encode_nm(w, *nm), _decode_nm, nm_pattern, needs_nm=True,
                 legacy_parts=("values", "indices"), value_dims=2),  # before version 4: ceil(log2 M)-bit positions
    "bitmask": Format(("mask", "values"), lambda w, nm: encode_bitmask(w), _decode_bitmask, _fits_any),
    "csr": Format(("crow", "col", "values"), lambda w, nm: encode_csr(w), _decode_csr, _fits_any),
})


def _format(fmt: str) -> Format:
    if fmt not in FORMATS:
        raise PrunekitError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return FORMATS[fmt]


def encode(weight: torch.Tensor, fmt: str, nm: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    row = _format(fmt)
    if row.needs_nm and nm is None:
        raise PrunekitError(f"the {fmt} format needs N and M")
    return row.encode(weight, nm)


def _check_parts(parts: dict[str, torch.Tensor], fmt: str, row: Format, dtype: torch.dtype) -> None:
    if set(parts) != set(row.parts) and not (row.legacy_parts and set(parts) == set(row.legacy_parts)):
        raise _bad(fmt, f"parts {sorted(parts)}, expected {list(row.parts)}")
    if any(t.dim() != (row.value_dims if k == "values" else 1) for k, t in parts.items()):
        raise _bad(fmt, "a part has the wrong number of dimensions")
    if parts["values"].dtype != dtype:
        raise _bad(fmt, f"values are {parts['values'].dtype}, the layer is {dtype}")
    if any(k != "values" and (t.is_floating_point() or t.is_complex()) for k, t in parts.items()):
        raise _bad(fmt, "an index part is not integer")


def decode(parts: dict[str, torch.Tensor], fmt: str, shape: tuple[int, int], dtype: torch.dtype,
           nm: tuple[int, int] | None = None) -> torch.Tensor:
    """The exact dense (rows, cols) matrix back from ``encode``'s tensors, after checking every structural
    invariant (sizes, index ranges, order, no duplicates): PrunekitError otherwise."""
    row = _format(fmt)
    _check_parts(parts, fmt, row, dtype)
    return row.decode(parts, shape, dtype, nm)


def nm_positions(parts: dict[str, torch.Tensor], groups: int, n: int, m: int) -> torch.Tensor:
    """(groups, n) ascending positions from an N:M layer's ``ranks`` (or legacy ``indices``); ValueError when
    they do not decode to increasing positions below M."""
    if "ranks" in parts:
        return decode_positions(parts["ranks"], groups, n, m)
    idx = unpack_bits(parts["indices"], groups * n, max(1, math.ceil(math.log2(m)))).view(groups, n)
    if bool((idx >= m).any()) or bool((idx.diff(dim=1) <= 0).any()):
        raise ValueError(f"positions within a group must increase (no duplicates) and stay below M={m}")
    return idx


def nbytes(parts: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in parts.values())


def format_bytes(weight: torch.Tensor, nm: tuple[int, int] | None = None) -> dict[str, int]:
    """Bytes of one (rows, cols) weight in each lossless format (``nm`` only when given)."""
    return {name: nbytes(row.encode(weight, nm)) for name, row in FORMATS.items() if nm or not row.needs_nm}
