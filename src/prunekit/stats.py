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
                gram_add_(xtx, chunk.float())
            else:
                sq += chunk.to(torch.float32, copy=True).square_().sum(0)  # copy: never square the activations
        if xtx is not None:
            sq = xtx.diagonal().clone()  # Σx² is the diagonal of XᵀX
        return cls(flat.shape[0], sq, xtx)


# Tokens per float32 chunk: the copy is the largest temporary of a statistics pass (1024 × 1536
# floats = 6.3 MB, as big as one bf16 MLP activation of a 2048-token sample). XᵀX of 32768 × 1536 took
# as long in 1024-row chunks as in 4096-row ones here (0.67–0.68 s vs 0.56–0.68 s).
CHUNK_TOKENS = 1024


def gram_add_(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``out += XᵀX`` for x (tokens, cols), from the upper-triangular column blocks of XᵀX only (about a
    third fewer multiply-adds than ``x.T @ x``). Each block is added to both triangles at once, so a
    symmetric ``out`` stays exactly symmetric, and no (cols, cols) temporary is made."""
    cols = x.shape[1]
    parts = max(1, min(4, cols // 128))
    edges = [round(i * cols / parts) for i in range(parts + 1)]
    for a, b in itertools.pairwise(edges):
        band = x[:, a:b].T @ x[:, a:]  # (b - a, cols - a)
        upper = band[:, : b - a].triu()  # the diagonal block, symmetric up to rounding
        out[a:b, a:b] += upper + upper.triu(1).T
        out[a:b, b:] += band[:, b - a :]
        out[b:, a:b] += band[:, b - a :].T
    return out


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
    def nbytes(self) -> int:
        return self.sq_sum.nbytes + (self.xtx.nbytes if self.xtx is not None else 0)

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
