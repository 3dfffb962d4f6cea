"""Importance scores and mask selection for one weight matrix: pure functions on tensors."""

from __future__ import annotations

import torch

from ..selection import count_to_prune, nm_mask, row_smallest_mask, smallest_mask


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    """|W|, shape (rows, cols)."""
    return weight.abs().float()


def wanda_scores(weight: torch.Tensor, norms_sq: torch.Tensor) -> torch.Tensor:
    """|W_ij|·‖X_j‖₂ (Sun et al. 2023), shape (rows, cols)."""
    return weight.abs().float() * norms_sq.sqrt().to(weight.device)[None, :]


def select_mask(
    scores: torch.Tensor, sparsity: float, scope: str, nm: tuple[int, int] | None = None
) -> torch.Tensor:
    """Keep-mask pruning exactly the lowest scores: per row, per layer, or N of every M inputs."""
    if nm is not None:
        return nm_mask(scores, *nm)
    if scope == "row":  # the layer's exact count, spread over rows as evenly as possible (first rows +1)
        rows, cols = scores.shape
        base, extra = divmod(count_to_prune(rows * cols, sparsity), rows)
        return row_smallest_mask(scores, base if extra == 0 else [base + (r < extra) for r in range(rows)])
    if scope == "layer":
        return smallest_mask(scores, count_to_prune(scores.numel(), sparsity))
    raise ValueError(f"unknown scope {scope!r}")
