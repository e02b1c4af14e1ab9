"""§NP (docs/METHODS.md): negative prompting with the caller's negative prompts."""

from __future__ import annotations

from dataclasses import dataclass

from .. import guidance, sampler
from .base import Method


@dataclass
class NpStrategy:
    guidance_scale: float
    guidance_rescale: float = 0.0

    def __call__(self, denoise, scheduler, i, t, z, batch):
        eps_n, eps_p = denoise(scheduler, z, t, [batch.neg, batch.pos])
        eps = guidance.negative_prompt_guidance(eps_n, eps_p, self.guidance_scale)
        return sampler.rescale(eps, eps_p, self.guidance_rescale)


class NegativePrompt(Method):
    """§NP with the caller's negative prompts ("" encodes "", as diffusers does)."""

    name = "np"
    order = 2
    needs_negative = True

    def texts(self, negatives: list[str]) -> list[str | None]:
        return list(negatives)

    def sample(self, run, step):
        texts = self.texts(step.negatives)
        for extra, given, used in zip(step.extras, step.negatives, texts):
            extra.update(negative_prompt=given, **self.negative_fields(used))
        neg = sampler.negative_cond(run.pipe, texts, step.null, run.height, run.width)
        strategy = NpStrategy(run.guidance_scale, run.guidance_rescale)
        return run.chain(step.denoise, strategy, step.pos, step.null, neg, step.seeds, run.callback)

    def negative_fields(self, used: str | None) -> dict:
        return {}
