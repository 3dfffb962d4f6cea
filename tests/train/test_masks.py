import pytest
import torch
from torch import nn

from conftest import tiny_llama
from prunekit import PruneConfig, PrunekitError, masks, prune
from prunekit.targets import find_targets, weight_view


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def _half_mask(shape, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) > 0.5


def test_masked_weights_stay_zero_through_adam_with_weight_decay():
    net = _net()
    mask = {"0": _half_mask((8, 6)), "2": _half_mask((3, 8), 1)}
    masks.attach(net, mask)
    opt = torch.optim.AdamW(net.parameters(), lr=0.1, weight_decay=0.1)
    x, y = torch.randn(32, 6), torch.randn(32, 3)
    for _ in range(10):
        opt.zero_grad()
        loss = ((net(x) - y) ** 2).mean()
        loss.backward()
        original = net[0].parametrizations.weight.original
        assert (original.grad[~mask["0"]] == 0).all()  # no gradient reaches pruned weights
        opt.step()
    for name, m in mask.items():
        layer = net.get_submodule(name)
        assert (layer.weight[~m] == 0).all() and (layer.parametrizations.weight.original[~m] == 0).all()
        assert (layer.weight[m] != 0).all()  # the kept weights did train


def test_state_dict_roundtrip_and_remove(tmp_path):
    net = _net()
    mask = {"0": _half_mask((8, 6))}
    masks.attach(net, mask)
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    fresh = masks.load_state_dict(_net(), torch.load(tmp_path / "sd.pt"))
    assert torch.equal(masks.masks_of(fresh)["0"], mask["0"])
    assert torch.equal(fresh[0].weight, net[0].weight)
    plain = masks.remove(fresh)
    assert not masks.masks_of(plain) and isinstance(plain[0].weight, nn.Parameter)
    assert (plain[0].weight[~mask["0"]] == 0).all()
    assert set(plain.state_dict()) == set(_net().state_dict())


def test_zeros_are_positive_after_training_and_remove():
    """W ⊙ M is -0.0 where W < 0; the baked weights hold +0.0 there, as prune leaves them, so a sparse
    format (which stores only the nonzeros) gives back the same bits."""
    net = _net()
    mask = {"0": _half_mask((8, 6))}
    assert (net[0].weight[~mask["0"]] < 0).any()  # some pruned weights were negative
    masks.attach(net, mask)
    assert not torch.signbit(net[0].parametrizations.weight.original[~mask["0"]]).any()
    opt = torch.optim.AdamW(net.parameters(), lr=0.1, weight_decay=0.1)
    loss = net(torch.randn(4, 6)).square().mean()
    loss.backward()
    opt.step()
    with torch.no_grad():  # as a checkpoint saved before attach zeroed with +0.0 would hold
        net[0].parametrizations.weight.original[~mask["0"]] = -0.0
    plain = masks.remove(net)
    assert not torch.signbit(plain[0].weight[~mask["0"]]).any()


def test_lock_one_shot_masks_and_conv1d():
    model = tiny_llama()
    result = prune(model, PruneConfig(sparsity=0.5, pattern="2:4"), progress=False)
    masks.attach(model, result.masks)
    assert all(torch.equal(masks.masks_of(model)[n], m) for n, m in result.masks.items())
    import transformers as tf

    gpt2 = tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64, n_positions=32))
    locked = masks.attach_dense(gpt2)
    assert locked["transformer.h.0.mlp.c_fc"].shape == (128, 32)  # (out, in), Conv1D stores (in, out)


def test_shape_mismatch_is_an_error():
    with pytest.raises(PrunekitError, match="shape"):
        masks.attach(_net(), {"0": torch.ones(6, 8, dtype=torch.bool)})
    with pytest.raises(PrunekitError, match="no weight"):
        masks.attach(_net(), {"1": torch.ones(6, 8, dtype=torch.bool)})


def test_attach_dense_locks_current_zeros():
    model = tiny_llama()
    prune(model, PruneConfig(sparsity=0.5), progress=False)
    locked = masks.attach_dense(model)
    for name, target in find_targets(model).items():
        assert torch.equal(locked[name], weight_view(target) != 0)


def test_conv2d_mask_holds():
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(3, 4, 3))
    mask = _half_mask((4, 3, 3, 3))
    masks.attach(conv, {"0": mask})
    opt = torch.optim.SGD(conv.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    for _ in range(3):
        opt.zero_grad()
        conv(torch.randn(2, 3, 8, 8)).pow(2).mean().backward()
        opt.step()
    assert (conv[0].weight[~mask] == 0).all() and torch.equal(masks.masks_of(conv)["0"], mask)
