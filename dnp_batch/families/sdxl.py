"""Stable Diffusion XL (`StableDiffusionXLPipeline`): two text encoders' embeddings, the pooled
embedding and the micro-conditioning time ids; ∅ zeros under `force_zeros_for_empty_prompt`; the
float32 upcast of a float16 VAE, the latents' mean/std, the watermark."""

from __future__ import annotations

import torch
from diffusers import StableDiffusionXLPipeline

from ..sampler import Cond
from .base import Family


def time_ids(pipe, embeds, pooled, height, width) -> torch.Tensor:
    """SDXL micro-conditioning (original size, crop (0, 0), target size), as the pipeline's default."""
    te2 = pipe.text_encoder_2
    proj_dim = int(pooled.shape[-1]) if te2 is None else te2.config.projection_dim
    ids = pipe._get_add_time_ids((height, width), (0, 0), (height, width), dtype=embeds.dtype,
                                 text_encoder_projection_dim=proj_dim)
    return ids.to(embeds.device).repeat(embeds.shape[0], 1)


class SDXL(Family):
    name = "sdxl"
    order = 2
    pipelines = (StableDiffusionXLPipeline,)

    def encode(self, pipe, texts, height, width):
        embeds, _, pooled, _ = pipe.encode_prompt(texts, device=pipe._execution_device,
                                                  do_classifier_free_guidance=False)
        return Cond(embeds, {"text_embeds": pooled, "time_ids": time_ids(pipe, embeds, pooled, height, width)})

    def null(self, pipe, pos, height, width):
        if pipe.config.force_zeros_for_empty_prompt:
            return Cond(torch.zeros_like(pos.embeds), {"text_embeds": torch.zeros_like(pos.extra["text_embeds"]),
                                                       "time_ids": pos.extra["time_ids"]})
        null = super().null(pipe, pos, height, width)
        return Cond(null.embeds, {**null.extra, "time_ids": pos.extra["time_ids"]})

    def upcast_vae(self, pipe):
        return pipe.vae.dtype == torch.float16 and pipe.vae.config.force_upcast

    def unscale(self, vae, latents):
        mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
        if mean is None or std is None:
            return super().unscale(vae, latents)
        mean = torch.tensor(mean).view(1, -1, 1, 1).to(latents)
        std = torch.tensor(std).view(1, -1, 1, 1).to(latents)
        return latents * std / vae.config.scaling_factor + mean

    def finish(self, pipe, image, dtype):
        if pipe.watermark is not None:
            image = pipe.watermark.apply_watermark(image)
        return image, None
