"""Recovery fine-tuning of a pruned LLM with its masks locked (full or LoRA)."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data import CalibConfig, TextSource, sample_calibration
from ..errors import PrunekitError
from ..quant.frozen import attach_grids, snap_to_grids
from ..quant.grid import LayerGrid
from ..selection import zero_pruned_
from .checkpoint import Checkpoints
from .config import FinetuneConfig, Trainable
from .losses import mixed_loss, needs_teacher
from .masks import attach_dense, masks_of, remove

log = logging.getLogger(__name__)


def finetune(
    model: nn.Module,
    tokenizer,
    source: TextSource,
    config: FinetuneConfig,
    progress: bool = True,
    grids: Mapping[str, LayerGrid] | None = None,
    teacher: nn.Module | None = None,
    checkpoints: Checkpoints | None = None,
) -> tuple[nn.Module, dict]:
    """Train ``config.steps`` AdamW steps on random ``config.seqlen`` windows of ``source``; zeros stay zeros.

    Full fine-tuning locks the current zeros with masks (parametrizations) and bakes them in at the end;
    ``config.trainable`` ``norms`` trains only the normalization weights and biases (``norms_and_biases``).
    With ``config.lora_rank > 0`` the base weights are frozen, LoRA adapters (peft) train on every target
    layer, and on merging the update is masked so pruned weights stay exactly zero. Returns the
    plain (unparametrized) model and a log of losses. With ``grids`` (a quantized model's), the forward pass
    uses the weights rounded onto those fixed grids (straight-through gradients), and the trained weights
    are rounded onto them at the end: the quantization stays frozen, only the levels move. ``config.loss`` other
    than ``ce`` distills from ``teacher`` (the dense model, run alongside without gradients): its logits (``kd``)
    and its blocks' outputs (``squarehead``), on the same windows (``losses.py``). With ``checkpoints`` the state is
    saved every so many steps and a resumed run goes on from the last one, to the same weights as a run never
    stopped. The log holds, per step, the loss, its terms, the student's cross-entropy and the teacher's (their gap
    is what distillation closes) and the seconds since the start.
    """
    mix = config.mix
    if needs_teacher(mix) and teacher is None:
        raise PrunekitError(f"--loss {config.loss} distills from a dense teacher: give one (--teacher)")
    features = "feat" in mix
    if teacher is not None:
        teacher.eval().requires_grad_(False)
    steps, batch_size, lora_rank = config.steps, config.batch_size, config.lora_rank
    windows = sample_calibration(source, tokenizer, CalibConfig(source.name, steps * batch_size, config.seqlen, config.seed))
    if grids and lora_rank:
        raise PrunekitError("fine-tuning a quantized model with its grids frozen trains all weights; drop --lora-rank")
    locked = attach_dense(model)
    kept = {n: int(m.sum()) for n, m in locked.items()}
    norms_only = config.trainable is Trainable.NORMS
    if grids and not norms_only:  # frozen weights are on their grids already: no rounding on every forward
        attach_grids(model, grids)
    if lora_rank:
        remove(model)
        torch.manual_seed(config.seed)  # the adapters' initialization: a rerun starts from the same one
        model = _with_lora(model, locked, lora_rank)
    if norms_only:
        model.requires_grad_(False)
        for p in norms_and_biases(model):
            p.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    device = next(model.parameters()).device
    curve: dict[str, list] = {"losses": [], "terms": [], "student_ce": [], "teacher_ce": [], "seconds_at": []}
    start, elapsed = 0, 0.0
    state = checkpoints.load() if checkpoints else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, elapsed, curve = state["step"], state["curve"]["seconds_at"][-1], state["curve"]
    t0 = time.perf_counter() - elapsed
    model.train()
    bar = tqdm(range(start, steps), desc="finetune", unit="step", initial=start, total=steps, disable=not progress)
    for i in bar:
        batch = windows[i * batch_size : (i + 1) * batch_size].to(device)
        opt.zero_grad(set_to_none=True)
        out = model(input_ids=batch, labels=batch, use_cache=False, output_hidden_states=features)
        ref = None
        if teacher is not None:
            with torch.no_grad():
                ref = teacher(input_ids=batch, labels=batch, use_cache=False, output_hidden_states=features)
        loss, parts = mixed_loss(mix, out.loss, out.logits, None if ref is None else ref.logits,
                                 out.hidden_states[1:] if features else (), ref.hidden_states[1:] if features else (),
                                 config.temperature)
        loss.backward()
        opt.step()
        seconds = time.perf_counter() - t0
        for key, value in (("losses", float(loss.detach())), ("terms", parts), ("student_ce", float(out.loss.detach())),
                           ("teacher_ce", None if ref is None else float(ref.loss)), ("seconds_at", round(seconds, 3))):
            curve[key].append(value)
        rate = (i + 1 - start) * batch.numel() / max(seconds - elapsed, 1e-9)
        bar.set_postfix(loss=f"{curve['losses'][-1]:.4f}", tokens_per_s=f"{rate:.0f}")
        if checkpoints and checkpoints.due(i + 1, steps):
            checkpoints.save({"step": i + 1, "model": model.state_dict(), "optimizer": opt.state_dict(), "curve": curve})
    model.eval()
    if lora_rank:
        model = _merge_lora(model, locked)
    else:
        remove(model)
    if grids:
        snap_to_grids(model, grids)
    still = {n: int((model.get_submodule(n).weight != 0).sum()) for n in locked}
    if any(still[n] > kept[n] for n in locked):
        raise RuntimeError("fine-tuning revived pruned weights")  # a bug, not a user error
    return model, dataclasses.asdict(config) | curve | {"tokens": windows.numel(), "resumed_at": start,
                                                "seconds": round(time.perf_counter() - t0, 2)}


def norms_and_biases(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of every normalization layer (LayerNorm, RMSNorm, ...) and every bias: what
    ``--trainable norms`` trains (embeddings, the head and the pruned weights stay as they are)."""
    out = {}
    for module in model.modules():
        is_norm = "norm" in type(module).__name__.lower()
        for name, p in module.named_parameters(recurse=False):
            if is_norm or name == "bias":
                out[id(p)] = p
    return list(out.values())


def _with_lora(model: nn.Module, locked: dict[str, torch.Tensor], rank: int) -> nn.Module:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:
        raise PrunekitError("LoRA fine-tuning needs peft: pip install peft") from e
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=sorted(locked), lora_dropout=0.0)
    return get_peft_model(model, config)


@torch.no_grad()
def _merge_lora(model: nn.Module, locked: dict[str, torch.Tensor]) -> nn.Module:
    merged = model.merge_and_unload()
    for name, mask in locked.items():
        layer = merged.get_submodule(name)
        zero_pruned_(layer.weight, mask if isinstance(layer, nn.Linear) else mask.t())
    assert not masks_of(merged)
    return merged
