"""Importance scores for one weight matrix: pure functions on tensors."""

from __future__ import annotations

import torch


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    """|W|, shape (rows, cols)."""
    return weight.abs().float()


def wanda_scores(weight: torch.Tensor, norms_sq: torch.Tensor) -> torch.Tensor:
    """|W_ij|·‖X_j‖₂ (Sun et al. 2023), shape (rows, cols)."""
    return weight.abs().float() * norms_sq.sqrt().to(weight.device)[None, :]
