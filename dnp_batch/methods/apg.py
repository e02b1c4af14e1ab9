"""§APG (docs/METHODS.md): adaptive projected guidance, a modern baseline."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from ..settings import Strict
from .base import Method

if TYPE_CHECKING:
    import torch


class ApgSettings(Strict):
    """APG (docs/METHODS.md §APG): diffusers' `AdaptiveProjectedGuidance` knobs and defaults
    (`norm_threshold` is its `adaptive_projected_guidance_rescale`, `momentum` its
    `adaptive_projected_guidance_momentum`)."""

    section: ClassVar[str] = "apg"

    eta: float = Field(1.0, strict=True, allow_inf_nan=False, description="a number")
    norm_threshold: float = Field(15.0, ge=0, strict=True, allow_inf_nan=False,
                                  description="a number >= 0 (0: no clipping)")
    momentum: float | None = Field(None, strict=True, allow_inf_nan=False, description="a number or null")


@dataclass
class ApgStrategy:
    """§APG: adaptive projected guidance, as diffusers' `AdaptiveProjectedGuidance` guider (its
    momentum average of eps_p - eps_∅ restarts with every chain; w = 1 gives eps_p, as there)."""

    guidance_scale: float
    eta: float = 1.0
    norm_threshold: float = 15.0
    momentum: float | None = None
    guidance_rescale: float = 0.0
    running: torch.Tensor | float = 0.0

    def __call__(self, denoise, scheduler, i, t, z, batch):
        from .. import guidance  # here, not at the top: reading a config loads no torch

        eps_null, eps_p = denoise(scheduler, z, t, [batch.null, batch.pos])
        if i == 0:
            self.running = 0.0
        if math.isclose(self.guidance_scale, 1.0):
            eps = eps_p
        else:
            diff = eps_p - eps_null
            if self.momentum is not None:
                self.running = diff + self.momentum * self.running
                diff = self.running
            eps = guidance.apg(eps_null, eps_p, diff, self.guidance_scale, self.eta, self.norm_threshold)
        return denoise.rescale(eps, eps_p, self.guidance_rescale)


class Apg(Method):
    """§APG: a modern baseline; CFG's update projected against eps_p and norm-clipped."""

    name = "apg"
    order = 8
    settings = ApgSettings

    def record_fields(self, call):
        return {"apg": call.setting().model_dump()}

    def strategy(self, call):
        apg: ApgSettings = call.setting()
        return ApgStrategy(call.guidance_scale, apg.eta, apg.norm_threshold, apg.momentum, call.guidance_rescale)
