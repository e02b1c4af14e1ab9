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
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from . import guidance


@dataclass
class Cond:
    """One text condition for every sample of a batch, as its family's denoiser takes it: the text
    embeddings and the family's other per-sample inputs, by name (SDXL: `text_embeds`, the pooled
    embedding, and `time_ids`, its micro-conditioning). Every tensor is batch-first."""

    embeds: torch.Tensor  # (N, L, D)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # each (N, ...)

    @staticmethod
    def cat(conds: Sequence["Cond"]) -> "Cond":
        if len(conds) == 1:
            return conds[0]
        return Cond(torch.cat([c.embeds for c in conds]),
                    {k: torch.cat([c.extra[k] for c in conds]) for k in conds[0].extra})

    def expand(self, n: int) -> "Cond":
        """A one-sample condition repeated for `n` samples (views, no copies)."""
        return Cond(self.embeds.expand(n, *self.embeds.shape[1:]),
                    {k: v.expand(n, *v.shape[1:]) for k, v in self.extra.items()})

    def with_rows(self, rows: list[int], other: "Cond") -> "Cond":
        """This condition with samples `rows` taken from `other` (which holds just those rows)."""
        def put(mine: torch.Tensor, theirs: torch.Tensor) -> torch.Tensor:
            out = mine.clone()
            out[rows] = theirs
            return out

        return Cond(put(self.embeds, other.embeds), {k: put(v, other.extra[k]) for k, v in self.extra.items()})


@dataclass
class Batch:
    """The conditions and randomness of a batch of samples that share one method and its parameters."""

    pos: Cond
    null: Cond
    neg: Cond | None
    seeds: list[int]
    generators: list[torch.Generator]  # one per sample: drew z_T, drives the main chain's noise


class Denoiser:
    """The pipeline's network as pred(z, t, conds), made by its family (`dnp_batch.families.denoiser(pipe)`):
    `forward(network, scheduler, z, t, conds)` gives one prediction per condition (by default one
    batched call for all branches, as the UNet pipelines and SD3 do; Qwen-Image calls each branch
    on its own), and `finish(combined, reference)` is the family's last touch on a guided prediction
    (Qwen-Image's per-token rescale to the reference branch's norm; by default none). Counts NFE per
    sample and network calls."""

    def __init__(self, network, forward: Callable, finish: Callable | None = None):
        self.network = network
        self.forward = forward
        self.finish_combined = finish
        self.nfe = 0  # network evaluations per sample (one per branch)
        self.calls = 0  # network calls

    def __call__(self, scheduler, z: torch.Tensor, t, conds: Sequence[Cond]) -> list[torch.Tensor]:
        preds, calls = self.forward(self.network, scheduler, z, t, list(conds))
        self.calls += calls
        self.nfe += len(conds)
        return preds

    def rescale(self, eps: torch.Tensor, reference: torch.Tensor, guidance_rescale: float = 0.0) -> torch.Tensor:
        """A guided prediction's finish: `guidance_rescale` (only when > 0, as the pipelines do, so
        that 0 stays bit-identical to diffusers), then the family's own (`finish`), both against
        `reference`, the branch the method treats as positive (∅ for DNS)."""
        eps = rescale(eps, reference, guidance_rescale)
        return eps if self.finish_combined is None else self.finish_combined(eps, reference)


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
        z = chain.step(denoise.rescale(guidance.dns(*pair, w_dns), pair[0]), ts[i + j], z, **kwargs,
                       return_dict=False)[0]
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


# ---- shared by the families' decoding -------------------------------------------------------


def finite_rows(x: torch.Tensor) -> list[bool]:
    """Per sample: no NaN or inf anywhere in its row of `x`."""
    return torch.isfinite(x.float()).flatten(1).all(1).tolist()
