"""The shipping check: perplexity, the commonsense task sets and the probes on one model, paired with a baseline
(the dense model) on the same items, per category; a category fails when it regresses beyond its budget and beyond
noise; the report card says so in a table and one figure.

Rules, per category (each measure on the same items as the baseline):
- an accuracy fails when it drops by more than ``max_drop`` points and McNemar's test says the drop is real
  (p < 0.05); it carries no signal when the baseline's 95% interval reaches below ``max_drop`` points (a drop of
  the budget could not be seen), and is then reported, not judged;
- a loss (per-token loss of the reference answers, or of the perplexity windows) fails when it rises by more than
  ``max_loss_increase`` (relative) and its paired bootstrap interval lies above zero.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from dataclasses import dataclass

from torch import nn

from ..data import load_text
from ..errors import PrunekitError
from ..models import max_positions
from .config import CheckBudget, TaskConfig
from .intervals import paired, paired_bootstrap, wilson
from .perplexity import perplexity
from .probes.items import ProbeItem
from .probes.run import FAMILIES, by_cell, compare_family, score_family
from .tasks import evaluate_tasks, load_tasks

log = logging.getLogger(__name__)

COMMONSENSE = "commonsense"
LANGUAGE = "language modelling"


@dataclass(frozen=True)
class Limits:
    max_drop: float = 2.0  # accuracy points
    max_loss_increase: float = 0.05  # relative


def fit_context(budget: CheckBudget, model: nn.Module) -> CheckBudget:
    """The budget with retrieval lengths the model's positions can hold (the others dropped, with a warning)."""
    limit = max_positions(getattr(model, "config", None))
    probes = budget.probes
    if limit is None or all(n + 32 <= limit for n in probes.retrieval_lengths):
        return budget
    kept = tuple(n for n in probes.retrieval_lengths if n + 32 <= limit)
    log.warning("retrieval lengths over the model's %d positions dropped: %s", limit,
                [n for n in probes.retrieval_lengths if n not in kept])
    if not kept:
        raise PrunekitError(f"the model's {limit} positions hold no retrieval length of the budget")
    return dataclasses.replace(budget, probes=dataclasses.replace(probes, retrieval_lengths=kept))


def probe_items(budget: CheckBudget, tokenizer) -> dict[str, list[ProbeItem]]:
    """Every family's items, read or generated now (a missing or malformed file fails here, before any work)."""
    return {name: FAMILIES[name].items(budget.probes, tokenizer) for name in budget.probes.families}


def measure(model: nn.Module, tokenizer, budget: CheckBudget, items: dict[str, list[ProbeItem]],
            progress: bool = True) -> dict:
    """Everything the check scores on ``model``, with per-item (per-window) outcomes for pairing."""
    text = load_text("wikitext2")
    ppl = perplexity(model, tokenizer, text, seqlen=budget.ppl_seqlen, max_windows=budget.ppl_windows,
                     progress=progress)
    tasks = evaluate_tasks(model, tokenizer, load_tasks(TaskConfig(budget.tasks, budget.task_limit)),
                           progress=progress)
    probes = {name: score_family(model, tokenizer, name, family_items, budget.probes.generate, progress=progress)
              for name, family_items in items.items()}
    if "retrieval" in probes:
        probes["retrieval"]["cells"] = by_cell(probes["retrieval"]["items"])
    return {"perplexity": ppl, "tasks": tasks, "probes": probes}


def _pooled(tasks: dict) -> list[int]:
    return [x for t in tasks["tasks"].values() for x in t["per_item"]["acc"]]


def _acc_verdict(pair: dict, baseline_acc_low: float, limits: Limits) -> dict:
    signal = 100 * baseline_acc_low > limits.max_drop
    fails = signal and 100 * pair["diff"] < -limits.max_drop and pair["verdict"] == "a drop"
    return pair | {"signal": signal, "fails": bool(fails)}


def _loss_verdict(pair: dict, reference_mean: float, limits: Limits) -> dict:
    relative = pair["diff"] / reference_mean if reference_mean > 0 else 0.0
    fails = relative > limits.max_loss_increase and pair["ci"][0] > 0
    return pair | {"relative": relative, "reference": reference_mean, "fails": bool(fails)}


def gate(result: dict, baseline: dict, limits: Limits) -> dict:
    """Per category: the paired changes against ``baseline`` and whether the category fails its budget."""
    out: dict[str, dict] = {}
    ppl, ref_ppl = result["perplexity"], baseline["perplexity"]
    if ppl["data"]["sha256"] != ref_ppl["data"]["sha256"] or ppl["seqlen"] != ref_ppl["seqlen"]:
        raise PrunekitError("the baseline's perplexity was measured on other text or windows")
    n = min(len(ppl["window_loss"]), len(ref_ppl["window_loss"]))
    loss = paired_bootstrap(ref_ppl["window_loss"][:n], ppl["window_loss"][:n])
    out[LANGUAGE] = {"loss": _loss_verdict(loss, sum(ref_ppl["window_loss"][:n]) / n, limits),
                     "perplexity": [ref_ppl["perplexity"], ppl["perplexity"]]}
    mine, ref = result["tasks"]["tasks"], baseline["tasks"]["tasks"]
    if any(ref.get(k, {}).get(f) != t.get(f) for k, t in mine.items() for f in ("sha256", "indices")):
        raise PrunekitError("the baseline scored other task items (files or selection differ)")
    ref_items, my_items = _pooled(baseline["tasks"]), _pooled(result["tasks"])
    low = wilson(sum(ref_items), len(ref_items))[0]
    out[COMMONSENSE] = {"acc": _acc_verdict(paired(ref_items, my_items), low, limits),
                        "scores": [sum(ref_items) / len(ref_items), sum(my_items) / len(my_items)]}
    for name, family in result["probes"].items():
        reference = baseline["probes"].get(name)
        if reference is None:
            continue
        pairs = compare_family(reference, family)
        by_id = {o["id"]: o for o in reference["items"]}
        ref_loss = sum(by_id[o["id"]]["loss"] for o in family["items"] if o["id"] in by_id) / pairs["loss"]["items"]
        entry = {"loss": _loss_verdict(pairs["loss"], ref_loss, limits)}
        if "acc" in pairs:
            entry["acc"] = _acc_verdict(pairs["acc"], reference["acc_ci"][0], limits)
            entry["scores"] = [reference["acc"], family["acc"]]
        out[FAMILIES[name].category] = entry
    for entry in out.values():
        entry["fails"] = any(m.get("fails") for m in entry.values() if isinstance(m, dict))
    return out


def absolute(result: dict) -> dict:
    """Per category, the model's own scores with their intervals (no baseline to pair with)."""
    ppl = result["perplexity"]
    items = _pooled(result["tasks"])
    out = {LANGUAGE: {"perplexity": ppl["perplexity"]},
           COMMONSENSE: {"acc": sum(items) / len(items), "acc_ci": list(wilson(sum(items), len(items)))}}
    for name, family in result["probes"].items():
        out[FAMILIES[name].category] = {k: family[k] for k in ("acc", "acc_ci", "loss", "loss_ci") if k in family}
    return out


def _fmt_pair(m: dict, points: bool) -> str:
    scale, unit = (100, " pt") if points else (1, "")
    lo, hi = m["ci"]
    text = f"{scale * m['diff']:+.2f}{unit} [{scale * lo:+.2f}, {scale * hi:+.2f}]"
    if not points:
        text += f" ({100 * m['relative']:+.1f}%)"
    if points and not m["signal"]:
        return text + " no signal"
    return text + (" **fails**" if m["fails"] else f" {m['verdict']}")


def report_markdown(name: str, gated: dict | None, plain: dict, limits: Limits, baseline: str | None) -> str:
    """The report card: per category the paired change against the baseline and the verdict."""
    lines = [f"# Shipping check: {name}", ""]
    if gated is None:
        lines += ["No baseline to pair with: the scores below are absolute; nothing is judged.", "",
                  "| category | accuracy [95% CI] | loss per token [95% CI] |", "| --- | --- | --- |"]
        for cat, m in plain.items():
            acc = f"{m['acc']:.3f} [{m['acc_ci'][0]:.3f}, {m['acc_ci'][1]:.3f}]" if "acc" in m else ""
            loss = f"{m['loss']:.3f} [{m['loss_ci'][0]:.3f}, {m['loss_ci'][1]:.3f}]" if "loss_ci" in m else (
                f"perplexity {m['perplexity']:.2f}" if "perplexity" in m else "")
            lines.append(f"| {cat} | {acc} | {loss} |")
        return "\n".join(lines) + "\n"
    failed = [c for c, e in gated.items() if e["fails"]]
    verdict = f"**does not ship**: {', '.join(failed)} regress beyond budget" if failed else "**fit to ship**"
    lines += [f"Against {baseline}, paired on the same items. Budget: accuracy drop ≤ {limits.max_drop:g} points, "
              f"loss increase ≤ {100 * limits.max_loss_increase:g}% (beyond noise). Verdict: {verdict}.", "",
              "| category | baseline → model | accuracy change [95% CI] | loss change [95% CI] |",
              "| --- | --- | --- | --- |"]
    for cat, e in gated.items():
        scores = e.get("scores") or e.get("perplexity")
        shown = f"{scores[0]:.3f} → {scores[1]:.3f}" if scores else ""
        acc = _fmt_pair(e["acc"], True) if "acc" in e else ""
        loss = _fmt_pair(e["loss"], False) if "loss" in e else ""
        lines.append(f"| {cat} | {shown} | {acc} | {loss} |")
    return "\n".join(lines) + "\n"


def plot_card(gated: dict) -> bytes:
    """Per category, the paired relative loss change and the accuracy change (points), with 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cats = list(gated)
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.6 * len(cats) + 1.6), sharey=True)
    for ax, key, scale, label in ((axes[0], "acc", 100, "accuracy change (points)"),
                                  (axes[1], "loss", None, "loss per token change (relative, %)")):
        for y, cat in enumerate(cats):
            m = gated[cat].get(key)
            if m is None:
                continue
            s = scale or 100 / m["reference"]
            lo, hi = m["ci"]
            color = "tab:red" if m["fails"] else ("tab:gray" if not m.get("signal", True) else "tab:blue")
            ax.errorbar(s * m["diff"], y, xerr=[[s * (m["diff"] - lo)], [s * (hi - m["diff"])]], fmt="o", color=color,
                        capsize=3)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_yticks(range(len(cats)), cats)
    axes[0].invert_yaxis()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
