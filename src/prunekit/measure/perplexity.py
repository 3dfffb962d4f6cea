"""Perplexity with the standard SparseGPT/Wanda protocol."""

from __future__ import annotations

import logging
import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data import TextSource, encode
from ..errors import PrunekitError
from ..models import check_seqlen
from .config import EvalConfig

log = logging.getLogger(__name__)


@torch.no_grad()
def perplexity(
    model: nn.Module,
    tokenizer,
    source: TextSource,
    seqlen: int = 2048,
    max_windows: int | None = None,
    batch_size: int = 1,
    progress: bool = True,
) -> dict:
    """Tokenize the whole text once, cut non-overlapping ``seqlen`` windows, return exp(mean NLL).

    Each window's loss is the mean over its ``seqlen - 1`` predicted tokens, weighted by ``seqlen``
    exactly as the reference code does, so figures match published tables. The arguments are checked
    by ``EvalConfig``.
    """
    EvalConfig(seqlen, max_windows, batch_size)
    check_seqlen(getattr(model, "config", None), seqlen, "the evaluation seqlen")
    ids = torch.tensor(encode(tokenizer, source.text), dtype=torch.long)
    total = ids.numel() // seqlen
    if total == 0:
        raise PrunekitError(f"{source.name} has {ids.numel()} tokens, fewer than seqlen={seqlen}")
    n = total if max_windows is None else min(total, max_windows)
    windows = ids[: n * seqlen].view(n, seqlen)
    device = next(model.parameters()).device
    nlls = []
    t0 = time.perf_counter()
    for start in tqdm(range(0, n, batch_size), desc="perplexity", disable=not progress, unit="batch"):
        batch = windows[start : start + batch_size].to(device)
        logits = model(batch, use_cache=False).logits.float()  # (B, seqlen, vocab)
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="none"
        ).view(batch.shape[0], -1)
        nlls.extend((loss.mean(dim=1) * seqlen).tolist())
    ppl = math.exp(sum(nlls) / (n * seqlen))
    result = {
        "data": source.describe(),
        "seqlen": seqlen,
        "windows": n,
        "total_windows": total,
        "tokens": int(ids.numel()),
        "perplexity": ppl,
        "window_loss": [round(v / seqlen, 6) for v in nlls],  # mean NLL per token of each window, for pairing
        "seconds": round(time.perf_counter() - t0, 2),
    }
    log.info("perplexity %.4f over %d/%d windows of %d", ppl, n, total, seqlen)
    return result
