"""Arithmetic problems, generated and seeded: 1–4 digit +, −, × and two-step chains, asked few-shot. Every answer
is computed here from the operands (Python integers), never parsed from text."""

from __future__ import annotations

import operator
import random

from .items import ProbeItem, first_number

OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
SHOTS = 4


def _problem(rng: random.Random) -> tuple[str, int, str]:
    """(expression, value, kind): one or two operations on 1–4 digit numbers."""
    digits = rng.randint(1, 4)
    a, b = (rng.randint(10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1) for _ in range(2))
    op = rng.choice(list(OPS))
    if op == "*":  # keep products within what a small model might still do: one factor of 1–2 digits
        b = rng.randint(2, 99)
    if rng.random() < 0.3:  # a two-step chain, evaluated left to right with parentheses
        op2, c = rng.choice(["+", "-"]), rng.randint(1, 10**digits - 1)
        return f"({a} {op} {b}) {op2} {c}", OPS[op2](OPS[op](a, b), c), "chain"
    return f"{a} {op} {b}", OPS[op](a, b), f"{digits}-digit {op}"


def arithmetic_items(count: int, seed: int = 0) -> list[ProbeItem]:
    rng = random.Random(seed)
    items = []
    for i in range(count):
        shots = [_problem(rng) for _ in range(SHOTS)]
        expr, value, kind = _problem(rng)
        prompt = "".join(f"Q: What is {e}?\nA: {v}\n\n" for e, v, _ in shots) + f"Q: What is {expr}?\nA:"
        items.append(ProbeItem(f"arithmetic/{i}", prompt, f" {value}", str(value), {"kind": kind, "expression": expr}))
    return items


def judge(item: ProbeItem, generation: str) -> bool:
    return first_number(generation) == item.expected
