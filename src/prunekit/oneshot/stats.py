"""Streaming input statistics for one layer, accumulated in float32 and normalized by token count."""

from __future__ import annotations

import itertools

import torch

from ..errors import PrunekitError

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
        self.reduced = False  # summed over the processes of a data-parallel run (``collective``)
        self.scaled = False  # ``xtx`` holds H = 2XᵀX/n (see ``hessian``)
        # Σx² is the diagonal of XᵀX, so only one of the two is kept.
        self.xtx = torch.zeros(cols, cols, dtype=torch.float32, device=device) if hessian else None  # (cols, cols)
        self.sq_sum = None if hessian else torch.zeros(cols, dtype=torch.float32, device=device)  # (cols,)

    def add(self, x: torch.Tensor) -> None:
        """Add a batch of inputs ``x`` (..., cols), any float dtype, one float32 chunk at a time."""
        if self.scaled:
            raise RuntimeError("inputs added after the Hessian was taken")
        flat = x.reshape(-1, x.shape[-1])  # (tokens, cols)
        self.count += flat.shape[0]
        for chunk in flat.split(CHUNK_TOKENS):  # never a float32 copy of all tokens
            if self.xtx is not None:
                gram_add_(self.xtx, chunk.float())
            else:
                self.sq_sum += chunk.to(torch.float32, copy=True).square_().sum(0)  # copy: never square the activations

    def check_finite(self, name: str) -> None:
        """Raise when a sum holds NaN or Inf: every score and update from it would be meaningless (and a
        NaN score is never among the k smallest, so far fewer weights would be pruned, silently)."""
        sums = self.xtx if self.xtx is not None else self.sq_sum
        if not torch.isfinite(sums).all():
            raise PrunekitError(f"{name}: its calibration inputs hold NaN or Inf (non-finite activations reach "
                                "this layer: check the weights and norms of the layers before it)")

    @property
    def nbytes(self) -> int:
        return self.xtx.nbytes if self.xtx is not None else self.sq_sum.nbytes

    @property
    def norms_sq(self) -> torch.Tensor:
        """Mean squared activation per input, E[x_j²]; ‖X_j‖₂ up to a constant factor."""
        if self.scaled:
            return self.xtx.diagonal() / 2.0
        sums = self.xtx.diagonal() if self.xtx is not None else self.sq_sum
        return sums / max(self.count, 1)

    @property
    def hessian(self) -> torch.Tensor:
        """H = 2XᵀX/n for the inputs X (tokens, cols), the Hessian of the layer-wise squared error (the
        papers write 2XXᵀ, with X as (cols, tokens)).

        Scaled in place the first time: the sum is needed no more, and a scaled copy would cost one more
        (cols, cols) matrix at the peak (485 MB at a 7B down_proj). Later calls return the same tensor.
        """
        if self.xtx is None:
            raise ValueError("hessian was not accumulated")
        if not self.scaled:
            self.xtx.mul_(2.0 / max(self.count, 1))
            self.scaled = True
        return self.xtx
