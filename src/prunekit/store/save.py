"""Save a pruned model: a from_pretrained-loadable folder plus masks and manifest, written atomically."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..fsutil import OutputClaim, atomic_dir
from .manifest import MANIFEST_FILE, build_manifest, write_json
from .mask_file import MASKS_FILE, save_masks


def save_pruned(
    model: nn.Module,
    out: str | Path | OutputClaim,
    masks: Mapping[str, torch.Tensor],
    tokenizer=None,
    overwrite: bool = False,
    manifest: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``out`` with safetensors weights (dense, zeros in place), masks and ``manifest.json``.

    Everything goes to a temporary folder first, so a failed run leaves no half-written output. ``out``
    may be a claim the caller took before its work (``fsutil.claim_output``). ``extra``: more JSON files
    to write, by name (e.g. per-item task results).
    """
    claim = out if isinstance(out, OutputClaim) else None
    with claim.write() if claim else atomic_dir(out, overwrite) as tmp:
        if hasattr(model, "save_pretrained"):
            model.save_pretrained(tmp, safe_serialization=True)
        else:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        save_masks(masks, tmp / MASKS_FILE)
        write_json(build_manifest(**(manifest or {})), tmp / MANIFEST_FILE)
        for name, data in (extra or {}).items():
            write_json(data, tmp / name)
    return claim.path if claim else Path(out)
