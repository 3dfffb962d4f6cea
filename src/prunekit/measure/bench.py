"""``prunekit bench``: prefill and decode speed and peak memory, dense vs sparse execution.

Both copies of the model live in one process and run alternately, so load and clock drift hit them
alike; medians over ``reps`` and ratios are reported. "Dense" is the pruned model as saved (zeros
multiplied); "sparse" is the same weights after ``sparsify`` on CPU (per-layer measured choice), or
with its 2:4 layers semi-structured on a CUDA GPU.
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
from collections.abc import Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from ..quant.grid import LayerGrid
from ..run.semi_structured import plain_tensors, to_semi_structured
from ..run.swap import sparsify
from ..timing import peak_rss_bytes, reset_peak_rss, rss_bytes

log = logging.getLogger(__name__)


def weight_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer as stored (a semi-structured weight: its packed parts),
    shared ones counted once."""
    seen, total = set(), 0
    for t in [inner for held in [*model.parameters(), *model.buffers()] for inner in plain_tensors(held)]:
        if t.data_ptr() not in seen and t.device.type != "meta":
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def _prefill(model: nn.Module, ids: torch.Tensor) -> None:
    model(ids, use_cache=False)


def _decode(model: nn.Module, ids: torch.Tensor, new_tokens: int) -> None:
    model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                   do_sample=False, use_cache=True, pad_token_id=0)


def _timed(fn, device: torch.device) -> tuple[float, int]:
    """(seconds, how far memory rose above its starting level during the call: RSS on CPU, the CUDA
    allocator's peak on a GPU, where the clock stops only once the GPU is done)."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        reset_peak_rss()
        before = rss_bytes()
    t = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t
    return seconds, max(0, (torch.cuda.max_memory_allocated(device) if cuda else peak_rss_bytes()) - before)


def make_sparse(model: nn.Module, layout: str = "auto", grids: Mapping[str, LayerGrid] | None = None
                ) -> tuple[dict[str, int], dict[str, str]]:
    """Sparse execution for ``model`` in place, by where it lives: on CPU ``sparsify`` (per layer, the
    measured fastest of dense and the kernel layouts, quantized ones on ``grids``, or ``layout``); on a
    CUDA GPU its 2:4 layers become semi-structured. Returns layers per layout, and why layers were left
    dense (GPU)."""
    if next(model.parameters()).device.type == "cuda":
        if layout not in ("auto", "semi_structured"):
            raise ValueError(f"on a GPU the sparse layout is semi_structured (2:4), not {layout!r}")
        names, skipped = to_semi_structured(model)
        return {"semi_structured": len(names), "dense": len(skipped)}, skipped
    choices = sparsify(model, layout=layout, grids=grids)
    return {k: sum(c.layout == k for c in choices) for k in {c.layout for c in choices}}, {}


def bench_model(model: nn.Module, prompt_tokens: int = 512, new_tokens: int = 32, reps: int = 5, layout: str = "auto",
                seed: int = 0, vocab: int | None = None, grids: Mapping[str, LayerGrid] | None = None) -> dict:
    """Prefill time for ``prompt_tokens``, decode tokens/s at batch 1 (KV cache, ``generate``), memory:
    bytes of weights, and the working memory (peak rise) of the largest call; the sparse copy is
    made by ``make_sparse`` (CPU layouts, or 2:4 semi-structured on a GPU).

    Decode speed is ``(new_tokens - 1) / (t(new_tokens) - t(1))``: the prompt's prefill cancels out."""
    device = next(model.parameters()).device
    sparse = copy.deepcopy(model)
    t0 = time.perf_counter()
    layouts, left_dense = make_sparse(sparse, layout, grids)
    choose_s = time.perf_counter() - t0
    vocab = vocab or model.config.vocab_size
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, vocab, (1, prompt_tokens), generator=g).to(device)
    short = prompt[:, :16]
    models = {"dense": model, "sparse": sparse}
    runs: dict[str, dict[str, list]] = {k: {"prefill": [], "gen_n": [], "gen_1": [], "rss": []} for k in models}
    with torch.inference_mode():
        for m in models.values():  # warm-up
            _prefill(m, prompt[:, :64])
            _decode(m, short, 2)
        for _ in tqdm(range(reps), desc="bench (dense and sparse, alternating)"):
            for name, m in models.items():
                s, rss = _timed(lambda m=m: _prefill(m, prompt), device)
                runs[name]["prefill"].append(s)
                runs[name]["rss"].append(rss)
                s, rss = _timed(lambda m=m: _decode(m, short, new_tokens), device)
                runs[name]["gen_n"].append(s)
                runs[name]["rss"].append(rss)
                runs[name]["gen_1"].append(_timed(lambda m=m: _decode(m, short, 1), device)[0])
    out: dict = {"device": str(device), "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "reps": reps,
                 "threads": torch.get_num_threads(), "choose_seconds": round(choose_s, 2), "layouts": layouts}
    if left_dense:
        out["left_dense"] = {reason: sum(r == reason for r in left_dense.values()) for reason in set(left_dense.values())}
    for name, m in models.items():
        r = runs[name]
        decode_s = statistics.median(r["gen_n"]) - statistics.median(r["gen_1"])
        out[name] = {"prefill_seconds": round(statistics.median(r["prefill"]), 4),
                     "prefill_tokens_per_s": round(prompt_tokens / statistics.median(r["prefill"]), 1),
                     "decode_tokens_per_s": round((new_tokens - 1) / max(decode_s, 1e-9), 2),
                     "weight_mb": round(weight_bytes(m) / 2**20, 1),
                     "working_memory_mb": round(max(r["rss"]) / 2**20, 1)}
    d, s = out["dense"], out["sparse"]
    out["ratios"] = {"prefill_speedup": round(d["prefill_seconds"] / s["prefill_seconds"], 3),
                     "decode_speedup": round(s["decode_tokens_per_s"] / d["decode_tokens_per_s"], 3),
                     "weight_memory_ratio": round(d["weight_mb"] / s["weight_mb"], 3)}
    return out
