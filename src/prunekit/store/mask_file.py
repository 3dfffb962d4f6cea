"""Masks on disk: bit-packed uint8 tensors in safetensors, shapes in the header metadata."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, safe_open, save_file

from ..errors import PrunekitError

MASKS_FILE = "masks.safetensors"
_BITS_SET = np.array([bin(b).count("1") for b in range(256)], dtype=np.uint8)  # set bits per byte value


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """Bool tensor -> uint8 tensor of ceil(numel/8) bytes (numpy bit order, big-endian within a byte)."""
    return torch.from_numpy(np.packbits(mask.reshape(-1).cpu().numpy()))


def unpack_mask(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    numel = int(np.prod(shape)) if shape else 1
    bits = np.unpackbits(packed.numpy(), count=numel).astype(bool)
    return torch.from_numpy(bits).reshape(shape)


class PackedMasks(Mapping[str, torch.Tensor]):
    """Masks held at one bit per weight (a bool tensor spends eight); each one unpacks on access.

    A whole model's bool masks would cost as much memory as one copy of its weights in int8.
    """

    def __init__(self, masks: Mapping[str, torch.Tensor] | None = None) -> None:
        self._packed: dict[str, tuple[torch.Tensor, tuple[int, ...]]] = {}  # name -> (bytes, shape)
        for name, mask in (masks or {}).items():
            self.add(name, mask)

    def add(self, name: str, mask: torch.Tensor) -> None:
        self._packed[name] = (pack_mask(mask), tuple(mask.shape))

    def packed(self, name: str) -> tuple[torch.Tensor, tuple[int, ...]]:
        return self._packed[name]

    def kept(self) -> int:
        """Number of True entries over all masks, counted on the packed bytes (padding bits are 0)."""
        return sum(int(_BITS_SET[p.numpy()].sum(dtype=np.int64)) for p, _ in self._packed.values())

    def numel(self) -> int:
        return sum(int(np.prod(shape)) for _, shape in self._packed.values())

    def __getitem__(self, name: str) -> torch.Tensor:
        packed, shape = self._packed[name]
        return unpack_mask(packed, shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)


def save_masks(masks: Mapping[str, torch.Tensor], path: str | Path) -> None:
    masks = masks if isinstance(masks, PackedMasks) else PackedMasks(masks)
    shapes = {name: list(masks.packed(name)[1]) for name in masks}
    packed = {name: masks.packed(name)[0] for name in masks}
    save_file(packed, str(path), metadata={"format": "prunekit-masks", "version": "1", "shapes": json.dumps(shapes)})


def load_masks(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise PrunekitError(f"no masks file at {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != "prunekit-masks":
        raise PrunekitError(f"{path} is not a prunekit masks file")
    shapes = json.loads(meta["shapes"])
    packed = load_file(str(path))
    return {name: unpack_mask(packed[name], tuple(shape)) for name, shape in shapes.items()}
