"""Greedy generation for the probes, batched with left padding, cut at the first stop string."""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import StoppingCriteria, StoppingCriteriaList


class _Stop(StoppingCriteria):
    """Per row: done once its generated text holds a stop string (the last few tokens decoded at each step)."""

    TAIL = 16  # tokens decoded per row and step: more than any stop string spans

    def __init__(self, tokenizer, stop: tuple[str, ...], start: int) -> None:
        self.tokenizer, self.stop, self.start = tokenizer, stop, start

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        tails = self.tokenizer.batch_decode(input_ids[:, max(self.start, input_ids.shape[1] - self.TAIL):])
        return torch.tensor([any(s in t for s in self.stop) for t in tails], device=input_ids.device)


@torch.inference_mode()
def greedy(model: nn.Module, tokenizer, prompts: list[str], max_new_tokens: int, stop: tuple[str, ...] = (),
           batch_size: int = 8, desc: str = "generate", progress: bool = True) -> list[str]:
    """The greedy continuation of every prompt (up to ``max_new_tokens``), without the prompt, cut before the first
    of ``stop``. Prompts are batched by length so little is padded; the order of the results is the prompts'."""
    pad = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)  # masked anyway
    device = next(model.parameters()).device
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    out: list[str] = [""] * len(prompts)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", disable=not progress):
        rows = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in rows)
        ids = torch.tensor([[pad] * (width - len(encoded[i])) + encoded[i] for i in rows], device=device)
        mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in rows], device=device)
        criteria = StoppingCriteriaList([_Stop(tokenizer, stop, width)]) if stop else None
        generated = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                   pad_token_id=pad, temperature=None, top_p=None, top_k=None,
                                   stopping_criteria=criteria)
        for i, text in zip(rows, tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True), strict=True):
            cut = min([text.index(s) for s in stop if s in text], default=len(text))
            out[i] = text[:cut]
    return out
