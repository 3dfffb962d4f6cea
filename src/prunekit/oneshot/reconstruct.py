"""Block-wise reconstruction: after a block is pruned (and quantized), train its kept weights so its output matches
the dense block's output (EBFT, arXiv 2402.12419), a recovery stage that walks the blocks as calibration does.

The dense block's outputs come from the dense stream (each dense block run on the previous dense block's outputs).
The pruned block is trained on the inputs it will see, the pruned model's stream (``student``), or on the dense
stream (``teacher``). Masks stay exactly as they were (pruned weights are re-zeroed after every step) and quantized
layers train through their frozen grids (straight-through) and end on them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from tqdm.auto import tqdm

from ..errors import PrunekitError
from ..quant.frozen import FrozenGrid
from ..quant.grid import LayerGrid
from ..selection import zero_pruned_
from ..targets import ExpertSlice, Target, block_targets, find_blocks, find_targets, stored_transposed, weight_view
from .calibrate import BlockInputs, _hidden, _to, capture_inputs, run_block
from .collective import Single
from .config import RecoverConfig, Stream

log = logging.getLogger(__name__)


class DenseStream:
    """The dense model's activations, one block ahead: ``advance(dense_block)`` runs the dense block on them and
    returns its outputs (the reconstruction target), which become the next block's inputs. With ``keep_inputs``
    the inputs of the latest block stay readable as ``previous`` (training on the dense stream)."""

    def __init__(self, inputs: BlockInputs, keep_inputs: bool, copy: bool = True) -> None:
        """``copy=False`` takes ``inputs`` over (nothing else may use them) instead of copying them."""
        hidden = [h.clone() for h in inputs.hidden] if copy else inputs.hidden
        self.inputs = BlockInputs(hidden, inputs.args, inputs.kwargs)
        self.keep_inputs = keep_inputs
        self.previous: BlockInputs | None = None

    def advance(self, dense_block: nn.Module) -> list[torch.Tensor]:
        out = run_block(dense_block, self.inputs, inplace=not self.keep_inputs)
        self.previous = self.inputs if self.keep_inputs else None
        self.inputs = out
        return out.hidden

    def nbytes(self) -> int:
        return sum(h.nbytes for h in self.inputs.hidden) * (2 if self.keep_inputs else 1)


def relative_error(block: nn.Module, inputs: BlockInputs, wanted: list[torch.Tensor]) -> float:
    """‖block(X) − Y‖² / ‖Y‖² over every batch: how far the block's outputs are from the dense ones."""
    out = run_block(block, inputs)
    num = sum(float(((y.float() - t.float()) ** 2).sum()) for y, t in zip(out.hidden, wanted, strict=True))
    den = sum(float((t.float() ** 2).sum()) for t in wanted)
    return num / den if den > 0 else 0.0


def _stored(target: Target) -> torch.Tensor:
    """The trained (out, in) weight as stored, under any parametrization: pruned entries are zeroed there."""
    if isinstance(target, ExpertSlice):
        return weight_view(target)
    module = target
    w = module.parametrizations.weight.original if parametrize.is_parametrized(module, "weight") else module.weight
    return w.data.t() if stored_transposed(module) else w.data


@contextlib.contextmanager
def _frozen_grids(targets: Mapping[str, Target], grids: Mapping[str, LayerGrid]) -> Iterator[None]:
    """Train the quantized targets through their grids (rounded in the forward pass, straight-through); on exit the
    plain weights are rounded onto the grids again."""
    fused = [n for n in grids if isinstance(targets[n], ExpertSlice)]
    if fused:
        raise PrunekitError(f"block reconstruction of quantized fused experts is not supported ({fused[0]})")
    for name, grid in grids.items():
        module = targets[name]
        parametrize.register_parametrization(module, "weight", FrozenGrid(grid, stored_transposed(module),
                                                                          module.weight.device))
    try:
        yield
    finally:
        for name, grid in grids.items():
            module = targets[name]
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
            with torch.no_grad():
                w = weight_view(module)
                w.copy_(grid.apply(w).to(w.dtype))


def reconstruct_block(
    block: nn.Module, targets: Mapping[str, Target], keep: Mapping[str, torch.Tensor], inputs: BlockInputs,
    wanted: list[torch.Tensor], config: RecoverConfig, grids: Mapping[str, LayerGrid] | None = None,
    collective: Single | None = None, seed: int = 0,
) -> dict:
    """Train every parameter of ``block`` with Adam for ``config.recover_epochs`` passes over ``inputs`` (one step per
    batch, in a seeded order) so its output matches ``wanted`` (one (B, seqlen, hidden) tensor per batch), keeping
    the targets' pruned weights (``keep`` False, (out, in)) at zero and the quantized ones (``grids``) on their
    grids. With several processes (``collective``) each holds its share of the batches and the gradients are
    averaged, so every process ends with the same weights. Returns the relative output error before and after."""
    collective = collective or Single()
    grids = {n: g for n, g in (grids or {}).items() if n in targets}
    param = next(block.parameters())
    batches = list(inputs)
    steps = -(-collective.total(len(batches)) // collective.world)  # per epoch, the same on every process
    order = torch.Generator().manual_seed(seed)
    before = relative_error(block, inputs, wanted)
    original = {k: v.clone() for k, v in block.state_dict().items()}
    losses = []
    with torch.enable_grad(), _frozen_grids(targets, grids):
        params = [p for p in block.parameters() if p.is_floating_point()]  # the grids' parametrizations hold some
        opt = torch.optim.Adam(params, lr=config.recover_lr)
        for p in params:
            p.requires_grad_(True)
        try:
            for _ in range(config.recover_epochs):
                perm = torch.randperm(len(batches), generator=order).tolist()
                for k in range(steps):
                    b = perm[k % len(batches)]
                    h, args, kwargs = batches[b]
                    low = h.dtype in (torch.bfloat16, torch.float16) and h.dtype != param.dtype
                    cast = torch.autocast(param.device.type, dtype=h.dtype) if low else contextlib.nullcontext()
                    opt.zero_grad(set_to_none=True)
                    with cast:
                        y = _hidden(block(h.to(param.device), *_to(args, param.device), **_to(kwargs, param.device)))
                    loss = F.mse_loss(y.float(), wanted[b].to(param.device).float())
                    loss.backward()
                    collective.mean_grads(params)
                    opt.step()
                    with torch.no_grad():
                        for name, target in targets.items():
                            zero_pruned_(_stored(target), keep[name].to(param.device))
                    losses.append(float(loss.detach()))
        finally:
            for p in params:
                p.requires_grad_(False)
    with torch.no_grad():
        for name, target in targets.items():  # the grids' rounding keeps zeros at zero; this is the guarantee
            zero_pruned_(weight_view(target), keep[name].to(param.device))
    after = relative_error(block, inputs, wanted)
    report = {"error_before": before, "error_after": after, "steps": len(losses), "kept": "trained",
              "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None}
    if not after <= before:  # worse, or not finite (diverged): the block goes back to what it was
        block.load_state_dict(original)
        log.warning("block reconstruction made the output error worse (%.4g -> %.4g; lower --recover-lr?): the "
                    "block keeps its pruned weights", before, after)
        report |= {"error_after": before, "kept": "original", "error_trained": after}
    return report


@torch.no_grad()
def reconstruct(student: nn.Module, teacher: nn.Module, calibration: torch.Tensor, config: RecoverConfig,
                grids: Mapping[str, LayerGrid] | None = None, progress: bool = True) -> list[dict]:
    """Block-wise reconstruction of an already pruned ``student`` against its dense ``teacher`` (same architecture)
    on ``calibration`` (nsamples, seqlen), in place: the blocks are walked side by side, each student block trained
    (``reconstruct_block``) and then run to give the next one its inputs. Pruned weights are the student's zeros.
    Returns one report per block."""
    found, dense_found = find_blocks(student), find_blocks(teacher)
    if found is None or dense_found is None or len(found[1]) != len(dense_found[1]):
        raise PrunekitError("block reconstruction needs the pruned model and its dense teacher to have the same "
                            "repeated blocks")
    name, blocks = found
    dense_blocks = dense_found[1]
    targets = find_targets(student)
    inputs = capture_inputs(student, blocks[0], calibration, 1)
    dense = DenseStream(capture_inputs(teacher, dense_blocks[0], calibration, 1), config.recover_stream == Stream.TEACHER,
                        copy=False)
    reports = []
    for i, (block, dense_block) in enumerate(tqdm(list(zip(blocks, dense_blocks, strict=True)), desc="reconstruct",
                                                  unit="block", disable=not progress)):
        local = block_targets(block, f"{name}.{i}", targets)
        wanted = dense.advance(dense_block)
        if local:
            keep = {n: weight_view(t) != 0 for n, t in local.items()}
            report = reconstruct_block(block, local, keep, training_inputs(config, inputs, dense), wanted, config,
                                       {n: g for n, g in (grids or {}).items() if n in local}, seed=i)
            reports.append({"block": i} | report)
            log.info("block %d reconstructed: output error %.4g -> %.4g", i, report["error_before"],
                     report["error_after"])
        if i + 1 < len(blocks):
            inputs = run_block(block, inputs, inplace=True)
    return reports


def training_inputs(config: RecoverConfig, student: BlockInputs, dense: DenseStream) -> BlockInputs:
    """What the pruned block trains on: the pruned model's stream, or the dense one."""
    return dense.previous if config.recover_stream == Stream.TEACHER else student
