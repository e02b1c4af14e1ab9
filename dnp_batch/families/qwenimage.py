"""Qwen-Image (`QwenImagePipeline`): an MMDiT transformer predicting the flow-matching velocity on
latents packed into 2×2-patch tokens; Qwen2.5-VL's hidden states of the prompt (in the pipeline's
chat template, its system part dropped) with their mask; ∅ the encoding of " " (the pipeline runs no
CFG without a negative prompt; " " is the empty negative its docstring recommends); each branch is
its own transformer call, as the pipeline makes them; a guided prediction is rescaled per token to
the norm of the branch the method treats as positive (the pipeline's true CFG); the shift μ from the
image's token count; the Wan-style VAE's latent mean/std.

The sampler's latents stay unpacked, `(N, C, H, W)` as in every family, so that ANSWER's Normalize
sees channels and pixels; the family packs them for the transformer and for the per-token norm
(a permutation: the values, and so the pipeline's bytes, are unchanged)."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import QwenImagePipeline
from diffusers.pipelines.qwenimage.pipeline_qwenimage import calculate_shift, retrieve_timesteps
from diffusers.utils.torch_utils import randn_tensor

from ..sampler import Cond, finite_rows
from .base import Family

NULL_TEXT = " "


def pack(z: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, H/2·W/2, 4C), as `QwenImagePipeline._pack_latents`."""
    n, c, h, w = z.shape
    return z.view(n, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(n, (h // 2) * (w // 2), c * 4)


def unpack(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The inverse of `pack` (the pipeline's `_unpack_latents` without its frame axis)."""
    n, _, d = x.shape
    return x.view(n, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(n, d // 4, h, w)


def rescale_to_reference(combined: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The pipeline's true-CFG rescale, per token: combined · ‖reference‖ / ‖combined‖ (docs/METHODS.md
    §Flow-matching families), on unpacked latents."""
    h, w = combined.shape[-2:]
    comb, ref = pack(combined), pack(reference)
    out = comb * (torch.norm(ref, dim=-1, keepdim=True) / torch.norm(comb, dim=-1, keepdim=True))
    return unpack(out, h, w)


class QwenImage(Family):
    name = "qwenimage"
    order = 4
    swaps_schedulers = False  # its FlowMatchEulerDiscreteScheduler; the VP schedulers do not apply
    pipelines = (QwenImagePipeline,)

    def encode(self, pipe, texts, height, width):
        embeds, mask = pipe.encode_prompt(texts, device=pipe._execution_device)
        if mask is None:  # every token valid
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        return Cond(embeds, {"mask": mask})

    def null(self, pipe, pos, height, width):
        return self.encode(pipe, [NULL_TEXT], height, width).expand(pos.embeds.shape[0])

    def negative(self, pipe, texts, null, height, width):
        """All negatives in one encoding, as the pipeline encodes a list (padded to the longest); a
        None text is ∅'s " "."""
        if all(text is None for text in texts):
            return null
        return self.encode(pipe, [NULL_TEXT if text is None else text for text in texts], height, width)

    def network(self, pipe):
        return pipe.transformer

    def native_size(self, pipe):
        return pipe.default_sample_size * pipe.vae_scale_factor

    def size_multiple(self, pipe):
        return pipe.vae_scale_factor * 2

    def set_timesteps(self, pipe, scheduler, steps, height, width):
        seq_len = (height // pipe.vae_scale_factor // 2) * (width // pipe.vae_scale_factor // 2)
        mu = calculate_shift(seq_len, scheduler.config.get("base_image_seq_len", 256),
                             scheduler.config.get("max_image_seq_len", 4096), scheduler.config.get("base_shift", 0.5),
                             scheduler.config.get("max_shift", 1.15))
        sigmas = np.linspace(1.0, 1 / steps, steps)
        retrieve_timesteps(scheduler, steps, pipe._execution_device, sigmas=sigmas, mu=mu)

    def forward(self, network, scheduler, z, t, conds):
        """Each branch its own call, as the pipeline calls its transformer for cond, then uncond."""
        return [self.predict(network, scheduler, z, t, cond) for cond in conds], len(conds)

    def predict(self, network, scheduler, z, t, cond):
        n, _, h, w = z.shape
        mask = cond.extra["mask"]
        out = network(hidden_states=pack(z), timestep=t.expand(n).to(z.dtype) / 1000, guidance=None,
                      encoder_hidden_states_mask=None if mask.all() else mask, encoder_hidden_states=cond.embeds,
                      img_shapes=[[(1, h // 2, w // 2)]] * n, attention_kwargs={}, return_dict=False)[0]
        return unpack(out, h, w)

    norm_rescale = True  # as the pipeline's true CFG

    def guided_rescale(self, pipe, norm_rescale):
        return rescale_to_reference if norm_rescale else None

    def record(self, pipe, norm_rescale):
        return {"norm_rescale": bool(norm_rescale)}

    def latents(self, pipe, scheduler, generators, height, width, dtype):
        f = pipe.vae_scale_factor
        shape = (len(generators), 1, pipe.transformer.config.in_channels // 4, 2 * (height // (f * 2)),
                 2 * (width // (f * 2)))
        return randn_tensor(shape, generator=generators, device=pipe._execution_device, dtype=dtype)[:, 0]

    def decode(self, pipe, latents, output_type="pil", finite=None):
        """As the pipeline's tail: (the pipeline's `latent` output is packed: see `pack`) the frame axis
        added, latent mean/std undone, the VAE's first frame."""
        if finite is not None:
            finite[:] = finite_rows(latents)
        if output_type == "latent":
            return latents
        vae = pipe.vae
        z = latents[:, :, None].to(vae.dtype)
        mean = torch.tensor(vae.config.latents_mean).view(1, vae.config.z_dim, 1, 1, 1).to(z.device, z.dtype)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, vae.config.z_dim, 1, 1, 1).to(z.device, z.dtype)
        image = vae.decode(z / inv_std + mean, return_dict=False)[0][:, :, 0]
        if finite is not None:
            finite[:] = [a and b for a, b in zip(finite, finite_rows(image))]
        return pipe.image_processor.postprocess(image, output_type=output_type)
