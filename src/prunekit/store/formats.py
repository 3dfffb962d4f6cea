"""Lossless sparse storage formats for pruned weight matrices (pure functions on tensors).

- ``bitmask``: one bit per weight (``bits.pack_bits``, row-major) + the nonzero values in row-major order.
- ``nm``: N values per group of M inputs + each value's position in its group, packed in
  ceil(log2 M) bits (``bits.pack_bits``; 2 bits for 2:4: the layout semi-structured kernels read).
- ``csr``: row pointers + column indices in the narrowest integer type that fits + values.

Each encoder returns a dict of tensors; ``decode`` rebuilds the exact dense matrix.
"""

from __future__ import annotations

import math

import torch

from ..errors import PrunekitError
from ..selection import is_valid_nm
from .bits import pack_bits, unpack_bits

FORMATS = ("bitmask", "nm", "csr")


def index_dtype(limit: int) -> torch.dtype:
    """Narrowest integer dtype that holds values in [0, limit]."""
    for dtype in (torch.uint8, torch.int16, torch.int32):
        if limit <= torch.iinfo(dtype).max:
            return dtype
    return torch.int64


def encode_bitmask(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    keep = weight != 0
    return {"mask": pack_bits(keep), "values": weight[keep].contiguous()}


def encode_nm(weight: torch.Tensor, n: int, m: int) -> dict[str, torch.Tensor]:
    rows, cols = weight.shape
    if cols % m or not is_valid_nm(weight, n, m):
        raise PrunekitError(f"weight {tuple(weight.shape)} is not {n}:{m} sparse")
    groups = weight.reshape(rows, cols // m, m)
    # positions of the n kept entries per group; groups with fewer nonzeros keep some zeros
    order = torch.argsort((groups != 0).to(torch.int8), dim=2, descending=True, stable=True)[..., :n]
    idx = order.sort(dim=2).values  # (rows, groups, n), ascending positions
    values = torch.gather(groups, 2, idx)
    return {"values": values.reshape(rows, -1).contiguous(), "indices": pack_bits(idx, max(1, math.ceil(math.log2(m))))}


def encode_csr(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    rows, cols = weight.shape
    keep = weight != 0
    counts = keep.sum(1)
    crow = torch.zeros(rows + 1, dtype=torch.int64)
    crow[1:] = counts.cumsum(0)
    col = keep.nonzero()[:, 1]
    return {"crow": crow.to(index_dtype(int(crow[-1]))), "col": col.to(index_dtype(max(cols - 1, 0))),
            "values": weight[keep].contiguous()}


def encode(weight: torch.Tensor, fmt: str, nm: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    if fmt == "bitmask":
        return encode_bitmask(weight)
    if fmt == "csr":
        return encode_csr(weight)
    if fmt == "nm":
        if nm is None:
            raise PrunekitError("the nm format needs N and M")
        return encode_nm(weight, *nm)
    raise PrunekitError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _unpack(packed: torch.Tensor, count: int, bits: int, fmt: str) -> torch.Tensor:
    try:
        return unpack_bits(packed, count, bits)
    except ValueError as e:
        raise PrunekitError(f"corrupt {fmt} layer: {e}") from e


def decode(parts: dict[str, torch.Tensor], fmt: str, shape: tuple[int, int], dtype: torch.dtype,
           nm: tuple[int, int] | None = None) -> torch.Tensor:
    """The exact dense (rows, cols) matrix back from ``encode``'s tensors."""
    rows, cols = shape
    out = torch.zeros(rows * cols, dtype=dtype)
    if fmt == "bitmask":
        keep = _unpack(parts["mask"], rows * cols, 1, fmt)
        if int(keep.sum()) != parts["values"].numel():
            raise PrunekitError("corrupt bitmask layer: mask and values disagree")
        out[keep] = parts["values"].to(dtype)
        return out.view(rows, cols)
    if fmt == "csr":
        crow, col = parts["crow"].to(torch.int64), parts["col"].to(torch.int64)
        if crow.numel() != rows + 1 or int(crow[-1]) != col.numel() or col.numel() != parts["values"].numel():
            raise PrunekitError("corrupt csr layer: row pointers, columns and values disagree")
        row = torch.repeat_interleave(torch.arange(rows), crow[1:] - crow[:-1])
        out[row * cols + col] = parts["values"].to(dtype)
        return out.view(rows, cols)
    if fmt == "nm":
        n, m = nm
        count = rows * (cols // m) * n
        idx = _unpack(parts["indices"], count, max(1, math.ceil(math.log2(m))), fmt).view(rows, cols // m, n)
        values = parts["values"].to(dtype).view(rows, cols // m, n)
        dense = torch.zeros(rows, cols // m, m, dtype=dtype)
        dense.scatter_(2, idx, values)
        return dense.view(rows, cols)
    raise PrunekitError(f"unknown format {fmt!r}")


def nbytes(parts: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in parts.values())


def format_bytes(weight: torch.Tensor, nm: tuple[int, int] | None = None) -> dict[str, int]:
    """Bytes of one (rows, cols) weight in each lossless format (``nm`` only when given)."""
    out = {"nm": nbytes(encode_nm(weight, *nm))} if nm else {}
    return out | {"bitmask": nbytes(encode_bitmask(weight)), "csr": nbytes(encode_csr(weight))}
