"""Export a pruned folder's target weights in a sparse format, and load them back exactly.

The output folder holds ``weights.prunekit.safetensors`` (no pickle): dense tensors under their own
names, sparse layers as ``name::part`` tensors, and a header with a magic string, a format version
and per-layer layout. Non-weight files (config, tokenizer, manifest) are copied alongside.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from ..errors import PrunekitError
from ..fsutil import atomic_dir
from ..selection import is_valid_nm
from .formats import FORMATS, decode, encode, nbytes
from .mask_file import MASKS_FILE, load_masks

MAGIC = "prunekit-sparse"
VERSION = "1"
WEIGHTS_FILE = "weights.prunekit.safetensors"
NM_CANDIDATES = ((2, 4), (4, 8))


def _read_state(folder: Path) -> dict[str, torch.Tensor]:
    files = sorted(folder.glob("*.safetensors"))
    files = [f for f in files if f.name not in (MASKS_FILE, WEIGHTS_FILE)]
    if not files:
        raise PrunekitError(f"no safetensors weights in {folder}")
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def _is_transposed(value: torch.Tensor, mask: torch.Tensor) -> bool:
    """GPT-2's Conv1D stores (in, out) while masks are (out, in); square ones are told apart by
    which orientation's zeros match the mask."""
    if tuple(value.shape) != tuple(mask.shape):
        return True
    if value.shape[0] != value.shape[1]:
        return False
    return int(((value.t() != 0) == mask).sum()) > int(((value != 0) == mask).sum())


def _candidates(w: torch.Tensor, fmt: str) -> dict[str, tuple[dict, tuple | None]]:
    """Encodings to consider for one (out, in) matrix; on equal size the earlier one wins (N:M
    first, the layout semi-structured kernels read)."""
    out = {}
    if fmt in ("auto", "nm"):
        for nm in NM_CANDIDATES:
            if w.shape[1] % nm[1] == 0 and is_valid_nm(w, *nm):
                out["nm"] = (encode(w, "nm", nm), nm)
                break
        if fmt == "nm" and "nm" not in out:
            raise PrunekitError(f"a layer of shape {tuple(w.shape)} is not 2:4 or 4:8 sparse")
    if fmt in ("auto", "bitmask"):
        out["bitmask"] = (encode(w, "bitmask"), None)
    if fmt in ("auto", "csr"):
        out["csr"] = (encode(w, "csr"), None)
    return out


def export_folder(folder: str | Path, out: str | Path, fmt: str = "auto", overwrite: bool = False) -> dict:
    """Write the sparse export; ``auto`` picks per layer the smallest of the formats (or dense)."""
    if fmt not in ("auto", *FORMATS):
        raise PrunekitError(f"unknown format {fmt!r}; choose auto, {', '.join(FORMATS)}")
    folder = Path(folder)
    masks = load_masks(folder / MASKS_FILE)
    state = _read_state(folder)
    tensors: dict[str, torch.Tensor] = {}
    layers: dict[str, dict] = {}
    dense_bytes = sparse_bytes = 0
    for key, value in state.items():
        name = key.removesuffix(".weight")
        if name not in masks or value.dim() != 2:
            tensors[key] = value.contiguous()
            continue
        transposed = _is_transposed(value, masks[name])
        w = value.t().contiguous() if transposed else value
        options = _candidates(w, fmt)
        best = min(options, key=lambda f: nbytes(options[f][0]))
        parts, nm = options[best]
        if fmt == "auto" and nbytes(parts) >= w.numel() * w.element_size():
            tensors[key] = value.contiguous()
            best, parts, nm = "dense", {}, None
        layers[key] = {"format": best, "shape": list(w.shape), "dtype": str(value.dtype).removeprefix("torch."),
                       "nm": list(nm) if nm else None, "transposed": transposed}
        dense_bytes += w.numel() * w.element_size()
        sparse_bytes += nbytes(parts) if parts else w.numel() * w.element_size()
        tensors.update({f"{key}::{p}": t for p, t in parts.items()})
    with atomic_dir(out, overwrite) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE),
                  metadata={"magic": MAGIC, "version": VERSION, "layers": json.dumps(layers)})
        for f in folder.iterdir():
            if f.is_file() and f.suffix != ".safetensors":
                shutil.copy2(f, tmp / f.name)
        file_bytes = (tmp / WEIGHTS_FILE).stat().st_size
    original = sum(f.stat().st_size for f in folder.glob("*.safetensors") if f.name != MASKS_FILE)
    counts: dict[str, int] = {}
    for info in layers.values():
        counts[info["format"]] = counts.get(info["format"], 0) + 1
    return {"out": str(out), "format": fmt, "layers": counts, "target_dense_bytes": dense_bytes,
            "target_stored_bytes": sparse_bytes, "target_ratio": round(dense_bytes / max(sparse_bytes, 1), 3),
            "file_bytes": file_bytes, "original_file_bytes": original}


def load_exported(out: str | Path) -> dict[str, torch.Tensor]:
    """The exact dense state dict back from an export folder."""
    path = Path(out) / WEIGHTS_FILE
    if not path.is_file():
        raise PrunekitError(f"no {WEIGHTS_FILE} in {out}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        stored = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise PrunekitError(f"{path} is corrupt or truncated: {e}") from e
    if meta.get("magic") != MAGIC:
        raise PrunekitError(f"{path} is not a prunekit sparse export")
    if meta.get("version") != VERSION:
        raise PrunekitError(f"{path} has format version {meta.get('version')!r}; this prunekit reads {VERSION}")
    layers = json.loads(meta["layers"])
    state = {k: v for k, v in stored.items() if "::" not in k}
    for key, info in layers.items():
        if info["format"] == "dense":
            continue
        parts = {k.split("::", 1)[1]: v for k, v in stored.items() if k.startswith(key + "::")}
        dtype = getattr(torch, info["dtype"])
        nm = tuple(info["nm"]) if info["nm"] else None
        w = decode(parts, info["format"], tuple(info["shape"]), dtype, nm)
        state[key] = w.t().contiguous() if info["transposed"] else w
    return state
