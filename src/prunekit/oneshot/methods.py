"""The one-shot methods, one row each: what calibration must gather, the comparison group, the score
and the weight update. A new method is one row here plus its math function; nothing else compares
method names."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import NamedTuple

import torch

from ..quant.grid import GroupQuantizer
from ..selection import Scope
from .scores import magnitude_scores, wanda_scores
from .sparsegpt import sparsegpt_prune
from .stats import InputStats


class Method(StrEnum):
    MAGNITUDE = "magnitude"
    WANDA = "wanda"
    SPARSEGPT = "sparsegpt"


class Statistics(StrEnum):
    """What the calibration pass accumulates per layer input (``stats.InputStats``)."""

    NONE = "none"    # the weights alone: no calibration pass
    NORMS = "norms"  # Σx² per input, for ‖X_j‖
    XTX = "xtx"      # XᵀX, for the Hessian H = 2XᵀX/n (its diagonal gives Σx² too)


class Solve(NamedTuple):
    """What a weight update takes from the run's settings, besides the layer's own weight and statistics."""

    scope: Scope
    nm: tuple[int, int] | None
    blocksize: int
    percdamp: float


Score = Callable[[torch.Tensor, InputStats | None], torch.Tensor]  # (weight (rows, cols), stats) -> scores
# (weight, stats, sparsity, settings, layer name, quantizer) -> (new weight, keep mask, damping escalations);
# with a quantizer, kept weights are rounded onto its grid as the update goes
Update = Callable[[torch.Tensor, InputStats, float, Solve, str, GroupQuantizer | None],
                  tuple[torch.Tensor, torch.Tensor, int]]


@dataclass(frozen=True)
class MethodRow:
    statistics: Statistics
    default_scope: Scope  # as in the method's original code
    score: Score | None   # None: the update chooses the mask itself, as it goes
    update: Update | None  # None: kept weights stay as they are
    column_blocks: bool = False  # the update walks columns in blocks of ``blocksize``, which N:M groups must not straddle


def _magnitude(weight: torch.Tensor, stats: InputStats | None) -> torch.Tensor:
    return magnitude_scores(weight)


def _wanda(weight: torch.Tensor, stats: InputStats | None) -> torch.Tensor:
    return wanda_scores(weight, stats.norms_sq)


def _sparsegpt(weight: torch.Tensor, stats: InputStats, sparsity: float, solve: Solve,
               name: str, quantizer: GroupQuantizer | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """OBS updates from H, the mask chosen per column block by w²/[H⁻¹]²_jj (``sparsegpt.py``)."""
    return sparsegpt_prune(weight, stats.hessian, sparsity, solve.scope, solve.nm, solve.blocksize, solve.percdamp,
                           name, quantizer)


METHODS: Mapping[Method, MethodRow] = MappingProxyType({
    Method.MAGNITUDE: MethodRow(Statistics.NONE, Scope.LAYER, score=_magnitude, update=None),
    Method.WANDA: MethodRow(Statistics.NORMS, Scope.ROW, score=_wanda, update=None),
    Method.SPARSEGPT: MethodRow(Statistics.XTX, Scope.LAYER, score=None, update=_sparsegpt, column_blocks=True),
})
