"""Quantization frozen through training: a parametrization that rounds the weight onto a fixed grid in the
forward pass and lets gradients through unchanged (the straight-through estimator), so recovery fine-tuning
trains the weights a quantized model will really use, with its scales and zero points held fixed."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..targets import stored_transposed, weight_view
from .grid import LayerGrid, fake_quantize


class FrozenGrid(nn.Module):
    """W ↦ W rounded onto ``grid`` (per row and group of the (out, in) weight), straight-through."""

    def __init__(self, grid: LayerGrid, transposed: bool, device: torch.device) -> None:
        super().__init__()
        self.bits, self.transposed = grid.bits, transposed
        self.groupsize = grid.groupsize
        self.register_buffer("scale", grid.scale.float().to(device))  # (rows, groups)
        self.register_buffer("zero", grid.zero.float().to(device))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        w = weight.t() if self.transposed else weight  # (rows, cols)
        index = torch.arange(w.shape[1], device=w.device) // (self.groupsize or w.shape[1])
        q = fake_quantize(w, self.scale[:, index], self.zero[:, index], self.bits).to(w.dtype)
        q = q.t() if self.transposed else q
        return weight + (q - weight).detach()


def attach_grids(model: nn.Module, grids: Mapping[str, LayerGrid]) -> None:
    """Freeze ``grids`` onto the named layers (after any mask parametrization already there)."""
    for name, grid in grids.items():
        module = model.get_submodule(name)
        parametrize.register_parametrization(module, "weight", FrozenGrid(grid, stored_transposed(module),
                                                                          module.weight.device))


@torch.no_grad()
def snap_to_grids(model: nn.Module, grids: Mapping[str, LayerGrid]) -> None:
    """Round the plain weights onto their grids (re-quantize with the frozen scales): exact where the
    straight-through sum w + (q − w) was off by a rounding."""
    for name, grid in grids.items():
        w = weight_view(model.get_submodule(name))
        w.copy_(grid.apply(w).to(w.dtype))
