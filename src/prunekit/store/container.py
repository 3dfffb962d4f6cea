"""prunekit's safetensors files (the mask file, the sparse export): one metadata entry holding a JSON header
and a SHA-256 over that header and every tensor's name, dtype, shape and bytes.

One entry, because safetensors writes several in random order (files of identical runs differed); the
digest, because a changed byte must never load as different weights (structural checks alone cannot see a
changed value). Reading raises PrunekitError naming the file for anything it cannot vouch for.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from ..errors import PrunekitError
from ..fsutil import regular_file
from .shards import write_safetensors


def digest(header: dict[str, Any], tensors: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"\0{name}\0{t.dtype}\0{list(t.shape)}\0".encode())
        h.update(memoryview(t.detach().contiguous().reshape(-1).view(torch.uint8).cpu().numpy()))
    return h.hexdigest()


def save_tensors(tensors: Mapping[str, torch.Tensor], path: str | Path, kind: str, header: dict[str, Any]) -> None:
    """Write ``tensors`` with ``header`` under the metadata key ``kind`` (plus its digest): identical input
    gives identical bytes. Tensors are taken one at a time (``tensors`` may read each one on access)."""
    sealed = header | {"sha256": digest(header, tensors)}
    write_safetensors(path, tensors, metadata={kind: json.dumps(sealed, sort_keys=True)})


def read_metadata(path: str | Path) -> dict[str, str]:
    """The safetensors metadata of ``path``; PrunekitError for a missing, truncated or corrupt file."""
    path = regular_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise PrunekitError(f"{path} is not a readable safetensors file (corrupt or truncated): {e}") from e


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = regular_file(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise PrunekitError(f"{path} is not a readable safetensors file (corrupt or truncated): {e}") from e


def load_tensors(path: str | Path, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``save_tensors`` reversed, the digest checked: (tensors, header)."""
    meta = read_metadata(path)
    if kind not in meta:
        raise PrunekitError(f"{path} is not a {kind} file")
    try:
        header = json.loads(meta[kind])
        stored = header.pop("sha256")
    except (ValueError, KeyError, AttributeError, TypeError) as e:
        raise PrunekitError(f"{path}: its {kind} header is broken ({e})") from e
    tensors = read_tensors(path)
    if digest(header, tensors) != stored:
        raise PrunekitError(f"{path}: its checksum does not match its content (the file was changed or damaged)")
    return tensors, header


def legacy_json(meta: dict[str, str], key: str, path: str | Path) -> Any:
    """A JSON value from a version-1 file's metadata (written before the one-entry header)."""
    try:
        return json.loads(meta.get(key, ""))
    except ValueError as e:
        raise PrunekitError(f"{path}: its {key!r} metadata is not JSON ({e})") from e
