"""The Hessian math SparseGPT and GPTQ share: dead inputs, damping, and the upper Cholesky factor of H⁻¹ with
damping escalated (never a silent fallback) when a factorization fails."""

from __future__ import annotations

import logging

import torch

from .errors import PrunekitError

log = logging.getLogger(__name__)

MAX_DAMP_TRIES = 8


def without_dead_inputs(weight: torch.Tensor, hessian: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A float32 working copy of ``weight`` (rows, cols) and H (cols, cols), where an input that never fires
    (H_jj = 0) has its weights zeroed and H_jj set to 1: it does nothing, and H needs a nonzero diagonal.
    ``hessian`` itself is never modified (layers that share an input share it)."""
    W = weight.detach().clone().float()  # (rows, cols)
    H = hessian.detach().float()  # (cols, cols)
    dead = torch.diag(H) == 0
    if dead.any():
        H = H.clone()
        H[dead, dead] = 1.0
        W[:, dead] = 0.0
    return W, H


def inverse_cholesky(hessian: torch.Tensor, percdamp: float, name: str = "") -> tuple[torch.Tensor, int]:
    """Upper Cholesky factor of H⁻¹ after damping by ``percdamp`` × mean(diag H); ``hessian`` is symmetric.

    When a factorization fails the damping is multiplied by 10 (with a warning), up to
    ``MAX_DAMP_TRIES`` times; returns the factor and the number of escalations. Never falls back.
    The three steps run in place in one column-major buffer (LAPACK's layout, which the ``out=`` forms
    then use as is): one (cols, cols) matrix besides H, where separate results held three (at a 7B
    down_proj, 485 MB each).
    """
    H = hessian
    diag_mean = torch.diag(H).mean().item()
    if not diag_mean > 0:
        diag_mean = 1.0
    work = torch.empty_like(H).T  # (cols, cols), column-major
    info = torch.empty((), dtype=torch.int32, device=H.device)
    damp = percdamp
    for attempt in range(MAX_DAMP_TRIES):
        work.T.copy_(H)  # = H, as H is symmetric; a row-major copy is the fast one
        work.diagonal().add_(damp * diag_mean)
        torch.linalg.cholesky_ex(work, out=(work, info))  # L
        if info == 0:
            torch.cholesky_inverse(work, out=work)  # H⁻¹
            torch.linalg.cholesky_ex(work, upper=True, out=(work, info))  # U, H⁻¹ = UᵀU
            if info == 0 and all(bool(torch.isfinite(rows).all()) for rows in work.T.split(1024)):  # no (cols, cols) mask
                return work, attempt
        log.warning("%s: Cholesky failed at damping %.3g; escalating to %.3g", name, damp, damp * 10)
        damp *= 10
    raise PrunekitError(f"{name}: Hessian is not positive definite even with damping {damp:.3g}")
