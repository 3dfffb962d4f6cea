"""The shipping check: paired intervals for losses, the gate's rules on hand-made results, and ``prunekit check``
from a model folder to a report card and an exit code (0 fit, 3 regressed, 2 bad input, nothing written)."""

import json

import pytest

from conftest import TINY_CHECK as TINY
from prunekit.cli import main
from prunekit.data import shared_data_dir
from prunekit.measure.check import COMMONSENSE, LANGUAGE, Limits, gate
from prunekit.measure.config import BUDGETS
from prunekit.measure.intervals import paired_bootstrap

pytestmark = pytest.mark.skipif(shared_data_dir() is None, reason="needs the shared data folder")


def test_paired_bootstrap_on_hand_made_losses():
    same = paired_bootstrap([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert same["diff"] == 0 and same["ci"] == [0, 0] and same["verdict"] == "within noise"
    shifted = paired_bootstrap([1.0, 2.0, 3.0, 4.0], [1.5, 2.5, 3.5, 4.5])
    assert shifted["diff"] == pytest.approx(0.5) and shifted["ci"] == pytest.approx([0.5, 0.5])
    assert shifted["verdict"] == "an increase"
    noisy = paired_bootstrap([1.0] * 10, [1.5, 0.5] * 5)
    assert noisy["ci"][0] < 0 < noisy["ci"][1] and noisy["verdict"] == "within noise"


def _result(task_outcomes, family_correct, family_loss, window_loss=(3.0, 3.0)):
    tasks = {"tasks": {"t": {"sha256": "x", "indices": list(range(len(task_outcomes))),
                             "per_item": {"acc": list(task_outcomes)}}}}
    items = [{"id": str(i), "loss": family_loss[i], "correct": c} for i, c in enumerate(family_correct)]
    right = sum(family_correct)
    return {"perplexity": {"data": {"sha256": "w"}, "seqlen": 8, "perplexity": 20.0, "window_loss": list(window_loss)},
            "tasks": tasks, "probes": {"arithmetic": {"items": items, "acc": right / len(items),
                                                      "acc_ci": [max(0.0, right / len(items) - 0.1), 1.0]}}}


def test_the_gate_fails_a_real_drop_beyond_budget_and_passes_noise():
    base = _result([1] * 200, [1] * 100, [1.0] * 100)
    dropped = _result([1] * 170 + [0] * 30, [1] * 100, [1.0] * 100)  # 15 points, 30 items lost, none gained
    verdict = gate(dropped, base, Limits(max_drop=2))
    assert verdict[COMMONSENSE]["fails"] and not verdict["arithmetic"]["fails"] and not verdict[LANGUAGE]["fails"]
    small = _result([1] * 198 + [0] * 2, [1] * 100, [1.0] * 100)  # a 1-point drop: within the budget
    assert not gate(small, base, Limits(max_drop=2))[COMMONSENSE]["fails"]
    worse = _result([1] * 200, [1] * 100, [1.2] * 100, window_loss=(3.3, 3.3))  # losses up 20% and 10%
    verdict = gate(worse, base, Limits(max_loss_increase=0.05))
    assert verdict["arithmetic"]["fails"] and verdict[LANGUAGE]["fails"]
    assert not gate(worse, base, Limits(max_loss_increase=0.25))["arithmetic"]["fails"]


def test_an_accuracy_at_the_floor_carries_no_signal_and_is_not_judged():
    base = _result([1] * 10, [0] * 99 + [1], [1.0] * 100)
    base["probes"]["arithmetic"]["acc_ci"] = [0.0, 0.05]
    lost = _result([1] * 10, [0] * 100, [1.0] * 100)
    acc = gate(lost, base, Limits())["arithmetic"]["acc"]
    assert acc["signal"] is False and acc["fails"] is False


@pytest.mark.slow
def test_cli_check_writes_the_card_and_gates_with_its_exit_code(long_tiny_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(BUDGETS, "quick", TINY)
    first = tmp_path / "first"
    assert main(["check", "--model", str(long_tiny_dir), "--out", str(first)]) == 0  # no baseline: absolute
    assert "nothing is judged" in (first / "check.md").read_text()
    result = json.loads((first / "check.json").read_text())
    assert set(result["result"]["probes"]) == {"arithmetic", "retrieval", "code", "gsm8k"}
    assert all("correct" in o for o in result["result"]["probes"]["code"]["items"])
    again = tmp_path / "again"
    assert main(["check", "--model", str(long_tiny_dir), "--baseline", str(first / "check.json"), "--out",
                 str(again)]) == 0  # the same model on the same items: fit to ship
    assert "fit to ship" in (again / "check.md").read_text() and (again / "check.png").read_bytes()[:4] == b"\x89PNG"
    better = json.loads((first / "check.json").read_text())  # a baseline whose losses are all lower by a third
    for family in better["result"]["probes"].values():
        for o in family["items"]:
            o["loss"] *= 2 / 3
    better["result"]["perplexity"]["window_loss"] = [v * 2 / 3 for v in better["result"]["perplexity"]["window_loss"]]
    (tmp_path / "better.json").write_text(json.dumps(better))
    capsys.readouterr()
    assert main(["check", "--model", str(long_tiny_dir), "--baseline", str(tmp_path / "better.json"), "--out",
                 str(tmp_path / "gated")]) == 3
    summary = json.loads(capsys.readouterr().out)
    assert summary["verdict"] == "regressed" and LANGUAGE in summary["failed"]
    assert "does not ship" in (tmp_path / "gated" / "check.md").read_text()


def test_a_missing_or_malformed_probe_file_exits_2_with_one_line_and_writes_nothing(long_tiny_dir, tmp_path,
                                                                                    monkeypatch, capsys):
    monkeypatch.setitem(BUDGETS, "quick", TINY)
    shared, data = shared_data_dir(), tmp_path / "data"
    (data / "probes").mkdir(parents=True)
    for name in ("wikitext2-test.txt", "tasks"):
        (data / name).symlink_to(shared / name)
    monkeypatch.setenv("PRUNEKIT_DATA", str(data))
    capsys.readouterr()
    assert main(["check", "--model", str(long_tiny_dir), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "humaneval.jsonl" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "a").exists()
    (data / "probes" / "humaneval.jsonl").symlink_to(shared / "probes" / "humaneval.jsonl")
    (data / "probes" / "gsm8k_test.jsonl").write_text('{"question": "q", "answer": "no final number"}\n')
    assert main(["check", "--model", str(long_tiny_dir), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "gsm8k_test.jsonl:1: not a GSM8K item" in err and not (tmp_path / "a").exists()
