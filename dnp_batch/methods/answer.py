"""§ANSWER (docs/METHODS.md): at every early step a K-step DNS mini-chain's normalised prediction
replaces CFG's ∅ branch; its knobs, the `x0` conversion, the strategy and the NFE."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from ..settings import Strict
from .base import Method

if TYPE_CHECKING:
    import torch

# torch, diffusers and the guidance math are imported where they run, so that reading a config
# (which validates these settings) loads neither.
NEGATIVE_EPS_MODES = ("dns_guided", "uncond", "cond", "x0")
NORMALIZE_MODES = ("global", "channel", "none")
K_SHAPES = ("constant", "linear")


def k_schedule(i: int, num_steps: int, k: int = 2, until: float = 0.5, shape: str = "constant") -> int:
    """§ANSWER K schedule: K_i for step i of T, clamped so that i + K_i <= T - 1.

    Active steps are those with i < until·T. `constant` gives k on each; `linear` goes from k at
    the first step down to 1 at the last active one (rounded half up).
    """
    if shape not in K_SHAPES:
        raise ValueError(f"answer.shape must be one of {K_SHAPES}, got {shape!r}")
    n_active = min(num_steps, math.ceil(until * num_steps))
    if k <= 0 or i >= n_active:
        return 0
    if shape == "linear" and n_active > 1:
        value = math.floor(k + (1 - k) * i / (n_active - 1) + 0.5)
    else:
        value = k
    return max(0, min(value, num_steps - 1 - i))


def answer_nfe(num_steps: int, ks: list[int], negative_eps: str = "dns_guided") -> int:
    """§ANSWER NFE: 2T + 2·ΣK_i; `uncond`/`cond` need one branch, not two, at the chain's end."""
    single_branch_ends = sum(1 for k in ks if k > 0) if negative_eps in ("uncond", "cond") else 0
    return 2 * num_steps + 2 * sum(ks) - single_branch_ends


class AnswerSettings(Strict):
    """ANSWER's knobs (docs/METHODS.md §ANSWER); defaults as pinned there."""

    section: ClassVar[str] = "answer"

    k: int = Field(2, ge=0, strict=True, description="an integer >= 0")
    until: float = Field(0.5, ge=0, le=1, strict=True, description="a fraction in [0, 1]")
    shape: Literal[K_SHAPES] = Field("constant", description=f"one of {', '.join(K_SHAPES)}")
    normalize: Literal[NORMALIZE_MODES] = Field("global", description=f"one of {', '.join(NORMALIZE_MODES)}")
    negative_eps: Literal[NEGATIVE_EPS_MODES] = Field("dns_guided",
                                                      description=f"one of {', '.join(NEGATIVE_EPS_MODES)}")
    # λ; None = w - 1 in the paper's form; 0 = CFG exactly
    negative_scale: float | None = Field(None, strict=True, allow_inf_nan=False, description="a number or null")

    def schedule(self, num_steps: int) -> list[int]:
        """K_i per step; all 0 when λ = 0 (the push is off, so no mini-chain runs)."""
        if self.negative_scale == 0:
            return [0] * num_steps
        return [k_schedule(i, num_steps, self.k, self.until, self.shape) for i in range(num_steps)]


def vp_coefficients(scheduler, step_index: int) -> tuple[float, float, float]:
    """(alpha, sigma, c) at step `step_index` of the scheduler's timesteps, such that `c·z` is a VP
    latent alpha·x0 + sigma·eps: from `alphas_cumprod` (DDIM, DDPM, DPM-Solver++, UniPC, PNDM), or
    from the Euler schedulers' sigma s (alpha = c = 1/sqrt(s² + 1), sigma = s·alpha)."""
    from diffusers import EulerAncestralDiscreteScheduler, EulerDiscreteScheduler

    if isinstance(scheduler, (EulerDiscreteScheduler, EulerAncestralDiscreteScheduler)):  # z = x0 + sigma·eps
        s = float(scheduler.sigmas[step_index])
        alpha = 1.0 / (s * s + 1.0) ** 0.5
        return alpha, s * alpha, alpha
    if not hasattr(scheduler, "alphas_cumprod"):
        raise ValueError(f"answer.negative_eps x0 does not support {type(scheduler).__name__}")
    a = float(scheduler.alphas_cumprod[int(scheduler.timesteps[step_index])])
    return a**0.5, (1.0 - a) ** 0.5, 1.0


def negative_from_x0(scheduler, pred: torch.Tensor, z_end: torch.Tensor, end: int, z: torch.Tensor,
                     start: int) -> torch.Tensor:
    """§ANSWER `x0`: a prediction at (z_end, step `end`) -> its clean image -> the prediction that
    explains z at step `start` with that clean image (the scheduler's prediction type, or a
    flow-matching scheduler's velocity)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from .. import guidance

    if isinstance(scheduler, FlowMatchEulerDiscreteScheduler):  # a velocity on z = (1 - σ) x0 + σ ε
        x0 = guidance.x0_from_velocity(pred, z_end, float(scheduler.sigmas[end]))
        return guidance.velocity_from_x0(x0, z, float(scheduler.sigmas[start]))
    kind = scheduler.config.prediction_type
    alpha_e, sigma_e, c_e = vp_coefficients(scheduler, end)
    alpha_i, sigma_i, c_i = vp_coefficients(scheduler, start)
    x0 = guidance.x0_from_prediction(pred, c_e * z_end, alpha_e, sigma_e, kind)
    return guidance.prediction_from_x0(x0, c_i * z, alpha_i, sigma_i, kind)


@dataclass
class AnswerStrategy:
    guidance_scale: float
    dns_guidance_scale: float
    ks: list[int]  # K_i for every chunk, from k_schedule
    normalize: str = "global"
    negative_eps: str = "dns_guided"
    guidance_rescale: float = 0.0
    negative_scale: float | None = None  # λ; None: the paper's form (§ANSWER step 3)

    def __call__(self, denoise, scheduler, i, t, z, batch):
        from .. import guidance, sampler

        eps_null, eps_p = denoise(scheduler, z, t, [batch.null, batch.pos])
        k = self.ks[i]
        eps_neg = eps_null if k == 0 else self.negative(denoise, scheduler, i, z, eps_null, eps_p, k, batch)
        eps = guidance.answer_guidance(eps_null, eps_p, eps_neg, self.guidance_scale, self.negative_scale)
        return denoise.rescale(eps, eps_p, self.guidance_rescale)

    def negative(self, denoise, scheduler, i, z, eps_null, eps_p, k, batch):
        """§ANSWER step 2: a K-step DNS mini-chain (its first step reuses the main pair), then Normalize."""
        from .. import guidance, sampler

        z_neg, chain = sampler.dns_chain(denoise, scheduler, i, z, batch, self.dns_guidance_scale, k, (eps_null, eps_p))
        t_end = scheduler.timesteps[i + k]
        if self.negative_eps in ("dns_guided", "x0"):
            pair = denoise(chain, z_neg, t_end, [batch.null, batch.pos])
            x = denoise.rescale(guidance.dns(*pair, self.dns_guidance_scale), pair[0])
            if self.negative_eps == "x0":
                x = negative_from_x0(scheduler, x, z_neg, i + k, z, i)
        elif self.negative_eps == "uncond":
            (x,) = denoise(chain, z_neg, t_end, [batch.null])
        else:
            (x,) = denoise(chain, z_neg, t_end, [batch.pos])
        return guidance.normalize(x, eps_null, self.normalize)


class Answer(Method):
    """§ANSWER: a K-step DNS mini-chain's normalised prediction replaces CFG's ∅ branch."""

    name = "answer"
    order = 7
    settings = AnswerSettings
    uses_dns_scale = True

    def record_fields(self, call):
        answer: AnswerSettings = call.setting()
        return {"dns_guidance_scale": call.dns_guidance_scale,
                "answer": {**answer.model_dump(), "k_schedule": answer.schedule(call.steps)}}

    def nfe(self, steps, settings=None):
        answer = settings or AnswerSettings()
        return answer_nfe(steps, answer.schedule(steps), answer.negative_eps)

    def strategy(self, call):
        answer: AnswerSettings = call.setting()
        return AnswerStrategy(call.guidance_scale, call.dns_guidance_scale, answer.schedule(call.steps),
                              answer.normalize, answer.negative_eps, call.guidance_rescale, answer.negative_scale)
