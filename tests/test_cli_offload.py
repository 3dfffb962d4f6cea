"""prune --offload disk and --workers through the command line: same output as in memory, nothing
half-written when interrupted, disk space checked before any work."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from prunekit import pipeline
from prunekit.cli import main
from prunekit.store.shards import INDEX_FILE, CheckpointReader


def _prune(tiny_model_dir, text_files, out, *extra):
    return main(["prune", "--model", str(tiny_model_dir), "--method", "sparsegpt", "--sparsity", "0.5",
                 "--calib", str(text_files["jsonl"]), "--nsamples", "4", "--seqlen", "32", "--blocksize", "16",
                 "--eval", str(text_files["txt"]), "--eval-seqlen", "32", "--max-windows", "2", "--out", str(out),
                 *extra])


def _tensors(folder):
    reader = CheckpointReader(folder)
    return reader.read(reader.names(), torch.float32)


def test_offload_disk_writes_what_memory_writes(tiny_model_dir, text_files, tmp_path, capsys):
    assert _prune(tiny_model_dir, text_files, tmp_path / "mem", "--offload", "none") == 0
    mem = json.loads(capsys.readouterr().out)
    assert _prune(tiny_model_dir, text_files, tmp_path / "disk", "--offload", "disk") == 0
    disk = json.loads(capsys.readouterr().out)
    assert (tmp_path / "disk" / INDEX_FILE).is_file()
    a, b = _tensors(tmp_path / "mem"), _tensors(tmp_path / "disk")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "mem" / "masks.safetensors").read_bytes() == (tmp_path / "disk" / "masks.safetensors").read_bytes()
    assert disk["ppl_pruned"] == mem["ppl_pruned"]
    manifest = json.loads((tmp_path / "disk" / "manifest.json").read_text())
    assert manifest["execution"] == {"offload": "disk", "device": "cpu", "processes": 1}
    assert manifest["result"]["calib_dtype"]["dtype"] in ("bfloat16", "float32")


def test_offload_auto_streams_when_memory_is_short(tiny_model_dir, text_files, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pipeline, "available_memory", lambda: 1000)  # bytes: far less than the weights
    assert _prune(tiny_model_dir, text_files, tmp_path / "out") == 0
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["execution"]["offload"] == "disk"


def test_interrupted_offload_leaves_the_earlier_output(tiny_model_dir, text_files, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert _prune(tiny_model_dir, text_files, out, "--offload", "none") == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    loads = []

    def interrupted(self, name, block):  # the second block never arrives: the user pressed Ctrl-C
        loads.append(name)
        if len(loads) == 2:
            raise KeyboardInterrupt
        original(self, name, block)

    original = pipeline.DiskOffload.load
    monkeypatch.setattr(pipeline.DiskOffload, "load", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _prune(tiny_model_dir, text_files, out, "--offload", "disk", "--overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", "tiny", "eval.txt", "calib.jsonl"])


def test_too_little_disk_is_an_error_before_any_work(tiny_model_dir, text_files, tmp_path, monkeypatch, capsys):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=10_000))
    monkeypatch.setattr(pipeline, "load_skeleton", lambda *a, **k: pytest.fail("weights loaded before the space check"))
    assert _prune(tiny_model_dir, text_files, tmp_path / "out", "--offload", "disk") == 2
    assert "MB free; the output needs about" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bad_device_and_workers_exit_2(tiny_model_dir, text_files, tmp_path, capsys):
    assert _prune(tiny_model_dir, text_files, tmp_path / "a", "--device", "tpu") == 2
    assert "--device" in capsys.readouterr().err
    assert _prune(tiny_model_dir, text_files, tmp_path / "b", "--workers", "0") == 2
    assert "--workers must be >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_two_workers_match_one_process(tiny_model_dir, text_files, tmp_path, capfd):
    assert _prune(tiny_model_dir, text_files, tmp_path / "one") == 0
    one = json.loads(capfd.readouterr().out)
    assert _prune(tiny_model_dir, text_files, tmp_path / "two", "--workers", "2") == 0
    out = capfd.readouterr().out
    two = json.loads(out[out.index("{"):])
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["execution"]["processes"] == 2 and manifest["result"]["calibration_tokens"] == 4 * 32
    a, b = load_file(tmp_path / "one" / "model.safetensors"), _tensors(tmp_path / "two")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)
    assert two["ppl_pruned"] == pytest.approx(one["ppl_pruned"], rel=1e-3)
