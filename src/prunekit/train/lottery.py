"""Lottery tickets (Frankle & Carbin 2019): iterative magnitude pruning with reset to θ₀ or rewinding."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import PrunekitError, choice
from ..selection import Scope, global_counts, row_counts, row_smallest_mask, smallest_mask
from ..targets import find_targets, weight_view
from .masks import attach, remove

log = logging.getLogger(__name__)


@dataclass
class Round:
    round: int
    sparsity: float
    accuracy: float
    control_accuracy: float | None = None  # same mask, fresh random initialization
    masks: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)


def prune_remaining(masks: dict[str, torch.Tensor], weights: dict[str, torch.Tensor], fraction: float,
                    scope: Scope = Scope.GLOBAL) -> dict[str, torch.Tensor]:
    """Prune ``fraction`` of the still-kept weights by magnitude (already pruned ones stay pruned).
    Each layer (or, with global scope, the model) prunes exactly its count; row scope spreads a layer's
    count over its rows as evenly as possible."""
    scores = {n: torch.where(masks[n], weights[n].abs().float(), torch.tensor(-1.0)) for n in masks}
    if scope == Scope.GLOBAL:
        kept = sum(int(m.sum()) for m in masks.values())
        total = sum(m.numel() for m in masks.values())
        pruned_now = total - kept + round(fraction * kept)
        counts = global_counts(list(scores.values()), pruned_now / total)
        return {n: smallest_mask(s, c) for (n, s), c in zip(scores.items(), counts, strict=True)}
    out = {}
    for n, s in scores.items():
        k = masks[n].numel() - int(masks[n].sum()) + round(fraction * int(masks[n].sum()))
        out[n] = smallest_mask(s, k) if scope == Scope.LAYER else row_smallest_mask(s, row_counts(k, s.shape[0]))
    return out


def lottery(
    make_model: Callable[[int], nn.Module],
    train: Callable[[nn.Module], None],
    evaluate: Callable[[nn.Module], float],
    rounds: int,
    prune_fraction: float = 0.2,
    scope: Scope = Scope.GLOBAL,
    rewind: Callable[[nn.Module], None] | None = None,
    random_reinit_control: bool = False,
    seed: int = 0,
) -> list[Round]:
    """Iterative magnitude pruning: train, prune ``prune_fraction`` of the remaining weights, reset the
    survivors to θ₀ (or to the weights after ``rewind(model)``, e.g. k training steps), retrain.

    ``make_model(seed)`` builds a fresh model; ``train``/``evaluate`` run on it. Round 0 is dense.
    With ``random_reinit_control`` every round's mask is also trained from a fresh random init.
    """
    if rounds < 1:
        raise PrunekitError(f"rounds must be >= 1, got {rounds}")
    if not 0 < prune_fraction < 1:
        raise PrunekitError(f"prune_fraction must be in (0, 1), got {prune_fraction}")
    scope = choice(Scope, scope, "scope")
    model = make_model(seed)
    if rewind is not None:
        rewind(model)
    start = copy.deepcopy(model.state_dict())  # θ₀, or the rewind point
    names = list(find_targets(model))
    masks = {n: torch.ones_like(weight_view(model.get_submodule(n)), dtype=torch.bool) for n in names}
    history = []
    for r in range(rounds + 1):
        model = make_model(seed)
        model.load_state_dict(start)
        attach(model, masks)
        train(model)
        sparsity = 1 - sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
        result = Round(r, sparsity, evaluate(model), masks={n: m.clone() for n, m in masks.items()})
        if random_reinit_control and r > 0:
            control = attach(make_model(seed + 1000 + r), masks)
            train(control)
            result.control_accuracy = evaluate(control)
        history.append(result)
        log.info("round %d: sparsity %.4f accuracy %.4f control %s", r, sparsity, result.accuracy,
                 result.control_accuracy)
        if r < rounds:
            trained = {n: weight_view(m).detach().clone() for n, m in find_targets(remove(model)).items()}
            masks = prune_remaining(masks, trained, prune_fraction, scope)
    return history

