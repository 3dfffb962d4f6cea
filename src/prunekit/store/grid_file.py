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
from ..quant.grid import LayerGrid, group_bounds
from .container import load_tensors, save_tensors

GRIDS_FILE = "quant.safetensors"
KIND = "prunekit-quant"
VERSION = 1


def save_grids(grids: Mapping[str, LayerGrid], path: str | Path) -> None:
    layers = {name: {"bits": g.bits, "groupsize": g.groupsize, "sym": g.sym} for name, g in grids.items()}
    tensors = {f"{name}.scale": g.scale for name, g in grids.items()} | {f"{name}.zero": g.zero for name, g in grids.items()}
    save_tensors(tensors, path, KIND, {"version": VERSION, "layers": layers})


def check_grids(grids: Mapping[str, LayerGrid], shapes: Mapping[str, tuple[int, ...]], where: str | Path) -> None:
    """Raise unless every grid belongs to a 2-D weight of ``shapes`` (by layer name) and has one scale per row and
    group of it (in either orientation: GPT-2's Conv1D stores (in, out)); a grid file passes its own checks alone."""
    for name, grid in grids.items():
        shape = shapes.get(name)
        fits = shape is not None and len(shape) == 2 and any(
            tuple(grid.scale.shape) == (rows, len(group_bounds(cols, grid.groupsize)) if cols else 0)
            for rows, cols in (shape, shape[::-1]))
        if not fits:
            held = "no such weight" if shape is None else f"its weight is {tuple(shape)}"
            raise PrunekitError(f"{where}: the grid of {name} has {tuple(grid.scale.shape)} scales, which fit no "
                                f"weight of that layer ({held}; groups of {grid.groupsize or 'a whole row'})")


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
