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
