"""Settings of perplexity and task evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import PrunekitError


@dataclass(frozen=True)
class EvalConfig:
    """Perplexity windows: non-overlapping ``seqlen``-token windows, the first ``max_windows`` (None: all),
    ``batch_size`` windows per forward pass."""

    seqlen: int = 2048
    max_windows: int | None = None
    batch_size: int = 1

    def __post_init__(self) -> None:
        if self.seqlen < 2:
            raise PrunekitError(f"the evaluation seqlen must be >= 2 (one token predicts the next), got {self.seqlen}")
        if self.max_windows is not None and self.max_windows < 1:
            raise PrunekitError(f"max_windows must be >= 1 (leave it out for all windows), got {self.max_windows}")
        if self.batch_size < 1:
            raise PrunekitError(f"the evaluation batch size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class TaskConfig:
    """Zero-shot tasks (``measure/tasks.py``): shared task names or ``.jsonl`` files, each optionally
    ``name:N`` for its own item count; the first ``limit`` items of the others (or, with ``seed``, a seeded
    random selection of that many), ``batch_size`` continuations per forward pass. ``limits`` holds each
    task's count (None: every item)."""

    names: tuple[str, ...]
    limit: int | None = None
    seed: int | None = None
    batch_size: int = 32
    limits: tuple[int | None, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        names, limits = [], []
        for spec in (n.strip() for n in self.names if n.strip()):
            name, _, count = spec.rpartition(":")
            name, count = (name, int(count)) if name and count.isdigit() else (spec, self.limit)
            names.append(name)
            limits.append(count)
        if not names or len(set(names)) != len(names):
            raise PrunekitError(f"--tasks needs distinct task names, got {self.names!r}")
        if any(n is not None and n < 1 for n in limits):
            raise PrunekitError(f"item counts (--limit, name:N) must be >= 1, got {limits}")
        if self.batch_size < 1:
            raise PrunekitError(f"the task batch size must be >= 1, got {self.batch_size}")
        object.__setattr__(self, "names", tuple(names))
        object.__setattr__(self, "limits", tuple(limits))
