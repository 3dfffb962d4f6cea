"""Code: HumanEval problems from a local file. The likelihood measure is the per-token loss of the canonical body
given the prompt; the generation measure is pass@1 of the greedy completion, run with the problem's tests in the
sandbox (``sandbox.py``), never in this process. A completion that does not parse or crashes is a failure."""

from __future__ import annotations

from pathlib import Path

from ...data import read_jsonl
from ...errors import PrunekitError
from ...fsutil import regular_file
from .items import ProbeItem
from .sandbox import run_program

FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
STOP = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert")
TIMEOUT = 5.0  # seconds per program


def humaneval_items(path: str | Path, limit: int | None = None) -> list[ProbeItem]:
    path = regular_file(path)
    items = []
    for lineno, row in read_jsonl(path):
        if not isinstance(row, dict) or any(not isinstance(row.get(f), str) for f in FIELDS):
            raise PrunekitError(f"{path}:{lineno}: a HumanEval item needs the text fields {', '.join(FIELDS)}")
        test = f"{row['test']}\n\ncheck({row['entry_point']})\n"
        items.append(ProbeItem(f"code/{row['task_id']}", row["prompt"], row["canonical_solution"], test))
        if limit is not None and len(items) == limit:
            break
    if not items:
        raise PrunekitError(f"{path} holds no HumanEval item")
    return items


def program(item: ProbeItem, completion: str) -> str:
    return item.prompt + completion + "\n" + item.expected


def judge(item: ProbeItem, generation: str) -> bool:
    return run_program(program(item, generation), TIMEOUT).passed
