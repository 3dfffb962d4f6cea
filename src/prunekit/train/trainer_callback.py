"""Gradual magnitude pruning as a ``transformers.TrainerCallback``."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from .gradual import GradualPruner


class GradualPruningCallback(TrainerCallback):
    """Runs ``GradualPruner.step(global_step)`` after every optimizer step of a ``Trainer``.

    The pruner is built on the Trainer's model at the start of training from ``pruner_kwargs``
    (the arguments of ``GradualPruner`` after ``model``).
    """

    def __init__(self, **pruner_kwargs: Any) -> None:
        self.pruner_kwargs = pruner_kwargs
        self.pruner: GradualPruner | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.pruner = GradualPruner(model, **self.pruner_kwargs)
        self.pruner.step(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        self.pruner.step(state.global_step)
