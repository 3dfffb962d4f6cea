"""Recovery losses: hand-computed values and gradients, zero when the student is the teacher, and the mixes."""

import copy

import pytest
import torch
import torch.nn.functional as F

from conftest import byte_tokenizer, run_with_teacher, tiny_llama
from prunekit import PruneConfig, PrunekitError, prune
from prunekit.cli import main
from prunekit.data import TextSource
from prunekit.train.config import FinetuneConfig
from prunekit.train.finetune import finetune
from prunekit.train.losses import feature_loss, kd_loss, mixed_loss, parse_mix

TEXT = TextSource("t", ("the quick brown fox jumps over the lazy dog. " * 60,), None, None)



@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_kd_value_and_gradient_by_hand(temperature):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 3, 5, generator=g, requires_grad=True)
    t = torch.randn(2, 3, 5, generator=g)
    loss = kd_loss(s, t, temperature)
    p, q = F.softmax(t / temperature, -1), F.softmax(s / temperature, -1)
    expected = (p * (p.log() - q.log())).sum(-1).mean() * temperature**2  # KL(teacher ‖ student) per token
    torch.testing.assert_close(loss, expected)
    loss.backward()
    torch.testing.assert_close(s.grad, temperature * (q - p).detach() / 6)  # 6 tokens


def test_squarehead_value_and_gradient_by_hand():
    s = [torch.tensor([[1.0, 2.0]], requires_grad=True), torch.tensor([[0.0, 3.0]], requires_grad=True)]
    t = [torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, 2.0]])]
    loss = feature_loss(s, t)  # layer 1: 1 / 2; layer 2: 1 / 4; their mean
    torch.testing.assert_close(loss, torch.tensor(0.375))
    loss.backward()
    torch.testing.assert_close(s[0].grad, torch.tensor([[0.0, 0.5]]))  # 2 (s − t) / ‖t‖² / layers
    torch.testing.assert_close(s[1].grad, torch.tensor([[0.0, 0.25]]))


def test_mixes():
    assert parse_mix("ce") == {"ce": 1.0} and parse_mix("squarehead") == {"feat": 1.0, "kd": 1.0}
    assert parse_mix("kd:0.67,ce:0.33") == {"kd": 0.67, "ce": 0.33} and parse_mix("feat,kd:2") == {"feat": 1.0, "kd": 2.0}
    for bad in ("mse", "kd:0", "kd:-1", "kd:x", "kd,kd", "", "ce:inf"):
        with pytest.raises(PrunekitError, match="--loss"):
            parse_mix(bad)
    with pytest.raises(PrunekitError, match="--loss"):
        FinetuneConfig(steps=1, loss="kd:nan")
    logits = torch.randn(1, 4, 7)
    total, parts = mixed_loss({"kd": 0.5, "ce": 2.0}, torch.tensor(3.0), logits, logits)
    assert parts == {"ce": 3.0, "kd": 0.0} and float(total) == 6.0


@pytest.mark.parametrize("loss", ["kd", "squarehead", "feat"])
def test_a_student_equal_to_its_teacher_has_nothing_to_learn(loss):
    model = tiny_llama()
    teacher = copy.deepcopy(model)
    _, log = finetune(model, byte_tokenizer(), TEXT, FinetuneConfig(steps=1, seqlen=32, batch_size=2, loss=loss),
                      progress=False, teacher=teacher)
    assert log["losses"][0] == pytest.approx(0.0, abs=1e-6) and log["tokens"] == 64
    assert set(log["terms"][0]) == set(parse_mix(loss))


def test_distillation_keeps_the_mask_and_moves_toward_the_teacher():
    teacher, student = tiny_llama(), tiny_llama()
    prune(student, PruneConfig(sparsity=0.5, pattern="2:4"), progress=False)
    zeros = {n: p == 0 for n, p in student.named_parameters() if p.dim() == 2 and "layers" in n}
    student, log = finetune(student, byte_tokenizer(), TEXT, FinetuneConfig(steps=15, seqlen=32, batch_size=2, lr=3e-3,
                                                                             loss="squarehead"),
                            progress=False, teacher=teacher)
    assert all(torch.equal(p == 0, zeros[n]) for n, p in student.named_parameters() if n in zeros)
    assert sum(log["losses"][-3:]) < sum(log["losses"][:3])
    with pytest.raises(PrunekitError, match="teacher"):
        finetune(student, byte_tokenizer(), TEXT, FinetuneConfig(steps=1, seqlen=32, loss="kd"), progress=False)


def test_cli_distills_from_a_named_teacher_and_refuses_its_own_evaluation_text(tiny_model_dir, text_files, tmp_path,
                                                                              capsys):
    pruned = tmp_path / "pruned"
    assert main(["prune", "--model", str(tiny_model_dir), "--pattern", "2:4", "--out", str(pruned)]) == 0
    common = ["finetune", "--model", str(pruned), "--data", str(text_files["jsonl"]), "--steps", "2", "--seqlen", "32",
              "--batch-size", "1", "--loss", "kd:0.67,ce:0.33"]
    manifest = run_with_teacher(main, common, tiny_model_dir, text_files, tmp_path, capsys)["finetune"]
    assert manifest["teacher"] == str(tiny_model_dir) and manifest["loss"] == "kd:0.67,ce:0.33"
    assert manifest["tokens"] == 64 and set(manifest["terms"][0]) == {"kd", "ce"}
