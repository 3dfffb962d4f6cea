"""Recovery losses, pure functions on tensors: next-token cross-entropy, knowledge distillation from a dense
teacher's logits (KL at a temperature), and SquareHead's per-layer normalized feature MSE (Kurtic et al. 2023,
arXiv 2310.06927); and the weighted mix of them a run trains on (``ce``, ``kd``, ``squarehead`` or
``kd:0.67,ce:0.33``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import torch
import torch.nn.functional as F

from ..errors import PrunekitError

TERMS = ("ce", "kd", "feat")  # the terms a mix weighs
NAMED = MappingProxyType({"ce": {"ce": 1.0}, "kd": {"kd": 1.0}, "squarehead": {"feat": 1.0, "kd": 1.0}})


def parse_mix(spec: str) -> dict[str, float]:
    """``ce``, ``kd``, ``squarehead`` or weighted terms ``kd:0.67,ce:0.33`` -> {term: weight} (weights > 0)."""
    if spec in NAMED:
        return dict(NAMED[spec])
    mix: dict[str, float] = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        term, _, weight = part.partition(":")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            value = float("nan")
        if term not in TERMS or not value > 0 or value == float("inf") or term in mix:
            raise PrunekitError(f"--loss {spec!r}: use ce, kd, squarehead, or distinct terms of {', '.join(TERMS)} "
                                "each with a positive weight (kd:0.67,ce:0.33)")
        mix[term] = value
    if not mix:
        raise PrunekitError(f"--loss {spec!r} names no term")
    return mix


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T² · KL(softmax(teacher/T) ‖ softmax(student/T)), averaged over tokens; logits (..., vocab). The T² keeps the
    gradient's scale as T changes (Hinton et al. 2015): d/ds = T · (softmax(s/T) − softmax(t/T)) / tokens."""
    s = F.log_softmax(student.float().flatten(0, -2) / temperature, dim=-1)  # (tokens, vocab)
    t = F.log_softmax(teacher.float().flatten(0, -2) / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


def feature_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> torch.Tensor:
    """SquareHead: the mean over layers of ‖s_l − t_l‖² / ‖t_l‖², each layer's output feature error normalized by
    the teacher's feature energy, so every layer counts alike whatever its scale."""
    if len(student) != len(teacher) or not student:
        raise ValueError(f"{len(student)} student features against {len(teacher)} of the teacher")
    terms = [((s.float() - t.float()) ** 2).sum() / (t.float() ** 2).sum().clamp_min(1e-12)
             for s, t in zip(student, teacher, strict=True)]
    return torch.stack(terms).mean()


def mixed_loss(mix: Mapping[str, float], ce: torch.Tensor | None, student_logits: torch.Tensor | None,
               teacher_logits: torch.Tensor | None, student_features: Sequence[torch.Tensor] = (),
               teacher_features: Sequence[torch.Tensor] = (), temperature: float = 1.0) -> tuple[torch.Tensor, dict]:
    """The weighted sum of the mix's terms, and each term's value (for the log)."""
    values: dict[str, torch.Tensor] = {}
    if "ce" in mix:
        values["ce"] = ce
    if "kd" in mix:
        values["kd"] = kd_loss(student_logits, teacher_logits, temperature)
    if "feat" in mix:
        values["feat"] = feature_loss(student_features, teacher_features)
    total = sum(mix[k] * v for k, v in values.items())
    return total, {k: float(v.detach()) for k, v in values.items()}


def needs_teacher(mix: Mapping[str, float]) -> bool:
    return any(k != "ce" for k in mix)
