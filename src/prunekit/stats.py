"""Streaming input statistics for one layer, accumulated in float32 and normalized by token count."""

from __future__ import annotations

import itertools
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
        flat = x.reshape(-1, x.shape[-1])  # (tokens, cols), any float dtype
        cols = flat.shape[1]
        sq = torch.zeros(cols, dtype=torch.float32, device=x.device)
        xtx = torch.zeros(cols, cols, dtype=torch.float32, device=x.device) if hessian else None
        for chunk in flat.split(CHUNK_TOKENS):  # one float32 copy of a chunk at a time, never of all tokens
            if xtx is not None:
                xtx += gram(chunk.float())
            else:
                sq += chunk.to(torch.float32, copy=True).square_().sum(0)  # copy: never square the activations
        if xtx is not None:
            sq = xtx.diagonal().clone()  # Σx² is the diagonal of XᵀX
        return cls(flat.shape[0], sq, xtx)


# Tokens per float32 chunk: 4096 × 1536 floats stay under glibc's 32 MB mmap threshold, so the
# chunk's memory is reused from the heap instead of page-faulted fresh on every batch.
CHUNK_TOKENS = 4096


def gram(x: torch.Tensor) -> torch.Tensor:
    """XᵀX of x (tokens, cols) from its upper-triangular column blocks only (about a third fewer
    multiply-adds than ``x.T @ x``); the lower triangle is mirrored, so the result is exactly symmetric."""
    cols = x.shape[1]
    parts = max(1, min(4, cols // 128))
    edges = [round(i * cols / parts) for i in range(parts + 1)]
    out = torch.empty(cols, cols, dtype=x.dtype, device=x.device)  # (cols, cols)
    for a, b in itertools.pairwise(edges):
        band = x[:, a:b].T @ x[:, a:]  # (b - a, cols - a)
        out[a:b, a:] = band
    upper = out.triu()
    return upper + upper.triu(1).T


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
