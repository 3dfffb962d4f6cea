"""``prunekit hardware``: what this machine is, and what each sparsity pattern buys on it, measured.

Random weights pruned to each pattern, at the model's own layer shapes (weighted by how often each
shape occurs), timed dense vs every sparse layout side by side at several batch sizes, with the
weights rotated past the CPU cache. The verdict per pattern is read off those numbers only.
"""

from __future__ import annotations

import os
import platform
from collections import Counter

import torch
from tqdm.auto import tqdm

from ..devices import cpu_flags, cpu_name
from ..native import extension
from ..run import semi_structured
from ..run.layouts import COMPILED, DENSE, FLOAT_LAYOUTS, GEMV, LAYOUTS
from ..run.swap import measure_layer
from ..selection import Pattern, Scope, select_mask
from ..store.formats import format_bytes
from ..timing import llc_bytes

PATTERNS = tuple(map(Pattern.parse, ("50%", "2:4", "70%", "90%")))
FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_bf16", "avx512_bitalg", "avx512_vpopcntdq", "avx512_fp16",
         "amx_tile", "amx_bf16", "asimd", "sve")
# Below this a ratio is reported as "no speedup": the same path measured 0.86–1.04× over runs here
# (batch 128, where the tiles run dense GEMM), so smaller gains are not told apart from noise.
SPEEDUP = 1.10


def cpu_info() -> dict:
    flags = cpu_flags()
    return {"cpu": cpu_name(), "machine": platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "isa_flags": [f for f in FLAGS if f in flags], "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "last_level_cache_mb": llc_bytes() >> 20,
            "prunekit_kernel": extension.isa() if extension.available() else "unavailable (no compiler)"}


def gpu_info() -> dict:
    if not torch.cuda.is_available():
        return {"gpu": None, "semi_structured_2to4": "no CUDA GPU"}
    ok, why = semi_structured.support()
    major, minor = torch.cuda.get_device_capability(0)
    return {"gpu": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}",
            "semi_structured_2to4": "available" if ok else why}


def pruned_weight(shape: tuple[int, int], pattern: Pattern, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """A random (rows, cols) weight magnitude-pruned to ``pattern``, per row."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g)
    return (w * select_mask(w.abs(), pattern.sparsity, Scope.ROW, pattern.nm)).to(dtype)


def microbench(shapes: Counter, patterns: tuple[Pattern, ...] = PATTERNS, batches: tuple[int, ...] = (1, 8, 128),
               dtype: torch.dtype = torch.float32, reps: int = 15) -> list[dict]:
    """One row per (shape, pattern, batch): median seconds of dense and each layout."""
    layouts = FLOAT_LAYOUTS if extension.available() else tuple(k for k in FLOAT_LAYOUTS if k not in COMPILED)
    rows = []
    for shape, pattern in tqdm([(s, p) for s in shapes for p in patterns], desc="hardware micro-benchmark"):
        w = pruned_weight(shape, pattern, dtype)
        common = {"shape": list(shape), "count": shapes[shape], "pattern": str(pattern), "sparsity": pattern.sparsity,
                  "dtype": str(dtype).removeprefix("torch."), "dense_bytes": w.numel() * w.element_size(),
                  "stored_bytes": format_bytes(w, pattern.nm)}
        for batch, seconds in measure_layer(w, None, layouts, reps, batches).items():
            rows.append(common | {"batch": batch, "seconds": seconds})
    return rows


def summarize(rows: list[dict]) -> dict[str, dict]:
    """Per pattern: model-weighted speedup of the best layout at each batch size, and memory ratio."""
    out: dict[str, dict] = {}
    for pattern in dict.fromkeys(r["pattern"] for r in rows):
        mine = [r for r in rows if r["pattern"] == pattern]
        speed = {}
        for batch in sorted({r["batch"] for r in mine}):
            at = [r for r in mine if r["batch"] == batch]
            total = {k: sum(r["count"] * r["seconds"][k] for r in at) for k in at[0]["seconds"]}
            best = min((k for k in total if k != DENSE and LAYOUTS[k].sparse), key=total.get)  # the best sparse layout
            speed[batch] = {"layout": best, "speedup": round(total[DENSE] / total[best], 2),
                            # what the zeros alone buy: against prunekit's own dense kernel of the same dtype
                            "speedup_vs_gemv": round(total[GEMV] / total[best], 2) if GEMV in total else None,
                            "per_layout": {k: round(total[DENSE] / v, 2) for k, v in total.items() if k != DENSE}}
        at = [r for r in mine if r["batch"] == mine[0]["batch"]]
        dense = sum(r["count"] * r["dense_bytes"] for r in at)
        stored = {f: sum(r["count"] * r["stored_bytes"][f] for r in at) for f in at[0]["stored_bytes"]}
        fmt = min(stored, key=stored.get)
        ratio = dense / stored[fmt]
        out[pattern] = {"sparsity": mine[0]["sparsity"], "speed": speed, "memory_format": fmt,
                        "memory_ratio": round(ratio, 2), "verdict": verdict(pattern, speed, fmt, ratio)}
    return out


def verdict(pattern: str, speed: dict[int, dict], fmt: str, memory_ratio: float) -> str:
    parts = []
    for batch, s in speed.items():
        own = f"; {s['speedup_vs_gemv']:.2f}× against prunekit's dense gemv" if s.get("speedup_vs_gemv") else ""
        if s["speedup"] >= SPEEDUP:
            parts.append(f"{s['speedup']:.2f}× faster at batch {batch} ({s['layout']}{own})")
        else:
            parts.append(f"no speedup at batch {batch} ({s['speedup']:.2f}× at best)")
    return f"{pattern}: " + "; ".join(parts) + f"; {memory_ratio:.2f}× less weight memory with the {fmt} format"


def model_shapes(model: torch.nn.Module) -> Counter:
    """(out, in) of every prunable layer in the model's blocks, counted."""
    from ..targets import find_targets, weight_view

    return Counter(tuple(weight_view(t).shape) for t in find_targets(model).values())


def layer_shapes(spec: str) -> Counter:
    """``model_shapes`` of a model named by ``spec``, from its config alone."""
    from transformers import AutoModelForCausalLM

    from ..models import load_config

    _, config = load_config(spec)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return model_shapes(model)


def gpu_bench(shapes: Counter, batches: tuple[int, ...], dtype: torch.dtype = torch.float16) -> list[dict]:
    """Dense vs 2:4 semi-structured per shape and batch, where the GPU supports it (else no rows). A
    shape torch's kernels do not take gets its reason instead of timings."""
    if not semi_structured.support()[0]:
        return []
    rows = []
    for shape in shapes:
        for batch in batches:
            row = {"shape": list(shape), "count": shapes[shape], "batch": batch, "dtype": str(dtype).removeprefix("torch.")}
            try:
                row |= semi_structured.time_2to4(shape, batch, dtype)
            except RuntimeError as e:
                row["error"] = str(e).splitlines()[0]
            rows.append(row)
    return rows


def gpu_verdict(rows: list[dict], gpu: str) -> str:
    """One line for GPU 2:4 from ``gpu_bench``'s rows: model-weighted speedup per batch size over the
    shapes that ran, weight memory, and how many layer shapes torch's kernels refused."""
    ran = [r for r in rows if "ms" in r]
    refused = {tuple(r["shape"]) for r in rows if "error" in r}
    if not ran:
        return f"2:4 on {gpu}: no layer shape ran semi-structured ({len(refused)} refused by torch's kernels)"
    parts = []
    for batch in sorted({r["batch"] for r in ran}):
        at = [r for r in ran if r["batch"] == batch]
        ratio = sum(r["count"] * r["ms"]["dense"] for r in at) / sum(r["count"] * r["ms"]["semi_structured"] for r in at)
        parts.append(f"{ratio:.2f}× faster at batch {batch}" if ratio >= SPEEDUP else
                     f"no speedup at batch {batch} ({ratio:.2f}×)")
    first = [r for r in ran if r["batch"] == ran[0]["batch"]]
    memory = sum(r["count"] * r["dense_bytes"] for r in first) / sum(r["count"] * r["stored_bytes"] for r in first)
    tail = f"; {len(refused)} layer shapes refused by torch's kernels (left dense)" if refused else ""
    return f"2:4 on {gpu} ({ran[0]['dtype']}, semi-structured): " + "; ".join(parts) + \
        f"; {memory:.2f}× less weight memory" + tail


def hardware_report(spec: str = "default", patterns: tuple[Pattern, ...] = PATTERNS, batches: tuple[int, ...] = (1, 8, 128),
                    dtype: torch.dtype = torch.float32, reps: int = 15) -> dict:
    shapes = layer_shapes(spec)
    rows = microbench(shapes, patterns, batches, dtype, reps)
    gpu = gpu_info()
    gpu_rows = gpu_bench(shapes, batches)
    return {"machine": cpu_info(), "gpu": gpu, "model": spec, "shapes": {f"{o}x{i}": n for (o, i), n in shapes.items()},
            "dtype": str(dtype).removeprefix("torch."), "summary": summarize(rows), "rows": rows,
            "gpu_2to4": gpu_rows, "gpu_verdict": gpu_verdict(gpu_rows, gpu["gpu"]) if gpu_rows else None}
