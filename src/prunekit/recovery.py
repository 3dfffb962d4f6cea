"""Recovery of a pruned folder as library calls: ``recover_run`` (block-wise reconstruction against the dense model)
and ``finetune_run`` (end-to-end fine-tuning, plain or distilled). Both check every input before the long work
(training text against the evaluation text, window lengths, the teacher), evaluate before and after, and write the
output folder atomically with its masks, grids and a manifest of what was trained on."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

from .data import CalibConfig, TextSource, load_text, sample_calibration
from .devices import parse_device
from .errors import PrunekitError
from .fsutil import claim_output, file_inside
from .measure.tasks import TASKS_FILE
from .models import fingerprint, load_model
from .oneshot.config import RecoverConfig
from .oneshot.reconstruct import reconstruct
from .pipeline import EvalRequest, model_path, model_record, saved_bytes
from .settings import DTYPES
from .store.grid_file import GRIDS_FILE, check_grids, load_grids
from .store.manifest import MANIFEST_FILE, read_manifest
from .store.save import save_pruned
from .store.shards import CheckpointReader
from .targets import find_targets, weight_view
from .train.checkpoint import Checkpoints, checkpoint_folder
from .train.checkpoint import clear as clear_checkpoints
from .train.config import FinetuneConfig
from .train.curve import curve_record, plot_curve
from .train.finetune import finetune
from .train.generated import TEACHER_DATA, generated_text
from .train.losses import needs_teacher


class Trained(NamedTuple):
    model: torch.nn.Module
    log: dict  # for the manifest
    brief: dict  # a few figures of it for the summary
    files: dict  # more files for the output folder, by name (JSON values, or bytes)


CURVE_JSON, CURVE_PNG = "loss_curve.json", "loss_curve.png"
GENERATED_LENGTH = 512  # tokens per document sampled from the teacher (at least the training window)

# (model, tokenizer, training text, teacher or None, grids or None, the model's manifest record) -> Trained
Train = Callable[..., Trained]


def model_grids(path: str | Path) -> dict | None:
    """A quantized model folder's grids (``quant.safetensors``), checked against its weights' shapes, or None."""
    if not os.path.lexists(Path(path) / GRIDS_FILE):
        return None
    grids = load_grids(file_inside(path, GRIDS_FILE))
    reader = CheckpointReader(path)
    check_grids(grids, {n.removesuffix(".weight"): reader.shape(n) for n in reader.files}, Path(path) / GRIDS_FILE)
    return grids


def resolve_teacher(spec: str | None, path: str, why: str) -> str:
    """``spec``, or the model the folder ``path`` was pruned from where its manifest records the embedded default
    (a recorded path is data from the folder, never followed). ``why`` starts the error's sentence."""
    if spec:
        return spec
    recorded = None
    if os.path.lexists(Path(path) / MANIFEST_FILE):
        model = read_manifest(path).get("model")
        recorded = model.get("spec") if isinstance(model, dict) else None
    if recorded == "default":
        return recorded
    hint = f": it was pruned from {recorded!r}; pass that as --teacher" if isinstance(recorded, str) else ""
    raise PrunekitError(f"{why} the dense model; give it with --teacher{hint}")


def load_teacher(spec: str, student: torch.nn.Module, dtype: str, device: str) -> torch.nn.Module:
    """The dense teacher, loaded as the student is (dtype, device), checked to share its vocabulary and width."""
    teacher = load_model(model_path(spec, {}), DTYPES[dtype], device)[0]
    if teacher.get_output_embeddings().weight.shape != student.get_output_embeddings().weight.shape:
        raise PrunekitError(f"the teacher {spec} has another vocabulary or width than the model: it cannot teach it")
    return teacher


def refuse_eval_text(source: TextSource, evaluation) -> None:
    """A recovery measured on its own training text is not a result: no evaluation document may be trained on."""
    if evaluation.text is None:
        return
    trained = {d.strip() for d in source.documents if d.strip()}
    shared = sum(d.strip() in trained for d in evaluation.text.documents if d.strip())
    if shared:
        raise PrunekitError(f"the training text {source.name} holds {shared} document(s) of the evaluation text "
                            f"{evaluation.text.name}: train on other text (e.g. --data c4 --eval wikitext2)")


def _run(model: str, out: str | Path, data: str, windows: CalibConfig, evaluation: EvalRequest | None,
         teacher: str | None, why_teacher: str | None, train: Train, section: str, dtype: str, device: str,
         overwrite: bool, command: list[str] | None) -> dict:
    """Load the pruned ``model`` (and its teacher when ``why_teacher`` says why one is needed, or the text is to be
    sampled from it: ``data`` = teacher), ``train`` it on ``data``, of which it takes ``windows``, evaluate before
    and after, and save it to ``out`` with the training log under ``section``."""
    evaluation = evaluation or EvalRequest()
    parse_device(device)  # a missing GPU: one line, before any work
    with claim_output(out, overwrite) as claim:
        generate = data == TEACHER_DATA
        source = None if generate else load_text(data)
        prepared = evaluation.prepare()
        if source:
            refuse_eval_text(source, prepared)
        path = model_path(model, {"--seqlen": windows.seqlen} | prepared.seqlens())
        why_teacher = why_teacher or ("--data teacher samples the training text from" if generate else None)
        teacher = resolve_teacher(teacher, path, why_teacher) if why_teacher else None
        net, tok, path = load_model(path, DTYPES[dtype], device)
        claim.require_space(saved_bytes(net, path))
        grids = model_grids(path)  # a quantized model: its grids stay frozen
        dense = teacher and load_teacher(teacher, net, dtype, device)
        record = model_record(model, path, dtype, net)
        if generate:
            source = generated_text(dense, tok, windows.nsamples * windows.seqlen, max(windows.seqlen, GENERATED_LENGTH),
                                    windows.seed, fingerprint(teacher, model_path(teacher, {})))
        prepared.run("before", net, tok)
        t0 = time.perf_counter()
        net, log, brief, files = train(net, tok, source, dense, grids, record)
        seconds = round(time.perf_counter() - t0, 2)
        del dense
        prepared.run("after", net, tok)
        masks = {n: weight_view(t) != 0 for n, t in find_targets(net).items()}
        summary = {"model": model, "out": str(out), "teacher": teacher, "seconds": seconds, **brief}
        lines, sections, task_file = prepared.report("before", "after")
        summary |= lines
        save_pruned(net, claim, masks, tok, extra=files | ({TASKS_FILE: task_file} if task_file else {}), manifest={
            "command": command, "model": record, "data": source.describe(),
            section: log | {"frozen_grids": bool(grids), "teacher": teacher, "wall_seconds": seconds},
            **sections, "summary": summary}, grids=grids)
    return summary


def recover_run(model: str, out: str | Path, config: RecoverConfig | None = None, calib: CalibConfig | None = None,
                evaluation: EvalRequest | None = None, *, teacher: str | None = None, dtype: str = "float32",
                device: str = "cpu", overwrite: bool = False, command: list[str] | None = None) -> dict:
    """Block-wise reconstruction (``oneshot.reconstruct``) of the pruned folder ``model`` against its dense
    ``teacher`` (default: the model it was pruned from, when its manifest records the embedded default), on the
    calibration windows ``calib``; saved to ``out``. Returns the run's summary."""
    config = config or RecoverConfig(recover="block")
    calib = calib or CalibConfig()

    def train(net, tok, source, dense, grids, record):
        windows = sample_calibration(source, tok, calib)
        blocks = reconstruct(net, dense, windows, config, grids)
        brief = {"blocks": len(blocks), "output_error_mean": [round(sum(b[k] for b in blocks) / len(blocks), 6)
                                                              for k in ("error_before", "error_after")]}
        return Trained(net, {"config": dataclasses.asdict(config), "calibration": dataclasses.asdict(calib),
                             "tokens": windows.numel(), "blocks": blocks}, brief, {})

    return _run(model, out, calib.data, calib, evaluation, teacher, "block reconstruction matches", train, "recover",
                dtype, device, overwrite, command)


def finetune_run(model: str, out: str | Path, config: FinetuneConfig, data: str = "c4",
                 evaluation: EvalRequest | None = None, *, teacher: str | None = None, checkpoint_every: int = 0,
                 resume: bool = False, dtype: str = "float32", device: str = "cpu", overwrite: bool = False,
                 command: list[str] | None = None) -> dict:
    """Recovery fine-tuning (``train.finetune``) of the pruned folder ``model`` on ``data`` with its masks (and any
    grids) locked, distilled from ``teacher`` when ``config.loss`` asks for one; saved to ``out`` with its loss curve
    (``loss_curve.json`` and ``.png``). With ``checkpoint_every`` the state is saved beside ``out`` every so many
    steps; ``resume`` goes on from it after an interruption."""
    if checkpoint_every < 0:
        raise PrunekitError(f"checkpoint_every must be >= 0, got {checkpoint_every}")

    def train(net, tok, source, dense, grids, record):
        identity = {"config": dataclasses.asdict(config), "model": record["fingerprint"], "teacher": teacher,
                    "data": source.describe(), "dtype": dtype}
        checkpoints = Checkpoints(checkpoint_folder(out), checkpoint_every, resume, identity)
        net, log = finetune(net, tok, source, config, grids=grids, teacher=dense, checkpoints=checkpoints)
        curve = curve_record(log)
        return Trained(net, log, {"steps": config.steps, "loss_first": round(log["losses"][0], 4),
                                  "loss_last": round(log["losses"][-1], 4)},
                       {CURVE_JSON: curve, CURVE_PNG: plot_curve(curve)})

    why = f"--loss {config.loss} distills from" if needs_teacher(config.mix) else None
    windows = CalibConfig(data, config.steps * config.batch_size, config.seqlen, config.seed)
    summary = _run(model, out, data, windows, evaluation, teacher, why, train, "finetune", dtype, device, overwrite,
                   command)
    clear_checkpoints(checkpoint_folder(out))  # the output is whole: what it was resumed from can go
    return summary
