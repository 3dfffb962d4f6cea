"""Scoring the probe families on a model: per item, the per-token loss of the reference answer given the prompt
(signal even on a small model) and whether the greedy generation is right (what matters on a larger one); per
family, both with 95% intervals; against a reference run on the same items, the paired differences."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ...data import shared_data_dir
from ...errors import PrunekitError
from ..config import ProbeConfig
from ..intervals import mean_interval, paired, paired_bootstrap, wilson
from ..tasks import score_pairs
from . import arithmetic, code, gsm8k, retrieval
from .generate import greedy
from .items import ProbeItem

log = logging.getLogger(__name__)


PROBE_FILES = {"code": "humaneval.jsonl", "gsm8k": "gsm8k_test.jsonl"}  # in the shared data folder's probes/


def probe_file(name: str) -> str:
    folder = shared_data_dir()
    path = folder / "probes" / PROBE_FILES[name] if folder else None
    if path is None or not path.is_file():
        raise PrunekitError(f"the {name} probe needs {PROBE_FILES[name]} in the shared data folder's probes/ "
                            "(set PRUNEKIT_DATA)")
    return str(path)


@dataclass(frozen=True)
class Family:
    category: str
    items: Callable[[ProbeConfig, object], list[ProbeItem]]  # (settings, tokenizer) -> the items, read or generated
    judge: Callable[[ProbeItem, str], bool]
    stop: tuple[str, ...]
    max_new_tokens: int


FAMILIES = {  # one row per probe family
    "arithmetic": Family("arithmetic", lambda p, tok: arithmetic.arithmetic_items(p.arithmetic, p.seed),
                         arithmetic.judge, ("\n",), 12),
    "retrieval": Family("retrieval", lambda p, tok: retrieval.passkey_items(
        tok, p.retrieval_lengths, p.retrieval_depths, p.retrieval_per_cell, p.seed), retrieval.judge, ("\n",), 10),
    "code": Family("code", lambda p, tok: code.humaneval_items(probe_file("code"), p.code), code.judge, code.STOP, 256),
    "gsm8k": Family("reasoning", lambda p, tok: gsm8k.gsm8k_items(probe_file("gsm8k"), p.gsm8k), gsm8k.judge,
                    gsm8k.STOP, 200),
}


def _pair(tokenizer, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """(context ids, answer ids): the answer's tokens as they fall after the prompt where its encoding allows."""
    ctx = tokenizer(prompt)["input_ids"]
    full = tokenizer(prompt + answer)["input_ids"]
    if full[: len(ctx)] == ctx and len(full) > len(ctx):
        return ctx, full[len(ctx):]
    return ctx, tokenizer(answer, add_special_tokens=False)["input_ids"]


def score_family(model: nn.Module, tokenizer, name: str, items: list[ProbeItem], generate: bool = True,
                 batch_size: int = 8, progress: bool = True) -> dict:
    """Per-item outcomes (loss per answer token, correct) and the family's summary."""
    family = FAMILIES[name]
    t0 = time.perf_counter()
    pairs = [_pair(tokenizer, it.prompt, it.answer) for it in items]
    device = next(model.parameters()).device
    scores = score_pairs(model, pairs, batch_size=batch_size, device=device, progress=progress)
    losses = [-ll / len(cont) for (ll, _), (_, cont) in zip(scores, pairs, strict=True)]
    outcomes = [{"id": it.id, "loss": round(loss, 5), **it.meta} for it, loss in zip(items, losses, strict=True)]
    if generate:
        texts = greedy(model, tokenizer, [it.prompt for it in items], family.max_new_tokens, family.stop, batch_size,
                       desc=name, progress=progress)
        for row, it, text in zip(outcomes, items, texts, strict=True):
            row |= {"correct": int(family.judge(it, text)), "generation": text[:300]}
    return {"category": family.category, "items": outcomes, "seconds": round(time.perf_counter() - t0, 2),
            **summarize(outcomes)}


def summarize(outcomes: list[dict]) -> dict:
    mean, low, high = mean_interval([o["loss"] for o in outcomes])
    out = {"n": len(outcomes), "loss": round(mean, 4), "loss_ci": [round(low, 4), round(high, 4)]}
    if outcomes and "correct" in outcomes[0]:
        right = sum(o["correct"] for o in outcomes)
        lo, hi = wilson(right, len(outcomes))
        out |= {"acc": round(right / len(outcomes), 4), "acc_ci": [round(lo, 4), round(hi, 4)]}
    return out


def compare_family(reference: dict, other: dict) -> dict:
    """``other`` against ``reference`` on the items both scored: the paired loss difference (bootstrap) and, where
    both generated, the paired accuracy difference (McNemar)."""
    ref = {o["id"]: o for o in reference["items"]}
    common = [o for o in other["items"] if o["id"] in ref]
    if not common:
        raise ValueError("no item in common")
    out = {"loss": paired_bootstrap([ref[o["id"]]["loss"] for o in common], [o["loss"] for o in common])}
    if "correct" in common[0] and "correct" in ref[common[0]["id"]]:
        out["acc"] = paired([ref[o["id"]]["correct"] for o in common], [o["correct"] for o in common])
    return out


def by_cell(outcomes: list[dict], keys: tuple[str, ...] = ("length", "depth")) -> dict:
    """Accuracy and loss per (length, depth) of the retrieval items."""
    cells: dict[str, list[dict]] = {}
    for o in outcomes:
        cells.setdefault("/".join(f"{k}={o[k]:g}" for k in keys), []).append(o)
    return {cell: summarize(rows) for cell, rows in cells.items()}
