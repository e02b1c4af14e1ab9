"""Stable Diffusion 3 / 3.5 (`StableDiffusion3Pipeline`): an MMDiT transformer predicting the
flow-matching velocity; CLIP-L + CLIP-G + T5 embeddings and the two CLIPs' pooled projection; ∅ the
encoding of ""; `FlowMatchEulerDiscreteScheduler` (its shift, or the resolution-dependent shift μ
when the scheduler uses dynamic shifting); latents un-shifted before decoding; no safety checker."""

from __future__ import annotations

from diffusers import StableDiffusion3Pipeline
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift, retrieve_timesteps

from ..sampler import Cond
from .base import Family


class SD3(Family):
    name = "sd3"
    order = 3
    swaps_schedulers = False  # its FlowMatchEulerDiscreteScheduler; the VP schedulers do not apply
    pipelines = (StableDiffusion3Pipeline,)

    def encode(self, pipe, texts, height, width):
        embeds, _, pooled, _ = pipe.encode_prompt(texts, None, None, device=pipe._execution_device,
                                                  do_classifier_free_guidance=False)
        return Cond(embeds, {"pooled_projections": pooled})

    def network(self, pipe):
        return pipe.transformer

    def size_multiple(self, pipe):
        return pipe.vae_scale_factor * pipe.patch_size

    def set_timesteps(self, pipe, scheduler, steps, height, width):
        kwargs = {}
        if scheduler.config.get("use_dynamic_shifting", None):  # as the pipeline computes mu
            patch = pipe.transformer.config.patch_size
            seq_len = (height // pipe.vae_scale_factor // patch) * (width // pipe.vae_scale_factor // patch)
            kwargs["mu"] = calculate_shift(seq_len, scheduler.config.get("base_image_seq_len", 256),
                                           scheduler.config.get("max_image_seq_len", 4096),
                                           scheduler.config.get("base_shift", 0.5),
                                           scheduler.config.get("max_shift", 1.16))
        retrieve_timesteps(scheduler, steps, pipe._execution_device, **kwargs)

    def predict(self, network, scheduler, z, t, cond):
        return network(hidden_states=z, timestep=t.expand(z.shape[0]), encoder_hidden_states=cond.embeds,
                       pooled_projections=cond.extra["pooled_projections"], return_dict=False)[0]

    def unscale(self, vae, latents):
        return latents / vae.config.scaling_factor + vae.config.shift_factor
