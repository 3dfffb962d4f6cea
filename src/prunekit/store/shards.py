"""A Hugging Face safetensors checkpoint read and written a few tensors at a time, for models larger than memory.

``CheckpointReader`` maps each tensor name to its shard (``model.safetensors.index.json``, or the one
``model.safetensors``) and reads only the tensors asked for, each file mapped just while it is read, so
its pages do not stay in the process. ``ShardWriter`` writes one shard per call and the index at the end,
in the layout ``save_pretrained`` writes for sharded models, so plain ``from_pretrained`` loads the folder.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from ..errors import PrunekitError
from ..fsutil import file_inside

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "F8_E4M3": 1, "F8_E5M2": 1}
_DTYPE_NAMES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
                torch.bool: "BOOL"}


def write_safetensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file tensor by tensor, straight from each tensor's memory.

    ``safetensors.torch.save_file`` first copies every tensor into one bytes object, so writing a block of
    a 7B model held it twice (810 MB more at the peak). The format is small: an 8-byte little-endian header
    length, a JSON header (dtype, shape, data offsets; padded with spaces to 8 bytes), the raw bytes.
    Tensors are laid out widest dtype first, then by name, so every one stays aligned, as safetensors
    itself does; ``safe_open`` and ``from_pretrained`` read the result.
    """
    order = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name in order:
        t = tensors[name]
        if t.dtype not in _DTYPE_NAMES:
            raise ValueError(f"{name}: dtype {t.dtype} cannot be stored in safetensors here")
        size = t.numel() * t.element_size()
        header[name] = {"dtype": _DTYPE_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for name in order:  # one tensor's contiguous copy at most (none for the usual contiguous CPU weight)
            flat = tensors[name].detach().cpu().contiguous().reshape(-1)
            if flat.numel():
                f.write(memoryview(flat.view(torch.uint8).numpy()))


class CheckpointReader:
    """Tensors of a safetensors checkpoint folder, by name, read on demand."""

    def __init__(self, folder: str | Path) -> None:
        from safetensors import SafetensorError, safe_open

        self.folder = Path(folder)
        if (self.folder / INDEX_FILE).exists():
            index = file_inside(self.folder, INDEX_FILE)
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise PrunekitError(f"{index} is not a safetensors index: {e}") from e
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise PrunekitError(f"{index} is not a safetensors index: its weight_map does not map names to files")
        elif (self.folder / SINGLE_FILE).exists():
            single = file_inside(self.folder, SINGLE_FILE)
            try:
                with safe_open(single, "pt") as f:
                    weight_map = dict.fromkeys(f.keys(), SINGLE_FILE)
            except (SafetensorError, OSError) as e:
                raise PrunekitError(f"{single} is not a readable safetensors file: {e}") from e
        else:
            raise PrunekitError(f"{self.folder} holds no safetensors weights ({SINGLE_FILE} or {INDEX_FILE}); "
                                "--offload disk reads safetensors checkpoints only")
        for file in set(weight_map.values()):  # every shard a regular file inside the folder, before any is read
            file_inside(self.folder, file)
        self.files: dict[str, str] = weight_map  # tensor name -> shard file name
        self._headers: dict[str, dict] = {}

    def names(self) -> list[str]:
        return list(self.files)

    def _header(self, file: str) -> dict:
        """A shard's JSON header (dtype and shape of each tensor), read without touching its data."""
        if file not in self._headers:
            path = self.folder / file
            try:
                with open(path, "rb") as f:
                    size = int.from_bytes(f.read(8), "little")
                    self._headers[file] = json.loads(f.read(size))
            except (OSError, ValueError) as e:
                raise PrunekitError(f"cannot read the safetensors header of {path}: {e}") from e
        return self._headers[file]

    def _entry(self, name: str) -> dict:
        """Tensor ``name``'s header entry in the shard the index names for it (dtype, shape, offsets)."""
        entry = self._header(self.files[name]).get(name)
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(entry.get("dtype") if shape is not None else None, str) or not isinstance(shape, list) \
                or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise PrunekitError(f"{self.folder / self.files[name]}: holds no readable tensor {name!r}, which its index "
                                "places there")
        return entry

    def shape(self, name: str) -> tuple[int, ...]:
        """Tensor ``name``'s shape as stored (from its shard's header)."""
        return tuple(self._entry(name)["shape"])

    def stored_bits(self, name: str) -> int | None:
        """Bits per element of tensor ``name`` as stored, or None when there is no such tensor."""
        if name not in self.files:
            return None
        return 8 * _DTYPE_BYTES.get(self._entry(name)["dtype"], 4)

    def nbytes(self, dtype: torch.dtype | None = None) -> int:
        """Bytes of every tensor as stored, or converted to float ``dtype`` (integer tensors stay as stored)."""
        total = 0
        for name in self.files:
            entry = self._entry(name)
            numel = math.prod(entry["shape"])
            floating = entry["dtype"].startswith(("F", "BF"))
            total += numel * (dtype.itemsize if dtype is not None and floating else _DTYPE_BYTES.get(entry["dtype"], 4))
        return total

    def read(self, names: Iterable[str], dtype: torch.dtype, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """The named tensors, floating ones converted to ``dtype``, each in memory of its own on ``device``.

        Each tensor is read with plain file reads into a fresh tensor, not through a memory map: a mapped
        shard's pages stay in the process until it is closed, which held a 7B block (810 MB) twice.
        """
        by_file: dict[str, list[str]] = defaultdict(list)
        for name in names:
            if name not in self.files:
                raise PrunekitError(f"{self.folder}: the checkpoint has no tensor {name!r} (its names do not match the "
                                    "model's; --offload disk needs a checkpoint saved under the model's own names)")
            by_file[self.files[name]].append(name)
        out = {}
        for file, group in by_file.items():
            path = self.folder / file
            header = self._header(file)
            with open(path, "rb") as f:
                start = 8 + int.from_bytes(f.read(8), "little")
                size = path.stat().st_size - start
                for name in group:
                    t = self._read_one(f, path, name, header.get(name), start, size)
                    out[name] = t.to(device, dtype if t.is_floating_point() else t.dtype)
        return out

    @staticmethod
    def _read_one(f, path: Path, name: str, entry, start: int, size: int) -> torch.Tensor:
        """One tensor's bytes, checked against its header entry (dtype, shape, offsets inside the file)."""
        dtypes = {v: k for k, v in _DTYPE_NAMES.items()}
        try:
            dtype = dtypes[entry["dtype"]]
            shape = [int(d) for d in entry["shape"]]
            begin, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise PrunekitError(f"{path}: the header entry of {name!r} is not readable ({e})") from None
        nbytes = math.prod(shape) * dtype.itemsize
        if min(shape, default=0) < 0 or not 0 <= begin <= end <= size or end - begin != nbytes:
            raise PrunekitError(f"{path}: {name!r} claims bytes {begin}..{end} for shape {shape} {entry['dtype']} in "
                                f"{size} bytes of data (corrupt or truncated)")
        t = torch.empty(shape, dtype=dtype)
        f.seek(start + begin)
        if nbytes and f.readinto(memoryview(t.reshape(-1).view(torch.uint8).numpy())) != nbytes:
            raise PrunekitError(f"{path}: {name!r} is cut short (truncated file)")
        return t


class ShardWriter:
    """Writes a checkpoint one shard at a time into ``folder`` (which must exist), then its index."""

    def __init__(self, folder: str | Path, shards: int) -> None:
        self.folder, self.shards = Path(folder), shards
        self.weight_map: dict[str, str] = {}
        self.total_size = 0
        self._written = 0

    def write(self, tensors: dict[str, torch.Tensor]) -> None:
        if self._written >= self.shards:
            raise RuntimeError(f"ShardWriter: more than the {self.shards} shards announced")
        self._written += 1
        name = f"model-{self._written:05d}-of-{self.shards:05d}.safetensors"
        write_safetensors(self.folder / name, tensors, metadata={"format": "pt"})
        for key, t in tensors.items():
            self.weight_map[key] = name
            self.total_size += t.numel() * t.element_size()

    def finish(self) -> None:
        """Write the index; every announced shard must have been written."""
        if self._written != self.shards:
            raise RuntimeError(f"ShardWriter: {self._written} of {self.shards} shards written")
        index = {"metadata": {"total_size": self.total_size}, "weight_map": dict(sorted(self.weight_map.items()))}
        (self.folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
