"""Pipeline families, one adapter file each: how a family's prompts and ∅ are encoded, what its
condition holds, how its latents are drawn and decoded, and which loaded pipelines it runs.

- `sd.py`: Stable Diffusion 1.x/2.x; `sdxl.py`: Stable Diffusion XL
- `base.py`: the `Family` interface, with what the families share

A family is a `Family` subclass with a `name` in a module of this package: the registry below finds
it, so adding one touches only its own file. `family_of(pipe)` picks the family of a loaded pipeline.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Sequence

from ..sampler import Cond, Denoiser
from .base import Family


def _discover() -> dict[str, Family]:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    found = [cls for cls in Family.__subclasses__() if "name" in vars(cls)]
    return {cls.name: cls() for cls in sorted(found, key=lambda cls: cls.order)}


FAMILIES: dict[str, Family] = _discover()
PIPELINES: tuple[type, ...] = tuple(p for family in FAMILIES.values() for p in family.pipelines)


def pipeline_names(joiner: str = " or ") -> str:
    """The pipeline classes the families run, for messages ("StableDiffusionPipeline or ...")."""
    return joiner.join(p.__name__ for p in PIPELINES)


def family_of(pipe) -> Family:
    """The family of a loaded pipeline; a ValueError naming its class and the supported ones otherwise."""
    for family in FAMILIES.values():
        if family.matches(pipe):
            return family
    raise ValueError(f"pipe must be a diffusers {pipeline_names()}, got {type(pipe).__name__}")


# The sampler's plumbing, each dispatched to the pipeline's family.

def encode_texts(pipe, texts: list[str], height: int, width: int) -> Cond:
    return family_of(pipe).encode(pipe, texts, height, width)


def null_cond(pipe, pos: Cond, height: int, width: int) -> Cond:
    return family_of(pipe).null(pipe, pos, height, width)


def negative_cond(pipe, texts: Sequence[str | None], null: Cond, height: int, width: int) -> Cond:
    return family_of(pipe).negative(pipe, texts, null, height, width)


def denoiser(pipe) -> Denoiser:
    """The pipeline's network as the sampler calls it: one batched forward per step, made by its family."""
    family = family_of(pipe)
    return Denoiser(family.network(pipe), family.predict)


def initial_latents(pipe, scheduler, generators, height: int, width: int, dtype):
    return family_of(pipe).latents(pipe, scheduler, generators, height, width, dtype)


def decode(pipe, latents, output_type: str = "pil", finite: list | None = None):
    return family_of(pipe).decode(pipe, latents, output_type, finite)


__all__ = ["FAMILIES", "PIPELINES", "Family", "decode", "denoiser", "encode_texts", "family_of", "initial_latents",
           "negative_cond", "null_cond", "pipeline_names"]
