"""Intervals and the paired test against hand-computed cases."""

import math

import pytest

from prunekit.measure.intervals import mcnemar_p, paired, wilson


def test_wilson_by_hand():
    # 8 of 10: centre (0.8 + 1.92/10) / 1.384 = 0.7167, half 1.96·sqrt(0.016 + 0.00096)/1.384 = 0.1844
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == pytest.approx(1.0) and wilson(0, 0) == (0.0, 1.0)
    lo, hi = wilson(250, 500)  # ±4.4 points at 500 items, the guide's "±4-point" interval
    assert hi - lo == pytest.approx(2 * 1.96 * math.sqrt(0.25 / 500), abs=5e-4)  # Wilson: a touch narrower at 50%


def test_mcnemar_exact_by_hand():
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(0, 5) == pytest.approx(2 / 32)           # 2 · P(X = 0), X ~ Bin(5, 1/2)
    assert mcnemar_p(1, 9) == pytest.approx(2 * 11 / 1024)    # 2 · (1 + 10) / 2^10
    assert mcnemar_p(3, 3) == 1.0


def test_paired_by_hand():
    ref = [1, 1, 1, 1, 0, 0, 1, 0, 1, 1]
    new = [1, 0, 0, 1, 0, 1, 1, 0, 0, 1]  # lost 3 (items 1, 2, 8), gained 1 (item 5)
    r = paired(ref, new)
    assert (r["lost"], r["gained"], r["items"]) == (3, 1, 10) and r["diff"] == pytest.approx(-0.2)
    var = 4 / 10 - 0.04  # mean of d² minus mean(d)²
    assert r["ci"] == pytest.approx([-0.2 - 1.959964 * math.sqrt(var / 10), -0.2 + 1.959964 * math.sqrt(var / 10)])
    assert r["p_value"] == pytest.approx(2 * 5 / 16) and r["verdict"] == "within noise"
    big = paired([1] * 40 + [0] * 60, [0] * 40 + [0] * 60)  # lost 40, gained none
    assert big["verdict"] == "a drop" and big["p_value"] < 1e-10
    with pytest.raises(ValueError):
        paired([1, 0], [1])
