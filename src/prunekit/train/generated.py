"""Training text without a dataset: documents sampled from the dense model itself (``--data teacher``), for users
who have a model and no corpus. Sampling is plain (temperature 1, no top-k/top-p: the model's own distribution, what
distillation matches), seeded, and cached by the teacher's identity and the request, so a rerun trains on the same
text and never pays for it twice."""

from __future__ import annotations

import hashlib
import json
import logging
import math

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data import TextSource, load_text
from ..fsutil import cache_dir, write_file_atomic

log = logging.getLogger(__name__)

TEACHER_DATA = "teacher"  # the --data value that asks for generated text
MARGIN = 1.25  # decoding and re-encoding changes the token count a little: generate this much more than asked
BATCH = 16  # documents sampled together


def generated_text(teacher: nn.Module, tokenizer, tokens: int, length: int, seed: int, identity: dict,
                   progress: bool = True) -> TextSource:
    """About ``tokens`` tokens of text sampled from ``teacher`` in documents of ``length`` tokens, each started
    from the beginning-of-text token, seeded by ``seed``; cached under ``identity`` (the teacher's fingerprint)."""
    count = max(1, math.ceil(tokens * MARGIN / length))
    request = {"teacher": identity, "documents": count, "length": length, "seed": seed,
               "sampling": "temperature 1, no top-k or top-p", "torch": torch.__version__}
    key = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:24]
    path = cache_dir() / "generated" / f"{key}.jsonl"
    if not path.is_file():
        docs = _sample(teacher, tokenizer, count, length, seed, progress)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomic(path, "".join(json.dumps({"text": d}) + "\n" for d in docs))
        log.info("sampled %d documents of %d tokens from the teacher into %s", count, length, path)
    source = load_text(str(path))
    return TextSource(TEACHER_DATA, source.documents, source.path, source.sha256)


@torch.no_grad()
def _sample(teacher: nn.Module, tokenizer, count: int, length: int, seed: int, progress: bool) -> list[str]:
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        start = 0
    device = next(teacher.parameters()).device
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    docs: list[str] = []
    try:
        for first in tqdm(range(0, count, BATCH), desc="sampling text from the teacher", unit="batch",
                          disable=not progress):
            n = min(BATCH, count - first)
            prompt = torch.full((n, 1), start, dtype=torch.long, device=device)
            out = teacher.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, temperature=1.0,
                                   top_k=0, top_p=1.0, max_new_tokens=length, min_new_tokens=length,
                                   pad_token_id=start)
            docs.extend(tokenizer.batch_decode(out[:, 1:], skip_special_tokens=True))
    finally:
        torch.random.set_rng_state(generator_state)
    return docs
