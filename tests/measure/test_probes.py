"""Probe families: generators deterministic for a seed with answers a checker verifies by computing them
(arithmetic) or locating them (retrieval); the file probes' loaders refuse bad files with one line; the judges and
scoring on a tiny model."""

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import byte_tokenizer, tiny_llama
from prunekit.errors import PrunekitError
from prunekit.measure.probes import arithmetic, code, gsm8k, retrieval
from prunekit.measure.probes.items import first_number
from prunekit.measure.probes.run import by_cell, compare_family, score_family

EXPRESSION = re.compile(r"^[\d\s()+*-]+$")


def _value(expression: str) -> int:
    """The expression's value, computed independently of the generator (checked to hold only digits and + - * ())."""
    assert EXPRESSION.match(expression)
    return eval(expression, {"__builtins__": {}})  # noqa: S307 - digits and operators only, checked above


@given(st.integers(0, 2**32))
@settings(max_examples=25, deadline=None)
def test_arithmetic_answers_are_the_computed_values(seed):
    items = arithmetic.arithmetic_items(8, seed)
    assert items == arithmetic.arithmetic_items(8, seed)  # deterministic for a seed
    for item in items:
        assert int(item.expected) == _value(item.meta["expression"])
        assert item.answer == f" {item.expected}" and item.prompt.endswith(f"What is {item.meta['expression']}?\nA:")
        for shot in re.findall(r"Q: What is (.+)\?\nA: (-?\d+)\n", item.prompt):
            assert _value(shot[0]) == int(shot[1])


def test_arithmetic_covers_each_kind_and_the_judge_reads_the_first_number():
    kinds = {i.meta["kind"] for i in arithmetic.arithmetic_items(300, 0)}
    assert {"chain", "1-digit +", "4-digit -", "2-digit *"} <= kinds
    item = arithmetic.arithmetic_items(1, 3)[0]
    assert arithmetic.judge(item, f" {item.expected}\nQ: 12") and not arithmetic.judge(item, " 7" + item.expected)
    assert first_number(" 1,234.0 apples") == "1234" and first_number("no digits") is None


def test_passkeys_sit_where_asked_at_the_asked_length():
    tok = byte_tokenizer()
    items = retrieval.passkey_items(tok, (256, 1024), (0.0, 0.5, 1.0), 2, seed=3)
    assert items == retrieval.passkey_items(tok, (256, 1024), (0.0, 0.5, 1.0), 2, seed=3)
    assert len(items) == 12 and len({i.expected for i in items}) == 12
    for item in items:
        assert item.prompt.count(item.expected) == 2  # the needle states it twice; the question never does
        assert abs(retrieval.locate(item) - item.meta["depth"]) < 0.15
        tokens = len(tok(item.prompt)["input_ids"])
        assert 0.8 * item.meta["length"] <= tokens <= 1.05 * item.meta["length"]
        assert retrieval.judge(item, f" {item.expected}. Remember") and not retrieval.judge(item, " 12345")


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


GSM = [{"question": f"What is {k} plus {k}?", "answer": f"{k} + {k} = <<{k}+{k}={2 * k}>>{2 * k}\n#### {2 * k:,}"}
       for k in range(1, 13)]


def test_gsm8k_prompts_are_eight_shot_and_the_final_number_is_read(tmp_path):
    items = gsm8k.gsm8k_items(_write(tmp_path / "g.jsonl", GSM))
    assert [i.id for i in items] == ["gsm8k/8", "gsm8k/9", "gsm8k/10", "gsm8k/11"]
    first = items[0]
    assert first.prompt.count("Question:") == 9 and first.expected == "18" and "<<" not in first.prompt
    assert first.answer.endswith("The answer is 18.")
    assert gsm8k.judge(first, " 9 + 9 = 18\nThe answer is 18.") and gsm8k.judge(first, " so 4 and then 18")
    assert not gsm8k.judge(first, " The answer is 17. Then 18")


@pytest.mark.parametrize(("rows", "message"), [
    (["{not json"], "not valid JSON"), ([{"question": "q"}], "not a GSM8K item"),
    ([{"question": "q", "answer": "no final"}], "not a GSM8K item"), (GSM[:8], "needs more than 8")])
def test_a_malformed_gsm8k_file_is_refused_with_one_line(tmp_path, rows, message):
    with pytest.raises(PrunekitError, match=message):
        gsm8k.gsm8k_items(_write(tmp_path / "g.jsonl", rows))


def test_a_missing_or_malformed_humaneval_file_is_refused(tmp_path):
    with pytest.raises(PrunekitError, match="no file"):
        code.humaneval_items(tmp_path / "missing.jsonl")
    with pytest.raises(PrunekitError, match="needs the text fields"):
        code.humaneval_items(_write(tmp_path / "h.jsonl", [{"task_id": "x", "prompt": "def f():\n"}]))


HUMANEVAL = {"task_id": "T/0", "prompt": "def add(a, b):\n    \"\"\"Sum.\"\"\"\n", "entry_point": "add",
             "canonical_solution": "    return a + b\n",
             "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"}


@pytest.mark.parametrize(("completion", "passes"), [
    ("    return a + b\n", True), ("    return a - b\n", False), ("    return (a +\n", False),
    ("    while True:\n        pass\n", False), ("    import os\n    os.fork()\n    return a + b\n", False)])
def test_code_completions_are_judged_by_their_tests_and_never_crash_the_check(tmp_path, completion, passes):
    item = code.humaneval_items(_write(tmp_path / "h.jsonl", [HUMANEVAL]))[0]
    assert code.judge(item, completion) is passes


def test_scoring_a_family_on_a_tiny_model_is_deterministic_and_pairs_with_itself():
    model, tok = tiny_llama(layers=1), byte_tokenizer()
    items = arithmetic.arithmetic_items(6, 0)
    first = score_family(model, tok, "arithmetic", items, progress=False)
    again = score_family(model, tok, "arithmetic", items, progress=False)
    assert [o["loss"] for o in first["items"]] == [o["loss"] for o in again["items"]]
    assert first["n"] == 6 and first["loss"] > 0 and 0 <= first["acc"] <= 1 and first["category"] == "arithmetic"
    pair = compare_family(first, again)
    assert pair["loss"]["diff"] == 0 and pair["loss"]["verdict"] == "within noise" and pair["acc"]["diff"] == 0


def test_retrieval_results_break_down_by_length_and_depth():
    rows = [{"id": str(k), "loss": float(k), "correct": k % 2, "length": 256 * (1 + k // 4), "depth": (k % 2) / 2}
            for k in range(8)]
    cells = by_cell(rows)
    assert set(cells) == {"length=256/depth=0", "length=256/depth=0.5", "length=512/depth=0", "length=512/depth=0.5"}
    assert cells["length=256/depth=0.5"]["acc"] == 1.0 and cells["length=512/depth=0"]["loss"] == 5.0
