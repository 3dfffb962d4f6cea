"""``prune(model, config, calibration)``: the public one-shot pruning entry point."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from ..devices import fast_bfloat16
from ..errors import PrunekitError
from ..models import check_finite, check_seqlen
from ..quant.compose import prune_and_quantize
from ..quant.grid import GroupQuantizer, LayerGrid
from ..selection import select_mask, zero_pruned_
from ..store.mask_file import PackedMasks
from ..targets import block_targets, find_blocks, find_targets, weight_view
from ..timing import peak_rss_bytes, reset_peak_rss, rss_bytes
from .admm import admm_update
from .allocation import clamp_keeping_mean, global_allocation, outlier_ratio, owl_sparsities
from .calibrate import BlockInputs, capture_inputs, collect_stats, run_block
from .collective import Single
from .config import Allocation, CalibDtype, PruneConfig, Refine, Sequential, Stream
from .memory_pool import pooled_cpu_memory
from .methods import METHODS, Statistics
from .reconstruct import DenseStream, reconstruct_block, training_inputs
from .residency import DiskOffload, InMemory
from .scores import magnitude_scores, wanda_scores

log = logging.getLogger(__name__)

RECON_TOKENS = 1024  # calibration tokens per layer (evenly strided) on which reconstruction error is measured


@dataclass
class LayerReport:
    name: str
    shape: tuple[int, int]
    target_sparsity: float
    sparsity: float
    recon_error: float | None = None
    skipped: str | None = None
    solve_seconds: float = 0.0  # scoring, selection and weight update, nothing else


@dataclass
class PruneResult:
    """Masks (True = kept) and what the run did, for the manifest."""

    masks: PackedMasks  # name -> bool mask, unpacked on access
    layers: list[LayerReport]
    seconds: float
    peak_rss_mb: float
    damping_escalations: int = 0
    block_sparsity: list[float] | None = None
    info: dict = field(default_factory=dict)
    grids: dict[str, LayerGrid] = field(default_factory=dict)  # quantized layers' grids (``quant.grid``)

    @property
    def sparsity(self) -> float:
        total = self.masks.numel()
        return 1 - self.masks.kept() / total if total else 0.0

    def to_dict(self) -> dict:
        return {
            "sparsity": self.sparsity,
            "seconds": round(self.seconds, 2),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "damping_escalations": self.damping_escalations,
            "block_sparsity": self.block_sparsity,
            "layers": [vars(r) | {"shape": list(r.shape)} for r in self.layers],
            **self.info,
        }


def _peak_rss_mb() -> float:
    return peak_rss_bytes() / 2**20


def _usable_targets(model: nn.Module, config: PruneConfig) -> tuple[dict[str, nn.Module], list[LayerReport]]:
    """Targets minus layers the N:M pattern cannot tile (warned about, or an error when strict)."""
    targets = find_targets(model, config.include, config.exclude)
    if not targets:
        raise PrunekitError("no prunable layers matched (check --include/--exclude)")
    check_finite(targets)
    for name, module in targets.items():  # before any work: a width the quantization groups cannot tile
        w = weight_view(module)
        why = config.quant.group_error(name, w.shape[1]) or config.quant.dtype_error(name, w.dtype)
        if why:
            raise PrunekitError(why)
    skipped = []
    if config.nm is not None:
        m = config.nm[1]
        for name in list(targets):
            shape = tuple(weight_view(targets[name]).shape)
            if shape[1] % m:
                msg = f"{name}: input width {shape[1]} is not divisible by M={m}"
                if config.strict:
                    raise PrunekitError(msg)
                log.warning("%s; layer skipped", msg)
                skipped.append(LayerReport(name, shape, 0.0, 0.0, skipped=msg))
                del targets[name]
        if not targets:
            raise PrunekitError(f"no targeted layer can be tiled by {config.pattern}: every input width is not "
                                f"divisible by M={m} (e.g. {skipped[0].skipped})")
    return targets, skipped


def _recon_error(old: torch.Tensor, new: torch.Tensor, x: torch.Tensor | None) -> float | None:
    """‖WX − ŴX‖² / ‖WX‖² on the sampled calibration inputs x (tokens, cols)."""
    if x is None or x.numel() == 0:
        return None
    x = x.to(old.device, torch.float32)
    ref = x @ old.float().T
    denom = float((ref * ref).sum())
    diff = x @ (old.float() - new.float()).T
    return float((diff * diff).sum()) / denom if denom > 0 else 0.0


def _layer_sparsities(
    config: PruneConfig, targets: dict[str, nn.Module], inputs: BlockInputs | None = None, walk=None,
    collective: Single | None = None,
) -> tuple[dict[str, float], list[float] | None]:
    """Per-layer target sparsity: uniform, global threshold, or OWL (dense pre-pass over the blocks, each one
    loaded by ``walk``; the Σx² of every process summed by ``collective``)."""
    low, high = config.min_layer_sparsity, config.max_layer_sparsity  # the config holds sparsity within them
    sizes = {n: weight_view(m).numel() for n, m in targets.items()}
    if config.allocation == Allocation.UNIFORM:
        return dict.fromkeys(targets, config.sparsity), None
    if config.allocation == Allocation.GLOBAL and not config.needs_calibration:
        scores = {n: magnitude_scores(weight_view(m)) for n, m in targets.items()}
        return clamp_keeping_mean(global_allocation(scores, config.sparsity), sizes, low, high), None
    # Calibrated score |W|·‖X‖ on the dense model, block by block.
    assert inputs is not None and walk is not None and collective is not None
    global_scores: dict[str, torch.Tensor] = {}  # only for global allocation
    owl_blocks: list[tuple[list[str], float, int]] = []  # (layer names, outlier ratio, parameters)
    first = inputs
    for last, block, local in walk("allocation pre-pass", final=False):
        # The first block's inputs are kept for the pruning pass; later ones are the pre-pass's own.
        stats, _, inputs = collect_stats(block, local, inputs, hessian=False, outputs=not last,
                                         inplace=inputs is not first)
        for n in local:
            collective.reduce_stats(stats[n])
            stats[n].check_finite(n)
        scores = {n: wanda_scores(weight_view(m), stats[n].norms_sq) for n, m in local.items()}
        if config.allocation == Allocation.GLOBAL:
            global_scores.update(scores)
        elif scores:
            params = sum(s.numel() for s in scores.values())
            owl_blocks.append((list(scores), outlier_ratio(list(scores.values()), config.owl_m), params))
    if config.allocation == Allocation.GLOBAL:
        return clamp_keeping_mean(global_allocation(global_scores, config.sparsity), sizes, low, high), None
    names, ratios, params = zip(*owl_blocks, strict=True)
    owl = owl_sparsities(list(ratios), list(params), config.sparsity, config.owl_lambda)
    fitted = clamp_keeping_mean(dict(enumerate(owl)), dict(enumerate(params)), low, high)  # blocks within the bounds
    block_s = [fitted[b] for b in range(len(owl))]
    log.info("OWL block sparsities: %s", ", ".join(f"{s:.3f}" for s in block_s))
    return {n: s for ns, s in zip(names, block_s, strict=True) for n in ns}, block_s


def _prune_layer(
    config: PruneConfig, name: str, module: nn.Module, sparsity: float, stats=None, sample=None
) -> tuple[torch.Tensor, LayerReport, int, LayerGrid | None]:
    """Prune one layer (and quantize it, in ``config.quant.order``: ``quant.compose``); returns its keep mask,
    report, damping escalations and quantization grid."""
    if stats is not None:
        stats.check_finite(name)
    w = weight_view(module)
    refine = config.refine == Refine.ADMM
    old = w.detach().clone() if sample is not None or refine else None  # dense, for error / ADMM
    row = METHODS[config.method]

    def prune_step(quantizer: GroupQuantizer | None) -> tuple[torch.Tensor, int]:
        escalations = 0
        if row.update is not None:  # the update chooses the mask as it goes (rounding onto ``quantizer``'s grid)
            new, keep, escalations = row.update(w, stats, sparsity, config.solve, name, quantizer)
            w.copy_(new)
        else:
            keep = select_mask(row.score(w, stats), sparsity, config.scope, config.nm)
        if refine:
            start = zero_pruned_(w, keep)
            w.copy_(admm_update(old, keep, stats.hessian, start=start, iters=config.admm_iters,
                                percdamp=config.percdamp))
        zero_pruned_(w, keep)  # +0.0 at every pruned entry (the solvers leave -0.0 where a product was negative)
        return keep, escalations

    t0 = time.perf_counter()
    hessian = None if stats is None else (lambda: stats.hessian)
    quant = config.quant.layer(hessian, config.blocksize, config.percdamp, name)
    keep, grid, escalations = prune_and_quantize(w, prune_step, row.update is not None, config.quant.order, quant)
    solve = time.perf_counter() - t0
    report = LayerReport(
        name, tuple(w.shape), sparsity, 1 - int(keep.count_nonzero()) / keep.numel(), _recon_error(old, w, sample),
        solve_seconds=round(solve, 4),
    )
    return keep, report, escalations, grid


def _nbytes(stats: dict, sample: dict) -> int:
    """Bytes of a block's statistics and samples, each shared object counted once."""
    distinct = {("stats", id(s)): s.nbytes for s in stats.values()}
    distinct |= {("sample", x.data_ptr()): x.nbytes for x in sample.values()}
    return sum(distinct.values())


def _solve_bytes(config: PruneConfig, module: nn.Module) -> int:
    """Working memory of one layer's solve, in float32: a copy of its weights (SparseGPT's working copy, or
    the scores) and the dense copy kept for the reconstruction error; with H, also the one
    (cols, cols) buffer its factorization runs in (``hessian.inverse_cholesky``; ADMM and GPTQ factor H too)."""
    rows, cols = weight_view(module).shape
    factor = cols * cols if config.statistics == Statistics.XTX else 0
    return 4 * (2 * rows * cols + factor)


def _memory_bound(rss_start_mb: float, activation_bytes: int, stats_bytes: int, solve_bytes: int,
                  streamed_bytes: int = 0, masks_bytes: int = 0, dense_stream_bytes: int = 0) -> dict:
    """Issue 3's peak-memory bound, in parts: the process at the start of ``prune()`` (dense model
    resident), plus one block's statistics, plus the calibration activations, counted as the
    original implementations hold them: the block's inputs and its outputs (prunekit overwrites the
    inputs in place, so the second set's room holds one sample's forward temporaries instead), plus the
    largest layer's solve (``_solve_bytes``). Pruning from disk adds the largest block (``streamed_bytes``);
    its shard is written straight from it. Masks held in memory count too (one bit per weight; a run from
    disk spills them), and so does block reconstruction's dense stream."""
    mb = 2**20
    parts = {"rss_start_mb": rss_start_mb, "activations_in_out_mb": round(2 * activation_bytes / mb, 1),
             "block_stats_mb": round(stats_bytes / mb, 1), "layer_solve_mb": round(solve_bytes / mb, 1)}
    if streamed_bytes:
        parts["streamed_block_mb"] = round(streamed_bytes / mb, 1)
    if masks_bytes:
        parts["masks_mb"] = round(masks_bytes / mb, 1)
    if dense_stream_bytes:
        parts["dense_stream_mb"] = round(dense_stream_bytes / mb, 1)
    return parts | {"bound_mb": round(sum(parts.values()), 1)}


def _block_masks(local: dict[str, nn.Module], kept_zeros: dict[str, torch.Tensor], masks: PackedMasks) -> None:
    """Add a pruned block's keep masks, rebuilt from its pruned weights: nonzero, or a kept zero.

    Holding bool masks during pruning would cost memory at its peak; the packed bits cost 1/32 of the
    float32 weights, and this needs the block's weights only once it is done.
    """
    for name in local:
        if name in kept_zeros:
            keep = (weight_view(local[name]) != 0).contiguous()  # (rows, cols); Conv1D views are transposed
            keep.view(-1)[kept_zeros.pop(name).to(keep.device)] = True
            masks.add(name, keep.cpu())


def _kept_zeros(weight: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Flat indices of the weights that are kept but exactly zero (almost always none)."""
    return ((weight == 0) & keep).flatten().nonzero().squeeze(1).cpu()


def _calib_dtype(config: PruneConfig, block: nn.Module, device: torch.device) -> tuple[torch.dtype, str]:
    """The dtype calibration activations are kept and the blocks run in (autocast, never upcast), and why."""
    weights = next(block.parameters()).dtype
    if config.calib_dtype == CalibDtype.AUTO:
        if weights != torch.float32:
            return weights, f"the model's own {weights}"
        fast, why = fast_bfloat16(device)
        return (torch.bfloat16, f"auto: {why}") if fast else (weights, f"auto: float32 ({why})")
    dtype = config.calib_dtype.dtype or weights
    if dtype.itemsize > weights.itemsize:
        raise PrunekitError(f"calib_dtype {config.calib_dtype} is wider than the model's {weights}; use 'model'")
    return dtype, str(config.calib_dtype)


@torch.no_grad()
def prune(
    model: nn.Module, config: PruneConfig, calibration: torch.Tensor | None = None, progress: bool = True,
    residency: InMemory | DiskOffload | None = None, collective: Single | None = None,
) -> PruneResult:
    """Prune ``model`` in place. ``calibration``: token ids (nsamples, seqlen), needed by
    wanda, sparsegpt and OWL; with it, blocks are pruned sequentially on pruned-model activations.

    ``residency`` says where each block's weights live and run (default: in memory, where they are;
    ``DiskOffload`` streams them from the checkpoint). ``collective``: with several processes, each one
    passes its share of ``calibration``; statistics are summed and each layer is solved by one process.
    """
    residency = residency or InMemory()
    collective = collective or Single()
    reset_peak_rss()  # peak memory of this pruning run, not of the process so far
    info: dict = {"rss_start_mb": round(rss_bytes() / 2**20, 1)}  # the model (or its resident part) is loaded
    t0 = time.perf_counter()
    targets, reports = _usable_targets(model, config)
    kept_zeros: dict[str, torch.Tensor] = {}  # per pruned layer: flat indices of kept weights that are 0
    masks = PackedMasks(spill=residency.spill)
    grids: dict[str, LayerGrid] = {}  # per quantized layer
    if config.needs_calibration and (calibration is None or calibration.numel() == 0):
        raise PrunekitError(f"method {config.method!r} with allocation {config.allocation!r} needs calibration data")
    if config.needs_calibration:
        check_seqlen(getattr(model, "config", None), calibration.shape[-1], "the calibration seqlen")
    blocks = find_blocks(model)
    if residency.streams and (blocks is None or config.allocation == Allocation.GLOBAL):
        raise PrunekitError("pruning from disk (--offload disk) needs a model with repeated blocks and a per-block "
                            "allocation (uniform or owl); a global allocation ranks every weight at once")
    escalations = [0]
    position = {n: k for k, n in enumerate(targets)}  # layers are dealt to processes in this order

    def prune_one(name: str, stats, sample) -> None:
        """Prune one layer on its owner process and share the result with the others."""
        if stats is not None:
            collective.reduce_stats(stats)  # once per statistics object (q/k/v share one)
        owner = collective.owner(position[name])
        done = None
        if collective.rank == owner:
            keep, report, esc, grid = _prune_layer(config, name, targets[name], sparsities[name], stats, sample)
            done = report, esc, _kept_zeros(weight_view(targets[name]), keep), grid
        collective.share(weight_view(targets[name]), owner)
        report, esc, kept_zeros[name], grid = collective.share_object(done, owner)
        if grid is not None:
            grids[name] = grid
        escalations[0] += esc
        reports.append(report)

    def walk(desc: str, final: bool = True):
        """(is it the last, block, its targets) for every block, each one loaded for the loop body and released
        after it (``final``: pruned, for good)."""
        block_name, block_list = blocks
        for i, block in enumerate(tqdm(block_list, desc=desc, unit="block", disable=not progress)):
            name = f"{block_name}.{i}"
            residency.load(name, block)
            local = block_targets(block, name, targets)
            if residency.streams:
                check_finite(local)
            yield i + 1 == len(block_list), block, local
            residency.release(name, block, final)

    def without_statistics(block_s: list[float] | None) -> PruneResult:
        for _, _, local in [(True, None, targets)] if blocks is None else walk(str(config.method)):
            for name in local:
                keep, report, _, grid = _prune_layer(config, name, targets[name], sparsities[name])
                kept_zeros[name] = _kept_zeros(weight_view(targets[name]), keep)
                if grid is not None:
                    grids[name] = grid
                reports.append(report)
            _block_masks(local, kept_zeros, masks)
        return PruneResult(masks, reports, time.perf_counter() - t0, _peak_rss_mb(), 0, block_s, info, grids)

    if not config.needs_calibration:
        sparsities, block_s = _layer_sparsities(config, targets)
        return without_statistics(block_s)

    if blocks is None:
        raise PrunekitError("calibrated pruning needs a model with repeated blocks (an nn.ModuleList)")
    block_list = blocks[1]
    device = residency.device or model.get_input_embeddings().weight.device
    calib_dtype, why = _calib_dtype(config, block_list[0], device)
    info["calib_dtype"] = {"dtype": str(calib_dtype).removeprefix("torch."), "why": why}
    with pooled_cpu_memory() as trim:  # every batch reuses the same pages: RSS stays at the working set
        sublayer = config.sequential == Sequential.SUBLAYER
        batch = calibration.shape[0] if sublayer else config.batch_size
        inputs = capture_inputs(model, block_list[0], calibration, batch, dtype=calib_dtype)
        activation_bytes = sum(h.nbytes for h in inputs.hidden)
        sparsities, block_s = _layer_sparsities(config, targets, inputs, walk, collective)
        if config.statistics == Statistics.NONE and not config.recovery.enabled:  # OWL: for the allocation only
            return without_statistics(block_s)
        hessian = config.statistics == Statistics.XTX
        stats_bytes = 0  # the most any one block's statistics and reconstruction samples took
        solve_bytes = 0  # the most any one layer's solve took
        streamed_bytes = 0  # the largest block read from disk

        recover = config.recovery
        dense = DenseStream(inputs, recover.recover_stream == Stream.TEACHER) if recover.enabled else None
        recovered: list[dict] = []
        for index, (last, block, local) in enumerate(walk(str(config.method))):
            trim()  # the previous block's free pages go back to the system
            if residency.streams:
                streamed_bytes = max(streamed_bytes, sum(t.nbytes for t in block.state_dict().values()))
            wanted = dense.advance(block) if dense else None  # the dense block's outputs, before it is pruned
            if not local:
                inputs = inputs if last else run_block(block, inputs, inplace=True)
                continue
            solve_bytes = max([solve_bytes, *(_solve_bytes(config, m) for m in local.values())])
            if config.statistics == Statistics.NONE:  # calibrated for the reconstruction only
                for name in local:
                    prune_one(name, None, None)
            elif sublayer:  # one pass: each layer is pruned inside its own pre-hook
                stats, sample, inputs = collect_stats(
                    block, local, inputs, hessian, RECON_TOKENS, not last, prune_one, inplace=True
                )
                stats_bytes = max(stats_bytes, _nbytes(stats, sample))
            else:
                stats, sample, _ = collect_stats(block, local, inputs, hessian, RECON_TOKENS, outputs=False)
                stats_bytes = max(stats_bytes, _nbytes(stats, sample))
                trim()  # the forward passes' temporaries
                for name in local:  # each layer's statistics are freed once it is pruned
                    prune_one(name, stats.pop(name), sample.pop(name, None))
                    trim()  # its solve's temporaries and statistics: the next solve starts from live memory
            _block_masks(local, kept_zeros, masks)
            if dense:
                report = reconstruct_block(block, local, {n: masks[n] for n in local},
                                           training_inputs(recover, inputs, dense), wanted, recover,
                                           {n: grids[n] for n in local if n in grids}, collective, seed=index)
                recovered.append({"block": index} | report)
                log.info("block %d reconstructed: output error %.4g -> %.4g", index, report["error_before"],
                         report["error_after"])
            if not last and not sublayer:
                inputs = run_block(block, inputs, inplace=True)
        del inputs
    reports.sort(key=lambda r: position.get(r.name, -1))
    # solve: scoring, selection and weight update; the rest is calibration forward passes
    info |= {"calibration_tokens": collective.total(calibration.numel()),
             "solve_seconds": round(sum(r.solve_seconds for r in reports), 2),
             "memory_bound": _memory_bound(info["rss_start_mb"], activation_bytes, stats_bytes, solve_bytes,
                                           streamed_bytes, masks.nbytes(), dense.nbytes() if dense else 0)}
    if dense:
        info["recover"] = {"config": dataclasses.asdict(recover), "blocks": recovered}
    if collective.world > 1:
        info["processes"] = {"count": collective.world, "bytes_sent_rank0": collective.bytes_sent()}
    return PruneResult(masks, reports, time.perf_counter() - t0, _peak_rss_mb(), escalations[0], block_s, info,
                       grids)
