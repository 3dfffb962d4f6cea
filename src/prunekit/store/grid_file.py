"""Quantization grids on disk: per layer a float16 scale and a uint8 zero point per row and group, in a
``container`` file (one header with each layer's bits, group size and symmetry; a checksum).

With the dequantized weights of the same folder they give each weight's integer level exactly
(``LayerGrid.levels``): what packed storage and the integer kernels are built from.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import PrunekitError
from ..quant.grid import LayerGrid
from .container import load_tensors, save_tensors

GRIDS_FILE = "quant.safetensors"
KIND = "prunekit-quant"
VERSION = 1


def save_grids(grids: Mapping[str, LayerGrid], path: str | Path) -> None:
    layers = {name: {"bits": g.bits, "groupsize": g.groupsize, "sym": g.sym} for name, g in grids.items()}
    tensors = {f"{name}.scale": g.scale for name, g in grids.items()} | {f"{name}.zero": g.zero for name, g in grids.items()}
    save_tensors(tensors, path, KIND, {"version": VERSION, "layers": layers})


def load_grids(path: str | Path) -> dict[str, LayerGrid]:
    """The grids of a grid file, each checked (bits, dtypes, matching shapes, zero points on the grid)."""
    tensors, header = load_tensors(path, KIND)
    layers = header.get("layers")
    if header.get("version") != VERSION or not isinstance(layers, dict):
        raise PrunekitError(f"{path}: not a version {VERSION} prunekit grid file")
    out = {}
    for name, spec in layers.items():
        scale, zero = tensors.get(f"{name}.scale"), tensors.get(f"{name}.zero")
        try:
            bits, groupsize, sym = int(spec["bits"]), int(spec["groupsize"]), bool(spec["sym"])
        except (KeyError, TypeError, ValueError):
            raise PrunekitError(f"{path}: the grid of {name} has no readable bits/groupsize/sym") from None
        if (scale is None or zero is None or scale.dtype != torch.float16 or zero.dtype != torch.uint8
                or scale.shape != zero.shape or scale.dim() != 2 or not 2 <= bits <= 8 or groupsize < 0
                or (zero.numel() and int(zero.max()) > 2**bits - 1)
                or not bool(torch.isfinite(scale).all()) or bool((scale <= 0).any())):
            raise PrunekitError(f"{path}: the grid of {name} is malformed")
        out[name] = LayerGrid(bits, groupsize, sym, scale, zero)
    if len(tensors) != 2 * len(out):
        raise PrunekitError(f"{path}: it holds tensors no layer names")
    return out
