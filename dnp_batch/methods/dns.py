"""§DNS (docs/METHODS.md): the least prompt-compliant image, CFG with p and ∅ swapped; phase one of human DNP."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Method


@dataclass
class DnsStrategy:
    dns_guidance_scale: float
    guidance_rescale: float = 0.0

    def __call__(self, denoise, scheduler, i, t, z, batch):
        from .. import guidance  # here, not at the top: reading a config loads no torch

        eps_null, eps_p = denoise(scheduler, z, t, [batch.null, batch.pos])
        # The positive branch of DNS is ∅, so a rescale refers to eps_∅.
        return denoise.rescale(guidance.dns(eps_null, eps_p, self.dns_guidance_scale), eps_null, self.guidance_rescale)


class Dns(Method):
    """§DNS: the least compliant image (CFG with p and ∅ swapped). Phase one of human DNP."""

    name = "dns"
    order = 3
    uses_dns_scale = True
    writes_negatives_file = True

    def strategy(self, call):
        return DnsStrategy(call.dns_guidance_scale, call.guidance_rescale)
