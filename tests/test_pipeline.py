"""``prune_run``: the whole run as a library call writes what the CLI writes, and checks its input first."""

import json

import pytest

from prunekit import EvalRequest, PruneConfig, PrunekitError, prune_run
from prunekit.cli import main
from prunekit.data import CalibConfig
from prunekit.measure.config import EvalConfig
from prunekit.quant.config import QuantConfig


def test_the_library_call_writes_what_the_cli_writes(tiny_model_dir, text_files, tmp_path, capsys):
    config = PruneConfig(method="sparsegpt", pattern="2:4", quant=QuantConfig(wbits=4, groupsize=32))
    calib = CalibConfig(str(text_files["jsonl"]), nsamples=2, seqlen=32)
    summary = prune_run(str(tiny_model_dir), tmp_path / "lib", config, calib,
                        EvalRequest(str(text_files["txt"]), EvalConfig(32, 2)), eval_dense=True)
    assert summary["pattern"] == "2:4" and summary["ppl_dense"] > 0 and summary["ppl_pruned"] > 0
    assert main(["prune", "--model", str(tiny_model_dir), "--method", "sparsegpt", "--pattern", "2:4", "--wbits", "4",
                 "--groupsize", "32", "--calib", str(text_files["jsonl"]), "--nsamples", "2", "--seqlen", "32",
                 "--eval", str(text_files["txt"]), "--eval-seqlen", "32", "--max-windows", "2", "--eval-dense",
                 "--out", str(tmp_path / "cli")]) == 0
    cli_summary = json.loads(capsys.readouterr().out)
    for name in ("model.safetensors", "masks.safetensors", "quant.safetensors"):
        assert (tmp_path / "lib" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name
    assert {k: v for k, v in summary.items() if k in ("ppl_dense", "ppl_pruned", "bits_per_weight")} == \
        {k: v for k, v in cli_summary.items() if k in ("ppl_dense", "ppl_pruned", "bits_per_weight")}


def test_bad_input_fails_before_any_output(tiny_model_dir, text_files, tmp_path):
    calib = CalibConfig(str(text_files["jsonl"]), nsamples=2, seqlen=32)
    with pytest.raises(PrunekitError, match="offload is one of"):
        prune_run(str(tiny_model_dir), tmp_path / "a", PruneConfig(method="wanda"), calib, offload="tape")
    with pytest.raises(PrunekitError):
        prune_run(str(tiny_model_dir), tmp_path / "b", PruneConfig(method="wanda"), calib,
                  EvalRequest(str(tmp_path / "missing.txt")))
    assert not list(tmp_path.glob("a*")) and not list(tmp_path.glob("b*"))


def test_the_space_estimate_counts_the_files_that_go_along(tiny_model_dir):
    """Config and tokenizer files are written too (before, a destination with room for the weights alone passed the
    check and failed after the work)."""
    from prunekit.models import load_model
    from prunekit.pipeline import saved_bytes

    model = load_model(str(tiny_model_dir))[0]
    side = sum(f.stat().st_size for f in tiny_model_dir.iterdir() if f.suffix != ".safetensors")
    assert side > 0 and saved_bytes(model, tiny_model_dir) == saved_bytes(model) + side
