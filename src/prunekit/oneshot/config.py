"""Frozen, validated settings of one pruning run; saved as JSON in the manifest.

Every value is parsed and checked here, once, into typed fields (enums, the parsed N:M pattern). The
CLI builds its ``prune`` flags from these fields (their ``help`` metadata), so a new setting is one
field here.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import torch

from ..errors import PrunekitError, choice
from ..quant.compose import Order
from ..quant.config import QuantConfig
from ..quant.quantizers import QUANTIZERS
from ..selection import Scope, parse_pattern
from ..settings import DTYPES, setting
from .methods import METHODS, Method, Solve, Statistics


class Allocation(StrEnum):
    UNIFORM = "uniform"  # every layer at the target
    GLOBAL = "global"    # one threshold over all layers
    OWL = "owl"          # outlier-weighted: blocks with more |W|·‖X‖ outliers get lower sparsity


class Sequential(StrEnum):
    BLOCK = "block"        # prune a block from its dense statistics, then rerun it (2 passes)
    SUBLAYER = "sublayer"  # one pass, each layer pruned just before its own matmul


class Refine(StrEnum):
    NONE = "none"
    ADMM = "admm"  # re-solve the kept weights for the mask: masked least squares on H, by ADMM


class CalibDtype(StrEnum):
    AUTO = "auto"    # bfloat16 where the device has native bf16 matmuls and the model is float32, else the model's
    MODEL = "model"  # the model's own dtype
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"
    FLOAT32 = "float32"

    @property
    def dtype(self) -> torch.dtype | None:
        return DTYPES.get(self.value)


class Recover(StrEnum):
    NONE = "none"
    BLOCK = "block"  # train each pruned block's kept weights to the dense block's outputs (``reconstruct.py``)


class Stream(StrEnum):
    STUDENT = "student"  # the pruned model's activations: what the block will see
    TEACHER = "teacher"  # the dense model's activations


@dataclass(frozen=True)
class RecoverConfig:
    """Block-wise reconstruction after pruning: Adam for ``recover_epochs`` passes over the calibration windows,
    one step per window batch, on the inputs of ``recover_stream``; target: the dense block's outputs."""

    recover: Recover = setting(Recover.NONE, "none, or block: after pruning each block, train its kept weights so its "
                                             "output matches the dense block's (masks and grids held)")
    recover_epochs: int = setting(2, "block reconstruction: passes over the calibration windows")
    recover_lr: float = setting(1e-3, "block reconstruction: Adam learning rate (docs/recovery: 1e-3 beat 1e-4 and 1e-2)")
    recover_stream: Stream = setting(Stream.STUDENT, "block reconstruction inputs: student (the pruned model's "
                                                     "activations) or teacher (the dense model's)")

    def __post_init__(self) -> None:
        object.__setattr__(self, "recover", choice(Recover, self.recover, "recover"))
        object.__setattr__(self, "recover_stream", choice(Stream, self.recover_stream, "recover stream"))
        if isinstance(self.recover_epochs, bool) or not isinstance(self.recover_epochs, int) or self.recover_epochs < 1:
            raise PrunekitError(f"recover_epochs must be an integer >= 1, got {self.recover_epochs!r}")
        if not (isinstance(self.recover_lr, (int, float)) and math.isfinite(self.recover_lr) and self.recover_lr > 0):
            raise PrunekitError(f"recover_lr must be a positive number, got {self.recover_lr!r}")

    @property
    def enabled(self) -> bool:
        return self.recover != Recover.NONE


@dataclass(frozen=True)
class PruneConfig:
    """What to prune and how. ``method``: a row of ``oneshot.methods.METHODS`` (score, statistics,
    weight update). ``pattern`` ``N:M`` sets ``nm`` and the sparsity. ``scope`` ``global`` becomes
    layer scope with a global allocation. ``refine=admm`` re-solves each layer's kept weights for its
    mask after the method's own update (``oneshot/admm.py``). ``calib_dtype`` is the dtype of the
    calibration forward passes (autocast); weights, statistics and the solve keep full precision."""

    method: Method = setting(Method.MAGNITUDE, "score and weight update")
    sparsity: float = setting(0.5, "fraction of each layer's weights to prune (an N:M pattern sets its own)")
    pattern: str = setting("unstructured", "unstructured or N:M (2:4, 4:8, ...)")
    scope: Scope | None = setting(None, "comparison group; global = one threshold over all layers "
                                         "(default: the method's own)")
    allocation: Allocation = setting(Allocation.UNIFORM, "per-layer sparsity: uniform, global or owl")
    include: tuple[str, ...] = setting((), "regex on layer names to prune (repeatable)")
    exclude: tuple[str, ...] = setting((), "regex on layer names to skip (repeatable)")
    min_layer_sparsity: float = setting(0.0, "lowest sparsity any layer gets")
    max_layer_sparsity: float = setting(0.999, "highest sparsity any layer gets")
    strict: bool = setting(False, "error instead of skipping layers N:M cannot tile")
    percdamp: float = setting(0.01, "Hessian damping, as a fraction of its mean diagonal")
    blocksize: int = setting(128, "columns per lazy-update block (SparseGPT)")
    owl_m: float = setting(5.0, "OWL: a score is an outlier above M times its block's mean")
    owl_lambda: float = setting(0.08, "OWL: block sparsities stay within target ± lambda")
    batch_size: int = setting(1, "calibration windows per forward pass (block mode)")
    sequential: Sequential = setting(Sequential.BLOCK, "block: prune a block from its dense statistics, then "
                                      "rerun it (2 passes); sublayer: one pass, each layer pruned before its own matmul")
    refine: Refine = setting(Refine.NONE, "weight update after the mask: none, or admm (exact masked least squares "
                              "on H; needs calibration)")
    admm_iters: int = setting(30, "ADMM iterations")
    calib_dtype: CalibDtype = setting(CalibDtype.AUTO, "dtype of the calibration forward passes (autocast); "
                                       "weights and statistics keep full precision. auto: bfloat16 where the device "
                                       "has native bf16 (AVX512-BF16/AMX/Arm BF16 CPUs, CUDA GPUs), else the model's")
    quant: QuantConfig = field(default_factory=QuantConfig, metadata={"nested": True})
    recovery: RecoverConfig = field(default_factory=RecoverConfig, metadata={"nested": True})
    nm: tuple[int, int] | None = field(init=False, default=None)  # (N, M) parsed from ``pattern``

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        method = choice(Method, self.method, "method")
        row = METHODS[method]
        if not isinstance(self.sparsity, (int, float)) or not 0.0 <= self.sparsity < 1.0:
            raise PrunekitError(f"sparsity must be in [0, 1), got {self.sparsity!r}")
        nm = parse_pattern(self.pattern)
        scope = choice(Scope, self.scope or row.default_scope, "scope")
        allocation = choice(Allocation, self.allocation, "allocation")
        if scope == Scope.GLOBAL:
            if allocation not in (Allocation.UNIFORM, Allocation.GLOBAL):
                raise PrunekitError("scope 'global' already sets the allocation; drop --allocation")
            scope, allocation = Scope.LAYER, Allocation.GLOBAL
        if nm is not None:
            n, m = nm
            if allocation != Allocation.UNIFORM:
                raise PrunekitError(f"allocation {allocation!r} does not apply to the N:M pattern {self.pattern}")
            if row.column_blocks and self.blocksize % m:
                raise PrunekitError(f"blocksize {self.blocksize} must be a multiple of M={m}")
            set_(self, "sparsity", 1.0 - n / m)
        if not 0.0 <= self.min_layer_sparsity <= self.max_layer_sparsity < 1.0:
            raise PrunekitError("need 0 <= min_layer_sparsity <= max_layer_sparsity < 1")
        if not self.min_layer_sparsity <= self.sparsity <= self.max_layer_sparsity:  # N:M: its own sparsity
            raise PrunekitError(f"sparsity {self.sparsity:g} lies outside [min_layer_sparsity, max_layer_sparsity] = "
                                f"[{self.min_layer_sparsity:g}, {self.max_layer_sparsity:g}]: no allocation can meet it")
        for pattern in (*self.include, *self.exclude):
            try:
                re.compile(pattern)
            except re.error as e:
                raise PrunekitError(f"--include/--exclude {pattern!r} is not a regular expression: {e}") from None
        if self.percdamp <= 0 or self.blocksize < 1 or self.batch_size < 1:
            raise PrunekitError("percdamp must be > 0, blocksize and batch_size >= 1")
        refine = choice(Refine, self.refine, "refine")
        if refine == Refine.ADMM and row.statistics == Statistics.NONE:
            calibrated = ", ".join(m for m, r in METHODS.items() if r.statistics != Statistics.NONE)
            raise PrunekitError(f"refine 'admm' needs calibration statistics: use it with {calibrated}")
        if self.admm_iters < 1:
            raise PrunekitError(f"admm_iters must be >= 1, got {self.admm_iters}")
        if self.owl_m <= 0 or not 0 <= self.owl_lambda < 1:
            raise PrunekitError("owl_m must be > 0 and owl_lambda in [0, 1)")
        quant = self.quant if isinstance(self.quant, QuantConfig) else QuantConfig(**self.quant)
        if quant.enabled and quant.order == Order.JOINT:
            if row.update is None or row.statistics != Statistics.XTX:
                raise PrunekitError(f"order 'joint' rounds inside SparseGPT's sweep; method {method!r} has none "
                                    "(use --method sparsegpt, or --order prune-first)")
            if not QUANTIZERS[quant.quant_method].joint or quant.act_order:
                joint = ", ".join(q for q, r in QUANTIZERS.items() if r.joint)
                raise PrunekitError("order 'joint' compensates rounding in SparseGPT's own sweep, in column order: "
                                    f"it takes --quant-method {joint}, without --act-order")
        if quant.enabled and refine == Refine.ADMM and quant.order != Order.PRUNE_FIRST:
            raise PrunekitError("refine 'admm' re-solves the kept weights off any grid: quantize after it "
                                "(--order prune-first)")
        recovery = self.recovery if isinstance(self.recovery, RecoverConfig) else RecoverConfig(**self.recovery)
        if recovery.enabled and self.sequential == Sequential.SUBLAYER:
            raise PrunekitError("--recover block trains each block after pruning it and reruns it: use --sequential "
                                "block")
        set_(self, "quant", quant)
        set_(self, "recovery", recovery)
        set_(self, "method", method)
        set_(self, "scope", scope)
        set_(self, "allocation", allocation)
        set_(self, "refine", refine)
        set_(self, "sequential", choice(Sequential, self.sequential, "sequential mode"))
        set_(self, "calib_dtype", choice(CalibDtype, self.calib_dtype, "calib_dtype"))
        set_(self, "include", tuple(self.include))
        set_(self, "exclude", tuple(self.exclude))
        set_(self, "nm", nm)

    @property
    def statistics(self) -> Statistics:
        """What calibration gathers for this run: the method's own, or XᵀX for ADMM refinement and a quantizer
        that needs H (GPTQ)."""
        hessian = self.refine == Refine.ADMM or self.quant.needs_hessian
        return Statistics.XTX if hessian else METHODS[self.method].statistics

    @property
    def solve(self) -> Solve:
        """The settings a method's weight update takes."""
        return Solve(self.scope, self.nm, self.blocksize, self.percdamp)

    @property
    def needs_calibration(self) -> bool:
        return self.statistics != Statistics.NONE or self.allocation == Allocation.OWL or self.recovery.enabled

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
