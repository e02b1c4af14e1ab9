"""§ANSWER (docs/METHODS.md): at every early step a K-step DNS mini-chain's normalised prediction
replaces CFG's ∅ branch; its knobs, the `x0` conversion, the strategy and the NFE."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import EulerAncestralDiscreteScheduler, EulerDiscreteScheduler
from pydantic import field_validator

from .. import guidance, sampler
from ..settings import Strict, check_choice
from .base import Method


NEGATIVE_EPS_MODES = ("dns_guided", "uncond", "cond", "x0")


class AnswerSettings(Strict):
    """ANSWER's knobs (docs/METHODS.md §ANSWER); defaults as pinned there."""

    k: int = 2
    until: float = 0.5
    shape: str = "constant"
    normalize: str = "global"
    negative_eps: str = "dns_guided"
    negative_scale: float | None = None  # λ; None = w - 1 in the paper's form; 0 = CFG exactly

    @field_validator("k", mode="before")
    @classmethod
    def _k(cls, v):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"answer.k must be an integer >= 0, got {v!r}")
        return v

    @field_validator("until", mode="before")
    @classmethod
    def _until(cls, v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise ValueError(f"answer.until must be a fraction in [0, 1], got {v!r}")
        return v

    @field_validator("shape", mode="before")
    @classmethod
    def _shape(cls, v):
        return check_choice("answer.shape", v, guidance.K_SHAPES)

    @field_validator("normalize", mode="before")
    @classmethod
    def _normalize(cls, v):
        return check_choice("answer.normalize", v, guidance.NORMALIZE_MODES)

    @field_validator("negative_eps", mode="before")
    @classmethod
    def _negative_eps(cls, v):
        return check_choice("answer.negative_eps", v, NEGATIVE_EPS_MODES)

    @field_validator("negative_scale", mode="before")
    @classmethod
    def _negative_scale(cls, v):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v != v):
            raise ValueError(f"answer.negative_scale must be a number or null, got {v!r}")
        return v

    def schedule(self, num_steps: int) -> list[int]:
        """K_i per step; all 0 when λ = 0 (the push is off, so no mini-chain runs)."""
        if self.negative_scale == 0:
            return [0] * num_steps
        return [guidance.k_schedule(i, num_steps, self.k, self.until, self.shape) for i in range(num_steps)]


SIGMA_SCHEDULERS = (EulerDiscreteScheduler, EulerAncestralDiscreteScheduler)  # z = x0 + sigma·eps, scaled input


def vp_coefficients(scheduler, step_index: int) -> tuple[float, float, float]:
    """(alpha, sigma, c) at step `step_index` of the scheduler's timesteps, such that `c·z` is a VP
    latent alpha·x0 + sigma·eps: from `alphas_cumprod` (DDIM, DDPM, DPM-Solver++, UniPC, PNDM), or
    from the Euler schedulers' sigma s (alpha = c = 1/sqrt(s² + 1), sigma = s·alpha)."""
    if isinstance(scheduler, SIGMA_SCHEDULERS):
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
    explains z at step `start` with that clean image (the scheduler's prediction type)."""
    kind = scheduler.config.prediction_type
    alpha_e, sigma_e, c_e = vp_coefficients(scheduler, end)
    alpha_i, sigma_i, c_i = vp_coefficients(scheduler, start)
    x0 = guidance.x0_from_prediction(pred, c_e * z_end, alpha_e, sigma_e, kind)
    return guidance.prediction_from_x0(x0, c_i * z, alpha_i, sigma_i, kind)


@dataclass
class AnswerStrategy:
    guidance_scale: float
    dns_guidance_scale: float
    ks: list[int]  # K_i for every chunk, from guidance.k_schedule
    normalize: str = "global"
    negative_eps: str = "dns_guided"
    guidance_rescale: float = 0.0
    negative_scale: float | None = None  # λ; None: the paper's form (§ANSWER step 3)

    def __call__(self, denoise, scheduler, i, t, z, batch):
        eps_null, eps_p = denoise(scheduler, z, t, [batch.null, batch.pos])
        k = self.ks[i]
        eps_neg = eps_null if k == 0 else self.negative(denoise, scheduler, i, z, eps_null, eps_p, k, batch)
        eps = guidance.answer_guidance(eps_null, eps_p, eps_neg, self.guidance_scale, self.negative_scale)
        return sampler.rescale(eps, eps_p, self.guidance_rescale)

    def negative(self, denoise, scheduler, i, z, eps_null, eps_p, k, batch):
        """§ANSWER step 2: a K-step DNS mini-chain (its first step reuses the main pair), then Normalize."""
        z_neg, chain = sampler.dns_chain(denoise, scheduler, i, z, batch, self.dns_guidance_scale, k, (eps_null, eps_p))
        t_end = scheduler.timesteps[i + k]
        if self.negative_eps in ("dns_guided", "x0"):
            x = guidance.dns(*denoise(chain, z_neg, t_end, [batch.null, batch.pos]), self.dns_guidance_scale)
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
    section = "answer"
    settings = AnswerSettings
    uses_dns_scale = True

    def record_fields(self, call):
        answer: AnswerSettings = call.setting()
        return {"dns_guidance_scale": call.dns_guidance_scale,
                "answer": {**answer.model_dump(), "k_schedule": answer.schedule(call.steps)}}

    def nfe(self, steps, settings=None):
        answer = settings or AnswerSettings()
        return guidance.answer_nfe(steps, answer.schedule(steps), answer.negative_eps)

    def strategy(self, call):
        answer: AnswerSettings = call.setting()
        return AnswerStrategy(call.guidance_scale, call.dns_guidance_scale, answer.schedule(call.steps),
                              answer.normalize, answer.negative_eps, call.guidance_rescale, answer.negative_scale)
