"""One layer's quantization inside a pruning run: RTN or GPTQ, with the keep mask locked when it exists."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..config import QuantMethod
from .gptq import gptq_quantize
from .grid import LayerGrid, rtn

if TYPE_CHECKING:
    from ..config import QuantConfig
    from ..oneshot.stats import InputStats


def quantize_layer(weight: torch.Tensor, stats: InputStats | None, quant: QuantConfig, keep: torch.Tensor | None,
                   blocksize: int, percdamp: float, name: str) -> tuple[torch.Tensor, LayerGrid, int]:
    """``weight`` (rows, cols) on a grid; returns (float32 weights, grid, damping escalations). Entries outside
    ``keep`` are zero before and after."""
    if quant.quant_method == QuantMethod.RTN:
        w = weight.float() if keep is None else weight.float() * keep
        new, grid = rtn(w, quant.wbits, quant.groupsize, quant.sym, quant.search)
        return new, grid, 0
    return gptq_quantize(weight, stats.hessian, quant.wbits, quant.groupsize, quant.sym, keep, quant.act_order,
                         blocksize, percdamp, name, quant.search)
