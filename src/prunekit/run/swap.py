"""Swap a pruned model's linear layers for ``SparseLinear`` where measuring shows it is faster.

For each layer the candidates (dense and every sparse layout) are timed side by side at batch 1
(decode) on copies of that layer's own weight rotated past the CPU cache; the fastest wins, and a
sparse layout must beat dense by ``margin``, be no larger than the dense weight and keep prefill-sized
batches within ``prefill_floor`` of dense to be taken. Layers that share shape, dtype and sparsity
(to 5%) share one measurement.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ..targets import find_targets
from ..timing import alternate, copies_past_cache
from . import extension, kernel
from .sparse_linear import LAYOUTS, SparseLinear

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerChoice:
    name: str
    shape: tuple[int, int]
    sparsity: float
    layout: str                     # "dense" or one of LAYOUTS
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


def measure_layer(weight: torch.Tensor, bias: torch.Tensor | None, layouts: tuple[str, ...] = LAYOUTS,
                  reps: int = 20, batches: tuple[int, ...] = (1,)) -> dict[int, dict[str, float]]:
    """Per batch size: median seconds of one call of ``dense`` (an ``nn.Linear``) and of each layout
    (a ``SparseLinear``): the modules a model calls, so both pay the same module-call overhead. The
    weights are rotated past the CPU cache (as in a real forward pass, where no layer stays cached);
    the copies and packed layouts are built once for all batch sizes."""
    n = copies_past_cache(weight.numel() * weight.element_size())
    modules = {"dense": [dense_linear(weight.clone(), bias) for _ in range(n)]}
    modules |= {layout: [SparseLinear(m.weight, bias, layout) for m in modules["dense"]] for layout in layouts}
    out = {}
    with torch.inference_mode():
        for batch in batches:
            x = torch.randn(batch, weight.shape[1], dtype=weight.dtype)
            out[batch] = alternate({k: (lambda i, ms=ms, x=x: ms[i % n](x)) for k, ms in modules.items()}, reps=reps)
    return out


def pick(seconds: dict[str, float], margin: float, stored: dict[str, int] | None = None, dense_bytes: int = 0,
         prefill: dict[str, float] | None = None, prefill_floor: float = 0.0) -> str:
    """The fastest candidate at batch 1; a sparse one only if it beats dense by ``margin``, takes no
    more memory than the dense weight (given ``stored`` bytes per layout) and, given ``prefill``
    timings, keeps at least ``prefill_floor`` of dense speed at the prefill batch. Between sparse
    layouts, a bigger one must also beat a smaller one by ``margin``: one layer timed alone does not
    see the cache and memory traffic its extra bytes cost the rest of the model."""
    def ok(k: str) -> bool:
        small = stored is None or stored[k] <= dense_bytes
        return small and (prefill is None or prefill["dense"] >= prefill_floor * prefill[k])

    eligible = {k: t for k, t in seconds.items() if k == "dense" or ok(k)}
    best = min(eligible, key=eligible.get)
    if best != "dense" and stored is not None:
        best = min((k for k in eligible if k != "dense" and seconds[k] <= margin * seconds[best]), key=stored.get)
    return best if best != "dense" and seconds["dense"] >= margin * seconds[best] else "dense"


def layout_bytes(weight: torch.Tensor, layouts: tuple[str, ...]) -> dict[str, int]:
    return {k: SparseLinear(weight, None, k).weight_bytes() for k in layouts}


def sparsify(model: nn.Module, layout: str = "auto", layouts: tuple[str, ...] = LAYOUTS, min_sparsity: float = 0.05,
             margin: float = 1.03, reps: int = 20, prefill_batch: int = 128, prefill_floor: float = 0.8,
             include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> list[LayerChoice]:
    """Replace (in place) each block ``nn.Linear`` with at least ``min_sparsity`` zeros by a
    ``SparseLinear``: ``layout="auto"`` measures and picks per layer (see ``pick``: decode speed
    first, prefill at ``prefill_batch`` rows kept above ``prefill_floor`` of dense), a named layout
    forces it."""
    if layout != "auto" and layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose auto or one of {LAYOUTS}")
    if any(k in kernel.KINDS for k in (layout, *layouts)) and not extension.available():
        layouts = tuple(k for k in layouts if k not in kernel.KINDS)  # stock torch CSR still works
        if layout in kernel.KINDS or not layouts:
            log.warning("no compiled sparse kernel: layers stay dense")
            return []
    layers = {name: m for name, m in find_targets(model, include, exclude).items()
              if isinstance(m, nn.Linear) and m.weight.device.type == "cpu"}
    decided: dict[tuple, tuple[str, dict[str, float], dict[str, float]]] = {}
    choices = []
    for name, linear in tqdm(layers.items(), desc="choosing sparse layouts", disable=len(layers) < 8):
        w = linear.weight.data
        sparsity = float((w == 0).sum()) / w.numel()
        if sparsity < min_sparsity:
            continue
        bias = linear.bias.data if linear.bias is not None else None
        if layout != "auto":
            chosen, seconds, prefill = layout, {}, {}
        else:
            key = (tuple(w.shape), w.dtype, bias is not None, round(sparsity * 20))
            if key not in decided:
                timed = measure_layer(w, bias, layouts, reps, (1, prefill_batch))
                seconds, prefill = timed[1], timed[prefill_batch]
                best = pick(seconds, margin, layout_bytes(w, layouts), w.numel() * w.element_size(), prefill, prefill_floor)
                decided[key] = (best, seconds, prefill)
            chosen, seconds, prefill = decided[key]
        stored = w.numel() * w.element_size()
        if chosen != "dense":
            sparse = SparseLinear.from_linear(linear, chosen)
            stored = sparse.weight_bytes()
            model.set_submodule(name, sparse)
        choices.append(LayerChoice(name, tuple(w.shape), round(sparsity, 4), chosen, seconds, prefill,
                                   w.numel() * w.element_size(), stored))
    log.info("sparsify: %d of %d layers sparse", sum(c.layout != "dense" for c in choices), len(choices))
    return choices
