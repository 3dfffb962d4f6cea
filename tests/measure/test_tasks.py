"""Task accuracy: the scorer against a per-choice computation, lm-eval's metrics against hand-computed
ones, item selection, and bad task files."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import byte_tokenizer, tiny_arch, tiny_llama
from prunekit.errors import PrunekitError
from prunekit.measure.tasks import compare_tasks, evaluate_tasks, load_task, score_pairs

pytest.importorskip("lm_eval", reason="task evaluation needs the tasks extra (lm-eval)")


def _tokenizer():
    tok = byte_tokenizer()
    tok.eos_token = tok.convert_ids_to_tokens(0)
    return tok


def _write(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


@pytest.fixture
def task_files(tmp_path):
    words = [" red", " green apples", " blue sky today", " no"]
    mc = [{"context": f"Question: what is item {i}?\nAnswer:", "choices": words[: 2 + i % 3], "gold": i % 2}
          for i in range(14)]
    completion = [{"context": f"count {i} then", "continuation": f" {i + 1}"} for i in range(9)]
    return {"mc": _write(tmp_path / "mc.jsonl", mc), "completion": _write(tmp_path / "completion.jsonl", completion)}


def _by_hand(model, ids: list[int], n_ctx: int) -> tuple[float, bool]:
    """Log-likelihood of ids[n_ctx:] after ids[:n_ctx], from one whole-sequence forward pass."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    logprobs = F.log_softmax(logits[n_ctx - 1 : len(ids) - 1], dim=-1)
    target = torch.tensor(ids[n_ctx:])
    return float(logprobs.gather(1, target[:, None]).sum()), bool((logprobs.argmax(1) == target).all())


@pytest.mark.parametrize("arch", ["llama-gqa", "gpt2", "opt", "qwen2"])
def test_shared_contexts_score_as_whole_sequences(arch):
    """Contexts shared by several continuations run once with their cache; contexts are left-padded and
    continuations right-padded in batches. Every log-likelihood equals the per-choice whole-sequence
    computation, for rotary (Llama, Qwen2), learned absolute (GPT-2) and mask-derived (OPT) positions."""
    model = tiny_arch(arch)
    g = torch.Generator().manual_seed(0)
    ctx_a, ctx_b = torch.randint(0, 128, (9,), generator=g).tolist(), torch.randint(0, 128, (4,), generator=g).tolist()
    conts = [torch.randint(0, 128, (n,), generator=g).tolist() for n in (1, 3, 6, 2, 5)]
    pairs = [(ctx_a, conts[0]), (ctx_a, conts[1]), (ctx_b, conts[2]), (ctx_a, conts[2]), (ctx_b, conts[3]),
             (torch.randint(0, 128, (7,), generator=g).tolist(), conts[4])]
    got = score_pairs(model, pairs, batch_size=2, progress=False)
    whole = score_pairs(model, pairs, batch_size=3, progress=False, share=False)
    assert [g for _, g in whole] == [g for _, g in got]
    assert [w for w, _ in whole] == pytest.approx([g for g, _ in got], abs=1e-4)
    for (ctx, cont), (ll, greedy) in zip(pairs, got, strict=True):
        want_ll, want_greedy = _by_hand(model, ctx + cont, len(ctx))
        assert ll == pytest.approx(want_ll, rel=1e-5, abs=1e-4) and greedy == want_greedy
    # greedy continuations are recognised: take the model's own argmax tokens as the continuation
    ctx = ctx_a
    greedy_cont = []
    for _ in range(3):
        with torch.no_grad():
            greedy_cont.append(int(model(torch.tensor([ctx + greedy_cont])).logits[0, -1].argmax()))
    assert score_pairs(model, [(ctx, greedy_cont), (ctx, conts[1])], progress=False)[0][1] is True


def test_metrics_are_the_documented_ones(task_files):
    """acc: the most likely choice; acc_norm: the most likely per character of the choice (lm-eval's
    normalisation); LAMBADA acc: greedy decoding gives the continuation. Checked item by item against
    log-likelihoods computed by hand."""
    model, tok = tiny_llama(), _tokenizer()
    mc, completion = load_task(task_files["mc"]), load_task(task_files["completion"], limit=6)
    result = evaluate_tasks(model, tok, [mc, completion], progress=False)["tasks"]
    for k, doc in enumerate(mc.docs):
        ctx = tok.encode(doc["context"])
        lls = [_by_hand(model, tok.encode(doc["context"] + c), len(ctx))[0] for c in doc["choices"]]
        best = max(range(len(lls)), key=lambda i: lls[i])
        best_norm = max(range(len(lls)), key=lambda i: lls[i] / len(doc["choices"][i]))
        assert result["mc"]["per_item"]["acc"][k] == int(best == doc["gold"]), k
        assert result["mc"]["per_item"]["acc_norm"][k] == int(best_norm == doc["gold"]), k
    for k, doc in enumerate(completion.docs):
        ctx = tok.encode(doc["context"])
        greedy = _by_hand(model, tok.encode(doc["context"] + doc["continuation"]), len(ctx))[1]
        assert result["completion"]["per_item"]["acc"][k] == int(greedy)
    assert result["mc"]["items"] == 14 and result["completion"]["items"] == 6 and result["completion"]["perplexity"] > 1
    acc = result["mc"]["acc"]
    assert result["mc"]["acc_ci"][0] <= acc <= result["mc"]["acc_ci"][1]
    # chance: the mean of 1/choices (2, 3, 4 choices in turn): (4 · (1/2 + 1/3 + 1/4) + 1/2 + 1/3) / 14
    assert result["mc"]["chance"] == pytest.approx((4 * (1 / 2 + 1 / 3 + 1 / 4) + 1 / 2 + 1 / 3) / 14)
    assert set(result["mc"]["signal"]) == {"acc", "acc_norm"}


def test_selection_first_n_or_seeded(task_files):
    first = load_task(task_files["mc"], limit=5)
    assert first.indices == (0, 1, 2, 3, 4) and first.total == 14
    seeded = load_task(task_files["mc"], limit=5, seed=3)
    assert seeded.indices == load_task(task_files["mc"], limit=5, seed=3).indices != first.indices
    assert list(seeded.indices) == sorted(seeded.indices) and load_task(task_files["mc"], limit=100).docs == load_task(
        task_files["mc"]).docs


def test_pairing_needs_the_same_items(task_files):
    model, tok = tiny_llama(), _tokenizer()
    a = evaluate_tasks(model, tok, [load_task(task_files["mc"], limit=8)], progress=False)
    b = evaluate_tasks(model, tok, [load_task(task_files["mc"], limit=8)], progress=False)
    assert compare_tasks(a, b)["mc"]["acc"]["diff"] == 0.0  # same model, same items: no difference
    c = evaluate_tasks(model, tok, [load_task(task_files["mc"], limit=8, seed=1)], progress=False)
    with pytest.raises(PrunekitError, match="other items"):
        compare_tasks(a, c)


@pytest.mark.parametrize(("row", "message"), [
    ('{"context": "x", "choices": [" a"], "gold": 0}', "at least two"),
    ('{"context": "x", "choices": [" a", " b"], "gold": 2}', "'gold' must be the index"),
    ('{"context": "x", "choices": [" a", " b"], "gold": true}', "'gold' must be the index"),
    ('{"context": 3, "continuation": " y"}', "non-empty string 'context'"),
    ('{"context": "", "continuation": " y"}', "non-empty string 'context'"),
    ('{"context": "x"}', "expected 'choices' and 'gold', or a non-empty 'continuation'"),
    ('{"context": "x", "continuation": " y"}', "a loglikelihood item in a file of multiple_choice items"),
    ('{"context": "x", "choices": [" a", " b"], "gold": 0', "not valid JSON"),
])
def test_bad_task_files_name_the_file_and_line(tmp_path, row, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"context": "q", "choices": [" a", " b"], "gold": 1}\n\n' + row + "\n")
    with pytest.raises(PrunekitError, match=rf"bad\.jsonl:3: .*{message}"):
        load_task(str(path))


def test_cli_pairs_pruned_with_dense_and_keeps_per_item_results(tiny_model_dir, task_files, tmp_path, capsys):
    from prunekit.cli import main

    out = tmp_path / "pruned"
    assert main(["prune", "--model", str(tiny_model_dir), "--sparsity", "0.6", "--tasks", task_files["mc"],
                 "--limit", "10", "--eval-dense", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "tasks.json").read_text())
    assert len(saved["saved"]["tasks"]["mc"]["per_item"]["acc"]) == 10 and "within noise" in summary["tasks_paired"]["mc"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tasks"]["pruned"]["lm_eval"] and "per_item" not in manifest["tasks"]["pruned"]["tasks"]["mc"]
    assert manifest["tasks"]["dense"]["tasks"]["mc"]["sha256"] == manifest["tasks"]["pruned"]["tasks"]["mc"]["sha256"]
    # the dense model scored on its own, paired with the pruned folder's results as the baseline
    report = tmp_path / "dense.json"
    assert main(["eval", "--model", str(tiny_model_dir), "--tasks", task_files["mc"], "--limit", "10",
                 "--baseline", str(out), "--out", str(report)]) == 0
    paired = json.loads(capsys.readouterr().out)["paired"]["mc"]
    assert paired["diff"] == pytest.approx(-saved["paired"]["mc"]["acc"]["diff"])  # the same pair, the other way
    assert main(["eval", "--model", str(tiny_model_dir), "--tasks", task_files["mc"], "--limit", "9",
                 "--baseline", str(out), "--out", str(report), "--overwrite"]) == 2  # other items: no pairing
    assert "other items" in capsys.readouterr().err


@pytest.mark.kernel
def test_sparse_execution_scores_the_same_items_alike(tiny_model_dir, task_files, tmp_path, capsys):
    from prunekit.cli import main

    out = tmp_path / "pruned"
    assert main(["prune", "--model", str(tiny_model_dir), "--sparsity", "0.8", "--out", str(out)]) == 0
    results = {}
    for mode in ([], ["--sparse", "bitmask"]):
        report = tmp_path / f"eval{len(mode)}.json"
        assert main(["eval", "--model", str(out), "--tasks", task_files["mc"], *mode, "--out", str(report)]) == 0
        results[bool(mode)] = json.loads(report.read_text())["tasks"]["tasks"]["mc"]["per_item"]
    capsys.readouterr()
    assert json.loads(report.read_text())["sparse"] == {"bitmask": 14}  # every block linear ran the sparse kernel
    assert results[True] == results[False]
