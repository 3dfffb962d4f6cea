import pytest
import torch
from torch import nn

from conftest import tiny_llama
from prunekit import PrunekitError, is_valid_nm, masks
from prunekit.selection import count_to_prune
from prunekit.train.gradual import GradualPruner, cubic_sparsity


def test_cubic_schedule_hand_values():
    assert cubic_sparsity(0, 0.0, 0.8, 0, 100) == 0.0
    assert cubic_sparsity(100, 0.0, 0.8, 0, 100) == 0.8
    assert cubic_sparsity(50, 0.0, 0.8, 0, 100) == pytest.approx(0.8 - 0.8 * 0.125)  # 0.7
    assert cubic_sparsity(60, 0.1, 0.9, 10, 110) == pytest.approx(0.9 - 0.8 * 0.125)
    assert cubic_sparsity(-5, 0.1, 0.9, 0, 10) == 0.1 and cubic_sparsity(99, 0.1, 0.9, 0, 10) == 0.9


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


@pytest.mark.parametrize("scope", ["layer", "row", "global"])
def test_reaches_exact_final_sparsity_with_training(scope):
    net = _net()
    pruner = GradualPruner(net, 0.75, begin_step=2, end_step=20, frequency=4, scope=scope)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    x, y = torch.randn(64, 16), torch.randn(64, 4)
    seen = []
    for step in range(25):
        opt.zero_grad()
        ((net(x) - y) ** 2).mean().backward()
        opt.step()
        s = pruner.step(step)
        if s is not None:
            seen.append((step, s))
    assert [t for t, _ in seen] == [2, 6, 10, 14, 18, 20]
    assert [s for _, s in seen] == sorted(s for _, s in seen)  # monotone
    pruned = {n: int((~m).sum()) for n, m in masks.masks_of(net).items()}
    if scope == "global":
        assert sum(pruned.values()) == count_to_prune(16 * 32 + 32 * 4, 0.75)
    else:
        assert pruned == {"0": count_to_prune(512, 0.75), "2": count_to_prune(128, 0.75)}
    for n in pruned:  # the effective weights are zero exactly where the masks say
        assert int((net.get_submodule(n).weight == 0).sum()) == pruned[n]


def test_masks_only_grow():
    net = _net()
    pruner = GradualPruner(net, 0.8, 0, 10, frequency=1)
    previous = None
    for step in range(11):
        with torch.no_grad():  # shuffle magnitudes so a naive re-selection would revive weights
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        pruner.step(step)
        current = masks.masks_of(net)
        if previous is not None:
            assert all((current[n] <= previous[n]).all() for n in current)
        previous = {n: m.clone() for n, m in current.items()}


def test_nm_schedule_ends_exactly_nm():
    model = tiny_llama()
    pruner = GradualPruner(model, 0.5, 0, 9, frequency=3, pattern="2:4")
    for step in range(10):
        pruner.step(step)
    for name, m in masks.masks_of(model).items():
        assert is_valid_nm(m, 2, 4) and m.float().mean() == 0.5, name


@pytest.mark.parametrize("kwargs,msg", [
    (dict(final_sparsity=0.5, begin_step=10, end_step=10), "begin_step"),
    (dict(final_sparsity=1.0, begin_step=0, end_step=10), "final_sparsity"),
    (dict(final_sparsity=-0.1, begin_step=0, end_step=10), "final_sparsity"),
    (dict(final_sparsity=0.5, begin_step=0, end_step=10, frequency=0), "frequency"),
])
def test_bad_input(kwargs, msg):
    with pytest.raises(PrunekitError, match=msg):
        GradualPruner(_net(), **kwargs)


def test_trainer_callback_prunes_on_schedule(tmp_path):
    from transformers import Trainer, TrainingArguments

    from prunekit.train.trainer_callback import GradualPruningCallback

    model = tiny_llama()
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 256, (16, 16)).unbind(0)]
    callback = GradualPruningCallback(final_sparsity=0.6, begin_step=1, end_step=6, frequency=2)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=8, per_device_train_batch_size=4,
                             learning_rate=1e-3, report_to=[], save_strategy="no", logging_strategy="no",
                             use_cpu=True, disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=data, callbacks=[callback]).train()
    assert [s for s, _ in callback.pruner.history] == [1, 3, 5, 6]
    for name, m in masks.masks_of(model).items():
        assert int((~m).sum()) == count_to_prune(m.numel(), 0.6), name
        assert (model.get_submodule(name).weight[~m] == 0).all()


def test_gpt2_conv1d_layers_prune_along_inputs():
    import transformers as tf

    torch.manual_seed(0)
    gpt2 = tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64, n_positions=32))
    pruner = GradualPruner(gpt2, 0.5, 0, 4, frequency=2, pattern="2:4")
    for step in range(5):
        pruner.step(step)
    fc = gpt2.transformer.h[0].mlp.c_fc  # Conv1D: weight stored (in, out)
    assert is_valid_nm(fc.weight.t(), 2, 4) and masks.masks_of(gpt2)["transformer.h.0.mlp.c_fc"].shape == (128, 32)
