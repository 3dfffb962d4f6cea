"""Gradual magnitude pruning (Zhu & Gupta 2017): a cubic sparsity schedule applied from any training loop."""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from ..errors import PrunekitError, choice
from ..selection import Scope, global_counts, nm_mask, parse_pattern, select_mask, smallest_mask
from ..targets import ExpertSlice, find_targets, stored_transposed
from .masks import attach, masks_of

log = logging.getLogger(__name__)


def cubic_sparsity(step: int, initial: float, final: float, begin: int, end: int) -> float:
    """s(t) = s_f + (s_i − s_f)(1 − progress)³, progress = (t − begin)/(end − begin) clamped to [0, 1]."""
    progress = (step - begin) / (end - begin)
    if progress <= 0:
        return initial
    if progress >= 1:
        return final  # exactly, not up to rounding
    return final + (initial - final) * (1.0 - progress) ** 3


class GradualPruner:
    """Call ``step(step)`` after each optimizer step; prunes by magnitude every ``frequency`` steps.

    Masks only grow: weights pruned once stay pruned (they are scored −∞). ``scope``: ``layer``,
    ``row`` or ``global``; ``pattern``: ``unstructured`` or ``N:M``, where the per-group count of pruned
    weights follows the schedule and ends at exactly M−N.
    """

    def __init__(
        self,
        model: nn.Module,
        final_sparsity: float,
        begin_step: int,
        end_step: int,
        frequency: int = 100,
        initial_sparsity: float = 0.0,
        scope: Scope = Scope.LAYER,
        pattern: str = "unstructured",
        include: tuple[str, ...] = (),
        exclude: tuple[str, ...] = (),
    ) -> None:
        self.nm = parse_pattern(pattern)
        if self.nm is not None:
            final_sparsity = 1 - self.nm[0] / self.nm[1]
        for name, value in (("final_sparsity", final_sparsity), ("initial_sparsity", initial_sparsity)):
            if not 0.0 <= value < 1.0:
                raise PrunekitError(f"{name} must be in [0, 1), got {value}")
        if begin_step >= end_step:
            raise PrunekitError(f"begin_step ({begin_step}) must be < end_step ({end_step})")
        if frequency < 1:
            raise PrunekitError(f"frequency must be >= 1, got {frequency}")
        self.model, self.final, self.initial = model, final_sparsity, initial_sparsity
        self.begin, self.end, self.frequency = begin_step, end_step, frequency
        self.scope = choice(Scope, scope, "scope")
        targets = find_targets(model, include, exclude)
        if any(isinstance(t, ExpertSlice) for t in targets.values()):
            raise PrunekitError("gradual pruning of fused mixture-of-experts parameters is not supported yet")
        self.names = list(targets)
        self.history: list[tuple[int, float]] = []

    def sparsity_at(self, step: int) -> float:
        return cubic_sparsity(step, self.initial, self.final, self.begin, self.end)

    def due(self, step: int) -> bool:
        return step == self.end or (self.begin <= step < self.end and (step - self.begin) % self.frequency == 0)

    @torch.no_grad()
    def step(self, step: int) -> float | None:
        """Prune to the scheduled sparsity if ``step`` is a pruning step; returns that sparsity."""
        if not self.due(step):
            return None
        target = self.sparsity_at(step)
        current = masks_of(self.model)
        scores, shapes = {}, {}
        for name in self.names:
            module = self.model.get_submodule(name)
            w = module.weight.detach()  # effective (masked) weight
            w = w.t() if stored_transposed(module) else w  # (out, in, ...)
            shapes[name] = w.shape  # the layout masks are given in
            s = w.abs().float().reshape(w.shape[0], -1)  # (out, in...)
            if name in current:
                s[~current[name].reshape(s.shape)] = -math.inf
            scores[name] = s
        keep = self._masks(scores, target)
        attach(self.model, {n: k.reshape(shapes[n]) for n, k in keep.items()})
        self.history.append((step, target))
        log.info("step %d: pruned to sparsity %.4f", step, target)
        return target

    def _masks(self, scores: dict[str, torch.Tensor], target: float) -> dict[str, torch.Tensor]:
        """Keep-masks (out, in...) at sparsity ``target``; −∞ scores (already pruned) go first."""
        if self.nm is not None:
            n, m = self.nm
            keep_n = m - min(round(target * m), m - n)
            return {name: nm_mask(s, keep_n, m) if keep_n < m else s > -math.inf for name, s in scores.items()}
        if self.scope == Scope.GLOBAL:
            counts = global_counts(list(scores.values()), target)
            return {n: smallest_mask(s, c) for (n, s), c in zip(scores.items(), counts, strict=True)}
        return {n: select_mask(s, target, self.scope) for n, s in scores.items()}
