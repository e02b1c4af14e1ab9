"""Guidance math: tensors in, tensors out. Each function cites its section of docs/METHODS.md.

Imports only torch, so a reader can check every line against docs/METHODS.md.
"""

from __future__ import annotations

import torch


def cfg(eps_null: torch.Tensor, eps_p: torch.Tensor, w: float) -> torch.Tensor:
    """§CFG: eps~ = eps_∅ + w (eps_p - eps_∅) (same operation order as diffusers)."""
    return eps_null + w * (eps_p - eps_null)


def negative_prompt_guidance(eps_n: torch.Tensor, eps_p: torch.Tensor, w: float) -> torch.Tensor:
    """§NP: eps~ = eps_n + w (eps_p - eps_n)."""
    return eps_n + w * (eps_p - eps_n)


def dns(eps_null: torch.Tensor, eps_p: torch.Tensor, w_dns: float) -> torch.Tensor:
    """§DNS: NP with positive ∅ and negative p: eps~_dns = eps_p + w_dns (eps_∅ - eps_p)."""
    return eps_p + w_dns * (eps_null - eps_p)


def answer_guidance(eps_null: torch.Tensor, eps_p: torch.Tensor, eps_neg: torch.Tensor, w: float,
                    negative_scale: float | None = None) -> torch.Tensor:
    """§ANSWER step 3: eps_neg + w (eps_p - eps_neg) (`negative_scale` None, the paper's form), or
    with λ = `negative_scale`: CFG(w) + λ (eps_∅ - eps_neg) (λ = 0: exactly CFG)."""
    if negative_scale is None:
        return negative_prompt_guidance(eps_neg, eps_p, w)
    out = cfg(eps_null, eps_p, w)
    return out if negative_scale == 0 else out + negative_scale * (eps_null - eps_neg)


def x0_from_prediction(pred: torch.Tensor, z: torch.Tensor, alpha, sigma, prediction_type: str) -> torch.Tensor:
    """§ANSWER `x0`: the clean-image estimate from a model output at a VP latent z = alpha·x0 + sigma·eps."""
    if prediction_type == "epsilon":
        return (z - sigma * pred) / alpha
    if prediction_type == "v_prediction":
        return alpha * z - sigma * pred
    if prediction_type == "sample":
        return pred
    raise ValueError(f"answer.negative_eps x0: unsupported prediction_type {prediction_type!r}")


def prediction_from_x0(x0: torch.Tensor, z: torch.Tensor, alpha, sigma, prediction_type: str) -> torch.Tensor:
    """§ANSWER `x0`: the model output that explains the VP latent z with clean image x0
    (eps = (z - alpha·x0) / sigma; v = alpha·eps - sigma·x0)."""
    eps = (z - alpha * x0) / sigma
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "v_prediction":
        return alpha * eps - sigma * x0
    if prediction_type == "sample":
        return x0
    raise ValueError(f"answer.negative_eps x0: unsupported prediction_type {prediction_type!r}")


def x0_from_velocity(v: torch.Tensor, z: torch.Tensor, sigma) -> torch.Tensor:
    """§Flow-matching families, ANSWER `x0`: at z = (1 - σ) x0 + σ ε the model predicts v = ε - x0,
    so x0 = z - σ·v."""
    return z - sigma * v


def velocity_from_x0(x0: torch.Tensor, z: torch.Tensor, sigma) -> torch.Tensor:
    """§Flow-matching families, ANSWER `x0`: the velocity that explains z with clean image x0,
    v = (z - x0) / σ."""
    return (z - x0) / sigma


def apg(eps_null: torch.Tensor, eps_p: torch.Tensor, diff: torch.Tensor, w: float, eta: float = 1.0,
        norm_threshold: float = 15.0) -> torch.Tensor:
    """§APG (Sadat et al. 2024) as diffusers' `normalized_guidance`: `diff` (eps_p - eps_∅, or its
    momentum average) clipped to L2 norm `norm_threshold` per sample, split into the parts parallel
    and orthogonal to eps_p (in float64), eps~ = eps_∅ + w (diff_orth + eta · diff_par)."""
    dim = [-i for i in range(1, diff.ndim)]  # every non-batch dimension, as diffusers writes it
    if norm_threshold > 0:
        diff = diff * torch.minimum(torch.ones_like(diff), norm_threshold / diff.norm(p=2, dim=dim, keepdim=True))
    v0, v1 = diff.double(), torch.nn.functional.normalize(eps_p.double(), dim=dim)
    v0_parallel = (v0 * v1).sum(dim=dim, keepdim=True) * v1
    v0_orthogonal = v0 - v0_parallel
    update = v0_orthogonal.to(diff.dtype) + eta * v0_parallel.to(diff.dtype)
    return eps_null + w * update


def rescale_noise_cfg(noise_cfg: torch.Tensor, eps_p: torch.Tensor, guidance_rescale: float) -> torch.Tensor:
    """§CFG guidance_rescale: Lin et al. 2023 §3.4, exactly as diffusers' `rescale_noise_cfg`."""
    std_text = eps_p.std(dim=list(range(1, eps_p.ndim)), keepdim=True)
    std_cfg = noise_cfg.std(dim=list(range(1, noise_cfg.ndim)), keepdim=True)
    rescaled = noise_cfg * (std_text / std_cfg)
    return guidance_rescale * rescaled + (1 - guidance_rescale) * noise_cfg


def _stat_dims(x: torch.Tensor, mode: str) -> list[int]:
    """Per sample over (C,H,W) for `global`; per sample per channel over (H,W) for `channel`."""
    if mode == "global":
        return list(range(1, x.ndim))
    if mode == "channel":
        return list(range(2, x.ndim))
    raise ValueError(f"answer.normalize must be one of ('global', 'channel', 'none'), got {mode!r}")


def normalize(x: torch.Tensor, reference: torch.Tensor, mode: str = "global") -> torch.Tensor:
    """§ANSWER Normalize(x; mean(ref), std(ref)) = (x - mean(x)) / std(x) * std(ref) + mean(ref)."""
    if mode == "none":
        return x
    dims = _stat_dims(x, mode)
    mu_x, sd_x = x.mean(dim=dims, keepdim=True), x.std(dim=dims, keepdim=True)
    mu_r, sd_r = reference.mean(dim=dims, keepdim=True), reference.std(dim=dims, keepdim=True)
    return (x - mu_x) / sd_x * sd_r + mu_r
