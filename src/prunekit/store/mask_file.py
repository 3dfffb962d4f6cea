"""Masks on disk: bit-packed uint8 tensors in safetensors, shapes in the header metadata.

Version 2 packs with ``bits.pack_bits`` (row-major, little bit order: entry i is bit i % 8 of byte
i // 8), the same encoding as the export's bitmask format, in a ``container`` file (one header, a
checksum). Version 1 files (big bit order, numpy's default: entry i is bit 7 - i % 8; no checksum) are
still read.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import PrunekitError
from .bits import pack_bits, unpack_bits
from .container import legacy_json, load_tensors, read_metadata, read_tensors, save_tensors

MASKS_FILE = "masks.safetensors"
KIND = "prunekit-masks"
VERSION = 2
_BITS_SET = np.array([bin(b).count("1") for b in range(256)], dtype=np.uint8)  # set bits per byte value


def _numel(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


class PackedMasks(Mapping[str, torch.Tensor]):
    """Masks held at one bit per weight (a bool tensor spends eight); each one unpacks on access.

    A whole model's bool masks would cost as much memory as one copy of its weights in int8. With
    ``spill`` (a folder) the bits go to an unnamed temporary file there instead of memory (a 7B model's
    are 772 MB, a 70B model's 8.6 GB); the system deletes it when the masks are dropped, or the process dies.
    """

    def __init__(self, masks: Mapping[str, torch.Tensor] | None = None, spill: str | Path | None = None) -> None:
        self._file = tempfile.TemporaryFile(dir=spill) if spill is not None else None
        self._size = 0  # bytes in the spill file
        # name -> (bytes, or their offset in the spill file; shape; bytes; True entries)
        self._packed: dict[str, tuple[torch.Tensor | int, tuple[int, ...], int, int]] = {}
        for name, mask in (masks or {}).items():
            self.add(name, mask)

    def add(self, name: str, mask: torch.Tensor) -> None:
        packed = pack_bits(mask)
        kept = int(_BITS_SET[packed.numpy()].sum(dtype=np.int64))  # padding bits are 0
        if self._file is not None:
            if os.pwrite(self._file.fileno(), memoryview(packed.numpy()), self._size) != packed.numel():
                raise PrunekitError(f"mask of {name}: could not write its spill file (disk full?)")
            self._packed[name] = (self._size, tuple(mask.shape), packed.numel(), kept)
            self._size += packed.numel()
        else:
            self._packed[name] = (packed, tuple(mask.shape), packed.numel(), kept)

    def packed(self, name: str) -> tuple[torch.Tensor, tuple[int, ...]]:
        where, shape, size, _ = self._packed[name]
        if isinstance(where, int):
            raw = bytearray(size)
            if os.preadv(self._file.fileno(), [raw], where) != size:
                raise PrunekitError(f"mask of {name}: its spill file was cut short")
            where = torch.frombuffer(raw, dtype=torch.uint8) if size else torch.empty(0, dtype=torch.uint8)
        return where, shape

    def kept(self) -> int:
        """Number of True entries over all masks."""
        return sum(kept for *_, kept in self._packed.values())

    def layers(self) -> dict[str, tuple[tuple[int, ...], int]]:
        """name -> (shape, kept entries), without unpacking (``quant.effective_bits.run_bits`` takes it)."""
        return {name: (shape, kept) for name, (_, shape, _, kept) in self._packed.items()}

    def nbytes(self) -> int:
        """Memory the packed bits take (none when they are spilled)."""
        return 0 if self._file is not None else sum(size for _, _, size, _ in self._packed.values())

    def numel(self) -> int:
        return sum(_numel(shape) for _, shape, _, _ in self._packed.values())

    def __getitem__(self, name: str) -> torch.Tensor:
        packed, shape = self.packed(name)
        return unpack_bits(packed, _numel(shape)).reshape(shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)


class _PackedBytes(Mapping[str, torch.Tensor]):
    """The packed bytes of ``masks`` by name, each read when asked for: never all of them at once."""

    def __init__(self, masks: PackedMasks) -> None:
        self.masks = masks

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.masks.packed(name)[0]

    def __iter__(self) -> Iterator[str]:
        return iter(self.masks)

    def __len__(self) -> int:
        return len(self.masks)


def save_masks(masks: Mapping[str, torch.Tensor], path: str | Path) -> None:
    masks = masks if isinstance(masks, PackedMasks) else PackedMasks(masks)
    shapes = {name: list(masks.packed(name)[1]) for name in masks}
    save_tensors(_PackedBytes(masks), path, KIND, {"version": VERSION, "shapes": shapes})


def _shape(name: str, shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise PrunekitError(f"mask of {name}: its shape {shape!r} is not a list of sizes")
    return tuple(shape)


def load_masks(path: str | Path) -> dict[str, torch.Tensor]:
    """The masks of a mask file, each checked against its stored bytes before it is unpacked (a shape
    that does not fit its bytes is an error, never an allocation)."""
    path = Path(path)
    meta = read_metadata(path)
    if KIND in meta:
        packed, header = load_tensors(path, KIND)
        shapes, order = header.get("shapes"), "little"
    elif meta.get("format") == KIND and meta.get("version") == "1":  # before checksums: big bit order
        packed, order, shapes = read_tensors(path), "big", legacy_json(meta, "shapes", path)
    else:
        raise PrunekitError(f"{path} is not a prunekit masks file")
    if not isinstance(shapes, dict) or set(shapes) != set(packed):
        raise PrunekitError(f"{path}: its shapes do not name exactly the masks it holds")
    out = {}
    for name, shape in shapes.items():
        shape = _shape(name, shape)
        try:
            out[name] = unpack_bits(packed[name], _numel(shape), order=order).reshape(shape)
        except ValueError as e:
            raise PrunekitError(f"{path}: mask of {name}: {e}") from e
    return out
