"""Frozen, validated configuration for one pruning run; saved as JSON in the manifest.

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

from .errors import PrunekitError, choice
from .oneshot.methods import METHODS, Method, Statistics
from .selection import Scope, parse_pattern

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}  # names users give


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


class Sampling(StrEnum):
    AUTO = "auto"            # documents when enough are long enough, else stream
    DOCUMENTS = "documents"  # a random long document, then a random offset (SparseGPT/Wanda)
    STREAM = "stream"        # random offsets into all documents' concatenated tokens


def _setting(default: Any, help: str, flag: str | None = None) -> Any:
    """A config field with the CLI's help text (and its flag name where it differs from the field's)."""
    return field(default=default, metadata={"help": help, "flag": flag})


class QuantMethod(StrEnum):
    RTN = "rtn"    # round to nearest, each group's grid from its own range
    GPTQ = "gptq"  # column by column, each rounding error compensated through H⁻¹ (needs calibration)


class GridFit(StrEnum):
    MINMAX = "minmax"  # each group's range (GPTQ's and the original SparseGPT code's quantizer)
    MSE = "mse"        # the range shrunk to the least squared rounding error (a clipping search; quant/grid.py)


class Order(StrEnum):
    """How quantization composes with pruning; pruned weights stay exactly zero in every order."""

    PRUNE_FIRST = "prune-first"  # prune (any method), then quantize the kept weights with the mask locked
    QUANT_FIRST = "quant-first"  # quantize, then prune on the grid (SparseGPT's updates stay on that fixed grid)
    JOINT = "joint"              # one SparseGPT sweep that prunes and rounds each column as it goes


@dataclass(frozen=True)
class QuantConfig:
    """Weight quantization: ``wbits`` (0: none; 8 and 4, or 3 and 2 for research) per output row, or per
    ``groupsize`` consecutive inputs of a row; asymmetric (a zero point per group) unless ``sym``."""

    wbits: int = _setting(0, "quantize the weights to this many bits (2-8; 0: no quantization)")
    groupsize: int = _setting(0, "inputs per quantization group (0: one grid per output row)")
    sym: bool = _setting(False, "symmetric grids (no zero point) instead of asymmetric")
    quant_method: QuantMethod = _setting(QuantMethod.GPTQ, "rtn (round to nearest) or gptq (Hessian-compensated)")
    act_order: bool | None = _setting(None, "GPTQ: quantize columns in order of decreasing activation energy (H_jj); "
                                            "default: on for GPTQ, except in the joint order's column sweep")
    grid: GridFit | None = _setting(None, "grid range per group: minmax (the group's range) or mse (shrunk to the least "
                                          "squared rounding error; outliers clip); default: mse for GPTQ, except in the "
                                          "joint order's column sweep, minmax otherwise")
    order: Order = _setting(Order.PRUNE_FIRST, "with pruning: prune-first, quant-first or joint (SparseGPT only)")
    uneven_groups: bool = _setting(False, "allow a narrower last group where --groupsize does not divide a layer's "
                                          "input width (otherwise that is an error)")

    def __post_init__(self) -> None:
        if isinstance(self.wbits, bool) or not isinstance(self.wbits, int) or not (self.wbits == 0 or 2 <= self.wbits <= 8):
            raise PrunekitError(f"wbits must be 2 to 8 (or 0: no quantization), got {self.wbits!r}")
        if isinstance(self.groupsize, bool) or not isinstance(self.groupsize, int) or self.groupsize < 0:
            raise PrunekitError(f"groupsize must be an integer >= 0 (0: per output row), got {self.groupsize!r}")
        object.__setattr__(self, "quant_method", choice(QuantMethod, self.quant_method, "quant method"))
        object.__setattr__(self, "order", choice(Order, self.order, "order"))
        # the defaults measured best on protocol P (docs/quantization.md): activation order at g128 and g64; the mse
        # grid in 4 of 4 GPTQ runs (RTN far worse with it, the joint sweep mixed)
        gptq = self.wbits > 0 and self.quant_method == QuantMethod.GPTQ and self.order != Order.JOINT
        if self.act_order is None:
            object.__setattr__(self, "act_order", gptq)
        object.__setattr__(self, "grid", choice(GridFit, self.grid or (GridFit.MSE if gptq else GridFit.MINMAX), "grid"))
        if self.act_order and self.quant_method != QuantMethod.GPTQ:
            raise PrunekitError("act_order is a GPTQ option; use it with --quant-method gptq")

    @property
    def enabled(self) -> bool:
        return self.wbits > 0

    @property
    def search(self) -> bool:
        """Whether grids come from the clipping search (``quant.grid.fit``)."""
        return self.grid == GridFit.MSE

    def group_error(self, name: str, cols: int) -> str | None:
        """Why this layer's width cannot be grouped, or None."""
        if self.enabled and self.groupsize and cols % self.groupsize and not self.uneven_groups:
            return (f"{name}: --groupsize {self.groupsize} does not divide its input width {cols} "
                    "(pass --uneven-groups for a narrower last group)")
        return None

    def dtype_error(self, name: str, dtype: torch.dtype) -> str | None:
        """Why weights of ``dtype`` cannot hold this grid's values, or None. bfloat16 (8 significant bits) keeps
        ``scale · (level − zero)`` distinguishable from its neighbours only up to 128 steps from the zero point;
        an asymmetric 8-bit grid reaches 255, so its weights would land off the grid (and off the kernels)."""
        if self.enabled and dtype == torch.bfloat16 and self.wbits == 8 and not self.sym:
            return (f"{name}: asymmetric 8-bit levels do not survive bfloat16 weights (up to 255 steps from the zero "
                    "point; bfloat16 tells apart 128): pass --sym, or load the model in float32")
        return None


@dataclass(frozen=True)
class PruneConfig:
    """What to prune and how. ``method``: a row of ``oneshot.methods.METHODS`` (score, statistics,
    weight update). ``pattern`` ``N:M`` sets ``nm`` and the sparsity. ``scope`` ``global`` becomes
    layer scope with a global allocation. ``refine=admm`` re-solves each layer's kept weights for its
    mask after the method's own update (``oneshot/admm.py``). ``calib_dtype`` is the dtype of the
    calibration forward passes (autocast); weights, statistics and the solve keep full precision."""

    method: Method = _setting(Method.MAGNITUDE, "score and weight update")
    sparsity: float = _setting(0.5, "fraction of each layer's weights to prune (an N:M pattern sets its own)")
    pattern: str = _setting("unstructured", "unstructured or N:M (2:4, 4:8, ...)")
    scope: Scope | None = _setting(None, "comparison group; global = one threshold over all layers "
                                         "(default: the method's own)")
    allocation: Allocation = _setting(Allocation.UNIFORM, "per-layer sparsity: uniform, global or owl")
    include: tuple[str, ...] = _setting((), "regex on layer names to prune (repeatable)")
    exclude: tuple[str, ...] = _setting((), "regex on layer names to skip (repeatable)")
    min_layer_sparsity: float = _setting(0.0, "lowest sparsity any layer gets")
    max_layer_sparsity: float = _setting(0.999, "highest sparsity any layer gets")
    strict: bool = _setting(False, "error instead of skipping layers N:M cannot tile")
    percdamp: float = _setting(0.01, "Hessian damping, as a fraction of its mean diagonal")
    blocksize: int = _setting(128, "columns per lazy-update block (SparseGPT)")
    owl_m: float = _setting(5.0, "OWL: a score is an outlier above M times its block's mean")
    owl_lambda: float = _setting(0.08, "OWL: block sparsities stay within target ± lambda")
    batch_size: int = _setting(1, "calibration windows per forward pass (block mode)")
    sequential: Sequential = _setting(Sequential.BLOCK, "block: prune a block from its dense statistics, then "
                                      "rerun it (2 passes); sublayer: one pass, each layer pruned before its own matmul")
    refine: Refine = _setting(Refine.NONE, "weight update after the mask: none, or admm (exact masked least squares "
                              "on H; needs calibration)")
    admm_iters: int = _setting(30, "ADMM iterations")
    calib_dtype: CalibDtype = _setting(CalibDtype.AUTO, "dtype of the calibration forward passes (autocast); "
                                       "weights and statistics keep full precision. auto: bfloat16 where the device "
                                       "has native bf16 (AVX512-BF16/AMX/Arm BF16 CPUs, CUDA GPUs), else the model's")
    quant: QuantConfig = field(default_factory=QuantConfig, metadata={"nested": True})
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
            if quant.quant_method != QuantMethod.GPTQ or quant.act_order:
                raise PrunekitError("order 'joint' compensates rounding in SparseGPT's own sweep, in column order: "
                                    "--quant-method rtn and --act-order do not apply")
        if quant.enabled and refine == Refine.ADMM and quant.order != Order.PRUNE_FIRST:
            raise PrunekitError("refine 'admm' re-solves the kept weights off any grid: quantize after it "
                                "(--order prune-first)")
        set_(self, "quant", quant)
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
        """What calibration gathers for this run: the method's own, or XᵀX for ADMM refinement and GPTQ."""
        gptq = self.quant.enabled and self.quant.quant_method == QuantMethod.GPTQ
        return Statistics.XTX if self.refine == Refine.ADMM or gptq else METHODS[self.method].statistics

    @property
    def needs_calibration(self) -> bool:
        return self.statistics != Statistics.NONE or self.allocation == Allocation.OWL

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class CalibConfig:
    """Calibration sample: ``nsamples`` windows of ``seqlen`` tokens from ``data``, seeded."""

    data: str = _setting("c4", "calibration text: c4, wikitext2, a .txt or .jsonl file", flag="calib")
    nsamples: int = _setting(128, "calibration windows")
    seqlen: int = _setting(2048, "calibration window length (tokens)")
    seed: int = _setting(0, "seed of the calibration sample (and of torch)")
    sampling: Sampling = _setting(Sampling.AUTO, "how windows are drawn: auto, documents or stream",
                                  flag="calib-sampling")

    def __post_init__(self) -> None:
        if self.nsamples < 1:
            raise PrunekitError(f"nsamples must be >= 1, got {self.nsamples}")
        if self.seqlen < 2:
            raise PrunekitError(f"seqlen must be >= 2, got {self.seqlen}")
        object.__setattr__(self, "sampling", choice(Sampling, self.sampling, "sampling"))


@dataclass(frozen=True)
class EvalConfig:
    """Perplexity windows: non-overlapping ``seqlen``-token windows, the first ``max_windows`` (None: all),
    ``batch_size`` windows per forward pass."""

    seqlen: int = 2048
    max_windows: int | None = None
    batch_size: int = 1

    def __post_init__(self) -> None:
        if self.seqlen < 2:
            raise PrunekitError(f"the evaluation seqlen must be >= 2 (one token predicts the next), got {self.seqlen}")
        if self.max_windows is not None and self.max_windows < 1:
            raise PrunekitError(f"max_windows must be >= 1 (leave it out for all windows), got {self.max_windows}")
        if self.batch_size < 1:
            raise PrunekitError(f"the evaluation batch size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class FinetuneConfig:
    """Recovery fine-tuning: ``steps`` AdamW steps on ``batch_size`` random windows of ``seqlen`` tokens."""

    steps: int = _setting(dataclasses.MISSING, "optimizer steps")
    seqlen: int = _setting(512, "training window length (tokens)")
    batch_size: int = _setting(4, "windows per step")
    lr: float = _setting(5e-5, "AdamW learning rate")
    seed: int = _setting(0, "seed of the training windows")
    lora_rank: int = _setting(0, "train LoRA adapters of this rank instead (peft); 0: all weights")

    def __post_init__(self) -> None:
        for name, low in (("steps", 1), ("batch_size", 1), ("seqlen", 2), ("lora_rank", 0)):
            if getattr(self, name) < low:
                raise PrunekitError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise PrunekitError(f"the learning rate must be a positive number, got {self.lr}")


@dataclass(frozen=True)
class TaskConfig:
    """Zero-shot tasks (``measure/tasks.py``): shared task names or ``.jsonl`` files, each optionally
    ``name:N`` for its own item count; the first ``limit`` items of the others (or, with ``seed``, a seeded
    random selection of that many), ``batch_size`` continuations per forward pass. ``limits`` holds each
    task's count (None: every item)."""

    names: tuple[str, ...]
    limit: int | None = None
    seed: int | None = None
    batch_size: int = 32
    limits: tuple[int | None, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        names, limits = [], []
        for spec in (n.strip() for n in self.names if n.strip()):
            name, _, count = spec.rpartition(":")
            name, count = (name, int(count)) if name and count.isdigit() else (spec, self.limit)
            names.append(name)
            limits.append(count)
        if not names or len(set(names)) != len(names):
            raise PrunekitError(f"--tasks needs distinct task names, got {self.names!r}")
        if any(n is not None and n < 1 for n in limits):
            raise PrunekitError(f"item counts (--limit, name:N) must be >= 1, got {limits}")
        if self.batch_size < 1:
            raise PrunekitError(f"the task batch size must be >= 1, got {self.batch_size}")
        object.__setattr__(self, "names", tuple(names))
        object.__setattr__(self, "limits", tuple(limits))
