"""Stages: plain classes, one loaded model each, that turn a batch of samples into results.

The same objects run in-process (the library, tests, the local job) and inside Ray actors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from . import api, tiny
from .captioner import Captioner
from .config import JobConfig
from .models import load_pipeline
from .prompts import Sample
from .scoring import ClipScorer

TINY_MODELS = {"tiny-sdxl": "sdxl", "tiny-sd": "sd", "tiny-blip2": "blip2", "tiny-clip": "clip"}


def resolve_model(name: str) -> str:
    """A hub id or local dir as given; `tiny-*` names are built on first use into the cache."""
    return str(tiny.ensure_tiny(TINY_MODELS[name])) if name in TINY_MODELS else name


def resolve_device(device: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def check_samples(cfg: JobConfig, samples: list[Sample]) -> None:
    """Refuse, before any model loads, samples that the configured method cannot run."""
    if cfg.method in api.NEGATIVE_METHODS:
        missing = [s.key for s in samples if s.negative_prompt is None]
        if missing:
            hint = " (human DNP: pass the negatives file of phase one with --negatives)" if cfg.method == "dnp" else ""
            raise ValueError(
                f"method {cfg.method!r} needs a negative_prompt for every prompt; missing for "
                f"{len(missing)} sample(s), e.g. {missing[0]!r}{hint}"
            )


@dataclass
class Result:
    sample: Sample
    image: Any  # PIL image
    record: dict
    dns_image: Any = None  # the DNS image, for methods that have one


class GenerationStage:
    """One diffusion pipeline (and a captioner for auto-DNP/CNP); `__call__(samples)` runs the method."""

    def __init__(self, cfg: JobConfig):
        self.cfg = cfg
        device = resolve_device(cfg.device)
        self.captioner = None
        if cfg.method in api.CAPTIONED_METHODS:
            c = cfg.captioner
            self.captioner = Captioner(resolve_model(c.model), dtype=cfg.dtype, device=device,
                                       max_new_tokens=c.max_new_tokens, prompt=c.prompt)
            self.captioner.model_id = c.model
        self.pipe = load_pipeline(resolve_model(cfg.model), dtype=cfg.dtype, device=device, scheduler=cfg.scheduler)

    def __call__(self, samples: list[Sample]) -> list[Result]:
        cfg = self.cfg
        negatives = [s.negative_prompt for s in samples] if cfg.method in api.NEGATIVE_METHODS else None
        out = api.generate(
            self.pipe,
            [s.prompt for s in samples],
            [s.seed for s in samples],
            cfg.method,
            negative_prompts=negatives,
            guidance_scale=cfg.guidance_scale,
            num_inference_steps=cfg.steps,
            height=cfg.height,
            width=cfg.width,
            answer=cfg.answer.to_api(),
            dns_guidance_scale=cfg.dns_guidance_scale,
            guidance_rescale=cfg.guidance_rescale,
            captioner=self.captioner,
            same_seed=cfg.dnp.same_seed,
            cnp_every=cfg.cnp.every,
            ids=[s.key for s in samples],
            batch_size=cfg.batch_size,
        )
        dns_images = out.dns_images or [None] * len(samples)
        for record in out.records:
            record["model"] = cfg.model
        return [Result(s, im, rec, dns) for s, im, rec, dns in zip(samples, out.images, out.records, dns_images)]


class ScoringStage:
    """CLIP score of each image with its prompt (and of the DNS image, where there is one)."""

    def __init__(self, cfg: JobConfig):
        c = cfg.clip
        self.model_name, self.pretrained = c.model, c.pretrained
        self.scorer = ClipScorer(resolve_model(c.model), pretrained=c.pretrained, device=resolve_device(cfg.device),
                                 batch_size=c.batch_size)

    def __call__(self, results: list[Result]) -> list[Result]:
        scores = self.scorer.score([r.image for r in results], [r.sample.prompt for r in results])
        with_dns = [r for r in results if r.dns_image is not None]
        dns_scores = self.scorer.score([r.dns_image for r in with_dns], [r.sample.prompt for r in with_dns])
        for r, score in zip(results, scores):
            r.record.update(clip_score=score, clip_model=self.model_name, clip_pretrained=self.pretrained)
        for r, score in zip(with_dns, dns_scores):
            r.record["dns_clip_score"] = score
        return results
