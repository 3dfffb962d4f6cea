"""What a run measures on its model before and after its work (dense vs pruned, before vs after
fine-tuning): perplexity on a text, zero-shot tasks, or both; then the paired comparison."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from torch import nn

from ..data import TextSource, load_text
from .config import EvalConfig, TaskConfig
from .perplexity import perplexity
from .tasks import TaskData, brief, compare_tasks, evaluate_tasks, load_tasks, read_results


@dataclass
class Evaluation:
    """Inputs read and checked by ``prepare`` (before any work); ``run`` measures one stage; ``report``
    pairs the saved model's task outcomes with the reference stage's, or with a ``baseline`` file."""

    text: TextSource | None = None
    windows: EvalConfig | None = None
    tasks: list[TaskData] = field(default_factory=list)
    task_batch_size: int = 32
    baseline: dict | None = None  # task results to pair with instead of scoring a reference stage here
    ppl: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)

    @classmethod
    def prepare(cls, text: str | None, windows: EvalConfig, tasks: TaskConfig | None = None,
                baseline: str | None = None) -> Evaluation:
        loaded = load_tasks(tasks) if tasks else []
        return cls(text and load_text(text), windows if text else None, loaded, tasks.batch_size if tasks else 32,
                   read_results(baseline) if baseline else None)

    def seqlens(self) -> dict[str, int]:
        return {"the evaluation seqlen": self.windows.seqlen} if self.windows else {}

    def run(self, stage: str, model: nn.Module, tokenizer) -> None:
        if self.text:
            self.ppl[stage] = perplexity(model, tokenizer, self.text, **dataclasses.asdict(self.windows))
        if self.tasks:
            self.scores[stage] = evaluate_tasks(model, tokenizer, self.tasks, self.task_batch_size)

    def report(self, reference: str, saved: str) -> tuple[dict, dict, dict | None]:
        """(summary lines, manifest sections, the content of the run folder's tasks.json or None)."""
        summary = {f"ppl_{k}": round(v["perplexity"], 4) for k, v in self.ppl.items()}
        for stage, result in self.scores.items():
            summary[f"tasks_{stage}"] = {n: round(t["acc"], 4) for n, t in result["tasks"].items()}
            summary[f"tasks_{stage}"]["mean"] = round(result["mean_acc"], 4)
        sections: dict = {"evaluation": self.ppl}
        if not self.scores:
            return summary, sections, None
        ref = self.scores.get(reference, self.baseline)
        paired = compare_tasks(ref, self.scores[saved]) if ref else None
        if paired:
            summary["tasks_paired"] = {n: _verdict(m["acc"]) for n, m in paired.items()}
        sections["tasks"] = {k: brief(v) for k, v in self.scores.items()} | ({"paired": paired} if paired else {})
        return summary, sections, {"saved": self.scores[saved]} | ({"reference": ref, "paired": paired} if paired else {})


def _verdict(p: dict) -> str:
    lo, hi = p["ci"]
    return f"{p['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}] p={p['p_value']:.3g}: {p['verdict']}"
