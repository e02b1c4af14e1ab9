"""Stable Diffusion 1.x/2.x (`StableDiffusionPipeline`): CLIP text embeddings, ∅ the encoding of "",
the safety checker on decoded images."""

from __future__ import annotations

from diffusers import StableDiffusionPipeline

from ..sampler import Cond
from .base import Family


class SD(Family):
    name = "sd"
    order = 1
    pipelines = (StableDiffusionPipeline,)

    def encode(self, pipe, texts, height, width):
        embeds, _ = pipe.encode_prompt(texts, pipe._execution_device, 1, False)
        return Cond(embeds)

    def finish(self, pipe, image, dtype):
        image, nsfw = pipe.run_safety_checker(image, pipe._execution_device, dtype)
        return image, None if nsfw is None else [not flagged for flagged in nsfw]
