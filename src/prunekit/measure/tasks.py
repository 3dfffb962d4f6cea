"""Zero-shot task accuracy, scored by lm-evaluation-harness on the model in memory (dense, pruned, or
under sparse execution), from local JSON-lines files.

lm-eval builds the requests and the metrics: for a multiple-choice item, the log-likelihood of each choice
after the context; ``acc`` takes the most likely choice, ``acc_norm`` the most likely per character of
the choice; for a completion item (LAMBADA), ``acc`` is whether greedy decoding gives the continuation,
and ``perplexity`` is over continuations. prunekit gives it the items (``custom_dataset``: no download)
and the model (``task_lm``). Two things lm-eval cannot do here, and why:

- lm-eval's own ``HFLM`` loads or wraps a model for its own batching and scores each (context, choice)
  pair as a whole sequence: its own code marks reusing a shared context as a TODO. ``task_lm`` runs
  each context once, keeps its key/value cache, and scores every choice against it. The
  log-likelihoods are the same up to float summation order (tested against a per-choice computation).
- lm-eval's intervals are bootstrap standard errors per model. Paired comparisons on the same items
  come from ``intervals.py``, so lm-eval's bootstrap is switched off.
"""

from __future__ import annotations

import inspect
import json
import logging
import random
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data import read_jsonl, shared_data_dir
from ..errors import PrunekitError
from ..fsutil import regular_file, sha256_file
from .config import TaskConfig
from .intervals import paired, wilson

log = logging.getLogger(__name__)

NAMED = ("piqa", "arc_easy", "hellaswag", "openbookqa", "lambada_openai")  # files in shared/data/tasks
CHOICE, COMPLETION = "multiple_choice", "loglikelihood"  # lm-eval's output types
Score = tuple[float, bool]  # (log-likelihood, greedy)
LOGITS_BUDGET = 1 << 28  # bytes of float32 logits one forward pass may produce (batches are cut to fit)


@dataclass(frozen=True)
class TaskData:
    """The items of one task file that a run scores, and where they came from."""

    name: str
    path: str
    sha256: str
    kind: str                  # CHOICE or COMPLETION
    docs: tuple[dict, ...]     # the selected items, in file order
    indices: tuple[int, ...]   # their positions among the file's items
    total: int                 # items in the file

    def describe(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "kind": self.kind, "items": len(self.docs),
                "total": self.total, "indices": list(self.indices)}


def task_path(spec: str) -> Path:
    """A named task (``piqa``, ...) in the shared data folder, or a ``.jsonl`` file."""
    if spec in NAMED:
        folder = shared_data_dir()
        if folder is None or not (folder / "tasks" / f"{spec}.jsonl").is_file():
            raise PrunekitError(f"task {spec!r}: no tasks/{spec}.jsonl in the shared data folder (set PRUNEKIT_DATA)")
        return folder / "tasks" / f"{spec}.jsonl"
    path = Path(spec).expanduser()
    if path.suffix != ".jsonl":
        raise PrunekitError(f"unknown task {spec!r}: use one of {', '.join(NAMED)} or a .jsonl file")
    if not path.is_file():
        raise PrunekitError(f"task file not found: {path}")
    return path


def _item(row, path: Path, lineno: int, kind: str | None) -> str:
    """The kind of one parsed row, after checking it against the schema (and the file's first row's kind)."""
    where = f"{path}:{lineno}"
    if not isinstance(row, dict) or not isinstance(row.get("context"), str) or not row["context"].strip():
        raise PrunekitError(f"{where}: expected an object with a non-empty string 'context' (not only whitespace)")
    if "choices" in row:
        choices, gold = row["choices"], row.get("gold")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c.strip()
                                                                         for c in choices):
            raise PrunekitError(f"{where}: 'choices' must be a list of at least two non-empty strings")
        if not isinstance(gold, int) or isinstance(gold, bool) or not 0 <= gold < len(choices):
            raise PrunekitError(f"{where}: 'gold' must be the index of the right choice (0..{len(choices) - 1})")
        found = CHOICE
    elif isinstance(row.get("continuation"), str) and row["continuation"].strip():
        found = COMPLETION
    else:
        raise PrunekitError(f"{where}: expected 'choices' and 'gold', or a non-empty 'continuation'")
    if kind is not None and found != kind:
        raise PrunekitError(f"{where}: a {found} item in a file of {kind} items")
    return found


def load_task(spec: str, limit: int | None = None, seed: int | None = None) -> TaskData:
    """Read and check a task file; select the first ``limit`` items, or with ``seed`` a seeded random
    ``limit`` of them (kept in file order), so reruns and other tools see the same items."""
    path = task_path(spec)
    rows, kind = [], None
    for lineno, row in read_jsonl(path):
        kind = _item(row, path, lineno, kind)
        rows.append(row)
    if not rows:
        raise PrunekitError(f"task file {path} holds no items")
    if limit is not None and limit < 1:
        raise PrunekitError(f"--limit must be >= 1, got {limit}")
    n = len(rows) if limit is None else min(limit, len(rows))
    indices = tuple(range(n)) if seed is None else tuple(sorted(random.Random(seed).sample(range(len(rows)), n)))
    name = spec if spec in NAMED else path.stem
    return TaskData(name, str(path), sha256_file(path), kind, tuple(rows[i] for i in indices), indices, len(rows))


def load_tasks(config: TaskConfig) -> list[TaskData]:
    """Every task a ``TaskConfig`` names, read, checked and selected."""
    tasks = [load_task(name, limit, config.seed) for name, limit in zip(config.names, config.limits, strict=True)]
    seen: dict[str, TaskData] = {}
    for task in tasks:  # results are keyed by name: two of one name would overwrite each other
        if task.name in seen:
            raise PrunekitError(f"tasks {seen[task.name].path} and {task.path} are both named {task.name!r}: their "
                                "results would overwrite each other; rename one file")
        seen[task.name] = task
    return tasks


def task_lm(model: nn.Module, tokenizer, batch_size: int = 32, share: bool = True, progress: bool = True):
    """An lm-eval model (a ``TemplateLM``; lm-eval is an optional extra, imported here) over ``model``:
    log-likelihoods by ``score_pairs``, which runs each shared context once."""
    from lm_eval.api.model import TemplateLM

    class _TaskLM(TemplateLM):
        def __init__(self) -> None:
            super().__init__()
            self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
            self._device = next(model.parameters()).device
            self.max_length = _max_length(model)

        @property
        def eot_token_id(self) -> int:
            return self.tokenizer.eos_token_id

        def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
            extra = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
            return self.tokenizer.encode(string, **extra)  # as lm-eval's HFLM does by default

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
            pairs = [self._fit(ctx, cont) for _, ctx, cont in requests]
            return score_pairs(self.model, pairs, self.batch_size, self._device, progress and not disable_tqdm, share)

        def _fit(self, ctx: list[int], cont: list[int]) -> tuple[list[int], list[int]]:
            """Keep the last ``max_length`` tokens, dropping from the context first (as HFLM does)."""
            keep = self.max_length - len(cont)
            if keep < 1:
                raise PrunekitError(f"a continuation of {len(cont)} tokens does not fit the model's {self.max_length}")
            return ctx[-keep:], cont

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError("prunekit's tasks score continuations only; use `prunekit eval --data`")

        def generate_until(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError("prunekit's tasks score continuations only")

    return _TaskLM()


def _max_length(model: nn.Module) -> int:
    from ..models import max_positions

    return max_positions(getattr(model, "config", None)) or 2048


@torch.inference_mode()
def score_pairs(model: nn.Module, pairs: list[tuple[list[int], list[int]]], batch_size: int = 32,
                device: torch.device | str = "cpu", progress: bool = True, share: bool = True) -> list[tuple[float, bool]]:
    """(log-likelihood of each continuation after its context, whether greedy decoding gives it).

    Pairs are grouped by context. Each batch of groups takes two forward passes: their contexts once,
    left-padded so they all end together, keeping the key/value cache; then every continuation of those
    groups, right-padded, on its own context's cache (selected per row). So a context shared by four choices
    runs once, and a forward pass (its weight reads, its fixed cost) serves up to ``batch_size``
    continuations. ``share=False`` makes every pair its own group (what ``bench/tasks.py`` compares with)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (ctx, _) in enumerate(pairs):
        groups.setdefault(tuple(ctx) if share else (i,), []).append(i)
    # longest first, so each batch pads little: continuations first (a group has several), then contexts
    order = sorted(groups.values(), key=lambda m: (-max(len(pairs[i][1]) for i in m), -len(pairs[m[0]][0])))
    vocab = model.get_output_embeddings().weight.shape[0]
    out: list[tuple[float, bool] | None] = [None] * len(pairs)
    bar = tqdm(total=len(pairs), desc="tasks", unit="request", disable=not progress)
    start = 0
    while start < len(order):
        batch, rows, width = [], 0, 0
        for members in order[start:]:
            w = max(width, *(len(pairs[i][1]) for i in members))
            if batch and (rows + len(members) > batch_size or 4 * vocab * w * (rows + len(members)) > LOGITS_BUDGET):
                break
            batch.append(members)
            rows, width = rows + len(members), w
        scored = _score_groups(model, [(pairs[m[0]][0], [pairs[i][1] for i in m]) for m in batch], device)
        for members, results in zip(batch, scored, strict=True):
            for i, result in zip(members, results, strict=True):
                out[i] = result
        bar.update(rows)
        start += len(batch)
    bar.close()
    return out


def _gather(logprobs: torch.Tensor, cont: list[int]) -> tuple[float, bool]:
    """(sum of the continuation's log-probabilities, all of them the argmax) from (len(cont), vocab)."""
    target = torch.tensor(cont, device=logprobs.device)
    return float(logprobs.gather(1, target[:, None]).sum()), bool((logprobs.argmax(1) == target).all())


def _forward(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, **kwargs):
    """``model(ids, ...)`` with position ids and ``logits_to_keep`` where its forward takes them (OPT-style
    models derive positions from the attention mask), and the cache under the name it uses (``cache``
    from transformers 5, ``past_key_values`` before)."""
    accepted = inspect.signature(model.forward).parameters
    if "position_ids" in accepted:
        kwargs["position_ids"] = positions
    if "logits_to_keep" not in accepted:
        kwargs.pop("logits_to_keep", None)
    if "cache" in kwargs and "cache" not in accepted:
        kwargs["past_key_values"] = kwargs.pop("cache")
    return model(ids, attention_mask=mask, **kwargs)


def _pad(seqs: list[list[int]], left: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of ``seqs`` padded to one width; pads repeat a real token (masked out, never scored)."""
    width = max(len(s) for s in seqs)
    ids = [[s[0]] * (width - len(s)) + s if left else s + [s[-1]] * (width - len(s)) for s in seqs]
    mask = [[0] * (width - len(s)) + [1] * len(s) if left else [1] * len(s) + [0] * (width - len(s)) for s in seqs]
    return torch.tensor(ids, device=device), torch.tensor(mask, device=device)


def _score_groups(model: nn.Module, groups: list[tuple[list[int], list[list[int]]]], device) -> list[list[Score]]:
    """Every continuation of every (context, continuations) group, in two forward passes."""
    ctx_ids, ctx_mask = _pad([ctx for ctx, _ in groups], left=True, device=device)  # (B, Lc): contexts end together
    first = _forward(model, ctx_ids, ctx_mask, (ctx_mask.cumsum(1) - 1).clamp(min=0), use_cache=True, logits_to_keep=1)
    last = F.log_softmax(first.logits[:, -1].float(), dim=-1)  # (B, vocab): predicts each first continuation token
    cache = first["cache"] if "cache" in first else first["past_key_values"]
    owner = torch.tensor([g for g, (_, conts) in enumerate(groups) for _ in conts], device=device)  # (K,) row -> group
    cache.batch_select_indices(owner)  # (K, ...): each row continues its own context
    conts = [c for _, cs in groups for c in cs]
    cont_ids, cont_mask = _pad(conts, left=False, device=device)  # (K, Lt)
    positions = ctx_mask.sum(1)[owner][:, None] + torch.arange(cont_ids.shape[1], device=device)
    logits = _forward(model, cont_ids, torch.cat([ctx_mask[owner], cont_mask], 1), positions, use_cache=True,
                      cache=cache).logits  # (K, Lt, vocab); position j predicts token j + 1
    results: list[list[Score]] = [[] for _ in groups]
    for k, cont in enumerate(conts):
        rest = F.log_softmax(logits[k, : len(cont) - 1].float(), dim=-1)
        results[int(owner[k])].append(_gather(torch.cat([last[owner[k]][None], rest]), cont))
    return results


def _lm_eval_config(task: TaskData) -> dict:
    """lm-eval's task definition for our file's items (read here, handed over as a dataset: no download)."""
    from datasets import Dataset

    docs = [dict(d) for d in task.docs]
    base = {"task": f"prunekit_{task.name}", "custom_dataset": lambda **_: {"test": Dataset.from_list(docs)},
            "test_split": "test", "output_type": task.kind, "doc_to_text": lambda d: d["context"],
            "target_delimiter": "", "metadata": {"version": 1}}  # choices and continuations carry their own space
    if task.kind == CHOICE:
        return base | {"doc_to_choice": lambda d: d["choices"], "doc_to_target": lambda d: d["gold"],
                       "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}]}
    return base | {"doc_to_target": lambda d: d["continuation"],
                   "metric_list": [{"metric": "perplexity"}, {"metric": "acc"}]}


def evaluate_tasks(model: nn.Module, tokenizer, tasks: list[TaskData], batch_size: int = 32,
                   progress: bool = True, lm=None) -> dict:
    """Every task on the model as it is now: per task, accuracy (and acc_norm) with 95% intervals, the
    per-item outcomes, LAMBADA's continuation perplexity; and what made them (lm-eval's version).
    ``lm``: another lm-eval model to score with (``bench/tasks.py`` passes lm-eval's own HFLM)."""
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError as e:
        raise PrunekitError("task evaluation needs lm-evaluation-harness: pip install 'prunekit[tasks]'") from e
    for noisy in ("lm_eval", "lm-eval"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    lm = lm or task_lm(model, tokenizer, batch_size, progress=progress)
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        raw = lm_eval.simple_evaluate(model=lm, tasks=[_lm_eval_config(t) for t in tasks], log_samples=True,
                                      bootstrap_iters=0, random_seed=None, numpy_random_seed=None,
                                      torch_random_seed=None, fewshot_random_seed=None,
                                      task_manager=TaskManager(include_defaults=False))  # not its 10 s index of 13k tasks
    finally:
        model.train(was_training)
    out = {}
    for task in tasks:
        key = f"prunekit_{task.name}"
        samples = sorted(raw["samples"][key], key=lambda s: s["doc_id"])
        summary = task.describe() | {"per_item": {}}
        metrics = ("acc", "acc_norm") if task.kind == CHOICE else ("acc",)
        for metric in metrics:
            outcomes = [int(s[metric]) for s in samples]
            summary[metric] = sum(outcomes) / len(outcomes)
            summary[f"{metric}_ci"] = list(wilson(sum(outcomes), len(outcomes)))
            summary["per_item"][metric] = outcomes
        if task.kind == CHOICE:  # a metric carries signal when its interval lies above chance
            summary["chance"] = sum(1 / len(d["choices"]) for d in task.docs) / len(task.docs)
            summary["signal"] = {m: summary[f"{m}_ci"][0] > summary["chance"] for m in metrics}
        else:
            summary["perplexity"] = raw["results"][key]["perplexity,none"]
        out[task.name] = summary
    return {"tasks": out, "lm_eval": metadata.version("lm_eval"), "seconds": round(time.perf_counter() - t0, 1),
            "mean_acc": sum(t["acc"] for t in out.values()) / len(out)}


def compare_tasks(reference: dict, other: dict) -> dict:
    """``other``'s tasks against ``reference``'s on the same items (same file bytes, same selection):
    per task and metric, the paired difference with its interval, McNemar's p and a verdict."""
    out = {}
    for name, mine in other["tasks"].items():
        ref = reference["tasks"].get(name)
        if ref is None:
            continue
        same = all(ref.get(k) == mine.get(k) for k in ("sha256", "indices"))
        if not same:
            raise PrunekitError(f"task {name}: the reference scored other items (file or selection differ)")
        out[name] = {m: paired(ref["per_item"][m], mine["per_item"][m]) for m in mine["per_item"] if m in ref["per_item"]}
    return out


TASKS_FILE = "tasks.json"  # per-item outcomes, in the folder of a run that scored tasks


def brief(result: dict) -> dict:
    """``evaluate_tasks``'s result without per-item outcomes and item lists: for manifests and summaries."""
    tasks = {name: {k: v for k, v in t.items() if k not in ("per_item", "indices")} for name, t in result["tasks"].items()}
    return {k: v for k, v in result.items() if k != "tasks"} | {"tasks": tasks}


def read_results(path: str | Path) -> dict:
    """Task results to compare against: a run folder's ``tasks.json`` (the model saved there) or the
    JSON file ``prunekit eval --tasks`` wrote."""
    path = Path(path)
    file = path / TASKS_FILE if path.is_dir() else path
    try:
        data = json.loads(regular_file(file).read_text(encoding="utf-8"))
        result = data["saved"] if path.is_dir() else data["tasks"]
        if not isinstance(result.get("tasks"), dict):
            raise KeyError("tasks")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, PrunekitError) as e:
        raise PrunekitError(f"{file} holds no task results to compare with ({e})") from e
    return result
