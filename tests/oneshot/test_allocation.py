import pytest
import torch

from conftest import tiny_llama
from prunekit import PruneConfig, prune
from prunekit.errors import PrunekitError
from prunekit.oneshot.allocation import clamp_keeping_mean, global_allocation, outlier_ratio, owl_sparsities
from prunekit.targets import find_targets, weight_view


def test_outlier_ratio_hand_computed():
    # mean = (1*9 + 91) / 10 = 10; only 91 > 5 × 10
    assert outlier_ratio([torch.ones(9), torch.tensor([91.0])], 5) == pytest.approx(0.1)


def test_owl_sparsities_properties():
    ratios, params = [0.01, 0.05, 0.02, 0.10], [100, 100, 300, 100]
    s = owl_sparsities(ratios, params, 0.7, 0.08)
    mean = sum(x * p for x, p in zip(s, params, strict=True)) / sum(params)
    assert mean == pytest.approx(0.7, abs=1e-12)
    assert all(0.62 - 1e-12 <= x <= 0.78 + 1e-12 for x in s)
    assert s[3] == pytest.approx(0.62)  # the most outliers sits at the bound: lowest sparsity
    order = sorted(range(4), key=lambda i: ratios[i])
    assert [s[i] for i in order] == sorted(s, reverse=True)  # more outliers, less sparsity
    # linear in the ratio
    slope = (s[1] - s[0]) / (ratios[1] - ratios[0])
    assert (s[3] - s[0]) / (ratios[3] - ratios[0]) == pytest.approx(slope)
    assert owl_sparsities([0.2, 0.2], [1, 1], 0.5, 0.08) == [0.5, 0.5]


def test_global_allocation_exact_total():
    scores = {"a": torch.arange(10.0), "b": torch.arange(10.0) + 5}
    alloc = global_allocation(scores, 0.5)
    assert alloc == {"a": pytest.approx(0.8), "b": pytest.approx(0.2)}


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_owl_composes_with_every_method(method):
    model = tiny_llama(layers=3)
    with torch.no_grad():  # plant outliers in block 1: it must get the lowest sparsity
        model.model.layers[1].self_attn.q_proj.weight[:4] *= 40
    calib = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    result = prune(model, PruneConfig(method=method, sparsity=0.7, allocation="owl", owl_lambda=0.1, blocksize=32),
                   calib, progress=False)
    s = result.block_sparsity
    assert len(s) == 3 and min(s) == s[1] and max(abs(x - 0.7) for x in s) == pytest.approx(0.1)
    assert result.sparsity == pytest.approx(0.7, abs=1e-4)  # equal-size blocks: exact mean
    per_block = {}
    for name, module in find_targets(model).items():
        per_block.setdefault(name.split(".")[2], []).append(float((weight_view(module) == 0).float().mean()))
    for b, values in per_block.items():
        assert all(v == pytest.approx(s[int(b)], abs=2e-3) for v in values)


def test_global_allocation_with_calibrated_scores():
    model = tiny_llama(layers=2)
    calib = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    result = prune(model, PruneConfig(method="wanda", sparsity=0.5, scope="global"), calib, progress=False)
    # exact per-layer counts from one threshold (layers above max_layer_sparsity are clamped)
    for r in result.layers:
        numel = r.shape[0] * r.shape[1]
        assert round(r.sparsity * numel) == round(min(r.target_sparsity, 0.999) * numel)
    assert result.sparsity == pytest.approx(0.5, abs=2e-3)
    per_layer = {r.name: r.sparsity for r in result.layers}
    assert max(per_layer.values()) - min(per_layer.values()) > 0.05  # one threshold, uneven layers


def test_clamp_keeping_mean_by_hand():
    # sizes 1, 1, 2; mean (0.1 + 0.5 + 2 · 0.3) / 4 = 0.3. Clamping 0.1 up to 0.2 alone gives 0.325; one shift
    # δ = -1/30 keeps 0.3: (0.2 + 0.4667 + 2 · 0.2667) / 4 = 0.3
    out = clamp_keeping_mean({"a": 0.1, "b": 0.5, "c": 0.3}, {"a": 1, "b": 1, "c": 2}, 0.2, 0.9)
    assert out["a"] == 0.2 and out["b"] == pytest.approx(0.5 - 1 / 30) and out["c"] == pytest.approx(0.3 - 1 / 30)
    assert (out["a"] + out["b"] + 2 * out["c"]) / 4 == pytest.approx(0.3, abs=1e-12)
    assert clamp_keeping_mean({"a": 0.3, "b": 0.5}, {"a": 1, "b": 1}, 0.0, 0.9) == {"a": 0.3, "b": 0.5}  # nothing binds
    with pytest.raises(PrunekitError, match="cannot be met"):
        clamp_keeping_mean({"a": 0.1, "b": 0.1}, {"a": 1, "b": 1}, 0.2, 0.9)


@pytest.mark.parametrize(("target", "lam", "low", "high"), [(0.03, 0.08, 0.0, 0.999), (0.98, 0.08, 0.0, 0.99)])
def test_owl_meets_its_target_when_bounds_bind(target, lam, low, high):
    """0.03 ± 0.08 and 0.98 ± 0.08 push blocks past the layer bounds; clamping alone gave 0.055 and 0.9495."""
    model = tiny_llama(layers=3)
    with torch.no_grad():
        model.model.layers[1].self_attn.q_proj.weight[:4] *= 40
    calib = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    result = prune(model, PruneConfig(method="wanda", sparsity=target, allocation="owl", owl_lambda=lam,
                                      min_layer_sparsity=low, max_layer_sparsity=high), calib, progress=False)
    assert all(low <= s <= high for s in result.block_sparsity)
    assert result.sparsity == pytest.approx(target, abs=1e-3)  # equal-size blocks; counts round per layer
