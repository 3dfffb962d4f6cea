"""Masks that hold through training: a parametrization W ↦ W ⊙ M on any Linear/Conv1D/Conv weight.

Pruned entries of the effective weight are exactly zero, their gradients are zero, and the stored
weight is zeroed there too, so optimizers with momentum or weight decay never revive them. The mask
is a buffer, so it lives in ``state_dict``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import PrunekitError
from ..selection import zero_pruned_
from ..targets import ExpertSlice, find_targets, stored_transposed, weight_view

MASK_KEY = ".parametrizations.weight.0.mask"


class WeightMask(nn.Module):
    """Parametrization multiplying the weight by a fixed boolean mask (stored in the weight's layout)."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def _module_and_layout_mask(model: nn.Module, name: str, mask: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """``mask`` is (out, in) as in ``prunekit.prune``; Conv1D stores (in, out), so transpose there."""
    module = model.get_submodule(name)
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise PrunekitError(f"{name} has no weight to mask")
    if stored_transposed(module):
        mask = mask.t()
    if tuple(mask.shape) != tuple(weight.shape):
        raise PrunekitError(f"mask for {name} has shape {tuple(mask.shape)}, weight has {tuple(weight.shape)}")
    return module, mask.to(weight.device)


def is_masked(module: nn.Module) -> bool:
    return parametrize.is_parametrized(module, "weight") and isinstance(
        module.parametrizations.weight[0], WeightMask
    )


@torch.no_grad()
def attach(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """Lock ``masks`` (name -> bool (out, in), True = kept) onto the named layers; re-attaching updates them."""
    for name, mask in masks.items():
        module, mask = _module_and_layout_mask(model, name, mask)
        if is_masked(module):
            module.parametrizations.weight[0].mask.copy_(mask)
            zero_pruned_(module.parametrizations.weight.original, mask)
        else:
            zero_pruned_(module.weight, mask)
            parametrize.register_parametrization(module, "weight", WeightMask(mask))
    return model


def masks_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """Current masks by layer name, (out, in) like ``prunekit.prune`` returns them."""
    out = {}
    for name, module in model.named_modules():
        if is_masked(module):
            mask = module.parametrizations.weight[0].mask
            out[name] = mask.t() if stored_transposed(module) else mask
    return out


def attach_dense(model: nn.Module, include=(), exclude=()) -> dict[str, torch.Tensor]:
    """Attach masks that keep the current nonzeros of every target layer (locks in a pruned model)."""
    targets = find_targets(model, include, exclude)
    if any(isinstance(t, ExpertSlice) for t in targets.values()):
        raise PrunekitError("masks on fused mixture-of-experts parameters are not supported yet")
    masks = {name: weight_view(t) != 0 for name, t in targets.items() if not is_masked(t)}
    attach(model, masks)
    return masks_of(model)


@torch.no_grad()
def remove(model: nn.Module) -> nn.Module:
    """Bake the zeros into plain weights and drop the parametrizations; returns the model. The zeros are
    +0.0, as ``prune`` leaves them (W ⊙ M is -0.0 where W is -0.0, as in checkpoints saved before
    ``attach`` zeroed with +0.0), so stored formats give back the same bits."""
    for _, module in model.named_modules():
        if is_masked(module):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            module.weight.add_(0)
    return model


def load_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Load a state dict saved from a masked model into a fresh one, re-creating its masks first."""
    names = [k[: -len(MASK_KEY)] for k in state_dict if k.endswith(MASK_KEY)]
    attach(model, {n: torch.ones_like(weight_view(model.get_submodule(n)), dtype=torch.bool) for n in names})
    model.load_state_dict(state_dict)
    return model
