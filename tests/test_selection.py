import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prunekit.errors import PrunekitError
from prunekit.selection import (
    count_to_prune,
    global_counts,
    is_valid_nm,
    nm_mask,
    parse_pattern,
    row_smallest_mask,
    select_mask,
    smallest_mask,
    split_count,
    zero_pruned_,
)


def test_hand_computed_row():
    # |[1, -5, 2, 0.5]| at 50%: prune 0.5 and 1, keep -5 and 2.
    keep = row_smallest_mask(torch.tensor([[1.0, -5.0, 2.0, 0.5]]).abs(), 2)
    assert keep.tolist() == [[False, True, True, False]]


def test_row_counts_per_row():
    keep = row_smallest_mask(torch.tensor([[3.0, 1.0, 2.0], [1.0, 2.0, 3.0]]), [2, 1])
    assert keep.tolist() == [[True, False, False], [False, True, True]]


def test_hand_computed_layer_vs_row():
    scores = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert smallest_mask(scores, 2).tolist() == [[False, False], [True, True]]
    assert row_smallest_mask(scores, 1).tolist() == [[False, True], [False, True]]


def test_nm_hand_computed():
    scores = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.1, 0.2, 0.4, 0.3]])
    assert nm_mask(scores, 2, 4).tolist() == [[True, False, True, False, False, False, True, True]]


def test_ties_prune_exact_count():
    scores = torch.ones(7, 9)
    assert int((~smallest_mask(scores, 31)).sum()) == 31
    assert (~row_smallest_mask(scores, 4)).sum(1).tolist() == [4] * 7
    assert global_counts([torch.ones(10), torch.ones(6)], 0.5) == [8, 0]
    keep = nm_mask(torch.ones(3, 8), 2, 4)
    assert is_valid_nm(keep, 2, 4) and int(keep.sum()) == 12


def test_ties_are_pruned_lowest_column_first():
    assert row_smallest_mask(torch.tensor([[1.0, 1.0, 1.0, 1.0]]), 2).tolist() == [[False, False, True, True]]
    # one below the tie value, then two of the three tied entries, from the left
    keep = row_smallest_mask(torch.tensor([[2.0, 1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0, 4.0]]), 3)
    assert keep.tolist() == [[True, False, False, True, False], [False, False, False, True, True]]
    assert nm_mask(torch.tensor([[1.0, 1.0, 1.0, 1.0, 5.0, 2.0, 2.0, 0.0]]), 2, 4).tolist() == [
        [False, False, True, True, True, False, True, False]
    ]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.sampled_from([(1, 4), (2, 4), (4, 8), (3, 8), (8, 16)]), st.integers(0, 3))
def test_nm_equals_stable_sort(rows, groups, nm, levels):
    # the pairwise-rank path (M <= 8) and the sort path must agree with a stable sort, ties included
    n, m = nm
    gen = torch.Generator().manual_seed(rows * 100 + groups)
    scores = torch.rand(rows, groups * m, generator=gen)
    if levels:
        scores = (scores * levels).round()  # many ties
    g = scores.reshape(rows, groups, m)
    idx = torch.sort(g, dim=2, stable=True).indices[..., : m - n]
    expected = torch.ones_like(g, dtype=torch.bool).scatter_(2, idx, False).reshape(rows, groups * m)
    assert torch.equal(nm_mask(scores, n, m), expected)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 9), st.integers(1, 40), st.integers(0, 40), st.integers(0, 3), st.integers(0, 2))
def test_row_counts_equal_stable_sort(rows, cols, base, levels, spread):
    # per-row counts (one value, row scope's base/base+1, or many: the topk path) prune exactly the
    # stable-sort order, ties included: the threshold path and the topk path agree
    gen = torch.Generator().manual_seed(rows * 1000 + cols * 10 + base)
    scores = torch.rand(rows, cols, generator=gen)
    if levels:
        scores = (scores * levels).round()
    counts = [min(cols, base + (r % (spread + 1))) for r in range(rows)]
    order = torch.sort(scores, dim=1, stable=True).indices  # (rows, cols)
    expected = torch.ones(rows, cols, dtype=torch.bool)
    for r, c in enumerate(counts):
        expected[r, order[r, :c]] = False
    keep = row_smallest_mask(scores, counts)
    assert (~keep).sum(1).tolist() == counts
    if spread < 2:  # the threshold path breaks ties lowest column first, as the stable sort
        assert torch.equal(keep, expected)


def test_zero_pruned_writes_positive_zeros_and_keeps_the_rest():
    w = torch.tensor([[-1.5, 2.0, -0.25, 3.0]])
    keep = torch.tensor([[False, True, False, True]])
    zero_pruned_(w, keep)
    assert w.tolist() == [[0.0, 2.0, 0.0, 3.0]] and not torch.signbit(w).any()


def test_sparsity_zero_and_near_one():
    s = torch.rand(5, 16)
    assert smallest_mask(s, count_to_prune(80, 0.0)).all()
    assert int(smallest_mask(s, count_to_prune(80, 0.99)).sum()) == 1


def test_large_tensor_beyond_quantile_limit():
    # torch.quantile refuses more than 16M elements; selection must not.
    scores = torch.rand(17_000_000)
    k = count_to_prune(scores.numel(), 0.5)
    assert int((~smallest_mask(scores, k)).sum()) == k


def test_parse_pattern():
    assert parse_pattern("unstructured") is None
    assert parse_pattern("4:8") == (4, 8)
    for bad in ("4:4", "5:4", "0:4", "x", "2:4:8"):
        with pytest.raises(PrunekitError):
            parse_pattern(bad)


def test_is_valid_nm_rejects():
    assert not is_valid_nm(torch.ones(2, 8), 2, 4)
    assert not is_valid_nm(torch.ones(2, 6), 2, 4)  # width not divisible
    assert is_valid_nm(torch.tensor([[1.0, 0, 0, 1, 0, 0, 0, 0]]), 2, 4)


def test_split_count_exact():
    assert split_count(10, [1, 1, 1]) == [4, 3, 3]
    assert sum(split_count(1001, [128, 128, 64, 7])) == 1001


dtypes = st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64])


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 70), sparsity=st.floats(0, 0.999), dtype=dtypes,
       seed=st.integers(0, 2**16), ties=st.booleans())
def test_exact_counts_property(rows, cols, sparsity, dtype, seed, ties):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(rows, cols, generator=g).abs().to(dtype)
    if ties:
        scores = scores.round()
    k = count_to_prune(rows * cols, sparsity)
    assert int((~smallest_mask(scores, k)).sum()) == k
    kr = count_to_prune(cols, sparsity)
    assert (~row_smallest_mask(scores, kr)).sum(1).tolist() == [kr] * rows
    # The kept entries are never smaller than the pruned ones.
    keep = smallest_mask(scores, k)
    if 0 < k < rows * cols:
        assert scores[keep].float().min() >= scores[~keep].float().max()


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 30), groups=st.integers(1, 12), nm=st.sampled_from([(1, 2), (2, 4), (4, 8), (1, 4), (3, 7)]),
       dtype=dtypes, seed=st.integers(0, 2**16))
def test_nm_property(rows, groups, nm, dtype, seed):
    n, m = nm
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(rows, groups * m, generator=g).abs().round().to(dtype)
    keep = nm_mask(scores, n, m)
    assert is_valid_nm(keep, n, m)
    assert (keep.reshape(rows, groups, m).sum(-1) == n).all()


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 300), min_size=1, max_size=5), sparsity=st.floats(0, 0.999),
       seed=st.integers(0, 2**16))
def test_global_counts_property(sizes, sparsity, seed):
    g = torch.Generator().manual_seed(seed)
    scores = [torch.randint(0, 5, (s,), generator=g).float() for s in sizes]
    counts = global_counts(scores, sparsity)
    assert sum(counts) == count_to_prune(sum(sizes), sparsity)
    assert all(0 <= c <= s for c, s in zip(counts, sizes, strict=True))


def test_row_scope_exact_layer_total():
    keep = select_mask(torch.rand(7, 9, generator=torch.Generator().manual_seed(0)), 0.63, "row")
    per_row = (~keep).sum(1)
    assert int(per_row.sum()) == count_to_prune(63, 0.63) and int(per_row.max() - per_row.min()) <= 1
