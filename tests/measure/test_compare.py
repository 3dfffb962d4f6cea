from __future__ import annotations

import json

import pytest

from conftest import TINY_CHECK, tiny_llama
from prunekit.cli import main
from prunekit.data import shared_data_dir
from prunekit.errors import PrunekitError
from prunekit.measure.check import COMMONSENSE, LANGUAGE
from prunekit.measure.compare import CompareConfig, run_compare, storage_mb
from prunekit.measure.config import BUDGETS, TaskConfig
from prunekit.measure.report import write_report
from prunekit.oneshot.config import PruneConfig
from prunekit.oneshot.pruner import prune


def test_runs_dedupe_nm_patterns():
    cfg = CompareConfig(sparsities=(0.5, 0.7), patterns=("unstructured", "2:4"), methods=("magnitude", "wanda"))
    runs = [(c.method, c.pattern, c.sparsity) for c in cfg.runs]
    assert runs == [("magnitude", "unstructured", 0.5), ("magnitude", "unstructured", 0.7), ("magnitude", "2:4", 0.5),
                    ("wanda", "unstructured", 0.5), ("wanda", "unstructured", 0.7), ("wanda", "2:4", 0.5)]


@pytest.mark.parametrize("kwargs", [{"methods": ("prune-it",)}, {"sparsities": (1.0,)}, {"patterns": ("3:2",)},
                                    {"nsamples": 0}, {"new_tokens": 1}, {"patterns": ()}])
def test_bad_config(kwargs):
    with pytest.raises(PrunekitError):
        CompareConfig(**kwargs)


def test_storage_mb_counts_nm_only_when_every_layer_is_valid():
    model = tiny_llama()
    prune(model, PruneConfig(sparsity=0.5, pattern="2:4"))
    mb = storage_mb(model)
    assert set(mb) == {"dense", "bitmask", "csr", "nm"} and mb["nm"] < mb["dense"]
    prune(tiny_model := tiny_llama(), PruneConfig(sparsity=0.5))
    assert "nm" not in storage_mb(tiny_model)


@pytest.mark.slow
@pytest.mark.kernel
def test_compare_end_to_end(tiny_model_dir, text_files, tmp_path):
    pytest.importorskip("lm_eval", reason="task columns need the tasks extra (lm-eval)")
    rows = [{"context": f"item {i} is", "choices": [" red", " blue sky"], "gold": i % 2} for i in range(6)]
    (tmp_path / "mc.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    cfg = CompareConfig(model=str(tiny_model_dir), patterns=("unstructured", "2:4"), methods=("magnitude", "wanda"),
                        calib=str(text_files["jsonl"]), nsamples=2, seqlen=32, eval_data=str(text_files["txt"]),
                        eval_seqlen=64, max_windows=2, prompt_tokens=16, new_tokens=3, bench_reps=1,
                        tasks=TaskConfig((str(tmp_path / "mc.jsonl"),)))
    results = run_compare(cfg)
    assert [(r["method"], r["pattern"]) for r in results["runs"]] == [
        ("magnitude", "unstructured"), ("magnitude", "2:4"), ("wanda", "unstructured"), ("wanda", "2:4")]
    for r in results["runs"]:
        assert r["sparsity"] == 0.5 and r["perplexity"] > 0 and len(r["layer_sparsity"]) == 14
        assert r["weight_mb"]["bitmask"] < r["weight_mb"]["dense"]
    assert set(results["kernel_sweep"]) == {"30%", "50%", "60%", "70%", "80%", "90%", "95%"}
    assert all(r["tasks"]["tasks"]["mc"]["items"] == 6 and "verdict" in r["tasks"]["paired"]["mc"]["acc"]
               for r in results["runs"])
    out = tmp_path / "report"
    out.mkdir()
    files = write_report(results, out, "prunekit compare ...")
    assert all((out / f).stat().st_size > 0 for f in files) and "tasks.json" in files
    table = [line for line in (out / "report.md").read_text().splitlines() if line.startswith("| wanda")]
    assert len(table) == 4  # the main table and the task table, two runs each
    assert len(json.loads((out / "tasks.json").read_text())) == 5  # dense and four runs, per item
    assert json.loads((out / "results.json").read_text())["results"]["dense_perplexity"] > 0


@pytest.mark.slow
@pytest.mark.kernel
@pytest.mark.skipif(shared_data_dir() is None, reason="needs the shared data folder")
def test_compare_gains_the_shipping_check_columns(long_tiny_dir, text_files, tmp_path, monkeypatch):
    monkeypatch.setitem(BUDGETS, "quick", TINY_CHECK)
    cfg = CompareConfig(model=str(long_tiny_dir), patterns=("unstructured",), methods=("magnitude",), sparsities=(0.5, 0.9),
                        calib=str(text_files["jsonl"]), nsamples=1, seqlen=32, eval_data=str(text_files["txt"]),
                        eval_seqlen=64, max_windows=1, prompt_tokens=8, new_tokens=2, bench_reps=1, check="quick")
    results = run_compare(cfg)
    half, most = (r["check"] for r in results["runs"])
    assert set(half) == {LANGUAGE, COMMONSENSE, "arithmetic", "retrieval", "code", "reasoning"}
    # paired with dense on the same windows: the dense side is the same for both runs, the 90% side is worse
    assert half[LANGUAGE]["perplexity"][0] == most[LANGUAGE]["perplexity"][0]
    assert most[LANGUAGE]["loss"]["diff"] > half[LANGUAGE]["loss"]["diff"]
    out = tmp_path / "report"
    out.mkdir()
    write_report(results, out, "prunekit compare --check quick")
    report = (out / "report.md").read_text()
    table = report[report.index("## Shipping check per category"):].splitlines()
    assert "| reasoning |" in table[4] and len([line for line in table if line.startswith("| magnitude")]) == 2
    with pytest.raises(PrunekitError, match="check budget"):
        CompareConfig(check="slow")


def test_compare_cli_bad_input_writes_nothing(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["compare", "--methods", "magnitude,nope", "--out", str(out)]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err and not out.exists()
    assert main(["compare", "--sparsity", "half", "--out", str(out)]) == 2
    assert not out.exists()
