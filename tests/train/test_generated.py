"""Training text sampled from the teacher: seeded, cached, long enough, and usable from the CLI."""

import json

import pytest

from conftest import byte_tokenizer, tiny_llama
from prunekit.cli import main
from prunekit.data import CalibConfig, sample_calibration
from prunekit.train import generated
from prunekit.train.generated import generated_text


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))


def test_the_text_is_seeded_cached_and_long_enough(monkeypatch):
    teacher, tok = tiny_llama(), byte_tokenizer()
    first = generated_text(teacher, tok, 200, 64, seed=0, identity={"spec": "tiny"}, progress=False)
    assert first.name == "teacher" and len(first.documents) == 4 and first.sha256
    monkeypatch.setattr(generated, "_sample", lambda *a: pytest.fail("sampled again instead of reading the cache"))
    again = generated_text(teacher, tok, 200, 64, seed=0, identity={"spec": "tiny"}, progress=False)
    assert again.documents == first.documents and again.sha256 == first.sha256
    monkeypatch.undo()
    other = generated_text(teacher, tok, 200, 64, seed=1, identity={"spec": "tiny"}, progress=False)
    assert other.documents != first.documents
    assert sample_calibration(first, tok, CalibConfig("teacher", 6, 32)).shape == (6, 32)


def test_cli_finetunes_on_text_sampled_from_its_teacher(tiny_model_dir, text_files, tmp_path):
    pruned, out = tmp_path / "pruned", tmp_path / "ft"
    assert main(["prune", "--model", str(tiny_model_dir), "--pattern", "2:4", "--out", str(pruned)]) == 0
    assert main(["finetune", "--model", str(pruned), "--data", "teacher", "--teacher", str(tiny_model_dir), "--steps",
                 "2", "--seqlen", "32", "--batch-size", "1", "--eval", str(text_files["txt"]), "--eval-seqlen", "32",
                 "--max-windows", "1", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["data"]["name"] == "teacher" and manifest["data"]["sha256"]
    assert manifest["finetune"]["teacher"] == str(tiny_model_dir) and manifest["finetune"]["loss"] == "ce"
