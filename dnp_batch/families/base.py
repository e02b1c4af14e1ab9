"""What a pipeline family adapter provides: how its prompts and ∅ are encoded into a condition
(`sampler.Cond`), how its initial latents are drawn, and how latents become images. The sampling
loop and every method are written once against this interface."""

from __future__ import annotations

from typing import ClassVar, Sequence

import torch
from diffusers.utils.torch_utils import randn_tensor

from ..sampler import Cond, finite_rows


class Family:
    """A pipeline family. Subclasses set `name`, `order` (their place in listings) and `pipelines`
    (the diffusers classes they run, subclasses included), and implement `encode`."""

    name: ClassVar[str]
    order: ClassVar[float]
    pipelines: ClassVar[tuple[type, ...]]
    # the `scheduler` short names (names.SCHEDULER_CLASSES) a config may swap in: every one of them
    # for the VP-schedule families; a flow-matching family samples with its own scheduler, so none
    swaps_schedulers: ClassVar[bool] = True

    def matches(self, pipe) -> bool:
        return isinstance(pipe, self.pipelines)

    def encode(self, pipe, texts: list[str], height: int, width: int) -> Cond:
        """Text conditions as the pipeline's own `encode_prompt` computes them for its positive branch."""
        raise NotImplementedError

    def null(self, pipe, pos: Cond, height: int, width: int) -> Cond:
        """∅ exactly as the pipeline's unconditional branch (docs/METHODS.md §Notation): by default the
        encoding of "", shaped like `pos`."""
        return self.encode(pipe, [""], height, width).expand(pos.embeds.shape[0])

    def negative(self, pipe, texts: Sequence[str | None], null: Cond, height: int, width: int) -> Cond:
        """Negative conditions per sample; a None text falls back to ∅ (no negative prompt)."""
        idx = [j for j, text in enumerate(texts) if text is not None]
        if not idx:
            return null
        encoded = self.encode(pipe, [texts[j] for j in idx], height, width)
        if len(idx) == len(texts):
            return encoded
        return null.with_rows(idx, encoded)

    def network(self, pipe):
        """The denoising network the pipeline calls (a UNet here; a transformer in other families)."""
        return pipe.unet

    def native_size(self, pipe) -> int:
        """The pipeline's default image side in pixels (what `height=None` gives)."""
        return self.network(pipe).config.sample_size * pipe.vae_scale_factor

    def size_multiple(self, pipe) -> int:
        """Image sides the pipeline accepts are multiples of this."""
        return pipe.vae_scale_factor

    def set_timesteps(self, pipe, scheduler, steps: int, height: int, width: int) -> None:
        """The scheduler's timesteps for `steps` inference steps, as the pipeline sets them."""
        scheduler.set_timesteps(steps, device=pipe._execution_device)

    def forward(self, network, scheduler, z: torch.Tensor, t, conds: list[Cond]) -> tuple[list[torch.Tensor], int]:
        """One prediction per condition and the number of network calls made: by default all
        branches in one batched call, [branch 0's samples, branch 1's, ...], as the pipelines batch
        CFG's [∅, p]."""
        n = len(conds)
        pred = self.predict(network, scheduler, torch.cat([z] * n) if n > 1 else z, t, Cond.cat(conds))
        return list(pred.chunk(n)), 1

    # Qwen-Image's per-token rescale of guided predictions is the one such knob: None here means the
    # family has none (the `norm_rescale` option is then refused); a family with one gives its default.
    norm_rescale: ClassVar[bool | None] = None

    def record(self, pipe, norm_rescale: bool | None) -> dict:
        """What a record names of the family's own choices (Qwen-Image: whether it rescaled)."""
        return {}

    def guided_rescale(self, pipe, norm_rescale: bool | None):
        """The family's last touch on a guided prediction, `f(combined, reference)`, or None (most
        families: none)."""
        return None

    def predict(self, network, scheduler, z: torch.Tensor, t, cond: Cond) -> torch.Tensor:
        """One batched forward, as the pipeline's loop calls its network: a UNet with the text
        embeddings, and the condition's other inputs as `added_cond_kwargs` (SDXL's)."""
        z_in = scheduler.scale_model_input(z, t)
        return network(z_in, t, encoder_hidden_states=cond.embeds, added_cond_kwargs=cond.extra or None,
                       return_dict=False)[0]

    def latents(self, pipe, scheduler, generators, height: int, width: int, dtype) -> torch.Tensor:
        """z_T drawn per sample from its own generator, as `prepare_latents` does with a generator list."""
        f = pipe.vae_scale_factor
        shape = (len(generators), self.network(pipe).config.in_channels, height // f, width // f)
        z = randn_tensor(shape, generator=generators, device=pipe._execution_device, dtype=dtype)
        sigma = getattr(scheduler, "init_noise_sigma", None)  # flow-matching schedulers start at z_T = ε
        return z if sigma is None else z * sigma

    # decoding, as the pipeline's own tail: the hooks below are where the families differ

    def upcast_vae(self, pipe) -> bool:
        """Whether the pipeline decodes in float32 with a float16 VAE."""
        return False

    def unscale(self, vae, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> the VAE's input."""
        return latents / vae.config.scaling_factor

    def finish(self, pipe, image: torch.Tensor, dtype) -> tuple[torch.Tensor, list[bool] | None]:
        """The pipeline's last steps on the decoded image (safety checker, watermark) and which images
        to denormalize (None: all)."""
        return image, None

    def decode(self, pipe, latents: torch.Tensor, output_type: str = "pil", finite: list | None = None):
        """Latents -> images exactly as the pipeline's own tail. `finite`, a list, receives per sample
        whether its latents and decoded image are free of NaN and inf (the fp16 SDXL VAE's classic
        failure would otherwise become a black image)."""
        if finite is not None:
            finite[:] = finite_rows(latents)
        if output_type == "latent":
            return latents
        vae = pipe.vae
        upcast = self.upcast_vae(pipe)
        if upcast:
            vae.to(torch.float32)
        post = getattr(vae, "post_quant_conv", None)  # SD3's VAE has none
        latents = latents.to(dtype=vae.dtype if post is None else next(iter(post.parameters())).dtype, device=vae.device)
        image = vae.decode(self.unscale(vae, latents), return_dict=False)[0]
        if finite is not None:
            finite[:] = [a and b for a, b in zip(finite, finite_rows(image))]
        if upcast:
            vae.to(torch.float16)
        image, do_denormalize = self.finish(pipe, image, latents.dtype)
        return pipe.image_processor.postprocess(image, output_type=output_type, do_denormalize=do_denormalize)
