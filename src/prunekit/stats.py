"""Streaming input statistics for one layer, accumulated in float32 and normalized by token count."""

from __future__ import annotations

import torch


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

    def add(self, x: torch.Tensor, xtx: torch.Tensor | None = None) -> None:
        """Add a batch of inputs ``x`` (..., cols); ``xtx`` may pass a precomputed XᵀX for this x."""
        x = x.reshape(-1, self.cols).float()  # (tokens, cols)
        self.count += x.shape[0]
        self.sq_sum += (x * x).sum(dim=0)
        if self.xtx is not None:
            self.xtx += xtx if xtx is not None else x.T @ x

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
