import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prunekit.quant.grid import GroupQuantizer, dequantize, fit, group_bounds, quantize, rtn


def test_hand_computed_asymmetric_two_bits():
    # range [-1, 2] over 3 steps: scale 1, zero 1; 0.5 is a tie and rounds to even (0)
    w = torch.tensor([[-1.0, 0.0, 0.5, 2.0]])
    scale, zero = fit(w, 2, sym=False)
    assert scale.item() == 1.0 and zero.item() == 1.0
    q = quantize(w, scale[:, None], zero[:, None], 2)
    assert q.tolist() == [[0.0, 1.0, 1.0, 3.0]]
    assert dequantize(q, scale[:, None], zero[:, None]).tolist() == [[-1.0, 0.0, 0.0, 2.0]]


def test_hand_computed_symmetric_four_bits():
    # max |w| 0.75: scale 1.5/15 = 0.1 rounded up to float16, zero 8; levels -8..7 cover [-0.8, 0.7]
    w = torch.tensor([[-0.75, 0.75, 0.05, 0.0]])
    scale, zero = fit(w, 4, sym=True)
    s = scale.half()
    assert zero.item() == 8.0 and s.float().item() == scale.item() >= 0.1  # a float16 value, rounded up:
    assert torch.nextafter(s, torch.zeros_like(s)).float().item() < 0.1   # the smallest one >= 0.1
    q = quantize(w, scale[:, None], zero[:, None], 4)
    assert q[0, 1].item() == 15.0 and q[0, 3].item() == 8.0  # +0.75 clips to the top level; 0 sits on zero
    deq = dequantize(q, scale[:, None], zero[:, None])
    assert deq[0, 3].item() == 0.0 and abs(deq[0, 1].item() - 0.75) <= scale.item() / 2 + 1e-7


def test_all_zero_rows_get_a_usable_grid():
    scale, zero = fit(torch.zeros(2, 8), 4, sym=False)
    assert bool((scale > 0).all())
    q = quantize(torch.zeros(2, 8), scale[:, None], zero[:, None], 4)
    assert bool((dequantize(q, scale[:, None], zero[:, None]) == 0).all())


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 5), cols=st.integers(1, 40), bits=st.integers(2, 8), groupsize=st.sampled_from([0, 1, 3, 8, 16]),
       sym=st.booleans(), seed=st.integers(0, 2**16), scale=st.sampled_from([1e-4, 0.02, 3.0]))
def test_rtn_is_within_half_a_step_and_keeps_zeros(rows, cols, bits, groupsize, sym, seed, scale):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * scale
    w[torch.rand(rows, cols, generator=g) < 0.3] = 0.0  # pruned entries
    new, grid = rtn(w, bits, groupsize, sym)
    step, _ = grid.columns(cols)
    assert bool(((new - w).abs() <= step / 2 * (1 + 1e-6)).all())
    assert bool((new[w == 0] == 0).all())  # a zero is exactly representable on every grid
    assert torch.equal(grid.apply(new), new)  # on the grid: rounding again changes nothing
    assert grid.scale.dtype == torch.float16 and grid.zero.dtype == torch.uint8
    assert grid.scale.shape == (rows, len(group_bounds(cols, groupsize)))
    levels = grid.levels(new)
    assert int(levels.max()) <= 2**bits - 1
    s, z = grid.columns(cols)
    assert torch.equal(dequantize(levels.float(), s, z), new)  # the levels rebuild the weights bit for bit


def test_group_bounds_with_a_narrower_last_group():
    assert group_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert group_bounds(10, 0) == [(0, 10)]


def test_quantizer_refuses_an_unfitted_group():
    q = GroupQuantizer(2, 8, 4, 4, False, torch.device("cpu"))
    q.fit_group(0, torch.randn(2, 4))
    with pytest.raises(RuntimeError, match="never fitted"):
        q.grid()


def test_search_clips_an_outlier_a_hand_computed_row():
    # 2 bits, ten each of 0, 0.1, 0.2, 0.3 and one 0.45. The full range has step 0.15: 0.1 and 0.2 miss by 0.05
    # (squared error 20 × 0.0025 = 0.05). Shrunk to 0.3 (step 0.1) all forty land on levels and only the outlier
    # clips (0.15² = 0.0225): the search must take a step near 0.1 (a little above: the outlier then clips less).
    w = torch.tensor([[0.0, 0.1, 0.2, 0.3] * 10 + [0.45]])
    full_scale, _ = fit(w, 2, sym=False)
    scale, zero = fit(w, 2, sym=False, search=True)
    assert abs(full_scale.item() - 0.15) < 1e-3 and 0.1 <= scale.item() < 0.11 and zero.item() == 0.0
    searched, plain = rtn(w, 2, 0, False, search=True)[0], rtn(w, 2, 0, False)[0]
    assert (searched - w).square().sum() < 0.03 < 0.049 < (plain - w).square().sum()
    assert abs(searched[0, -1].item() - 3 * scale.item()) < 1e-6  # the outlier sits on the top level


def test_search_leaves_a_row_without_outliers_on_its_full_range():
    w = torch.tensor([[-1.0, 0.0, 1.0, 2.0]])  # on the full range's levels exactly: nothing to gain by shrinking
    assert torch.equal(fit(w, 2, sym=False, search=True)[0], fit(w, 2, sym=False)[0])


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 6), cols=st.integers(1, 48), bits=st.integers(2, 8), groupsize=st.sampled_from([0, 4, 16]),
       sym=st.booleans(), seed=st.integers(0, 2**16))
def test_search_never_raises_a_groups_error_and_keeps_zeros(rows, cols, bits, groupsize, sym, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * torch.rand(rows, 1, generator=g) * 3
    w[torch.rand(rows, cols, generator=g) < 0.3] = 0.0
    plain, _ = rtn(w, bits, groupsize, sym)
    searched, grid = rtn(w, bits, groupsize, sym, search=True)
    for a, b in group_bounds(cols, groupsize):  # the full range is a candidate: every row of every group as good
        searched_err, plain_err = (searched - w)[:, a:b].square().sum(1), (plain - w)[:, a:b].square().sum(1)
        assert bool((searched_err <= plain_err * (1 + 1e-6) + 1e-12).all())
    assert bool((searched[w == 0] == 0).all())
    assert torch.equal(grid.apply(searched), searched)
