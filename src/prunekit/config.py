"""Frozen, validated configuration for one pruning run; saved as JSON in the manifest."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from .errors import PrunekitError
from .selection import parse_pattern

METHODS = ("magnitude", "wanda", "sparsegpt")
SCOPES = ("layer", "row")
ALLOCATIONS = ("uniform", "global", "owl")
CALIB_DTYPES = ("model", "bfloat16", "float16", "float32")
REFINES = ("none", "admm")  # weight update after the mask is chosen (admm: exact masked least squares)
# Default comparison group per method, as in the original papers' code.
DEFAULT_SCOPE = {"magnitude": "layer", "wanda": "row", "sparsegpt": "layer"}


@dataclass(frozen=True)
class PruneConfig:
    """What to prune and how.

    ``method`` is a preset of score and weight update: magnitude (|W|), wanda (|W|·‖X‖),
    sparsegpt (OBS updates from H = 2XXᵀ). ``allocation`` sets per-layer sparsity: ``uniform``,
    ``global`` (one threshold over all targets) or ``owl``. ``scope`` is the comparison group
    within a layer (``row`` or ``layer``; ``global`` is accepted as allocation=global + scope=layer).
    ``pattern`` is ``unstructured`` or ``N:M`` (keep N of every M consecutive inputs).
    ``sequential``: ``block`` prunes all layers of a block from the block's dense statistics (as the
    original Wanda/SparseGPT code), then reruns it; ``sublayer`` runs each block once on all
    calibration data in one batch and prunes each layer just before its own matmul, so later layers
    see pruned earlier ones (one forward pass per block instead of two; more activation memory).
    ``refine="admm"`` re-solves the kept weights of each layer for its mask by ADMM on H (``admm.py``),
    after any method's mask and update.
    ``calib_dtype``: the dtype the calibration forward passes run in (autocast; activations stored in
    it). ``model`` keeps the model's own. Weights, statistics and the solve stay in the model's dtype
    and float32; ``bfloat16`` roughly halves the forward time and activation memory on CPUs with bf16
    dot products, at the cost of bf16 rounding in the activations (as the original code's fp16 runs).
    """

    method: str = "magnitude"
    sparsity: float = 0.5
    pattern: str = "unstructured"
    scope: str | None = None
    allocation: str = "uniform"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    min_layer_sparsity: float = 0.0
    max_layer_sparsity: float = 0.999
    strict: bool = False
    percdamp: float = 0.01
    blocksize: int = 128
    owl_m: float = 5.0
    owl_lambda: float = 0.08
    batch_size: int = 1
    sequential: str = "block"
    refine: str = "none"
    admm_iters: int = 30
    calib_dtype: str = "model"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.method not in METHODS:
            raise PrunekitError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if not isinstance(self.sparsity, (int, float)) or not 0.0 <= self.sparsity < 1.0:
            raise PrunekitError(f"sparsity must be in [0, 1), got {self.sparsity!r}")
        nm = parse_pattern(self.pattern)
        scope = self.scope or DEFAULT_SCOPE[self.method]
        allocation = self.allocation
        if scope == "global":
            if allocation not in ("uniform", "global"):
                raise PrunekitError("scope 'global' already sets the allocation; drop --allocation")
            scope, allocation = "layer", "global"
        if scope not in SCOPES:
            raise PrunekitError(f"unknown scope {scope!r}; choose global, layer or row")
        if allocation not in ALLOCATIONS:
            raise PrunekitError(f"unknown allocation {allocation!r}; choose one of {', '.join(ALLOCATIONS)}")
        if nm is not None:
            n, m = nm
            if allocation != "uniform":
                raise PrunekitError(f"allocation {allocation!r} does not apply to the N:M pattern {self.pattern}")
            if self.method == "sparsegpt" and self.blocksize % m:
                raise PrunekitError(f"blocksize {self.blocksize} must be a multiple of M={m}")
            set_(self, "sparsity", 1.0 - n / m)
        if not 0.0 <= self.min_layer_sparsity <= self.max_layer_sparsity < 1.0:
            raise PrunekitError("need 0 <= min_layer_sparsity <= max_layer_sparsity < 1")
        if self.percdamp <= 0 or self.blocksize < 1 or self.batch_size < 1:
            raise PrunekitError("percdamp must be > 0, blocksize and batch_size >= 1")
        if self.sequential not in ("block", "sublayer"):
            raise PrunekitError(f"sequential must be 'block' or 'sublayer', got {self.sequential!r}")
        if self.calib_dtype not in CALIB_DTYPES:
            raise PrunekitError(f"calib_dtype must be one of {', '.join(CALIB_DTYPES)}, got {self.calib_dtype!r}")
        if self.refine not in REFINES:
            raise PrunekitError(f"refine must be one of {', '.join(REFINES)}, got {self.refine!r}")
        if self.refine == "admm" and self.method == "magnitude":
            raise PrunekitError("refine 'admm' needs calibration statistics: use it with wanda or sparsegpt")
        if self.admm_iters < 1:
            raise PrunekitError(f"admm_iters must be >= 1, got {self.admm_iters}")
        if self.owl_m <= 0 or not 0 <= self.owl_lambda < 1:
            raise PrunekitError("owl_m must be > 0 and owl_lambda in [0, 1)")
        set_(self, "scope", scope)
        set_(self, "allocation", allocation)
        set_(self, "include", tuple(self.include))
        set_(self, "exclude", tuple(self.exclude))

    @property
    def nm(self) -> tuple[int, int] | None:
        return parse_pattern(self.pattern)

    @property
    def needs_calibration(self) -> bool:
        return self.method != "magnitude" or self.allocation == "owl"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruneConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise PrunekitError(f"unknown config keys: {', '.join(sorted(unknown))}")
        return cls(**data)


@dataclass(frozen=True)
class CalibConfig:
    """Calibration sample: ``nsamples`` windows of ``seqlen`` tokens from ``data``, seeded."""

    data: str = "c4"
    nsamples: int = 128
    seqlen: int = 2048
    seed: int = 0
    sampling: str = "auto"

    def __post_init__(self) -> None:
        if self.nsamples < 1:
            raise PrunekitError(f"nsamples must be >= 1, got {self.nsamples}")
        if self.seqlen < 2:
            raise PrunekitError(f"seqlen must be >= 2, got {self.seqlen}")
        if self.sampling not in ("auto", "documents", "stream"):
            raise PrunekitError("sampling must be auto, documents or stream")
