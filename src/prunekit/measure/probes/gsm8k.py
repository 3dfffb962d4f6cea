"""Multi-step reasoning: GSM8K test problems from a local file. The likelihood measure is the per-token loss of the
worked solution given the question; the generation measure is the exact match of the final number of a greedy
8-shot answer. The shots are the file's first items, which are then not scored."""

from __future__ import annotations

import re
from pathlib import Path

from ...data import read_jsonl
from ...errors import PrunekitError
from ...fsutil import regular_file
from .items import NUMBER, ProbeItem, number

SHOTS = 8
STOP = ("\n\nQuestion:", "\nQuestion:")
CALCULATOR = re.compile(r"<<[^>]*>>")  # GSM8K's calculator annotations, not part of the reasoning as written


def _solution(answer: str) -> tuple[str, str]:
    """(worked solution ending in 'The answer is N.', N) from GSM8K's 'steps\\n#### N'."""
    steps, sep, final = answer.rpartition("####")
    value = number(final.strip())
    if not sep or value is None:
        raise ValueError("no final '#### N'")
    return f"{CALCULATOR.sub('', steps).strip()}\nThe answer is {value}.", value


def gsm8k_items(path: str | Path, limit: int | None = None) -> list[ProbeItem]:
    path = regular_file(path)
    rows = []
    for lineno, row in read_jsonl(path):
        try:
            if not isinstance(row, dict) or not isinstance(row.get("question"), str):
                raise ValueError("no 'question' text")
            solution, value = _solution(row["answer"] if isinstance(row.get("answer"), str) else "")
        except ValueError as e:
            raise PrunekitError(f"{path}:{lineno}: not a GSM8K item ({e})") from None
        rows.append((row["question"].strip(), solution, value))
    if len(rows) <= SHOTS:
        raise PrunekitError(f"{path} holds {len(rows)} GSM8K items; the {SHOTS}-shot prompt needs more than {SHOTS}")
    shots = "".join(f"Question: {q}\nAnswer: {s}\n\n" for q, s, _ in rows[:SHOTS])
    scored = rows[SHOTS:] if limit is None else rows[SHOTS : SHOTS + limit]
    return [ProbeItem(f"gsm8k/{SHOTS + i}", f"{shots}Question: {q}\nAnswer:", f" {s}", v)
            for i, (q, s, v) in enumerate(scored)]


def final_number(generation: str) -> str | None:
    """The number after 'The answer is' (or '####'), else the last number written."""
    for marker in ("The answer is", "####"):
        if marker in generation:
            found = NUMBER.search(generation.split(marker, 1)[1])
            if found:
                return number(found.group())
    found = NUMBER.findall(generation)
    return number(found[-1]) if found else None


def judge(item: ProbeItem, generation: str) -> bool:
    return final_number(generation) == item.expected
