"""Pipeline families, one adapter file each: how a family's prompts and ∅ are encoded, what its
condition holds, how its latents are drawn and decoded, and which loaded pipelines it runs.

- `sd.py`: Stable Diffusion 1.x/2.x; `sdxl.py`: Stable Diffusion XL (UNets, VP schedulers)
- `sd3.py`: Stable Diffusion 3 / 3.5 (an MMDiT transformer, flow matching)
- `qwenimage.py`: Qwen-Image (an MMDiT on packed latents, a Qwen2.5-VL text encoder, flow matching)
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


def guidance_distilled(pipe) -> bool:
    """A pipeline whose network takes the guidance scale as an input (FLUX.1-dev's, FLUX.2-dev's
    `guidance_embeds`): distilled from CFG, it has no negative branch."""
    network = getattr(pipe, "transformer", None) or getattr(pipe, "unet", None)
    return bool(getattr(getattr(network, "config", None), "guidance_embeds", False))


def unsupported(pipe, what: str = "pipe") -> str:
    """The one-line refusal of a pipeline no family runs."""
    name = type(pipe).__name__
    if guidance_distilled(pipe):
        return (f"{what} is a guidance-distilled {name} (its transformer takes the guidance scale as an input): "
                f"it has no negative branch, which cfg's ∅, NP, DNS, DNP and ANSWER all need; the families "
                f"with one: {', '.join(FAMILIES)} ({pipeline_names(', ')})")
    return f"{what} must be a diffusers {pipeline_names()}, got {name}"


def family_of(pipe) -> Family:
    """The family of a loaded pipeline; a ValueError naming its class and the supported ones otherwise."""
    for family in FAMILIES.values():
        if family.matches(pipe):
            return family
    raise ValueError(unsupported(pipe))


# The sampler's plumbing, each dispatched to the pipeline's family.

def encode_texts(pipe, texts: list[str], height: int, width: int) -> Cond:
    return family_of(pipe).encode(pipe, texts, height, width)


def null_cond(pipe, pos: Cond, height: int, width: int) -> Cond:
    return family_of(pipe).null(pipe, pos, height, width)


def negative_cond(pipe, texts: Sequence[str | None], null: Cond, height: int, width: int) -> Cond:
    return family_of(pipe).negative(pipe, texts, null, height, width)


def denoiser(pipe, norm_rescale: bool | None = None) -> Denoiser:
    """The pipeline's network as the sampler calls it, made by its family (with its rescale of
    guided predictions when it has one and `norm_rescale` is on)."""
    family = family_of(pipe)
    return Denoiser(family.network(pipe), family.forward, family.guided_rescale(pipe, norm_rescale))


def resolve_norm_rescale(pipe, value: bool | None) -> bool | None:
    """The family's `norm_rescale` default for None; a ValueError for a value on a family without one."""
    family = family_of(pipe)
    if value is None:
        return family.norm_rescale
    if isinstance(value, bool) and family.norm_rescale is not None:
        return value
    having = [name for name, f in FAMILIES.items() if f.norm_rescale is not None]
    if not isinstance(value, bool):
        raise ValueError(f"norm_rescale must be true, false or null, got {value!r}")
    raise ValueError(f"norm_rescale applies to the families with a rescale of guided predictions "
                     f"({', '.join(having)}); this pipeline is family {family.name!r}: leave it null")


def set_timesteps(pipe, scheduler, steps: int, height: int, width: int) -> None:
    family_of(pipe).set_timesteps(pipe, scheduler, steps, height, width)


def network(pipe):
    """The pipeline's denoising network (its UNet or transformer)."""
    return family_of(pipe).network(pipe)


def native_size(pipe) -> int:
    return family_of(pipe).native_size(pipe)


def size_multiple(pipe) -> int:
    return family_of(pipe).size_multiple(pipe)


def initial_latents(pipe, scheduler, generators, height: int, width: int, dtype):
    return family_of(pipe).latents(pipe, scheduler, generators, height, width, dtype)


def decode(pipe, latents, output_type: str = "pil", finite: list | None = None):
    return family_of(pipe).decode(pipe, latents, output_type, finite)


__all__ = ["FAMILIES", "PIPELINES", "Family", "decode", "denoiser", "encode_texts", "family_of", "guidance_distilled",
           "initial_latents", "resolve_norm_rescale", "unsupported",
           "native_size", "negative_cond", "network", "null_cond", "pipeline_names", "set_timesteps", "size_multiple"]
