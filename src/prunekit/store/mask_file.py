"""Masks on disk: bit-packed uint8 tensors in safetensors, shapes in the header metadata.

Version 2 packs with ``bits.pack_bits`` (row-major, little bit order: entry i is bit i % 8 of byte
i // 8), the same encoding as the export's bitmask format. Version 1 files (big bit order, numpy's
default: entry i is bit 7 - i % 8) are still read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, safe_open, save_file

from ..errors import PrunekitError
from .bits import pack_bits, unpack_bits

MASKS_FILE = "masks.safetensors"
VERSION = "2"
_BITS_SET = np.array([bin(b).count("1") for b in range(256)], dtype=np.uint8)  # set bits per byte value


def _numel(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


class PackedMasks(Mapping[str, torch.Tensor]):
    """Masks held at one bit per weight (a bool tensor spends eight); each one unpacks on access.

    A whole model's bool masks would cost as much memory as one copy of its weights in int8.
    """

    def __init__(self, masks: Mapping[str, torch.Tensor] | None = None) -> None:
        self._packed: dict[str, tuple[torch.Tensor, tuple[int, ...]]] = {}  # name -> (bytes, shape)
        for name, mask in (masks or {}).items():
            self.add(name, mask)

    def add(self, name: str, mask: torch.Tensor) -> None:
        self._packed[name] = (pack_bits(mask), tuple(mask.shape))

    def packed(self, name: str) -> tuple[torch.Tensor, tuple[int, ...]]:
        return self._packed[name]

    def kept(self) -> int:
        """Number of True entries over all masks, counted on the packed bytes (padding bits are 0)."""
        return sum(int(_BITS_SET[p.numpy()].sum(dtype=np.int64)) for p, _ in self._packed.values())

    def numel(self) -> int:
        return sum(_numel(shape) for _, shape in self._packed.values())

    def __getitem__(self, name: str) -> torch.Tensor:
        packed, shape = self._packed[name]
        return unpack_bits(packed, _numel(shape)).reshape(shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)


def save_masks(masks: Mapping[str, torch.Tensor], path: str | Path) -> None:
    masks = masks if isinstance(masks, PackedMasks) else PackedMasks(masks)
    shapes = {name: list(masks.packed(name)[1]) for name in masks}
    packed = {name: masks.packed(name)[0] for name in masks}
    save_file(packed, str(path), metadata={"format": "prunekit-masks", "version": VERSION, "shapes": json.dumps(shapes)})


def load_masks(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise PrunekitError(f"no masks file at {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != "prunekit-masks":
        raise PrunekitError(f"{path} is not a prunekit masks file")
    version = meta.get("version")
    if version not in ("1", VERSION):
        raise PrunekitError(f"{path} has masks version {version!r}; this prunekit reads 1 and {VERSION}")
    shapes = json.loads(meta["shapes"])
    packed = load_file(str(path))
    out = {}
    for name, shape in shapes.items():
        shape = tuple(shape)
        try:
            out[name] = unpack_bits(packed[name], _numel(shape), order="big" if version == "1" else "little").reshape(shape)
        except ValueError as e:
            raise PrunekitError(f"{path}: mask of {name}: {e}") from e
    return out
