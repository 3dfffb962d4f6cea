"""Uniform integer grids for weights (pure functions on tensors): fit, quantize, dequantize.

A grid maps w to q = clamp(round(w / scale) + zero, 0, 2^bits − 1) and back to scale · (q − zero). The
range always contains 0 and ``zero`` is an integer, so a zero weight quantizes to exactly 0: pruned weights
stay pruned in every order. Scales are stored in float16, rounded *up*, so the stored grid still spans the
fitted range and every weight in it is within half a step of its dequantized value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def max_level(bits: int) -> int:
    return 2**bits - 1


def _float16_up(scale: torch.Tensor) -> torch.Tensor:
    """The smallest float16 value ≥ ``scale`` (positive, float32), as float32."""
    half = scale.clamp(min=2.0**-24).half()  # the smallest float16 subnormal: never a zero step
    low = half.float() < scale
    half[low] = torch.nextafter(half[low], torch.full_like(half[low], math.inf))
    return half.float()


SHRINKS = [1 - i / 100 for i in range(80)]  # the clipping search's candidate ranges: 100% down to 21% (GPTQ's)


def _grid_for(low: torch.Tensor, high: torch.Tensor, maxq: int, sym: bool) -> tuple[torch.Tensor, torch.Tensor]:
    scale = _float16_up((high - low) / maxq)
    if sym:
        return scale, torch.full_like(scale, float((maxq + 1) // 2))
    return scale, torch.round(-low / scale).clamp(0, maxq)


def fit(w: torch.Tensor, bits: int, sym: bool, search: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale (float16 values, as float32) and integer zero point per row of ``w`` (rows, k), from the row's range
    widened to contain 0 (GPTQ's quantizer). Symmetric grids put zero at the middle level, 2^(bits−1).

    ``search``: of the range shrunk by each factor in ``SHRINKS``, the one with the least squared rounding error
    per row (weights beyond it clip to the end levels). The full range is a candidate, so no row gets worse.
    """
    maxq = max_level(bits)
    w = w.float()
    low = w.min(dim=1).values.clamp(max=0)  # (rows,)
    high = w.max(dim=1).values.clamp(min=0)
    if sym:
        high = torch.maximum(-low, high)
        low = -high
    empty = (low == 0) & (high == 0)  # an all-zero row: any grid holds it; GPTQ's [-1, 1]
    low, high = torch.where(empty, -1.0, low), torch.where(empty, 1.0, high)
    scale, zero = _grid_for(low, high, maxq, sym)
    if not search:
        return scale, zero
    best = torch.full_like(scale, math.inf)
    for shrink in SHRINKS:
        s, z = _grid_for(low * shrink, high * shrink, maxq, sym)
        err = (fake_quantize(w, s[:, None], z[:, None], bits) - w).square().sum(dim=1)  # (rows,)
        better = err < best
        best, scale, zero = torch.where(better, err, best), torch.where(better, s, scale), torch.where(better, z, zero)
    return scale, zero


def quantize(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer levels (as float32) of ``w`` (rows, k) on the grid of ``scale``/``zero`` (rows, 1) or (rows, k)."""
    return torch.clamp(torch.round(w.float() / scale) + zero, 0, max_level(bits))


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    return scale * (q - zero)


def fake_quantize(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """``w`` rounded onto the grid, in float32: what a kernel computes with after unpacking."""
    return dequantize(quantize(w, scale, zero, bits), scale, zero)


def group_bounds(cols: int, groupsize: int) -> list[tuple[int, int]]:
    """Column ranges of the groups (``groupsize`` 0: one group, the whole row); the last may be narrower."""
    size = groupsize or cols
    return [(a, min(a + size, cols)) for a in range(0, cols, size)]


def group_columns(W1: torch.Tensor, W: torch.Tensor, i: int, i2: int, bounds: tuple[int, int],
                  keep1: torch.Tensor | None = None) -> torch.Tensor:
    """The current values of the group of columns ``bounds`` that starts at column ``i`` of a lazy-update block
    ``W1`` (updated so far; pruned entries zeroed by ``keep1``) and, past the block's end ``i2``, of ``W``."""
    width = bounds[1] - bounds[0]
    inside = W1[:, i : i + width]
    if keep1 is not None:
        inside = inside * keep1[:, i : i + width]
    rest = width - inside.shape[1]
    return torch.cat([inside, W[:, i2 : i2 + rest]], dim=1) if rest else inside


@dataclass
class LayerGrid:
    """The grid of one layer: per row and group of ``groupsize`` columns (0: per row), a scale and a zero point."""

    bits: int
    groupsize: int
    sym: bool
    scale: torch.Tensor  # (rows, groups) float16
    zero: torch.Tensor   # (rows, groups) uint8

    def columns(self, cols: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero of every column, (rows, cols) float32."""
        index = torch.arange(cols, device=device) // (self.groupsize or cols)
        return self.scale.to(device).float()[:, index], self.zero.to(device).float()[:, index]

    def apply(self, w: torch.Tensor) -> torch.Tensor:
        """``w`` (rows, cols) rounded onto this fixed grid."""
        return fake_quantize(w, *self.columns(w.shape[1], w.device), self.bits)

    def levels(self, w: torch.Tensor) -> torch.Tensor:
        """Integer levels (uint8) of ``w`` (rows, cols), which lies on this grid."""
        return quantize(w, *self.columns(w.shape[1], w.device), self.bits).to(torch.uint8)


class GroupQuantizer:
    """Quantizes a layer one column at a time, as GPTQ and SparseGPT's sweep do: each group's grid is fitted
    when its first column comes (from the columns as they are then, after the updates so far), or all of
    them up front (``fit_all``: static groups, and the fixed grid of an earlier quantization)."""

    def __init__(self, rows: int, cols: int, bits: int, groupsize: int, sym: bool, device: torch.device,
                 search: bool = False) -> None:
        self.bits, self.sym, self.cols, self.device, self.search = bits, sym, cols, device, search
        self.bounds = group_bounds(cols, groupsize)
        self.groupsize = groupsize
        self.scale = torch.zeros(rows, len(self.bounds), device=device)  # (rows, groups)
        self.zero = torch.zeros(rows, len(self.bounds), device=device)
        self.fitted = [False] * len(self.bounds)

    def group(self, col: int) -> int:
        return col // (self.groupsize or self.cols)

    def fit_group(self, g: int, w: torch.Tensor) -> None:
        """Fit group ``g`` from its columns ``w`` (rows, width)."""
        self.scale[:, g], self.zero[:, g] = fit(w, self.bits, self.sym, self.search)
        self.fitted[g] = True

    def fit_all(self, w: torch.Tensor) -> None:
        for g, (a, b) in enumerate(self.bounds):
            self.fit_group(g, w[:, a:b])

    def use(self, grid: LayerGrid) -> None:
        """Take the fixed grid of an earlier quantization."""
        self.scale, self.zero = grid.scale.to(self.device, torch.float32), grid.zero.to(self.device, torch.float32)
        self.fitted = [True] * len(self.bounds)

    def column(self, col: int, w: torch.Tensor) -> torch.Tensor:
        """Column ``col``'s values ``w`` (rows,) rounded onto its group's grid."""
        g = self.group(col)
        return fake_quantize(w, self.scale[:, g], self.zero[:, g], self.bits)

    def grid(self) -> LayerGrid:
        if not all(self.fitted):
            raise RuntimeError("GroupQuantizer: a group was never fitted")
        return LayerGrid(self.bits, self.groupsize, self.sym, self.scale.half().cpu(), self.zero.to(torch.uint8).cpu())


def rtn(w: torch.Tensor, bits: int, groupsize: int, sym: bool, search: bool = False) -> tuple[torch.Tensor, LayerGrid]:
    """Round to nearest: each group's grid from its own range (``search``: see ``fit``); returns (float32 weights on
    the grid, grid)."""
    quantizer = GroupQuantizer(w.shape[0], w.shape[1], bits, groupsize, sym, w.device, search)
    quantizer.fit_all(w)
    grid = quantizer.grid()
    return grid.apply(w), grid
