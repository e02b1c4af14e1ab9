"""The library API: `generate(pipe, prompts, seeds, method, ...)` on one loaded diffusers pipeline."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

from . import guidance, sampler

METHODS = ("cfg", "np", "dns", "dnp", "answer")
NEGATIVE_METHODS = ("np", "dnp")  # methods whose negative prompt the caller supplies
OUTPUT_TYPES = ("pil", "np", "latent")

# METHODS.md §Default hyperparameters
DEFAULT_GUIDANCE_SCALE = 7.0
DEFAULT_STEPS = 30


@dataclass(frozen=True)
class AnswerConfig:
    """ANSWER's knobs (METHODS.md §ANSWER); defaults as pinned there."""

    k: int = 2
    until: float = 0.5
    shape: str = "constant"
    normalize: str = "global"
    negative_eps: str = "dns_guided"

    def __post_init__(self):
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 0:
            raise ValueError(f"answer.k must be an integer >= 0, got {self.k!r}")
        if isinstance(self.until, bool) or not isinstance(self.until, (int, float)) or not 0 <= self.until <= 1:
            raise ValueError(f"answer.until must be a fraction in [0, 1], got {self.until!r}")
        _check_choice("answer.shape", self.shape, guidance.K_SHAPES)
        _check_choice("answer.normalize", self.normalize, guidance.NORMALIZE_MODES)
        _check_choice("answer.negative_eps", self.negative_eps, sampler.NEGATIVE_EPS_MODES)

    def schedule(self, num_steps: int) -> list[int]:
        return [guidance.k_schedule(i, num_steps, self.k, self.until, self.shape) for i in range(num_steps)]


@dataclass
class GenerateResult:
    """`images`: PIL images, an (N, H, W, 3) array, or the (N, C, h, w) final latents tensor."""

    images: Any
    records: list[dict] = field(default_factory=list)


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def sample_id(prompt: str, seed: int, method: str, negative_prompt: str | None = None) -> str:
    """A stable key for a sample: depends only on its own text, seed and method."""
    blob = json.dumps([prompt, seed, method, negative_prompt], ensure_ascii=False)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _validate(pipe, prompts, seeds, method, negative_prompts, steps, height, width, output_type, ids, batch_size):
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise ValueError("prompts must be a list of strings (wrap a single prompt in a list)")
    if len(prompts) == 0:
        raise ValueError("prompts is empty: give at least one prompt")
    if not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must all be strings")
    if isinstance(seeds, (int, str)) or not isinstance(seeds, Sequence):
        raise ValueError("seeds must be a list of integers, one per prompt")
    if len(seeds) != len(prompts):
        raise ValueError(f"seeds has {len(seeds)} entries but prompts has {len(prompts)}: give one seed per prompt")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ValueError("seeds must be non-negative integers")
    _check_choice("method", method, METHODS)
    if method in NEGATIVE_METHODS:
        if negative_prompts is None:
            raise ValueError(f"method {method!r} needs negative_prompts (one string per prompt)")
        if isinstance(negative_prompts, str) or len(negative_prompts) != len(prompts):
            raise ValueError(
                f"negative_prompts must be a list with one string per prompt ({len(prompts)}), "
                f"got {negative_prompts!r:.80}"
            )
        if not all(isinstance(n, str) for n in negative_prompts):
            raise ValueError("negative_prompts must all be strings")
    elif negative_prompts is not None:
        raise ValueError(f"negative_prompts only apply to methods {NEGATIVE_METHODS}, not {method!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"num_inference_steps must be an integer >= 1, got {steps!r}")
    f = pipe.vae_scale_factor
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0 or v % f:
            raise ValueError(f"{name} must be a positive multiple of the VAE factor {f}, got {v!r}")
    _check_choice("output_type", output_type, OUTPUT_TYPES)
    if ids is not None and len(ids) != len(prompts):
        raise ValueError(f"ids has {len(ids)} entries but prompts has {len(prompts)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")


def _method(name, guidance_scale, dns_scale, guidance_rescale, answer: AnswerConfig, steps):
    if name == "cfg":
        return sampler.CFG(guidance_scale, guidance_rescale)
    if name in NEGATIVE_METHODS:
        return sampler.NegativePrompt(guidance_scale, guidance_rescale)
    if name == "dns":
        return sampler.DNS(dns_scale, guidance_rescale)
    return sampler.Answer(guidance_scale, dns_scale, answer.schedule(steps), answer.normalize,
                          answer.negative_eps, guidance_rescale)


def _method_params(method, guidance_scale, dns_scale, guidance_rescale, answer, steps) -> dict:
    params: dict[str, Any] = {"guidance_scale": guidance_scale, "guidance_rescale": guidance_rescale}
    if method in ("dns", "answer"):
        params["dns_guidance_scale"] = dns_scale
    if method == "answer":
        params["answer"] = asdict(answer)
        params["answer"]["k_schedule"] = answer.schedule(steps)
    return params


@torch.no_grad()
def generate(
    pipe,
    prompts: Sequence[str],
    seeds: Sequence[int],
    method: str,
    negative_prompts: Sequence[str] | None = None,
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
    num_inference_steps: int = DEFAULT_STEPS,
    height: int | None = None,
    width: int | None = None,
    answer: AnswerConfig = AnswerConfig(),
    dns_guidance_scale: float | None = None,
    guidance_rescale: float = 0.0,
    output_type: str = "pil",
    ids: Sequence[str] | None = None,
    batch_size: int = 4,
    callback=None,
) -> GenerateResult:
    """Sample `prompts` (one seed each) with `method` on a loaded SD/SDXL pipeline.

    Methods (METHODS.md): `cfg`, `np` and `dnp` (NP with the caller's negatives; `dnp` is phase two
    of human DNP), `dns`, `answer`. A sample's output depends only on its own prompt, seed and the
    parameters, never on what shares its batch. `callback(dict)` sees every main-chain step.
    """
    if not isinstance(pipe, (StableDiffusionPipeline, StableDiffusionXLPipeline)):
        raise ValueError(
            f"pipe must be a diffusers StableDiffusionPipeline or StableDiffusionXLPipeline, got {type(pipe).__name__}"
        )
    native = pipe.unet.config.sample_size * pipe.vae_scale_factor  # the pipelines' own default size
    height = native if height is None else height
    width = native if width is None else width
    _validate(pipe, prompts, seeds, method, negative_prompts, num_inference_steps, height, width,
              output_type, ids, batch_size)
    if not isinstance(answer, AnswerConfig):
        raise ValueError(f"answer must be a dnp_batch.AnswerConfig, got {type(answer).__name__}")
    dns_scale = guidance_scale if dns_guidance_scale is None else dns_guidance_scale
    params = _method_params(method, guidance_scale, dns_scale, guidance_rescale, answer, num_inference_steps)
    strategy = _method(method, guidance_scale, dns_scale, guidance_rescale, answer, num_inference_steps)

    outputs, records = [], []
    for start in range(0, len(prompts), batch_size):
        chunk = slice(start, start + batch_size)
        negs = None if negative_prompts is None else list(negative_prompts[chunk])
        t0 = time.perf_counter()
        images, nfe = _generate_batch(pipe, list(prompts[chunk]), list(seeds[chunk]), negs, strategy,
                                      num_inference_steps, height, width, output_type, callback)
        seconds = (time.perf_counter() - t0) / len(images)
        outputs.append(images)
        for j, (p, s) in enumerate(zip(prompts[chunk], seeds[chunk])):
            neg = None if negs is None else negs[j]
            records.append({
                "id": ids[start + j] if ids is not None else sample_id(p, s, method, neg),
                "prompt": p,
                "negative_prompt": neg,
                "seed": s,
                "method": method,
                **params,
                "num_inference_steps": num_inference_steps,
                "height": height,
                "width": width,
                "scheduler": type(pipe.scheduler).__name__,
                "scheduler_config": dict(pipe.scheduler.config),
                "model": pipe.config._name_or_path,
                "pipeline": type(pipe).__name__,
                "dtype": str(pipe.unet.dtype).removeprefix("torch."),
                "nfe": nfe,
                "seconds": seconds,
            })
    return GenerateResult(_concat(outputs, output_type), records)


def _concat(outputs: list, output_type: str):
    if output_type == "pil":
        return [im for batch in outputs for im in batch]
    if output_type == "latent":
        return torch.cat(outputs)
    return np.concatenate(outputs)


def _generate_batch(pipe, prompts, seeds, negatives, strategy, steps, height, width, output_type, callback):
    scheduler = pipe.scheduler
    scheduler.set_timesteps(steps, device=pipe._execution_device)
    if len(scheduler.timesteps) != steps:
        raise ValueError(
            f"scheduler {type(scheduler).__name__} takes {len(scheduler.timesteps)} model steps for "
            f"{steps} inference steps; only first-order-per-step schedulers are supported"
        )
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(0)
    pos = sampler.encode_texts(pipe, prompts, height, width)
    batch = sampler.Batch(
        pos=pos,
        null=sampler.null_cond(pipe, pos, height, width),
        neg=None if negatives is None else sampler.encode_texts(pipe, negatives, height, width),
        seeds=seeds,
        generators=[torch.Generator("cpu").manual_seed(s) for s in seeds],
    )
    z = sampler.initial_latents(pipe, scheduler, batch.generators, height, width, pos.embeds.dtype)
    denoise = sampler.Denoiser(pipe.unet)
    z = sampler.sample(denoise, scheduler, z, strategy, batch, callback)
    return sampler.decode(pipe, z, output_type), denoise.nfe
