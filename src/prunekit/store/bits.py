"""Flat bit packing, the one used on disk: the mask file and the export formats (bitmask masks, N:M
positions).

Values are flattened in row-major order; value i takes bits [i·b, (i+1)·b) of the byte stream, each
byte filled from its least significant bit ("little" bit order), so entry i of a 1-bit mask is bit
i % 8 of byte i // 8. The compiled kernel keeps its own layout (``run/kernel.py``: one 16-bit word per
16 columns, each row starting on a new word), because it walks a row's words without an offset.
"""

from __future__ import annotations

import numpy as np
import torch


def packed_bytes(count: int, bits: int = 1) -> int:
    """Bytes that ``count`` values of ``bits`` bits take."""
    return -(-count * bits // 8)


def pack_bits(values: torch.Tensor, bits: int = 1) -> torch.Tensor:
    """Bools (``bits=1``) or unsigned ints below 2**bits -> a uint8 tensor of ``packed_bytes`` bytes."""
    v = values.reshape(-1).cpu().numpy()
    if bits > 1:
        v = (v.astype(np.int64)[:, None] >> np.arange(bits)) & 1  # (count, bits), least significant first
    return torch.from_numpy(np.packbits(v.reshape(-1).astype(bool), bitorder="little"))


def unpack_bits(packed: torch.Tensor, count: int, bits: int = 1, order: str = "little") -> torch.Tensor:
    """``pack_bits`` reversed: ``count`` bools (``bits=1``) or int64 values (``order="big"`` reads
    version-1 mask files). Raises ValueError when the byte count does not match (numpy would pad a
    short buffer with zeros)."""
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != packed_bytes(count, bits):
        raise ValueError(f"expected {packed_bytes(count, bits)} packed bytes for {count} values of {bits} bits, "
                         f"got a {packed.dtype} tensor of shape {tuple(packed.shape)}")
    planes = np.unpackbits(packed.numpy(), count=count * bits, bitorder=order)
    if bits == 1:
        return torch.from_numpy(planes.astype(bool))
    return torch.from_numpy((planes.reshape(count, bits).astype(np.int64) << np.arange(bits)).sum(1))
