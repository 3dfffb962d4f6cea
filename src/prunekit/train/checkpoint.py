"""Checkpoints of a long training run, so an interrupted one (killed, Ctrl-C) can go on where it stopped.

One file, ``checkpoint.pt``, in a hidden folder beside the output (``.OUT.checkpoint``): the trainable state, the
optimizer's, the step reached and the log so far, written to a temporary name and renamed, so the last checkpoint is
whole whenever the run stops. It holds tensors and plain values only and is read with ``weights_only``. A resumed run
must be the same run (``identity``: its settings, model and teacher); the folder goes once the output is written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import PrunekitError

log = logging.getLogger(__name__)

FILE = "checkpoint.pt"


def checkpoint_folder(out: str | Path) -> Path:
    """Where a run writing ``out`` keeps its checkpoints."""
    out = Path(out)
    return out.parent / f".{out.name}.checkpoint"


@dataclass(frozen=True)
class Checkpoints:
    """Save every ``every`` steps (0: never) into ``folder``; ``resume``: continue from the checkpoint there."""

    folder: Path
    every: int
    resume: bool
    identity: dict  # what must match for a checkpoint to be resumed (settings, model, teacher)

    def __post_init__(self) -> None:  # plain values only (enums as their names): the file is read weights_only
        object.__setattr__(self, "identity", json.loads(json.dumps(self.identity)))

    def load(self) -> dict | None:
        """The saved state to go on from, or None to start afresh; a left checkpoint without ``resume`` is an error
        (nothing is lost by a run started again by mistake), and so is ``resume`` without one."""
        path = self.folder / FILE
        if not path.is_file():
            if self.resume:
                raise PrunekitError(f"--resume: there is no checkpoint at {path}")
            return None
        if not self.resume:
            raise PrunekitError(f"an interrupted run left a checkpoint at {path}: pass --resume to go on from it, or "
                                "delete that folder to start again")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - a damaged file, whatever torch raises
            raise PrunekitError(f"{path} is not a readable checkpoint ({e}); delete that folder to start again") from e
        if state.get("identity") != self.identity:
            differ = sorted(k for k in self.identity if state.get("identity", {}).get(k) != self.identity[k])
            raise PrunekitError(f"the checkpoint at {path} is of another run (it differs in {', '.join(differ)}): "
                                "resume with the same settings, or delete that folder to start again")
        log.info("resuming from step %d (%s)", state["step"], path)
        return state

    def due(self, step: int, steps: int) -> bool:
        """Whether to save after ``step`` steps done (never after the last: the output is written then)."""
        return self.every > 0 and step % self.every == 0 and step < steps

    def save(self, state: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f"{FILE}.tmp"
        torch.save(state | {"identity": self.identity}, tmp)
        os.replace(tmp, self.folder / FILE)


def clear(folder: Path) -> None:
    """Remove a finished run's checkpoints (once its output is written)."""
    shutil.rmtree(folder, ignore_errors=True)
