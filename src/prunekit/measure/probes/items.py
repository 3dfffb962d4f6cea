"""One probe item: a prompt, the answer whose likelihood is measured, and what a greedy generation must give."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


@dataclass(frozen=True)
class ProbeItem:
    id: str
    prompt: str
    answer: str  # the reference continuation scored for likelihood (a leading space where the prompt wants one)
    expected: str  # what the judge compares a generation with (a number; for code, the test program)
    meta: dict = field(default_factory=dict)  # e.g. length and depth of a retrieval item


def number(text: str) -> str | None:
    """A number as written (commas, a trailing .0 dropped), for exact comparison; None when there is none."""
    text = text.replace(",", "")
    try:
        value = float(text)
    except ValueError:
        return None
    return str(int(value)) if value.is_integer() else str(value)


def first_number(text: str) -> str | None:
    found = NUMBER.search(text)
    return number(found.group()) if found else None
