import pytest
import torch
from torch import nn

from prunekit import PrunekitError, masks
from prunekit.train.lottery import lottery, prune_remaining


def _make(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))


X = torch.randn(128, 8, generator=torch.Generator().manual_seed(0))
Y = (X[:, 0] + X[:, 1] > 0).long()


def _train(model, steps=30):
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), Y).backward()
        opt.step()


def _acc(model):
    with torch.no_grad():
        return float((model(X).argmax(1) == Y).float().mean())


def test_prune_remaining_takes_fraction_of_survivors():
    m = {"a": torch.tensor([True, True, False, True, True])}
    w = {"a": torch.tensor([5.0, 1.0, 9.0, 3.0, 4.0])}
    assert prune_remaining(m, w, 0.5)["a"].tolist() == [True, False, False, False, True]


def test_row_scope_prunes_exactly_k_with_a_remainder():
    # 3 rows × 4: one weight already pruned in row 0, so 11 remain; half of them is round(5.5) = 6 more,
    # k = 7 in all, which 3 rows split 3 / 2 / 2 (k // rows would prune only 2 per row: 6).
    keep = torch.ones(3, 4, dtype=torch.bool)
    keep[0, 1] = False
    w = torch.tensor([[4.0, 9.0, 3.0, 1.0], [8.0, 2.0, 7.0, 6.0], [5.0, 1.5, 2.5, 3.5]])
    out = prune_remaining({"a": keep}, {"a": w}, 0.5, scope="row")["a"]
    assert int((~out).sum()) == 7 and (~out).sum(1).tolist() == [3, 2, 2]
    assert out.tolist() == [[True, False, False, False], [True, False, True, False], [True, False, False, True]]


def test_rounds_sparsity_and_reset_to_theta0():
    starts = []  # (masks, weights) of every model handed to train, before training

    def train(model):
        starts.append({n: (m.clone(), model.get_submodule(n).weight.detach().clone())
                       for n, m in masks.masks_of(model).items()})
        _train(model)

    history = lottery(_make, train, _acc, rounds=3, prune_fraction=0.5, random_reinit_control=True)
    theta0 = _make(0).state_dict()
    tickets, controls = [starts[0], starts[1], starts[3], starts[5]], [starts[2], starts[4], starts[6]]
    for start in tickets:  # survivors reset to θ₀ bit-exactly, pruned weights zero
        for n, (mask, w) in start.items():
            assert torch.equal(w[mask], theta0[f"{n}.weight"][mask]) and (w[~mask] == 0).all()
    for ticket, control in zip(tickets[1:], controls, strict=True):  # same mask, different init
        for n, (mask, w) in control.items():
            assert torch.equal(mask, ticket[n][0]) and (w[~mask] == 0).all()
            assert not torch.equal(w[mask], theta0[f"{n}.weight"][mask])
    assert [round(h.sparsity, 3) for h in history] == [0.0, 0.5, 0.75, 0.875]
    assert history[0].control_accuracy is None and all(h.control_accuracy is not None for h in history[1:])
    assert all(0 <= h.accuracy <= 1 for h in history)
    # masks are nested: each round prunes a subset of what the previous round kept
    for a, b in zip(history, history[1:], strict=False):
        assert all((b.masks[n] <= a.masks[n]).all() for n in a.masks)


def test_rewinding_restores_saved_weights_bit_exactly():
    rewound = {}

    def rewind(model):
        _train(model, steps=3)
        rewound.update({k: v.clone() for k, v in model.state_dict().items()})

    def train(model):
        for name, mask in masks.masks_of(model).items():
            assert torch.equal(model.get_submodule(name).weight[mask], rewound[f"{name}.weight"][mask])
        _train(model)

    lottery(_make, train, _acc, rounds=2, prune_fraction=0.2, rewind=rewind)


@pytest.mark.parametrize("kwargs,msg", [(dict(rounds=0), "rounds"), (dict(rounds=2, prune_fraction=1.0), "prune_fraction")])
def test_bad_input(kwargs, msg):
    with pytest.raises(PrunekitError, match=msg):
        lottery(_make, _train, _acc, **kwargs)
