"""SparseGPT (Frantar & Alistarh 2023): OBS weight updates from H = 2XᵀX/n (X: (tokens, cols) inputs), blocked
lazy updates."""

from __future__ import annotations

import torch

from ..hessian import inverse_cholesky, without_dead_inputs
from ..quant.grid import GroupQuantizer, group_columns
from ..selection import Scope, count_to_prune, smallest_mask, split_count


@torch.no_grad()
def sparsegpt_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float,
    scope: Scope = Scope.LAYER,
    nm: tuple[int, int] | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
    name: str = "",
    quantizer: GroupQuantizer | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Prune ``weight`` (rows, cols) with OBS updates; returns (new weight, keep mask, escalations).

    The mask is chosen adaptively per column block by w²/[H⁻¹]²_jj: exactly the requested count in
    total (layer scope), per row (row scope), or exactly N kept in every M consecutive inputs.
    With ``quantizer``, each kept column is also rounded onto its group's grid as the sweep reaches it, and
    the error of both is compensated together (the joint mode of the SparseGPT paper); a group not yet
    fitted is fitted then, from its kept weights as updated so far.
    """
    W, H = without_dead_inputs(weight, hessian)  # (rows, cols), (cols, cols)
    rows, cols = W.shape
    Hinv, escalations = inverse_cholesky(H, percdamp, name)
    del H

    starts = list(range(0, cols, blocksize))
    widths = [min(blocksize, cols - s) for s in starts]
    if nm is None and scope == Scope.LAYER:
        block_k = split_count(count_to_prune(rows * cols, sparsity), [rows * w for w in widths])
    elif nm is None:
        block_k = split_count(count_to_prune(cols, sparsity), widths)  # per row
    keep = torch.ones(rows, cols, dtype=torch.bool, device=W.device)
    for b, (i1, count) in enumerate(zip(starts, widths, strict=True)):
        i2 = i1 + count
        W1 = W[:, i1:i2].clone()  # (rows, count)
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]  # (count, count)
        d = torch.diag(Hinv1)  # (count,)
        if nm is None:
            tmp = W1**2 / d[None, :] ** 2
            if scope == Scope.LAYER:
                keep1 = smallest_mask(tmp, block_k[b])
            else:
                keep1 = torch.ones_like(W1, dtype=torch.bool)
                if block_k[b]:
                    idx = torch.topk(tmp, block_k[b], dim=1, largest=False).indices
                    keep1.scatter_(1, idx, False)
        else:
            n, m = nm
            keep1 = torch.ones_like(W1, dtype=torch.bool)
        for i in range(count):
            w = W1[:, i]
            if nm is not None and i % m == 0:
                tmp = W1[:, i : i + m] ** 2 / d[i : i + m][None, :] ** 2  # (rows, m)
                idx = torch.topk(tmp, m - n, dim=1, largest=False).indices
                keep1[:, i : i + m].scatter_(1, idx, False)
            q = w * keep1[:, i]
            if quantizer is not None:
                g = quantizer.group(i1 + i)
                if not quantizer.fitted[g]:
                    quantizer.fit_group(g, group_columns(W1, W, i, i2, quantizer.bounds[g], keep1))
                q = quantizer.column(i1 + i, q)  # a pruned weight stays exactly 0 on any grid
            Q1[:, i] = q
            err = (w - q) / d[i]
            W1[:, i:] -= err[:, None] @ Hinv1[i, i:][None, :]
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        keep[:, i1:i2] = keep1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return W.to(weight.dtype), keep, escalations
