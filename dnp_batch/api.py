"""The library API: `generate(pipe, prompts, seeds, method=..., ...)` on one loaded diffusers pipeline."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from . import families, methods
from .methods import (DEFAULT_GUIDANCE_SCALE, DEFAULT_STEPS, METHODS, AnswerSettings, ApgSettings, CnpSettings,
                      DnpSettings, fresh_seed)
from .settings import Strict, check_choice

OUTPUT_TYPES = ("pil", "np", "latent")


@dataclass
class GenerateResult:
    """`images`: PIL images, an (N, H, W, 3) array, or the (N, C, h, w) final latents tensor;
    `dns_images`: the DNS images (PIL) that auto-DNP and CNP captioned, else None."""

    images: Any
    records: list[dict] = field(default_factory=list)
    dns_images: list | None = None


@dataclass
class DnsCaptions:
    """auto-DNP's phase one for each sample: the DNS image x⁻, its caption n*, and its cost."""

    images: list
    captions: list[str]
    nfe: list[int]
    seconds: list[float]


def sample_id(prompt: str, seed: int, method: str, negative_prompt: str | None = None) -> str:
    """A stable key for a sample: depends only on its own text, seed and method."""
    blob = json.dumps([prompt, seed, method, negative_prompt], ensure_ascii=False)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def check_size(pipe, height, width) -> None:
    """Image sizes the pipeline can make: positive multiples of its VAE factor (times the patch
    size of a transformer family; None = native)."""
    f, vae = families.size_multiple(pipe), pipe.vae_scale_factor
    what = f"the VAE factor {f}" if f == vae else f"{f} (the VAE factor {vae} times the patch size {f // vae})"
    for name, v in (("height", height), ("width", width)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0 or v % f):
            raise ValueError(f"{name} must be a positive multiple of {what}, got {v!r}")


def _validate(pipe, prompts, seeds, m, negative_prompts, steps, height, width, output_type, ids, batch_size):
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
    if m.needs_negative:
        if negative_prompts is None:
            raise ValueError(f"method {m.name!r} needs negative_prompts (one string per prompt)")
        if isinstance(negative_prompts, str) or len(negative_prompts) != len(prompts):
            raise ValueError(
                f"negative_prompts must be a list with one string per prompt ({len(prompts)}), "
                f"got {negative_prompts!r:.80}"
            )
        if not all(isinstance(n, str) for n in negative_prompts):
            raise ValueError("negative_prompts must all be strings")
    elif negative_prompts is not None:
        takers = tuple(name for name, other in methods.REGISTRY.items() if other.needs_negative)
        raise ValueError(f"negative_prompts only apply to methods {takers}, not {m.name!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"num_inference_steps must be an integer >= 1, got {steps!r}")
    check_size(pipe, height, width)
    check_choice("output_type", output_type, OUTPUT_TYPES)
    if ids is not None and len(ids) != len(prompts):
        raise ValueError(f"ids has {len(ids)} entries but prompts has {len(prompts)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")


def _make_call(pipe, prompts, seeds, *, method, negative_prompts=None, guidance_scale, num_inference_steps, height,
               width, dns_guidance_scale, guidance_rescale, captioner, output_type="pil", ids=None, batch_size,
               callback=None, captions=None, norm_rescale=None) -> methods.Call:
    families.family_of(pipe)  # "pipe must be a diffusers StableDiffusionPipeline or ..., got X"
    m, settings = methods.resolve(method)
    native = families.native_size(pipe)  # the pipelines' own default size
    height = native if height is None else height
    width = native if width is None else width
    _validate(pipe, prompts, seeds, m, negative_prompts, num_inference_steps, height, width,
              output_type, ids, batch_size)
    if captions is not None:
        if not hasattr(m, "from_captions"):
            raise ValueError(f"captions are phase two of a two-phase method (auto-DNP); method {m.name!r} takes none")
        if isinstance(captions, str) or len(captions) != len(prompts) or not all(isinstance(c, str) for c in captions):
            raise ValueError(f"captions must be a list with one string per prompt ({len(prompts)})")
    elif m.needs_captioner and captioner is None:
        raise ValueError(f"method {m.name!r} needs a captioner (e.g. dnp_batch.captioner.Captioner())")
    dns_scale = guidance_scale if dns_guidance_scale is None else dns_guidance_scale
    return methods.Call(pipe, m, guidance_scale, dns_scale, guidance_rescale, num_inference_steps, height, width,
                        settings, captioner, output_type, callback, families.resolve_norm_rescale(pipe, norm_rescale))


def _chunk(run: methods.Call, prompts, seeds, negatives) -> methods.Chunk:
    pos = families.encode_texts(run.pipe, prompts, run.height, run.width)
    null = families.null_cond(run.pipe, pos, run.height, run.width)
    return methods.Chunk(prompts, seeds, negatives, pos, null, families.denoiser(run.pipe, run.norm_rescale),
                        [{"negative_prompt": None} for _ in prompts])


@torch.no_grad()
def generate(
    pipe,
    prompts: Sequence[str],
    seeds: Sequence[int],
    *,
    method: str | Strict = "cfg",
    negative_prompts: Sequence[str] | None = None,
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
    num_inference_steps: int = DEFAULT_STEPS,
    height: int | None = None,
    width: int | None = None,
    dns_guidance_scale: float | None = None,
    guidance_rescale: float = 0.0,
    captioner=None,
    captions: Sequence[str] | None = None,
    output_type: str = "pil",
    ids: Sequence[str] | None = None,
    batch_size: int = 4,
    callback=None,
    norm_rescale: bool | None = None,
) -> GenerateResult:
    """Sample `prompts` (one seed each) with `method` on a loaded SD/SDXL pipeline.

    `method` is a method's name (`dnp_batch.METHODS`, docs/METHODS.md), run with its default
    settings, or a method's settings object, which names the method and sets its knobs:
    `AnswerSettings(k=3)` (answer), `ApgSettings(...)` (apg), `CnpSettings(every=2)` (cnp),
    `DnpSettings(same_seed=False)` (auto-dnp). The methods: `cfg`; `np` and `dnp` (NP with the
    caller's `negative_prompts`; `dnp` is phase two of human DNP, where an empty negative falls back
    to none); `dns`; `auto-dnp` and `cnp`, which need `captioner` (a `Captioner` or any callable:
    list of PIL images -> list of str); `answer`; `apg`. `captions` runs only auto-DNP's phase two,
    from the captions of `describe_dns` (its records then count phase two's cost alone). A sample's
    output depends only on its own prompt, seed and the parameters, never on what shares its batch.
    `callback(dict)` sees every step of the final chain. `norm_rescale` turns Qwen-Image's per-token
    rescale of guided predictions on or off (None: as its pipeline, on; docs/METHODS.md).
    """
    run = _make_call(pipe, prompts, seeds, method=method, negative_prompts=negative_prompts,
                     guidance_scale=guidance_scale, num_inference_steps=num_inference_steps, height=height,
                     width=width, dns_guidance_scale=dns_guidance_scale, guidance_rescale=guidance_rescale,
                     captioner=captioner, output_type=output_type, ids=ids, batch_size=batch_size,
                     callback=callback, captions=captions, norm_rescale=norm_rescale)
    name = run.method.name
    params = run.params()
    outputs, dns_images, records = [], [], []
    for start in range(0, len(prompts), batch_size):
        chunk = slice(start, start + batch_size)
        t0 = time.perf_counter()
        part = _chunk(run, list(prompts[chunk]), list(seeds[chunk]),
                     None if negative_prompts is None else list(negative_prompts[chunk]))
        if captions is None:
            z = run.method.sample(run, part)
        else:
            z = run.method.from_captions(run, part, list(captions[chunk]))
        finite: list[bool] = []
        images = families.decode(pipe, z, output_type, finite)
        for extra, ok in zip(part.extras, finite):
            if not ok:
                extra["nonfinite"] = True  # NaN or inf in its latents or image: the image is not to be kept
        seconds = (time.perf_counter() - t0) / len(part.extras)
        outputs.append(images)
        dns_images.extend(part.dns_images or [])
        for j, (p, s, extra) in enumerate(zip(prompts[chunk], seeds[chunk], part.extras)):
            records.append({
                "id": ids[start + j] if ids is not None else sample_id(p, s, name, extra["negative_prompt"]),
                "prompt": p,
                "seed": s,
                "method": name,
                **extra,
                **params,
                "nfe": part.denoise.nfe,
                "seconds": seconds,
            })
    return GenerateResult(_concat(outputs, output_type), records, dns_images or None)


@torch.no_grad()
def describe_dns(
    pipe,
    prompts: Sequence[str],
    seeds: Sequence[int],
    *,
    captioner,
    method: str | Strict = "auto-dnp",
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
    num_inference_steps: int = DEFAULT_STEPS,
    height: int | None = None,
    width: int | None = None,
    dns_guidance_scale: float | None = None,
    guidance_rescale: float = 0.0,
    batch_size: int = 4,
    norm_rescale: bool | None = None,
) -> DnsCaptions:
    """auto-DNP's phase one (docs/METHODS.md §DNP steps 1-2): DNS images and their captions. Phase
    two is `generate(..., method="auto-dnp", captions=...)`; `generate(..., method="auto-dnp")`
    runs both. `method`: "auto-dnp" or its `DnpSettings`."""
    run = _make_call(pipe, prompts, seeds, method=method, guidance_scale=guidance_scale,
                     num_inference_steps=num_inference_steps, height=height, width=width,
                     dns_guidance_scale=dns_guidance_scale, guidance_rescale=guidance_rescale, captioner=captioner,
                     batch_size=batch_size, norm_rescale=norm_rescale)
    if not hasattr(run.method, "describe"):
        raise ValueError(f"method {run.method.name!r} has no DNS + caption phase")
    out = DnsCaptions([], [], [], [])
    for start in range(0, len(prompts), batch_size):
        chunk = slice(start, start + batch_size)
        t0 = time.perf_counter()
        part = _chunk(run, list(prompts[chunk]), list(seeds[chunk]), None)
        images, captions = run.method.describe(run, part)
        seconds = (time.perf_counter() - t0) / len(images)
        out.images.extend(images)
        out.captions.extend(captions)
        out.nfe.extend([part.denoise.nfe] * len(images))
        out.seconds.extend([seconds] * len(images))
    return out


def _concat(outputs: list, output_type: str):
    if output_type == "pil":
        return [im for batch in outputs for im in batch]
    if output_type == "latent":
        return torch.cat(outputs)
    return np.concatenate(outputs)


__all__ = ["METHODS", "AnswerSettings", "ApgSettings", "CnpSettings", "DnpSettings", "DnsCaptions", "GenerateResult",
           "check_size", "describe_dns", "fresh_seed", "generate", "sample_id"]
