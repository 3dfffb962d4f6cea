"""Model traversal: where the transformer blocks are and which layers get pruned."""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch
from torch import nn

try:  # GPT-2 style layers store the weight transposed: (in, out)
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover - transformers is a dependency
    Conv1D = ()  # type: ignore[assignment]


def is_prunable(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or (bool(Conv1D) and isinstance(module, Conv1D))


def weight_view(module: nn.Module) -> torch.Tensor:
    """The weight as (out, in), a view that writes through to the module's storage."""
    w = module.weight.data
    return w.t() if not isinstance(module, nn.Linear) else w


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The largest ``nn.ModuleList`` whose children are all of one class (the transformer blocks)."""
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            kinds = {type(child) for child in module}
            if len(kinds) == 1 and any(is_prunable(m) for m in module[0].modules()):
                size = sum(p.numel() for p in module.parameters())
                if best is None or size > sum(p.numel() for p in best[1].parameters()):
                    best = (name, module)
    return best


def _selected(name: str, include: Iterable[str], exclude: Iterable[str]) -> bool:
    include, exclude = list(include), list(exclude)
    if include and not any(re.search(p, name) for p in include):
        return False
    return not any(re.search(p, name) for p in exclude)


def find_targets(
    model: nn.Module, include: Iterable[str] = (), exclude: Iterable[str] = ()
) -> dict[str, nn.Module]:
    """Prunable layers, by full name: every Linear/Conv1D inside the blocks (or in the whole model
    when it has no repeated blocks), filtered by regex ``include``/``exclude`` patterns."""
    found = find_blocks(model)
    prefix = found[0] + "." if found else ""
    out = {}
    for name, module in model.named_modules():
        if is_prunable(module) and name.startswith(prefix) and _selected(name, include, exclude):
            out[name] = module
    return out


def block_targets(block: nn.Module, block_name: str, targets: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """The targets that live inside one block, keyed by full name."""
    return {f"{block_name}.{n}": m for n, m in block.named_modules() if f"{block_name}.{n}" in targets}
