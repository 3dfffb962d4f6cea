"""Swap a model's linear layers for ``SparseLinear`` where measuring shows it is faster.

For each layer the candidates (dense ``nn.Linear``, the compiled dense ``gemv``, every sparse layout the
layer's zeros allow and, for a layer on a quantization grid, the quantized layouts) are timed side by side
at batch 1 (decode) on copies of that layer's own weight rotated past the CPU cache; the fastest wins, and
a kernel layout must beat dense by ``margin``, be no larger than the dense weight (``gemv`` is its size)
and keep prefill-sized batches within ``prefill_floor`` of dense to be taken. Layers that share shape,
dtype, sparsity (to 5%) and grid share one measurement.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import PrunekitError
from ..native import extension
from ..quant.grid import LayerGrid
from ..selection import is_valid_nm
from ..targets import find_targets
from ..timing import alternate, copies_past_cache
from . import quant_pack
from .gemv_linear import KERNEL_DTYPES, GemvLinear
from .layouts import COMPILED, DENSE, FLOAT_LAYOUTS, GEMV, LAYOUTS
from .sparse_linear import SparseLinear

HEAD_ROWS = 16384  # the output head is timed on this many rows: a 128k-token head would be copied many times over

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerChoice:
    name: str
    shape: tuple[int, int]
    sparsity: float
    layout: str                     # "dense" (DENSE) or a row of ``layouts.LAYOUTS``
    seconds: dict[str, float]       # median seconds per batch-1 call, per candidate
    prefill_seconds: dict[str, float]  # the same at the prefill batch
    dense_bytes: int
    stored_bytes: int

    def to_dict(self) -> dict:
        return asdict(self)


def dense_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """An ``nn.Linear`` around these very tensors (no copy, no initialisation)."""
    linear = nn.utils.skip_init(nn.Linear, weight.shape[1], weight.shape[0], bias=False, device="meta")
    linear.weight = nn.Parameter(weight, requires_grad=False)
    linear.bias = None if bias is None else nn.Parameter(bias.to(weight.dtype), requires_grad=False)
    return linear


def measure_layer(weight: torch.Tensor, bias: torch.Tensor | None, layouts: tuple[str, ...] = FLOAT_LAYOUTS,
                  reps: int = 20, batches: tuple[int, ...] = (1,), grid: LayerGrid | None = None
                  ) -> dict[int, dict[str, float]]:
    """Per batch size: median seconds of one call of ``dense`` (an ``nn.Linear``) and of each layout
    (a ``SparseLinear``; the quantized ones on ``grid``): the modules a model calls, so both pay the same
    module-call overhead. The weights are rotated past the CPU cache (as in a real forward pass, where no
    layer stays cached); the copies and packed layouts are built once for all batch sizes."""
    n = copies_past_cache(weight.numel() * weight.element_size())
    modules = {DENSE: [dense_linear(weight.clone(), bias) for _ in range(n)]}
    first = {layout: SparseLinear(weight, bias, layout, grid) for layout in layouts}  # packed once, then copied
    modules |= {layout: [first[layout]] + [_copy(first[layout]) for _ in range(n - 1)] for layout in layouts}
    out = {}
    with torch.inference_mode():
        for batch in batches:
            x = torch.randn(batch, weight.shape[1], dtype=weight.dtype)
            out[batch] = alternate({k: (lambda i, ms=ms, x=x: ms[i % n](x)) for k, ms in modules.items()}, reps=reps)
    return out


def _copy(layer: SparseLinear) -> SparseLinear:
    """The same layer over its own copy of the weight's buffers (so a rotation reads distinct memory)."""
    twin = copy.copy(layer)
    twin._buffers = {k: None if v is None else v.clone() for k, v in layer._buffers.items()}
    twin._verify()
    return twin


def pick(seconds: dict[str, float], margin: float, stored: dict[str, int] | None = None, dense_bytes: int = 0,
         prefill: dict[str, float] | None = None, prefill_floor: float = 0.0) -> str:
    """The fastest candidate at batch 1; a sparse one only if it beats dense by ``margin``, takes no
    more memory than the dense weight (given ``stored`` bytes per layout) and, given ``prefill``
    timings, keeps at least ``prefill_floor`` of dense speed at the prefill batch. Between sparse
    layouts, a bigger one must also beat a smaller one by ``margin``: one layer timed alone does not
    see the cache and memory traffic its extra bytes cost the rest of the model."""
    def ok(k: str) -> bool:
        small = stored is None or stored[k] <= dense_bytes or not LAYOUTS[k].sparse  # a dense one: those bytes + a header
        return small and (prefill is None or prefill[DENSE] >= prefill_floor * prefill[k])

    eligible = {k: t for k, t in seconds.items() if k == DENSE or ok(k)}
    best = min(eligible, key=eligible.get)
    if best != DENSE and stored is not None:
        best = min((k for k in eligible if k != DENSE and seconds[k] <= margin * seconds[best]), key=stored.get)
    return best if best != DENSE and seconds[DENSE] >= margin * seconds[best] else DENSE


def layout_bytes(weight: torch.Tensor, layouts: tuple[str, ...], grid: LayerGrid | None = None) -> dict[str, int]:
    return {k: SparseLinear(weight, None, k, grid).weight_bytes() for k in layouts}


def candidates(weight: torch.Tensor, sparsity: float, layouts: tuple[str, ...], min_sparsity: float,
               grid: LayerGrid | None) -> tuple[str, ...]:
    """The kernel layouts worth timing for this weight: the dense ones always, the sparse ones from
    ``min_sparsity`` zeros on (``qnm`` only where the zeros are 2:4), the quantized ones only on a grid
    the kernel runs (4 or 8 bits, groups a multiple of 64 columns)."""
    quantized = (grid is not None and grid.bits in (4, 8) and grid.groupsize % quant_pack.BLOCK == 0
                 and torch.equal(grid.apply(weight.float()).to(weight.dtype), weight))
    def fits(k: str) -> bool:
        row = LAYOUTS[k]
        if row.quantized and not quantized or row.sparse and sparsity < min_sparsity:
            return False
        return row.pattern is None or weight.shape[1] % row.pattern[1] == 0 and is_valid_nm(weight != 0, *row.pattern)

    return tuple(k for k in layouts if fits(k))


def sparsify(model: nn.Module, layout: str = "auto", layouts: tuple[str, ...] = tuple(LAYOUTS),
             min_sparsity: float = 0.05, margin: float = 1.03, reps: int = 20, prefill_batch: int = 128,
             prefill_floor: float = 0.8, include: tuple[str, ...] = (), exclude: tuple[str, ...] = (),
             grids: Mapping[str, LayerGrid] | None = None, head: bool = True) -> list[LayerChoice]:
    """Replace (in place) block ``nn.Linear`` layers by ``SparseLinear``: ``layout="auto"`` measures and
    picks per layer among ``candidates`` (see ``pick``: decode speed first, prefill at ``prefill_batch``
    rows kept above ``prefill_floor`` of dense), a named layout forces it on every layer it fits (sparse
    layouts from ``min_sparsity`` zeros on, quantized ones on layers with a grid in ``grids``). With ``head``,
    the output head (``get_output_embeddings()``) runs on the compiled dense GEMV over its own weight
    (``GemvLinear``: a tied head stays tied) where ``gemv`` is among the layouts and, under auto, measures faster."""
    if layout != "auto" and layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose auto or one of {tuple(LAYOUTS)}")
    if any(k in COMPILED for k in (layout, *layouts)) and not extension.available():
        layouts = tuple(k for k in layouts if k not in COMPILED)  # stock torch CSR still works
        if layout in COMPILED:
            raise PrunekitError(f"layout {layout} runs on prunekit's compiled kernel, which could not be built here "
                                "(the warning above says why)")
        if not layouts:
            log.warning("no compiled kernel: layers stay dense")
            return []
    grids = grids or {}
    layers = {name: m for name, m in find_targets(model, include, exclude).items()
              if isinstance(m, nn.Linear) and m.weight.device.type == "cpu"}
    decided: dict[tuple, tuple[str, dict[str, float], dict[str, float]]] = {}
    choices = []
    for name, linear in tqdm(layers.items(), desc="choosing layouts", disable=len(layers) < 8):
        w = linear.weight.data
        sparsity = float((w == 0).sum()) / w.numel()
        grid = grids.get(name)
        options = candidates(w, sparsity, (layout,) if layout != "auto" else layouts, min_sparsity, grid)
        if not options:
            continue
        bias = linear.bias.data if linear.bias is not None else None
        if layout != "auto":
            chosen, seconds, prefill = layout, {}, {}
        else:
            key = (tuple(w.shape), w.dtype, bias is not None, round(sparsity * 20), options,
                   None if grid is None else (grid.bits, grid.groupsize))
            if key not in decided:
                timed = measure_layer(w, bias, options, reps, (1, prefill_batch), grid)
                seconds, prefill = timed[1], timed[prefill_batch]
                best = pick(seconds, margin, layout_bytes(w, options, grid), w.numel() * w.element_size(), prefill,
                            prefill_floor)
                decided[key] = (best, seconds, prefill)
            chosen, seconds, prefill = decided[key]
        stored = w.numel() * w.element_size()
        if chosen != DENSE:
            sparse = SparseLinear.from_linear(linear, chosen, grid)
            stored = sparse.weight_bytes()
            model.set_submodule(name, sparse)
        choices.append(LayerChoice(name, tuple(w.shape), round(sparsity, 4), chosen, seconds, prefill,
                                   w.numel() * w.element_size(), stored))
    if head and GEMV in ((layout,) if layout != "auto" else layouts):
        choice = _swap_head(model, layout == "auto", margin, reps, prefill_batch, prefill_floor)
        choices += [choice] if choice else []
    if layout != "auto" and not any(c.layout == layout for c in choices):  # forced, and nowhere taken: say so
        row = LAYOUTS[layout]
        needs = [f"at least {min_sparsity:.0%} zeros"] if row.sparse else []
        needs += [f"zeros in a {row.pattern[0]}:{row.pattern[1]} pattern"] if row.pattern else []
        needs += ["a 4- or 8-bit quantization grid with groups of a multiple of 64 columns"] if row.quantized else []
        raise PrunekitError(f"layout {layout} fits no layer of this model ({' and '.join(needs) or 'a CPU linear'} "
                            "needed); nothing was changed")
    log.info("sparsify: %d of %d layers swapped", sum(c.layout != DENSE for c in choices), len(choices))
    return choices


def _swap_head(model: nn.Module, measure: bool, margin: float, reps: int, prefill_batch: int,
               prefill_floor: float) -> LayerChoice | None:
    """The output head on ``GemvLinear`` (measured against ``nn.Linear`` first when ``measure``): its choice,
    or None when the model has no CPU ``nn.Linear`` head in a dtype the kernel reads."""
    get = getattr(model, "get_output_embeddings", None)
    linear = get() if callable(get) else None
    if type(linear) is not nn.Linear or linear.weight.device.type != "cpu" or linear.weight.dtype not in KERNEL_DTYPES:
        return None
    name = next(n for n, m in model.named_modules() if m is linear)
    w = linear.weight.data
    bias = linear.bias.data if linear.bias is not None else None
    chosen, seconds, prefill = GEMV, {}, {}
    if measure:  # gemv's packed copy runs the very kernel GemvLinear calls; on HEAD_ROWS rows, as each row costs alike
        rows = slice(0, HEAD_ROWS)
        timed = measure_layer(w[rows], None if bias is None else bias[rows], (GEMV,), reps, (1, prefill_batch))
        seconds, prefill = timed[1], timed[prefill_batch]
        chosen = pick(seconds, margin, None, 0, prefill, prefill_floor)
    if chosen == GEMV:
        model.set_submodule(name, GemvLinear.from_linear(linear))
    size = w.numel() * w.element_size()
    return LayerChoice(name, tuple(w.shape), round(float((w == 0).sum()) / w.numel(), 4), chosen, seconds, prefill,
                       size, size)
