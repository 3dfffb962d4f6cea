"""The quantizer and order tables, walked row by row: every quantizer keeps zeros and lands on its grid, every
order composes with a pruning step, and the config's defaults and refusals follow the rows."""

import pytest
import torch

from prunekit.errors import PrunekitError
from prunekit.oneshot.config import PruneConfig
from prunekit.quant.compose import ORDERS, Order, prune_and_quantize
from prunekit.quant.config import GridFit, QuantConfig
from prunekit.quant.quantizers import QUANTIZERS, QuantMethod, Rounding
from prunekit.selection import select_mask, zero_pruned_


def _layer(seed=0, rows=8, cols=32):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    x = torch.randn(256, cols, generator=g)
    return w, 2 * x.T @ x / 256


def test_every_quantizer_row_keeps_zeros_and_lands_on_its_grid():
    assert set(QUANTIZERS) == set(QuantMethod)
    w, h = _layer()
    keep = w.abs() > 0.5
    asked = []

    def hessian():
        asked.append(True)
        return h

    for method, row in QUANTIZERS.items():
        asked.clear()
        r = Rounding(4, 16, False, False, row.act_order)
        new, grid, escalations = row.quantize(w * keep, hessian, r, keep, 16, 0.01, "layer")
        assert bool((new[~keep] == 0).all()) and torch.equal(grid.apply(new), new), method
        assert bool(asked) == row.hessian and escalations == 0, method  # H is computed only when the row needs it
        assert tuple(grid.scale.shape) == (8, 2) and grid.bits == 4


def test_config_defaults_and_refusals_follow_the_rows():
    for method, row in QUANTIZERS.items():
        q = QuantConfig(wbits=4, quant_method=method)
        assert q.act_order == row.act_order and q.needs_hessian == row.hessian
        assert q.grid == (GridFit.MSE if row.search else GridFit.MINMAX)
        assert PruneConfig(method="magnitude", quant=q).needs_calibration == row.hessian
        if not row.act_order:
            with pytest.raises(PrunekitError, match="act_order is not an option"):
                QuantConfig(wbits=4, quant_method=method, act_order=True)
        joint = dict(wbits=4, quant_method=method, order="joint")
        if row.joint:
            assert QuantConfig(**joint).act_order is False  # the joint sweep runs in column order
            PruneConfig(method="sparsegpt", quant=QuantConfig(**joint))
        else:
            with pytest.raises(PrunekitError, match="order 'joint'"):
                PruneConfig(method="sparsegpt", quant=QuantConfig(**joint))
    assert QuantConfig().layer(None, 128, 0.01, "x") is None  # no bits: no quantization


@pytest.mark.parametrize("order,sweeps", [(o, s) for o in ORDERS for s in (False, True) if s or o != Order.JOINT])
def test_every_order_prunes_and_quantizes(order, sweeps):
    """A magnitude step at 50%: each order leaves exactly the step's zeros, every weight on the returned grid;
    the sweep (when the method has one) receives a quantizer in every order but prune-first. (The joint order
    needs a sweep: the config refuses it otherwise.)"""
    assert set(ORDERS) == set(Order)
    w, h = _layer(1)
    given = []

    def prune_step(quantizer):
        given.append(quantizer)
        keep = select_mask(w.abs(), 0.5, "layer", None)
        if quantizer is not None:  # stands in for a sweep that rounds as it goes
            for g in range(len(quantizer.bounds)):
                if not quantizer.fitted[g]:
                    quantizer.fit_group(g, w[:, slice(*quantizer.bounds[g])])
            for col in range(w.shape[1]):
                w[:, col] = quantizer.column(col, w[:, col] * keep[:, col])
        zero_pruned_(w, keep)
        return keep, 0

    quant = QuantConfig(wbits=4, groupsize=16, quant_method="gptq", order=order).layer(lambda: h, 16, 0.01, "layer")
    keep, grid, escalations = prune_and_quantize(w, prune_step, sweeps, order, quant)
    assert int((~keep).sum()) == w.numel() // 2 and bool((w[~keep] == 0).all())
    assert torch.equal(grid.apply(w), w) and escalations == 0
    assert (given[0] is not None) == (sweeps and order != Order.PRUNE_FIRST)
