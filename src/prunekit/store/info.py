"""Per-layer sparsity of a saved prunekit folder."""

from __future__ import annotations

from pathlib import Path

from ..errors import PrunekitError
from ..selection import is_valid_nm
from .manifest import MANIFEST_FILE, read_manifest
from .mask_file import MASKS_FILE, load_masks


def layer_table(folder: str | Path) -> tuple[list[dict], dict]:
    """Rows (name, shape, sparsity, N:M validity) from the masks, and the manifest if present."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PrunekitError(f"not a folder: {folder}")
    masks = load_masks(folder / MASKS_FILE)
    manifest = read_manifest(folder) if (folder / MANIFEST_FILE).is_file() else {}
    rows = []
    for name, keep in masks.items():
        rows.append({
            "layer": name,
            "shape": "x".join(map(str, keep.shape)),
            "numel": keep.numel(),
            "sparsity": 1 - float(keep.float().mean()),
            "2:4": is_valid_nm(keep, 2, 4),
        })
    return rows, manifest


def format_table(rows: list[dict]) -> str:
    width = max([len(r["layer"]) for r in rows] + [5])
    lines = [f"{'layer':<{width}}  {'shape':>11}  {'sparsity':>8}  2:4"]
    for r in rows:
        lines.append(f"{r['layer']:<{width}}  {r['shape']:>11}  {r['sparsity']:>8.4f}  {'yes' if r['2:4'] else 'no'}")
    total = sum(r["numel"] for r in rows)
    zeros = sum(r["sparsity"] * r["numel"] for r in rows)
    lines.append(f"{'all targeted':<{width}}  {total:>11}  {zeros / max(total, 1):>8.4f}")
    return "\n".join(lines)
