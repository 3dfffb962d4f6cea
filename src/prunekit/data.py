"""Text sources, the calibration settings and the calibration sampler.

A source is a ``.txt`` file, a ``.jsonl`` file with a ``text`` field, or the names ``wikitext2`` /
``c4``, which resolve to the shared data folder (``$PRUNEKIT_DATA`` or ``../shared/data``) and
otherwise to the Hugging Face ``datasets`` library.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch

from .errors import PrunekitError, choice
from .fsutil import sha256_file
from .settings import setting

log = logging.getLogger(__name__)


class Sampling(StrEnum):
    AUTO = "auto"            # documents when enough are long enough, else stream
    DOCUMENTS = "documents"  # a random long document, then a random offset (SparseGPT/Wanda)
    STREAM = "stream"        # random offsets into all documents' concatenated tokens


@dataclass(frozen=True)
class CalibConfig:
    """Calibration sample: ``nsamples`` windows of ``seqlen`` tokens from ``data``, seeded."""

    data: str = setting("c4", "calibration text: c4, wikitext2, a .txt or .jsonl file", flag="calib")
    nsamples: int = setting(128, "calibration windows")
    seqlen: int = setting(2048, "calibration window length (tokens)")
    seed: int = setting(0, "seed of the calibration sample (and of torch)")
    sampling: Sampling = setting(Sampling.AUTO, "how windows are drawn: auto, documents or stream",
                                 flag="calib-sampling")

    def __post_init__(self) -> None:
        if self.nsamples < 1:
            raise PrunekitError(f"nsamples must be >= 1, got {self.nsamples}")
        if self.seqlen < 2:
            raise PrunekitError(f"seqlen must be >= 2, got {self.seqlen}")
        object.__setattr__(self, "sampling", choice(Sampling, self.sampling, "sampling"))


NAMED = {"wikitext2": "wikitext2-test.txt", "c4": "c4-sample.jsonl"}


@dataclass(frozen=True)
class TextSource:
    """Documents plus where they came from (path and sha256, for the manifest)."""

    name: str
    documents: tuple[str, ...]
    path: str | None
    sha256: str | None

    @property
    def text(self) -> str:
        """The documents joined the way SparseGPT/Wanda join WikiText-2 rows."""
        return "\n\n".join(self.documents)

    def describe(self) -> dict:
        return {"name": self.name, "path": self.path, "sha256": self.sha256, "documents": len(self.documents)}


def shared_data_dir() -> Path | None:
    """``$PRUNEKIT_DATA``, else the first ``shared/data`` beside the working folder or this package."""
    env = os.environ.get("PRUNEKIT_DATA")
    if env:
        return Path(env)
    for start in (Path.cwd(), Path(__file__).resolve()):
        for parent in (start, *start.parents):
            candidate = parent / "shared" / "data"
            if candidate.is_dir():
                return candidate
    return None


def read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of every non-blank line; a PrunekitError names the file and line of a
    line that is not JSON, or the byte that is not UTF-8."""
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield lineno, json.loads(line)
                    except json.JSONDecodeError as e:
                        raise PrunekitError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
    except UnicodeDecodeError as e:
        raise _not_utf8(path, e) from e


def _not_utf8(path: Path, e: UnicodeDecodeError) -> PrunekitError:
    return PrunekitError(f"{path} is not UTF-8 text (it holds the byte {e.object[e.start]:#04x})")


def _read_file(path: Path, name: str) -> TextSource:
    if not path.is_file():
        raise PrunekitError(f"data file not found: {path}")
    if path.suffix == ".jsonl":
        docs = []
        for lineno, row in read_jsonl(path):
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise PrunekitError(f"{path}:{lineno}: no 'text' field")
            docs.append(row["text"])
    else:
        try:
            docs = [path.read_text(encoding="utf-8")]
        except UnicodeDecodeError as e:
            raise _not_utf8(path, e) from e
    if not any(d.strip() for d in docs):
        raise PrunekitError(f"data file {path} is empty")
    return TextSource(name, tuple(docs), str(path), sha256_file(path))


def _from_datasets(name: str) -> TextSource:
    try:
        from datasets import load_dataset
    except ImportError as e:
        raise PrunekitError(
            f"{name!r} is not in the shared data folder and the `datasets` library is not installed "
            "(set PRUNEKIT_DATA or pass a file path)"
        ) from e
    if name == "wikitext2":
        ds = load_dataset("wikitext", "wikitext-2-raw-v1", split="test")
        return TextSource(name, ("\n\n".join(ds["text"]),), "hf:wikitext-2-raw-v1/test", None)
    ds = load_dataset(
        "allenai/c4", data_files={"train": "en/c4-train.00000-of-01024.json.gz"}, split="train"
    )
    return TextSource(name, tuple(ds["text"]), "hf:allenai/c4/en/c4-train.00000-of-01024", None)


def load_text(source: str) -> TextSource:
    """Read a named dataset or a .txt/.jsonl file."""
    if source in NAMED:
        folder = shared_data_dir()
        if folder is not None and (folder / NAMED[source]).is_file():
            return _read_file(folder / NAMED[source], source)
        return _from_datasets(source)
    path = Path(source).expanduser()
    if path.suffix not in (".txt", ".jsonl"):
        raise PrunekitError(f"unknown data source {source!r}: use wikitext2, c4, a .txt or a .jsonl file")
    return _read_file(path, path.name)


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text)["input_ids"]


def sample_calibration(source: TextSource, tokenizer, calib: CalibConfig) -> torch.Tensor:
    """``(nsamples, seqlen)`` token windows, drawn the SparseGPT/Wanda way (``calib.sampling``).

    ``documents``: pick a random document longer than ``seqlen``, then a random offset.
    ``stream``: random offsets into the concatenated token stream of all documents.
    ``auto``: documents when at least 2×nsamples documents are long enough, else stream.
    """
    nsamples, seqlen, sampling = calib.nsamples, calib.seqlen, calib.sampling
    rng = random.Random(calib.seed)
    encoded = [encode(tokenizer, d) for d in source.documents if d.strip()]
    long_docs = [ids for ids in encoded if len(ids) > seqlen]
    if sampling == Sampling.AUTO:
        sampling = Sampling.DOCUMENTS if len(long_docs) >= 2 * nsamples else Sampling.STREAM
        if sampling == Sampling.STREAM:
            log.info(
                "only %d of %d documents exceed %d tokens: drawing windows from the concatenated stream",
                len(long_docs), len(encoded), seqlen,
            )
    if sampling == Sampling.DOCUMENTS:
        if not long_docs:
            raise PrunekitError(f"no document in {source.name} is longer than {seqlen} tokens")
        windows = []
        for _ in range(nsamples):
            ids = long_docs[rng.randrange(len(long_docs))]
            start = rng.randint(0, len(ids) - seqlen - 1)
            windows.append(ids[start : start + seqlen])
    else:
        stream = [t for ids in encoded for t in ids]
        if len(stream) <= seqlen:
            raise PrunekitError(f"{source.name} has {len(stream)} tokens, fewer than seqlen={seqlen}")
        windows = []
        for _ in range(nsamples):
            start = rng.randint(0, len(stream) - seqlen - 1)
            windows.append(stream[start : start + seqlen])
    return torch.tensor(windows, dtype=torch.long)
