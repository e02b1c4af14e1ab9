"""What every method is made of: one `generate()` call's fixed settings (`Call`), the batch being
sampled (`Chunk`), the `Method` base class, and the helpers the DNP methods share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np

from ..settings import Strict

if TYPE_CHECKING:
    import torch

    from .. import sampler

# torch, the sampler and the families (diffusers) are imported in the functions that run them, so
# that reading a config, which needs the methods' names and settings, loads none of them.

# docs/METHODS.md §Default hyperparameters
DEFAULT_GUIDANCE_SCALE = 7.0
DEFAULT_STEPS = 30


def fresh_seed(seed: int) -> int:
    """docs/METHODS.md §DNP `same_seed: false`: a new seed for NP, derived from the sample's own."""
    return int(np.random.SeedSequence([seed, 1]).generate_state(1, dtype=np.uint32)[0])


def blank_to_none(text: str) -> str | None:
    """An empty or whitespace negative (caption or human) means no negative prompt (§DNP)."""
    return text.strip() or None


def clean_captions(captions) -> list[str]:
    """Captions as auto-DNP and CNP use them: stripped (an empty one means no negative)."""
    return [c.strip() for c in captions]


def captioner_record(captioner) -> dict:
    """How a record names its captioner: a `Captioner` (or callable) described, or such a
    description as given (auto-DNP's phase two, run where the captioner is not loaded)."""
    if isinstance(captioner, dict):
        return dict(captioner)
    return {"model": getattr(captioner, "model_id", type(captioner).__name__),
            "max_new_tokens": getattr(captioner, "max_new_tokens", None),
            "prompt": getattr(captioner, "prompt", None)}


@dataclass
class Call:
    """One `generate` call's fixed settings (`settings`: the method's own, None for one without knobs)."""

    pipe: Any
    method: "Method"
    guidance_scale: float
    dns_guidance_scale: float
    guidance_rescale: float
    steps: int
    height: int
    width: int
    settings: Strict | None = None
    captioner: Any = None
    output_type: str = "pil"
    callback: Callable[[dict], None] | None = None
    norm_rescale: bool | None = None  # the family's rescale of guided predictions (Qwen-Image), resolved

    def setting(self) -> Strict | None:
        """This run's settings of its method."""
        return self.settings

    def caption(self, images) -> list[str]:
        return clean_captions(getattr(self.captioner, "caption", self.captioner)(images))

    def params(self) -> dict:
        """The run's record fields: the method's own, then what every record carries."""
        from .. import families

        pipe = self.pipe
        return {
            "guidance_scale": self.guidance_scale,
            "guidance_rescale": self.guidance_rescale,
            **self.method.record_fields(self),
            "num_inference_steps": self.steps,
            "height": self.height,
            "width": self.width,
            "family": families.family_of(pipe).name,
            **families.family_of(pipe).record(pipe, self.norm_rescale),
            "scheduler": type(pipe.scheduler).__name__,
            "scheduler_config": dict(pipe.scheduler.config),
            "model": pipe.config._name_or_path,
            "pipeline": type(pipe).__name__,
            "dtype": str(families.network(pipe).dtype).removeprefix("torch."),
        }

    def chain(self, denoise, strategy, pos, null, neg, seeds, callback=None) -> torch.Tensor:
        """One full chain from z_T (drawn from the seeds) to z_0."""
        import torch

        from .. import families, sampler

        scheduler = self.pipe.scheduler
        families.set_timesteps(self.pipe, scheduler, self.steps, self.height, self.width)
        if len(scheduler.timesteps) != self.steps:
            raise ValueError(
                f"scheduler {type(scheduler).__name__} takes {len(scheduler.timesteps)} model steps for "
                f"{self.steps} inference steps; only schedulers with one model call per step are supported"
            )
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(0)
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        batch = sampler.Batch(pos, null, neg, list(seeds), generators)
        z = families.initial_latents(self.pipe, scheduler, generators, self.height, self.width, pos.embeds.dtype)
        return sampler.sample(denoise, scheduler, z, strategy, batch, callback)

    def describe(self, z_dns: torch.Tensor, null) -> tuple[list, list[str], sampler.Cond]:
        """DNS latents -> (images, captions, negative condition): §DNP steps 1-2."""
        from .. import families

        images = families.decode(self.pipe, z_dns, "pil")
        captions = self.caption(images)
        neg = families.negative_cond(self.pipe, [c or None for c in captions], null, self.height, self.width)
        return images, captions, neg


@dataclass
class Chunk:
    """A batch being sampled: its conditions and what each method adds to each sample's record."""

    prompts: list[str]
    seeds: list[int]
    negatives: list[str] | None
    pos: sampler.Cond
    null: sampler.Cond
    denoise: sampler.Denoiser
    extras: list[dict]  # per sample, starts as {"negative_prompt": None}
    dns_images: list | None = None


class Method:
    """A sampling method. Subclasses set `name` and what they need, and implement `sample` (or
    `strategy`, for one chain). `order` places it in the registry (and so in listings and errors)."""

    name: ClassVar[str]
    order: ClassVar[float]
    settings: ClassVar[type[Strict] | None] = None
    section: ClassVar[str | None] = None  # its settings' key in JobConfig: the settings model's `section`

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.settings is not None:
            cls.section = cls.settings.section
    needs_negative: ClassVar[bool] = False  # the caller gives one negative prompt per sample
    needs_captioner: ClassVar[bool] = False  # it captions its DNS images (auto-DNP, CNP)
    uses_dns_scale: ClassVar[bool] = False  # w_dns is one of its knobs (and in its records)
    stages: ClassVar[tuple[str, ...]] = ("generate",)  # the job's model stages, in order
    writes_negatives_file: ClassVar[bool] = False  # human DNP phase one: the job writes negatives.jsonl
    reads_negatives_file: ClassVar[bool] = False  # human DNP phase two: the job's --negatives

    def record_fields(self, call: Call) -> dict:
        """What this method adds to every record besides the common fields."""
        return {"dns_guidance_scale": call.dns_guidance_scale} if self.uses_dns_scale else {}

    def strategy(self, call: Call):
        """The sampler strategy (`CfgStrategy`, ...) of a single-chain method."""
        raise NotImplementedError

    def sample(self, call: Call, chunk: Chunk) -> torch.Tensor:
        """The final latents of the batch (filling `chunk.extras` / `chunk.dns_images`): by default
        one chain from z_T with `strategy`."""
        return call.chain(chunk.denoise, self.strategy(call), chunk.pos, chunk.null, None, chunk.seeds, call.callback)

    def nfe(self, steps: int, settings: Strict | None = None) -> int:
        """UNet evaluations per sample (docs/METHODS.md's formula)."""
        return 2 * steps
