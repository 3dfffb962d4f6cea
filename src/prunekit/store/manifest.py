"""Run manifests: everything needed to reproduce a run's numbers."""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from ..errors import PrunekitError
from ..fsutil import file_inside, write_file_atomic

MANIFEST_FILE = "manifest.json"


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform(), "prunekit_commit": _commit()}
    for pkg in ("prunekit", "torch", "transformers", "safetensors", "numpy", "tokenizers"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _commit() -> str | None:
    """The git commit prunekit runs from (``+dirty`` with uncommitted changes to tracked files), or None."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def runtime() -> dict[str, Any]:
    """What moves float results on CPU: threads, the BLAS torch calls, the instruction set it picked."""
    info = torch.__config__.show() + torch.__config__.parallel_info()
    blas = re.search(r"BLAS_INFO=(\w+)", info)
    mkl = re.search(r"Math Kernel Library Version ([^\n]+)", info)
    return {"threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
            "blas": blas.group(1) if blas else None, "mkl": mkl.group(1).strip() if mkl else None,
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def build_manifest(**sections: Any) -> dict[str, Any]:
    return {"created": datetime.now(UTC).isoformat(timespec="seconds"), "versions": versions(), "runtime": runtime(),
            **sections}


def write_json(data: dict[str, Any], path: str | Path) -> None:
    """All or nothing: through a temporary file beside ``path``."""
    write_file_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_manifest(folder: str | Path) -> dict[str, Any]:
    path = file_inside(folder, MANIFEST_FILE)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise PrunekitError(f"{path} is not a readable manifest: {e}") from e
    if not isinstance(manifest, dict):
        raise PrunekitError(f"{path} is not a readable manifest: not a JSON object")
    return manifest
