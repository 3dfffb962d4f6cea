"""Save a pruned model: a from_pretrained-loadable folder plus masks and manifest, written atomically."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..fsutil import OutputClaim, atomic_dir
from ..quant.grid import LayerGrid
from .grid_file import GRIDS_FILE, save_grids
from .manifest import MANIFEST_FILE, build_manifest, write_json
from .mask_file import MASKS_FILE, save_masks
from .shards import ShardWriter, write_safetensors


def save_pruned(
    model: nn.Module,
    out: str | Path | OutputClaim,
    masks: Mapping[str, torch.Tensor],
    tokenizer=None,
    overwrite: bool = False,
    manifest: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    grids: Mapping[str, LayerGrid] | None = None,
) -> Path:
    """Write ``out`` with safetensors weights (dense, zeros in place), masks and ``manifest.json``.

    Everything goes to a temporary folder first, so a failed run leaves no half-written output. ``out``
    may be a claim the caller took before its work (``fsutil.claim_output``). ``extra``: more files to write, by
    name: JSON (e.g. per-item task results), or bytes as they are (a figure). ``grids``: the quantized layers'
    grids (``grid_file``).
    """
    claim = out if isinstance(out, OutputClaim) else None
    with claim.write() if claim else atomic_dir(out, overwrite) as tmp:
        write_pruned(tmp, model, masks, tokenizer, manifest, extra, grids)
    return claim.path if claim else Path(out)


def write_pruned(
    folder: Path,
    model: nn.Module | None,
    masks: Mapping[str, torch.Tensor],
    tokenizer=None,
    manifest: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    grids: Mapping[str, LayerGrid] | None = None,
) -> None:
    """Fill ``folder`` (a claim's temporary folder) as ``save_pruned`` does; ``model=None`` when its weights
    are there already (``write_streamed``)."""
    if model is not None and hasattr(model, "save_pretrained"):
        model.save_pretrained(folder, safe_serialization=True)
    elif model is not None:
        write_safetensors(folder / "model.safetensors", model.state_dict())
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    save_masks(masks, folder / MASKS_FILE)
    if grids:
        save_grids(grids, folder / GRIDS_FILE)
    write_json(build_manifest(**(manifest or {})), folder / MANIFEST_FILE)
    for name, data in (extra or {}).items():
        if isinstance(data, bytes):  # a figure
            (folder / name).write_bytes(data)
        else:
            write_json(data, folder / name)


def write_streamed(model: nn.Module, writer: ShardWriter) -> None:
    """Finish a checkpoint whose blocks ``writer`` wrote as they were pruned (``DiskOffload``): the resident
    weights as the last shard (a tied head once, as ``save_pretrained`` stores it), the index, the configs."""
    resident, seen = {}, set()
    for name, t in model.state_dict().items():
        if not t.is_meta and t.data_ptr() not in seen:
            resident[name] = t
            seen.add(t.data_ptr())
    writer.write(resident)
    writer.finish()
    model.config.save_pretrained(writer.folder)
    if getattr(model, "generation_config", None) is not None and model.can_generate():
        model.generation_config.save_pretrained(writer.folder)
