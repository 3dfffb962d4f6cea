"""``prunekit compare``: every method × pattern on one model, with measured quality, cost and speed.

One process, one calibration sample, one evaluation text: for each run the model is restored to its
dense weights, pruned, evaluated, stored in each sparse format (bytes counted) and benchmarked dense
vs sparse execution (``latency.bench_model``). A kernel sweep over sparsities at the model's layer
shapes gives the speedup curve and its memory-bound limit. ``report.py`` writes the table and plots.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from ..config import METHODS, CalibConfig, PruneConfig
from ..data import load_text, sample_calibration
from ..errors import PrunekitError
from ..models import load_model
from ..oneshot.pruner import prune
from ..selection import is_valid_nm, parse_pattern
from ..store.formats import format_bytes
from ..targets import find_targets, weight_view
from .bench import bench_model
from .hardware import cpu_info, layer_shapes, microbench, summarize
from .perplexity import perplexity

log = logging.getLogger(__name__)
SWEEP = ("30%", "50%", "60%", "70%", "80%", "90%", "95%")


@dataclass(frozen=True)
class CompareConfig:
    """What ``compare`` runs. Defaults keep the default model under 30 minutes on 2 CPU cores."""

    model: str = "default"
    sparsities: tuple[float, ...] = (0.5,)
    patterns: tuple[str, ...] = ("unstructured", "2:4")
    methods: tuple[str, ...] = METHODS
    calib: str = "c4"
    nsamples: int = 16
    seqlen: int = 2048
    eval_data: str = "wikitext2"
    eval_seqlen: int = 2048
    max_windows: int = 10
    prompt_tokens: int = 256
    new_tokens: int = 16
    bench_reps: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise PrunekitError(f"unknown methods {bad}; choose from {', '.join(METHODS)}")
        if not self.patterns:
            raise PrunekitError("give at least one pattern")
        for p in self.patterns:
            parse_pattern(p)
        if not self.sparsities or any(not 0 < s < 1 for s in self.sparsities):
            raise PrunekitError(f"sparsities must be in (0, 1), got {self.sparsities}")
        CalibConfig(self.calib, self.nsamples, self.seqlen, self.seed)
        if self.max_windows < 1 or self.prompt_tokens < 1 or self.new_tokens < 2 or self.bench_reps < 1:
            raise PrunekitError("max_windows, prompt_tokens and bench_reps must be >= 1; new_tokens >= 2")

    def runs(self) -> list[tuple[str, str, float]]:
        """(method, pattern, sparsity) for each run; an N:M pattern fixes its own sparsity."""
        out = []
        for method in self.methods:
            for pattern in self.patterns:
                nm = parse_pattern(pattern)
                for s in (1 - nm[0] / nm[1],) if nm else self.sparsities:
                    out.append((method, pattern, s))
        return out


def storage_mb(model: torch.nn.Module) -> dict[str, float]:
    """MB of the target weights dense and in each lossless format (N:M only where every layer is valid)."""
    totals = {"dense": 0, "bitmask": 0, "csr": 0, "nm": 0}
    nm_ok = True
    for target in find_targets(model).values():
        w = weight_view(target)
        nm_ok = nm_ok and w.shape[1] % 4 == 0 and is_valid_nm(w, 2, 4)
        sizes = format_bytes(w, (2, 4) if nm_ok else None) | {"dense": w.numel() * w.element_size()}
        for k, v in sizes.items():
            totals[k] += v
    return {k: round(v / 2**20, 1) for k, v in totals.items() if k != "nm" or nm_ok}


def run_compare(cfg: CompareConfig) -> dict:
    """Run everything and return the results (``report.write_report`` turns them into files)."""
    calib_source, eval_source = load_text(cfg.calib), load_text(cfg.eval_data)
    torch.manual_seed(cfg.seed)
    model, tok, path = load_model(cfg.model)
    calibration = sample_calibration(calib_source, tok, cfg.nsamples, cfg.seqlen, cfg.seed)
    dense_state = {k: v.clone() for k, v in model.state_dict().items()}

    def evaluate() -> float:
        return perplexity(model, tok, eval_source, cfg.eval_seqlen, cfg.max_windows, progress=False)["perplexity"]

    t0 = time.perf_counter()
    dense_ppl = evaluate()
    rows = []
    for method, pattern, sparsity in tqdm(cfg.runs(), desc="compare"):
        model.load_state_dict(dense_state)
        config = PruneConfig(method=method, sparsity=sparsity, pattern=pattern)
        result = prune(model, config, calibration if config.needs_calibration else None)
        ppl = evaluate()
        speed = bench_model(model, cfg.prompt_tokens, cfg.new_tokens, cfg.bench_reps, seed=cfg.seed)
        rows.append({"method": method, "pattern": pattern, "sparsity": round(result.sparsity, 4),
                     "perplexity": round(ppl, 3), "delta_vs_dense": round(ppl - dense_ppl, 3),
                     "prune_seconds": round(result.seconds, 1), "prune_peak_rss_mb": round(result.peak_rss_mb, 1),
                     "weight_mb": storage_mb(model), "bench": speed,
                     "layer_sparsity": [round(r.sparsity, 4) for r in result.layers]})
        log.info("%s %s %.2f: ppl %.2f, decode %.2fx", method, pattern, sparsity, ppl, speed["ratios"]["decode_speedup"])
    sweep = summarize(microbench(layer_shapes(cfg.model), SWEEP, (1,)))
    return {"config": asdict(cfg), "model_path": path, "machine": cpu_info(), "dense_perplexity": round(dense_ppl, 3),
            "calibration": {"source": calib_source.describe(), "shape": list(calibration.shape)},
            "evaluation": eval_source.describe(), "runs": rows, "kernel_sweep": sweep,
            "wall_seconds": round(time.perf_counter() - t0, 1)}
