"""Stages: plain classes, one loaded model each, that turn a batch of samples into results.

The same objects run in-process (the library, tests, the local job) and inside Ray actors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from . import api, tiny
from .config import JobConfig
from .models import load_pipeline
from .prompts import Sample

TINY_MODELS = {"tiny-sdxl": "sdxl", "tiny-sd": "sd"}


def resolve_model(name: str) -> str:
    """A hub id or local dir as given; `tiny-sdxl` / `tiny-sd` are built on first use into the cache."""
    return str(tiny.ensure_tiny(TINY_MODELS[name])) if name in TINY_MODELS else name


def resolve_device(device: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def check_samples(cfg: JobConfig, samples: list[Sample]) -> None:
    """Refuse, before any model loads, samples that the configured method cannot run."""
    if cfg.method in api.NEGATIVE_METHODS:
        missing = [s.key for s in samples if s.negative_prompt is None]
        if missing:
            raise ValueError(
                f"method {cfg.method!r} needs a negative_prompt for every prompt; missing for "
                f"{len(missing)} sample(s), e.g. {missing[0]!r}"
            )


@dataclass
class Result:
    sample: Sample
    image: Any  # PIL image
    record: dict


class GenerationStage:
    """One diffusion pipeline; `__call__(samples)` runs the configured method on them."""

    def __init__(self, cfg: JobConfig):
        self.cfg = cfg
        self.model_source = resolve_model(cfg.model)
        self.pipe = load_pipeline(self.model_source, dtype=cfg.dtype, device=resolve_device(cfg.device),
                                  scheduler=cfg.scheduler)

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
            ids=[s.key for s in samples],
            batch_size=cfg.batch_size,
        )
        for record in out.records:
            record["model"] = cfg.model
        return [Result(s, im, rec) for s, im, rec in zip(samples, out.images, out.records)]
