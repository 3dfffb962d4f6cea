"""The comparison report: Markdown table, JSON and PNG plots from ``compare.run_compare``'s results."""

from __future__ import annotations

from pathlib import Path

from ..store.formats import DENSE, FORMATS
from ..store.manifest import build_manifest, write_json


def _fmt_mb(mb: dict[str, float]) -> str:
    return " / ".join(f"{mb[k]:.0f}" if k in mb else "–" for k in (DENSE, *FORMATS))


def markdown(results: dict, command: str) -> str:
    cfg, m = results["config"], results["machine"]
    lines = [
        "# Method comparison", "",
        f"Made by `{command}` in {results['wall_seconds'] / 60:.1f} min on {m['cpu']} ({m['cores']} cores, "
        f"torch CPU capability {m['torch_cpu_capability']}, prunekit kernel {m['prunekit_kernel']}).", "",
        f"Model `{cfg['model']}`; calibration {cfg['calib']} {cfg['nsamples']}×{cfg['seqlen']} tokens (seed {cfg['seed']}); "
        f"perplexity on {cfg['eval_data']}, {cfg['max_windows']} windows of {cfg['eval_seqlen']} tokens. "
        f"Dense perplexity **{results['dense_perplexity']:.2f}**.", "",
        "Speed: the pruned model run dense (zeros multiplied) vs the same weights with sparse layers chosen per "
        f"layer by measurement, alternating in one process, median of {cfg['bench_reps']}: prefill of "
        f"{cfg['prompt_tokens']} tokens, decode at batch 1 with KV cache ({cfg['new_tokens']} tokens). "
        f"Weight memory: the pruned layers only (embeddings and lm_head excluded), {' / '.join((DENSE, *FORMATS))}; "
        "bits/weight: theirs in the cheapest packed layout, metadata included (``store/effective_bits.py``). "
        "Pruning peak RSS is the whole process's peak during that run; it includes the dense copy of the weights "
        "that compare keeps to restore the model between runs (about 0.5 GB here).", "",
        "| method | pattern | sparsity | perplexity | Δ vs dense | pruning time (s) | pruning peak RSS (MB) "
        f"| weight MB {' / '.join((DENSE, *FORMATS))} | bits/weight | prefill vs dense | decode vs dense "
        "| decode tok/s sparse (dense) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["runs"]:
        b = r["bench"]
        lines.append(
            f"| {r['method']} | {r['pattern']} | {r['sparsity']:.2f} | {r['perplexity']:.2f} | {r['delta_vs_dense']:+.2f} "
            f"| {r['prune_seconds']:.1f} | {r['prune_peak_rss_mb']:.0f} | {_fmt_mb(r['weight_mb'])} "
            f"| {r.get('bits_per_weight', float('nan')):.2f} "
            f"| {b['ratios']['prefill_speedup']:.2f}× | {b['ratios']['decode_speedup']:.2f}× "
            f"| {b['sparse']['decode_tokens_per_s']:.1f} ({b['dense']['decode_tokens_per_s']:.1f}) |")
    lines += _task_table(results)
    lines += _check_table(results)
    lines += ["", "## What the zeros buy on this machine (kernel sweep, batch 1, this model's layer shapes)", ""]
    lines += [f"- {s['verdict']}" for s in results["kernel_sweep"].values()]
    lines += ["", "![perplexity vs sparsity](perplexity_vs_sparsity.png)", "",
              "![per-layer sparsity](layer_sparsity.png)", "", "![speedup vs sparsity](speedup_vs_sparsity.png)", ""]
    return "\n".join(lines)


def _task_table(results: dict) -> list[str]:
    """Zero-shot accuracy per run: each task's acc (%) with its paired difference to dense on the same items
    and whether that difference is beyond noise (McNemar p < 0.05); the mean over tasks."""
    dense = results.get("dense_tasks")
    if not dense:
        return []
    names = list(dense["tasks"])
    lines = ["", "## Zero-shot task accuracy (lm-eval metrics, paired with dense on the same items)", "",
             "acc in %; below it the difference to dense in points, its 95% interval, and McNemar's verdict. "
             + ", ".join(f"{n}: {t['items']} items" for n, t in dense["tasks"].items()) + ".", "",
             "| method | pattern | sparsity | mean acc | " + " | ".join(names) + " |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in names) + " |",
             f"| dense | – | 0.00 | {100 * dense['mean_acc']:.1f} | "
             + " | ".join(f"{100 * dense['tasks'][n]['acc']:.1f}" for n in names) + " |"]
    for r in results["runs"]:
        cells = []
        for n in names:
            p = r["tasks"]["paired"][n]["acc"]
            cells.append(f"{100 * r['tasks']['tasks'][n]['acc']:.1f}<br>{100 * p['diff']:+.1f} "
                         f"[{100 * p['ci'][0]:+.1f}, {100 * p['ci'][1]:+.1f}] {p['verdict']}")
        lines.append(f"| {r['method']} | {r['pattern']} | {r['sparsity']:.2f} | {100 * r['tasks']['mean_acc']:.1f} | "
                     + " | ".join(cells) + " |")
    return lines


def _check_table(results: dict) -> list[str]:
    """The shipping check's categories per run (``check.gate`` against dense on the same items): the accuracy change
    in points and the relative loss change, each with its 95% interval, and whether the category fails its budget."""
    runs = [r for r in results["runs"] if "check" in r]
    if not runs:
        return []
    cats = list(runs[0]["check"])
    lines = ["", f"## Shipping check per category (budget {results['config']['check']}, paired with dense)", "",
             "Per category: accuracy change in points and relative change of the per-token loss of the reference "
             "answers, with 95% intervals; **fails** where it regresses beyond the budget (as ``prunekit check``).",
             "", "| method | pattern | sparsity | " + " | ".join(cats) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in cats) + " |"]
    for r in runs:
        cells = []
        for cat in cats:
            e, parts = r["check"][cat], []
            if "acc" in e:
                a = e["acc"]
                parts.append(f"{100 * a['diff']:+.1f} pt [{100 * a['ci'][0]:+.1f}, {100 * a['ci'][1]:+.1f}]"
                             + ("" if a["signal"] else " no signal"))
            if "loss" in e:
                m = e["loss"]
                parts.append(f"loss {100 * m['relative']:+.1f}% [{100 * m['ci'][0] / m['reference']:+.1f}, "
                             f"{100 * m['ci'][1] / m['reference']:+.1f}]")
            cells.append("<br>".join(parts) + (" **fails**" if e["fails"] else ""))
        lines.append(f"| {r['method']} | {r['pattern']} | {r['sparsity']:.2f} | " + " | ".join(cells) + " |")
    return lines


def plot(results: dict, folder: Path) -> list[str]:
    """perplexity_vs_sparsity.png, layer_sparsity.png, speedup_vs_sparsity.png in ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def figure(name: str, xlabel: str, ylabel: str, draw, legend_size: int = 8) -> str:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        draw(ax)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=legend_size)
        fig.tight_layout()
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        return name

    runs = results["runs"]

    def perplexity(ax) -> None:
        for method in dict.fromkeys(r["method"] for r in runs):
            mine = [r for r in runs if r["method"] == method]
            pts = sorted((r["sparsity"], r["perplexity"]) for r in mine if r["pattern"] == "unstructured")
            ax.plot([0] + [p[0] for p in pts], [results["dense_perplexity"]] + [p[1] for p in pts], "o-", label=method)
            color = ax.lines[-1].get_color()
            for r in mine:
                if r["pattern"] != "unstructured":
                    ax.plot(r["sparsity"], r["perplexity"], "s", color=color, label=f"{method} {r['pattern']}")
        ax.set_yscale("log")

    def layers(ax) -> None:
        for r in runs:
            ax.plot(r["layer_sparsity"], ".-", markersize=3, linewidth=0.8, label=f"{r['method']} {r['pattern']}")

    def speedup(ax) -> None:
        sweep = results["kernel_sweep"]
        xs = [s["sparsity"] for s in sweep.values()]
        batch1 = [{int(b): v for b, v in s["speed"].items()}[1]["speedup"] for s in sweep.values()]  # JSON keys are str
        ax.plot(xs, batch1, "o-", label="best sparse layer kernel vs dense (batch 1)")
        limit = [s["memory_ratio"] for s in sweep.values()]
        ax.plot(xs, limit, "k--", label="memory-bound limit (dense bytes / sparse bytes)")
        ax.plot([r["sparsity"] for r in runs], [r["bench"]["ratios"]["decode_speedup"] for r in runs], "s",
                label="whole model decode, measured")
        ax.axhline(1.0, color="gray", linewidth=0.8)

    return [figure("perplexity_vs_sparsity.png", "sparsity", "perplexity (log)", perplexity),
            figure("layer_sparsity.png", "layer (model order)", "sparsity", layers, legend_size=7),
            figure("speedup_vs_sparsity.png", "sparsity", "speedup vs dense", speedup)]


def write_report(results: dict, folder: Path, command: str) -> list[str]:
    """Write report.md, results.json (with versions, as a manifest), the plots, and tasks.json (per-item task
    outcomes of dense and every run) when tasks were scored, into ``folder``."""
    results = dict(results)
    task_items = results.pop("task_items", None)
    (folder / "report.md").write_text(markdown(results, command))
    write_json(build_manifest(command=command, results=results), folder / "results.json")
    files = ["report.md", "results.json", *plot(results, folder)]
    if task_items:
        write_json(task_items, folder / "tasks.json")
        files.append("tasks.json")
    return files
