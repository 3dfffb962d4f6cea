"""In-context retrieval: a five-digit pass key hidden in filler text at a depth (0 = start, 1 = end) of a context of
a given length in tokens; the model is asked for it at the end. The key is found in the prompt by the checker."""

from __future__ import annotations

import random

from .items import ProbeItem, first_number

FILLER = ("The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.", "There and back again.")
QUESTION = "\nWhat is the pass key? The pass key is"


def passkey_items(tokenizer, lengths: tuple[int, ...], depths: tuple[float, ...], per_cell: int,
                  seed: int = 0) -> list[ProbeItem]:
    """``per_cell`` items for every (length, depth); lengths are the prompts' token counts (about)."""
    rng = random.Random(seed)
    cost = [len(tokenizer(f" {s}")["input_ids"]) for s in FILLER]  # tokens of each filler sentence
    items = []
    for length in lengths:
        for depth in depths:
            for k in range(per_cell):
                key = str(rng.randint(10000, 99999))
                needle = f" The pass key is {key}. Remember it. {key} is the pass key."
                room = length - len(tokenizer(needle + QUESTION)["input_ids"])
                filler, used = [], 0
                while used + cost[len(filler) % len(FILLER)] <= room:
                    used += cost[len(filler) % len(FILLER)]
                    filler.append(f" {FILLER[len(filler) % len(FILLER)]}")
                before = round(len(filler) * depth)
                prompt = ("".join(filler[:before]) + needle + "".join(filler[before:]) + QUESTION).lstrip()
                items.append(ProbeItem(f"retrieval/{length}/{depth:g}/{k}", prompt, f" {key}.", key,
                                       {"length": length, "depth": depth}))
    return items


def judge(item: ProbeItem, generation: str) -> bool:
    return first_number(generation) == item.expected


def locate(item: ProbeItem) -> float:
    """Where the key sits in the prompt: the share of the filler that comes before it (the checker's view)."""
    body = item.prompt[: -len(QUESTION)]
    start = body.index(item.expected)
    needle = body.index(" is the pass key.", start) + len(" is the pass key.") - body.rindex("The pass key", 0, start)
    return body.rindex("The pass key", 0, start) / max(1, len(body) - needle)
