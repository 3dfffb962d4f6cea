"""Streaming input statistics for one layer, accumulated in float32 and normalized by token count."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BatchSums:
    """Sums over one batch of inputs, computed once and shared by layers fed the same tensor."""

    count: int
    sq_sum: torch.Tensor  # (cols,)
    xtx: torch.Tensor | None  # (cols, cols)

    @classmethod
    def of(cls, x: torch.Tensor, hessian: bool) -> BatchSums:
        flat = x.reshape(-1, x.shape[-1]).float()  # (tokens, cols)
        sq = torch.linalg.vector_norm(flat, dim=0).square()  # no (tokens, cols) temporary
        return cls(flat.shape[0], sq, flat.T @ flat if hessian else None)


class InputStats:
    """Accumulates Σx² per input (Wanda) and optionally XᵀX (SparseGPT) over calibration tokens.

    Sums are kept unnormalized and divided once at the end, so splitting the calibration set into
    batches changes the result only by float rounding.
    """

    def __init__(self, cols: int, hessian: bool, device: torch.device | str = "cpu") -> None:
        self.cols = cols
        self.count = 0
        self.sq_sum = torch.zeros(cols, dtype=torch.float32, device=device)  # (cols,)
        self.xtx = torch.zeros(cols, cols, dtype=torch.float32, device=device) if hessian else None

    def add(self, x: torch.Tensor, sums: BatchSums | None = None) -> None:
        """Add a batch of inputs ``x`` (..., cols); ``sums`` may pass precomputed sums for this x."""
        sums = sums or BatchSums.of(x, self.xtx is not None)
        self.count += sums.count
        self.sq_sum += sums.sq_sum
        if self.xtx is not None:
            self.xtx += sums.xtx

    @property
    def norms_sq(self) -> torch.Tensor:
        """Mean squared activation per input, E[x_j²]; ‖X_j‖₂ up to a constant factor."""
        return self.sq_sum / max(self.count, 1)

    @property
    def hessian(self) -> torch.Tensor:
        """H = 2XXᵀ/n, the Hessian of the layer-wise squared error."""
        if self.xtx is None:
            raise ValueError("hessian was not accumulated")
        return self.xtx * (2.0 / max(self.count, 1))
