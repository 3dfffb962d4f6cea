"""``prunekit compare``: every method × pattern on one model, with measured quality, cost and speed.

One process, one calibration sample, one evaluation text: for each run the model is restored to its
dense weights, pruned, evaluated, stored in each sparse format (bytes counted) and benchmarked dense
vs sparse execution (``latency.bench_model``). A kernel sweep over sparsities at the model's layer
shapes gives the speedup curve and its memory-bound limit. ``report.py`` writes the table and plots.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace

import torch
from tqdm.auto import tqdm

from ..data import CalibConfig, load_text, sample_calibration
from ..errors import PrunekitError, choice
from ..models import load_model
from ..oneshot.config import PruneConfig
from ..oneshot.methods import Method
from ..oneshot.pruner import prune
from ..selection import Pattern, is_valid_nm
from ..store.effective_bits import run_bits
from ..store.formats import DENSE, FORMATS, format_bytes
from ..targets import find_targets, weight_view
from .bench import bench_model
from .check import Limits, fit_context, gate, measure, probe_items
from .config import BUDGETS, TaskConfig
from .hardware import cpu_info, layer_shapes, microbench, summarize
from .perplexity import perplexity
from .tasks import brief, compare_tasks, evaluate_tasks, load_tasks

log = logging.getLogger(__name__)
SWEEP = tuple(map(Pattern.parse, ("30%", "50%", "60%", "70%", "80%", "90%", "95%")))


@dataclass(frozen=True)
class CompareConfig:
    """What ``compare`` runs. Defaults keep the default model under 30 minutes on 2 CPU cores."""

    model: str = "default"
    sparsities: tuple[float, ...] = (0.5,)
    patterns: tuple[str, ...] = ("unstructured", "2:4")
    methods: tuple[Method, ...] = tuple(Method)
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
    tasks: TaskConfig | None = None  # zero-shot tasks scored on dense and every run, paired with dense
    check: str | None = None  # a shipping-check budget (``BUDGETS``): every category scored, paired with dense
    calibration: CalibConfig = field(init=False)
    runs: tuple[PruneConfig, ...] = field(init=False)  # one per method × pattern (× sparsity when unstructured)

    def __post_init__(self) -> None:
        if not self.methods or not self.patterns:
            raise PrunekitError("give at least one method and one pattern")
        if not self.sparsities or any(not 0 < s < 1 for s in self.sparsities):
            raise PrunekitError(f"sparsities must be in (0, 1), got {self.sparsities}")
        if self.max_windows < 1 or self.prompt_tokens < 1 or self.new_tokens < 2 or self.bench_reps < 1:
            raise PrunekitError("max_windows, prompt_tokens and bench_reps must be >= 1; new_tokens >= 2")
        if self.check is not None and self.check not in BUDGETS:
            raise PrunekitError(f"the check budget is one of {', '.join(BUDGETS)}, not {self.check!r}")
        methods = tuple(choice(Method, m, "method") for m in self.methods)
        runs = []
        for method in methods:
            for pattern in self.patterns:
                base = PruneConfig(method=method, pattern=pattern)  # an N:M pattern sets its own sparsity
                runs += [base] if base.nm else [replace(base, sparsity=s) for s in self.sparsities]
        object.__setattr__(self, "methods", methods)
        object.__setattr__(self, "calibration", CalibConfig(self.calib, self.nsamples, self.seqlen, self.seed))
        object.__setattr__(self, "runs", tuple(runs))


def storage_mb(model: torch.nn.Module) -> dict[str, float]:
    """MB of the target weights dense and in each lossless format (N:M only where every layer is valid)."""
    totals = dict.fromkeys((DENSE, *FORMATS), 0)
    nm_ok = True
    for target in find_targets(model).values():
        w = weight_view(target)
        nm_ok = nm_ok and w.shape[1] % 4 == 0 and is_valid_nm(w, 2, 4)
        sizes = format_bytes(w, (2, 4) if nm_ok else None) | {DENSE: w.numel() * w.element_size()}
        for k, v in sizes.items():
            totals[k] += v
    return {k: round(v / 2**20, 1) for k, v in totals.items() if k == DENSE or nm_ok or not FORMATS[k].needs_nm}


def run_compare(cfg: CompareConfig) -> dict:
    """Run everything and return the results (``report.write_report`` turns them into files)."""
    calib_source, eval_source = load_text(cfg.calib), load_text(cfg.eval_data)
    tasks = load_tasks(cfg.tasks) if cfg.tasks else []
    torch.manual_seed(cfg.seed)
    model, tok, path = load_model(cfg.model)
    calibration = sample_calibration(calib_source, tok, cfg.calibration)
    dense_state = {k: v.clone() for k, v in model.state_dict().items()}

    def evaluate() -> float:
        return perplexity(model, tok, eval_source, cfg.eval_seqlen, cfg.max_windows, progress=False)["perplexity"]

    def score() -> dict | None:
        return evaluate_tasks(model, tok, tasks, cfg.tasks.batch_size, progress=False) if tasks else None

    plan = cfg.check and fit_context(BUDGETS[cfg.check], model)
    items = plan and probe_items(plan, tok)  # missing or malformed probe files fail here, before the long work

    def check() -> dict | None:
        return measure(model, tok, plan, items, progress=False) if plan else None

    t0 = time.perf_counter()
    dense_ppl, dense_tasks, dense_check = evaluate(), score(), check()
    task_items = {"dense": dense_tasks} if tasks else {}
    rows = []
    for config in tqdm(cfg.runs, desc="compare"):
        model.load_state_dict(dense_state)
        result = prune(model, config, calibration if config.needs_calibration else None)
        ppl, scores = evaluate(), score()
        speed = bench_model(model, cfg.prompt_tokens, cfg.new_tokens, cfg.bench_reps, seed=cfg.seed)
        rows.append({"method": config.method, "pattern": config.pattern, "sparsity": round(result.sparsity, 4),
                     "perplexity": round(ppl, 3), "delta_vs_dense": round(ppl - dense_ppl, 3),
                     "prune_seconds": round(result.seconds, 1), "prune_peak_rss_mb": round(result.peak_rss_mb, 1),
                     "weight_mb": storage_mb(model), "bench": speed,
                     "bits_per_weight": run_bits(result.masks.layers(), result.grids, config.nm,
                                                 next(model.parameters()).element_size() * 8)["model"]["bits_per_weight"],
                     "layer_sparsity": [round(r.sparsity, 4) for r in result.layers]})
        if plan:
            rows[-1]["check"] = gate(check(), dense_check, Limits())
        if scores:
            key = f"{config.method} {config.pattern} {config.sparsity:g}"
            task_items[key] = scores
            rows[-1]["tasks"] = brief(scores) | {"paired": compare_tasks(dense_tasks, scores)}
        log.info("%s %s %.2f: ppl %.2f, decode %.2fx", config.method, config.pattern, config.sparsity, ppl,
                 speed["ratios"]["decode_speedup"])
    sweep = summarize(microbench(layer_shapes(cfg.model), SWEEP, (1,)))
    return {"config": asdict(cfg), "model_path": path, "machine": cpu_info(), "dense_perplexity": round(dense_ppl, 3),
            "calibration": {"source": calib_source.describe(), "shape": list(calibration.shape)},
            "evaluation": eval_source.describe(), "runs": rows, "kernel_sweep": sweep,
            "dense_tasks": dense_tasks and brief(dense_tasks), "task_items": task_items,
            "wall_seconds": round(time.perf_counter() - t0, 1)}
