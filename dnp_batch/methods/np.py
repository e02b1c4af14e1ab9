"""§NP (docs/METHODS.md): negative prompting with the caller's negative prompts."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Method


@dataclass
class NpStrategy:
    guidance_scale: float
    guidance_rescale: float = 0.0

    def __call__(self, denoise, scheduler, i, t, z, batch):
        from .. import guidance  # here, not at the top: reading a config loads no torch

        eps_n, eps_p = denoise(scheduler, z, t, [batch.neg, batch.pos])
        eps = guidance.negative_prompt_guidance(eps_n, eps_p, self.guidance_scale)
        return denoise.rescale(eps, eps_p, self.guidance_rescale)


class NegativePrompt(Method):
    """§NP with the caller's negative prompts ("" encodes "", as diffusers does)."""

    name = "np"
    order = 2
    needs_negative = True

    def texts(self, negatives: list[str]) -> list[str | None]:
        return list(negatives)

    def sample(self, call, chunk):
        from .. import families

        texts = self.texts(chunk.negatives)
        for extra, given, used in zip(chunk.extras, chunk.negatives, texts):
            extra.update(negative_prompt=given, **self.negative_fields(used))
        neg = families.negative_cond(call.pipe, texts, chunk.null, call.height, call.width)
        strategy = NpStrategy(call.guidance_scale, call.guidance_rescale)
        return call.chain(chunk.denoise, strategy, chunk.pos, chunk.null, neg, chunk.seeds, call.callback)

    def negative_fields(self, used: str | None) -> dict:
        return {}
