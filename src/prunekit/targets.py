"""Model traversal: where the transformer blocks are and which layers get pruned."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import torch
from torch import nn

try:  # GPT-2 style layers store the weight transposed: (in, out)
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover - transformers is a dependency
    Conv1D = ()  # type: ignore[assignment]


class ExpertSlice:
    """One expert's matrix inside a fused mixture-of-experts parameter (experts, out, in)."""

    def __init__(self, module: nn.Module, param_name: str, index: int) -> None:
        self.module, self.param_name, self.index = module, param_name, index

    @property
    def param(self) -> nn.Parameter:
        return getattr(self.module, self.param_name)

    def key(self) -> tuple[int, int]:
        """Identifies this expert's slice when the experts forward passes it to F.linear."""
        p = self.param
        return p.untyped_storage().data_ptr(), p.storage_offset() + self.index * p.stride(0)


Target = nn.Module | ExpertSlice


def stored_transposed(module: nn.Module) -> bool:
    """GPT-2's Conv1D stores its weight (in, out); everything else is (out, in, ...)."""
    return bool(Conv1D) and isinstance(module, Conv1D)


def is_prunable(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or (bool(Conv1D) and isinstance(module, Conv1D))


def is_fused_experts(module: nn.Module) -> bool:
    """Mixture-of-experts modules that store every expert's matrices as one 3-D parameter."""
    return type(module).__name__.endswith("Experts") and any(
        p.dim() == 3 for p in module.parameters(recurse=False)
    )


def weight_view(target: Target) -> torch.Tensor:
    """The weight as (out, in), a view that writes through to the model's storage."""
    if isinstance(target, ExpertSlice):
        w = target.param.data[target.index]
        return w.t() if getattr(target.module, "is_transposed", False) else w
    w = target.weight.data
    return w.t() if stored_transposed(target) else w


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The largest ``nn.ModuleList`` whose children are all of one class (the transformer blocks)."""
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            kinds = {type(child) for child in module}
            if len(kinds) == 1 and any(is_prunable(m) or is_fused_experts(m) for m in module[0].modules()):
                size = sum(p.numel() for p in module.parameters())
                if best is None or size > sum(p.numel() for p in best[1].parameters()):
                    best = (name, module)
    return best


def _selected(name: str, include: Iterable[str], exclude: Iterable[str]) -> bool:
    include, exclude = list(include), list(exclude)
    if include and not any(re.search(p, name) for p in include):
        return False
    return not any(re.search(p, name) for p in exclude)


def _module_targets(prefix: str, module: nn.Module) -> Iterator[tuple[str, Target]]:
    if is_prunable(module):
        yield prefix, module
    elif is_fused_experts(module):
        for pname, p in module.named_parameters(recurse=False):
            if p.dim() == 3:
                for e in range(p.shape[0]):
                    yield f"{prefix}.{pname}.{e}", ExpertSlice(module, pname, e)


def find_targets(model: nn.Module, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> dict[str, Target]:
    """Prunable layers, by full name: every Linear/Conv1D (and every expert of fused MoE layers)
    inside the blocks, or in the whole model when it has no repeated blocks, filtered by regex
    ``include``/``exclude`` patterns."""
    found = find_blocks(model)
    prefix = found[0] + "." if found else ""
    out = {}
    for name, module in model.named_modules():
        if name.startswith(prefix):
            for tname, target in _module_targets(name, module):
                if _selected(tname, include, exclude):
                    out[tname] = target
    return out


def block_targets(block: nn.Module, block_name: str, targets: dict[str, Target]) -> dict[str, Target]:
    """The targets that live inside one block, keyed by full name."""
    return {
        tname: t for n, m in block.named_modules() for tname, t in _module_targets(f"{block_name}.{n}", m)
        if tname in targets
    }
