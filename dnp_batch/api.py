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

METHODS = ("cfg", "np", "dns", "dnp", "auto-dnp", "cnp", "answer")
NEGATIVE_METHODS = ("np", "dnp")  # methods whose negative prompt the caller supplies
CAPTIONED_METHODS = ("auto-dnp", "cnp")  # methods that caption their DNS images
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
    """`images`: PIL images, an (N, H, W, 3) array, or the (N, C, h, w) final latents tensor;
    `dns_images`: the DNS images (PIL) that auto-DNP and CNP captioned, else None."""

    images: Any
    records: list[dict] = field(default_factory=list)
    dns_images: list | None = None


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def sample_id(prompt: str, seed: int, method: str, negative_prompt: str | None = None) -> str:
    """A stable key for a sample: depends only on its own text, seed and method."""
    blob = json.dumps([prompt, seed, method, negative_prompt], ensure_ascii=False)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def check_size(pipe, height, width) -> None:
    """Image sizes the pipeline can make: positive multiples of its VAE factor (None = native)."""
    f = pipe.vae_scale_factor
    for name, v in (("height", height), ("width", width)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0 or v % f):
            raise ValueError(f"{name} must be a positive multiple of the VAE factor {f}, got {v!r}")


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
    check_size(pipe, height, width)
    _check_choice("output_type", output_type, OUTPUT_TYPES)
    if ids is not None and len(ids) != len(prompts):
        raise ValueError(f"ids has {len(ids)} entries but prompts has {len(prompts)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")


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
    captioner=None,
    same_seed: bool = True,
    cnp_every: int = 1,
    output_type: str = "pil",
    ids: Sequence[str] | None = None,
    batch_size: int = 4,
    callback=None,
) -> GenerateResult:
    """Sample `prompts` (one seed each) with `method` on a loaded SD/SDXL pipeline.

    Methods (METHODS.md): `cfg`; `np` and `dnp` (NP with the caller's negatives; `dnp` is phase two
    of human DNP, where an empty negative falls back to none); `dns`; `auto-dnp` and `cnp`, which
    need `captioner` (a `Captioner` or any callable: list of PIL images -> list of str); `answer`.
    A sample's output depends only on its own prompt, seed and the parameters, never on what
    shares its batch. `callback(dict)` sees every step of the final chain.
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
    if method in CAPTIONED_METHODS and captioner is None:
        raise ValueError(f"method {method!r} needs a captioner (e.g. dnp_batch.captioner.Captioner())")
    if isinstance(cnp_every, bool) or not isinstance(cnp_every, int) or cnp_every < 1:
        raise ValueError(f"cnp.every must be an integer >= 1, got {cnp_every!r}")
    dns_scale = guidance_scale if dns_guidance_scale is None else dns_guidance_scale
    run = _Run(pipe, method, guidance_scale, dns_scale, guidance_rescale, answer, num_inference_steps, height,
               width, captioner, same_seed, cnp_every, output_type, callback)

    outputs, dns_images, records = [], [], []
    for start in range(0, len(prompts), batch_size):
        chunk = slice(start, start + batch_size)
        t0 = time.perf_counter()
        images, dns, extras, nfe = run.batch(list(prompts[chunk]), list(seeds[chunk]),
                                             None if negative_prompts is None else list(negative_prompts[chunk]))
        seconds = (time.perf_counter() - t0) / len(extras)
        outputs.append(images)
        dns_images.extend(dns or [])
        for j, (p, s, extra) in enumerate(zip(prompts[chunk], seeds[chunk], extras)):
            records.append({
                "id": ids[start + j] if ids is not None else sample_id(p, s, method, extra["negative_prompt"]),
                "prompt": p,
                "seed": s,
                "method": method,
                **extra,
                **run.params,
                "nfe": nfe,
                "seconds": seconds,
            })
    return GenerateResult(_concat(outputs, output_type), records, dns_images or None)


def _concat(outputs: list, output_type: str):
    if output_type == "pil":
        return [im for batch in outputs for im in batch]
    if output_type == "latent":
        return torch.cat(outputs)
    return np.concatenate(outputs)


def fresh_seed(seed: int) -> int:
    """METHODS.md §DNP `same_seed: false`: a new seed for NP, derived from the sample's own."""
    return int(np.random.SeedSequence([seed, 1]).generate_state(1, dtype=np.uint32)[0])


def _blank_to_none(text: str) -> str | None:
    """An empty or whitespace negative (caption or human) means no negative prompt (§DNP)."""
    return text.strip() or None


class _Run:
    """One `generate` call's fixed settings; `batch()` runs the method's chains on a batch."""

    def __init__(self, pipe, method, w, w_dns, rescale, answer, steps, height, width, captioner, same_seed,
                 cnp_every, output_type, callback):
        self.pipe, self.method, self.w, self.w_dns, self.rescale = pipe, method, w, w_dns, rescale
        self.answer, self.steps, self.height, self.width = answer, steps, height, width
        self.caption = getattr(captioner, "caption", captioner)
        self.same_seed, self.cnp_every = same_seed, cnp_every
        self.output_type, self.callback = output_type, callback
        self.params = self._params(captioner)

    def _params(self, captioner) -> dict:
        pipe, method = self.pipe, self.method
        params: dict[str, Any] = {"guidance_scale": self.w, "guidance_rescale": self.rescale}
        if method in ("dns", "answer", "auto-dnp", "cnp"):
            params["dns_guidance_scale"] = self.w_dns
        if method == "answer":
            params["answer"] = {**asdict(self.answer), "k_schedule": self.answer.schedule(self.steps)}
        if method in CAPTIONED_METHODS:
            params["captioner"] = {"model": getattr(captioner, "model_id", type(captioner).__name__),
                                   "max_new_tokens": getattr(captioner, "max_new_tokens", None),
                                   "prompt": getattr(captioner, "prompt", None)}
        if method == "auto-dnp":
            params["same_seed"] = self.same_seed
        if method == "cnp":
            params["cnp_every"] = self.cnp_every
        return {
            **params,
            "num_inference_steps": self.steps,
            "height": self.height,
            "width": self.width,
            "scheduler": type(pipe.scheduler).__name__,
            "scheduler_config": dict(pipe.scheduler.config),
            "model": pipe.config._name_or_path,
            "pipeline": type(pipe).__name__,
            "dtype": str(pipe.unet.dtype).removeprefix("torch."),
        }

    def _chain(self, denoise, strategy, pos, null, neg, seeds, callback=None) -> torch.Tensor:
        """One full chain from z_T (drawn from the seeds) to z_0."""
        scheduler = self.pipe.scheduler
        scheduler.set_timesteps(self.steps, device=self.pipe._execution_device)
        if len(scheduler.timesteps) != self.steps:
            raise ValueError(
                f"scheduler {type(scheduler).__name__} takes {len(scheduler.timesteps)} model steps for "
                f"{self.steps} inference steps; only schedulers with one model call per step are supported"
            )
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(0)
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        batch = sampler.Batch(pos, null, neg, list(seeds), generators)
        z = sampler.initial_latents(self.pipe, scheduler, generators, self.height, self.width, pos.embeds.dtype)
        return sampler.sample(denoise, scheduler, z, strategy, batch, callback)

    def _describe(self, z_dns: torch.Tensor, null) -> tuple[list, list[str], sampler.Cond]:
        """DNS latents -> (images, captions, negative condition): §DNP steps 1-2."""
        images = sampler.decode(self.pipe, z_dns, "pil")
        captions = [c.strip() for c in self.caption(images)]
        neg = sampler.negative_cond(self.pipe, [c or None for c in captions], null, self.height, self.width)
        return images, captions, neg

    def batch(self, prompts, seeds, negatives):
        pipe, method, h, w = self.pipe, self.method, self.height, self.width
        pos = sampler.encode_texts(pipe, prompts, h, w)
        null = sampler.null_cond(pipe, pos, h, w)
        denoise = sampler.Denoiser(pipe.unet)
        extras = [{"negative_prompt": None} for _ in prompts]
        dns_images = None
        if method == "cfg":
            z = self._chain(denoise, sampler.CFG(self.w, self.rescale), pos, null, None, seeds, self.callback)
        elif method == "dns":
            z = self._chain(denoise, sampler.DNS(self.w_dns, self.rescale), pos, null, None, seeds, self.callback)
        elif method == "answer":
            strategy = sampler.Answer(self.w, self.w_dns, self.answer.schedule(self.steps), self.answer.normalize,
                                      self.answer.negative_eps, self.rescale)
            z = self._chain(denoise, strategy, pos, null, None, seeds, self.callback)
        elif method in ("np", "dnp"):
            texts = negatives if method == "np" else [_blank_to_none(n) for n in negatives]
            for extra, given, used in zip(extras, negatives, texts):
                extra.update(negative_prompt=given, **({"empty_negative": used is None} if method == "dnp" else {}))
            neg = sampler.negative_cond(pipe, texts, null, h, w)
            z = self._chain(denoise, sampler.NegativePrompt(self.w, self.rescale), pos, null, neg, seeds,
                            self.callback)
        elif method == "auto-dnp":
            z_dns = self._chain(denoise, sampler.DNS(self.w_dns, self.rescale), pos, null, None, seeds)
            dns_images, captions, neg = self._describe(z_dns, null)
            np_seeds = list(seeds) if self.same_seed else [fresh_seed(s) for s in seeds]
            for extra, caption, s in zip(extras, captions, np_seeds):
                extra.update(negative_prompt=caption, empty_negative=not caption, np_seed=s, captions=1)
            z = self._chain(denoise, sampler.NegativePrompt(self.w, self.rescale), pos, null, neg, np_seeds,
                            self.callback)
        else:  # cnp
            refreshes: list[list[str]] = []

            def describe(z_dns, i):
                nonlocal dns_images
                images, captions, neg = self._describe(z_dns, null)
                dns_images = dns_images or images  # the full DNS chain from z_T
                refreshes.append(captions)
                return neg

            strategy = sampler.CNP(self.w, self.w_dns, self.cnp_every, describe, self.rescale)
            z = self._chain(denoise, strategy, pos, null, None, seeds, self.callback)
            for j, extra in enumerate(extras):
                captions = [r[j] for r in refreshes]
                extra.update(negative_prompt=captions[-1], empty_negative=not captions[-1],
                             cnp_captions=captions, captions=len(captions))
        return sampler.decode(pipe, z, self.output_type), dns_images, extras, denoise.nfe
