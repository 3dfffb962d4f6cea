"""Bad input and faults at the CLI: one line on stderr, exit code 2, nothing written, before any long work."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from conftest import byte_tokenizer
from prunekit.cli import main
from prunekit.fsutil import claim_output


@pytest.fixture
def files(tiny_model_dir, text_files, tmp_path):
    """Broken inputs next to good ones, by name."""
    out = {"model": str(tiny_model_dir), "text": str(text_files["txt"]), "calib": str(text_files["jsonl"])}

    def model_copy(name):
        path = tmp_path / name
        shutil.copytree(tiny_model_dir, path)
        return path

    weights = (tiny_model_dir / "model.safetensors").read_bytes()
    (model_copy("truncated") / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    pickled = model_copy("pickled")
    (pickled / "model.safetensors").unlink()

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo this payload must never run",))

    torch.save({"x": Payload()}, pickled / "pytorch_model.bin")
    (tmp_path / "garbage.gguf").write_bytes(b"GGUF" + bytes(range(256)) * 4)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait ".encode("latin-1") * 50)
    task = '{"context": "q", "choices": [" a", " b"], "gold": 0}\n{"context": "q", "gold": 0}\n'
    (tmp_path / "task.jsonl").write_text(task)
    (tmp_path / "user-files").mkdir()
    (tmp_path / "user-files" / "thesis.tex").write_text("years of work")
    (tmp_path / "a-file").write_text("x")
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=256, n_positions=64)).save_pretrained(gpt2)
    byte_tokenizer().save_pretrained(gpt2)
    pruned = tmp_path / "pruned"
    assert main(["prune", "--model", out["model"], "--out", str(pruned)]) == 0
    bad_manifest = tmp_path / "bad-manifest"
    shutil.copytree(pruned, bad_manifest)
    (bad_manifest / "manifest.json").write_text("{not json")
    bad_masks = tmp_path / "bad-masks"
    shutil.copytree(pruned, bad_masks)
    (bad_masks / "masks.safetensors").write_bytes(b"\x00" * 100)
    quantized = tmp_path / "quantized"
    assert main(["quantize", "--model", out["model"], "--wbits", "4", "--method", "rtn", "--out", str(quantized)]) == 0
    bad_grid = tmp_path / "bad-grid"
    shutil.copytree(quantized, bad_grid)
    data = bytearray((bad_grid / "quant.safetensors").read_bytes())
    data[-3] ^= 0x10  # one bit of a zero point or scale
    (bad_grid / "quant.safetensors").write_bytes(bytes(data))
    bad_weights = tmp_path / "bad-weights"
    shutil.copytree(pruned, bad_weights)
    (bad_weights / "model.safetensors").write_bytes(b"\xff" * 64)
    return out | {k: str(v) for k, v in [("truncated", tmp_path / "truncated"), ("pickled", pickled),
                                          ("gguf", tmp_path / "garbage.gguf"), ("latin1", tmp_path / "latin1.txt"),
                                          ("task", tmp_path / "task.jsonl"),
                                          ("user", tmp_path / "user-files"), ("file", tmp_path / "a-file"),
                                          ("gpt2", gpt2), ("pruned", pruned), ("bad_manifest", bad_manifest),
                                          ("bad_masks", bad_masks), ("bad_weights", bad_weights),
                                          ("bad_grid", bad_grid),
                                          ("out", tmp_path / "out"), ("tmp", tmp_path)]}


PRUNE = ["prune", "--model", "{model}", "--out", "{out}", "--nsamples", "2", "--seqlen", "32"]
EVAL = ["eval", "--model", "{model}", "--data", "{text}"]
CASES = [  # (argv with {file} placeholders, fragment of the one-line error)
    (["prune", "--model", "{truncated}", "--out", "{out}"], "cannot load model"),
    (["prune", "--model", "{gguf}", "--out", "{out}"], "as a GGUF model"),
    (["prune", "--model", "{pickled}", "--out", "{out}"], "pickled weights were refused"),
    ([*PRUNE, "--include", "mlp(["], "is not a regular expression"),
    ([*PRUNE, "--method", "wanda", "--calib", "{latin1}"], "is not UTF-8 text"),
    ([*PRUNE, "--eval", "{text}", "--max-windows", "-1"], "max_windows must be >= 1"),
    ([*PRUNE, "--eval", "{text}", "--max-windows", "0"], "max_windows must be >= 1"),
    ([*PRUNE, "--pattern", "1:1000"], "no targeted layer can be tiled by 1:1000"),
    ([*PRUNE, "--pattern", "2:4", "--max-layer-sparsity", "0.4"], "lies outside"),
    (["prune", "--model", "{gpt2}", "--method", "wanda", "--nsamples", "2", "--seqlen", "128", "--out", "{out}"],
     "longer than the model's 64 positions"),
    ([*PRUNE, "--out", "{user}", "--overwrite"], "is not a prunekit output"),
    ([*PRUNE, "--out", "{file}/sub"], "cannot write in"),
    ([*EVAL, "--seqlen", "1"], "seqlen must be >= 2"),
    ([*EVAL, "--seqlen", "64", "--eval-batch-size", "0"], "batch size must be >= 1"),
    ([*EVAL, "--seqlen", "64", "--out", "{tmp}"], "is a folder"),
    (["finetune", "--model", "{pruned}", "--data", "{calib}", "--steps", "2", "--lr", "nan", "--out", "{out}"],
     "learning rate"),
    (["bench", "--model", "{pruned}", "--layout", "zip"], "invalid choice: 'zip'"),
    ([*EVAL, "--tasks", "{task}"], "task.jsonl:2: expected 'choices' and 'gold'"),
    ([*EVAL, "--tasks", "piqa", "--limit", "0"], "must be >= 1"),
    ([*PRUNE, "--tasks", "{task}"], "task.jsonl:2:"),
    (["info", "{bad_manifest}"], "is not a readable manifest"),
    (["info", "{bad_grid}"], "checksum does not match"),
    (["quantize", "--model", "{model}", "--out", "{out}"], "quantize needs --wbits"),
    (["quantize", "--model", "{model}", "--out", "{out}", "--wbits", "9"], "wbits must be 2 to 8"),
    (["quantize", "--model", "{model}", "--out", "{out}", "--wbits", "4", "--method", "gptq", "--act-order",
      "--groupsize", "48", "--seqlen", "32"], "--groupsize 48 does not divide its input width 64"),
    ([*PRUNE, "--wbits", "4", "--order", "joint"], "rounds inside SparseGPT"),
    (["info", "{bad_masks}"], "not a readable safetensors file"),
    (["export", "{bad_weights}", "{out}"], "not a readable safetensors file"),
]


@pytest.mark.slow
def test_bad_input_table(files, capsys):
    """Each case once: exit 2, a single 'prunekit: error:' line naming the problem, and no output written."""
    capsys.readouterr()
    for argv, fragment in CASES:
        argv = [a.format(**files) for a in argv]
        before = sorted(p.name for p in os.scandir(files["tmp"]))
        code = main(argv)
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if "error" in line.lower()]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("prunekit: error: "), (argv, err)
        assert fragment in lines[0], (argv, lines[0])
        assert sorted(p.name for p in os.scandir(files["tmp"])) == before, argv
    assert Path(files["user"], "thesis.tex").read_text() == "years of work"


def test_full_destination_is_found_before_the_work(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import prunekit.fsutil as fsutil

    monkeypatch.setattr(fsutil.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9 - 1024, 1024))
    monkeypatch.setattr("prunekit.pipeline.prune", lambda *a, **k: pytest.fail("pruned despite no room for the output"))
    assert main(["prune", "--model", str(tiny_model_dir), "--out", str(tmp_path / "out")]) == 2
    assert "MB free; the output needs about" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_a_second_run_on_the_same_out_fails_at_once(tiny_model_dir, tmp_path, capsys):
    with claim_output(tmp_path / "out"):
        assert main(["prune", "--model", str(tiny_model_dir), "--out", str(tmp_path / "out")]) == 2
    assert "another prunekit run is writing" in capsys.readouterr().err
    assert main(["prune", "--model", str(tiny_model_dir), "--out", str(tmp_path / "out")]) == 0  # released


def test_the_manifest_identifies_model_code_and_runtime(tiny_model_dir, tmp_path):
    assert main(["prune", "--model", str(tiny_model_dir), "--out", str(tmp_path / "a")]) == 0
    assert main(["prune", "--model", str(tiny_model_dir), "--out", str(tmp_path / "b")]) == 0
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    from prunekit.fsutil import sha256_file

    files = manifest["model"]["fingerprint"]["files_sha256"]
    assert files == {"model.safetensors": sha256_file(tiny_model_dir / "model.safetensors")}
    assert manifest["runtime"]["threads"] == torch.get_num_threads() and manifest["runtime"]["blas"]
    assert "prunekit_commit" in manifest["versions"]
    for name in ("masks.safetensors", "model.safetensors"):  # identical runs, identical bytes
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
