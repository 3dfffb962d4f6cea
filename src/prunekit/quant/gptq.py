"""GPTQ (Frantar et al. 2023): quantize one column at a time, moving each column's rounding error onto the
columns not yet quantized through the inverse Hessian H = 2XᵀX/n, in column blocks with lazy updates.

With a keep mask (prune first, then quantize) the pruned weights stay exactly zero: updates reach kept
weights only (the masked variant of the OBS step that sparsity-preserving GPTQ uses).
"""

from __future__ import annotations

import torch

from ..hessian import inverse_cholesky, without_dead_inputs
from .grid import GroupQuantizer, LayerGrid, group_columns


@torch.no_grad()
def gptq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    bits: int,
    groupsize: int = 0,
    sym: bool = False,
    keep: torch.Tensor | None = None,
    act_order: bool = False,
    blocksize: int = 128,
    percdamp: float = 0.01,
    name: str = "",
    search: bool = False,
) -> tuple[torch.Tensor, LayerGrid, int]:
    """Quantize ``weight`` (rows, cols); returns (float32 weights on the grid, the grid, damping escalations).

    Group grids are fitted when the group's first column comes, from the columns as updated so far; with
    ``act_order`` (columns in order of decreasing H_jj) every group is fitted up front instead, from the
    weights as given, so each group keeps its own columns and the stored layout stays plain. ``search``: each
    grid's range by the clipping search of ``grid.fit``.
    """
    W, H = without_dead_inputs(weight, hessian)  # (rows, cols), (cols, cols)
    rows, cols = W.shape
    mask = None if keep is None else keep.to(W.device, torch.bool)
    if mask is not None:
        W *= mask
    quantizer = GroupQuantizer(rows, cols, bits, groupsize, sym, W.device, search)
    perm = None
    if act_order:
        quantizer.fit_all(W)
        perm = torch.argsort(torch.diag(H), descending=True)
        W, H = W[:, perm], H[perm][:, perm]
        mask = None if mask is None else mask[:, perm]
    elif not groupsize:
        quantizer.fit_all(W)  # one grid per row, from the whole row (GPTQ's per-channel quantizer)
    Hinv, escalations = inverse_cholesky(H, percdamp, name)
    del H
    order = perm.tolist() if perm is not None else range(cols)

    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()  # (rows, count)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]  # (count, count)
        mask1 = None if mask is None else mask[:, i1:i2]
        for i in range(count):
            col = order[i1 + i]  # the column's own index (differs under act_order)
            g = quantizer.group(col)
            if not quantizer.fitted[g]:  # first column of its group (in order, without act_order)
                quantizer.fit_group(g, group_columns(W1, W, i, i2, quantizer.bounds[g]))
            w = W1[:, i]
            q = quantizer.column(col, w)
            err = (w - q) / Hinv1[i, i]
            W1[:, i:] -= err[:, None] @ Hinv1[i, i:][None, :]
            W1[:, i] = q
            if mask1 is not None:
                W1[:, i + 1 :] *= mask1[:, i + 1 :]
            Err1[:, i] = err
        W[:, i1:i2] = W1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
        if mask is not None:
            W[:, i2:] *= mask[:, i2:]
    if perm is not None:
        W = W[:, torch.argsort(perm)]
    return W, quantizer.grid(), escalations
