"""Checkpoints and resume: a run killed after a checkpoint and resumed ends with the same weights and log as one
never stopped; a left checkpoint is never silently dropped or resumed into another run; the CLI writes the curve."""

import copy
import json

import pytest
import torch

from conftest import byte_tokenizer, tiny_llama
from prunekit import PruneConfig, prune
from prunekit.cli import main
from prunekit.data import TextSource
from prunekit.errors import PrunekitError
from prunekit.train.checkpoint import Checkpoints, checkpoint_folder
from prunekit.train.config import FinetuneConfig
from prunekit.train.finetune import finetune

TEXT = TextSource("t", ("the quick brown fox jumps over the lazy dog. " * 60,), None, None)
CONFIG = FinetuneConfig(steps=5, seqlen=32, batch_size=2, lr=3e-3, loss="kd:0.5,ce:0.5")


def _killed_at(at: int):
    """``Checkpoints.due`` that stops the run (as a kill would) once ``at`` steps are done."""
    due = Checkpoints.due

    def kill(self, step: int, steps: int) -> bool:
        if step == at:
            raise KeyboardInterrupt
        return due(self, step, steps)
    return kill


def _pruned():
    model = tiny_llama()
    prune(model, PruneConfig(pattern="2:4"), progress=False)
    return model


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_resume_after_a_kill_gives_the_weights_of_a_run_never_stopped(tmp_path, lora_rank):
    config = FinetuneConfig(**{**CONFIG.__dict__, "lora_rank": lora_rank})
    start, teacher = _pruned(), tiny_llama(seed=1)
    whole, log = finetune(copy.deepcopy(start), byte_tokenizer(), TEXT, config, progress=False, teacher=teacher)
    identity = {"config": "same"}
    with pytest.MonkeyPatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(Checkpoints, "due", _killed_at(3))
        finetune(copy.deepcopy(start), byte_tokenizer(), TEXT, config, progress=False, teacher=teacher,
                 checkpoints=Checkpoints(tmp_path, 2, False, identity))
    assert (tmp_path / "checkpoint.pt").is_file()
    resumed, again = finetune(copy.deepcopy(start), byte_tokenizer(), TEXT, config, progress=False, teacher=teacher,
                              checkpoints=Checkpoints(tmp_path, 2, True, identity))
    assert again["resumed_at"] == 2 and again["losses"] == log["losses"] and again["student_ce"] == log["student_ce"]
    for name, t in whole.state_dict().items():
        assert torch.equal(t, resumed.state_dict()[name]), name


def test_a_left_checkpoint_is_neither_dropped_nor_resumed_into_another_run(tmp_path):
    left = Checkpoints(tmp_path, 2, False, {"config": "a"})
    left.save({"step": 2})
    with pytest.raises(PrunekitError, match="pass --resume"):
        left.load()
    with pytest.raises(PrunekitError, match="differs in config"):
        Checkpoints(tmp_path, 2, True, {"config": "b"}).load()
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(PrunekitError, match="not a readable checkpoint"):
        Checkpoints(tmp_path, 2, True, {"config": "a"}).load()
    with pytest.raises(PrunekitError, match="no checkpoint"):
        Checkpoints(tmp_path / "none", 2, True, {}).load()


def test_cli_resumes_writes_the_curve_and_removes_the_checkpoint(tiny_model_dir, text_files, tmp_path, capsys,
                                                                monkeypatch):
    pruned, out = tmp_path / "pruned", tmp_path / "ft"
    assert main(["prune", "--model", str(tiny_model_dir), "--pattern", "2:4", "--out", str(pruned)]) == 0
    common = ["finetune", "--model", str(pruned), "--data", str(text_files["jsonl"]), "--steps", "4", "--seqlen", "32",
              "--batch-size", "1", "--loss", "kd", "--teacher", str(tiny_model_dir), "--checkpoint-every", "2",
              "--out", str(out)]
    monkeypatch.setattr(Checkpoints, "due", _killed_at(3))
    with pytest.raises(KeyboardInterrupt):
        main(common)
    monkeypatch.undo()
    assert not out.exists() and (checkpoint_folder(out) / "checkpoint.pt").is_file()
    capsys.readouterr()
    assert main(common) == 2 and "pass --resume" in capsys.readouterr().err  # nothing lost by a plain rerun
    assert main([*common[:-4], "--lr", "1e-3", *common[-4:], "--resume"]) == 2  # another run's settings
    assert main([*common, "--resume"]) == 0
    assert not checkpoint_folder(out).exists()
    curve = json.loads((out / "loss_curve.json").read_text())
    assert curve["tokens"] == [32, 64, 96, 128] and curve["resumed_at"] == 2 and None not in curve["teacher_ce"]
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
