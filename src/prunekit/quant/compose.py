"""How quantization composes with pruning in one layer: the three orders, one function each. Pruned weights
stay exactly zero in every order."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum
from types import MappingProxyType

import torch

from ..selection import zero_pruned_
from .grid import GroupQuantizer, LayerGrid
from .quantizers import Hessian, QuantizerRow, Rounding


class Order(StrEnum):
    PRUNE_FIRST = "prune-first"  # prune (any method), then quantize the kept weights with the mask locked
    QUANT_FIRST = "quant-first"  # quantize, then prune on the grid (SparseGPT's updates stay on that fixed grid)
    JOINT = "joint"              # one SparseGPT sweep that prunes and rounds each column as it goes


# Prunes the layer's weight in place and returns (keep mask, damping escalations); given a quantizer, a method
# whose update sweeps the columns rounds the kept ones onto its grid as it goes
PruneStep = Callable[[GroupQuantizer | None], tuple[torch.Tensor, int]]


class Quantization:
    """One layer's quantization in a pruning run: the quantizer, its rounding and what its solve needs."""

    def __init__(self, row: QuantizerRow, rounding: Rounding, hessian: Hessian | None, blocksize: int,
                 percdamp: float, name: str) -> None:
        self.row, self.rounding, self.hessian = row, rounding, hessian
        self.blocksize, self.percdamp, self.name = blocksize, percdamp, name

    def __call__(self, weight: torch.Tensor, keep: torch.Tensor | None) -> tuple[LayerGrid, int]:
        """Round ``weight`` in place (with ``keep`` locked); returns the grid and damping escalations."""
        new, grid, escalations = self.row.quantize(weight, self.hessian, self.rounding, keep, self.blocksize,
                                                   self.percdamp, self.name)
        weight.copy_(new)
        return grid, escalations

    def quantizer(self, weight: torch.Tensor) -> GroupQuantizer:
        r = self.rounding
        return GroupQuantizer(*weight.shape, r.bits, r.groupsize, r.sym, weight.device, r.search)


Compose = Callable[[torch.Tensor, PruneStep, bool, Quantization], tuple[torch.Tensor, LayerGrid, int]]


def _prune_first(weight: torch.Tensor, prune: PruneStep, sweeps: bool, quant: Quantization):
    keep, escalations = prune(None)
    grid, more = quant(weight, None if bool(keep.all()) else keep)  # nothing pruned (``quantize``): no mask to hold
    zero_pruned_(weight, keep)
    return keep, grid, escalations + more


def _quant_first(weight: torch.Tensor, prune: PruneStep, sweeps: bool, quant: Quantization):
    grid, escalations = quant(weight, None)
    if not sweeps:  # the mask zeroes weights on the grid: it stays
        keep, more = prune(None)
        return keep, grid, escalations + more
    quantizer = quant.quantizer(weight)  # the sweep's updates are rounded onto that fixed grid
    quantizer.use(grid)
    keep, more = prune(quantizer)
    return keep, quantizer.grid(), escalations + more


def _joint(weight: torch.Tensor, prune: PruneStep, sweeps: bool, quant: Quantization):
    quantizer = quant.quantizer(weight)  # fitted group by group as the sweep reaches it
    keep, escalations = prune(quantizer)
    return keep, quantizer.grid(), escalations


ORDERS: Mapping[Order, Compose] = MappingProxyType({
    Order.PRUNE_FIRST: _prune_first, Order.QUANT_FIRST: _quant_first, Order.JOINT: _joint})


def prune_and_quantize(weight: torch.Tensor, prune: PruneStep, sweeps: bool, order: Order,
                       quant: Quantization | None) -> tuple[torch.Tensor, LayerGrid | None, int]:
    """Prune ``weight`` (rows, cols) in place, and quantize it in ``order`` when ``quant`` is given (``sweeps``: the
    pruning method's update walks the columns, so it can round as it goes); returns (keep mask, grid or None,
    damping escalations)."""
    if quant is None:
        keep, escalations = prune(None)
        return keep, None, escalations
    return ORDERS[order](weight, prune, sweeps, quant)
