"""Export a pruned folder's target weights in a sparse format, and load them back exactly.

The output folder holds ``weights.prunekit.safetensors`` (no pickle): dense tensors under their own
names, sparse layers as ``name::part`` tensors, and a ``container`` header (format version, per-layer
layout, a checksum over everything). Non-weight files (config, tokenizer, manifest) are copied alongside.
Loading checks every structural invariant and the checksum; any failure is a PrunekitError naming the
layer. A file is written at the lowest version that reads it, and files of every earlier version are still
read (1: before checksums; before 4: N:M positions at ceil(log2 M) bits each).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

import torch

from ..errors import PrunekitError
from ..fsutil import claim_output, file_inside, side_files
from ..quant.grid import LayerGrid
from .container import legacy_json, load_tensors, read_metadata, read_tensors, save_tensors
from .formats import DENSE, FORMATS, decode, encode, nbytes, nm_pattern
from .grid_file import GRIDS_FILE, check_grids, load_grids
from .mask_file import MASKS_FILE, load_masks
from .quant_formats import QUANT_FORMATS, decode_quant, encode_quant

log = logging.getLogger(__name__)

KIND = "prunekit-sparse"  # the metadata key (version 1: the value of its "magic" key)
VERSION = 4  # 2: checksums; 3: quantized layers (``quant_formats``); 4: N:M positions as ranks (``nm_code``)
QUANT_VERSION, CHECKSUM_VERSION = 3, 2  # a file takes the lowest version that reads it: older readers still can
DTYPES = {str(d).removeprefix("torch."): d for d in (torch.float32, torch.float16, torch.bfloat16, torch.float64)}
WEIGHTS_FILE = "weights.prunekit.safetensors"


def _weight_files(folder: Path) -> list[Path]:
    files = [file_inside(folder, f.name) for f in sorted(folder.glob("*.safetensors"))
             if f.name not in (MASKS_FILE, WEIGHTS_FILE, GRIDS_FILE)]
    if not files:
        raise PrunekitError(f"no safetensors weights in {folder}")
    return files


def _read_state(files: list[Path]) -> dict[str, torch.Tensor]:
    state = {}
    for f in files:
        state.update(read_tensors(f))
    return state


def _is_transposed(value: torch.Tensor, mask: torch.Tensor, grid: LayerGrid | None = None) -> bool:
    """GPT-2's Conv1D stores (in, out) while masks and grids are (out, in); square ones are told apart by which
    orientation lies on the layer's grid, else by which orientation's zeros match the mask."""
    if tuple(value.shape) != tuple(mask.shape):
        return True
    if value.shape[0] != value.shape[1]:
        return False
    if grid is not None:  # a square weight with no zeros matches its mask both ways; only one lies on its grid
        on = [torch.equal(grid.apply(v.float()), v.float()) for v in (value, value.t())]
        if on[0] != on[1]:
            return on[1]
    return int(((value.t() != 0) == mask).sum()) > int(((value != 0) == mask).sum())


def _candidates(w: torch.Tensor, fmt: str) -> dict[str, tuple[dict, tuple | None]]:
    """Encodings to consider for one (out, in) matrix: every format of ``FORMATS`` it fits (under ``auto``), or the
    one asked for; on equal size the earlier one wins (N:M first, the layout semi-structured kernels read)."""
    out = {}
    for name, row in FORMATS.items():
        if fmt not in ("auto", name):
            continue
        nm = row.pattern(w)
        if row.needs_nm and nm is None:
            if fmt == name:
                raise PrunekitError(f"a layer of shape {tuple(w.shape)} is not 2:4 or 4:8 sparse")
            continue
        out[name] = (encode(w, name, nm), nm)
    return out


def export_folder(folder: str | Path, out: str | Path, fmt: str = "auto", overwrite: bool = False) -> dict:
    """Write the sparse export; ``auto`` picks per layer the smallest of the formats (or dense)."""
    if fmt not in ("auto", *FORMATS):
        raise PrunekitError(f"unknown format {fmt!r}; choose auto, {', '.join(FORMATS)}")
    folder = Path(folder)
    source, dest = folder.resolve(), Path(out).resolve()
    if source == dest or source.is_relative_to(dest) or dest.is_relative_to(source):
        raise PrunekitError(f"export writes {out} from {folder}: the output must lie outside the folder it reads, and "
                            "the folder outside the output")
    if fmt not in ("auto", *QUANT_FORMATS) and (folder / GRIDS_FILE).exists():
        raise PrunekitError(f"{folder} is quantized: its levels are stored {', '.join(QUANT_FORMATS)} (or auto), "
                            f"not {fmt}")
    with claim_output(out, overwrite) as claim:
        files = _weight_files(folder)
        claim.require_space(sum(f.stat().st_size for f in files + side_files(folder)))  # auto never stores more
        return _export(folder, files, claim, fmt)


def _export(folder: Path, files: list[Path], claim, fmt: str) -> dict:
    masks = load_masks(file_inside(folder, MASKS_FILE))
    grids = load_grids(file_inside(folder, GRIDS_FILE)) if (folder / GRIDS_FILE).exists() else {}
    check_grids(grids, {n: tuple(k.shape) for n, k in masks.items()}, folder / GRIDS_FILE)
    state = _read_state(files)
    tensors: dict[str, torch.Tensor] = {}
    layers: dict[str, dict] = {}
    dense_bytes = sparse_bytes = 0
    for key, value in state.items():
        name = key.removesuffix(".weight")
        if name not in masks or value.dim() != 2:
            tensors[key] = value.contiguous()
            continue
        transposed = _is_transposed(value, masks[name], grids.get(name))
        w = value.t().contiguous() if transposed else value
        if name in grids:  # packed integer levels: ``fmt``'s layout, or under auto the cheapest
            grid = grids[name]
            nm = nm_pattern(w)
            try:
                layout, parts = encode_quant(w, grid, nm, None if fmt == "auto" else fmt)
            except PrunekitError as e:
                raise PrunekitError(f"{folder}: layer {name}: {e}") from e
            layers[key] = {"format": QUANT_PREFIX + layout, "shape": list(w.shape),
                           "dtype": str(value.dtype).removeprefix("torch."),
                           "nm": list(nm) if QUANT_FORMATS[layout].needs_nm else None, "transposed": transposed,
                           "bits": grid.bits, "groupsize": grid.groupsize, "sym": grid.sym}
            dense_bytes += w.numel() * w.element_size()
            sparse_bytes += nbytes(parts)
            tensors.update({f"{key}::{p}": t for p, t in parts.items()})
            continue
        options = _candidates(w, fmt)
        best = min(options, key=lambda f: nbytes(options[f][0]))
        parts, nm = options[best]
        if fmt == "auto" and nbytes(parts) >= w.numel() * w.element_size():
            tensors[key] = value.contiguous()
            best, parts, nm = DENSE, {}, None
        layers[key] = {"format": best, "shape": list(w.shape), "dtype": str(value.dtype).removeprefix("torch."),
                       "nm": list(nm) if nm else None, "transposed": transposed}
        dense_bytes += w.numel() * w.element_size()
        sparse_bytes += nbytes(parts) if parts else w.numel() * w.element_size()
        tensors.update({f"{key}::{p}": t for p, t in parts.items()})
    with claim.write() as tmp:
        formats = {info["format"] for info in layers.values()}
        ranked = {n for n, r in FORMATS.items() if r.needs_nm} | {QUANT_PREFIX + n for n, r in QUANT_FORMATS.items()
                                                                 if r.needs_nm}
        version = VERSION if formats & ranked else QUANT_VERSION if grids else CHECKSUM_VERSION
        save_tensors(tensors, tmp / WEIGHTS_FILE, KIND, {"version": version, "layers": layers})
        for f in side_files(folder):  # the rest (config, tokenizer, manifest): regular files only, never links
            shutil.copy2(f, tmp / f.name)
        skipped = sorted(f.name for f in folder.iterdir() if f.suffix != ".safetensors"
                         and (f.is_symlink() or not (f.is_file() or f.is_dir())))
        if skipped:
            log.warning("%s: not copied (links or not regular files): %s", folder, ", ".join(skipped))
        file_bytes = (tmp / WEIGHTS_FILE).stat().st_size
    original = sum(f.stat().st_size for f in files)
    counts: dict[str, int] = {}
    for info in layers.values():
        counts[info["format"]] = counts.get(info["format"], 0) + 1
    return {"out": str(claim.path), "format": fmt, "layers": counts, "target_dense_bytes": dense_bytes,
            "target_stored_bytes": sparse_bytes, "target_ratio": round(dense_bytes / max(sparse_bytes, 1), 3),
            "file_bytes": file_bytes, "original_file_bytes": original}


def load_exported(out: str | Path) -> dict[str, torch.Tensor]:
    """The exact dense state dict back from an export folder, every layer checked (PrunekitError naming it)."""
    path = Path(out) / WEIGHTS_FILE
    meta = read_metadata(path)
    if KIND in meta:
        stored, header = load_tensors(path, KIND)
        version, layers = header.get("version"), header.get("layers")
    elif meta.get("magic") == KIND:  # version 1, before checksums
        version, stored, layers = meta.get("version"), read_tensors(path), legacy_json(meta, "layers", path)
    else:
        raise PrunekitError(f"{path} is not a prunekit sparse export")
    if version not in ("1", CHECKSUM_VERSION, QUANT_VERSION, VERSION):
        raise PrunekitError(f"{path} has format version {version!r}; this prunekit reads 1 to {VERSION}")
    if not isinstance(layers, dict):
        raise PrunekitError(f"{path}: its layer table is not a mapping of layers")
    state = {k: v for k, v in stored.items() if "::" not in k}
    claimed = set(state)
    for key, info in layers.items():
        parts = {k.split("::", 1)[1]: v for k, v in stored.items() if k.startswith(key + "::")}
        claimed |= {f"{key}::{p}" for p in parts}
        try:
            w = _decode_layer(info, parts, key in state)
        except PrunekitError as e:
            raise PrunekitError(f"{path}: layer {key}: {e}") from e
        if w is not None:
            state[key] = w
    if claimed != set(stored):
        raise PrunekitError(f"{path}: parts of no listed layer: {sorted(set(stored) - claimed)[:3]}")
    return state


def _decode_quant_layer(info: dict, parts: dict[str, torch.Tensor], dense_present: bool) -> torch.Tensor:
    fmt, shape, dtype, nm = info["format"], info["shape"], DTYPES.get(info["dtype"]), info["nm"]
    spec = (info.get("bits"), info.get("groupsize"))
    if dtype is None or dense_present or not _ints(shape, 2) or not _ints(list(spec), 2) \
            or not isinstance(info.get("sym"), bool) or not (nm is None or _ints(nm, 2)):
        raise PrunekitError(f"its entry is malformed: {json.dumps(info)[:200]}")
    w, _ = decode_quant(parts, fmt.removeprefix(QUANT_PREFIX), tuple(shape), *spec, info["sym"],
                        tuple(nm) if nm else None)
    return w.to(dtype)


def _decode_float_layer(info: dict, parts: dict[str, torch.Tensor], dense_present: bool) -> torch.Tensor:
    fmt, shape, dtype, nm = info["format"], info["shape"], DTYPES.get(info["dtype"]), info["nm"]
    if dtype is None or not isinstance(info["transposed"], bool) or not _ints(shape, 2) \
            or not (nm is None or _ints(nm, 2)) or dense_present:
        raise PrunekitError(f"its entry is malformed: {json.dumps(info)[:200]}")
    return decode(parts, fmt, tuple(shape), dtype, tuple(nm) if nm else None)


def _dense_layer(info: dict, parts: dict[str, torch.Tensor], dense_present: bool) -> None:
    if not dense_present or parts:
        raise PrunekitError("marked dense, but its tensor is not stored as is")
    return None


QUANT_PREFIX = "q-"  # a quantized layer's format: its layout of ``QUANT_FORMATS`` after this
# How each format named in a file's layer table is read back (None: a dense tensor, stored as is)
LAYER_FORMATS: Mapping[str, Callable[[dict, dict[str, torch.Tensor], bool], torch.Tensor | None]] = MappingProxyType(
    {DENSE: _dense_layer} | dict.fromkeys(FORMATS, _decode_float_layer)
    | dict.fromkeys((QUANT_PREFIX + n for n in QUANT_FORMATS), _decode_quant_layer))


def _decode_layer(info, parts: dict[str, torch.Tensor], dense_present: bool) -> torch.Tensor | None:
    """One layer of the table: None for a dense one (its tensor is stored as is), else its decoded weight."""
    if not isinstance(info, dict) or not {"format", "shape", "dtype", "nm", "transposed"} <= set(info):
        raise PrunekitError("its entry lacks format, shape, dtype, nm or transposed")
    read = LAYER_FORMATS.get(info["format"]) if isinstance(info["format"], str) else None
    if read is None:
        raise PrunekitError(f"its entry is malformed: {json.dumps(info)[:200]}")
    w = read(info, parts, dense_present)
    return w.t().contiguous() if w is not None and info["transposed"] else w


def _ints(value, count: int) -> bool:
    return isinstance(value, list) and len(value) == count and all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 31 for v in value)
