"""One denoising loop over a diffusers pipeline's components; methods are small strategies.

The loop mirrors `StableDiffusion(XL)Pipeline.__call__` step for step (scale_model_input, one
batched UNet call, guidance, `scheduler.step`) so that `cfg`/`np`/`dns` equal diffusers exactly.
A method's strategy (in its file of `dnp_batch.methods`) is a callable `(denoiser, scheduler, i, t,
z, batch) -> eps~` that asks the denoiser for the predictions it needs and combines them with
`guidance`; the DNS chain that ANSWER and CNP run from an inner step is here (`dns_chain`).
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from diffusers import StableDiffusionXLPipeline
from diffusers.utils.torch_utils import randn_tensor

from . import guidance

@dataclass
class Cond:
    """One text condition for every sample of a batch: what the UNet needs besides (z, t)."""

    embeds: torch.Tensor  # (N, L, D)
    pooled: torch.Tensor | None = None  # (N, P), SDXL only
    time_ids: torch.Tensor | None = None  # (N, 6), SDXL micro-conditioning, same for every branch

    @staticmethod
    def cat(conds: Sequence["Cond"]) -> "Cond":
        if len(conds) == 1:
            return conds[0]
        pooled = None if conds[0].pooled is None else torch.cat([c.pooled for c in conds])
        time_ids = None if conds[0].time_ids is None else torch.cat([c.time_ids for c in conds])
        return Cond(torch.cat([c.embeds for c in conds]), pooled, time_ids)


@dataclass
class Batch:
    """The conditions and randomness of a batch of samples that share one method and its parameters."""

    pos: Cond
    null: Cond
    neg: Cond | None
    seeds: list[int]
    generators: list[torch.Generator]  # one per sample: drew z_T, drives the main chain's noise


class Denoiser:
    """The UNet as eps(z, t, conds): one batched forward for all branches; counts NFE per sample."""

    def __init__(self, unet):
        self.unet = unet
        self.nfe = 0  # UNet evaluations per sample (one per branch)
        self.calls = 0  # batched UNet forwards

    def __call__(self, scheduler, z: torch.Tensor, t, conds: Sequence[Cond]) -> list[torch.Tensor]:
        n = len(conds)
        z_in = scheduler.scale_model_input(torch.cat([z] * n) if n > 1 else z, t)
        c = Cond.cat(conds)
        added = None if c.pooled is None else {"text_embeds": c.pooled, "time_ids": c.time_ids}
        eps = self.unet(z_in, t, encoder_hidden_states=c.embeds, added_cond_kwargs=added, return_dict=False)[0]
        self.calls += 1
        self.nfe += n
        return list(eps.chunk(n))


# A method's strategy: (denoiser, scheduler, i, t, z, batch) -> the guided prediction (dnp_batch.methods)
Strategy = Callable[[Denoiser, object, int, torch.Tensor, torch.Tensor, Batch], torch.Tensor]


def rescale(eps: torch.Tensor, reference: torch.Tensor, guidance_rescale: float) -> torch.Tensor:
    """Applied only when > 0, as the pipelines do, so that 0 stays bit-identical to diffusers."""
    return guidance.rescale_noise_cfg(eps, reference, guidance_rescale) if guidance_rescale > 0 else eps


def minichain_generator(seed: int, step: int) -> torch.Generator:
    """§ANSWER: the mini-chain's noise comes from (sample seed, step index) alone."""
    state = np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator("cpu").manual_seed(int(state) & (2**63 - 1))


def dns_chain(denoise, scheduler, i, z, batch, w_dns, num_steps, first=None):
    """§DNS for `num_steps` steps from (z, t_i) on a copy of the scheduler (never advancing the main
    one), with noise from (seed, i). `first`: the (eps_∅, eps_p) pair already computed at (z, t_i).
    Returns the chain's latents and its scheduler."""
    chain = copy.deepcopy(scheduler)
    kwargs = step_kwargs(chain, [minichain_generator(s, i) for s in batch.seeds])
    ts = scheduler.timesteps
    for j in range(num_steps):
        pair = first if j == 0 and first is not None else denoise(chain, z, ts[i + j], [batch.null, batch.pos])
        z = chain.step(guidance.dns(*pair, w_dns), ts[i + j], z, **kwargs, return_dict=False)[0]
    return z, chain


def step_kwargs(scheduler, generators: list[torch.Generator], eta: float = 0.0) -> dict:
    """The extra `scheduler.step` arguments, as the pipelines' `prepare_extra_step_kwargs`."""
    params = set(inspect.signature(scheduler.step).parameters)
    kwargs = {}
    if "eta" in params:
        kwargs["eta"] = eta
    if "generator" in params:
        kwargs["generator"] = generators
    return kwargs


def sample(
    denoise: Denoiser,
    scheduler,
    z: torch.Tensor,
    method: Strategy,
    batch: Batch,
    callback: Callable[[dict], None] | None = None,
) -> torch.Tensor:
    """The denoising loop: z_T -> z_0 with `method` giving eps~ at every step."""
    kwargs = step_kwargs(scheduler, batch.generators)
    for i, t in enumerate(scheduler.timesteps):
        eps = method(denoise, scheduler, i, t, z, batch)
        z = scheduler.step(eps, t, z, **kwargs, return_dict=False)[0]
        if callback is not None:
            callback({"i": i, "t": t, "z": z, "eps": eps, "scheduler": scheduler})
    return z


# ---- pipeline plumbing: text conditions, initial noise, decoding -------------------------------


def is_sdxl(pipe) -> bool:
    return isinstance(pipe, StableDiffusionXLPipeline)


def encode_texts(pipe, texts: list[str], height: int, width: int) -> Cond:
    """Text conditions as the pipeline's own `encode_prompt` computes them for its positive branch."""
    device = pipe._execution_device
    if not is_sdxl(pipe):
        embeds, _ = pipe.encode_prompt(texts, device, 1, False)
        return Cond(embeds)
    embeds, _, pooled, _ = pipe.encode_prompt(texts, device=device, do_classifier_free_guidance=False)
    return Cond(embeds, pooled, _time_ids(pipe, embeds, pooled, height, width))


def null_cond(pipe, pos: Cond, height: int, width: int) -> Cond:
    """∅ exactly as the pipeline's unconditional branch (docs/METHODS.md §Notation): zeros for SDXL with
    `force_zeros_for_empty_prompt`, else the encoding of ""; shaped like `pos`."""
    n = pos.embeds.shape[0]
    if is_sdxl(pipe) and pipe.config.force_zeros_for_empty_prompt:
        return Cond(torch.zeros_like(pos.embeds), torch.zeros_like(pos.pooled), pos.time_ids)
    one = encode_texts(pipe, [""], height, width)
    return Cond(
        one.embeds.expand(n, -1, -1),
        None if one.pooled is None else one.pooled.expand(n, -1),
        pos.time_ids,
    )


def _time_ids(pipe, embeds, pooled, height, width) -> torch.Tensor:
    """SDXL micro-conditioning (original size, crop (0, 0), target size), as the pipeline's default."""
    te2 = pipe.text_encoder_2
    proj_dim = int(pooled.shape[-1]) if te2 is None else te2.config.projection_dim
    ids = pipe._get_add_time_ids((height, width), (0, 0), (height, width), dtype=embeds.dtype,
                                 text_encoder_projection_dim=proj_dim)
    return ids.to(embeds.device).repeat(embeds.shape[0], 1)


def initial_latents(pipe, scheduler, generators, height, width, dtype) -> torch.Tensor:
    """z_T drawn per sample from its own generator, as `prepare_latents` does with a generator list."""
    f = pipe.vae_scale_factor
    shape = (len(generators), pipe.unet.config.in_channels, height // f, width // f)
    z = randn_tensor(shape, generator=generators, device=pipe._execution_device, dtype=dtype)
    return z * scheduler.init_noise_sigma


def finite_rows(x: torch.Tensor) -> list[bool]:
    """Per sample: no NaN or inf anywhere in its row of `x`."""
    return torch.isfinite(x.float()).flatten(1).all(1).tolist()


def decode(pipe, latents: torch.Tensor, output_type: str = "pil", finite: list | None = None):
    """Latents -> images exactly as the pipeline's own tail (VAE upcast, safety checker, watermark).
    `finite`, a list, receives per sample whether its latents and decoded image are free of NaN and
    inf (the fp16 SDXL VAE's classic failure would otherwise become a black image)."""
    if finite is not None:
        finite[:] = finite_rows(latents)
    if output_type == "latent":
        return latents
    vae = pipe.vae
    upcast = is_sdxl(pipe) and vae.dtype == torch.float16 and vae.config.force_upcast
    if upcast:
        vae.to(torch.float32)
    latents = latents.to(dtype=next(iter(vae.post_quant_conv.parameters())).dtype, device=vae.device)
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if is_sdxl(pipe) and mean is not None and std is not None:
        mean = torch.tensor(mean).view(1, -1, 1, 1).to(latents)
        std = torch.tensor(std).view(1, -1, 1, 1).to(latents)
        latents = latents * std / vae.config.scaling_factor + mean
    else:
        latents = latents / vae.config.scaling_factor
    image = vae.decode(latents, return_dict=False)[0]
    if finite is not None:
        finite[:] = [a and b for a, b in zip(finite, finite_rows(image))]
    if upcast:
        vae.to(torch.float16)
    do_denormalize = None
    if is_sdxl(pipe):
        if pipe.watermark is not None:
            image = pipe.watermark.apply_watermark(image)
    else:
        image, nsfw = pipe.run_safety_checker(image, pipe._execution_device, latents.dtype)
        do_denormalize = None if nsfw is None else [not flagged for flagged in nsfw]
    return pipe.image_processor.postprocess(image, output_type=output_type, do_denormalize=do_denormalize)


def negative_cond(pipe, texts: Sequence[str | None], null: Cond, height: int, width: int) -> Cond:
    """Negative conditions per sample; a None text falls back to ∅ (no negative prompt)."""
    idx = [j for j, text in enumerate(texts) if text is not None]
    if not idx:
        return null
    encoded = encode_texts(pipe, [texts[j] for j in idx], height, width)
    if len(idx) == len(texts):
        return encoded
    embeds = null.embeds.clone()
    embeds[idx] = encoded.embeds
    pooled = None
    if null.pooled is not None:
        pooled = null.pooled.clone()
        pooled[idx] = encoded.pooled
    return Cond(embeds, pooled, null.time_ids)
