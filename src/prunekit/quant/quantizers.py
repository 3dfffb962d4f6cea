"""The weight quantizers, one row each: what it needs from calibration, the options it takes, and its
function. A new quantizer is one row here plus its math; nothing else compares quantizer names."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import NamedTuple

import torch

from .gptq import gptq_quantize
from .grid import LayerGrid, rtn


class QuantMethod(StrEnum):
    RTN = "rtn"    # round to nearest, each group's grid from its own range
    GPTQ = "gptq"  # column by column, each rounding error compensated through H⁻¹ (needs calibration)


class Rounding(NamedTuple):
    """The grid a quantizer rounds onto and how: ``bits`` per level, ``groupsize`` inputs per grid (0: one per
    row), ``sym`` (no zero point), ``search`` (each range by the clipping search), ``act_order`` (columns in
    order of decreasing H_jj)."""

    bits: int
    groupsize: int
    sym: bool
    search: bool
    act_order: bool


Hessian = Callable[[], torch.Tensor]  # H = 2XᵀX/n of the layer's inputs, computed when first asked for
# (weight (rows, cols), H or None, rounding, keep mask or None, blocksize, percdamp, layer name)
#   -> (float32 weights on the grid, zero outside keep; the grid; damping escalations)
Quantize = Callable[[torch.Tensor, Hessian | None, Rounding, torch.Tensor | None, int, float, str],
                    tuple[torch.Tensor, LayerGrid, int]]


@dataclass(frozen=True)
class QuantizerRow:
    quantize: Quantize
    hessian: bool    # needs calibration's H
    act_order: bool  # takes activation order (its default outside SparseGPT's joint sweep)
    search: bool     # the clipping-search (mse) grid by default (measured best, docs/quantization.md)
    joint: bool      # compensates rounding through H⁻¹, so SparseGPT's sweep can round as it prunes (order joint)


def _rtn(weight: torch.Tensor, hessian: Hessian | None, r: Rounding, keep: torch.Tensor | None, blocksize: int,
         percdamp: float, name: str) -> tuple[torch.Tensor, LayerGrid, int]:
    w = weight.float() if keep is None else weight.float() * keep
    new, grid = rtn(w, r.bits, r.groupsize, r.sym, r.search)
    return new, grid, 0


def _gptq(weight: torch.Tensor, hessian: Hessian | None, r: Rounding, keep: torch.Tensor | None, blocksize: int,
          percdamp: float, name: str) -> tuple[torch.Tensor, LayerGrid, int]:
    return gptq_quantize(weight, hessian(), r.bits, r.groupsize, r.sym, keep, r.act_order, blocksize, percdamp, name,
                         r.search)


QUANTIZERS: Mapping[QuantMethod, QuantizerRow] = MappingProxyType({
    QuantMethod.RTN: QuantizerRow(_rtn, hessian=False, act_order=False, search=False, joint=False),
    QuantMethod.GPTQ: QuantizerRow(_gptq, hessian=True, act_order=True, search=True, joint=True),
})
