"""Settings of recovery fine-tuning."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import StrEnum

from ..errors import PrunekitError, choice
from ..settings import setting
from .losses import parse_mix


class Trainable(StrEnum):
    """Which parameters recovery trains."""

    ALL = "all"  # every parameter, pruned weights locked at zero (or LoRA adapters, with lora_rank)
    NORMS = "norms"  # only normalization weights and biases: tens of thousands of numbers, cheap (PERP, arXiv 2312.15230)


@dataclass(frozen=True)
class FinetuneConfig:
    """Recovery fine-tuning: ``steps`` AdamW steps on ``batch_size`` random windows of ``seqlen`` tokens."""

    steps: int = setting(dataclasses.MISSING, "optimizer steps")
    seqlen: int = setting(512, "training window length (tokens)")
    batch_size: int = setting(4, "windows per step")
    lr: float = setting(5e-5, "AdamW learning rate")
    seed: int = setting(0, "seed of the training windows")
    lora_rank: int = setting(0, "train LoRA adapters of this rank instead (peft); 0: all weights")
    trainable: Trainable = setting(Trainable.ALL, "all (every parameter, zeros locked) or norms (only normalization "
                                                  "weights and biases: PERP's cheap recovery)")
    loss: str = setting("ce", "ce (next-token cross-entropy), kd (KL to a dense teacher's logits), squarehead (per-layer "
                              "normalized feature MSE + kd), or a weighted mix such as kd:0.67,ce:0.33")
    temperature: float = setting(1.0, "softmax temperature of the kd term")

    def __post_init__(self) -> None:
        for name, low in (("steps", 1), ("batch_size", 1), ("seqlen", 2), ("lora_rank", 0)):
            if getattr(self, name) < low:
                raise PrunekitError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise PrunekitError(f"the learning rate must be a positive number, got {self.lr}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise PrunekitError(f"the temperature must be a positive number, got {self.temperature}")
        parse_mix(self.loss)
        object.__setattr__(self, "trainable", choice(Trainable, self.trainable, "trainable"))
        if self.trainable is Trainable.NORMS and self.lora_rank:
            raise PrunekitError("--trainable norms trains normalization weights and biases only; drop --lora-rank")

    @property
    def mix(self) -> dict[str, float]:
        """The loss terms and their weights (``losses.parse_mix``)."""
        return parse_mix(self.loss)
