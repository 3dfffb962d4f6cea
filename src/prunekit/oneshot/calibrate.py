"""Sequential layer-wise calibration: the one place that hooks, runs and walks the model.

The inputs of the first block are captured with every positional and keyword argument the
architecture passes (attention mask, position ids, rotary embeddings, ...); then each block is run on
them with hooks that feed the statistics, and run again after pruning so the next block sees the
outputs of the pruned one.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..targets import ExpertSlice, Target, is_fused_experts, weight_view
from .stats import InputStats


class _Captured(Exception):
    pass


class StopBlock(Exception):
    """Raised by a statistics hook once every target of the block has seen this batch."""


@dataclass
class BlockInputs:
    """Calibration activations entering one block, one entry per batch."""

    hidden: list[torch.Tensor]  # each (B, seqlen, hidden)
    args: list[tuple]
    kwargs: list[dict]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, tuple, dict]]:
        return iter(zip(self.hidden, self.args, self.kwargs, strict=True))


def _to(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(_to(o, device) for o in obj)
    if isinstance(obj, list):
        return [_to(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


def _same(a, b) -> bool:
    """Equal tensors (same shape, dtype, values) or equal nested containers of them."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a is b or (type(a) is type(b) and not isinstance(a, torch.Tensor) and a == b)


@torch.no_grad()
def capture_inputs(
    model: nn.Module,
    first_block: nn.Module,
    calibration: torch.Tensor,
    batch_size: int,
    store: str = "cpu",
    dtype: torch.dtype | None = None,
) -> BlockInputs:
    """Run the model up to ``first_block`` on ``calibration`` (nsamples, seqlen) and record its inputs,
    kept on ``store`` in ``dtype`` (default: as they come). The blocks then run in that dtype.

    The hidden states go into one preallocated (nsamples, seqlen, hidden) tensor, so these long-lived
    activations do not fragment the heap among each batch's temporaries; arguments equal to the
    previous batch's (rotary tables, masks) are stored once and shared.
    """
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    device = (embeddings.weight if embeddings is not None else next(model.parameters())).device  # blocks may be meta
    out = BlockInputs([], [], [])
    whole: list[torch.Tensor] = []  # (nsamples, seqlen, hidden), allocated at the first batch

    def grab(_module, args, kwargs):
        h = args[0].detach()
        if not whole:
            whole.append(torch.empty((calibration.shape[0], *h.shape[1:]), dtype=dtype or h.dtype, device=store))
        start = sum(x.shape[0] for x in out.hidden)
        out.hidden.append(whole[0][start : start + h.shape[0]].copy_(h))
        rest = _to(args[1:], store)
        kwargs = {k: v for k, v in kwargs.items() if k not in ("past_key_values", "past_key_value", "layer_past")}
        kwargs = _to(kwargs, store)
        if out.args and _same(rest, out.args[-1]) and _same(kwargs, out.kwargs[-1]):
            rest, kwargs = out.args[-1], out.kwargs[-1]
        out.args.append(rest)
        out.kwargs.append(kwargs)
        raise _Captured

    handle = first_block.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        for start in range(0, calibration.shape[0], batch_size):
            batch = calibration[start : start + batch_size].to(device)
            try:
                model(input_ids=batch, use_cache=False)
            except _Captured:
                pass
    finally:
        handle.remove()
    return out


def _hidden(output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


@torch.no_grad()
def run_block(
    block: nn.Module, inputs: BlockInputs, outputs: bool = True, inplace: bool = False
) -> BlockInputs | None:
    """Run one block over every batch; the outputs become the next block's inputs.

    With ``outputs=False`` a hook may raise ``StopBlock`` once it has what it needs, skipping the
    rest of the block (the statistics pass does not need the block's output). With ``inplace`` each
    batch's output overwrites its input, so only one set of activations is ever held.
    Activations in a lower precision than the block's weights (``capture_inputs(dtype=...)``) run the
    block under autocast in that dtype; the weights themselves are not converted.
    """
    param = next(block.parameters())
    hidden = []
    for h, args, kwargs in inputs:
        low = h.dtype in (torch.bfloat16, torch.float16) and h.dtype != param.dtype
        cast = torch.autocast(param.device.type, dtype=h.dtype) if low else contextlib.nullcontext()
        try:
            with cast:
                y = _hidden(block(h.to(param.device), *_to(args, param.device), **_to(kwargs, param.device)))
        except StopBlock:
            if outputs:
                raise
            continue
        if outputs:
            hidden.append(h.copy_(y) if inplace else y.to(h.device, h.dtype))
        del y  # before the next batch allocates its own temporaries
    return BlockInputs(hidden, inputs.args, inputs.kwargs) if outputs else None


class _ExpertSpy(TorchFunctionMode):
    """Sees every F.linear call; forwards the input of calls on watched expert slices."""

    def __init__(self, watched: dict[tuple[int, int], Callable[[torch.Tensor], None]]) -> None:
        super().__init__()
        self.watched = watched

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            w = args[1] if len(args) > 1 else kwargs["weight"]
            observe = self.watched.get((w.untyped_storage().data_ptr(), w.storage_offset()))
            if observe is not None:
                observe(args[0])
        return func(*args, **kwargs)


@contextlib.contextmanager
def _eager_experts(block: nn.Module) -> Iterator[None]:
    """Run fused MoE experts through their plain per-expert F.linear loop while calibrating."""
    configs = [m.config for m in block.modules() if is_fused_experts(m) and hasattr(m, "config")]
    saved = [getattr(c, "_experts_implementation", None) for c in configs]
    for c in configs:
        c._experts_implementation = "eager"
    try:
        yield
    finally:
        for c, v in zip(configs, saved, strict=True):
            c._experts_implementation = v


@torch.no_grad()
def collect_stats(
    block: nn.Module,
    targets: dict[str, Target],
    inputs: BlockInputs,
    hessian: bool,
    sample_tokens: int = 0,
    outputs: bool = True,
    on_complete: Callable[[str, InputStats, torch.Tensor | None], None] | None = None,
    inplace: bool = False,
) -> tuple[dict[str, InputStats], dict[str, torch.Tensor], BlockInputs | None]:
    """Run ``block`` with hooks on ``targets``; return their input statistics, about ``sample_tokens``
    input rows of each, evenly strided over all calibration tokens (for reconstruction error), and the block outputs
    (``outputs=False`` skips what follows the last target, e.g. the final down projection; ``inplace``
    writes them over ``inputs``).

    Layers fed the same tensor (q/k/v, gate/up) share one statistics object and one sample: one XᵀX
    accumulator instead of three, computed once. Mixture-of-experts layers see
    only the tokens routed to them, because the statistics are taken at each expert's own matmul.

    ``on_complete(name, stats, sample)`` is called right before a target's own matmul once its
    statistics are final, which needs all calibration data in one batch: it may prune the target in
    place, so every later layer of the block sees the pruned ones (sequential sublayer pruning).
    """
    if on_complete is not None and len(inputs.hidden) != 1:
        raise ValueError("on_complete needs the calibration data as a single batch")
    stats = {name: InputStats(weight_view(t).shape[1], hessian, weight_view(t).device) for name, t in targets.items()}
    seen: dict[str, int] = dict.fromkeys(targets, 0)  # tokens that reached each target so far
    tokens = sum(h.shape[:-1].numel() for h in inputs.hidden)
    stride = max(1, tokens // sample_tokens) if sample_tokens else 0
    # Sample buffers are allocated up front: small long-lived tensors allocated between each batch's large
    # temporaries kept glibc from reusing the freed space, and RSS grew ~20 MB per batch.
    capacity = -(-tokens // stride) if stride else 0  # (rows,) at most; experts see fewer tokens
    # Kept in the activations' storage dtype (bf16 halves them under --calib-dtype bfloat16).
    samples = {name: torch.empty(capacity, s.cols, dtype=inputs.hidden[0].dtype) for name, s in stats.items()}
    taken: dict[str, int] = dict.fromkeys(targets, 0)
    owner: dict[str, str] = {}  # target -> the earlier target fed the same tensor, whose statistics it shares
    last: list = [None, None]  # (tensor, target) of the latest observation
    fired: set[str] = set()  # targets that have seen the current batch

    def observe(name: str, x: torch.Tensor) -> None:
        flat = x.reshape(-1, x.shape[-1])
        if seen[name] == 0 and last[0] is x:  # first batch, same tensor as the last target: share (q/k/v)
            owner[name] = owner.get(last[1], last[1])
            stats[name], samples[name] = stats[owner[name]], samples[owner[name]]  # unused buffer never touched
        if name in owner:  # the owner has already taken this batch
            if seen[owner[name]] != seen[name] + flat.shape[0]:
                raise RuntimeError(f"{name} and {owner[name]} were fed the same tensor once but not every batch")
            taken[name] = taken[owner[name]]
        else:
            stats[name].add(x)
            if stride:  # every stride-th token of the whole calibration set
                rows = flat[(-seen[name]) % stride :: stride]
                samples[name][taken[name] : taken[name] + rows.shape[0]] = rows
                taken[name] += rows.shape[0]
        seen[name] += flat.shape[0]
        last[0], last[1] = x, name
        if on_complete is not None:
            on_complete(name, stats[name], samples[name][: taken[name]] if taken[name] else None)
        fired.add(name)
        if not outputs and len(fired) == len(targets):
            raise StopBlock

    modules = {n: t for n, t in targets.items() if isinstance(t, nn.Module)}
    experts = {t.key(): functools.partial(observe, n) for n, t in targets.items() if isinstance(t, ExpertSlice)}
    handles = [m.register_forward_pre_hook(lambda _m, args, n=n: observe(n, args[0])) for n, m in modules.items()]
    handles.append(block.register_forward_pre_hook(lambda *_: fired.clear()))
    spy = _ExpertSpy(experts) if experts else contextlib.nullcontext()
    try:
        with _eager_experts(block), spy:
            result = run_block(block, inputs, outputs, inplace)
    finally:
        for h in handles:
            h.remove()
        last.clear()
    sample = {n: s[: taken[n]] for n, s in samples.items() if taken[n]}
    return stats, sample, result
