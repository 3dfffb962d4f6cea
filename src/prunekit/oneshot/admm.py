"""Fixed-mask weight update by ADMM (Boža 2024, "Fast and optimal weight update for pruned LLMs").

Given the dense weights W₀, a keep-mask and H = 2XᵀX/n (``InputStats.hessian``, X the (tokens, cols)
inputs), find Ŵ that is zero off the mask and minimizes ‖X(W₀ − Ŵ)ᵀ‖² ∝ tr((W₀ − Ŵ) H (W₀ − Ŵ)ᵀ). Any
positive scale of H gives the same Ŵ: ρ and the damping scale with mean(diag H).

ADMM splits W (unconstrained quadratic) from Z (masked): W = (W₀H + ρ(Z − U))(H + ρI)⁻¹;
Z = mask ⊙ (W + U); U += W − Z. With a fixed ρ (mean diag H) the inverse is computed once and each
iteration is one matmul; 30 iterations converge on test problems. Run after SparseGPT it re-solves the
kept weights jointly, not column by column.
"""

from __future__ import annotations

import torch

from ..errors import PrunekitError


@torch.no_grad()
def admm_update(dense: torch.Tensor, keep: torch.Tensor, hessian: torch.Tensor, start: torch.Tensor | None = None,
                iters: int = 30, rho: float = 1.0, percdamp: float = 0.01) -> torch.Tensor:
    """Weights (rows, cols) on ``keep`` (exact zeros elsewhere) reconstructing ``dense`` under H.

    ρ = ``rho`` × mean(diag H); H is damped by ``percdamp`` × mean(diag H) as in SparseGPT;
    ``start`` (e.g. SparseGPT's result) seeds Z."""
    if dense.shape != keep.shape or hessian.shape != (dense.shape[1], dense.shape[1]):
        shapes = f"W {tuple(dense.shape)}, mask {tuple(keep.shape)}, H {tuple(hessian.shape)}"
        raise PrunekitError(f"shapes do not match: {shapes}")
    W0 = dense.float()  # (rows, cols)
    H = hessian.float().clone()  # (cols, cols)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    scale = torch.diag(H).mean().item()
    eye = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    H += percdamp * scale * eye
    target = W0 @ H  # (rows, cols), H symmetric
    mask = keep.to(W0.dtype)
    Z = (start.float() if start is not None else W0) * mask
    U = torch.zeros_like(W0)
    step = rho * scale
    L, info = torch.linalg.cholesky_ex(H + step * eye)
    if info != 0:
        raise PrunekitError("ADMM: H + ρI is not positive definite")
    inverse = torch.cholesky_inverse(L)  # (cols, cols), symmetric
    for _ in range(iters):
        W = (target + step * (Z - U)) @ inverse  # W (H + ρI) = W₀H + ρ(Z − U)
        Z = (W + U) * mask
        U += W - Z
    return Z
