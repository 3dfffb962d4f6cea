"""Per-layer sparsity and effective bits per weight of a saved prunekit folder."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import PrunekitError
from ..fsutil import file_inside
from ..selection import is_valid_nm
from .effective_bits import run_bits
from .grid_file import GRIDS_FILE, check_grids, load_grids
from .manifest import MANIFEST_FILE, read_manifest
from .mask_file import MASKS_FILE, load_masks
from .shards import CheckpointReader


def layer_table(folder: str | Path) -> tuple[list[dict], dict]:
    """Rows (name, shape, sparsity, N:M validity, storage and effective bits per weight) from the masks, the
    grids and the stored weights' dtype; and the manifest if present."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PrunekitError(f"not a folder: {folder}")
    masks = load_masks(file_inside(folder, MASKS_FILE))
    grids = load_grids(file_inside(folder, GRIDS_FILE)) if (folder / GRIDS_FILE).exists() else {}
    manifest = read_manifest(folder) if (folder / MANIFEST_FILE).exists() else {}
    config = manifest.get("config")
    nm = config.get("nm") if isinstance(config, dict) else None  # a hand-edited manifest: its pattern is not trusted
    nm = tuple(nm) if isinstance(nm, list) and len(nm) == 2 and all(type(v) is int and v > 0 for v in nm) else None
    reader = CheckpointReader(folder)
    check_grids(grids, {n: tuple(k.shape) for n, k in masks.items()}, folder / GRIDS_FILE)
    rows = []
    for name, keep in masks.items():
        _check_mask(reader, name, keep, folder)
        value_bits = reader.stored_bits(f"{name}.weight") or 32
        bits = run_bits({name: (tuple(keep.shape), int(keep.sum()))}, grids, nm, value_bits)["layers"][name]
        rows.append({
            "layer": name,
            "shape": "x".join(map(str, keep.shape)),
            "numel": keep.numel(),
            "sparsity": 1 - float(keep.float().mean()),
            "2:4": is_valid_nm(keep, 2, 4),
            "wbits": grids[name].bits if name in grids else value_bits,
            **bits,
        })
    return rows, manifest


def _check_mask(reader: CheckpointReader, name: str, keep, folder: Path) -> None:
    """The mask must describe this folder's weights: a weight of its shape (either orientation), zero wherever the
    mask says pruned. A folder retrained dense, or given another model's mask file, is refused, not reported."""
    key = f"{name}.weight"
    if key not in reader.files:
        raise PrunekitError(f"{folder}: {MASKS_FILE} has a mask for {name}, a layer its weights lack")
    w = reader.read([key], torch.float32)[key]
    w = w.t() if w.dim() == 2 and tuple(w.shape) != tuple(keep.shape) else w
    if tuple(w.shape) != tuple(keep.shape):
        raise PrunekitError(f"{folder}: the mask of {name} is {tuple(keep.shape)}, its weight {tuple(w.shape)}")
    if bool(((w != 0) & ~keep).any()):
        raise PrunekitError(f"{folder}: {name} has nonzero weights where {MASKS_FILE} says pruned (retrained without "
                            "its masks, or another model's mask file)")


def format_table(rows: list[dict]) -> str:
    width = max([len(r["layer"]) for r in rows] + [5])
    lines = [f"{'layer':<{width}}  {'shape':>11}  {'sparsity':>8}  2:4  {'wbits':>5}  {'storage':>7}  bits/weight"]
    for r in rows:
        lines.append(f"{r['layer']:<{width}}  {r['shape']:>11}  {r['sparsity']:>8.4f}  {'yes' if r['2:4'] else 'no ':<3}  "
                     f"{r['wbits']:>5}  {r['storage']:>7}  {r['bits_per_weight']:>11.4f}")
    total = sum(r["numel"] for r in rows)
    zeros = sum(r["sparsity"] * r["numel"] for r in rows)
    bits = sum(r["bits_per_weight"] * r["numel"] for r in rows)
    lines.append(f"{'all targeted':<{width}}  {total:>11}  {zeros / max(total, 1):>8.4f}  {'':<3}  {'':>5}  {'':>7}  "
                 f"{bits / max(total, 1):>11.4f}")
    return "\n".join(lines)
