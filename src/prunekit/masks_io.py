"""Masks on disk: bit-packed uint8 tensors in safetensors, shapes in the header metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, safe_open, save_file

from .errors import PrunekitError

MASKS_FILE = "masks.safetensors"


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """Bool tensor -> uint8 tensor of ceil(numel/8) bytes (numpy bit order, big-endian within a byte)."""
    return torch.from_numpy(np.packbits(mask.reshape(-1).cpu().numpy()))


def unpack_mask(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    numel = int(np.prod(shape)) if shape else 1
    bits = np.unpackbits(packed.numpy(), count=numel).astype(bool)
    return torch.from_numpy(bits).reshape(shape)


def save_masks(masks: dict[str, torch.Tensor], path: str | Path) -> None:
    shapes = {name: list(m.shape) for name, m in masks.items()}
    packed = {name: pack_mask(m) for name, m in masks.items()}
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
