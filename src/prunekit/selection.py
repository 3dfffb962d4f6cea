"""Exact mask selection: pure functions from scores to boolean keep-masks.

Convention: a mask is ``True`` where the weight is kept. Every function prunes exactly the
requested number of entries per comparison group (ties broken by position, never by count drift).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch

from .errors import PrunekitError


class Scope(StrEnum):
    """The comparison group within a layer: its rows, or the whole layer. ``global`` (one threshold
    over all layers) is the layer scope with a global allocation; ``PruneConfig`` rewrites it so."""

    LAYER = "layer"
    ROW = "row"
    GLOBAL = "global"


def count_to_prune(numel: int, sparsity: float) -> int:
    """Number of entries to prune for ``sparsity`` of ``numel`` (round half to even, clamped)."""
    return max(0, min(numel, round(sparsity * numel)))


def row_counts(total: int, rows: int) -> list[int]:
    """``total`` prune counts spread over ``rows`` rows as evenly as possible (the first rows take one
    more), summing exactly to ``total``."""
    if rows == 0:
        return []
    base, extra = divmod(total, rows)
    return [base + (r < extra) for r in range(rows)]


def parse_pattern(pattern: str) -> tuple[int, int] | None:
    """``'unstructured'`` -> None; ``'2:4'`` -> (2, 4): keep N of every M consecutive inputs."""
    if pattern == "unstructured":
        return None
    parts = pattern.split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise PrunekitError(f"pattern must be 'unstructured' or 'N:M' (e.g. 2:4), got {pattern!r}")
    n, m = int(parts[0]), int(parts[1])
    if not 0 < n < m:
        raise PrunekitError(f"N:M pattern needs 0 < N < M, got {pattern!r}")
    return n, m


@dataclass(frozen=True)
class Pattern:
    """A sparsity pattern as the speed tools name it: ``"50%"`` (that share pruned, unstructured) or
    ``"2:4"`` (N:M, which fixes its own sparsity)."""

    sparsity: float
    nm: tuple[int, int] | None = None

    @classmethod
    def parse(cls, text: str) -> Pattern:
        if ":" in text:
            n, m = parse_pattern(text)
            return cls(1 - n / m, (n, m))
        try:
            percent = float(text.removesuffix("%")) if text.endswith("%") else -1.0
        except ValueError:
            percent = -1.0
        if not 0 < percent < 100:
            raise PrunekitError(f"a pattern is a percentage in (0, 100) such as 50% or N:M such as 2:4, got {text!r}")
        return cls(percent / 100)

    def __str__(self) -> str:
        return f"{self.nm[0]}:{self.nm[1]}" if self.nm else f"{self.sparsity * 100:g}%"


def smallest_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask over the whole tensor that prunes exactly the ``k`` smallest scores."""
    flat = scores.reshape(-1)
    keep = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
    if k > 0:
        idx = torch.topk(flat.float(), k, largest=False, sorted=False).indices
        keep[idx] = False
    return keep.view(scores.shape)


def row_smallest_mask(scores: torch.Tensor, k: int | list[int]) -> torch.Tensor:
    """Keep-mask pruning exactly the ``k`` smallest scores of every row of a 2-D tensor
    (``k`` may be a list with one count per row)."""
    rows, cols = scores.shape
    counts = torch.as_tensor(k, dtype=torch.long).expand(rows).clamp(0, cols)  # (rows,)
    if rows == 0 or int(counts.max()) == 0:
        return torch.ones(rows, cols, dtype=torch.bool, device=scores.device)
    if int(counts.max() - counts.min()) <= 1:  # one count, or row scope's base and base + 1
        return _row_threshold_mask(scores.float(), counts.to(scores.device))
    kmax = int(counts.max())
    keep = torch.ones(rows, cols, dtype=torch.bool, device=scores.device)
    idx = torch.topk(scores.float(), kmax, dim=1, largest=False, sorted=True).indices  # (rows, kmax)
    pruned = torch.arange(kmax, device=scores.device)[None, :] < counts.to(scores.device)[:, None]
    return keep.scatter_(1, idx, ~pruned)


def _row_threshold_mask(scores: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Prune the ``counts[r]`` smallest of each row r (counts differ by at most 1): everything below
    the row's counts[r]-th smallest value (numpy's introselect on CPU, ~4x faster than topk), then as
    many entries equal to it as the count still needs, lowest column first, so every row prunes
    exactly its count even with ties."""
    hi = int(counts.max())
    if scores.device.type == "cpu":
        part = torch.from_numpy(np.partition(scores.numpy(), hi - 1, axis=1))  # (rows, cols)
    else:
        part = torch.sort(scores, dim=1).values
    kth = part[:, hi - 1]  # (rows,) the hi-th smallest
    if hi > 1:  # the (hi - 1)-th smallest is the largest of the entries before it
        kth = torch.where(counts == hi, kth, part[:, : hi - 1].amax(1))
    kth = kth.masked_fill(counts == 0, -torch.inf)
    keep = scores > kth[:, None]
    short = counts - (scores.shape[1] - keep.sum(1))  # (rows,) < 0 where entries tie at the k-th value
    tied = (short < 0).nonzero().squeeze(1)
    if tied.numel():
        sub = scores[tied]
        at = sub == kth[tied, None]
        prune_at = at & (at.cumsum(1) <= (at.sum(1) + short[tied])[:, None])
        keep[tied] = ~((sub < kth[tied, None]) | prune_at)
    return keep


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep-mask keeping the ``n`` largest of every ``m`` consecutive entries along dim 1
    (ties: the lower column is pruned first)."""
    rows, cols = scores.shape
    if cols % m:
        raise PrunekitError(f"width {cols} is not divisible by M={m}")
    groups = scores.float().reshape(rows, cols // m, m)  # (rows, groups, m)
    if m > 8:  # a stable sort; the pairwise ranks below cost m(m-1) comparisons
        idx = torch.sort(groups, dim=2, stable=True).indices[..., : m - n]
        keep = torch.ones_like(groups, dtype=torch.bool)
        return keep.scatter_(2, idx, False).reshape(rows, cols)
    # rank of entry i in its group = entries below it, ties counted for lower columns; keep the top n
    # (4x faster than topk for 2:4, and the same result as a stable sort)
    entries = [groups[..., i] for i in range(m)]  # m × (rows, groups)
    keep = torch.empty_like(groups, dtype=torch.bool)
    for i, x in enumerate(entries):
        rank = torch.zeros(x.shape, dtype=torch.int8, device=x.device)
        for j, y in enumerate(entries):
            if j != i:
                rank += (y <= x) if j < i else (y < x)
        keep[..., i] = rank >= m - n
    return keep.reshape(rows, cols)


def zero_pruned_(weight: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Set ``weight`` to +0.0 where ``keep`` is False, in place (finite weights). A multiply by the mask
    is ~5x faster than ``masked_fill_`` on CPU; adding 0 turns the -0.0 of negative pruned entries into +0.0."""
    return weight.mul_(keep).add_(0)


def is_valid_nm(tensor: torch.Tensor, n: int, m: int) -> bool:
    """True when every group of ``m`` consecutive entries along the last dim has at most ``n`` nonzeros."""
    if tensor.shape[-1] % m:
        return False
    groups = (tensor != 0).reshape(*tensor.shape[:-1], tensor.shape[-1] // m, m)
    return bool((groups.sum(-1) <= n).all())


def global_counts(scores: list[torch.Tensor], sparsity: float) -> list[int]:
    """Per-tensor prune counts for one threshold across all tensors, exactly k in total.

    Entries strictly below the k-th smallest score are pruned; the remaining budget goes to
    entries equal to it, in tensor order, so ties never change the total.
    """
    sizes = [s.numel() for s in scores]
    k = count_to_prune(sum(sizes), sparsity)
    if k == 0:
        return [0] * len(scores)
    if k == sum(sizes):
        return sizes
    flat = torch.cat([s.reshape(-1).float() for s in scores])  # (total,)
    threshold = torch.kthvalue(flat, k).values
    del flat
    below = [int((s.float() < threshold).sum()) for s in scores]
    ties = [int((s.float() == threshold).sum()) for s in scores]
    remaining = k - sum(below)
    counts = []
    for b, t in zip(below, ties, strict=True):
        take = min(t, remaining)
        remaining -= take
        counts.append(b + take)
    return counts


def split_count(total: int, sizes: list[int]) -> list[int]:
    """Split ``total`` into integer parts proportional to ``sizes`` (largest remainder), summing exactly."""
    whole = sum(sizes)
    if whole == 0:
        return [0] * len(sizes)
    raw = [total * s / whole for s in sizes]
    parts = [int(r) for r in raw]
    order = sorted(range(len(sizes)), key=lambda i: (parts[i] - raw[i], i))
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


def select_mask(scores: torch.Tensor, sparsity: float, scope: Scope, nm: tuple[int, int] | None = None) -> torch.Tensor:
    """Keep-mask pruning exactly the lowest scores (rows, cols): per row, per layer, or N of every M inputs."""
    if nm is not None:
        return nm_mask(scores, *nm)
    if scope == Scope.ROW:  # the layer's exact count, spread over rows as evenly as possible
        return row_smallest_mask(scores, row_counts(count_to_prune(scores.numel(), sparsity), scores.shape[0]))
    if scope == Scope.LAYER:
        return smallest_mask(scores, count_to_prune(scores.numel(), sparsity))
    raise ValueError(f"select_mask takes a layer or row scope, not {scope!r}")
