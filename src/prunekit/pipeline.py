"""A whole pruning (or quantization) run as one library call: ``prune_run``. The CLI's ``prune`` and ``quantize``,
the bench scripts and Python users call it; it checks every input before the long work, chooses where the
blocks live (memory, a device, or streamed from disk), prunes with the processes it was started with, writes
the output folder (model, masks, grids, manifest) atomically and evaluates before and after."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path

import torch

from .data import CalibConfig, load_text, sample_calibration
from .devices import available_memory, parse_device
from .errors import PrunekitError
from .fsutil import claim_output, side_files
from .measure.config import EvalConfig, TaskConfig
from .measure.evaluation import Evaluation
from .measure.tasks import TASKS_FILE
from .models import check_seqlen, fingerprint, load_config, load_model, load_skeleton
from .oneshot.collective import init_from_env
from .oneshot.config import PruneConfig
from .oneshot.pruner import prune
from .oneshot.residency import DiskOffload, InMemory
from .settings import DTYPES
from .store.effective_bits import run_bits
from .store.save import save_pruned, write_pruned, write_streamed
from .store.shards import CheckpointReader, ShardWriter
from .targets import find_blocks

log = logging.getLogger(__name__)

OFFLOAD_FRACTION = 0.5  # offload "auto" streams from disk when the weights need more than this share of free memory
OFFLOADS = ("auto", "none", "disk")


@dataclasses.dataclass(frozen=True)
class EvalRequest:
    """What to evaluate: perplexity on ``text`` (None: none) in ``windows``, and zero-shot ``tasks`` paired with
    ``baseline`` (a run folder or eval JSON)."""

    text: str | None = None
    windows: EvalConfig = EvalConfig()
    tasks: TaskConfig | None = None
    baseline: str | None = None

    def prepare(self) -> Evaluation:
        """Read and check the text and tasks now, before any long work."""
        return Evaluation.prepare(self.text, self.windows, self.tasks, self.baseline)


def model_path(model: str, seqlens: dict[str, int]) -> str:
    """The model's path, its windows checked against its positions from its config: before any weights load."""
    path, model_config = load_config(model)
    for what, seqlen in seqlens.items():
        check_seqlen(model_config, seqlen, what)
    return path


def model_record(spec: str, path: str, dtype: str, model) -> dict:
    return {"spec": spec, "path": path, "dtype": dtype, "fingerprint": fingerprint(spec, path, model)}


def saved_bytes(model, path: str | Path | None = None) -> int:
    """About what ``save_pruned`` writes: the weights as stored, plus one bit per weight of masks, plus the other
    files of the model folder ``path`` (config, tokenizer), which go along."""
    params = {p.data_ptr(): p for p in model.parameters()}.values()
    weights = sum(p.numel() * p.element_size() + p.numel() // 8 for p in params)
    return weights + sum(f.stat().st_size for f in side_files(path))


def wants_offload(offload: str, path: str, dtype: torch.dtype) -> bool:
    """``disk``, or ``auto`` and the model's weights would not fit comfortably in the free memory."""
    if offload not in OFFLOADS:
        raise PrunekitError(f"offload is one of {', '.join(OFFLOADS)}, not {offload!r}")
    if offload != "auto":
        return offload == "disk"
    if not Path(path).is_dir():
        return False
    try:
        need = CheckpointReader(path).nbytes(dtype)
    except PrunekitError:
        return False  # not a safetensors folder: only the in-memory path can load it
    free = available_memory()
    if free is None or need <= OFFLOAD_FRACTION * free:
        return False
    log.warning("the weights need %.1f GB in %s and %.1f GB of memory is free: pruning from disk, a block at a time "
                "(--offload none to force memory)", need / 1e9, str(dtype).removeprefix("torch."), free / 1e9)
    return True


def _together(collective, setup):
    """``setup()`` on every process; if it fails on any, all stop (one error each, not a hang in a collective)."""
    try:
        value = setup()
    except BaseException:
        collective.agree(False)
        raise
    if not collective.agree(True):
        raise PrunekitError("another worker process failed during setup (its error is above)")
    return value


def prune_run(model: str, out: str | Path, config: PruneConfig, calib: CalibConfig | None = None,
              evaluation: EvalRequest | None = None, *, eval_dense: bool = False, dtype: str = "float32",
              device: str = "cpu", offload: str = "auto", overwrite: bool = False, command: list[str] | None = None
              ) -> dict | None:
    """Prune (and quantize, per ``config.quant``) ``model`` (a Hugging Face name or folder, a ``.gguf`` file, or
    ``default``) into the folder ``out``; returns the run's summary (None on every process but the first when
    started as several, e.g. by torchrun). ``calib`` is used when the method, allocation or quantizer needs
    calibration; ``evaluation`` runs on the output (and, with ``eval_dense``, on the input first). Bad input raises
    PrunekitError before the long work; a failure leaves ``out`` as it was."""
    calib = calib or CalibConfig()
    evaluation = evaluation or EvalRequest()
    calib_cfg = calib if config.needs_calibration else None
    torch_device, torch_dtype = parse_device(device), DTYPES[dtype]
    collective = init_from_env(torch_device)
    first = collective.rank == 0
    if not first:
        logging.getLogger().setLevel(logging.WARNING)
    with contextlib.ExitStack() as stack:
        def setup():
            claim = stack.enter_context(claim_output(out, overwrite)) if first else None
            calib_source = calib_cfg and load_text(calib_cfg.data)
            prepared = evaluation.prepare()  # bad data fails here, before any long work
            seqlens = {"--seqlen": calib_cfg.seqlen} if calib_cfg else {}
            path = model_path(model, seqlens | prepared.seqlens())
            streamed = wants_offload(offload, path, torch_dtype)
            if streamed and claim:  # before any work: the output needs the weights' room
                need = CheckpointReader(path).nbytes(torch_dtype) * 33 // 32  # + one mask bit per weight
                claim.require_space(need + sum(f.stat().st_size for f in side_files(path)))
            return claim, calib_source, prepared, path, streamed

        claim, calib_source, prepared, path, streamed = _together(collective, setup)
        torch.manual_seed(calib.seed)
        if streamed:
            net, tok, path, reader = load_skeleton(path, torch_dtype)
        else:
            net, tok, path = load_model(path, torch_dtype)
            if claim:
                claim.require_space(saved_bytes(net, path))
        calibration = calib_cfg and sample_calibration(calib_source, tok, calib_cfg)
        calibration = calibration if calibration is None else collective.split(calibration)
        if eval_dense and first:
            prepared.run("dense", load_model(path, torch_dtype)[0] if streamed else net, tok)
        tmp = stack.enter_context(claim.write()) if streamed and claim else None  # shards written as blocks finish
        writer = tmp and ShardWriter(tmp, len(find_blocks(net)[1]) + 1)
        residency = DiskOffload(reader, writer, torch_dtype, torch_device) if streamed else InMemory(
            None if torch_device.type == "cpu" else torch_device)
        result = prune(net, config, calibration, progress=first, residency=residency, collective=collective)
        if not first:
            return None
        if streamed:
            write_streamed(net, writer)
            tok.save_pretrained(tmp)
            if prepared.text or prepared.tasks:
                prepared.run("pruned", load_model(str(tmp), torch_dtype)[0], tok)
        else:
            prepared.run("pruned", net, tok)
        summary = {
            "model": model, "out": str(out), "method": config.method, "pattern": config.pattern,
            "sparsity": round(result.sparsity, 6), "prune_seconds": round(result.seconds, 2),
            "peak_rss_mb": round(result.peak_rss_mb, 1), "rss_at_start_mb": result.info["rss_start_mb"],
            "memory_bound_mb": result.info.get("memory_bound", {}).get("bound_mb"),
        }
        bits = run_bits(result.masks.layers(), result.grids, config.nm, torch_dtype.itemsize * 8)
        summary["bits_per_weight"] = bits["model"]["bits_per_weight"]  # the targeted layers, packed (``effective_bits``)
        lines, sections, task_file = prepared.report("dense", "pruned")
        summary |= lines
        manifest = {
            "command": command, "model": model_record(model, path, dtype, net), "config": config.to_dict(),
            "seed": calib.seed,
            "calibration": calib_cfg and {**dataclasses.asdict(calib_cfg), "source": calib_source.describe()},
            "execution": {"offload": "disk" if streamed else "none", "device": str(torch_device),
                          "processes": collective.world},
            "result": result.to_dict(), "effective_bits": bits, **sections, "summary": summary}
        extra = {TASKS_FILE: task_file} if task_file else None
        if streamed:
            write_pruned(tmp, None, result.masks, None, manifest, extra, result.grids)
        else:
            save_pruned(net, claim, result.masks, tok, manifest=manifest, extra=extra, grids=result.grids)
    return summary
