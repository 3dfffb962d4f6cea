import torch

from prunekit.oneshot.scores import magnitude_scores, wanda_scores
from prunekit.oneshot.stats import InputStats
from prunekit.selection import select_mask


def test_wanda_keeps_small_weight_on_loud_input():
    # Input 0 is loud, input 1 silent: Wanda keeps the small weight on input 0; magnitude does not.
    w = torch.tensor([[0.1, 1.0]])
    x = torch.tensor([[100.0, 0.01], [-100.0, 0.01]])
    stats = InputStats(2, hessian=False)
    stats.add(x)
    assert select_mask(wanda_scores(w, stats.norms_sq), 0.5, "row").tolist() == [[True, False]]
    assert select_mask(magnitude_scores(w), 0.5, "row").tolist() == [[False, True]]


def test_stats_batch_split_invariance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 33, 12, generator=g)
    whole, split = InputStats(12, True), InputStats(12, True)
    whole.add(x)
    for part in x.split([1, 2, 1]):
        split.add(part)
    assert whole.count == split.count == 4 * 33
    torch.testing.assert_close(whole.norms_sq, split.norms_sq)
    torch.testing.assert_close(whole.hessian, split.hessian)
    flat = x.reshape(-1, 12)
    torch.testing.assert_close(whole.hessian, 2 * flat.T @ flat / flat.shape[0])
    torch.testing.assert_close(whole.norms_sq, (flat**2).mean(0))

