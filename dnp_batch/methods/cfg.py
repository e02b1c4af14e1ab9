"""§CFG (docs/METHODS.md): classifier-free guidance, the baseline every method is measured against."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Method


@dataclass
class CfgStrategy:
    guidance_scale: float
    guidance_rescale: float = 0.0

    def __call__(self, denoise, scheduler, i, t, z, batch):
        from .. import guidance  # here, not at the top: reading a config loads no torch

        eps_null, eps_p = denoise(scheduler, z, t, [batch.null, batch.pos])
        return denoise.rescale(guidance.cfg(eps_null, eps_p, self.guidance_scale), eps_p, self.guidance_rescale)


class Cfg(Method):
    """§CFG."""

    name = "cfg"
    order = 1

    def strategy(self, call):
        return CfgStrategy(call.guidance_scale, call.guidance_rescale)
