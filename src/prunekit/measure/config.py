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


PROBE_FAMILIES = ("arithmetic", "retrieval", "code", "gsm8k")


@dataclass(frozen=True)
class ProbeConfig:
    """The probe items a check scores (``measure/probes``): ``arithmetic`` generated problems, passkey retrieval
    at every (length, depth) ``retrieval_per_cell`` times, the first ``code`` HumanEval problems and ``gsm8k``
    GSM8K problems (after the 8 shots); ``generate``: also greedy generation (exact match, pass@1)."""

    families: tuple[str, ...] = PROBE_FAMILIES
    arithmetic: int = 100
    retrieval_lengths: tuple[int, ...] = (256, 512, 1024)
    retrieval_depths: tuple[float, ...] = (0.0, 0.5, 1.0)
    retrieval_per_cell: int = 4
    code: int = 20
    gsm8k: int = 30
    generate: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.families) - set(PROBE_FAMILIES)
        if unknown or not self.families:
            raise PrunekitError(f"probe families are {', '.join(PROBE_FAMILIES)}; got {', '.join(self.families)}")
        counts = (self.arithmetic, self.retrieval_per_cell, self.code, self.gsm8k, *self.retrieval_lengths)
        if any(n < 1 for n in counts) or not self.retrieval_lengths or not self.retrieval_depths:
            raise PrunekitError("probe item counts and retrieval lengths must be >= 1")
        if any(not 0.0 <= d <= 1.0 for d in self.retrieval_depths):
            raise PrunekitError(f"retrieval depths lie in [0, 1], got {self.retrieval_depths}")


@dataclass(frozen=True)
class CheckBudget:
    """What ``prunekit check`` measures: perplexity windows (of ``ppl_seqlen`` tokens), items per task (the first
    ``task_limit`` of each of ``tasks``), and the probes."""

    ppl_windows: int
    task_limit: int
    probes: ProbeConfig
    ppl_seqlen: int = 2048
    tasks: tuple[str, ...] = ("piqa", "arc_easy", "hellaswag", "openbookqa", "lambada_openai")


BUDGETS = {  # --budget: quick (minutes on two cores, the default) or full
    "quick": CheckBudget(5, 100, ProbeConfig(retrieval_lengths=(256, 1024), gsm8k=16)),
    "full": CheckBudget(40, 500, ProbeConfig(arithmetic=300, retrieval_lengths=(256, 512, 1024, 2048, 4096),
                                             retrieval_depths=(0.0, 0.25, 0.5, 0.75, 1.0), retrieval_per_cell=6,
                                             code=164, gsm8k=250)),
}
