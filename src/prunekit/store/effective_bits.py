"""Effective bits per weight, counted honestly: every bit a packed layer needs, over its number of weights.

A layer is stored the cheapest way its zeros allow (the export's choice): dense (every value), a bitmask
(one bit per weight plus the kept values) or N:M (the kept values plus each group's pattern rank,
``store/nm_code``: 0.65 bits per weight for 2:4).
Values take ``bits`` each (the grid's, or the float dtype's); a grid adds a float16 scale per row and group,
and an asymmetric grid a zero point of ``bits`` bits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from ..quant.grid import LayerGrid, group_bounds
from .nm_code import code_bits


def layer_bits(shape: tuple[int, int], kept: int, value_bits: int, grid: LayerGrid | None = None,
               nm: tuple[int, int] | None = None) -> dict:
    """The parts of one (rows, cols) layer with ``kept`` weights kept, in bits, and its cheapest storage."""
    rows, cols = shape
    numel = rows * cols
    if grid is not None:
        value_bits = grid.bits
    layouts = {"dense": (numel * value_bits, 0)}
    ranks = code_bits(*nm, numel // nm[1]) if nm is not None and cols % nm[1] == 0 else None
    if ranks is not None:  # N values per group of M (the masks must be N:M; the caller knows) and its ranks
        layouts["nm"] = (numel // nm[1] * nm[0] * value_bits, ranks)
    layouts["bitmask"] = (kept * value_bits, numel)
    storage = min(layouts, key=lambda k: sum(layouts[k]))  # on a tie the first: N:M, which kernels read
    values, metadata = layouts[storage]
    grid_bits = 0
    if grid is not None:
        groups = rows * len(group_bounds(cols, grid.groupsize))
        grid_bits = groups * (16 + (0 if grid.sym else grid.bits))
    total = values + metadata + grid_bits
    return {"storage": storage, "values_bits": values, "metadata_bits": metadata, "grid_bits": grid_bits,
            "bits_per_weight": total / numel if numel else 0.0}


def model_bits(layers: Mapping[str, dict], numel: Mapping[str, int]) -> dict:
    """The totals of ``layer_bits`` rows (by name; ``numel`` their weights): bits per weight over all of them."""
    parts = {k: sum(r[k] for r in layers.values()) for k in ("values_bits", "metadata_bits", "grid_bits")}
    weights = sum(numel.values())
    total = sum(parts.values())
    return {"weights": weights, **parts, "bits_per_weight": round(total / weights, 4) if weights else 0.0,
            "bytes": math.ceil(total / 8)}


def run_bits(layers: Mapping[str, tuple[tuple[int, int], int]], grids: Mapping[str, LayerGrid],
             nm: tuple[int, int] | None, value_bits: int) -> dict:
    """Per layer (name -> (shape, kept)) and in total: ``layer_bits`` with each layer's grid, if quantized, else
    ``value_bits`` per value."""
    rows = {name: layer_bits(shape, kept, value_bits, grids.get(name), nm) for name, (shape, kept) in layers.items()}
    total = model_bits(rows, {name: math.prod(shape) for name, (shape, _) in layers.items()})
    per_layer = {name: {"storage": r["storage"], "bits_per_weight": round(r["bits_per_weight"], 4)}
                 for name, r in rows.items()}
    return {"model": total, "layers": per_layer}
