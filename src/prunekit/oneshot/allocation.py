"""Per-layer sparsity allocation: uniform, one global threshold, or OWL. Pure functions."""

from __future__ import annotations

import torch

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


def clamp(sparsities: dict[str, float], low: float, high: float) -> dict[str, float]:
    return {name: min(max(s, low), high) for name, s in sparsities.items()}
