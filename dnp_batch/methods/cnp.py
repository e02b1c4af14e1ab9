"""§CNP (docs/METHODS.md): the DNS chain from z_{t_i}, re-described every `every` steps as the negative."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar

from pydantic import Field

from ..settings import Strict
from .base import Method, captioner_record

if TYPE_CHECKING:
    import torch

    from ..sampler import Cond


class CnpSettings(Strict):
    """CNP (docs/METHODS.md §CNP): refresh the negative every N steps (1 = the paper's CNP)."""

    section: ClassVar[str] = "cnp"

    every: int = Field(1, ge=1, strict=True, description="an integer >= 1")


@dataclass
class CnpStrategy:
    """§CNP: every `every` steps, run DNS from z_{t_i} to the end, describe the result (decode +
    caption + encode, done by `describe`), and use it as the negative until the next refresh."""

    guidance_scale: float
    dns_guidance_scale: float
    every: int
    describe: Callable[[torch.Tensor, int], Cond]  # (final DNS latents, step i) -> negative condition
    guidance_rescale: float = 0.0
    neg: Cond | None = None

    def __call__(self, denoise, scheduler, i, t, z, batch):
        from .. import guidance, sampler  # here, not at the top: reading a config loads no torch

        if i % self.every == 0:
            remaining = len(scheduler.timesteps) - i
            z_dns, _ = sampler.dns_chain(denoise, scheduler, i, z, batch, self.dns_guidance_scale, remaining)
            self.neg = self.describe(z_dns, i)
        eps_n, eps_p = denoise(scheduler, z, t, [self.neg, batch.pos])
        eps = guidance.negative_prompt_guidance(eps_n, eps_p, self.guidance_scale)
        return denoise.rescale(eps, eps_p, self.guidance_rescale)


class Cnp(Method):
    """§CNP: the DNS chain from z_{t_i} re-described every `every` steps as the negative."""

    name = "cnp"
    order = 6
    settings = CnpSettings
    needs_captioner = True
    uses_dns_scale = True

    def record_fields(self, call):
        return {"dns_guidance_scale": call.dns_guidance_scale, "captioner": captioner_record(call.captioner),
                "cnp_every": call.setting().every}

    def nfe(self, steps, settings=None):
        every = (settings or CnpSettings()).every
        return 2 * steps + sum(2 * (steps - i) for i in range(0, steps, every))

    def sample(self, call, chunk):
        refreshes: list[list[str]] = []

        def describe(z_dns, i):
            images, captions, neg = call.describe(z_dns, chunk.null)
            chunk.dns_images = chunk.dns_images or images  # the full DNS chain from z_T
            refreshes.append(captions)
            return neg

        strategy = CnpStrategy(call.guidance_scale, call.dns_guidance_scale, call.setting().every, describe,
                               call.guidance_rescale)
        z = call.chain(chunk.denoise, strategy, chunk.pos, chunk.null, None, chunk.seeds, call.callback)
        for j, extra in enumerate(chunk.extras):
            captions = [r[j] for r in refreshes]
            extra.update(negative_prompt=captions[-1], empty_negative=not captions[-1], cnp_captions=captions,
                         captions=len(captions))
        return z
