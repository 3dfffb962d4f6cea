"""Per-layer sparsity allocation: uniform, one global threshold, or OWL. Pure functions."""

from __future__ import annotations

import torch

from ..errors import PrunekitError
from ..selection import global_counts


def global_allocation(scores: dict[str, torch.Tensor], sparsity: float) -> dict[str, float]:
    """Per-layer sparsity from one threshold over all layers' scores (exactly k pruned in total)."""
    counts = global_counts(list(scores.values()), sparsity)
    return {name: c / s.numel() for (name, s), c in zip(scores.items(), counts, strict=True)}


def outlier_ratio(scores: list[torch.Tensor], m: float) -> float:
    """Share of scores above ``m`` × their mean (OWL's layerwise outlier distribution)."""
    flat = torch.cat([s.reshape(-1).float() for s in scores])
    return float((flat > m * flat.mean()).float().mean())


def owl_sparsities(ratios: list[float], params: list[int], target: float, lam: float) -> list[float]:
    """OWL (Yin et al. 2024): sparsity falls linearly as the outlier ratio rises.

    s_b = target − c·(r_b − r̄), with r̄ the parameter-weighted mean ratio and the largest c that
    keeps every s_b within [target − λ, target + λ]; the parameter-weighted mean is exactly target.
    """
    total = sum(params)
    mean = sum(r * p for r, p in zip(ratios, params, strict=True)) / total
    spread = max(abs(r - mean) for r in ratios)
    c = lam / spread if spread > 0 else 0.0
    return [target - c * (r - mean) for r in ratios]


def clamp_keeping_mean(sparsities: dict[str, float], sizes: dict[str, int], low: float, high: float) -> dict[str, float]:
    """Each sparsity within [low, high], its size-weighted mean unchanged: all are shifted by one δ, then
    clamped. The mean of clamp(s + δ) never falls as δ grows, so δ is found by bisection (to float
    precision). Where no bound binds, δ = 0. Raises when the mean itself lies outside [low, high]."""
    total = sum(sizes[k] for k in sparsities)
    target = sum(s * sizes[k] for k, s in sparsities.items()) / total

    def mean(delta: float) -> float:
        return sum(min(max(s + delta, low), high) * sizes[k] for k, s in sparsities.items()) / total

    if not low <= target <= high:
        raise PrunekitError(f"sparsity {target:.4g} cannot be met with every layer within [{low:g}, {high:g}]")
    lo, hi = low - max(sparsities.values()), high - min(sparsities.values())  # mean(lo) = low, mean(hi) = high
    delta = 0.0
    if mean(0.0) != target:
        for _ in range(200):
            delta = (lo + hi) / 2
            if mean(delta) < target:
                lo = delta
            else:
                hi = delta
    return {k: min(max(s + delta, low), high) for k, s in sparsities.items()}
