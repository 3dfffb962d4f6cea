"""Weight quantization settings, validated once; saved in the manifest inside the pruning config."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import torch

from ..errors import PrunekitError, choice
from ..settings import setting
from .compose import Order, Quantization
from .quantizers import QUANTIZERS, Hessian, QuantMethod, Rounding


class GridFit(StrEnum):
    MINMAX = "minmax"  # each group's range (GPTQ's and the original SparseGPT code's quantizer)
    MSE = "mse"        # the range shrunk to the least squared rounding error (a clipping search; quant/grid.py)


@dataclass(frozen=True)
class QuantConfig:
    """Weight quantization: ``wbits`` (0: none; 8 and 4, or 3 and 2 for research) per output row, or per
    ``groupsize`` consecutive inputs of a row; asymmetric (a zero point per group) unless ``sym``.
    ``quant_method``: a row of ``quant.quantizers.QUANTIZERS``; ``order``: one of ``quant.compose.ORDERS``."""

    wbits: int = setting(0, "quantize the weights to this many bits (2-8; 0: no quantization)")
    groupsize: int = setting(0, "inputs per quantization group (0: one grid per output row)")
    sym: bool = setting(False, "symmetric grids (no zero point) instead of asymmetric")
    quant_method: QuantMethod = setting(QuantMethod.GPTQ, "rtn (round to nearest) or gptq (Hessian-compensated)")
    act_order: bool | None = setting(None, "GPTQ: quantize columns in order of decreasing activation energy (H_jj); "
                                           "default: on for GPTQ, except in the joint order's column sweep")
    grid: GridFit | None = setting(None, "grid range per group: minmax (the group's range) or mse (shrunk to the least "
                                         "squared rounding error; outliers clip); default: mse for GPTQ, except in the "
                                         "joint order's column sweep, minmax otherwise")
    order: Order = setting(Order.PRUNE_FIRST, "with pruning: prune-first, quant-first or joint (SparseGPT only)")
    uneven_groups: bool = setting(False, "allow a narrower last group where --groupsize does not divide a layer's "
                                         "input width (otherwise that is an error)")

    def __post_init__(self) -> None:
        if isinstance(self.wbits, bool) or not isinstance(self.wbits, int) or not (self.wbits == 0 or 2 <= self.wbits <= 8):
            raise PrunekitError(f"wbits must be 2 to 8 (or 0: no quantization), got {self.wbits!r}")
        if isinstance(self.groupsize, bool) or not isinstance(self.groupsize, int) or self.groupsize < 0:
            raise PrunekitError(f"groupsize must be an integer >= 0 (0: per output row), got {self.groupsize!r}")
        method = choice(QuantMethod, self.quant_method, "quant method")
        object.__setattr__(self, "quant_method", method)
        object.__setattr__(self, "order", choice(Order, self.order, "order"))
        # the defaults measured best on protocol P (docs/quantization.md): activation order at g128 and g64; the mse
        # grid in 4 of 4 GPTQ runs (RTN far worse with it, the joint sweep mixed)
        row = QUANTIZERS[method]
        outside_joint = self.wbits > 0 and self.order != Order.JOINT
        if self.act_order is None:
            object.__setattr__(self, "act_order", row.act_order and outside_joint)
        default_grid = GridFit.MSE if row.search and outside_joint else GridFit.MINMAX
        object.__setattr__(self, "grid", choice(GridFit, self.grid or default_grid, "grid"))
        if self.act_order and not row.act_order:
            takes = ", ".join(m for m, r in QUANTIZERS.items() if r.act_order)
            raise PrunekitError(f"act_order is not an option of {method}; use it with --quant-method {takes}")

    @property
    def enabled(self) -> bool:
        return self.wbits > 0

    @property
    def search(self) -> bool:
        """Whether grids come from the clipping search (``quant.grid.fit``)."""
        return self.grid == GridFit.MSE

    @property
    def needs_hessian(self) -> bool:
        return self.enabled and QUANTIZERS[self.quant_method].hessian

    def layer(self, hessian: Hessian | None, blocksize: int, percdamp: float, name: str) -> Quantization | None:
        """One layer's quantization (None when quantization is off)."""
        if not self.enabled:
            return None
        rounding = Rounding(self.wbits, self.groupsize, self.sym, self.search, bool(self.act_order))
        return Quantization(QUANTIZERS[self.quant_method], rounding, hessian, blocksize, percdamp, name)

    def group_error(self, name: str, cols: int) -> str | None:
        """Why this layer's width cannot be grouped, or None."""
        if self.enabled and self.groupsize and cols % self.groupsize and not self.uneven_groups:
            return (f"{name}: --groupsize {self.groupsize} does not divide its input width {cols} "
                    "(pass --uneven-groups for a narrower last group)")
        return None

    def dtype_error(self, name: str, dtype: torch.dtype) -> str | None:
        """Why weights of ``dtype`` cannot hold this grid's values, or None. bfloat16 (8 significant bits) keeps
        ``scale · (level − zero)`` distinguishable from its neighbours only up to 128 steps from the zero point;
        an asymmetric 8-bit grid reaches 255, so its weights would land off the grid (and off the kernels)."""
        if self.enabled and dtype == torch.bfloat16 and self.wbits == 8 and not self.sym:
            return (f"{name}: asymmetric 8-bit levels do not survive bfloat16 weights (up to 255 steps from the zero "
                    "point; bfloat16 tells apart 128): pass --sym, or load the model in float32")
        return None
